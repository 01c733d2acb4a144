//! Positional embeddings: Wan's 3-axis rotary tables and rotation, the sinusoidal timestep
//! embedding, umT5 relative-position buckets.

use rayon::prelude::*;
use vidrt_ir::{op::t5_relative_bucket, Shape, TrigPart};

/// `[S, hd]` rotary table; see `Op::RopeTable`. Frequencies and angles in f64.
pub fn rope_table(grid: [usize; 3], dims: [usize; 3], theta: f64, part: TrigPart) -> Vec<f32> {
    let hd: usize = dims.iter().sum();
    let s = grid[0] * grid[1] * grid[2];
    let mut out = vec![0f32; s * hd];
    // Per axis: inv_freq_j = 1 / theta^(2j/d), j < d/2.
    let freqs: Vec<Vec<f64>> =
        dims.iter().map(|&d| (0..d / 2).map(|j| 1.0 / theta.powf((2 * j) as f64 / d as f64)).collect()).collect();
    for f in 0..grid[0] {
        for h in 0..grid[1] {
            for w in 0..grid[2] {
                let tok = (f * grid[1] + h) * grid[2] + w;
                let row = &mut out[tok * hd..(tok + 1) * hd];
                let mut p = 0;
                for (axis, pos) in [f, h, w].into_iter().enumerate() {
                    for &fr in &freqs[axis] {
                        let a = pos as f64 * fr;
                        let v = match part {
                            TrigPart::Cos => a.cos(),
                            TrigPart::Sin => a.sin(),
                        } as f32;
                        row[2 * p] = v;
                        row[2 * p + 1] = v;
                        p += 1;
                    }
                }
            }
        }
    }
    out
}

/// Interleaved rotation of x `[.., S, H, hd]` by tables `[S, hd]`.
pub fn rope(x: &[f32], shape: &Shape, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let r = shape.rank();
    let (s, h, hd) = (shape.0[r - 3], shape.0[r - 2], shape.0[r - 1]);
    let mut out = vec![0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(h * hd).zip(x.par_chunks(h * hd)).enumerate().for_each(|(row, (o, xi))| {
        let tok = row % s;
        let (c, sn) = (&cos[tok * hd..(tok + 1) * hd], &sin[tok * hd..(tok + 1) * hd]);
        for head in 0..h {
            let base = head * hd;
            for p in 0..hd / 2 {
                let (a, b) = (xi[base + 2 * p], xi[base + 2 * p + 1]);
                o[base + 2 * p] = a * c[2 * p] - b * sn[2 * p];
                o[base + 2 * p + 1] = a * sn[2 * p + 1] + b * c[2 * p + 1];
            }
        }
    });
    out
}

/// diffusers' `get_timestep_embedding` in f32.
pub fn timestep_embedding(t: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f64, max_period: f64) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|j| {
            let exponent = -(max_period as f32).ln() * j as f32 / (half as f32 - shift as f32);
            exponent.exp()
        })
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &tv in t {
        let args: Vec<f32> = freqs.iter().map(|&f| tv * f).collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            out.extend(cos);
            out.extend(sin);
        } else {
            out.extend(sin);
            out.extend(cos);
        }
    }
    out
}

pub fn rel_position_bucket(q_len: usize, k_len: usize, num_buckets: usize, max_distance: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len {
        for j in 0..k_len {
            out.push(t5_relative_bucket(j as i64 - i as i64, num_buckets, max_distance));
        }
    }
    out
}
