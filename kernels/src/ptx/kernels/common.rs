//! Helpers shared by the kernel families: dtype mapping, typed loads and stores with
//! conversion to f32, index arithmetic by generation-time constants, block reductions and
//! range-reduced transcendental functions.

use vidrt_ir::DType;

use crate::ptx::builder::{
    BinOp, Cmp, Guard, Inst, KernelBuilder, Label, Operand, Reg, ShflMode, Space, Special, Ty, UnOp,
};
use crate::ptx::KernelError;

/// The register type holding one element of `dtype`.
pub fn elem_ty(dtype: DType) -> Ty {
    match dtype {
        DType::F32 => Ty::F32,
        DType::F16 => Ty::F16,
        DType::BF16 => Ty::BF16,
        DType::I32 => Ty::S32,
        DType::I64 => Ty::S64,
    }
}

/// Untyped bits of the same width as an element of `dtype` (for pure data movement).
pub fn bits_ty(dtype: DType) -> Ty {
    match dtype.size_bytes() {
        2 => Ty::B16,
        4 => Ty::U32,
        _ => Ty::U64,
    }
}

/// Errors unless `dtype` is a float type.
pub fn need_float(dtype: DType, what: &str) -> Result<(), KernelError> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(KernelError::Unsupported(format!("{what} computes in floating point, not {dtype}")))
    }
}

/// `u32` from a generation-time size, or an error when it does not fit.
pub fn u32_of(n: usize, what: &str) -> Result<u32, KernelError> {
    u32::try_from(n).map_err(|_| KernelError::Unsupported(format!("{what} = {n} exceeds 32-bit indexing")))
}

/// `ctaid.x · ntid.x + tid.x`.
pub fn global_index(b: &mut KernelBuilder) -> Reg {
    let cta = b.special(Special::CtaidX);
    let nt = b.special(Special::NtidX);
    let tid = b.special(Special::TidX);
    b.fma(Ty::U32, cta, nt, tid)
}

/// Branches to `exit` when `idx >= n`.
pub fn guard_lt(b: &mut KernelBuilder, idx: Reg, n: u32, exit: Label) {
    let p = b.setp(Cmp::Ge, idx, Operand::Int(i64::from(n)));
    b.bra_if(exit, p, false);
}

/// Widens a loaded element to f32.
pub fn to_f32(b: &mut KernelBuilder, r: Reg) -> Reg {
    match r.ty {
        Ty::F32 => r,
        Ty::F16 => b.cvt(Ty::F32, r),
        Ty::BF16 | Ty::B16 => {
            // sm_80 has no cvt.f32.bf16: place the bits in the high half of a b32.
            let zero = b.mov(Ty::B16, Operand::Int(0));
            let w = b.reg(Ty::U32);
            b.push(Inst::Pack { dst: w, lo: zero, hi: r });
            b.bitcast(Ty::F32, w)
        }
        Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64 | Ty::Pred => b.cvt(Ty::F32, r),
    }
}

/// Narrows an f32 to `ty` (round to nearest even).
pub fn from_f32(b: &mut KernelBuilder, f: Reg, ty: Ty) -> Reg {
    if ty == Ty::F32 {
        f
    } else {
        b.cvt(ty, f)
    }
}

/// Loads element `index` of a `dtype` tensor at `ptr`, as f32.
pub fn load_f32(b: &mut KernelBuilder, ptr: Reg, index: Reg, dtype: DType) -> Reg {
    let ty = elem_ty(dtype);
    let a = b.addr(ptr, index, ty.bytes());
    let v = b.ld(Space::Global, ty, a);
    to_f32(b, v)
}

/// Stores f32 `f` as element `index` of a `dtype` tensor at `ptr`.
pub fn store_f32(b: &mut KernelBuilder, ptr: Reg, index: Reg, f: Reg, dtype: DType) {
    let ty = elem_ty(dtype);
    let v = from_f32(b, f, ty);
    let a = b.addr(ptr, index, ty.bytes());
    b.st(Space::Global, a, v);
}

/// Simplifies a (dims, strides) walk: drops size-1 axes and merges axes that are
/// contiguous with each other.
pub fn simplify(dims: &[usize], strides: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (&d, &s) in dims.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if last.1 == s * d {
                last.0 *= d;
                last.1 = s;
                continue;
            }
        }
        out.push((d, s));
    }
    out
}

/// `Σ coord_i · stride_i` where the coords are `idx` decomposed row-major over `dims`.
pub fn offset_of(b: &mut KernelBuilder, idx: Reg, dims: &[usize], strides: &[usize]) -> Result<Reg, KernelError> {
    let axes = simplify(dims, strides);
    if axes.is_empty() {
        return Ok(b.imm_u32(0));
    }
    if axes.len() == 1 && axes[0].1 == 1 {
        return Ok(idx);
    }
    let mut cur = idx;
    let mut acc: Option<Reg> = None;
    for (i, &(d, s)) in axes.iter().enumerate().rev() {
        let (d, s) = (u32_of(d, "dimension")?, u32_of(s, "stride")?);
        let coord = if i == 0 { cur } else { b.bin(BinOp::Rem, Ty::U32, cur, Operand::Int(i64::from(d))) };
        if i > 0 {
            cur = b.bin(BinOp::Div, Ty::U32, cur, Operand::Int(i64::from(d)));
        }
        if s == 0 {
            continue;
        }
        acc = Some(match acc {
            None => b.bin(BinOp::Mul, Ty::U32, coord, Operand::Int(i64::from(s))),
            Some(a) => b.fma(Ty::U32, coord, Operand::Int(i64::from(s)), a),
        });
    }
    Ok(match acc {
        Some(a) => a,
        None => b.imm_u32(0),
    })
}

/// Contiguous row-major strides of `dims`.
pub fn contiguous(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// How a block reduction combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Max,
    Min,
}

impl Combine {
    pub fn identity(self) -> f32 {
        match self {
            Combine::Sum => 0.0,
            Combine::Max => f32::NEG_INFINITY,
            Combine::Min => f32::INFINITY,
        }
    }

    pub fn apply(self, b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
        let op = match self {
            Combine::Sum => BinOp::Add,
            Combine::Max => BinOp::Max,
            Combine::Min => BinOp::Min,
        };
        b.bin(op, Ty::F32, x, y)
    }
}

/// Reduces f32 `v` across the block (`threads` a multiple of 32, ≤ 1024) through warp
/// butterflies and `smem` (32 f32 of shared memory at byte offset `smem`); every thread
/// gets the result. Ends with a barrier, so `smem` can be reused.
pub fn block_reduce(b: &mut KernelBuilder, v: Reg, c: Combine, threads: u32, smem: u32) -> Reg {
    let mut v = v;
    for s in [16, 8, 4, 2, 1] {
        let o = b.shfl(ShflMode::Bfly, v, Operand::Int(s));
        v = c.apply(b, v, o);
    }
    let warps = threads / 32;
    if warps == 1 {
        return v;
    }
    let tid = b.special(Special::TidX);
    let lane = b.bin(BinOp::And, Ty::U32, tid, Operand::Int(31));
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, Operand::Int(5));
    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, Operand::Int(i64::from(smem)));
    // Lane 0 of each warp writes its partial.
    let not_lane0 = b.setp(Cmp::Ne, lane, Operand::Int(0));
    let wa = b.fma(Ty::U32, warp, Operand::Int(4), base);
    b.push(Inst::St {
        space: Space::Shared,
        src: vec![v],
        addr: wa,
        offset: 0,
        guard: Some(crate::ptx::builder::Guard { pred: not_lane0, negate: true }),
    });
    b.bar_sync();
    // Every warp reads all partials (lanes past the warp count take the identity).
    let la = b.fma(Ty::U32, lane, Operand::Int(4), base);
    let idn = b.imm_f32(c.identity());
    let in_range = b.setp(Cmp::Lt, lane, Operand::Int(i64::from(warps)));
    let part = b.reg(Ty::F32);
    b.push(Inst::Mov { dst: part, src: Operand::Reg(idn) });
    b.push(Inst::Ld {
        space: Space::Shared,
        dst: vec![part],
        addr: la,
        offset: 0,
        guard: Some(crate::ptx::builder::Guard { pred: in_range, negate: false }),
    });
    let mut w = part;
    for s in [16, 8, 4, 2, 1] {
        let o = b.shfl(ShflMode::Bfly, w, Operand::Int(s));
        w = c.apply(b, w, o);
    }
    b.bar_sync();
    w
}

/// log₂(e).
pub const LOG2E: f32 = std::f32::consts::LOG2_E;

/// eˣ through `ex2.approx` (relative error ≈ 2⁻²² on hardware).
pub fn exp(b: &mut KernelBuilder, x: Reg) -> Reg {
    let y = b.bin(BinOp::Mul, Ty::F32, x, Operand::F32(LOG2E));
    b.un(UnOp::Ex2, Ty::F32, y)
}

/// sin or cos of any finite f32 through a two-constant Cody–Waite reduction to [−π, π]
/// and `sin/cos.approx`.
pub fn sincos(b: &mut KernelBuilder, x: Reg, cos: bool) -> Reg {
    const TWO_PI_HI: f32 = std::f32::consts::TAU;
    // TAU − TWO_PI_HI in f32.
    let lo = (std::f64::consts::TAU - f64::from(TWO_PI_HI)) as f32;
    let q = b.bin(BinOp::Mul, Ty::F32, x, Operand::F32(1.0 / TWO_PI_HI));
    let k = b.un(UnOp::Rni, Ty::F32, q);
    let nk = b.un(UnOp::Neg, Ty::F32, k);
    let r = b.fma(Ty::F32, nk, Operand::F32(TWO_PI_HI), x);
    let r = b.fma(Ty::F32, nk, Operand::F32(lo), r);
    b.un(if cos { UnOp::Cos } else { UnOp::Sin }, Ty::F32, r)
}

/// A counted loop `for k in start..n step` with the body emitted by `body(b, k)`.
pub fn for_range(
    b: &mut KernelBuilder,
    start: Reg,
    n: u32,
    step: u32,
    body: impl FnMut(&mut KernelBuilder, Reg) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    counted_loop(b, start, (n, step), false, body)
}

/// [`for_range`] that ptxas must not unroll (for loops whose body is already unrolled at
/// generation time, like a GEMM's K loop).
pub fn for_range_rolled(
    b: &mut KernelBuilder,
    start: Reg,
    n: u32,
    step: u32,
    body: impl FnMut(&mut KernelBuilder, Reg) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    counted_loop(b, start, (n, step), true, body)
}

fn counted_loop(
    b: &mut KernelBuilder,
    start: Reg,
    (n, step): (u32, u32),
    rolled: bool,
    mut body: impl FnMut(&mut KernelBuilder, Reg) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let k = b.reg(Ty::U32);
    b.push(Inst::Mov { dst: k, src: Operand::Reg(start) });
    let (top, end) = (b.label(), b.label());
    b.place(top);
    if rolled {
        b.no_unroll();
    }
    let p = b.setp(Cmp::Ge, k, Operand::Int(i64::from(n)));
    b.bra_if(end, p, false);
    body(b, k)?;
    b.push(Inst::Bin { op: BinOp::Add, dst: k, a: Operand::Reg(k), b: Operand::Int(i64::from(step)) });
    b.bra(top);
    b.place(end);
    Ok(())
}

/// The zero of `ty` as an operand.
fn zero_of(ty: Ty) -> Operand {
    if ty == Ty::F32 {
        Operand::F32(0.0)
    } else {
        Operand::Int(0)
    }
}

/// `n` registers of `ty` loaded from `[addr]` when `pred` holds (always when `None`), zero
/// otherwise.
pub(crate) fn ld_or_zero(
    b: &mut KernelBuilder,
    space: Space,
    ty: Ty,
    addr: Reg,
    n: usize,
    pred: Option<Reg>,
) -> Vec<Reg> {
    let dst: Vec<Reg> = (0..n).map(|_| b.reg(ty)).collect();
    if pred.is_some() {
        for &r in &dst {
            b.push(Inst::Mov { dst: r, src: zero_of(ty) });
        }
    }
    b.push(Inst::Ld {
        space,
        dst: dst.clone(),
        addr,
        offset: 0,
        guard: pred.map(|p| Guard { pred: p, negate: false }),
    });
    dst
}
