//! The implicit im2col of a conv input `[batch, Cin, T, H, W]` (K = Cin·kt·kh·kw, k =
//! ci·taps + tap; N = To·Ho·Wo output positions), gathered element by element into shared
//! memory for the implicit-GEMM convs: the SIMT kernel's per-slot loads (`PosSlot`,
//! `im2col_origin`, `im2col_index`), and the tensor-core kernels' register-staged gathers
//! of a `[BN][BK]` B slice: `Gather` (one position per thread, every k decomposed) and
//! `RowGather` (8 positions of one output row per thread, each k decomposed once for them).

use super::gemm::{imm, ConvGeom};
use super::gemm_mma::MmaParams;
use crate::ptx::builder::{BinOp, Cmp, Inst, KernelBuilder, Operand, Reg, Space, Ty};
use crate::ptx::KernelError;

/// Per-slot, loop-invariant parts of an im2col load: whether the output position is inside,
/// and its first padded input coordinate per axis.
pub(crate) struct PosSlot {
    nok: Reg,
    origin: [Reg; 3],
}

/// Decomposes output position `gn` (of `n`) into (to, ho, wo) and its padded input origin
/// `(to·st, ho·sh, wo·sw)`.
pub(crate) fn im2col_origin(b: &mut KernelBuilder, gn: Reg, g: &ConvGeom, n: u32) -> PosSlot {
    let (nok, origin) = position(b, gn, g, (n, n - 1));
    PosSlot { nok, origin }
}

/// Whether output position `gn` is below `n`, and the padded input origin `(to·st, ho·sh,
/// wo·sw)` of position min(gn, `last`).
fn position(b: &mut KernelBuilder, gn: Reg, g: &ConvGeom, (n, last): (u32, u32)) -> (Reg, [Reg; 3]) {
    let [_, oh, ow] = g.output.map(|d| d as u32);
    let st = g.stride.map(|d| d as u32);
    let nok = b.setp(Cmp::Lt, gn, imm(n));
    let gnc = b.bin(BinOp::Min, Ty::U32, gn, imm(last));
    let hw = b.bin(BinOp::Rem, Ty::U32, gnc, imm(oh * ow));
    let to = b.bin(BinOp::Div, Ty::U32, gnc, imm(oh * ow));
    let ho = b.bin(BinOp::Div, Ty::U32, hw, imm(ow));
    let wo = b.bin(BinOp::Rem, Ty::U32, hw, imm(ow));
    let origin = [
        b.bin(BinOp::Mul, Ty::U32, to, imm(st[0])),
        b.bin(BinOp::Mul, Ty::U32, ho, imm(st[1])),
        b.bin(BinOp::Mul, Ty::U32, wo, imm(st[2])),
    ];
    (nok, origin)
}

/// The unpadded input coordinates `origin + tap − pad_lo` of the first N axes (wrapping u32),
/// with `ok` narrowed to those inside their `extent`s.
fn unpadded<const N: usize>(
    b: &mut KernelBuilder,
    (origin, taps, extents): (&[Reg], [Reg; N], [u32; N]),
    g: &ConvGeom,
    ok: &mut Reg,
) -> [Reg; N] {
    let mut coord = taps;
    for (ax, (tap, extent)) in taps.into_iter().zip(extents).enumerate() {
        let c = b.bin(BinOp::Add, Ty::U32, origin[ax], tap);
        let c = b.bin(BinOp::Sub, Ty::U32, c, imm(g.pad_lo[ax] as u32));
        let inside = b.setp(Cmp::Lt, c, imm(extent));
        *ok = b.bin(BinOp::And, Ty::Pred, *ok, inside);
        coord[ax] = c;
    }
    coord
}

/// k = `gk` as (ci, [dt, dh, dw]) (of min(gk, K - 1)), and whether gk < K and `nok`.
fn taps_of(b: &mut KernelBuilder, gk: Reg, g: &ConvGeom, nok: Reg) -> (Reg, Reg, [Reg; 3]) {
    let (k, taps) = ((g.cin * g.taps()) as u32, g.taps() as u32);
    let [kh, kw] = [g.kernel[1] as u32, g.kernel[2] as u32];
    let kok = b.setp(Cmp::Lt, gk, imm(k));
    let ok = b.bin(BinOp::And, Ty::Pred, kok, nok);
    let gkc = b.bin(BinOp::Min, Ty::U32, gk, imm(k - 1));
    let ci = b.bin(BinOp::Div, Ty::U32, gkc, imm(taps));
    let r = b.bin(BinOp::Rem, Ty::U32, gkc, imm(taps));
    let dt = b.bin(BinOp::Div, Ty::U32, r, imm(kh * kw));
    let r2 = b.bin(BinOp::Rem, Ty::U32, r, imm(kh * kw));
    let dh = b.bin(BinOp::Div, Ty::U32, r2, imm(kw));
    let dw = b.bin(BinOp::Rem, Ty::U32, r2, imm(kw));
    (ok, ci, [dt, dh, dw])
}

/// The input element index under tap `gk` of the output position `ps` (0 when outside), and
/// whether it is inside the input (false in the padding or past K or N).
pub(crate) fn im2col_index(b: &mut KernelBuilder, ps: &PosSlot, gk: Reg, g: &ConvGeom) -> (Reg, Reg) {
    let [t, h, w] = g.input.map(|d| d as u32);
    let (mut ok, ci, [dt, dh, dw]) = taps_of(b, gk, g, ps.nok);
    // Unpadded coordinate = origin + tap − pad_lo, in wrapping u32: inside iff < extent.
    let coord = unpadded(b, (&ps.origin, [dt, dh, dw], [t, h, w]), g, &mut ok);
    let idx = b.fma(Ty::U32, ci, imm(t), coord[0]);
    let idx = b.fma(Ty::U32, idx, imm(h), coord[1]);
    let idx = b.fma(Ty::U32, idx, imm(w), coord[2]);
    (b.selp(Ty::U32, idx, imm(0), ok), ok)
}

/// One thread's share of a gathered B slice: a fixed output position (`n = tid % BN`) and
/// k offsets `kk0 + i·step`.
pub(crate) struct Gather {
    pos: PosSlot,
    kk0: Reg,
    soff: Reg,
    per: u32,
    step: u32,
}

impl Gather {
    pub(crate) fn new(
        b: &mut KernelBuilder,
        (tid, n0): (Reg, Reg),
        g: &ConvGeom,
        (nu, p): (u32, MmaParams),
        (a_bytes, stride): (u32, u32),
    ) -> Result<Gather, KernelError> {
        let threads = p.threads();
        if !threads.is_multiple_of(p.bn) || !p.bk.is_multiple_of(threads / p.bn) {
            return Err(KernelError::Invalid(format!("conv3d_mma parameters {p:?}: BN must divide the threads")));
        }
        let step = threads / p.bn;
        let nn = b.bin(BinOp::Rem, Ty::U32, tid, imm(p.bn));
        let kk0 = b.bin(BinOp::Div, Ty::U32, tid, imm(p.bn));
        let gn = b.bin(BinOp::Add, Ty::U32, n0, nn);
        let pos = im2col_origin(b, gn, g, nu);
        let soff = b.fma(Ty::U32, nn, imm(stride), imm(a_bytes));
        let soff = b.fma(Ty::U32, kk0, imm(2), soff);
        Ok(Gather { pos, kk0, soff, per: p.bk / step, step })
    }

    /// Loads this thread's elements of the slice at `k0` of the input at `x` into registers
    /// (zero in the padding and past K or N). The loads are not waited on here: the values
    /// are first used by [`Gather::store`].
    pub(crate) fn load(&self, b: &mut KernelBuilder, x: Reg, k0: Reg, g: &ConvGeom) -> Vec<Reg> {
        let gk0 = b.bin(BinOp::Add, Ty::U32, k0, self.kk0);
        (0..self.per)
            .map(|i| {
                let gk = b.bin(BinOp::Add, Ty::U32, gk0, imm(i * self.step));
                let (idx, ok) = im2col_index(b, &self.pos, gk, g);
                let ad = b.addr(x, idx, 2);
                let v = b.ld(Space::Global, Ty::B16, ad);
                b.selp(Ty::B16, v, Operand::Int(0), ok)
            })
            .collect()
    }

    /// Stores values from [`Gather::load`] into the stage at shared address `stage`.
    pub(crate) fn store(&self, b: &mut KernelBuilder, vals: &[Reg], stage: Reg) {
        let dst0 = b.bin(BinOp::Add, Ty::U32, stage, self.soff);
        for (i, &v) in (0u32..).zip(vals) {
            let dst = b.bin(BinOp::Add, Ty::U32, dst0, imm(2 * i * self.step));
            b.st(Space::Shared, dst, v);
        }
    }
}

/// A gathered B slice by rows of output positions, for convs whose output width is a
/// multiple of 8: thread t takes the 8 positions `8·pg..8·pg + 8` (pg = t % (BN/8): one
/// group lies in one output row, so it shares to and ho) at k offsets `kk0 + i·step` (kk0 =
/// t / (BN/8), step = threads / (BN/8)). Each k's taps, input row and time/height validity
/// are worked out once for its 8 positions, leaving an add, a compare and the load per
/// element ([`Gather`] decomposes every element's k). Value (i, j) is position
/// `8·pg + (j + pg) % 8`: the rotation puts a store's lanes on different rows modulo 8, which
/// spreads them over the banks (the stage's row stride is a multiple of 16 bytes).
pub(crate) struct RowGather {
    pg: Reg,
    /// Whether the group is inside N (N is a multiple of 8, so all of it or none).
    nok: Reg,
    /// The group's padded input origin in time and height (`to·st`, `ho·sh`) and its first
    /// output column times the width stride (`wo·sw`).
    origin: [Reg; 3],
    kk0: Reg,
    /// Byte offset in a stage of the group's first row (and, padded, the thread's first k).
    soff: Reg,
    per: u32,
    step: u32,
    layout: RowLayout,
}

/// Whether `conv3d_mma` gathers a conv of `g` at `p` by rows of 8 output positions
/// ([`RowGather`]: the output width a multiple of 8 and the threads dividing into the
/// groups), else element by element.
pub(crate) fn gathers_rows(g: &ConvGeom, p: MmaParams) -> bool {
    RowGather::fits(g, (p.threads(), p.bn, p.bk))
}

/// Where a [`RowGather`] stores: the `[BN][BK]` stage's byte layout.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowLayout {
    /// Rows of `stride` bytes (BK + 8 elements: the `ldmatrix` layout), from byte `sbase`.
    Padded { sbase: u32, stride: u32 },
    /// `rows` rows in 128-byte-swizzled 64-k panels from byte `sbase`
    /// ([`super::gemm_wgmma::swizzled_offset`]'s layout).
    Swizzled { sbase: u32, rows: u32 },
}

impl RowGather {
    /// Whether a conv of `g` can gather by rows with `threads` threads into a BN × BK stage.
    pub(crate) fn fits(g: &ConvGeom, (threads, bn, bk): (u32, u32, u32)) -> bool {
        let groups = bn / 8;
        g.output[2].is_multiple_of(8)
            && bn.is_multiple_of(8)
            && groups > 0
            && threads.is_multiple_of(groups)
            && bk.is_multiple_of(threads / groups)
    }

    /// The gather of thread `tid` for the BN positions from `n0` (of `nu`), `threads` threads
    /// and BK-wide slices (see [`RowGather::fits`]), storing in `layout`.
    pub(crate) fn new(
        b: &mut KernelBuilder,
        (tid, n0): (Reg, Reg),
        g: &ConvGeom,
        nu: u32,
        (threads, bn, bk): (u32, u32, u32),
        layout: RowLayout,
    ) -> RowGather {
        let groups = bn / 8;
        let step = threads / groups;
        let pg = b.bin(BinOp::Rem, Ty::U32, tid, imm(groups));
        let kk0 = b.bin(BinOp::Div, Ty::U32, tid, imm(groups));
        let gn = b.fma(Ty::U32, pg, imm(8), n0);
        let (nok, origin) = position(b, gn, g, (nu, nu - 8));
        let soff = match layout {
            RowLayout::Padded { sbase, stride } => {
                let row = b.bin(BinOp::Mul, Ty::U32, pg, imm(8 * stride));
                let soff = b.fma(Ty::U32, kk0, imm(2), row);
                b.bin(BinOp::Add, Ty::U32, soff, imm(sbase))
            }
            // The group's first row; the k part depends on the panel and chunk (`store`).
            RowLayout::Swizzled { sbase, .. } => b.fma(Ty::U32, pg, imm(8 * 128), imm(sbase)),
        };
        RowGather { pg, nok, origin, kk0, soff, per: bk / step, step, layout }
    }

    /// The row `(j + pg) % 8` of the group that value j holds.
    fn rotated(&self, b: &mut KernelBuilder, j: u32) -> Reg {
        let r = b.bin(BinOp::Add, Ty::U32, self.pg, imm(j));
        b.bin(BinOp::And, Ty::U32, r, imm(7))
    }

    /// Loads this thread's values of the slice at `k0` of the input at `x` (zero in the
    /// padding and past K or N), k-major: value `i·8 + j`. Not waited on here (see
    /// [`Gather::load`]).
    pub(crate) fn load(&self, b: &mut KernelBuilder, x: Reg, k0: Reg, g: &ConvGeom) -> Vec<Reg> {
        let [t, h, w] = g.input.map(|d| d as u32);
        let gk0 = b.bin(BinOp::Add, Ty::U32, k0, self.kk0);
        let sw = g.stride[2] as u32;
        let mut vals = Vec::with_capacity((self.per * 8) as usize);
        for i in 0..self.per {
            // This k's input row (its first element), the row's validity, and the width tap
            // less the padding (wrapping u32, as in `im2col_index`), for all 8 positions.
            let gk = b.bin(BinOp::Add, Ty::U32, gk0, imm(i * self.step));
            let (mut ok, ci, [dt, dh, dw]) = taps_of(b, gk, g, self.nok);
            let coord = unpadded(b, (&self.origin[..2], [dt, dh], [t, h]), g, &mut ok);
            let base = b.fma(Ty::U32, ci, imm(t), coord[0]);
            let base = b.fma(Ty::U32, base, imm(h), coord[1]);
            let base = b.bin(BinOp::Mul, Ty::U32, base, imm(w));
            // The group's first input column under this tap.
            let w0 = b.bin(BinOp::Add, Ty::U32, self.origin[2], dw);
            let w0 = b.bin(BinOp::Sub, Ty::U32, w0, imm(g.pad_lo[2] as u32));
            for j in 0..8 {
                let r = self.rotated(b, j);
                let wi = b.fma(Ty::U32, r, imm(sw), w0);
                let inside = b.setp(Cmp::Lt, wi, imm(w));
                let ok = b.bin(BinOp::And, Ty::Pred, ok, inside);
                let idx = b.bin(BinOp::Add, Ty::U32, base, wi);
                let idx = b.selp(Ty::U32, idx, imm(0), ok);
                let ad = b.addr(x, idx, 2);
                let v = b.ld(Space::Global, Ty::B16, ad);
                vals.push(b.selp(Ty::B16, v, Operand::Int(0), ok));
            }
        }
        vals
    }

    /// Stores values from [`RowGather::load`] into the stage at shared address `stage`.
    pub(crate) fn store(&self, b: &mut KernelBuilder, vals: &[Reg], stage: Reg) {
        let dst0 = b.bin(BinOp::Add, Ty::U32, stage, self.soff);
        match self.layout {
            RowLayout::Padded { stride, .. } => {
                for j in 0..8u32 {
                    let r = self.rotated(b, j);
                    let dst = b.fma(Ty::U32, r, imm(stride), dst0);
                    for i in 0..self.per {
                        let v = vals[(i * 8 + j) as usize];
                        let offset = (2 * i * self.step) as i32;
                        b.push(Inst::St { space: Space::Shared, src: vec![v], addr: dst, offset, guard: None });
                    }
                }
            }
            RowLayout::Swizzled { rows, .. } => {
                // Value (i, j): k = kk0 + i·step in panel k / 64, chunk (k / 8) % 8, element
                // k % 8; row 8·pg + r with r = n % 8, so its chunk sits at chunk XOR r.
                for i in 0..self.per {
                    let k = b.bin(BinOp::Add, Ty::U32, self.kk0, imm(i * self.step));
                    let panel = b.bin(BinOp::Shr, Ty::U32, k, imm(6));
                    let chunk = b.bin(BinOp::Shr, Ty::U32, k, imm(3));
                    let chunk = b.bin(BinOp::And, Ty::U32, chunk, imm(7));
                    let e = b.bin(BinOp::And, Ty::U32, k, imm(7));
                    let at = b.fma(Ty::U32, panel, imm(rows * 128), dst0);
                    let at = b.fma(Ty::U32, e, imm(2), at);
                    for j in 0..8u32 {
                        let r = self.rotated(b, j);
                        let c = b.bin(BinOp::Xor, Ty::U32, chunk, r);
                        let dst = b.fma(Ty::U32, r, imm(128), at);
                        let dst = b.fma(Ty::U32, c, imm(16), dst);
                        b.st(Space::Shared, dst, vals[(i * 8 + j) as usize]);
                    }
                }
            }
        }
    }
}
