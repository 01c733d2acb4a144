//! Row kernels: one block per row, the row's elements strided over the block's threads,
//! statistics combined by warp butterflies and shared memory.
//!
//! - Ops: reductions (sum, mean, max, min over any set of axes), softmax (any axis), RMS norm
//!   (mean-square or L2-clamp style, any axis: per head or across heads), layer norm (last
//!   axis, optional affine).
//! - Layouts: row-major; a "row" is the set of elements reduced together, addressed by
//!   generation-time (dims, strides) walks, so non-last axes need no transpose.
//! - Launch: 1-D grid of `rows` blocks, `block` threads each; 128 bytes of static shared
//!   memory.
//! - Tunable: `block` ∈ {32, 64, 128, 256, 512, 1024}.
//! - Numerics: loads widened to f32, statistics in f32, two-pass mean/variance.

use vidrt_ir::{DType, ReduceOp, RmsStyle};

use super::common::{
    block_reduce, contiguous, exp, for_range, load_f32, need_float, offset_of, store_f32, u32_of, Combine,
};
use super::elementwise::{eval, EwInput, Expr};
use crate::ptx::builder::{BinOp, Kernel, KernelBuilder, Operand, ParamTy, Reg, Special, Ty, UnOp};
use crate::ptx::KernelError;

/// Generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowParams {
    pub block: u32,
}

/// Every parameter point.
pub fn param_space() -> Vec<RowParams> {
    [32, 64, 128, 256, 512, 1024].into_iter().map(|block| RowParams { block }).collect()
}

/// What a row kernel computes.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    Reduce(ReduceOp),
    Softmax,
    Rms { eps: f64, style: RmsStyle, weight: bool },
    LayerNorm { eps: f64, affine: bool },
}

/// An elementwise epilogue applied to a row kernel's per-element result before the store:
/// slot 0 is that result, slot k ≥ 1 is `extra[k − 1]`, broadcast over `x_dims` (the row
/// kernel's input shape, row-major contiguous).
#[derive(Clone, Debug, PartialEq)]
pub struct Post {
    pub expr: Expr,
    pub extra: Vec<EwInput>,
    pub x_dims: Vec<usize>,
}

/// The split of a tensor into rows: `rows` decomposes over `row_dims` (with input strides
/// `row_strides`), a row's elements over `red_dims` / `red_strides`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowLayout {
    pub row_dims: Vec<usize>,
    pub row_strides: Vec<usize>,
    pub red_dims: Vec<usize>,
    pub red_strides: Vec<usize>,
}

impl RowLayout {
    /// Rows over the kept axes, reduction over `axes`, for an input of shape `dims`.
    pub fn over_axes(dims: &[usize], axes: &[usize]) -> RowLayout {
        let st = contiguous(dims);
        let mut l = RowLayout { row_dims: vec![], row_strides: vec![], red_dims: vec![], red_strides: vec![] };
        for (a, (&d, &s)) in dims.iter().zip(&st).enumerate() {
            if axes.contains(&a) {
                l.red_dims.push(d);
                l.red_strides.push(s);
            } else {
                l.row_dims.push(d);
                l.row_strides.push(s);
            }
        }
        l
    }

    pub fn rows(&self) -> usize {
        self.row_dims.iter().product()
    }

    pub fn len(&self) -> usize {
        self.red_dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Generates a row kernel. Parameters: x, then (Rms with weight) w, (LayerNorm affine) w, b,
/// then the output. Reductions write one element per row; the others write x's layout.
pub fn row_kernel(
    name: &str,
    op: &RowOp,
    layout: &RowLayout,
    in_dtype: DType,
    out_dtype: DType,
    p: RowParams,
    post: Option<&Post>,
) -> Result<Kernel, KernelError> {
    if post.is_some() && matches!(op, RowOp::Reduce(_)) {
        return Err(KernelError::Unsupported("an epilogue on a reduction".into()));
    }
    need_float(in_dtype, "row kernels")?;
    need_float(out_dtype, "row kernels")?;
    if !p.block.is_multiple_of(32) || p.block == 0 || p.block > 1024 {
        return Err(KernelError::Invalid(format!("block {} is not a multiple of 32 in 32..=1024", p.block)));
    }
    let n = u32_of(layout.len(), "row length")?;
    u32_of(layout.rows(), "rows")?;
    let header = format!(
        "row kernel {name}: {op:?}\n{in_dtype} -> {out_dtype}; rows {:?} (strides {:?}), reduced {:?} (strides {:?})\n1-D grid of {} blocks x {} threads; 128 B shared; params block={}",
        layout.row_dims,
        layout.row_strides,
        layout.red_dims,
        layout.red_strides,
        layout.rows(),
        p.block,
        p.block
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    let smem = b.shared(128);
    let x = b.param(ParamTy::Ptr);
    let (w, bias) = match op {
        RowOp::Rms { weight: true, .. } => (Some(b.param(ParamTy::Ptr)), None),
        RowOp::LayerNorm { affine: true, .. } => (Some(b.param(ParamTy::Ptr)), Some(b.param(ParamTy::Ptr))),
        _ => (None, None),
    };
    let extra: Vec<(Reg, EwInput)> =
        post.map(|q| q.extra.iter().map(|e| (b.param(ParamTy::Ptr), e.clone())).collect()).unwrap_or_default();
    let out = b.param(ParamTy::Ptr);
    // Stores element `i` (flat index into x) of the result, through the epilogue if any.
    let finish = |b: &mut KernelBuilder, i: Reg, v: Reg| -> Result<(), KernelError> {
        let v = match post {
            None => v,
            Some(q) => {
                let mut slots = vec![v];
                for (ptr, e) in &extra {
                    let o = offset_of(b, i, &q.x_dims, &e.strides)?;
                    slots.push(load_f32(b, *ptr, o, e.dtype));
                }
                eval(b, &q.expr, &slots)?
            }
        };
        store_f32(b, out, i, v, out_dtype);
        Ok(())
    };
    let row = b.special(Special::CtaidX);
    let tid = b.special(Special::TidX);
    let base = offset_of(&mut b, row, &layout.row_dims, &layout.row_strides)?;
    let (rd, rs) = (layout.red_dims.clone(), layout.red_strides.clone());
    let elem = |b: &mut KernelBuilder, k: Reg| -> Result<Reg, KernelError> {
        let o = offset_of(b, k, &rd, &rs)?;
        let i = b.bin(BinOp::Add, Ty::U32, base, o);
        Ok(i)
    };
    // Accumulates f(x_k) over the row with `c`, then combines across the block.
    let reduce =
        |b: &mut KernelBuilder, c: Combine, f: &dyn Fn(&mut KernelBuilder, Reg) -> Reg| -> Result<Reg, KernelError> {
            let acc = b.imm_f32(c.identity());
            for_range(b, tid, n, p.block, |b, k| {
                let i = elem(b, k)?;
                let v = load_f32(b, x, i, in_dtype);
                let v = f(b, v);
                let r = c.apply(b, acc, v);
                b.push(crate::ptx::builder::Inst::Mov { dst: acc, src: Operand::Reg(r) });
                Ok(())
            })?;
            Ok(block_reduce(b, acc, c, p.block, smem))
        };
    let ident = |_: &mut KernelBuilder, v: Reg| v;
    let f = Ty::F32;
    match op {
        RowOp::Reduce(r) => {
            let c = match r {
                ReduceOp::Sum | ReduceOp::Mean => Combine::Sum,
                ReduceOp::Max => Combine::Max,
                ReduceOp::Min => Combine::Min,
            };
            let mut v = reduce(&mut b, c, &ident)?;
            if *r == ReduceOp::Mean {
                v = b.bin(BinOp::Div, f, v, Operand::F32(n.max(1) as f32));
            }
            let not0 = b.setp(crate::ptx::builder::Cmp::Ne, tid, Operand::Int(0));
            let exit = b.label();
            b.bra_if(exit, not0, false);
            store_f32(&mut b, out, row, v, out_dtype);
            b.place(exit);
        }
        RowOp::Softmax => {
            let m = reduce(&mut b, Combine::Max, &ident)?;
            let sub_exp = move |b: &mut KernelBuilder, v: Reg| {
                let d = b.bin(BinOp::Sub, Ty::F32, v, m);
                exp(b, d)
            };
            let s = reduce(&mut b, Combine::Sum, &sub_exp)?;
            let inv = b.un(UnOp::Rcp, f, s);
            for_range(&mut b, tid, n, p.block, |b, k| {
                let i = elem(b, k)?;
                let v = load_f32(b, x, i, in_dtype);
                let e = sub_exp(b, v);
                let o = b.bin(BinOp::Mul, Ty::F32, e, inv);
                finish(b, i, o)
            })?;
        }
        RowOp::Rms { eps, style, .. } => {
            let sq = |b: &mut KernelBuilder, v: Reg| b.bin(BinOp::Mul, Ty::F32, v, v);
            let ss = reduce(&mut b, Combine::Sum, &sq)?;
            let factor = match style {
                RmsStyle::MeanSquare => {
                    let ms = b.bin(BinOp::Div, f, ss, Operand::F32(n.max(1) as f32));
                    let a = b.bin(BinOp::Add, f, ms, Operand::F32(*eps as f32));
                    let r = b.un(UnOp::Sqrt, f, a);
                    b.un(UnOp::Rcp, f, r)
                }
                RmsStyle::L2Clamp => {
                    let norm = b.un(UnOp::Sqrt, f, ss);
                    let d = b.bin(BinOp::Max, f, norm, Operand::F32(*eps as f32));
                    b.bin(BinOp::Div, f, Operand::F32((n as f32).sqrt()), d)
                }
            };
            for_range(&mut b, tid, n, p.block, |b, k| {
                let i = elem(b, k)?;
                let v = load_f32(b, x, i, in_dtype);
                let mut o = b.bin(BinOp::Mul, Ty::F32, v, factor);
                if let Some(w) = w {
                    let wv = load_f32(b, w, k, in_dtype);
                    o = b.bin(BinOp::Mul, Ty::F32, o, wv);
                }
                finish(b, i, o)
            })?;
        }
        RowOp::LayerNorm { eps, .. } => {
            let s = reduce(&mut b, Combine::Sum, &ident)?;
            let mean = b.bin(BinOp::Div, f, s, Operand::F32(n.max(1) as f32));
            let dev2 = move |b: &mut KernelBuilder, v: Reg| {
                let d = b.bin(BinOp::Sub, Ty::F32, v, mean);
                b.bin(BinOp::Mul, Ty::F32, d, d)
            };
            let vs = reduce(&mut b, Combine::Sum, &dev2)?;
            let var = b.bin(BinOp::Div, f, vs, Operand::F32(n.max(1) as f32));
            let a = b.bin(BinOp::Add, f, var, Operand::F32(*eps as f32));
            let sd = b.un(UnOp::Sqrt, f, a);
            let r = b.un(UnOp::Rcp, f, sd);
            for_range(&mut b, tid, n, p.block, |b, k| {
                let i = elem(b, k)?;
                let v = load_f32(b, x, i, in_dtype);
                let d = b.bin(BinOp::Sub, Ty::F32, v, mean);
                let mut o = b.bin(BinOp::Mul, Ty::F32, d, r);
                if let (Some(w), Some(bb)) = (w, bias) {
                    let wv = load_f32(b, w, k, in_dtype);
                    let bv = load_f32(b, bb, k, in_dtype);
                    o = b.fma(Ty::F32, o, wv, bv);
                }
                finish(b, i, o)
            })?;
        }
    }
    Ok(b.finish())
}
