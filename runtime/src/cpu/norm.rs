//! Norms, softmax and reductions. Statistics accumulate in f64 for a stable reference.

use rayon::prelude::*;
use vidrt_ir::{ReduceOp, RmsStyle, Shape};

/// Splits `shape` around `axis` into (outer, len, inner).
pub fn split_axis(shape: &Shape, axis: usize) -> (usize, usize, usize) {
    let outer = shape.0[..axis].iter().product();
    let inner = shape.0[axis + 1..].iter().product();
    (outer, shape.0[axis], inner)
}

/// Applies `f(lane_in, lane_out)` to every lane along `axis` (gathered into contiguous
/// buffers when the axis is not the last).
fn per_lane(x: &[f32], shape: &Shape, axis: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let (outer, len, inner) = split_axis(shape, axis);
    let mut out = vec![0f32; x.len()];
    if len == 0 || x.is_empty() {
        return out;
    }
    if inner == 1 {
        out.par_chunks_mut(len).zip(x.par_chunks(len)).for_each(|(o, i)| f(i, o));
        return out;
    }
    out.par_chunks_mut(len * inner).zip(x.par_chunks(len * inner)).for_each(|(o, i)| {
        let mut lane = vec![0f32; len];
        let mut res = vec![0f32; len];
        for j in 0..inner {
            for k in 0..len {
                lane[k] = i[k * inner + j];
            }
            f(&lane, &mut res);
            for k in 0..len {
                o[k * inner + j] = res[k];
            }
        }
    });
    let _ = outer;
    out
}

pub fn rms_norm(x: &[f32], shape: &Shape, axis: usize, eps: f64, style: RmsStyle, w: Option<&[f32]>) -> Vec<f32> {
    per_lane(x, shape, axis, |lane, out| {
        let ss: f64 = lane.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let n = lane.len() as f64;
        let factor = match style {
            RmsStyle::MeanSquare => 1.0 / (ss / n + eps).sqrt(),
            RmsStyle::L2Clamp => n.sqrt() / ss.sqrt().max(eps),
        } as f32;
        for (k, (o, &v)) in out.iter_mut().zip(lane).enumerate() {
            *o = v * factor * w.map_or(1.0, |w| w[k]);
        }
    })
}

pub fn layer_norm(x: &[f32], d: usize, eps: f64, affine: Option<(&[f32], &[f32])>) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if d == 0 {
        return out;
    }
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, lane)| {
        let mean = lane.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = lane.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (k, (o, &v)) in o.iter_mut().zip(lane).enumerate() {
            let n = ((f64::from(v) - mean) * r) as f32;
            *o = match affine {
                Some((w, b)) => n * w[k] + b[k],
                None => n,
            };
        }
    });
    out
}

pub fn softmax(x: &[f32], shape: &Shape, axis: usize) -> Vec<f32> {
    per_lane(x, shape, axis, |lane, out| {
        let m = lane.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0f64;
        for (o, &v) in out.iter_mut().zip(lane) {
            *o = (v - m).exp();
            s += f64::from(*o);
        }
        let inv = (1.0 / s) as f32;
        out.iter_mut().for_each(|o| *o *= inv);
    })
}

pub fn reduce(op: ReduceOp, x: &[f32], shape: &Shape, axes: &[usize]) -> Vec<f32> {
    // Output index = input index with the reduced axes dropped.
    let r = shape.rank();
    let kept: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
    let out_numel: usize = kept.iter().map(|&a| shape.0[a]).product();
    let count: usize = axes.iter().map(|&a| shape.0[a]).product();
    let mut acc = vec![
        match op {
            ReduceOp::Sum | ReduceOp::Mean => 0f64,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        };
        out_numel
    ];
    let strides = shape.strides();
    let mut out_strides = vec![0usize; r];
    let mut s = 1;
    for &a in kept.iter().rev() {
        out_strides[a] = s;
        s *= shape.0[a];
    }
    for (i, &v) in x.iter().enumerate() {
        let mut o = 0;
        for a in 0..r {
            o += ((i / strides[a]) % shape.0[a]) * out_strides[a];
        }
        let v = f64::from(v);
        acc[o] = match op {
            ReduceOp::Sum | ReduceOp::Mean => acc[o] + v,
            ReduceOp::Max => acc[o].max(v),
            ReduceOp::Min => acc[o].min(v),
        };
    }
    acc.into_iter().map(|a| if op == ReduceOp::Mean { (a / count.max(1) as f64) as f32 } else { a as f32 }).collect()
}
