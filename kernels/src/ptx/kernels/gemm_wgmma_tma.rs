//! Hopper tensor-core GEMM fed by TMA (`matmul_wgmma_tma`): [`super::gemm_wgmma`]'s product
//! (`out = epilogue(A·B + bias)`, bf16/f16 A and B, f32 accumulation through
//! `wgmma.mma_async` m64nBNk16 from 128-byte-swizzled shared stages) with the stages filled
//! by `cp.async.bulk.tensor` tile copies completing on mbarriers instead of per-thread
//! `cp.async`. Minimum SM: sm_90a.
//!
//! **Not run on a GPU yet**: checked only in vidrt's PTX simulator (mbarrier and TMA
//! semantics written from the PTX ISA, [`crate::ptx::sim`]) and by ptxas.
//!
//! - Layouts and requirements: as `matmul_wgmma` (A `[M, K]`, B stored `[N, K]`, both
//!   K-major; K a multiple of 8; any M, N), and batch strides multiples of K (each matrix of
//!   the batch starts on a row of the operand seen as one `[rows, K]` matrix).
//! - Parameters: tensor map of A, tensor map of B
//!   ([`crate::ptx::builder::ParamTy::TensorMap`], built by the launcher from the operand's
//!   address and the kernel's [`Kernel::tensor_maps`], which are [`tensor_maps`]: 2-D `[rows, K]` row-major bf16/f16
//!   maps with a 64 × BM (A) or 64 × BN (B) box and the 128-byte swizzle, out-of-bounds
//!   elements zero), then \[bias\], \[epilogue inputs…\], out as `matmul_wgmma`. The TMA's
//!   zero fill covers the tails: k past K, rows past the operand; rows of the next matrix of
//!   a batch only reach output rows/columns past M/N, which the store skips.
//! - Launch: [`launch_grid`] (as `matmul_wgmma` at one tile per block). Shared memory: the
//!   STAGES stages (1024-byte aligned, `.align 1024`) plus 16 bytes of mbarriers per stage.
//! - Pipeline: stage s has a `full` mbarrier (1 arrival: the producer's `arrive.expect_tx` of
//!   the stage's bytes, completed by the copies' complete-tx) and an `empty` one (an arrival
//!   from lane 0 of every computing warp, after the warpgroup's wait). Thread 0 initialises them (`fence.mbarrier_init`, `fence.proxy.async.shared::cta`, `bar.sync`), then
//!   fills the first min(STAGES, k-slices) stages: `expect_tx`, then per 64-k panel one box
//!   copy of A (rows m0.., k) and one of B (rows n0.., k). Every k-slice i (stage i % STAGES,
//!   phase parity (i / STAGES) % 2): all threads wait on `full`, `wgmma.fence`, BK/16
//!   wgmma (128-byte-swizzle descriptors as `matmul_wgmma`'s swizzled points), commit, then
//!   `wgmma.wait_group 1`, which leaves slice i's group running and completes slice i - 1's;
//!   each computing warp then arrives on slice i - 1's `empty`, and thread 0 waits on it (every
//!   warpgroup is done reading that stage) and refills it with slice i - 1 + STAGES. So the
//!   tensor cores are never idle between slices on the release and the refill, and the copies
//!   of the next STAGES - 2 slices or more are in flight during each step's MMAs; a
//!   `wait_group 0` after the loop completes the last slice. The TMA writes and wgmma reads are both async proxy:
//!   no `fence.proxy.async`.
//! - Producer points (`producer`, CUTLASS's warp-specialized form): the block has one more
//!   warpgroup, warpgroup 0, that only copies. Its thread 0 issues every slice in order,
//!   waiting on a stage's `empty` (the previous round's parity) before each refill, and the
//!   warpgroup then exits; the computing warpgroups 1.. run the loop above without the
//!   refills, so no computing thread ever waits for a copy to be issued. With two computing
//!   warpgroups (384 threads, which start with 168 registers per thread) the producer lowers
//!   its registers to 40 (`setmaxnreg.dec`) and the computing warpgroups raise theirs to
//!   232 (`setmaxnreg.inc`), the whole register file: 128·40 + 256·232 = 384·168.
//! - Persistent producer points (`tiles` 2 or 4): a block computes tiles b, b + G, … (G the
//!   grid's blocks, [`launch_grid`]: one block per `tiles` tiles). The ring runs on across
//!   tiles (the producer's global slice count sets each stage's round), the computing
//!   warpgroups release a tile's last slice after its `wait_group 0`, and so the producer is
//!   already copying the next tile's first slices while they store the last tile's results.
//!   Such a block needs the whole register file (1 block per SM), so without persistence its
//!   epilogue would leave the tensor cores idle.
//! - Tunables: [`WgmmaParams`] with `swizzle` (BK a multiple of 64); the points are
//!   [`param_space`].

use vidrt_ir::DType;

use super::common::{offset_of, u32_of};
use super::gemm::{imm, tile_coords, GemmSpec, OutPtrs};
use super::gemm_wgmma::{
    launch_dims, slice_wgmma, store_accumulators, swizzled_descriptor, wgmma_unsupported, zero_accumulators,
    WgmmaParams,
};
use crate::ptx::builder::{BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, Reg, Special, Ty};
use crate::ptx::builder::{MAX_SHARED, STATIC_SHARED_MAX};
use crate::ptx::tma::{TensorMapDesc, TmaDtype, TmaSwizzle};
use crate::ptx::KernelError;

/// Every parameter point of `matmul_wgmma_tma` (the first two are the lowering's heuristic
/// picks, small and large): 64×64×64 at 4 stages (64 KiB), 128×128×64 at 4 (128 KiB),
/// 64×128×64 at 3 (72 KiB), 128×256×64 at 3 (144 KiB), 64×256×128 at 2 (160 KiB); then with
/// a producer warpgroup 128×128×64 at 4, 128×256×64 at 3 and 4 (192 KiB), 64×128×64 at 4
/// (96 KiB); then persistent: two tiles per block at 128×128×64 (4 stages) and 128×256×64
/// (3), four at 128×128×64; last 128×128×64 at 3 stages without a producer (96 KiB and 90
/// registers: two blocks per SM, so one block's epilogue overlaps the other's main loop).
/// The heuristics stay on points without a producer until a GPU has timed them.
pub fn param_space() -> Vec<WgmmaParams> {
    let p = |bm, bn, bk, stages| WgmmaParams { bm, bn, bk, stages, swizzle: true, producer: false, tiles: 1 };
    let w = |bm, bn, stages| WgmmaParams { producer: true, ..p(bm, bn, 64, stages) };
    vec![
        p(64, 64, 64, 4),
        p(128, 128, 64, 4),
        p(64, 128, 64, 3),
        p(128, 256, 64, 3),
        p(64, 256, 128, 2),
        w(128, 128, 4),
        w(128, 256, 3),
        w(128, 256, 4),
        w(64, 128, 4),
        WgmmaParams { tiles: 2, ..w(128, 128, 4) },
        WgmmaParams { tiles: 2, ..w(128, 256, 3) },
        WgmmaParams { tiles: 4, ..w(128, 128, 4) },
        p(128, 128, 64, 3),
    ]
}

/// The lowering's heuristic point for small products (M or N under 128).
pub fn small() -> WgmmaParams {
    param_space()[0]
}

/// The lowering's heuristic point for the rest.
pub fn large() -> WgmmaParams {
    param_space()[1]
}

/// Bytes of shared memory at `p`: the stages, then the mbarriers.
pub fn shared_bytes(p: WgmmaParams) -> u32 {
    p.shared_bytes().saturating_add(16 * p.stages)
}

/// Why `spec` cannot run on the TMA kernel, or `None`.
pub fn tma_unsupported(spec: &GemmSpec) -> Option<String> {
    if let Some(why) = wgmma_unsupported(spec) {
        return Some(why.replace("gemm_wgmma", "gemm_wgmma_tma"));
    }
    if spec.a_batch.iter().chain(&spec.b_batch).any(|s| !s.is_multiple_of(spec.k)) {
        return Some(format!(
            "gemm_wgmma_tma: batch strides {:?} / {:?} are not multiples of K = {} (each matrix must start on a \
             row of its operand's tensor map)",
            spec.a_batch, spec.b_batch, spec.k
        ));
    }
    None
}

/// Rows of an operand seen as one `[rows, K]` matrix: the last matrix's offset plus its rows.
fn operand_rows(spec: &GemmSpec, strides: &[usize], rows: usize) -> usize {
    spec.batch.iter().zip(strides).map(|(&d, &s)| (d.saturating_sub(1)) * s / spec.k.max(1)).sum::<usize>() + rows
}

/// The tensor maps of A and B for `spec` at `p`, with the operands' global addresses.
pub fn tensor_maps(spec: &GemmSpec, p: WgmmaParams, (a, b): (u64, u64)) -> [TensorMapDesc; 2] {
    let dt = if spec.in_dtype == DType::F16 { TmaDtype::F16 } else { TmaDtype::BF16 };
    let k = spec.k as u64;
    let a_rows = operand_rows(spec, &spec.a_batch, spec.m) as u64;
    let b_rows = operand_rows(spec, &spec.b_batch, spec.n) as u64;
    [
        TensorMapDesc::matrix_2d(dt, a, (a_rows, k), (p.bm, 64), TmaSwizzle::B128),
        TensorMapDesc::matrix_2d(dt, b, (b_rows, k), (p.bn, 64), TmaSwizzle::B128),
    ]
}

/// The TMA-fed wgmma GEMM for `spec` (see [`tma_unsupported`]) at `p` (a swizzled point).
/// Parameters: tensor map of A, tensor map of B, \[bias\], \[epilogue inputs…\], out.
pub fn gemm_wgmma_tma_spec(name: &str, spec: &GemmSpec, p: WgmmaParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = tma_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    if !p.swizzle {
        return Err(KernelError::Invalid(format!(
            "gemm_wgmma_tma parameters {p:?}: the TMA stages are 128-byte swizzled (swizzle must be set)"
        )));
    }
    p.check()?;
    let total = shared_bytes(p);
    if total > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "{name}: parameters {p:?} need {total} bytes of shared memory; no target allows more than {MAX_SHARED} per block"
        )));
    }
    let st = spec.store();
    let ab = if spec.in_dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    let (mu, nu, ku) = (u32_of(spec.m, "M")?, u32_of(spec.n, "N")?, u32_of(spec.k, "K")?);
    let header = format!(
        "matmul_wgmma_tma {name}: A[{m},{k}] {dt} row-major x B stored [{n},{k}] {dt} row-major (both K-major); {}\n\
         wgmma.mma_async m64n{bn}k16 f32 accumulation from 128-byte-swizzled shared stages filled by \
         cp.async.bulk.tensor (TMA) with full/empty mbarriers, {s} stages; minimum sm_90a; NOT YET RUN ON A GPU \
         (checked in vidrt's simulator and by ptxas)\n\
         1-D grid of ceil(batch*ceil(M/BM)*ceil(N/BN) / tiles) = {} blocks of {} threads ({} computing warpgroups{}), {total} bytes \
         of {} shared memory; params BM={} BN={bn} BK={} stages={s} swizzle=128B producer={} tiles={}",
        spec.describe(),
        launch_grid(spec, p)?.0,
        p.threads(),
        p.warpgroups(),
        match (p.producer, p.warpgroups()) {
            (false, _) => String::new(),
            (true, 2) =>
                format!(" and a producer warpgroup; setmaxnreg {PRODUCER_REGS} / {COMPUTING_REGS} registers per thread"),
            (true, _) => " and a producer warpgroup".to_string(),
        },
        if total > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.bm,
        p.bk,
        u32::from(p.producer),
        p.tiles,
        m = spec.m,
        n = spec.n,
        k = spec.k,
        dt = spec.in_dtype,
        bn = p.bn,
        s = p.stages,
    );
    let tiles_n = nu.div_ceil(p.bn);
    let threads = p.threads();
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let [map_a, map_b] = tensor_maps(spec, p, (0, 0));
    let (ta, tb) = (b.tensor_map_param(map_a), b.tensor_map_param(map_b));
    let ptrs = OutPtrs::declare(&mut b, &st);

    let a_bytes = p.bm * p.bk * 2;
    let stage_bytes = p.shared_bytes() / p.stages;
    let smem = b.shared_aligned(p.stages * stage_bytes, 1024);
    let bars = b.shared(16 * p.stages);

    let tid = b.special(Special::TidX);
    let per_matrix = mu.div_ceil(p.bm) * tiles_n;
    let total = launch_grid(spec, WgmmaParams { tiles: 1, ..p })?.0;
    // Operand rows of a tile's matrix of the batch (the strides are multiples of K).
    let rows_of = |s: &[usize]| s.iter().map(|x| x / spec.k).collect::<Vec<_>>();
    let (a_rows, b_rows) = (rows_of(&spec.a_batch), rows_of(&spec.b_batch));
    let tile_at = |b: &mut KernelBuilder, tile: Reg| -> Result<TileAt, KernelError> {
        let (bi, tm, tn) = tile_coords(b, tile, per_matrix, tiles_n);
        let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
        let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
        let a_row = offset_of(b, bi, &spec.batch, &a_rows)?;
        let b_row = offset_of(b, bi, &spec.batch, &b_rows)?;
        let a_row = b.bin(BinOp::Add, Ty::U32, a_row, m0);
        let b_row = b.bin(BinOp::Add, Ty::U32, b_row, n0);
        Ok(TileAt { bi, m0, n0, a_row, b_row })
    };

    let base = b.shared_base();
    let ring = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let full0 = b.bin(BinOp::Add, Ty::U32, base, imm(bars));
    let empty0 = b.bin(BinOp::Add, Ty::U32, full0, imm(8 * p.stages));
    let leader = b.setp(Cmp::Eq, tid, imm(0));
    // Each computing warp (not the producer's) releases a stage with one arrival, from its
    // lane 0 after the warpgroup's `wgmma.wait_group` (as DeepGEMM's sm_90 GEMMs do: the ISA
    // does not say that one warp's wait covers the other warps' share of the wgmma, so every
    // warp vouches for its own).
    let computing = 4 * p.warpgroups();

    // Thread 0 initialises the mbarriers.
    let after_init = b.label();
    b.bra_if(after_init, leader, true);
    for s in 0..p.stages {
        let f = b.bin(BinOp::Add, Ty::U32, full0, imm(8 * s));
        let e = b.bin(BinOp::Add, Ty::U32, empty0, imm(8 * s));
        b.mbar_init(f, 1);
        b.mbar_init(e, computing);
    }
    b.fence_mbarrier_init();
    // And to the async proxy as DeepGEMM's sm_90 GEMMs and the CUDA guide's TMA examples
    // publish them (`fence.proxy.async.shared::cta` after the inits); once per block.
    b.fence_proxy_async();
    b.place(after_init);
    b.bar_sync();

    // One stage's copies: expect_tx of the stage's bytes on `full`, then per 64-k panel the
    // A box (64 k × BM rows) and the B box (64 k × BN rows) of the tile at `at`.
    let panels = p.bk / 64;
    let issue = |b: &mut KernelBuilder, stage_at: Reg, full: Reg, k: Reg, at: &TileAt| {
        b.mbar_arrive_expect_tx(full, stage_bytes);
        for j in 0..panels {
            let kj = b.bin(BinOp::Add, Ty::U32, k, imm(64 * j));
            let da = b.bin(BinOp::Add, Ty::U32, stage_at, imm(j * p.bm * 128));
            b.tma_load(da, ta, &[kj, at.a_row], full);
            let db = b.bin(BinOp::Add, Ty::U32, stage_at, imm(a_bytes + j * p.bn * 128));
            b.tma_load(db, tb, &[kj, at.b_row], full);
        }
    };
    let slices = ku.div_ceil(p.bk);
    let done = b.label();
    // The tile this block computes first; with a producer, the tile loop's variable.
    let cta = b.special(Special::CtaidX);
    let tile = b.reg(Ty::U32);
    b.push(Inst::Mov { dst: tile, src: Operand::Reg(cta) });
    // The grid's blocks, the tile loop's step (producer points only: the others compute one
    // tile and never read it).
    let step = if p.producer { b.special(Special::NctaidX) } else { tile };
    // The computing thread's index among the computing threads.
    let (ctid, first_at) = if p.producer {
        let ctid = producer_warpgroup(&mut b, p.warpgroups() == 2, (tid, done), |b| {
            // Thread 0: every slice of every tile of this block, in order (global slice g).
            let (s, parity, g) = (b.imm_u32(0), b.imm_u32(0), b.imm_u32(0));
            tile_loop(b, (tile, step, total), |b| {
                let at = tile_at(b, tile)?;
                let i = b.imm_u32(0);
                let top = b.label();
                b.place(top);
                b.no_unroll();
                // Global slice g reuses stage s once the computing threads released slice
                // g - STAGES (round g / STAGES - 1 of its `empty`: the other parity).
                let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
                let skip = b.label();
                let fresh = b.setp(Cmp::Lt, g, imm(p.stages));
                b.bra_if(skip, fresh, false);
                let empty = b.bin(BinOp::Add, Ty::U32, empty0, s8);
                let other = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
                b.mbar_wait(empty, other);
                b.place(skip);
                let full = b.bin(BinOp::Add, Ty::U32, full0, s8);
                let off = b.bin(BinOp::Mul, Ty::U32, s, imm(stage_bytes));
                let stage_at = b.bin(BinOp::Add, Ty::U32, ring, off);
                let k = b.bin(BinOp::Mul, Ty::U32, i, imm(p.bk));
                issue(b, stage_at, full, k, &at);
                advance_ring(b, p.stages, (s, parity, g));
                let i1 = b.bin(BinOp::Add, Ty::U32, i, imm(1));
                b.push(Inst::Mov { dst: i, src: Operand::Reg(i1) });
                let again = b.setp(Cmp::Lt, i, imm(slices));
                b.bra_if(top, again, false);
                Ok(())
            })
        })?;
        (ctid, None)
    } else {
        let at = tile_at(&mut b, tile)?;
        let after_prologue = b.label();
        b.bra_if(after_prologue, leader, true);
        for s in 0..p.stages.min(slices) {
            let stage_at = b.bin(BinOp::Add, Ty::U32, ring, imm(s * stage_bytes));
            let f = b.bin(BinOp::Add, Ty::U32, full0, imm(8 * s));
            let k = b.imm_u32(s * p.bk);
            issue(&mut b, stage_at, f, k, &at);
        }
        b.place(after_prologue);
        (tid, Some(at))
    };

    let wg = b.bin(BinOp::Shr, Ty::U32, ctid, imm(7));
    let a_wg = b.bin(BinOp::Mul, Ty::U32, wg, imm(64 * 128));
    let in_warp = b.bin(BinOp::And, Ty::U32, ctid, imm(31));
    let signals = b.setp(Cmp::Eq, in_warp, imm(0));
    // Stage s's `empty` gets this warp's arrival.
    let release = |b: &mut KernelBuilder, s: Reg| {
        let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
        let empty = b.bin(BinOp::Add, Ty::U32, empty0, s8);
        let released = b.label();
        b.bra_if(released, signals, true);
        b.mbar_arrive(empty);
        b.place(released);
        s8
    };
    // The stage before s in the ring.
    let previous = |b: &mut KernelBuilder, s: Reg| {
        let s_is0 = b.setp(Cmp::Eq, s, imm(0));
        let s_less = b.bin(BinOp::Sub, Ty::U32, s, imm(1));
        (b.selp(Ty::U32, imm(p.stages - 1), s_less, s_is0), s_is0)
    };
    // Ring state over every slice of every tile: stage s and its phase parity.
    let s = b.imm_u32(0);
    let parity = b.imm_u32(0);
    let tile_body = |b: &mut KernelBuilder| -> Result<(), KernelError> {
        let at = match first_at {
            Some(at) => at,
            None => tile_at(b, tile)?,
        };
        let acc = zero_accumulators(b, p);
        let i = b.imm_u32(0);
        let top = b.label();
        b.place(top);
        b.no_unroll();
        let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
        let full = b.bin(BinOp::Add, Ty::U32, full0, s8);
        let stage_off = b.bin(BinOp::Mul, Ty::U32, s, imm(stage_bytes));
        let stage_at = b.bin(BinOp::Add, Ty::U32, ring, stage_off);
        b.mbar_wait(full, parity);
        let a_addr = b.bin(BinOp::Add, Ty::U32, stage_at, a_wg);
        let b_addr = b.bin(BinOp::Add, Ty::U32, stage_at, imm(a_bytes));
        let da = swizzled_descriptor(b, a_addr);
        let db = swizzled_descriptor(b, b_addr);
        slice_wgmma(b, (ab, p), &acc, (da, db));
        // Keep this slice's group in flight and wait only for the previous slice's (CUTLASS's
        // mainloop keeps one group outstanding the same way), then release that slice's stage.
        b.wgmma_wait(1);
        let after_release = b.label();
        let first = b.setp(Cmp::Eq, i, imm(0));
        b.bra_if(after_release, first, false);
        // Slice i - 1: stage s - 1 (STAGES - 1 when s is 0, with the other parity).
        let (sp, s_is0) = previous(b, s);
        let sp8 = release(b, sp);
        if !p.producer {
            // Thread 0 refills that stage with slice i - 1 + STAGES once every computing warp
            // released it.
            let flipped = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
            let pp = b.selp(Ty::U32, flipped, parity, s_is0);
            b.bra_if(after_release, leader, true);
            let ahead = b.bin(BinOp::Add, Ty::U32, i, imm(p.stages - 1));
            let more = b.setp(Cmp::Lt, ahead, imm(slices));
            b.bra_if(after_release, more, true);
            let empty_p = b.bin(BinOp::Add, Ty::U32, empty0, sp8);
            b.mbar_wait(empty_p, pp);
            let full_p = b.bin(BinOp::Add, Ty::U32, full0, sp8);
            let sp_off = b.bin(BinOp::Mul, Ty::U32, sp, imm(stage_bytes));
            let stage_p = b.bin(BinOp::Add, Ty::U32, ring, sp_off);
            let k = b.bin(BinOp::Mul, Ty::U32, ahead, imm(p.bk));
            issue(b, stage_p, full_p, k, &at);
        }
        b.place(after_release);
        advance_ring(b, p.stages, (s, parity, i));
        let again = b.setp(Cmp::Lt, i, imm(slices));
        b.bra_if(top, again, false);
        b.wgmma_wait(0);
        if p.producer {
            // The tile's last slice: its stage goes back to the producer (the next tile's).
            let (sp, _) = previous(b, s);
            release(b, sp);
        }
        store_accumulators(b, (&st, &ptrs), &acc.regs, (ctid, wg), (at.bi, at.m0, at.n0), (mu, nu), false)
    };
    if p.producer {
        tile_loop(&mut b, (tile, step, total), tile_body)?;
    } else {
        tile_body(&mut b)?;
    }
    b.place(done);
    Ok(b.finish())
}

/// A tile's coordinates: its matrix of the batch, first output row and column, and the
/// first operand rows of A and B (in the `[rows, K]` tensor maps).
#[derive(Clone, Copy)]
struct TileAt {
    bi: Reg,
    m0: Reg,
    n0: Reg,
    a_row: Reg,
    b_row: Reg,
}

/// `body` for tile = tile, tile + step, … while tile < total (`tile` a loop variable, `step`
/// the grid's block count).
fn tile_loop(
    b: &mut KernelBuilder,
    (tile, step, total): (Reg, Reg, u32),
    body: impl FnOnce(&mut KernelBuilder) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let top = b.label();
    let end = b.label();
    b.place(top);
    b.no_unroll();
    let past = b.setp(Cmp::Ge, tile, imm(total));
    b.bra_if(end, past, false);
    body(b)?;
    let next = b.bin(BinOp::Add, Ty::U32, tile, step);
    b.push(Inst::Mov { dst: tile, src: Operand::Reg(next) });
    b.bra(top);
    b.place(end);
    Ok(())
}

/// (grid, block) of `matmul_wgmma_tma` for `spec` at `p`: one block per `p.tiles` output
/// tiles of every matrix of the batch.
pub fn launch_grid(spec: &GemmSpec, p: WgmmaParams) -> Result<(u32, u32), KernelError> {
    let (per_matrix, block) = launch_dims(spec.m, spec.n, p);
    let tiles = u64::from(per_matrix).saturating_mul(spec.batch_count() as u64);
    let grid = tiles.div_ceil(u64::from(p.tiles.max(1)));
    let grid = u32::try_from(grid).map_err(|_| KernelError::Unsupported("matmul grid exceeds 2^32 blocks".into()))?;
    Ok((grid, block))
}

/// Per-thread registers of a producer warpgroup after its `setmaxnreg.dec` and of the two
/// computing warpgroups after their `.inc` (CUTLASS's split for a 384-thread block, which
/// starts with 168 each: 128·40 + 256·232 = 384·168).
pub(crate) const PRODUCER_REGS: u32 = 40;
pub(crate) const COMPUTING_REGS: u32 = 232;

/// The producer warpgroup of a `producer` point: warpgroup 0 (threads 0..128) lowers its
/// registers (with `rebalance`: two computing warpgroups), its thread 0 runs `produce` (every
/// copy of the block), then the producer warpgroup branches to `done`. The computing
/// warpgroups raise their registers and go on; returns their thread index counted from 0
/// (tid - 128). Shared with the TMA attention kernel.
pub(crate) fn producer_warpgroup(
    b: &mut KernelBuilder,
    rebalance: bool,
    (tid, done): (Reg, crate::ptx::builder::Label),
    produce: impl FnOnce(&mut KernelBuilder) -> Result<(), KernelError>,
) -> Result<Reg, KernelError> {
    let computing = b.label();
    let is_producer = b.setp(Cmp::Lt, tid, imm(128));
    b.bra_if(computing, is_producer, true);
    if rebalance {
        b.setmaxnreg(false, PRODUCER_REGS);
    }
    let leader = b.setp(Cmp::Eq, tid, imm(0));
    b.bra_if(done, leader, true);
    produce(b)?;
    b.bra(done);
    b.place(computing);
    if rebalance {
        b.setmaxnreg(true, COMPUTING_REGS);
    }
    Ok(b.bin(BinOp::Sub, Ty::U32, tid, imm(128)))
}

/// The next slice of a ring of `stages`: stage s + 1, wrapping (and flipping the parity)
/// after the last; i + 1.
pub(crate) fn advance_ring(b: &mut KernelBuilder, stages: u32, (s, parity, i): (Reg, Reg, Reg)) {
    let s1 = b.bin(BinOp::Add, Ty::U32, s, imm(1));
    let wrap = b.setp(Cmp::Ge, s1, imm(stages));
    let s_next = b.selp(Ty::U32, imm(0), s1, wrap);
    let flipped = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
    let p_next = b.selp(Ty::U32, flipped, parity, wrap);
    b.push(Inst::Mov { dst: s, src: Operand::Reg(s_next) });
    b.push(Inst::Mov { dst: parity, src: Operand::Reg(p_next) });
    let i1 = b.bin(BinOp::Add, Ty::U32, i, imm(1));
    b.push(Inst::Mov { dst: i, src: Operand::Reg(i1) });
}
