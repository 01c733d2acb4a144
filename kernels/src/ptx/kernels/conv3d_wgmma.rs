//! Hopper (sm_90a) implicit-GEMM conv3d on `wgmma.mma_async` (`conv3d_wgmma`): the op,
//! layouts and GEMM view of `super::conv3d` (Cout, the output positions To·Ho·Wo and K =
//! Cin·kt·kh·kw; the weight `[Cout, K]` and the implicit im2col of x), with the products on
//! the warpgroup tensor cores instead of `mma.sync`. Two orientations:
//!
//! - weights as A (M = Cout, N = positions), as `conv3d_mma`: a tile's rows are 64 output
//!   channels per warpgroup, so Cout = 96 (the decoder's full-resolution stage) fills 3/4 of
//!   its tiles;
//! - positions as A ([`ConvWgmmaParams::positions_m`]: M = positions, N = Cout): BN tiles
//!   Cout by any multiple of 8 (96, 192), which tiles the VAE's 96, 192 and 384 channels
//!   exactly, and a wider BN gathers fewer im2col elements per product (BM·BK gathered per
//!   BM·BN·BK multiply-adds). The accumulators are stored transposed (row = position).
//!
//! **Not run on a GPU yet**: checked only in vidrt's PTX simulator and by ptxas, and opt-in
//! on real CUDA with the other wgmma kernels (`VIDRT_CUDA_WGMMA=1`).
//!
//! - Stages: A `[BM][BK]` and B `[BN][BK]` in `matmul_wgmma`'s 128-byte-swizzled 64-k panels
//!   (1024-byte aligned), two of them (the gather form). The weight slice is copied by
//!   `cp.async` as `matmul_wgmma`'s operands (`super::gemm_wgmma::swizzled_loader`; K a
//!   multiple of 8, zero past K). The im2col slice is gathered by rows of 8 output positions
//!   into registers and stored into its swizzled operand: as 16-byte vectors per k
//!   (`super::im2col::VecRowGather`) for stride-1 convs whose width taps shift by at most one
//!   column (the VAE's), else element by element (`super::im2col::RowGather`); the output
//!   width is a multiple of 8 either way.
//! - Step k: `cp.async.wait_group 0`, `fence.proxy.async` (the landed copies and the
//!   gathered stores are generic-proxy writes the wgmma reads), `bar.sync`; the weight copy
//!   of slice k + 1 into the other stage and the gather's global loads of slice k + 1 are
//!   issued; the BK/16 wgmma of slice k are issued and committed; the gathered values are
//!   stored into the other stage while they run; `wgmma.wait_group 0`. So the tensor cores
//!   work while the next slice is fetched, and the other stage is only written after the
//!   barrier that follows the last wgmma reading it.
//! - Channels-last form ([`ConvWgmmaParams::channels_last`], kernels named `…_cl`): x `[B,
//!   T, H, W, Cin]` and w `[Cout, kt, kh, kw, Cin]` (Cin a multiple of 8; any output width),
//!   K tap-major, so each 8-k chunk of a position is one 16-byte run of its input pixel: the
//!   im2col slice is copied by `cp.async` into the same swizzled operand
//!   (`super::im2col::ChannelsLastGather` at `super::gemm_wgmma::swizzled_offset`, zero-fill
//!   in the padding) in the weight slice's commit group, and nothing is gathered through
//!   registers, so it runs `matmul_wgmma`'s `cp.async` ring of 2 to 4 stages
//!   (`super::gemm_wgmma::cp_async_mainloop`). The lowering makes the layout with two
//!   `super::copy::transpose` launches into node scratch, as for `conv3d_mma_cl`; the tuner
//!   times the gather against the transposes plus this form ([`conv_wgmma_space`]); without
//!   tuning, this form where the conv allows ([`conv_wgmma_heuristic`]). ptxas 13 for sm_90a, the VAE's causal 3×3×3 at 128×192: 172
//!   registers and a main loop of 187 SASS instructions (188 at 3 stages), against the vector
//!   gather's 187 and 421 (`scripts/sass-loop.sh`); static counts, not a time.
//! - Epilogue: `super::gemm_wgmma`'s accumulator store with the conv's bias and epilogue.
//! - Launch: `wgmma_launch_dims` (a block per BM × BN tile of every batch item), 128·BM/64
//!   threads. Tunables: [`ConvWgmmaParams`] of [`conv_wgmma_space`] (swizzled; the gather at
//!   two stages, [`wgmma_param_space`]; channels-last at 2 to 4).

use vidrt_ir::DType;

use super::common::u32_of;
use super::conv3d::ConvSpec;
use super::gemm::{block_coords, imm, OutPtrs};
use super::gemm_wgmma::{
    cp_async_mainloop, launch_dims, slice_wgmma, store_accumulators, swizzled_descriptor, swizzled_loader,
    swizzled_offset, zero_accumulators, WgmmaParams,
};
use super::im2col::{ChannelsLastGather, RowGather, RowLayout, StagedGather, VecRowGather};
use crate::ptx::builder::{BinOp, Inst, Kernel, KernelBuilder, Operand, ParamTy, Reg, Special, Ty};
use crate::ptx::builder::{MAX_SHARED, STATIC_SHARED_MAX};
use crate::ptx::KernelError;

/// A point of `conv3d_wgmma`: the tile (BK 64, swizzled stages, two for the gather and 2 to
/// 4 channels-last, no producer, one tile per block), which GEMM side the output positions
/// take, and the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWgmmaParams {
    /// BM × BN: BM 64 per warpgroup, BN the wgmma N.
    pub tile: WgmmaParams,
    /// The positions as M (A the gathered im2col, B the weights, BN tiling Cout), else as N.
    pub positions_m: bool,
    /// The channels-last form: x `[B, T, H, W, Cin]` and w `[Cout, kt, kh, kw, Cin]`, K
    /// tap-major, the im2col copied by 16-byte `cp.async` (`super::im2col::ChannelsLastGather`)
    /// instead of gathered through registers. Its kernel is named `…_cl`
    /// ([`super::conv3d::CHANNELS_LAST_SUFFIX`], [`conv_wgmma_at`]); the lowering transposes
    /// x and w into scratch first.
    pub channels_last: bool,
}

impl crate::ptx::tune::Point for ConvWgmmaParams {
    const NAMES: &'static [&'static str] =
        &["bm", "bn", "bk", "stages", "swizzle", "producer", "tiles", "positions_m", "cl"];
    /// `positions_m` and `cl` came later: a text without them is the weights-as-A gather
    /// point it always was.
    const DEFAULTS: &'static [(&'static str, u32)] =
        &[("swizzle", 0), ("producer", 0), ("tiles", 1), ("positions_m", 0), ("cl", 0)];

    fn values(self) -> Vec<u32> {
        let mut v = self.tile.values();
        v.push(u32::from(self.positions_m));
        v.push(u32::from(self.channels_last));
        v
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        let flag = |x: u32| match x {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        let (&cl, rest) = v.split_last()?;
        let (&pm, tile) = rest.split_last()?;
        Some(ConvWgmmaParams {
            tile: WgmmaParams::from_values(tile)?,
            positions_m: flag(pm)?,
            channels_last: flag(cl)?,
        })
    }
}

/// The points of `conv3d_wgmma`'s gather form, BK 64, two stages, swizzled. Weights as A:
/// BM × BN of 64×64, 128×128 and 128×64 (the first two are the heuristic's fallback, small and large;
/// 64×128 would hold 64 gathered values and 64 accumulators per thread: ptxas needs all 255
/// registers). Positions as A: 128×96, 64×96, 128×128 and 128×192 (BN/2 accumulators per
/// thread; 64×192 took all 255 registers with the element gather and is left out). ptxas 13
/// for sm_90a, the VAE's causal 3×3×3 (gathered by 16-byte vectors): 126, 128, 147 and 189
/// registers, so two, four, one and one blocks per SM by registers; the weights-as-A points
/// 115, 152 and 128.
pub fn wgmma_param_space() -> Vec<ConvWgmmaParams> {
    let p = |bm, bn, positions_m| ConvWgmmaParams {
        tile: WgmmaParams { bm, bn, bk: 64, stages: 2, swizzle: true, producer: false, tiles: 1 },
        positions_m,
        channels_last: false,
    };
    vec![
        p(64, 64, false),
        p(128, 128, false),
        p(128, 64, false),
        p(128, 96, true),
        p(64, 96, true),
        p(128, 128, true),
        p(128, 192, true),
    ]
}

/// The lowering's point for `spec` without tuning. Where a positions-as-A tile of 192, 128
/// or 96 channels divides Cout (the widest that does) and there are at least 128 positions
/// per item, that point: no channel of its tiles is wasted, and a wider BN gathers less per
/// product; BM 128, except 64 at BN 96 (four blocks per SM by registers with the vector
/// gather, so one block's barrier waits overlap another's products). Else weights as A,
/// 128×128 where Cout and the positions reach 128, 64×64 below. Arithmetic and ptxas's register counts, not a
/// measurement: no GPU has timed either orientation yet.
pub fn wgmma_heuristic(spec: &ConvSpec) -> ConvWgmmaParams {
    let space = wgmma_param_space();
    let (m, n, _) = spec.mnk();
    let exact = [192, 128, 96].into_iter().find(|bn| m.is_multiple_of(*bn as usize));
    let pick = |bm, bn, pm| space.iter().copied().find(|c| (c.tile.bm, c.tile.bn, c.positions_m) == (bm, bn, pm));
    let chosen = match exact {
        Some(96) if n >= 128 => pick(64, 96, true),
        Some(bn) if n >= 128 => pick(128, bn, true),
        _ if m >= 128 && n >= 128 => pick(128, 128, false),
        _ => None,
    };
    chosen.unwrap_or(space[0])
}

/// The points of the whole family: [`wgmma_param_space`]'s gather points, then the same
/// tiles in the channels-last form (every thread count divides the 16-byte chunks of a
/// 64-wide slice of 64, 96, 128 or 192 positions by k block), then deeper channels-last
/// rings (no gather runs ahead through registers there, so the stages only cost shared
/// memory): 3 stages at 128×128 (both orientations), 128×96 and 128×192, 4 at 128×96 and
/// 64×96 (positions as A).
pub fn conv_wgmma_space() -> Vec<ConvWgmmaParams> {
    let gather = wgmma_param_space();
    let cl = |p: ConvWgmmaParams| ConvWgmmaParams { channels_last: true, ..p };
    let deeper = [
        (128, 128, false, 3),
        (128, 96, true, 3),
        (128, 128, true, 3),
        (128, 192, true, 3),
        (128, 96, true, 4),
        (64, 96, true, 4),
    ];
    let deeper: Vec<ConvWgmmaParams> = deeper
        .into_iter()
        .filter_map(|(bm, bn, pm, stages)| {
            let p = gather.iter().find(|c| (c.tile.bm, c.tile.bn, c.positions_m) == (bm, bn, pm))?;
            Some(cl(ConvWgmmaParams { tile: WgmmaParams { stages, ..p.tile }, ..*p }))
        })
        .collect();
    let two: Vec<ConvWgmmaParams> = gather.iter().copied().map(cl).collect();
    gather.into_iter().chain(two).chain(deeper).collect()
}

/// The family's point for `spec` without tuning: [`wgmma_heuristic`]'s tile, channels-last
/// where [`wgmma_cl_unsupported`] allows (no gather through registers, as on sm_80's
/// `conv3d_mma_cl`) and then at 3 stages for BM 128 (one or two blocks per SM by registers:
/// a second slice in flight hides more of the load latency, CUTLASS's sm_80 conv depth),
/// else gathered. Arithmetic, not timed on a GPU.
pub fn conv_wgmma_heuristic(spec: &ConvSpec) -> ConvWgmmaParams {
    let tile = wgmma_heuristic(spec);
    if wgmma_cl_unsupported(spec).is_some() {
        return tile;
    }
    let stages = if tile.tile.bm == 128 { 3 } else { 2 };
    let point = ConvWgmmaParams { channels_last: true, tile: WgmmaParams { stages, ..tile.tile }, ..tile };
    debug_assert!(conv_wgmma_space().contains(&point), "{point:?}");
    point
}

/// Why `spec` cannot run on the channels-last form, or `None` when it can.
pub fn wgmma_cl_unsupported(spec: &ConvSpec) -> Option<String> {
    if !matches!(spec.in_dtype, DType::BF16 | DType::F16) {
        return Some(format!("conv3d_wgmma takes bf16 or f16 inputs, not {}", spec.in_dtype));
    }
    (!spec.geom.cin.is_multiple_of(8))
        .then(|| format!("conv3d_wgmma_cl needs Cin a multiple of 8 (16-byte pixel chunks), got {}", spec.geom.cin))
}

/// Why `spec` can run on neither form of the family, or `None` when one of them takes it.
pub fn conv_wgmma_unsupported(spec: &ConvSpec) -> Option<String> {
    let cl = wgmma_cl_unsupported(spec)?;
    let gather = wgmma_unsupported(spec)?;
    Some(if cl == gather { gather } else { format!("{gather}; {cl}") })
}

/// The family's kernel at `cp`: the channels-last form named `{name}_cl`, or the gather.
pub fn conv_wgmma_at(name: &str, spec: &ConvSpec, cp: ConvWgmmaParams) -> Result<Kernel, KernelError> {
    if cp.channels_last {
        conv3d_wgmma(&format!("{name}{}", super::conv3d::CHANNELS_LAST_SUFFIX), spec, cp)
    } else {
        conv3d_wgmma(name, spec, cp)
    }
}

/// Why `spec` cannot run on `conv3d_wgmma`'s gather form, or `None` when it can.
pub fn wgmma_unsupported(spec: &ConvSpec) -> Option<String> {
    if !matches!(spec.in_dtype, DType::BF16 | DType::F16) {
        return Some(format!("conv3d_wgmma takes bf16 or f16 inputs, not {}", spec.in_dtype));
    }
    let (_, _, k) = spec.mnk();
    if !k.is_multiple_of(8) {
        return Some(format!("conv3d_wgmma needs Cin·kt·kh·kw a multiple of 8, got {k}"));
    }
    let wo = spec.geom.output[2];
    (!wo.is_multiple_of(8)).then(|| format!("conv3d_wgmma gathers rows of 8 output positions: width {wo}"))
}

/// (grid, block) of `conv3d_wgmma` for `spec` at `p`.
pub fn wgmma_launch_dims(spec: &ConvSpec, cp: ConvWgmmaParams) -> Result<(u32, u32), KernelError> {
    let (m, n) = gemm_dims(spec, cp);
    let (tiles, block) = launch_dims(m, n, cp.tile);
    let grid = (tiles as usize).saturating_mul(spec.batch);
    Ok((u32_of(grid, "conv3d blocks")?, block))
}

/// The GEMM's (M, N) in `cp`'s orientation: (Cout, positions), or (positions, Cout) with
/// the positions as A.
fn gemm_dims(spec: &ConvSpec, cp: ConvWgmmaParams) -> (usize, usize) {
    let (m, n, _) = spec.mnk();
    if cp.positions_m {
        (n, m)
    } else {
        (m, n)
    }
}

/// The wgmma implicit-GEMM conv3d for `spec` at `cp`. Parameters: x, w, \[bias\], [epilogue
/// inputs…], out; in the channels-last form ([`ConvWgmmaParams::channels_last`]) x is
/// `[B, T, H, W, Cin]` and w `[Cout, kt, kh, kw, Cin]`.
pub fn conv3d_wgmma(name: &str, spec: &ConvSpec, cp: ConvWgmmaParams) -> Result<Kernel, KernelError> {
    let p = cp.tile;
    spec.check()?;
    let cl = cp.channels_last;
    if let Some(why) = if cl { wgmma_cl_unsupported(spec) } else { wgmma_unsupported(spec) } {
        return Err(KernelError::Unsupported(why));
    }
    p.check()?;
    let g = &spec.geom;
    let threads = p.threads();
    // The gather runs one slice ahead through registers (two stages); the copies of the
    // channels-last form run the `cp.async` ring of `matmul_wgmma` (2 to 4 stages).
    let stages_ok = if cl { (2..=4).contains(&p.stages) } else { p.stages == 2 };
    if !p.swizzle || p.producer || p.tiles != 1 || !stages_ok {
        return Err(KernelError::Invalid(format!(
            "conv3d_wgmma parameters {p:?}: swizzled stages (two for the gather, two to four channels-last), no \
             producer warpgroup, one tile per block"
        )));
    }
    // The gathered operand's rows: the positions of a tile.
    let (pos_rows, side) = if cp.positions_m { (p.bm, "BM") } else { (p.bn, "BN") };
    if !cl && !RowGather::fits(g, (threads, pos_rows, p.bk)) {
        return Err(KernelError::Invalid(format!(
            "conv3d_wgmma parameters {p:?}: the {threads} threads must split into {side}/8 position groups and BK"
        )));
    }
    let total = p.shared_bytes();
    if total > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "{name}: parameters {p:?} need {total} bytes of shared memory; no target allows more than {MAX_SHARED} per block"
        )));
    }
    let st = spec.store();
    let ab = if spec.in_dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    let (m, n, k) = spec.mnk();
    let (mu, nu, ku) = (u32_of(m, "Cout")?, u32_of(n, "output positions")?, u32_of(k, "K")?);
    let (grid, _) = wgmma_launch_dims(spec, cp)?;
    let (gm, gn) = gemm_dims(spec, cp);
    let (gmu, gnu) = (u32_of(gm, "GEMM rows")?, u32_of(gn, "GEMM columns")?);
    let vec = !cl && VecRowGather::fits(g, (threads, pos_rows, p.bk));
    let rows = if vec { "16-byte rows" } else { "rows" };
    let im2col = if cl {
        "the im2col's 16-byte pixel chunks by cp.async (zero-fill in the padding)".to_string()
    } else {
        format!("the im2col gathered through registers by {rows} of 8 output positions")
    };
    let layout = if cl {
        "channels-last input [B, T, H, W, Cin], weight [Cout, kt, kh, kw, Cin], k = tap*Cin + ci; "
    } else {
        ""
    };
    let orientation = if cp.positions_m {
        format!(
            "{layout}implicit GEMM M={gm} (positions) N={gn} (Cout) K={k}: A {im2col}, B the weights by cp.async, \
             into 128-byte-swizzled stages; accumulators stored transposed"
        )
    } else {
        format!("{layout}implicit GEMM M={m} N={n} K={k}: weights by cp.async, {im2col}, into 128-byte-swizzled stages")
    };
    let header = format!(
        "conv3d_wgmma {name}: {}\n{orientation}; wgmma.mma_async m64n{bn}k16 f32 \
         accumulation, {stages} stages; minimum sm_90a; NOT YET RUN ON A GPU (checked in vidrt's simulator and by ptxas)\n\
         1-D grid of B*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {threads} threads, {total} bytes of {} shared memory; \
         params BM={} BN={bn} BK={} stages={stages} swizzle=128B",
        spec.describe(),
        if total > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.bm,
        p.bk,
        bn = p.bn,
        stages = p.stages,
    );
    let tiles_n = gnu.div_ceil(p.bn);
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (px, pw) = (b.param(ParamTy::Ptr), b.param(ParamTy::Ptr));
    let ptrs = OutPtrs::declare(&mut b, &st);

    let a_bytes = p.bm * p.bk * 2;
    let stage_bytes = p.stage_bytes();
    let smem = b.shared_aligned(total, 1024);

    let tid = b.special(Special::TidX);
    let (bi, tm, tn) = block_coords(&mut b, gmu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    // This batch item's input; the weights are shared.
    let x_off = b.bin(BinOp::Mul, Ty::U32, bi, imm(u32_of(g.input_elems(), "conv input")?));
    let px = b.addr(px, x_off, 2);
    // The weights' and the gathered positions' first rows and where in a stage they go.
    let ((w0, w_rows, w_at), (pos0, pos_at)) =
        if cp.positions_m { ((n0, p.bn, a_bytes), (m0, 0)) } else { ((m0, p.bm, 0), (n0, a_bytes)) };
    let la = swizzled_loader(&mut b, pw, tid, w0, (w_rows, mu, ku), p.bk, w_at, threads);
    let layout = RowLayout::Swizzled { sbase: pos_at, rows: pos_rows };
    let dims = (threads, pos_rows, p.bk);
    let positions = if cl {
        let offset = |b: &mut KernelBuilder, r: Reg, kc: Reg| swizzled_offset(b, r, kc, pos_rows, pos_at);
        Positions::Copied(ChannelsLastGather::new(&mut b, (tid, pos0), g, (pos_rows, nu), (threads, p.bk), offset)?)
    } else if vec {
        Positions::Gathered(StagedGather::Vec(VecRowGather::new(&mut b, (tid, pos0), g, nu, dims, layout)))
    } else {
        Positions::Gathered(StagedGather::Rows(RowGather::new(&mut b, (tid, pos0), g, nu, dims, layout)))
    };

    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let wg = b.bin(BinOp::Shr, Ty::U32, tid, imm(7));
    let a_wg = b.bin(BinOp::Mul, Ty::U32, wg, imm(64 * 128));
    let a_wg = b.bin(BinOp::Add, Ty::U32, base, a_wg);
    let b_at = b.bin(BinOp::Add, Ty::U32, base, imm(a_bytes));
    let acc = zero_accumulators(&mut b, p);

    match positions {
        Positions::Copied(copy) => {
            let issue = |b: &mut KernelBuilder, k: Reg, at: Reg| {
                la.issue(b, pw, k, at, ku);
                copy.issue(b, px, k, at, g);
            };
            let descriptors =
                |b: &mut KernelBuilder, a: Reg, bo: Reg| (swizzled_descriptor(b, a), swizzled_descriptor(b, bo));
            cp_async_mainloop(&mut b, (ab, p), &acc, (base, a_wg, b_at), ku, &issue, &descriptors);
        }
        Positions::Gathered(gather) => {
            // Prologue: slice 0 into stage 0.
            let k0 = b.imm_u32(0);
            la.issue(&mut b, pw, k0, base, ku);
            b.cp_async_commit();
            let first = gather.load(&mut b, px, k0, g);
            gather.store(&mut b, &first, base);
            // The byte offset (from `base`) of the stage computed on; the other one is written.
            let stage = b.imm_u32(0);

            let top = b.label();
            b.place(top);
            b.no_unroll();
            b.cp_async_wait(0);
            b.fence_proxy_async();
            b.bar_sync();
            let kn = b.bin(BinOp::Add, Ty::U32, k0, imm(p.bk));
            let other = b.bin(BinOp::Sub, Ty::U32, imm(stage_bytes), stage);
            let write = b.bin(BinOp::Add, Ty::U32, base, other);
            la.issue(&mut b, pw, kn, write, ku);
            b.cp_async_commit();
            let next = gather.load(&mut b, px, kn, g);
            let a_addr = b.bin(BinOp::Add, Ty::U32, a_wg, stage);
            let b_addr = b.bin(BinOp::Add, Ty::U32, b_at, stage);
            let da = swizzled_descriptor(&mut b, a_addr);
            let db = swizzled_descriptor(&mut b, b_addr);
            slice_wgmma(&mut b, (ab, p), &acc, (da, db));
            // The gathered slice k + 1 goes into the other stage while the tensor cores read this one.
            gather.store(&mut b, &next, write);
            b.wgmma_wait(0);
            b.push(Inst::Mov { dst: stage, src: Operand::Reg(other) });
            b.push(Inst::Mov { dst: k0, src: Operand::Reg(kn) });
            let more = b.setp(crate::ptx::builder::Cmp::Lt, k0, imm(ku));
            b.bra_if(top, more, false);
            // The zero-fill slice past K still lands in shared memory; nothing reads it.
            b.cp_async_wait_all();
        }
    }

    store_accumulators(&mut b, (&st, &ptrs), &acc.regs, (tid, wg), (bi, m0, n0), (mu, nu), cp.positions_m)?;
    Ok(b.finish())
}

/// How the positions' im2col slice reaches its stage.
enum Positions {
    /// Gathered through registers, stored after the slice's wgmma are issued.
    Gathered(StagedGather),
    /// Channels-last: copied by `cp.async` with the weight slice.
    Copied(ChannelsLastGather),
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAUSAL: [[usize; 2]; 3] = [[2, 0], [1, 1], [1, 1]];

    /// A bf16 stride-1 conv with bias.
    fn bf16(x: &[usize], w: &[usize], pad: [[usize; 2]; 3]) -> Result<ConvSpec, KernelError> {
        ConvSpec::new(x, w, [1; 3], pad, (DType::BF16, DType::BF16), true, None)
    }

    /// The heuristic's point at the VAE's channel counts: the widest exact positions-as-A
    /// tile, the weights as A where none divides Cout or there are few positions.
    #[test]
    fn the_heuristic_tiles_cout_exactly_where_it_can() -> Result<(), KernelError> {
        let at = |cout: usize, h: usize| -> Result<(u32, u32, bool), KernelError> {
            let spec = bf16(&[1, 16, 3, h, 16], &[cout, 16, 3, 3, 3], CAUSAL)?;
            let c = wgmma_heuristic(&spec);
            assert!(wgmma_param_space().contains(&c));
            conv3d_wgmma("h", &spec, c)?;
            Ok((c.tile.bm, c.tile.bn, c.positions_m))
        };
        assert_eq!(at(384, 8)?, (128, 192, true));
        assert_eq!(at(192, 8)?, (128, 192, true));
        assert_eq!(at(256, 8)?, (128, 128, true));
        assert_eq!(at(96, 8)?, (64, 96, true));
        // 3·2·16 = 96 positions: too few for a 128-position tile.
        assert_eq!(at(96, 2)?, (64, 64, false));
        assert_eq!(at(136, 8)?, (128, 128, false));
        assert_eq!(at(24, 8)?, (64, 64, false));
        Ok(())
    }

    /// The family's heuristic: channels-last where Cin allows, at 3 stages for BM 128 and 2
    /// for BM 64, always a point of the family's space that generates; the gather elsewhere.
    #[test]
    fn the_family_heuristic_takes_the_channels_last_form_where_it_can() -> Result<(), KernelError> {
        let at = |cin: usize, cout: usize, h: usize| -> Result<ConvWgmmaParams, KernelError> {
            let spec = bf16(&[1, cin, 3, h, 16], &[cout, cin, 3, 3, 3], CAUSAL)?;
            let c = conv_wgmma_heuristic(&spec);
            assert!(conv_wgmma_space().contains(&c), "{c:?}");
            conv_wgmma_at("h", &spec, c)?;
            Ok(c)
        };
        let shape = |c: ConvWgmmaParams| (c.tile.bm, c.tile.bn, c.positions_m, c.channels_last, c.tile.stages);
        assert_eq!(shape(at(16, 384, 8)?), (128, 192, true, true, 3));
        assert_eq!(shape(at(16, 96, 8)?), (64, 96, true, true, 2));
        assert_eq!(shape(at(16, 136, 8)?), (128, 128, false, true, 3));
        assert_eq!(shape(at(16, 24, 8)?), (64, 64, false, true, 2));
        // Cin 4 and K = 108: neither form.
        let odd = bf16(&[1, 4, 3, 8, 16], &[96, 4, 3, 3, 3], CAUSAL)?;
        assert!(conv_wgmma_unsupported(&odd).is_some());
        // Cin 12 by 2×3×3: K = 216 is a multiple of 8, Cin is not: the gather form only.
        let gather = bf16(&[1, 12, 3, 8, 16], &[96, 12, 2, 3, 3], [[1, 0], [1, 1], [1, 1]])?;
        let c = conv_wgmma_heuristic(&gather);
        assert!(!c.channels_last && c.tile.stages == 2, "{c:?}");
        conv_wgmma_at("g", &gather, c)?;
        Ok(())
    }
}
