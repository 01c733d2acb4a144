//! Matrix multiply through `matrixmultiply`'s packed SGEMM, split across threads by row
//! blocks (and by batch when there are many).

use rayon::prelude::*;
use vidrt_ir::Shape;

/// Rows per parallel task; large enough to amortise packing of B.
const ROW_BLOCK: usize = 64;

/// A strided matrix view: element (i, j) is at `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Last index a `rows × cols` view touches, or None when it is empty.
fn extent(rows: usize, cols: usize, off: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        None
    } else {
        Some(off + (rows - 1) * rs + (cols - 1) * cs)
    }
}

/// `C = A·B + beta·C` with A `m × k`, B `k × n`, C `m × n` at `c[coff + i·rsc + j·csc]`.
///
/// Bounds are checked before the unsafe call: a view that reaches outside its slice panics
/// (an internal bug, never a user error: callers derive strides from verified shapes).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    coff: usize,
    rsc: usize,
    csc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if let Some(e) = extent(m, n, coff, rsc, csc) {
        assert!(e < c.len(), "sgemm: C view out of bounds");
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let x = &mut c[coff + i * rsc + j * csc];
                *x *= beta;
            }
        }
        return;
    }
    if let Some(e) = extent(m, k, a.off, a.rs, a.cs) {
        assert!(e < a.data.len(), "sgemm: A view out of bounds");
    }
    if let Some(e) = extent(k, n, b.off, b.rs, b.cs) {
        assert!(e < b.data.len(), "sgemm: B view out of bounds");
    }
    // SAFETY: every index the views can reach was checked against its slice above; C is
    // borrowed mutably, A and B shared, so they cannot alias C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr().add(a.off),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.off),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr().add(coff),
            rsc as isize,
            csc as isize,
        );
    }
}

/// Index of the broadcast source batch for output batch `i`.
fn batch_index(out_batch: &[usize], src_batch: &[usize], mut i: usize) -> usize {
    let off = out_batch.len() - src_batch.len();
    let mut idx = 0;
    let mut stride = 1;
    for ax in (0..out_batch.len()).rev() {
        let coord = i % out_batch[ax];
        i /= out_batch[ax];
        if ax >= off {
            let d = src_batch[ax - off];
            if d != 1 {
                idx += coord * stride;
            }
            stride *= d;
        }
    }
    idx
}

/// `out = op(a)·op(b) (+ bias)` with broadcast batch axes; shapes as in `Op::MatMul`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    sa: &Shape,
    b: &[f32],
    sb: &Shape,
    trans_a: bool,
    trans_b: bool,
    bias: Option<&[f32]>,
    out: &Shape,
) -> Vec<f32> {
    let (ad, bd, od) = (sa.dims(), sb.dims(), out.dims());
    let (ar, br, or) = (ad.len(), bd.len(), od.len());
    let (m, n) = (od[or - 2], od[or - 1]);
    let k = if trans_a { ad[ar - 2] } else { ad[ar - 1] };
    let (a_rows, a_cols) = (ad[ar - 2], ad[ar - 1]);
    let (b_rows, b_cols) = (bd[br - 2], bd[br - 1]);
    let out_batch = &od[..or - 2];
    let nb: usize = out_batch.iter().product();
    let mut c = vec![0.0f32; nb * m * n];
    if let Some(bias) = bias {
        for row in c.chunks_mut(n.max(1)) {
            row.copy_from_slice(&bias[..row.len()]);
        }
    }
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let (a_rs, a_cs) = if trans_a { (1, a_cols) } else { (a_cols, 1) };
    let (b_rs, b_cs) = if trans_b { (1, b_cols) } else { (b_cols, 1) };
    if m * n == 0 {
        return c;
    }
    let run = |bi: usize, cb: &mut [f32]| {
        let a_off = batch_index(out_batch, &ad[..ar - 2], bi) * a_rows * a_cols;
        let b_off = batch_index(out_batch, &bd[..br - 2], bi) * b_rows * b_cols;
        let bv = MatRef { data: b, off: b_off, rs: b_rs, cs: b_cs };
        cb.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(t, cc)| {
            let i0 = t * ROW_BLOCK;
            let rows = cc.len() / n;
            let av = MatRef { data: a, off: a_off + i0 * a_rs, rs: a_rs, cs: a_cs };
            sgemm(rows, k, n, av, bv, beta, cc, 0, n, 1);
        });
    };
    if nb >= 4 && m <= 4 * ROW_BLOCK {
        c.par_chunks_mut(m * n).enumerate().for_each(|(bi, cb)| run(bi, cb));
    } else {
        c.chunks_mut(m * n).enumerate().for_each(|(bi, cb)| run(bi, cb));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn odd_sizes_and_transposes() {
        let (m, k, n) = (131, 37, 19);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let want = naive(&a, &b, m, k, n);
        let got = matmul(&a, &Shape::new([m, k]), &b, &Shape::new([k, n]), false, false, None, &Shape::new([m, n]));
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4);
        }
        // aᵀ stored as [k, m], bᵀ stored as [n, k].
        let mut at = vec![0.0; m * k];
        let mut bt = vec![0.0; k * n];
        for i in 0..m {
            for p in 0..k {
                at[p * m + i] = a[i * k + p];
            }
        }
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let got = matmul(&at, &Shape::new([k, m]), &bt, &Shape::new([n, k]), true, true, None, &Shape::new([m, n]));
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4);
        }
    }

    #[test]
    fn broadcast_batch_and_bias() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..2 * m * k).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| i as f32 * 0.01 - 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let got = matmul(
            &a,
            &Shape::new([2, m, k]),
            &b,
            &Shape::new([k, n]),
            false,
            false,
            Some(&bias),
            &Shape::new([2, m, n]),
        );
        for bi in 0..2 {
            let want = naive(&a[bi * m * k..(bi + 1) * m * k], &b, m, k, n);
            for i in 0..m * n {
                assert!((got[bi * m * n + i] - want[i] - bias[i % n]).abs() < 1e-4);
            }
        }
    }
}
