//! Fused elementwise kernels generated from an expression tree.
//!
//! - Op: any composition of the IR's unary and binary functions, modulate and casts, over
//!   inputs broadcast to the output shape (numpy rules).
//! - Layouts: inputs and output row-major; a broadcast input has stride 0 on its broadcast
//!   axes. Inputs and output f32, f16 or bf16; arithmetic in f32.
//! - Launch: 1-D, one thread per `vec` consecutive output elements, `block` threads per block,
//!   `ceil(numel / vec / block)` blocks.
//! - Tunable: `block` ∈ {64, 128, 256, 512}; `vec` ∈ {1, 2, 4} for f32 and {1, 2, 4, 8} for
//!   16-bit types (16-byte accesses at the top value); `vec > 1` needs every input
//!   un-broadcast and `numel % vec == 0`.
//! - Minimum SM: sm_80 (bf16 conversions).

use vidrt_ir::{BinaryOp, DType, UnaryOp};

use super::common::{
    contiguous, elem_ty, exp, from_f32, global_index, guard_lt, load_f32, need_float, offset_of, sincos, to_f32, u32_of,
};
use crate::ptx::builder::{BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, Reg, Space, Ty, UnOp};
use crate::ptx::KernelError;

/// An elementwise expression over the kernel's inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Input `i` (converted to f32).
    Input(usize),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x·(1 + scale) + shift`.
    Modulate(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Rounds to a float dtype (an IR cast inside a fused chain), then continues in f32.
    Round(DType, Box<Expr>),
}

impl Expr {
    /// The tree of an IR [`vidrt_ir::expr::ElementwiseExpr`] (shared steps are duplicated).
    pub fn from_ir(e: &vidrt_ir::expr::ElementwiseExpr) -> Result<Expr, KernelError> {
        use vidrt_ir::expr::ExprStep;
        let mut done: Vec<Expr> = Vec::with_capacity(e.steps.len());
        let get = |done: &Vec<Expr>, i: usize| {
            done.get(i).cloned().map(Box::new).ok_or_else(|| KernelError::Invalid(format!("step reads step {i}")))
        };
        for s in &e.steps {
            let x = match *s {
                ExprStep::Input(k) => Expr::Input(k),
                ExprStep::Unary(op, a) => Expr::Unary(op, get(&done, a)?),
                ExprStep::Binary(op, a, b) => Expr::Binary(op, get(&done, a)?, get(&done, b)?),
                ExprStep::Cast(d, a) => Expr::Round(d, get(&done, a)?),
            };
            done.push(x);
        }
        done.pop().ok_or_else(|| KernelError::Invalid("empty expression".into()))
    }
}

/// One input of an elementwise kernel: its dtype and its strides over the output's axes.
#[derive(Clone, Debug, PartialEq)]
pub struct EwInput {
    pub dtype: DType,
    pub strides: Vec<usize>,
}

/// Generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EwParams {
    pub block: u32,
    pub vec: u32,
}

/// Every parameter point for an output dtype.
pub fn param_space(dtype: DType) -> Vec<EwParams> {
    let vecs: &[u32] = if dtype.size_bytes() == 2 { &[1, 2, 4, 8] } else { &[1, 2, 4] };
    let mut v = Vec::new();
    for block in [64, 128, 256, 512] {
        for &vec in vecs {
            v.push(EwParams { block, vec });
        }
    }
    v
}

/// The broadcast strides of an input of shape `dims` against output `out` (same rank after
/// left-padding with 1s).
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len().saturating_sub(dims.len());
    let full: Vec<usize> = std::iter::repeat_n(1, pad).chain(dims.iter().copied()).collect();
    let cs = contiguous(&full);
    full.iter().zip(cs).map(|(&d, s)| if d == 1 { 0 } else { s }).collect()
}

/// Emits f32 code for unary `op`.
pub fn unary_f32(b: &mut KernelBuilder, op: UnaryOp, x: Reg) -> Reg {
    let f = Ty::F32;
    match op {
        UnaryOp::Neg => b.un(UnOp::Neg, f, x),
        UnaryOp::Abs => b.un(UnOp::Abs, f, x),
        UnaryOp::Exp => exp(b, x),
        UnaryOp::Log => {
            let l = b.un(UnOp::Lg2, f, x);
            b.bin(BinOp::Mul, f, l, Operand::F32(std::f32::consts::LN_2))
        }
        UnaryOp::Sqrt => b.un(UnOp::Sqrt, f, x),
        UnaryOp::Rsqrt => {
            let s = b.un(UnOp::Sqrt, f, x);
            b.un(UnOp::Rcp, f, s)
        }
        UnaryOp::Recip => b.un(UnOp::Rcp, f, x),
        UnaryOp::Square => b.bin(BinOp::Mul, f, x, x),
        UnaryOp::Tanh => tanh(b, x),
        UnaryOp::Sigmoid => sigmoid(b, x),
        UnaryOp::Silu => {
            let s = sigmoid(b, x);
            b.bin(BinOp::Mul, f, x, s)
        }
        UnaryOp::GeluTanh => {
            // 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
            let x2 = b.bin(BinOp::Mul, f, x, x);
            let x3 = b.bin(BinOp::Mul, f, x2, x);
            let inner = b.fma(f, x3, Operand::F32(0.044715), x);
            let arg = b.bin(BinOp::Mul, f, inner, Operand::F32((2.0f64 / std::f64::consts::PI).sqrt() as f32));
            let t = tanh(b, arg);
            let one_t = b.bin(BinOp::Add, f, t, Operand::F32(1.0));
            let hx = b.bin(BinOp::Mul, f, x, Operand::F32(0.5));
            b.bin(BinOp::Mul, f, hx, one_t)
        }
        UnaryOp::GeluErf => {
            let z = b.bin(BinOp::Mul, f, x, Operand::F32(std::f32::consts::FRAC_1_SQRT_2));
            let e = erf(b, z);
            let one_e = b.bin(BinOp::Add, f, e, Operand::F32(1.0));
            let hx = b.bin(BinOp::Mul, f, x, Operand::F32(0.5));
            b.bin(BinOp::Mul, f, hx, one_e)
        }
        UnaryOp::Sin => sincos(b, x, false),
        UnaryOp::Cos => sincos(b, x, true),
        UnaryOp::AddScalar(c) => b.bin(BinOp::Add, f, x, Operand::F32(c as f32)),
        UnaryOp::MulScalar(c) => b.bin(BinOp::Mul, f, x, Operand::F32(c as f32)),
        UnaryOp::Clamp(lo, hi) => {
            let m = b.bin(BinOp::Max, f, x, Operand::F32(lo as f32));
            b.bin(BinOp::Min, f, m, Operand::F32(hi as f32))
        }
    }
}

/// 1 / (1 + e^(−x)).
fn sigmoid(b: &mut KernelBuilder, x: Reg) -> Reg {
    let n = b.un(UnOp::Neg, Ty::F32, x);
    let e = exp(b, n);
    let d = b.bin(BinOp::Add, Ty::F32, e, Operand::F32(1.0));
    b.un(UnOp::Rcp, Ty::F32, d)
}

/// tanh x = sign(x)·(1 − e^(−2|x|)) / (1 + e^(−2|x|)).
fn tanh(b: &mut KernelBuilder, x: Reg) -> Reg {
    let f = Ty::F32;
    let a = b.un(UnOp::Abs, f, x);
    let m = b.bin(BinOp::Mul, f, a, Operand::F32(-2.0));
    let e = exp(b, m);
    let num = b.bin(BinOp::Sub, f, Operand::F32(1.0), e);
    let den = b.bin(BinOp::Add, f, e, Operand::F32(1.0));
    let r = b.bin(BinOp::Div, f, num, den);
    let neg = b.setp(Cmp::Lt, x, Operand::F32(0.0));
    let nr = b.un(UnOp::Neg, f, r);
    b.selp(f, nr, r, neg)
}

/// erf x, Abramowitz–Stegun 7.1.26 (absolute error ≤ 1.5e-7).
fn erf(b: &mut KernelBuilder, x: Reg) -> Reg {
    let f = Ty::F32;
    let a = b.un(UnOp::Abs, f, x);
    let d = b.fma(f, a, Operand::F32(0.327_591_1), Operand::F32(1.0));
    let t = b.un(UnOp::Rcp, f, d);
    let coeffs = [1.061_405_4f32, -1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6];
    let mut p = b.imm_f32(coeffs[0]);
    for &c in &coeffs[1..] {
        p = b.fma(f, p, t, Operand::F32(c));
    }
    p = b.bin(BinOp::Mul, f, p, t);
    let a2 = b.bin(BinOp::Mul, f, a, a);
    let na2 = b.un(UnOp::Neg, f, a2);
    let e = exp(b, na2);
    let pe = b.bin(BinOp::Mul, f, p, e);
    let r = b.bin(BinOp::Sub, f, Operand::F32(1.0), pe);
    let neg = b.setp(Cmp::Lt, x, Operand::F32(0.0));
    let nr = b.un(UnOp::Neg, f, r);
    b.selp(f, nr, r, neg)
}

/// Emits f32 code for binary `op`.
pub fn binary_f32(b: &mut KernelBuilder, op: BinaryOp, x: Reg, y: Reg) -> Reg {
    let f = Ty::F32;
    match op {
        BinaryOp::Add => b.bin(BinOp::Add, f, x, y),
        BinaryOp::Sub => b.bin(BinOp::Sub, f, x, y),
        BinaryOp::Mul => b.bin(BinOp::Mul, f, x, y),
        BinaryOp::Div => b.bin(BinOp::Div, f, x, y),
        BinaryOp::Max => b.bin(BinOp::Max, f, x, y),
        BinaryOp::Min => b.bin(BinOp::Min, f, x, y),
        BinaryOp::Pow => {
            // x^y = 2^(y·log₂x) for x > 0 (NaN for x < 0, as ex2(NaN)).
            let l = b.un(UnOp::Lg2, f, x);
            let m = b.bin(BinOp::Mul, f, l, y);
            b.un(UnOp::Ex2, f, m)
        }
    }
}

/// Emits f32 code for `e` with `ins` holding the inputs' f32 values.
pub fn eval(b: &mut KernelBuilder, e: &Expr, ins: &[Reg]) -> Result<Reg, KernelError> {
    Ok(match e {
        Expr::Input(i) => {
            *ins.get(*i).ok_or_else(|| KernelError::Invalid(format!("expression reads input {i} of {}", ins.len())))?
        }
        Expr::Unary(op, x) => {
            let x = eval(b, x, ins)?;
            unary_f32(b, *op, x)
        }
        Expr::Binary(op, x, y) => {
            let x = eval(b, x, ins)?;
            let y = eval(b, y, ins)?;
            binary_f32(b, *op, x, y)
        }
        Expr::Modulate(x, s, t) => {
            let x = eval(b, x, ins)?;
            let s = eval(b, s, ins)?;
            let t = eval(b, t, ins)?;
            let s1 = b.bin(BinOp::Add, Ty::F32, s, Operand::F32(1.0));
            let m = b.bin(BinOp::Mul, Ty::F32, x, s1);
            b.bin(BinOp::Add, Ty::F32, m, t)
        }
        Expr::Round(d, x) => {
            let x = eval(b, x, ins)?;
            need_float(*d, "a cast inside an elementwise expression")?;
            let ty = elem_ty(*d);
            if ty == Ty::F32 {
                x
            } else {
                let r = b.cvt(ty, x);
                to_f32(b, r)
            }
        }
    })
}

/// Loads `vec` consecutive elements starting at element `idx` as f32 registers.
fn load_vec(b: &mut KernelBuilder, ptr: Reg, idx: Reg, dtype: DType, vec: u32) -> Vec<Reg> {
    if vec == 1 {
        return vec![load_f32(b, ptr, idx, dtype)];
    }
    let ty = elem_ty(dtype);
    let a = b.addr(ptr, idx, ty.bytes());
    if ty == Ty::F32 {
        return b.ld_vec(Space::Global, Ty::F32, a, vec as usize);
    }
    // 16-bit: load b32 words and unpack.
    let words = if vec == 2 {
        vec![b.ld(Space::Global, Ty::U32, a)]
    } else {
        b.ld_vec(Space::Global, Ty::U32, a, vec as usize / 2)
    };
    let mut out = Vec::new();
    for w in words {
        let (lo, hi) = (b.reg(ty), b.reg(ty));
        b.push(Inst::Unpack { lo, hi, src: w });
        out.push(to_f32(b, lo));
        out.push(to_f32(b, hi));
    }
    out
}

fn store_vec(b: &mut KernelBuilder, ptr: Reg, idx: Reg, vals: &[Reg], dtype: DType) {
    let ty = elem_ty(dtype);
    let a = b.addr(ptr, idx, ty.bytes());
    let narrowed: Vec<Reg> = vals.iter().map(|&v| from_f32(b, v, ty)).collect();
    if narrowed.len() == 1 {
        b.st(Space::Global, a, narrowed[0]);
        return;
    }
    if ty == Ty::F32 {
        b.st_vec(Space::Global, a, narrowed);
        return;
    }
    let words: Vec<Reg> = narrowed
        .chunks(2)
        .map(|p| {
            let w = b.reg(Ty::U32);
            b.push(Inst::Pack { dst: w, lo: p[0], hi: p[1] });
            w
        })
        .collect();
    if words.len() == 1 {
        b.st(Space::Global, a, words[0]);
    } else {
        b.st_vec(Space::Global, a, words);
    }
}

/// Generates the kernel. Parameters: one pointer per input, then the output pointer.
pub fn elementwise(
    name: &str,
    expr: &Expr,
    inputs: &[EwInput],
    out_dims: &[usize],
    out_dtype: DType,
    p: EwParams,
) -> Result<Kernel, KernelError> {
    need_float(out_dtype, "elementwise")?;
    for i in inputs {
        need_float(i.dtype, "elementwise")?;
    }
    let numel: usize = out_dims.iter().product();
    let dense = contiguous(out_dims);
    let vec_ok =
        inputs.iter().all(|i| simplify_eq(&i.strides, &dense, out_dims)) && numel.is_multiple_of(p.vec as usize);
    let valid_vec = matches!((out_dtype.size_bytes(), p.vec), (4, 1 | 2 | 4) | (2, 1 | 2 | 4 | 8));
    if p.vec > 1 && (!vec_ok || !valid_vec) {
        return Err(KernelError::Unsupported(format!("vec = {} needs dense inputs and numel % vec == 0", p.vec)));
    }
    let threads = u32_of(numel.div_ceil(p.vec as usize), "elements")?;
    let header = format!(
        "elementwise {name}: {expr:?}\nout {out_dtype}{out_dims:?}; inputs {:?}\n1-D launch: {} threads per block, {} elements per thread; params block={}, vec={}",
        inputs.iter().map(|i| (i.dtype.name(), i.strides.clone())).collect::<Vec<_>>(),
        p.block,
        p.vec,
        p.block,
        p.vec
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let ptrs: Vec<Reg> = inputs.iter().map(|_| b.param(crate::ptx::builder::ParamTy::Ptr)).collect();
    let out = b.param(crate::ptx::builder::ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, threads, exit);
    let first = if p.vec == 1 { t } else { b.bin(BinOp::Mul, Ty::U32, t, Operand::Int(i64::from(p.vec))) };
    let mut lanes: Vec<Vec<Reg>> = vec![Vec::new(); p.vec as usize];
    for (ptr, inp) in ptrs.iter().zip(inputs) {
        let vals = if p.vec == 1 {
            let off = offset_of(&mut b, first, out_dims, &inp.strides)?;
            vec![load_f32(&mut b, *ptr, off, inp.dtype)]
        } else {
            load_vec(&mut b, *ptr, first, inp.dtype, p.vec)
        };
        for (l, v) in lanes.iter_mut().zip(vals) {
            l.push(v);
        }
    }
    let mut results = Vec::new();
    for l in &lanes {
        results.push(eval(&mut b, expr, l)?);
    }
    store_vec(&mut b, out, first, &results, out_dtype);
    b.place(exit);
    Ok(b.finish())
}

/// Whether `strides` walk the output densely (ignoring size-1 axes).
fn simplify_eq(strides: &[usize], dense: &[usize], dims: &[usize]) -> bool {
    strides.iter().zip(dense).zip(dims).all(|((s, d), n)| *n == 1 || s == d)
}
