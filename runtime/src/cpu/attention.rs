//! Scaled dot-product attention with an online softmax over key tiles (FlashAttention's
//! algorithm on the CPU). Each worker holds one `Q_TILE × K_TILE` score tile and one
//! `Q_TILE × Dv` accumulator, whatever the sequence length: the full score matrix is never
//! materialised (Wan2.1-1.3B at 832×480×81 has 32,760 tokens).

use rayon::prelude::*;
use vidrt_ir::Shape;

use super::matmul::{sgemm, MatRef};

pub const Q_TILE: usize = 64;
pub const K_TILE: usize = 256;

/// Strides that read a bias broadcast (right-aligned) to `[B, H, Sq, Sk]`.
fn bias_strides(s: &Shape, full: [usize; 4]) -> [usize; 4] {
    let d = s.dims();
    let mut out = [0usize; 4];
    let mut stride = 1;
    for i in (0..d.len()).rev() {
        let ax = 4 - d.len() + i;
        out[ax] = if d[i] == 1 && full[ax] != 1 { 0 } else { stride };
        stride *= d[i];
    }
    out
}

/// `softmax(q·kᵀ·scale + bias, masked keys excluded) · v` in BSHD layout (see
/// `Op::Attention`). A query row whose keys are all masked produces zeros.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    sq: &Shape,
    k: &[f32],
    sk: &Shape,
    v: &[f32],
    sv: &Shape,
    scale: f64,
    bias: Option<(&[f32], &Shape)>,
    mask: Option<&[f32]>,
) -> Vec<f32> {
    let [b, lq, h, d] = [sq.dims()[0], sq.dims()[1], sq.dims()[2], sq.dims()[3]];
    let lk = sk.dims()[1];
    let dv = sv.dims()[3];
    let scale = scale as f32;
    let mut out = vec![0.0f32; b * lq * h * dv];
    if out.is_empty() {
        return out;
    }
    let bstr = bias.map(|(_, s)| bias_strides(s, [b, h, lq, lk]));
    out.par_chunks_mut(lq * h * dv).enumerate().for_each(|(bi, ob)| {
        ob.par_chunks_mut(Q_TILE * h * dv).enumerate().for_each(|(t, oc)| {
            let q0 = t * Q_TILE;
            let rows = oc.len() / (h * dv);
            let mut s = vec![0.0f32; Q_TILE * K_TILE];
            let mut acc = vec![0.0f32; Q_TILE * dv];
            let mut m = vec![f32::NEG_INFINITY; Q_TILE];
            let mut l = vec![0.0f32; Q_TILE];
            for hi in 0..h {
                acc.fill(0.0);
                m.fill(f32::NEG_INFINITY);
                l.fill(0.0);
                let qv = MatRef { data: q, off: ((bi * lq + q0) * h + hi) * d, rs: h * d, cs: 1 };
                for k0 in (0..lk).step_by(K_TILE) {
                    let kn = K_TILE.min(lk - k0);
                    // scores[i, j] = q[i]·k[j]
                    let kv = MatRef { data: k, off: ((bi * lk + k0) * h + hi) * d, rs: 1, cs: h * d };
                    sgemm(rows, d, kn, qv, kv, 0.0, &mut s, 0, kn, 1);
                    for i in 0..rows {
                        let row = &mut s[i * kn..(i + 1) * kn];
                        let mut mx = m[i];
                        for (j, x) in row.iter_mut().enumerate() {
                            let mut y = *x * scale;
                            if let (Some((bv, _)), Some(st)) = (bias, bstr) {
                                y += bv[bi * st[0] + hi * st[1] + (q0 + i) * st[2] + (k0 + j) * st[3]];
                            }
                            if let Some(mk) = mask {
                                if mk[bi * lk + k0 + j] == 0.0 {
                                    y = f32::NEG_INFINITY;
                                }
                            }
                            *x = y;
                            mx = mx.max(y);
                        }
                        if mx == f32::NEG_INFINITY {
                            // Nothing visible yet in this row: contribute nothing.
                            row.fill(0.0);
                            continue;
                        }
                        let corr = (m[i] - mx).exp();
                        let mut sum = 0.0f32;
                        for x in row.iter_mut() {
                            *x = (*x - mx).exp();
                            sum += *x;
                        }
                        l[i] = l[i] * corr + sum;
                        m[i] = mx;
                        for a in &mut acc[i * dv..(i + 1) * dv] {
                            *a *= corr;
                        }
                    }
                    let pv = MatRef { data: &s, off: 0, rs: kn, cs: 1 };
                    let vv = MatRef { data: v, off: ((bi * lk + k0) * h + hi) * dv, rs: h * dv, cs: 1 };
                    sgemm(rows, kn, dv, pv, vv, 1.0, &mut acc, 0, dv, 1);
                }
                for i in 0..rows {
                    let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
                    let o = &mut oc[(i * h + hi) * dv..(i * h + hi + 1) * dv];
                    for (x, a) in o.iter_mut().zip(&acc[i * dv..(i + 1) * dv]) {
                        *x = a * inv;
                    }
                }
            }
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain attention with the whole score row materialised.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        [b, lq, lk, h, d]: [usize; 5],
        scale: f32,
        mask: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![0.0; b * lq * h * d];
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..lq {
                    let mut s: Vec<f32> = (0..lk)
                        .map(|j| {
                            let dot: f32 = (0..d)
                                .map(|x| q[((bi * lq + i) * h + hi) * d + x] * k[((bi * lk + j) * h + hi) * d + x])
                                .sum();
                            if mask.is_some_and(|mk| mk[bi * lk + j] == 0.0) {
                                f32::NEG_INFINITY
                            } else {
                                dot * scale
                            }
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = s
                        .iter_mut()
                        .map(|x| {
                            *x = (*x - mx).exp();
                            *x
                        })
                        .sum();
                    for x in 0..d {
                        out[((bi * lq + i) * h + hi) * d + x] =
                            (0..lk).map(|j| s[j] / sum * v[((bi * lk + j) * h + hi) * d + x]).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_across_tiles_with_mask() {
        let (b, lq, lk, h, d) = (2, 70, 300, 3, 8);
        let gen = |n: usize, s: usize| (0..n).map(|i| (((i * s + 3) % 17) as f32 - 8.0) / 8.0).collect::<Vec<f32>>();
        let q = gen(b * lq * h * d, 7);
        let k = gen(b * lk * h * d, 5);
        let v = gen(b * lk * h * d, 3);
        let mask: Vec<f32> = (0..b * lk).map(|i| if i % lk < 290 - 100 * (i / lk) { 1.0 } else { 0.0 }).collect();
        let want = naive(&q, &k, &v, [b, lq, lk, h, d], 0.3, Some(&mask));
        let got = attention(
            &q,
            &Shape::new([b, lq, h, d]),
            &k,
            &Shape::new([b, lk, h, d]),
            &v,
            &Shape::new([b, lk, h, d]),
            0.3,
            None,
            Some(&mask),
        );
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}
