//! Data movement: permute, slice, concat, nearest-exact upsample, embedding gather. The
//! copies are generic over the element type, so integer tensors (ids, masks) move exactly.

use rayon::prelude::*;
use vidrt_ir::{Node, Shape, Tensor, TensorData};

use crate::RuntimeError;

macro_rules! each_dtype {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::BF16($v) => TensorData::BF16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
        }
    };
}

fn permute_vec<T: Copy + Send + Sync>(v: &[T], shape: &Shape, perm: &[usize]) -> Vec<T> {
    let in_strides = shape.strides();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape.0[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let r = out_shape.len();
    let last = out_shape.last().copied().unwrap_or(1).max(1);
    let last_stride = src_strides.last().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(v.len());
    // SAFETY-free approach: fill row by row.
    let rows = if r == 0 { 1 } else { v.len() / last };
    let mut rowbufs: Vec<Vec<T>> = (0..rows)
        .into_par_iter()
        .map(|row| {
            let mut rem = row;
            let mut base = 0;
            for ax in (0..r.saturating_sub(1)).rev() {
                base += (rem % out_shape[ax]) * src_strides[ax];
                rem /= out_shape[ax];
            }
            (0..last).map(|j| v[base + j * last_stride]).collect()
        })
        .collect();
    for b in rowbufs.iter_mut() {
        out.append(b);
    }
    out
}

pub fn permute(t: &Tensor, perm: &[usize]) -> Tensor {
    let shape = Shape(perm.iter().map(|&p| t.shape().0[p]).collect());
    let data =
        if t.numel() == 0 { t.data().clone() } else { each_dtype!(t.data(), v => permute_vec(v, t.shape(), perm)) };
    Tensor::new(shape, data).unwrap_or_else(|_| t.clone())
}

fn slice_vec<T: Copy>(v: &[T], outer: usize, len: usize, inner: usize, start: usize, end: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        let base = o * len * inner;
        out.extend_from_slice(&v[base + start * inner..base + end * inner]);
    }
    out
}

pub fn slice(t: &Tensor, axis: usize, start: usize, end: usize) -> Tensor {
    let (outer, len, inner) = crate::cpu::norm::split_axis(t.shape(), axis);
    let mut shape = t.shape().clone();
    shape.0[axis] = end - start;
    let data = each_dtype!(t.data(), v => slice_vec(v, outer, len, inner, start, end));
    Tensor::new(shape, data).unwrap_or_else(|_| t.clone())
}

pub fn concat(ins: &[&Tensor], axis: usize, out: &Shape) -> Result<Tensor, RuntimeError> {
    let dtype = ins[0].dtype();
    let outer: usize = out.0[..axis].iter().product();
    let inner: usize = out.0[axis + 1..].iter().product();
    let parts: Vec<Tensor> = ins.iter().map(|t| t.cast(dtype)).collect();
    macro_rules! cat {
        ($variant:ident) => {{
            let mut v = Vec::with_capacity(out.numel());
            for o in 0..outer {
                for p in &parts {
                    let len = p.shape().0[axis] * inner;
                    if let TensorData::$variant(src) = p.data() {
                        v.extend_from_slice(&src[o * len..(o + 1) * len]);
                    }
                }
            }
            TensorData::$variant(v)
        }};
    }
    let data = match ins[0].data() {
        TensorData::F32(_) => cat!(F32),
        TensorData::F16(_) => cat!(F16),
        TensorData::BF16(_) => cat!(BF16),
        TensorData::I32(_) => cat!(I32),
        TensorData::I64(_) => cat!(I64),
    };
    Tensor::new(out.clone(), data).map_err(|e| RuntimeError::Device(e.to_string()))
}

/// Nearest-exact upsampling of the last two axes: `out[i] = in[floor((i + 0.5) / f)]`,
/// which is `in[i / f]` for integer factors.
pub fn upsample(x: &[f32], shape: &Shape, f: [usize; 2]) -> Vec<f32> {
    let r = shape.rank();
    let (h, w) = (shape.0[r - 2], shape.0[r - 1]);
    let (oh, ow) = (h * f[0], w * f[1]);
    let planes = x.len().checked_div(h * w).unwrap_or(0);
    let mut out = vec![0f32; planes * oh * ow];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
        let src = &x[p * h * w..(p + 1) * h * w];
        for i in 0..oh {
            let si = i / f[0];
            for j in 0..ow {
                o[i * ow + j] = src[si * w + j / f[1]];
            }
        }
    });
    out
}

pub fn gather(table: &[f32], ts: &Shape, ids: &[i64], node: &Node) -> Result<Vec<f32>, RuntimeError> {
    let (v, d) = (ts.0[0], ts.0[1]);
    let mut out = Vec::with_capacity(ids.len() * d);
    for (i, &id) in ids.iter().enumerate() {
        let row = usize::try_from(id).ok().filter(|&r| r < v).ok_or_else(|| RuntimeError::BadInput {
            name: node.name.clone(),
            reason: format!("id {id} at position {i} is outside the table of {v} rows"),
        })?;
        out.extend_from_slice(&table[row * d..(row + 1) * d]);
    }
    Ok(out)
}
