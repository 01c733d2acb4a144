//! Fused ops made by the compiler's fusion pass: elementwise programs evaluated in one pass
//! over the output (no intermediate tensors), matmul/conv3d epilogues, layer norm + modulate
//! and RMS norm + rope. Each computes exactly what its unfused composition computes, in the
//! same f32 operation order, except that values between fused steps are not rounded to a
//! storage dtype (an explicit cast step still rounds).

use half::{bf16, f16};
use rayon::prelude::*;
use vidrt_ir::{DType, ElementwiseExpr, ExprStep, Shape};

use super::elementwise::{binary_scalar, broadcast_strides, row_offset, unary_scalar};

/// Output elements evaluated per step of the program at a time (the scratch's width).
const BLOCK: usize = 512;

/// Rounds `v` to the precision of `d` (float dtypes; others pass through).
#[inline]
pub fn round_to(d: DType, v: f32) -> f32 {
    match d {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Evaluates `expr` over the broadcast of its input slots into `out`.
pub fn fused(expr: &ElementwiseExpr, inputs: &[(&[f32], &Shape)], out: &Shape) -> Vec<f32> {
    let n = out.numel();
    let mut v = vec![0f32; n];
    if n == 0 {
        return v;
    }
    let last = if out.rank() == 0 { 1 } else { out.last().max(1) };
    let strides: Vec<Vec<usize>> = inputs.iter().map(|(_, s)| broadcast_strides(s, out)).collect();
    let inner: Vec<usize> = strides.iter().map(|s| s.last().copied().unwrap_or(0)).collect();
    let steps = &expr.steps;
    let width = last.min(BLOCK);
    let do_row = |scratch: &mut Vec<f32>, (row, dst): (usize, &mut [f32])| {
        let base: Vec<usize> = strides.iter().map(|s| row_offset(row, out, s)).collect();
        let mut c0 = 0;
        while c0 < last {
            let len = width.min(last - c0);
            for (si, step) in steps.iter().enumerate() {
                let (done, rest) = scratch.split_at_mut(si * width);
                let cur = &mut rest[..len];
                match *step {
                    ExprStep::Input(k) => {
                        let (data, b, st) = (inputs[k].0, base[k], inner[k]);
                        for (j, o) in cur.iter_mut().enumerate() {
                            *o = data[b + (c0 + j) * st];
                        }
                    }
                    ExprStep::Unary(u, a) => {
                        let src = &done[a * width..a * width + len];
                        for (o, &x) in cur.iter_mut().zip(src) {
                            *o = unary_scalar(u, x);
                        }
                    }
                    ExprStep::Cast(d, a) => {
                        let src = &done[a * width..a * width + len];
                        for (o, &x) in cur.iter_mut().zip(src) {
                            *o = round_to(d, x);
                        }
                    }
                    ExprStep::Binary(op, a, b) => {
                        let (sa, sb) = (&done[a * width..a * width + len], &done[b * width..b * width + len]);
                        for ((o, &x), &y) in cur.iter_mut().zip(sa).zip(sb) {
                            *o = binary_scalar(op, x, y);
                        }
                    }
                }
            }
            let r = (steps.len() - 1) * width;
            dst[c0..c0 + len].copy_from_slice(&scratch[r..r + len]);
            c0 += len;
        }
    };
    let scratch_len = steps.len() * width;
    if n >= 1 << 15 {
        v.par_chunks_mut(last).enumerate().for_each_init(|| vec![0f32; scratch_len], do_row);
    } else {
        let mut scratch = vec![0f32; scratch_len];
        v.chunks_mut(last).enumerate().for_each(|item| do_row(&mut scratch, item));
    }
    v
}

/// `modulate(layer_norm(x, eps), scale, shift)` over the last axis in one pass.
pub fn layer_norm_modulate(
    x: &[f32],
    sx: &Shape,
    eps: f64,
    scale: (&[f32], &Shape),
    shift: (&[f32], &Shape),
) -> Vec<f32> {
    let d = sx.last();
    let mut out = vec![0f32; x.len()];
    if d == 0 || x.is_empty() {
        return out;
    }
    let (ss, st) = (broadcast_strides(scale.1, sx), broadcast_strides(shift.1, sx));
    let (is, it) = (ss.last().copied().unwrap_or(0), st.last().copied().unwrap_or(0));
    out.par_chunks_mut(d).zip(x.par_chunks(d)).enumerate().for_each(|(row, (o, lane))| {
        let (bs, bt) = (row_offset(row, sx, &ss), row_offset(row, sx, &st));
        let mean = lane.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = lane.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (k, (o, &v)) in o.iter_mut().zip(lane).enumerate() {
            let n = ((f64::from(v) - mean) * r) as f32;
            *o = n * (1.0 + scale.0[bs + k * is]) + shift.0[bt + k * it];
        }
    });
    out
}

/// `rope(reshape(rms_norm(x, w, last axis, mean-square), [.., S, heads, hd]), cos, sin)`.
/// `x` is `[.., S, C]`.
pub fn rms_norm_rope(x: &[f32], sx: &Shape, eps: f64, heads: usize, w: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let c = sx.last();
    let r = sx.rank();
    let s = sx.0[r - 2];
    let mut out = vec![0f32; x.len()];
    if c == 0 || x.is_empty() || heads == 0 {
        return out;
    }
    let hd = c / heads;
    out.par_chunks_mut(c).zip(x.par_chunks(c)).enumerate().for_each(|(row, (o, lane))| {
        let ss: f64 = lane.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let factor = (1.0 / (ss / c as f64 + eps).sqrt()) as f32;
        let tok = row % s;
        let (cs, sn) = (&cos[tok * hd..(tok + 1) * hd], &sin[tok * hd..(tok + 1) * hd]);
        for head in 0..heads {
            let base = head * hd;
            for p in 0..hd / 2 {
                let (i0, i1) = (base + 2 * p, base + 2 * p + 1);
                let a = lane[i0] * factor * w[i0];
                let b = lane[i1] * factor * w[i1];
                o[i0] = a * cs[2 * p] - b * sn[2 * p];
                o[i1] = a * sn[2 * p + 1] + b * cs[2 * p + 1];
            }
        }
    });
    out
}
