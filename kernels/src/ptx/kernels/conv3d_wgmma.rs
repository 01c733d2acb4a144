//! Hopper (sm_90a) implicit-GEMM conv3d on `wgmma.mma_async` (`conv3d_wgmma`): the op,
//! layouts and GEMM view of `super::conv3d` (M = Cout, N = To·Ho·Wo, K = Cin·kt·kh·kw; A
//! the weight `[Cout, K]`, B the implicit im2col of x), with the products on the warpgroup
//! tensor cores instead of `mma.sync`.
//!
//! **Not run on a GPU yet**: checked only in vidrt's PTX simulator and by ptxas, and opt-in
//! on real CUDA with the other wgmma kernels (`VIDRT_CUDA_WGMMA=1`).
//!
//! - Stages: A `[BM][BK]` and B `[BN][BK]` in `matmul_wgmma`'s 128-byte-swizzled 64-k panels
//!   (1024-byte aligned), two of them. The weight slice is copied by `cp.async` as
//!   `matmul_wgmma`'s A (`super::gemm_wgmma::swizzled_loader`; K a multiple of 8, zero past
//!   K). The im2col slice is gathered by rows of 8 output positions
//!   (`super::im2col::RowGather`, so the output width is a multiple of 8) into
//!   registers and stored into the swizzled B stage.
//! - Step k: `cp.async.wait_group 0`, `fence.proxy.async` (the landed copies and the
//!   gathered stores are generic-proxy writes the wgmma reads), `bar.sync`; the weight copy
//!   of slice k + 1 into the other stage and the gather's global loads of slice k + 1 are
//!   issued; the BK/16 wgmma of slice k are issued and committed; the gathered values are
//!   stored into the other stage while they run; `wgmma.wait_group 0`. So the tensor cores
//!   work while the next slice is fetched, and the other stage is only written after the
//!   barrier that follows the last wgmma reading it.
//! - Epilogue: `super::gemm_wgmma`'s accumulator store with the conv's bias and epilogue.
//! - Launch: `wgmma_launch_dims` (a block per BM × BN tile of every batch item), 128·BM/64
//!   threads. Tunables: `WgmmaParams` of `wgmma_param_space` (swizzled, two stages).

use vidrt_ir::DType;

use super::common::u32_of;
use super::conv3d::ConvSpec;
use super::gemm::{block_coords, imm, OutPtrs};
use super::gemm_wgmma::{
    launch_dims, slice_wgmma, store_accumulators, swizzled_descriptor, swizzled_loader, zero_accumulators, WgmmaParams,
};
use super::im2col::{RowGather, RowLayout};
use crate::ptx::builder::{BinOp, Inst, Kernel, KernelBuilder, Operand, ParamTy, Special, Ty};
use crate::ptx::builder::{MAX_SHARED, STATIC_SHARED_MAX};
use crate::ptx::KernelError;

/// The points of `conv3d_wgmma` (the first two are the lowering's heuristic picks, small and
/// large): BM × BN of 64×64, 128×128 and 128×64, BK 64, two stages, swizzled. (64×128 would
/// hold 64 gathered values and 64 accumulators per thread: ptxas needs all 255 registers.)
pub fn wgmma_param_space() -> Vec<WgmmaParams> {
    let p = |bm, bn| WgmmaParams { bm, bn, bk: 64, stages: 2, swizzle: true, producer: false, tiles: 1 };
    vec![p(64, 64), p(128, 128), p(128, 64)]
}

/// Why `spec` cannot run on `conv3d_wgmma`, or `None` when it can.
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
pub fn wgmma_launch_dims(spec: &ConvSpec, p: WgmmaParams) -> Result<(u32, u32), KernelError> {
    let (m, n, _) = spec.mnk();
    let (tiles, block) = launch_dims(m, n, p);
    let grid = (tiles as usize).saturating_mul(spec.batch);
    Ok((u32_of(grid, "conv3d blocks")?, block))
}

/// The wgmma implicit-GEMM conv3d for `spec` at `p`. Parameters: x, w, \[bias\], [epilogue
/// inputs…], out.
pub fn conv3d_wgmma(name: &str, spec: &ConvSpec, p: WgmmaParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = wgmma_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    p.check()?;
    let g = &spec.geom;
    let threads = p.threads();
    if !p.swizzle || p.producer || p.tiles != 1 || p.stages != 2 {
        return Err(KernelError::Invalid(format!(
            "conv3d_wgmma parameters {p:?}: two swizzled stages, no producer warpgroup, one tile per block"
        )));
    }
    if !RowGather::fits(g, (threads, p.bn, p.bk)) {
        return Err(KernelError::Invalid(format!(
            "conv3d_wgmma parameters {p:?}: the {threads} threads must split into BN/8 position groups and BK"
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
    let (grid, _) = wgmma_launch_dims(spec, p)?;
    let header = format!(
        "conv3d_wgmma {name}: {}\nimplicit GEMM M={m} N={n} K={k}: weights by cp.async, im2col gathered through \
         registers by rows of 8 output positions, into 128-byte-swizzled stages; wgmma.mma_async m64n{bn}k16 f32 \
         accumulation, 2 stages; minimum sm_90a; NOT YET RUN ON A GPU (checked in vidrt's simulator and by ptxas)\n\
         1-D grid of B*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {threads} threads, {total} bytes of {} shared memory; \
         params BM={} BN={bn} BK={} stages=2 swizzle=128B",
        spec.describe(),
        if total > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.bm,
        p.bk,
        bn = p.bn,
    );
    let tiles_n = nu.div_ceil(p.bn);
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (px, pw) = (b.param(ParamTy::Ptr), b.param(ParamTy::Ptr));
    let ptrs = OutPtrs::declare(&mut b, &st);

    let a_bytes = p.bm * p.bk * 2;
    let stage_bytes = total / 2;
    let smem = b.shared_aligned(total, 1024);

    let tid = b.special(Special::TidX);
    let (bi, tm, tn) = block_coords(&mut b, mu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    // This batch item's input; the weights are shared.
    let x_off = b.bin(BinOp::Mul, Ty::U32, bi, imm(u32_of(g.input_elems(), "conv input")?));
    let px = b.addr(px, x_off, 2);
    let la = swizzled_loader(&mut b, pw, tid, m0, (p.bm, mu, ku), p.bk, 0, threads);
    let layout = RowLayout::Swizzled { sbase: a_bytes, rows: p.bn };
    let gather = RowGather::new(&mut b, (tid, n0), g, nu, (threads, p.bn, p.bk), layout);

    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let wg = b.bin(BinOp::Shr, Ty::U32, tid, imm(7));
    let a_wg = b.bin(BinOp::Mul, Ty::U32, wg, imm(64 * 128));
    let a_wg = b.bin(BinOp::Add, Ty::U32, base, a_wg);
    let b_at = b.bin(BinOp::Add, Ty::U32, base, imm(a_bytes));
    let acc = zero_accumulators(&mut b, p);

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

    store_accumulators(&mut b, (&st, &ptrs), &acc.regs, (tid, wg), (bi, m0, n0), (mu, nu))?;
    Ok(b.finish())
}
