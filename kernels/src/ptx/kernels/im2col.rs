//! The implicit im2col of a conv input `[batch, Cin, T, H, W]` (K = Cin·kt·kh·kw, k =
//! ci·taps + tap; N = To·Ho·Wo output positions), gathered element by element into shared
//! memory for the implicit-GEMM convs: the SIMT kernel's per-slot loads (`PosSlot`,
//! `im2col_origin`, `im2col_index`), and the tensor-core kernels' register-staged gathers
//! of a `[BN][BK]` B slice: `Gather` (one position per thread, every k decomposed),
//! `RowGather` (8 positions of one output row per thread, each k decomposed once for them)
//! and `VecRowGather` (the same 8 positions read as one 16-byte vector per k, for stride-1
//! convs whose width taps shift by at most one column).
//!
//! A channels-last input `[batch, T, H, W, Cin]` needs no gather through registers:
//! `ChannelsLastGather` orders K tap-major (k = tap·Cin + ci, the weight stored `[Cout, kt,
//! kh, kw, Cin]`), so with Cin a multiple of 8 every 8 consecutive k of one position are one
//! aligned 16-byte run of its input pixel, copied by `cp.async` (zero-filled in the padding).

use super::common::ld_or_zero;
use super::gemm::{imm, ConvGeom};
use super::gemm_mma::MmaParams;
use crate::ptx::builder::{BinOp, Cmp, CpCache, Inst, KernelBuilder, Operand, Reg, Space, Ty};
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
    (ok, ci, tap_coords(b, r, kh, kw))
}

/// Tap index `tap` of a kh×kw-per-frame kernel as [dt, dh, dw].
fn tap_coords(b: &mut KernelBuilder, tap: Reg, kh: u32, kw: u32) -> [Reg; 3] {
    let dt = b.bin(BinOp::Div, Ty::U32, tap, imm(kh * kw));
    let r = b.bin(BinOp::Rem, Ty::U32, tap, imm(kh * kw));
    let dh = b.bin(BinOp::Div, Ty::U32, r, imm(kw));
    let dw = b.bin(BinOp::Rem, Ty::U32, r, imm(kw));
    [dt, dh, dw]
}

/// The row gathers' k decomposition: the first element of the input row under tap `gk` of
/// a group whose padded time and height origin is `origin` (`((ci·T + t)·H + h)·W`), whether
/// that row is inside (and gk < K and `nok`), and the k's width tap.
fn input_row(b: &mut KernelBuilder, gk: Reg, origin: [Reg; 2], g: &ConvGeom, nok: Reg) -> (Reg, Reg, Reg) {
    let [t, h, w] = g.input.map(|d| d as u32);
    let (mut ok, ci, [dt, dh, dw]) = taps_of(b, gk, g, nok);
    let coord = unpadded(b, (&origin[..], [dt, dh], [t, h]), g, &mut ok);
    let row = b.fma(Ty::U32, ci, imm(t), coord[0]);
    let row = b.fma(Ty::U32, row, imm(h), coord[1]);
    (ok, b.bin(BinOp::Mul, Ty::U32, row, imm(w)), dw)
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

/// One tensor-core conv kernel's register-staged im2col gather, in whichever form it takes:
/// `load` issues a slice's global loads into registers, `store` writes them to a stage after
/// the products they overlap have been issued.
pub(crate) enum StagedGather {
    Element(Gather),
    Rows(RowGather),
    Vec(VecRowGather),
}

impl StagedGather {
    pub(crate) fn load(&self, b: &mut KernelBuilder, x: Reg, k0: Reg, g: &ConvGeom) -> Vec<Reg> {
        match self {
            StagedGather::Element(e) => e.load(b, x, k0, g),
            StagedGather::Rows(r) => r.load(b, x, k0, g),
            StagedGather::Vec(v) => v.load(b, x, k0, g),
        }
    }

    pub(crate) fn store(&self, b: &mut KernelBuilder, held: &[Reg], stage: Reg) {
        match self {
            StagedGather::Element(e) => e.store(b, held, stage),
            StagedGather::Rows(r) => r.store(b, held, stage),
            StagedGather::Vec(v) => v.store(b, held, stage),
        }
    }
}

/// How `conv3d_mma` gathers a conv of `g` at `p`, as its kernel header says it.
pub(crate) fn mma_gather_text(g: &ConvGeom, p: MmaParams) -> &'static str {
    if VecRowGather::fits(g, (p.threads(), p.bn, p.bk)) {
        "by 16-byte rows of 8 output positions"
    } else if gathers_rows(g, p) {
        "by rows of 8 output positions"
    } else {
        "element by element"
    }
}

/// Whether `conv3d_mma` gathers a conv of `g` at `p` by rows of 8 output positions
/// ([`RowGather`]: the output width a multiple of 8 and the threads dividing into the
/// groups), else element by element. Not at 128×128: ptxas 13 holds that point's row gather
/// at 128 registers and spills 8 to 12 bytes, where the element gather takes 141 and does
/// not spill (the ptxas test).
pub(crate) fn gathers_rows(g: &ConvGeom, p: MmaParams) -> bool {
    RowGather::fits(g, (p.threads(), p.bn, p.bk)) && p.bm * p.bn < 128 * 128
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
        let w = g.input[2] as u32;
        let gk0 = b.bin(BinOp::Add, Ty::U32, k0, self.kk0);
        let sw = g.stride[2] as u32;
        let mut vals = Vec::with_capacity((self.per * 8) as usize);
        for i in 0..self.per {
            // This k's input row (its first element), the row's validity, and the width tap
            // less the padding (wrapping u32, as in `im2col_index`), for all 8 positions.
            let gk = b.bin(BinOp::Add, Ty::U32, gk0, imm(i * self.step));
            let (ok, base, dw) = input_row(b, gk, [self.origin[0], self.origin[1]], g, self.nok);
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

/// A gathered slice by rows of 8 output positions read as 16-byte vectors, for the convs
/// [`VecRowGather::fits`] takes: width stride 1, input and output widths multiples of 8, and
/// width taps that shift by at most one column (|dw − pad| ≤ 1: the VAE's 3×3 convs with
/// padding 1 and its one-wide time convs).
///
/// A unit is the 8 positions of one group (in one output row, from column wo0, a multiple of
/// 8) and `kpt` consecutive k's of the slice (4, 2 or 1: the most that divides the units
/// evenly among the threads); unit u is group pg = u / (BK/kpt) and k's `kpt·(u % (BK/kpt))`
/// on, and thread t takes units t, t + threads, …. Per k: one 16-byte load of input columns
/// wo0..wo0 + 8 of the k's input row (16-byte aligned: the row starts at a multiple of 8
/// elements) and, for a shifted tap, one 4-byte load of the column pair beside it (wo0 + 8,
/// or wo0 − 2); both are predicated, so a row in the padding or past K or N reads as zeros.
/// The store picks each position's values from those (a `prmt` of two `selp`-picked words
/// per 4 bytes stored, see [`VecRowGather::store`]) and stores each position's `kpt` k's
/// with one store of `2·kpt` bytes. With BK = 64 and `kpt` 4 in the
/// swizzled layout, a warp's 32 stores of one position fill two whole 128-byte rows: no bank
/// conflict. Against [`RowGather`] at 32 values per thread: 8 loads and 8 stores instead of
/// 32 and 32, and 20 registers held across the products instead of 32.
pub(crate) struct VecRowGather {
    units: Vec<VecUnit>,
    kpt: u32,
    layout: RowLayout,
}

/// One unit of a [`VecRowGather`].
struct VecUnit {
    /// Whether the group is inside N.
    nok: Reg,
    /// The group's padded input origin in time and height.
    origin: [Reg; 2],
    /// The group's first output column, which is the input column of an unshifted tap.
    wo0: Reg,
    /// The unit's first k in a slice.
    kk: Reg,
    /// Byte offset in a stage of the unit's first k in row 8·pg, before the swizzle.
    soff: Reg,
    /// Swizzled: the unit's 16-byte chunk in its 128-byte rows before the swizzle.
    chunk: Reg,
}

/// What [`VecRowGather::load`] leaves for [`VecRowGather::store`] per k: the 16-byte vector
/// (4 words), the neighbouring pair and the tap's shift plus one (0, 1 or 2).
const VEC_REGS: usize = 6;

impl VecRowGather {
    /// The k's per unit for `threads` threads over a `rows` × `bk` slice: the most of 4, 2, 1
    /// that leaves a whole number of units per thread.
    fn k_per_unit((threads, rows, bk): (u32, u32, u32)) -> Option<u32> {
        [4, 2, 1]
            .into_iter()
            .find(|&kpt| bk.is_multiple_of(kpt) && threads > 0 && (rows / 8 * (bk / kpt)).is_multiple_of(threads))
    }

    /// Whether a conv of `g` can be gathered this way with `threads` threads into a `rows` ×
    /// `bk` stage (`bk` a multiple of 8, and of 64 in the swizzled layout).
    pub(crate) fn fits(g: &ConvGeom, (threads, rows, bk): (u32, u32, u32)) -> bool {
        let (kw, pad) = (g.kernel[2], g.pad_lo[2]);
        rows.is_multiple_of(8)
            && rows > 0
            && bk.is_multiple_of(8)
            && Self::k_per_unit((threads, rows, bk)).is_some()
            && g.stride[2] == 1
            && g.input[2].is_multiple_of(8)
            && g.output[2].is_multiple_of(8)
            && g.output[2] <= g.input[2]
            && pad <= 1
            && kw <= pad + 2
    }

    /// The gather of thread `tid` for the `rows` positions from `n0` (of `nu`) with `threads`
    /// threads and `bk`-wide slices (see [`VecRowGather::fits`]), storing in `layout`.
    pub(crate) fn new(
        b: &mut KernelBuilder,
        (tid, n0): (Reg, Reg),
        g: &ConvGeom,
        nu: u32,
        (threads, rows, bk): (u32, u32, u32),
        layout: RowLayout,
    ) -> VecRowGather {
        let kpt = Self::k_per_unit((threads, rows, bk)).unwrap_or(1);
        let per_row = bk / kpt;
        let units = (0..rows / 8 * per_row / threads)
            .map(|i| {
                let u = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
                let q = b.bin(BinOp::Rem, Ty::U32, u, imm(per_row));
                let pg = b.bin(BinOp::Div, Ty::U32, u, imm(per_row));
                let gn = b.fma(Ty::U32, pg, imm(8), n0);
                let (nok, origin) = position(b, gn, g, (nu, nu - 8));
                let kk = b.bin(BinOp::Mul, Ty::U32, q, imm(kpt));
                let (soff, chunk) = match layout {
                    RowLayout::Padded { sbase, stride } => {
                        let soff = b.fma(Ty::U32, pg, imm(8 * stride), imm(sbase));
                        (b.fma(Ty::U32, kk, imm(2), soff), kk)
                    }
                    RowLayout::Swizzled { sbase, rows } => {
                        // k kk: panel kk / 64, chunk (kk / 8) % 8, element kk % 8.
                        let panel = b.bin(BinOp::Shr, Ty::U32, kk, imm(6));
                        let soff = b.fma(Ty::U32, panel, imm(rows * 128), imm(sbase));
                        let soff = b.fma(Ty::U32, pg, imm(8 * 128), soff);
                        let e = b.bin(BinOp::And, Ty::U32, kk, imm(7));
                        let chunk = b.bin(BinOp::Shr, Ty::U32, kk, imm(3));
                        (b.fma(Ty::U32, e, imm(2), soff), b.bin(BinOp::And, Ty::U32, chunk, imm(7)))
                    }
                };
                VecUnit { nok, origin: [origin[0], origin[1]], wo0: origin[2], kk, soff, chunk }
            })
            .collect();
        VecRowGather { units, kpt, layout }
    }

    /// Issues this thread's loads of the slice at `k0` of the input at `x` (not waited on
    /// here: the values are first used by [`VecRowGather::store`]).
    pub(crate) fn load(&self, b: &mut KernelBuilder, x: Reg, k0: Reg, g: &ConvGeom) -> Vec<Reg> {
        let (w, pad) = (g.input[2] as u32, g.pad_lo[2] as u32);
        let mut held = Vec::with_capacity(self.units.len() * self.kpt as usize * VEC_REGS);
        for u in &self.units {
            let gk0 = b.bin(BinOp::Add, Ty::U32, k0, u.kk);
            for i in 0..self.kpt {
                let gk = b.bin(BinOp::Add, Ty::U32, gk0, imm(i));
                let (ok, row, dw) = input_row(b, gk, u.origin, g, u.nok);
                let main = b.bin(BinOp::Add, Ty::U32, row, u.wo0);
                let main = b.selp(Ty::U32, main, imm(0), ok);
                let ad = b.addr(x, main, 2);
                let vec = ld_or_zero(b, Space::Global, Ty::U32, ad, 4, Some(ok));
                // The shift s = dw − pad, as s + 1; the pair beside the vector: columns
                // wo0 + 8, wo0 + 9 for s = 1 (inside while wo0 + 8 < W), wo0 − 2, wo0 − 1 for
                // s = −1 (inside while wo0 > 0).
                let code = b.bin(BinOp::Add, Ty::U32, dw, imm(1));
                let code = b.bin(BinOp::Sub, Ty::U32, code, imm(pad));
                let right = b.setp(Cmp::Eq, code, imm(2));
                let left = b.setp(Cmp::Eq, code, imm(0));
                let r_in = b.setp(Cmp::Lt, u.wo0, imm(w - 8));
                let r_ok = b.bin(BinOp::And, Ty::Pred, right, r_in);
                let l_in = b.setp(Cmp::Ne, u.wo0, imm(0));
                let l_ok = b.bin(BinOp::And, Ty::Pred, left, l_in);
                let side_ok = b.bin(BinOp::Or, Ty::Pred, r_ok, l_ok);
                let side_ok = b.bin(BinOp::And, Ty::Pred, side_ok, ok);
                let col = b.selp(Ty::U32, imm(8), imm(u32::MAX - 1), right);
                let side = b.bin(BinOp::Add, Ty::U32, main, col);
                let side = b.selp(Ty::U32, side, imm(0), side_ok);
                let ad = b.addr(x, side, 2);
                let pair = ld_or_zero(b, Space::Global, Ty::U32, ad, 1, Some(side_ok));
                held.extend(vec);
                held.extend(pair);
                held.push(code);
            }
        }
        held
    }

    /// Picks, packs and stores the values from [`VecRowGather::load`] into the stage at
    /// shared address `stage`.
    ///
    /// With 2 or 4 k's per unit, each 4-byte word stored (one position's values at k's
    /// k0, k1) is one `prmt` of two words picked by `selp`: position j at shift s is element
    /// j + s of the 10 columns wo0 − 2..wo0 + 8 loaded, that is word ⌊(j + s) / 2⌋ (the pair
    /// beside the vector for −1 and 4), half (j + s) % 2; the selector of each k pair is
    /// worked out once per parity of j. With one k per unit, the 16-bit value is picked by two
    /// `selp` per position.
    pub(crate) fn store(&self, b: &mut KernelBuilder, held: &[Reg], stage: Reg) {
        let per_unit = self.kpt as usize * VEC_REGS;
        for (u, held) in self.units.iter().zip(held.chunks(per_unit)) {
            let ks: Vec<&[Reg]> = held.chunks(VEC_REGS).collect();
            // Per position j: the registers stored for it.
            let src: Vec<Vec<Reg>> = if self.kpt == 1 { Self::picked_b16(b, ks[0]) } else { Self::permuted(b, &ks) };
            let dst0 = b.bin(BinOp::Add, Ty::U32, stage, u.soff);
            for (j, src) in (0..8u32).zip(src) {
                // Row 8·pg + j; swizzled, its chunk sits at chunk XOR j.
                let (dst, offset) = match self.layout {
                    RowLayout::Padded { stride, .. } => (dst0, j * stride),
                    RowLayout::Swizzled { .. } => {
                        let c = b.bin(BinOp::Xor, Ty::U32, u.chunk, imm(j));
                        (b.fma(Ty::U32, c, imm(16), dst0), j * 128)
                    }
                };
                b.push(Inst::St { space: Space::Shared, src, addr: dst, offset: offset as i32, guard: None });
            }
        }
    }

    /// One k's 8 values as 16-bit registers (`selp` on the halves of the loaded words).
    fn picked_b16(b: &mut KernelBuilder, k: &[Reg]) -> Vec<Vec<Reg>> {
        let mut c = Vec::with_capacity(10);
        for &word in &k[..5] {
            let (lo, hi) = (b.reg(Ty::B16), b.reg(Ty::B16));
            b.push(Inst::Unpack { lo, hi, src: word });
            c.extend([lo, hi]);
        }
        // c[0..8]: the vector's columns wo0..wo0 + 8; c[8], c[9]: the pair beside it.
        let right = b.setp(Cmp::Eq, k[5], imm(2));
        let left = b.setp(Cmp::Eq, k[5], imm(0));
        (0..8)
            .map(|j| {
                let next = if j < 7 { c[j + 1] } else { c[8] };
                let prev = if j > 0 { c[j - 1] } else { c[9] };
                let x = b.selp(Ty::B16, prev, c[j], left);
                vec![b.selp(Ty::B16, next, x, right)]
            })
            .collect()
    }

    /// The packed words of an even number of k's, per position: word w holds k's 2w, 2w + 1.
    fn permuted(b: &mut KernelBuilder, ks: &[&[Reg]]) -> Vec<Vec<Reg>> {
        // Per k: shifted left (s = −1), right (s = 1), at all (s ≠ 0).
        let flags: Vec<(Reg, Reg, Reg)> = ks
            .iter()
            .map(|k| {
                let left = b.setp(Cmp::Eq, k[5], imm(0));
                let right = b.setp(Cmp::Eq, k[5], imm(2));
                (left, right, b.setp(Cmp::Ne, k[5], imm(1)))
            })
            .collect();
        // Per k pair: the selectors for even and odd j. Even j takes the high half of its word
        // where shifted, odd j where not; 0x10 / 0x32 pick a's low / high half into the low
        // half of the result, 0x5400 / 0x7600 b's into the high half.
        let sels: Vec<(Reg, Reg)> = flags
            .chunks(2)
            .map(|f| {
                let lo = b.selp(Ty::U32, imm(0x32), imm(0x10), f[0].2);
                let hi = b.selp(Ty::U32, imm(0x7600), imm(0x5400), f[1].2);
                let even = b.bin(BinOp::Or, Ty::U32, lo, hi);
                (even, b.bin(BinOp::Xor, Ty::U32, even, imm(0x2222)))
            })
            .collect();
        // The word holding position j's value at k `i`.
        let word = |b: &mut KernelBuilder, i: usize, j: usize| -> Reg {
            let (k, (left, right, _)) = (ks[i], flags[i]);
            if j.is_multiple_of(2) {
                let before = if j == 0 { k[4] } else { k[j / 2 - 1] };
                b.selp(Ty::U32, before, k[j / 2], left)
            } else {
                let after = if j == 7 { k[4] } else { k[j.div_ceil(2)] };
                b.selp(Ty::U32, after, k[j / 2], right)
            }
        };
        (0..8)
            .map(|j| {
                (0..ks.len() / 2)
                    .map(|w| {
                        let (x0, x1) = (word(b, 2 * w, j), word(b, 2 * w + 1, j));
                        let (even, odd) = sels[w];
                        b.prmt(x0, x1, if j.is_multiple_of(2) { even } else { odd })
                    })
                    .collect()
            })
            .collect()
    }
}

/// The B slice of a conv whose input is channels-last, `[batch, T, H, W, Cin]`, with K
/// ordered tap-major (k = tap·Cin + ci; Cin a multiple of 8): each 8-k chunk of a position's
/// row lies in one input pixel, so the slice is copied by 16-byte `cp.async`s with `src-size`
/// 0 (zero-fill) in the padding and past K or N, like a stored matrix's (`gemm_mma`'s
/// `Loader`). Chunk c = tid + i·threads is row c / (BK/8), k block c % (BK/8); the threads
/// being a multiple of BK/8, a thread's chunks share their k block, so each slice's k is
/// decomposed into (tap, ci) once per thread and each chunk adds its position's part.
pub(crate) struct ChannelsLastGather {
    /// The thread's k offset within a slice (elements).
    kel: Reg,
    chunks: Vec<PixelChunk>,
}

/// One chunk's loop-invariant parts: its position's input coordinates at tap 0 (`o·s − pad`,
/// wrapping u32; a position past N has its time coordinate at 2³⁰, outside at every tap),
/// the element index of that (possibly outside) pixel's channel 0, and its byte offset in a
/// stage.
struct PixelChunk {
    coord: [Reg; 3],
    pixel: Reg,
    soff: Reg,
}

impl ChannelsLastGather {
    /// Whether a conv of `g` can be copied this way with `threads` threads and BK-wide slices.
    pub(crate) fn fits(g: &ConvGeom, threads: u32, bk: u32) -> bool {
        g.cin.is_multiple_of(8) && bk.is_multiple_of(8) && threads.is_multiple_of(bk / 8)
    }

    /// The chunks of thread `tid` for the `rows` positions from `n0` (of `nu`), stored at
    /// `offset(row, k block)` within a stage.
    pub(crate) fn new(
        b: &mut KernelBuilder,
        (tid, n0): (Reg, Reg),
        g: &ConvGeom,
        (rows, nu): (u32, u32),
        (threads, bk): (u32, u32),
        offset: impl Fn(&mut KernelBuilder, Reg, Reg) -> Reg,
    ) -> Result<ChannelsLastGather, KernelError> {
        if !ChannelsLastGather::fits(g, threads, bk) || !(rows * bk / 8).is_multiple_of(threads) {
            return Err(KernelError::Invalid(format!(
                "channels-last im2col: Cin {} must be a multiple of 8 and the {threads} threads must divide \
                 the {rows}x{bk} slice's 16-byte chunks by k block",
                g.cin
            )));
        }
        let per_row = bk / 8;
        let [_, h, w] = g.input.map(|d| d as u32);
        let cin = g.cin as u32;
        let kc = b.bin(BinOp::Rem, Ty::U32, tid, imm(per_row));
        let kel = b.bin(BinOp::Mul, Ty::U32, kc, imm(8));
        let chunks = (0..rows * per_row / threads)
            .map(|i| {
                let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
                let r = b.bin(BinOp::Div, Ty::U32, c, imm(per_row));
                let gn = b.bin(BinOp::Add, Ty::U32, n0, r);
                let (nok, origin) = position(b, gn, g, (nu, nu - 1));
                let mut coord: [Reg; 3] =
                    std::array::from_fn(|ax| b.bin(BinOp::Sub, Ty::U32, origin[ax], imm(g.pad_lo[ax] as u32)));
                let pixel = b.fma(Ty::U32, coord[0], imm(h), coord[1]);
                let pixel = b.fma(Ty::U32, pixel, imm(w), coord[2]);
                let pixel = b.bin(BinOp::Mul, Ty::U32, pixel, imm(cin));
                // Folding the position's validity into its time coordinate saves a register
                // per chunk through the loop.
                coord[0] = b.selp(Ty::U32, coord[0], imm(1 << 30), nok);
                let soff = offset(b, r, kc);
                PixelChunk { coord, pixel, soff }
            })
            .collect();
        Ok(ChannelsLastGather { kel, chunks })
    }

    /// Issues the copies of the slice at k offset `k0` of the batch item at `x` into the
    /// stage at shared address `stage`.
    pub(crate) fn issue(&self, b: &mut KernelBuilder, x: Reg, k0: Reg, stage: Reg, g: &ConvGeom) {
        let [t, h, w] = g.input.map(|d| d as u32);
        let [_, kh, kw] = g.kernel.map(|d| d as u32);
        let cin = g.cin as u32;
        let k = cin * g.taps() as u32;
        // This thread's k: its tap (dt, dh, dw) and channel, and the tap's element offset
        // `((dt·H + dh)·W + dw)·Cin + ci` from a pixel's channel 0.
        let gk = b.bin(BinOp::Add, Ty::U32, k0, self.kel);
        let kok = b.setp(Cmp::Lt, gk, imm(k));
        let gkc = b.bin(BinOp::Min, Ty::U32, gk, imm(k - 1));
        let tap = b.bin(BinOp::Div, Ty::U32, gkc, imm(cin));
        let ci = b.bin(BinOp::Rem, Ty::U32, gkc, imm(cin));
        let [dt, dh, dw] = tap_coords(b, tap, kh, kw);
        let off = b.fma(Ty::U32, dt, imm(h), dh);
        let off = b.fma(Ty::U32, off, imm(w), dw);
        let off = b.fma(Ty::U32, off, imm(cin), ci);
        for c in &self.chunks {
            let mut ok = kok;
            for (ax, (tap, extent)) in [dt, dh, dw].into_iter().zip([t, h, w]).enumerate() {
                let at = b.bin(BinOp::Add, Ty::U32, c.coord[ax], tap);
                let inside = b.setp(Cmp::Lt, at, imm(extent));
                ok = b.bin(BinOp::And, Ty::Pred, ok, inside);
            }
            // Outside (padding, past K or N) nothing is read (src-size 0) from the item's base.
            let idx = b.bin(BinOp::Add, Ty::U32, c.pixel, off);
            let idx = b.selp(Ty::U32, idx, imm(0), ok);
            let src = b.addr(x, idx, 2);
            let n = b.selp(Ty::U32, imm(16), imm(0), ok);
            let dst = b.bin(BinOp::Add, Ty::U32, stage, c.soff);
            b.cp_async(CpCache::Cg, dst, src, 16, Some(Operand::Reg(n)));
        }
    }
}
