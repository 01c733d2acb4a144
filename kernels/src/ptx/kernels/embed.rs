//! Positional embeddings: interleaved rotary embedding and the sinusoidal timestep embedding.
//!
//! - rope: x `[.., S, H, hd]` (f32/f16/bf16), cos and sin tables `[S, hd]` (f32/f16/bf16);
//!   one thread per (a, b) pair; `out[2p] = a·cos[2p] − b·sin[2p]`,
//!   `out[2p+1] = a·sin[2p+1] + b·cos[2p+1]`.
//! - timestep: t `[B]` → f32 `[B, dim]`; the frequencies are generation-time constants
//!   computed exactly as the CPU reference does (f32) and held in a `.const` table; one
//!   thread per output element; sin/cos after a Cody–Waite range reduction.
//! - rel_position_bucket: i64 `[Sq, Sk]` of T5 relative-position buckets of `j − i`; the
//!   bucket of each of the `Sq + Sk − 1` relative positions is computed at generation time by
//!   the IR's own definition (`vidrt_ir::op::t5_relative_bucket`) into a `.const` table, so
//!   the kernel is an exact lookup; one thread per output element.
//! - Launch: 1-D, `block` threads per block. Tunable: `block` ∈ {64, 128, 256, 512}.

use vidrt_ir::DType;

use super::common::{global_index, guard_lt, load_f32, need_float, sincos, store_f32, u32_of};
use super::copy::CopyParams;
use crate::ptx::builder::{BinOp, Cmp, Kernel, KernelBuilder, Operand, ParamTy, Space, Ty};
use crate::ptx::KernelError;

/// Rotary embedding (params: x, cos, sin, out).
pub fn rope(
    name: &str,
    x_dims: &[usize],
    x_dtype: DType,
    table_dtype: DType,
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    need_float(x_dtype, "rope")?;
    need_float(table_dtype, "rope")?;
    let r = x_dims.len();
    if r < 3 || !x_dims[r - 1].is_multiple_of(2) {
        return Err(KernelError::Invalid(format!("rope needs [.., S, H, hd] with even hd, got {x_dims:?}")));
    }
    let (s, h, hd) = (x_dims[r - 3], x_dims[r - 2], x_dims[r - 1]);
    let pairs: usize = x_dims.iter().product::<usize>() / 2;
    let header = format!(
        "rope {name}: x {x_dtype}{x_dims:?}, tables {table_dtype}[{s}, {hd}]\n1-D launch, one thread per pair; params block={}",
        p.block
    );
    let n = u32_of(pairs, "pairs")?;
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let xp = b.param(ParamTy::Ptr);
    let cp = b.param(ParamTy::Ptr);
    let sp = b.param(ParamTy::Ptr);
    let op = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let imm = |v: usize| -> Result<Operand, KernelError> { Ok(Operand::Int(i64::from(u32_of(v, "size")?))) };
    let half = hd / 2;
    let pi = b.bin(BinOp::Rem, Ty::U32, t, imm(half)?);
    let rowi = b.bin(BinOp::Div, Ty::U32, t, imm(half * h)?);
    let tok = b.bin(BinOp::Rem, Ty::U32, rowi, imm(s)?);
    let xi = b.bin(BinOp::Mul, Ty::U32, t, Operand::Int(2));
    let xi1 = b.bin(BinOp::Add, Ty::U32, xi, Operand::Int(1));
    let ti = b.fma(Ty::U32, tok, imm(hd)?, Operand::Int(0));
    let ti = b.fma(Ty::U32, pi, Operand::Int(2), ti);
    let ti1 = b.bin(BinOp::Add, Ty::U32, ti, Operand::Int(1));
    let a = load_f32(&mut b, xp, xi, x_dtype);
    let bb = load_f32(&mut b, xp, xi1, x_dtype);
    let c0 = load_f32(&mut b, cp, ti, table_dtype);
    let s0 = load_f32(&mut b, sp, ti, table_dtype);
    let c1 = load_f32(&mut b, cp, ti1, table_dtype);
    let s1 = load_f32(&mut b, sp, ti1, table_dtype);
    let f = Ty::F32;
    let ac = b.bin(BinOp::Mul, f, a, c0);
    let bs = b.bin(BinOp::Mul, f, bb, s0);
    let o0 = b.bin(BinOp::Sub, f, ac, bs);
    let as_ = b.bin(BinOp::Mul, f, a, s1);
    let bc = b.bin(BinOp::Mul, f, bb, c1);
    let o1 = b.bin(BinOp::Add, f, as_, bc);
    store_f32(&mut b, op, xi, o0, x_dtype);
    store_f32(&mut b, op, xi1, o1, x_dtype);
    b.place(exit);
    Ok(b.finish())
}

/// The timestep frequencies, exactly as the CPU reference computes them in f32.
pub fn timestep_freqs(dim: usize, shift: f64, max_period: f64) -> Vec<f32> {
    let half = dim / 2;
    (0..half)
        .map(|j| {
            let exponent = -(max_period as f32).ln() * j as f32 / (half as f32 - shift as f32);
            exponent.exp()
        })
        .collect()
}

/// The static parameters of a timestep embedding (as in `Op::TimestepEmbedding`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepSpec {
    pub batch: usize,
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    pub shift: f64,
    pub max_period: f64,
}

/// Sinusoidal timestep embedding (params: t, out).
pub fn timestep(name: &str, spec: &TimestepSpec, t_dtype: DType, p: CopyParams) -> Result<Kernel, KernelError> {
    let TimestepSpec { batch, dim, flip_sin_to_cos, shift, max_period } = *spec;
    need_float(t_dtype, "timestep embedding")?;
    if !dim.is_multiple_of(2) || dim == 0 {
        return Err(KernelError::Unsupported(format!("timestep embedding of odd width {dim}")));
    }
    let half = dim / 2;
    let header = format!(
        "timestep {name}: t {t_dtype}[{batch}] -> f32[{batch}, {dim}], flip_sin_to_cos={flip_sin_to_cos}, shift={shift}, max_period={max_period}\n1-D launch, one thread per output element; {half} frequencies in a .const table; params block={}",
        p.block
    );
    let n = u32_of(batch * dim, "elements")?;
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let table = b.const_table(timestep_freqs(dim, shift, max_period).iter().map(|f| f.to_bits()).collect());
    let tp = b.param(ParamTy::Ptr);
    let op = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let c = b.bin(BinOp::Rem, Ty::U32, t, Operand::Int(dim as i64));
    let row = b.bin(BinOp::Div, Ty::U32, t, Operand::Int(dim as i64));
    let second = b.setp(Cmp::Ge, c, Operand::Int(half as i64));
    let cm = b.bin(BinOp::Sub, Ty::U32, c, Operand::Int(half as i64));
    let j = b.selp(Ty::U32, cm, c, second);
    let base = b.const_base(table);
    let fa = b.addr(base, j, 4);
    let freq = b.ld(Space::Const, Ty::F32, fa);
    let tv = load_f32(&mut b, tp, row, t_dtype);
    let arg = b.bin(BinOp::Mul, Ty::F32, tv, freq);
    let sn = sincos(&mut b, arg, false);
    let cs = sincos(&mut b, arg, true);
    // First half: cos if flipped else sin.
    let (first_v, second_v) = if flip_sin_to_cos { (cs, sn) } else { (sn, cs) };
    let v = b.selp(Ty::F32, second_v, first_v, second);
    store_f32(&mut b, op, t, v, DType::F32);
    b.place(exit);
    Ok(b.finish())
}

/// Wan's 3-axis rotary table `[S, hd]` (f32), `S = grid[0]·grid[1]·grid[2]`,
/// `hd = Σ dims`, pair values repeated (interleaved), part cos or sin (param: out).
///
/// Per pair p the axis and the frequency `1/θ^(2j/d)` come from a `.const` table computed in
/// f64 on the host and split into two f32 (hi + lo); the angle `pos·freq` is formed as a
/// double-f32 with an exact `fma` product error, reduced by 2π (two-constant Cody–Waite),
/// and passed to `cos/sin.approx`.
pub fn rope_table(
    name: &str,
    grid: [usize; 3],
    dims: [usize; 3],
    theta: f64,
    cos: bool,
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    if dims.iter().any(|d| !d.is_multiple_of(2)) {
        return Err(KernelError::Unsupported(format!("rope table with odd axis dims {dims:?}")));
    }
    let hd: usize = dims.iter().sum();
    let s: usize = grid.iter().product();
    let mut words = Vec::new();
    for (axis, &d) in dims.iter().enumerate() {
        for j in 0..d / 2 {
            let f = 1.0 / theta.powf((2 * j) as f64 / d as f64);
            let hi = f as f32;
            let lo = (f - f64::from(hi)) as f32;
            words.extend([axis as u32, hi.to_bits(), lo.to_bits()]);
        }
    }
    let part = if cos { "cos" } else { "sin" };
    let header = format!(
        "rope_table {name}: f32[{s}, {hd}] {part}, grid {grid:?}, dims {dims:?}, theta {theta}\n1-D launch, one thread per element; per-pair (axis, freq hi, freq lo) in a .const table; params block={}",
        p.block
    );
    let n = u32_of(s * hd, "elements")?;
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let table = b.const_table(words);
    let op = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let imm = |v: usize| -> Result<Operand, KernelError> { Ok(Operand::Int(i64::from(u32_of(v, "size")?))) };
    let c = b.bin(BinOp::Rem, Ty::U32, t, imm(hd)?);
    let tok = b.bin(BinOp::Div, Ty::U32, t, imm(hd)?);
    let pair = b.bin(BinOp::Shr, Ty::U32, c, Operand::Int(1));
    let entry = b.bin(BinOp::Mul, Ty::U32, pair, Operand::Int(3));
    let base = b.const_base(table);
    let ea = b.addr(base, entry, 4);
    let axis = b.ld(Space::Const, Ty::U32, ea);
    let mut fr = [ea; 2];
    for (k, f) in fr.iter_mut().enumerate() {
        let e = b.bin(BinOp::Add, Ty::U32, entry, Operand::Int(1 + k as i64));
        let a = b.addr(base, e, 4);
        *f = b.ld(Space::Const, Ty::F32, a);
    }
    let [hi, lo] = fr;
    let g12 = imm(grid[1] * grid[2])?;
    let pf = b.bin(BinOp::Div, Ty::U32, tok, g12);
    let th = b.bin(BinOp::Div, Ty::U32, tok, imm(grid[2])?);
    let ph = b.bin(BinOp::Rem, Ty::U32, th, imm(grid[1])?);
    let pw = b.bin(BinOp::Rem, Ty::U32, tok, imm(grid[2])?);
    let is0 = b.setp(Cmp::Eq, axis, Operand::Int(0));
    let is1 = b.setp(Cmp::Eq, axis, Operand::Int(1));
    let p12 = b.selp(Ty::U32, ph, pw, is1);
    let pos = b.selp(Ty::U32, pf, p12, is0);
    let posf = b.cvt(Ty::F32, pos);
    let f = Ty::F32;
    let a_hi = b.bin(BinOp::Mul, f, posf, hi);
    let neg_hi = b.un(crate::ptx::builder::UnOp::Neg, f, a_hi);
    let err = b.fma(f, posf, hi, neg_hi);
    let a_lo = b.fma(f, posf, lo, err);
    const TWO_PI_HI: f32 = std::f32::consts::TAU;
    let two_pi_lo = (std::f64::consts::TAU - f64::from(TWO_PI_HI)) as f32;
    let q = b.bin(BinOp::Mul, f, a_hi, Operand::F32(1.0 / TWO_PI_HI));
    let k = b.un(crate::ptx::builder::UnOp::Rni, f, q);
    let nk = b.un(crate::ptx::builder::UnOp::Neg, f, k);
    let r = b.fma(f, nk, Operand::F32(TWO_PI_HI), a_hi);
    let r = b.fma(f, nk, Operand::F32(two_pi_lo), r);
    let r = b.bin(BinOp::Add, f, r, a_lo);
    let v = b.un(if cos { crate::ptx::builder::UnOp::Cos } else { crate::ptx::builder::UnOp::Sin }, f, r);
    store_f32(&mut b, op, t, v, DType::F32);
    b.place(exit);
    Ok(b.finish())
}

/// T5 relative-position buckets `[q_len, k_len]` as i64 (param: out).
pub fn rel_position_bucket(
    name: &str,
    (q_len, k_len): (usize, usize),
    (num_buckets, max_distance): (usize, usize),
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    if q_len == 0 || k_len == 0 {
        return Err(KernelError::Invalid("rel_position_bucket of an empty grid".into()));
    }
    let span = q_len + k_len - 1;
    if span > 16 * 1024 {
        return Err(KernelError::Unsupported(format!(
            "rel_position_bucket over {span} relative positions exceeds the 64 KiB .const table"
        )));
    }
    let n = u32_of(q_len.saturating_mul(k_len), "elements")?;
    let header = format!(
        "rel_position_bucket {name}: i64[{q_len}, {k_len}], {num_buckets} buckets, max distance {max_distance}\n\
         1-D launch, one thread per element; {span} buckets (relative positions {}..={}) in a .const table; params block={}",
        1 - q_len as i64,
        k_len - 1,
        p.block
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let words = (0..span)
        .map(|r| vidrt_ir::op::t5_relative_bucket(r as i64 - (q_len as i64 - 1), num_buckets, max_distance) as u32)
        .collect();
    let table = b.const_table(words);
    let op = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let i = b.bin(BinOp::Div, Ty::U32, t, Operand::Int(k_len as i64));
    let j = b.bin(BinOp::Rem, Ty::U32, t, Operand::Int(k_len as i64));
    // Table index j − i + (q_len − 1), never negative.
    let r = b.bin(BinOp::Add, Ty::U32, j, Operand::Int(q_len as i64 - 1));
    let r = b.bin(BinOp::Sub, Ty::U32, r, i);
    let base = b.const_base(table);
    let a = b.addr(base, r, 4);
    let v = b.ld(Space::Const, Ty::S32, a);
    let wide = b.cvt(Ty::S64, v);
    let oa = b.addr(op, t, 8);
    b.st(Space::Global, oa, wide);
    b.place(exit);
    Ok(b.finish())
}
