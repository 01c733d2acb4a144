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
//!   elements zero), then [bias], [epilogue inputs…], out as `matmul_wgmma`. The TMA's
//!   zero fill covers the tails: k past K, rows past the operand; rows of the next matrix of
//!   a batch only reach output rows/columns past M/N, which the store skips.
//! - Launch: as `matmul_wgmma` ([`super::gemm_wgmma::launch_dims`]). Shared memory: the
//!   STAGES stages (1024-byte aligned, `.align 1024`) plus 16 bytes of mbarriers per stage.
//! - Pipeline: stage s has a `full` mbarrier (1 arrival: the producer's `arrive.expect_tx` of
//!   the stage's bytes, completed by the copies' complete-tx) and an `empty` one (an arrival
//!   from the first thread of every computing warpgroup, after the warpgroup's wait). Thread 0 initialises them (`fence.mbarrier_init`, `fence.proxy.async.shared::cta`, `bar.sync`), then
//!   fills the first min(STAGES, k-slices) stages: `expect_tx`, then per 64-k panel one box
//!   copy of A (rows m0.., k) and one of B (rows n0.., k). Every k-slice i (stage i % STAGES,
//!   phase parity (i / STAGES) % 2): all threads wait on `full`, `wgmma.fence`, BK/16
//!   wgmma (128-byte-swizzle descriptors as `matmul_wgmma`'s swizzled points), commit, then
//!   `wgmma.wait_group 1`, which leaves slice i's group running and completes slice i - 1's;
//!   each warpgroup then arrives on slice i - 1's `empty`, and thread 0 waits on it (every
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
//! - Tunables: [`WgmmaParams`] with `swizzle` (BK a multiple of 64); the points are
//!   [`param_space`].

use vidrt_ir::DType;

use super::common::{offset_of, u32_of};
use super::gemm::{block_coords, imm, GemmSpec, OutPtrs};
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
/// (96 KiB). The heuristics stay on points without a producer until a GPU has timed them.
pub fn param_space() -> Vec<WgmmaParams> {
    let p = |bm, bn, bk, stages| WgmmaParams { bm, bn, bk, stages, swizzle: true, producer: false };
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
/// Parameters: tensor map of A, tensor map of B, [bias], [epilogue inputs…], out.
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
         1-D grid of batch*ceil(M/BM)*ceil(N/BN) = {} blocks of {} threads ({} computing warpgroups{}), {total} bytes \
         of {} shared memory; params BM={} BN={bn} BK={} stages={s} swizzle=128B producer={}",
        spec.describe(),
        launch_dims(spec.m, spec.n, p).0.saturating_mul(u32::try_from(spec.batch_count()).unwrap_or(u32::MAX)),
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
    let (bi, tm, tn) = block_coords(&mut b, mu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    // Operand rows of this matrix of the batch (the strides are multiples of K).
    let rows_of = |s: &[usize]| s.iter().map(|x| x / spec.k).collect::<Vec<_>>();
    let a_row = offset_of(&mut b, bi, &spec.batch, &rows_of(&spec.a_batch))?;
    let b_row = offset_of(&mut b, bi, &spec.batch, &rows_of(&spec.b_batch))?;
    let a_row = b.bin(BinOp::Add, Ty::U32, a_row, m0);
    let b_row = b.bin(BinOp::Add, Ty::U32, b_row, n0);

    let base = b.shared_base();
    let ring = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let full0 = b.bin(BinOp::Add, Ty::U32, base, imm(bars));
    let empty0 = b.bin(BinOp::Add, Ty::U32, full0, imm(8 * p.stages));
    let leader = b.setp(Cmp::Eq, tid, imm(0));
    // Each computing warpgroup (not a producer) releases a stage with one arrival, from its
    // first thread after its `wgmma.wait_group`: the wait completes the warpgroup's wgmma
    // group, whose operand reads are the warpgroup's, not one warp's (as CUTLASS's consumer
    // release signals once per warpgroup).
    let computing = p.warpgroups();

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
    // A box (64 k × BM rows) and the B box (64 k × BN rows).
    let panels = p.bk / 64;
    let issue = |b: &mut KernelBuilder, stage_at: Reg, full: Reg, k: Reg| {
        b.mbar_arrive_expect_tx(full, stage_bytes);
        for j in 0..panels {
            let kj = b.bin(BinOp::Add, Ty::U32, k, imm(64 * j));
            let da = b.bin(BinOp::Add, Ty::U32, stage_at, imm(j * p.bm * 128));
            b.tma_load(da, ta, &[kj, a_row], full);
            let db = b.bin(BinOp::Add, Ty::U32, stage_at, imm(a_bytes + j * p.bn * 128));
            b.tma_load(db, tb, &[kj, b_row], full);
        }
    };
    let slices = ku.div_ceil(p.bk);
    let done = b.label();
    // The computing thread's index among the computing threads, and its warpgroup.
    let ctid = if p.producer {
        producer_warpgroup(
            &mut b,
            p,
            (tid, done),
            |b, s, parity, i| {
                // Slice i reuses stage s once the computing threads released slice i - STAGES
                // (round i / STAGES - 1 of its `empty`: the other parity).
                let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
                let skip = b.label();
                let fresh = b.setp(Cmp::Lt, i, imm(p.stages));
                b.bra_if(skip, fresh, false);
                let empty = b.bin(BinOp::Add, Ty::U32, empty0, s8);
                let other = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
                b.mbar_wait(empty, other);
                b.place(skip);
                let full = b.bin(BinOp::Add, Ty::U32, full0, s8);
                let off = b.bin(BinOp::Mul, Ty::U32, s, imm(stage_bytes));
                let at = b.bin(BinOp::Add, Ty::U32, ring, off);
                let k = b.bin(BinOp::Mul, Ty::U32, i, imm(p.bk));
                issue(b, at, full, k);
            },
            slices,
        )
    } else {
        let after_prologue = b.label();
        b.bra_if(after_prologue, leader, true);
        for s in 0..p.stages.min(slices) {
            let at = b.bin(BinOp::Add, Ty::U32, ring, imm(s * stage_bytes));
            let f = b.bin(BinOp::Add, Ty::U32, full0, imm(8 * s));
            let k = b.imm_u32(s * p.bk);
            issue(&mut b, at, f, k);
        }
        b.place(after_prologue);
        tid
    };

    let acc = zero_accumulators(&mut b, p);
    let wg = b.bin(BinOp::Shr, Ty::U32, ctid, imm(7));
    let a_wg = b.bin(BinOp::Mul, Ty::U32, wg, imm(64 * 128));

    // Loop state: slice i, its stage s and phase parity.
    let i = b.imm_u32(0);
    let s = b.imm_u32(0);
    let parity = b.imm_u32(0);
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
    let da = swizzled_descriptor(&mut b, a_addr);
    let db = swizzled_descriptor(&mut b, b_addr);
    slice_wgmma(&mut b, (ab, p), &acc, (da, db));
    // Keep this slice's group in flight and wait only for the previous slice's (CUTLASS's
    // mainloop keeps one group outstanding the same way), then release that slice's stage.
    b.wgmma_wait(1);
    let after_release = b.label();
    let first = b.setp(Cmp::Eq, i, imm(0));
    b.bra_if(after_release, first, false);
    // Slice i - 1: stage s - 1 (STAGES - 1 when s is 0, with the other parity).
    let s_is0 = b.setp(Cmp::Eq, s, imm(0));
    let s_less = b.bin(BinOp::Sub, Ty::U32, s, imm(1));
    let sp = b.selp(Ty::U32, imm(p.stages - 1), s_less, s_is0);
    let sp8 = b.bin(BinOp::Mul, Ty::U32, sp, imm(8));
    let empty_p = b.bin(BinOp::Add, Ty::U32, empty0, sp8);
    let in_group = b.bin(BinOp::And, Ty::U32, ctid, imm(127));
    let signals = b.setp(Cmp::Eq, in_group, imm(0));
    let released = b.label();
    b.bra_if(released, signals, true);
    b.mbar_arrive(empty_p);
    b.place(released);
    if !p.producer {
        // Thread 0 refills that stage with slice i - 1 + STAGES once every thread released it.
        let flipped = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
        let pp = b.selp(Ty::U32, flipped, parity, s_is0);
        b.bra_if(after_release, leader, true);
        let ahead = b.bin(BinOp::Add, Ty::U32, i, imm(p.stages - 1));
        let more = b.setp(Cmp::Lt, ahead, imm(slices));
        b.bra_if(after_release, more, true);
        b.mbar_wait(empty_p, pp);
        let full_p = b.bin(BinOp::Add, Ty::U32, full0, sp8);
        let sp_off = b.bin(BinOp::Mul, Ty::U32, sp, imm(stage_bytes));
        let stage_p = b.bin(BinOp::Add, Ty::U32, ring, sp_off);
        let k = b.bin(BinOp::Mul, Ty::U32, ahead, imm(p.bk));
        issue(&mut b, stage_p, full_p, k);
    }
    b.place(after_release);
    advance_ring(&mut b, p.stages, (s, parity, i));
    let again = b.setp(Cmp::Lt, i, imm(slices));
    b.bra_if(top, again, false);
    b.wgmma_wait(0);

    store_accumulators(&mut b, (&st, &ptrs), &acc.regs, (ctid, wg), (bi, m0, n0), (mu, nu))?;
    b.place(done);
    Ok(b.finish())
}

/// Per-thread registers of a producer warpgroup after its `setmaxnreg.dec` and of the two
/// computing warpgroups after their `.inc` (CUTLASS's split for a 384-thread block, which
/// starts with 168 each: 128·40 + 256·232 = 384·168).
const PRODUCER_REGS: u32 = 40;
const COMPUTING_REGS: u32 = 232;

/// The producer warpgroup of a `producer` point: warpgroup 0 (threads 0..128) lowers its
/// registers (with two computing warpgroups), and its thread 0 runs `issue(s, parity, i)`
/// for every slice i (stage s = i % STAGES, phase parity (i / STAGES) % 2), then the
/// producer warpgroup branches to `done`. The computing warpgroups raise their registers
/// and go on; returns their thread index counted from 0 (tid - 128).
fn producer_warpgroup(
    b: &mut KernelBuilder,
    p: WgmmaParams,
    (tid, done): (Reg, crate::ptx::builder::Label),
    issue: impl Fn(&mut KernelBuilder, Reg, Reg, Reg),
    slices: u32,
) -> Reg {
    let rebalance = p.warpgroups() == 2;
    let computing = b.label();
    let is_producer = b.setp(Cmp::Lt, tid, imm(128));
    b.bra_if(computing, is_producer, true);
    if rebalance {
        b.setmaxnreg(false, PRODUCER_REGS);
    }
    let leader = b.setp(Cmp::Eq, tid, imm(0));
    b.bra_if(done, leader, true);
    let i = b.imm_u32(0);
    let s = b.imm_u32(0);
    let parity = b.imm_u32(0);
    let top = b.label();
    b.place(top);
    b.no_unroll();
    issue(b, s, parity, i);
    advance_ring(b, p.stages, (s, parity, i));
    let again = b.setp(Cmp::Lt, i, imm(slices));
    b.bra_if(top, again, false);
    b.bra(done);
    b.place(computing);
    if rebalance {
        b.setmaxnreg(true, COMPUTING_REGS);
    }
    b.bin(BinOp::Sub, Ty::U32, tid, imm(128))
}

/// The next slice of a ring of `stages`: stage s + 1, wrapping (and flipping the parity)
/// after the last; i + 1.
fn advance_ring(b: &mut KernelBuilder, stages: u32, (s, parity, i): (Reg, Reg, Reg)) {
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
