//! 3-D convolution as tiled im2col + SGEMM. Work is split into (batch, output frame, row
//! tile) tasks; each packs only its own tile of the column matrix (bounded by `COL_BUDGET`
//! floats), so memory does not grow with the frame size. 1×1×1 convolutions skip packing.

use rayon::prelude::*;
use vidrt_ir::Shape;

/// Most f32 elements one task's column tile may hold (16 MiB).
const COL_BUDGET: usize = 4 << 20;
/// Columns per task of a 1×1×1 convolution.
const POINT_BLOCK: usize = 4096;

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
// SAFETY: tasks only write through it to disjoint index sets (argued at each use).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// `C[co, p] (= beta·C) + W[co, :]·col[:, p]` for `co < co_n`, `p < np`, C at
    /// `off + co·rsc + p`.
    ///
    /// # Safety
    /// The region must lie inside the buffer (checked) and no other task may touch it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        self,
        co_n: usize,
        k: usize,
        np: usize,
        w: &[f32],
        col: &[f32],
        col_rs: usize,
        off: usize,
        rsc: usize,
    ) {
        if co_n == 0 || np == 0 {
            return;
        }
        assert!(off + (co_n - 1) * rsc + np <= self.1, "conv3d: output tile out of bounds");
        assert!(
            co_n * k <= w.len() && (k.max(1) - 1) * col_rs + np <= col.len().max(np),
            "conv3d: operand out of bounds"
        );
        matrixmultiply::sgemm(
            co_n,
            k,
            np,
            1.0,
            w.as_ptr(),
            k as isize,
            1,
            col.as_ptr(),
            col_rs as isize,
            1,
            1.0,
            self.0.add(off),
            rsc as isize,
            1,
        );
    }
}

/// Cross-correlation as documented on `Op::Conv3d`; `out` is the inferred output shape.
#[allow(clippy::too_many_arguments)]
pub fn conv3d(
    x: &[f32],
    sx: &Shape,
    w: &[f32],
    sw: &Shape,
    bias: Option<&[f32]>,
    stride: [usize; 3],
    pad: [[usize; 2]; 3],
    out: &Shape,
) -> Vec<f32> {
    let xd = sx.dims();
    let wd = sw.dims();
    let od = out.dims();
    let (n, ci, t, h, wi) = (xd[0], xd[1], xd[2], xd[3], xd[4]);
    let (co, kt, kh, kw) = (wd[0], wd[2], wd[3], wd[4]);
    let (to, ho, wo) = (od[2], od[3], od[4]);
    let plane = to * ho * wo;
    let mut y = vec![0.0f32; n * co * plane];
    if let Some(b) = bias {
        for (i, chunk) in y.chunks_mut(plane.max(1)).enumerate() {
            chunk.fill(b[i % co]);
        }
    }
    if y.is_empty() {
        return y;
    }
    let k = ci * kt * kh * kw;
    let ptr = OutPtr(y.as_mut_ptr(), y.len());
    let pointwise = kt == 1 && kh == 1 && kw == 1 && stride == [1, 1, 1] && pad == [[0, 0]; 3];
    if pointwise {
        // W[co, ci] · x[n] viewed as [ci, T·H·W], split along columns.
        let cols = t * h * wi;
        let blocks = cols.div_ceil(POINT_BLOCK);
        (0..n * blocks).into_par_iter().for_each(|task| {
            let (ni, bk) = (task / blocks, task % blocks);
            let p0 = bk * POINT_BLOCK;
            let np = POINT_BLOCK.min(cols - p0);
            let xs = &x[ni * ci * cols + p0..];
            // SAFETY: the task owns columns p0..p0+np of batch ni for every output channel.
            unsafe { ptr.gemm(co, ci, np, w, xs, cols, ni * co * plane + p0, plane) };
        });
        return y;
    }
    let rows_per = (COL_BUDGET / (k * wo).max(1)).clamp(1, ho.max(1));
    let tiles = ho.div_ceil(rows_per);
    (0..n * to * tiles).into_par_iter().for_each(|task| {
        let ni = task / (to * tiles);
        let ti = (task / tiles) % to;
        let r0 = (task % tiles) * rows_per;
        let rows = rows_per.min(ho - r0);
        let np = rows * wo;
        let mut col = vec![0.0f32; k * np];
        for c in 0..ci {
            for dt in 0..kt {
                let tin = (ti * stride[0] + dt) as isize - pad[0][0] as isize;
                if tin < 0 || tin >= t as isize {
                    continue;
                }
                let xplane = &x[((ni * ci + c) * t + tin as usize) * h * wi..][..h * wi];
                for dh in 0..kh {
                    for dw in 0..kw {
                        let kr = ((c * kt + dt) * kh + dh) * kw + dw;
                        let dst = &mut col[kr * np..(kr + 1) * np];
                        for r in 0..rows {
                            let hin = ((r0 + r) * stride[1] + dh) as isize - pad[1][0] as isize;
                            if hin < 0 || hin >= h as isize {
                                continue;
                            }
                            let src = &xplane[hin as usize * wi..][..wi];
                            for (oc, d) in dst[r * wo..(r + 1) * wo].iter_mut().enumerate() {
                                let win = (oc * stride[2] + dw) as isize - pad[2][0] as isize;
                                if win >= 0 && win < wi as isize {
                                    *d = src[win as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        // SAFETY: the task owns rows r0..r0+rows of frame ti of batch ni for every channel.
        unsafe { ptr.gemm(co, k, np, w, &col, np, ni * co * plane + ti * ho * wo + r0 * wo, plane) };
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        [n, ci, t, h, wi]: [usize; 5],
        w: &[f32],
        [co, kt, kh, kw]: [usize; 4],
        st: [usize; 3],
        pad: [usize; 3],
        [to, ho, wo]: [usize; 3],
    ) -> Vec<f32> {
        let mut y = vec![0.0; n * co * to * ho * wo];
        for ni in 0..n {
            for o in 0..co {
                for a in 0..to {
                    for b in 0..ho {
                        for c in 0..wo {
                            let mut s = 0.0;
                            for i in 0..ci {
                                for dt in 0..kt {
                                    for dh in 0..kh {
                                        for dw in 0..kw {
                                            let tt = (a * st[0] + dt) as isize - pad[0] as isize;
                                            let hh = (b * st[1] + dh) as isize - pad[1] as isize;
                                            let ww = (c * st[2] + dw) as isize - pad[2] as isize;
                                            if tt >= 0
                                                && hh >= 0
                                                && ww >= 0
                                                && (tt as usize) < t
                                                && (hh as usize) < h
                                                && (ww as usize) < wi
                                            {
                                                s += x[(((ni * ci + i) * t + tt as usize) * h + hh as usize) * wi
                                                    + ww as usize]
                                                    * w[(((o * ci + i) * kt + dt) * kh + dh) * kw + dw];
                                            }
                                        }
                                    }
                                }
                            }
                            y[(((ni * co + o) * to + a) * ho + b) * wo + c] = s;
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn causal_strided_and_pointwise() {
        let gen =
            |len: usize, s: usize| (0..len).map(|i| (((i * s + 1) % 19) as f32 - 9.0) / 9.0).collect::<Vec<f32>>();
        for (k, st, pad) in [
            ([3, 3, 3], [1, 1, 1], [2, 1, 1]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1]),
            ([1, 1, 1], [1, 1, 1], [0, 0, 0]),
            ([3, 1, 1], [2, 1, 1], [0, 0, 0]),
        ] {
            let (n, ci, t, h, wi, co) = (2, 3, 5, 7, 9, 4);
            let x = gen(n * ci * t * h * wi, 7);
            let w = gen(co * ci * k[0] * k[1] * k[2], 3);
            let to = (t + pad[0] - k[0]) / st[0] + 1;
            let ho = (h + 2 * pad[1] - k[1]) / st[1] + 1;
            let wo = (wi + 2 * pad[2] - k[2]) / st[2] + 1;
            let want = naive(&x, [n, ci, t, h, wi], &w, [co, k[0], k[1], k[2]], st, pad, [to, ho, wo]);
            let got = conv3d(
                &x,
                &Shape::new([n, ci, t, h, wi]),
                &w,
                &Shape::new([co, ci, k[0], k[1], k[2]]),
                None,
                st,
                [[pad[0], 0], [pad[1], pad[1]], [pad[2], pad[2]]],
                &Shape::new([n, co, to, ho, wo]),
            );
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{k:?}: {a} vs {b}");
            }
        }
    }
}
