//! Elementwise ops: unary functions, broadcasting binary ops, modulate.

use rayon::prelude::*;
use vidrt_ir::{BinaryOp, Shape, Tensor, TensorData, UnaryOp};

use crate::RuntimeError;

/// Work below this many elements stays on one thread.
const PAR_MIN: usize = 1 << 15;

#[inline]
pub fn unary_scalar(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Square => x * x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::GeluTanh => {
            const K: f32 = 0.797_884_6; // sqrt(2/pi)
            0.5 * x * (1.0 + (K * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::GeluErf => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::AddScalar(c) => x + c as f32,
        UnaryOp::MulScalar(c) => x * c as f32,
        UnaryOp::Clamp(lo, hi) => x.max(lo as f32).min(hi as f32),
    }
}

pub fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    if x.len() >= PAR_MIN {
        x.par_iter().map(|&v| unary_scalar(op, v)).collect()
    } else {
        x.iter().map(|&v| unary_scalar(op, v)).collect()
    }
}

#[inline]
pub fn binary_scalar(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
    }
}

/// Element strides of `shape` read as broadcast into `out` (0 on broadcast axes).
pub fn broadcast_strides(shape: &Shape, out: &Shape) -> Vec<usize> {
    let r = out.rank();
    let own = shape.strides();
    (0..r)
        .map(|i| {
            if i + shape.rank() < r {
                0
            } else {
                let j = i + shape.rank() - r;
                if shape.0[j] == 1 && out.0[i] != 1 {
                    0
                } else {
                    own[j]
                }
            }
        })
        .collect()
}

/// Offsets of the first element of output row `row` (all axes but the last) in each input.
pub fn row_offset(row: usize, out: &Shape, strides: &[usize]) -> usize {
    let r = out.rank();
    let mut rem = row;
    let mut off = 0;
    for ax in (0..r.saturating_sub(1)).rev() {
        let d = out.0[ax];
        off += (rem % d) * strides[ax];
        rem /= d;
    }
    off
}

/// Applies `f` over the broadcast of `inputs` into `out`, row by row along the last axis.
pub fn broadcast_map<const N: usize>(
    inputs: [(&[f32], &Shape); N],
    out: &Shape,
    f: impl Fn([f32; N]) -> f32 + Sync,
) -> Vec<f32> {
    let n = out.numel();
    let last = out.last().max(1);
    let strides: Vec<Vec<usize>> = inputs.iter().map(|(_, s)| broadcast_strides(s, out)).collect();
    let mut v = vec![0f32; n];
    if n == 0 {
        return v;
    }
    let inner: Vec<usize> = strides.iter().map(|s| s.last().copied().unwrap_or(0)).collect();
    let do_row = |(row, dst): (usize, &mut [f32])| {
        let base: Vec<usize> = strides.iter().map(|s| row_offset(row, out, s)).collect();
        for (j, o) in dst.iter_mut().enumerate() {
            let mut args = [0f32; N];
            for k in 0..N {
                args[k] = inputs[k].0[base[k] + j * inner[k]];
            }
            *o = f(args);
        }
    };
    if n >= PAR_MIN {
        v.par_chunks_mut(last).enumerate().for_each(do_row);
    } else {
        v.chunks_mut(last).enumerate().for_each(do_row);
    }
    v
}

pub fn binary(op: BinaryOp, a: &[f32], sa: &Shape, b: &[f32], sb: &Shape, out: &Shape) -> Vec<f32> {
    if sa == out && sb == out {
        let f = |(x, y): (&f32, &f32)| binary_scalar(op, *x, *y);
        return if a.len() >= PAR_MIN {
            a.par_iter().zip(b).map(f).collect()
        } else {
            a.iter().zip(b).map(f).collect()
        };
    }
    broadcast_map([(a, sa), (b, sb)], out, |[x, y]| binary_scalar(op, x, y))
}

/// Integer binary ops (exact, for masks and ids); division truncates, pow saturates.
pub fn binary_int(op: BinaryOp, a: &Tensor, b: &Tensor, out: &Shape) -> Result<Tensor, RuntimeError> {
    let (va, vb) = (a.to_i64_vec(), b.to_i64_vec());
    let (sa, sb) = (broadcast_strides(a.shape(), out), broadcast_strides(b.shape(), out));
    let mut res = Vec::with_capacity(out.numel());
    let ostr = out.strides();
    for i in 0..out.numel() {
        let (mut oa, mut ob, mut rem) = (0, 0, i);
        for ax in 0..out.rank() {
            let c = rem / ostr[ax];
            rem %= ostr[ax];
            oa += c * sa[ax];
            ob += c * sb[ax];
        }
        let (x, y) = (va[oa], vb[ob]);
        res.push(match op {
            BinaryOp::Add => x.wrapping_add(y),
            BinaryOp::Sub => x.wrapping_sub(y),
            BinaryOp::Mul => x.wrapping_mul(y),
            BinaryOp::Div => x.checked_div(y).ok_or_else(|| RuntimeError::Device("integer division by zero".into()))?,
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            BinaryOp::Pow => x.saturating_pow(u32::try_from(y).unwrap_or(0)),
        });
    }
    let t = Tensor::new(out.clone(), TensorData::I64(res)).map_err(|e| RuntimeError::Device(e.to_string()))?;
    Ok(t.cast(a.dtype()))
}

/// `x·(1 + scale) + shift`, with scale and shift broadcast to x.
pub fn modulate(x: &[f32], sx: &Shape, scale: &[f32], ss: &Shape, shift: &[f32], sh: &Shape) -> Vec<f32> {
    broadcast_map([(x, sx), (scale, ss), (shift, sh)], sx, |[x, s, t]| x * (1.0 + s) + t)
}
