//! Hopper tensor-core GEMM (`matmul_wgmma`): `out = epilogue(A·B + bias)` for bf16 or f16 A
//! and B, f32 accumulation through `wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}`
//! with both operands read from shared memory through matrix descriptors; any output dtype
//! and the same bias/epilogue/store path as [`super::gemm_mma`] (see
//! [`super::gemm::GemmSpec`]). Minimum SM: sm_90a (the emitter refuses it for sm_80).
//!
//! **Not run on a GPU yet**: its numerics are checked only in vidrt's PTX simulator (whose
//! wgmma semantics are written from the PTX ISA, [`crate::ptx::sim::wgmma`]) and its text
//! only by ptxas. Treat the first hardware run as the real test.
//!
//! - Layouts: A is `[M, K]` row-major, B is stored `[N, K]` row-major (both K-major: what
//!   wgmma reads without a transpose; B is the layout of a linear layer's `[out, in]`
//!   weight); the output is `[batch…, M, N]` row-major. Parameters: a, b, \[bias\],
//!   \[epilogue inputs…\], out. Shapes are generation-time constants.
//! - Requirements: K a multiple of 8 (16-byte `cp.async` chunks), batch strides multiples
//!   of 8; any M, N ≥ 1. Rows past M or N and k past K are zero-filled by `cp.async` with
//!   `src-size` 0, and the store is guarded per element.
//! - Launch: 1-D grid of `batch · ceil(M/BM) · ceil(N/BN)` blocks, `128 · BM/64` threads (one
//!   warpgroup per 64 rows of the tile; see [`launch_dims`]). Shared memory:
//!   `STAGES · (BM + BN) · BK · 2` bytes, static up to 48 KiB and dynamic past it (the
//!   builder decides), at most sm_90a's 227 KiB ([`crate::ptx::builder::MAX_SHARED`]).
//! - Shared layout (no swizzle, the ISA's "core matrices" of 8 rows × 16 bytes): per stage,
//!   A then B, each stored as core matrices, core matrix (row block i, k block j) of an
//!   operand with R rows at byte `(j·R/8 + i)·128`, its row r at `+ 16·r`. A wgmma k-step
//!   (16 k) then reads, for warpgroup g, the A descriptor `start = A + (2s·BM/8 + 8g)·128`,
//!   `LBO = BM/8·128` (the next 8 k), `SBO = 128` (the next 8 rows), and the B descriptor
//!   `start = B + 2s·BN/8·128`, `LBO = BN/8·128`, `SBO = 128`, with N = BN.
//! - Shared layout with the 128-byte swizzle (points with `swizzle`, BK a multiple of 64; what
//!   fast Hopper kernels use, free of bank conflicts): the shared buffer is declared `.align
//!   1024` ([`KernelBuilder::shared_aligned`]) and every stage, A and B, is a multiple of 1024
//!   bytes. An operand of R rows is BK/64 panels of 64 k (`R·128` bytes each); in a panel row
//!   r is the 128 bytes at `r·128` with its 16-byte chunk j at chunk `j XOR (r % 8)` (CUTLASS
//!   `Swizzle<3,4,3>`, K-major `Layout_K_SW128` atoms of 8 rows × 64 b16 = 1024 bytes; the
//!   cp.async copies write these addresses, [`swizzled_offset`]). A k-step s reads the
//!   descriptors (swizzle mode 1, `SBO = 1024`, LBO 1 (unused), base offset 0) with `start =
//!   A + (s/4)·BM·128 + 64g·128 + (s%4)·32` and `start = B + (s/4)·BN·128 + (s%4)·32`: as
//!   CUTLASS's `make_gmma_desc` and DeepGEMM, the k step moves the start inside the rows and
//!   the hardware applies the XOR on address bits 4–6 from bits 7–9.
//! - Pipeline: STAGES (2..=4) stages filled by 16-byte `cp.async.cg` (the copies of thread t
//!   go to 16 consecutive bytes of a core matrix, 8 consecutive threads fill one), one commit
//!   group per k-slice, as `matmul_mma`. Each k-step waits with `cp.async.wait_group
//!   STAGES-2` (its slice has landed), runs `fence.proxy.async` (the landed copies were
//!   written through the generic proxy; wgmma reads through the async proxy), synchronises
//!   the block (every thread's slice is in and fenced; every warpgroup's wgmma of the
//!   previous step has completed, so its stage is free), issues the slice STAGES-1 ahead into
//!   that freed stage, then `wgmma.fence`, BK/16 `wgmma.mma_async` m64nBNk16 accumulating into
//!   the BN/2 f32 registers per thread, `wgmma.commit_group` and `wgmma.wait_group 0`. The
//!   copies overlap the MMAs; MMAs of consecutive steps do not overlap (that would need one
//!   more stage of slack and `wgmma.wait_group 1`).
//! - Tunables (generation time): BM (64 or 128: one or two warpgroups), BN (the wgmma N:
//!   a multiple of 8 up to 256), BK (a multiple of 16) and STAGES; the points are in
//!   [`param_space`] (text form `bm=..,bn=..,bk=..,stages=..`).
//! - Tunables (continued): `swizzle` (the 128-byte swizzle; default off, the heuristic points
//!   are unswizzled).
//! - TMA: [`super::gemm_wgmma_tma`] is this kernel with its stages filled by
//!   `cp.async.bulk.tensor` under mbarriers (what the lowering takes where it can).

use vidrt_ir::DType;

use super::common::{offset_of, u32_of};
use super::gemm::{block_coords, imm, store_result, GemmSpec, OutPtrs};
use super::gemm_mma::{Chunk, Loader};
use crate::ptx::builder::{BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, ParamTy, Reg, Special, Ty};
use crate::ptx::builder::{MAX_SHARED, STATIC_SHARED_MAX};
use crate::ptx::KernelError;

/// Generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgmmaParams {
    /// Tile rows: 64 per warpgroup (64 or 128).
    pub bm: u32,
    /// Tile columns, the wgmma N (a multiple of 8, at most 256).
    pub bn: u32,
    /// K per stage (a multiple of 16).
    pub bk: u32,
    /// Shared-memory pipeline stages (2..=4).
    pub stages: u32,
    /// The 128-byte swizzle (BK a multiple of 64): operand stages as 128-byte rows whose
    /// 16-byte chunks are XOR-permuted within 1024-byte atoms of 8 rows, read through
    /// swizzle-mode-1 descriptors; else the no-swizzle core-matrix layout.
    pub swizzle: bool,
    /// A dedicated producer warpgroup (`matmul_wgmma_tma` only): warpgroup 0 issues the
    /// copies and the BM/64 warpgroups after it only compute (CUTLASS's warp-specialized
    /// kernels); else thread 0 of the first computing warpgroup issues them between its MMAs.
    pub producer: bool,
    /// Output tiles per block (1, 2 or 4; more than 1 only with a producer warpgroup): block
    /// b computes tiles b, b + G, … of the G blocks' grid, the producer copying the next
    /// tile's first slices while the computing warpgroups store the last one's results.
    pub tiles: u32,
}

impl WgmmaParams {
    /// The warpgroups that compute (64 tile rows each), not counting a producer.
    pub fn warpgroups(self) -> u32 {
        self.bm / 64
    }

    /// Threads of a block: the computing warpgroups, and the producer warpgroup if any.
    pub fn threads(self) -> u32 {
        128 * (self.warpgroups() + u32::from(self.producer))
    }

    /// Bytes of one stage: A `[BM][BK]` and B `[BN][BK]` b16 elements, no padding.
    pub(super) fn stage_bytes(self) -> u32 {
        self.bm.saturating_add(self.bn).saturating_mul(self.bk).saturating_mul(2)
    }

    /// Static shared memory of the pipeline.
    pub fn shared_bytes(self) -> u32 {
        self.stages.saturating_mul(self.stage_bytes())
    }

    pub(super) fn check(self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("gemm_wgmma parameters {self:?}: {why}")));
        if !matches!(self.bm, 64 | 128) {
            return bad("BM must be 64 or 128 (one or two warpgroups of 64 rows)");
        }
        if self.bn == 0 || self.bn > 256 || !self.bn.is_multiple_of(8) {
            return bad("BN (the wgmma N) must be a multiple of 8 up to 256");
        }
        if self.bk == 0 || !self.bk.is_multiple_of(16) {
            return bad("BK must be a multiple of 16");
        }
        if !(2..=4).contains(&self.stages) {
            return bad("stages must be 2, 3 or 4");
        }
        if self.swizzle && !self.bk.is_multiple_of(64) {
            return bad("the 128-byte swizzle needs BK a multiple of 64 (128-byte rows of b16)");
        }
        if self.producer && !self.swizzle {
            return bad("a producer warpgroup needs the TMA kernel's 128-byte-swizzled stages (swizzle must be set)");
        }
        if !matches!(self.tiles, 1 | 2 | 4) || (self.tiles > 1 && !self.producer) {
            return bad("tiles per block must be 1, 2 or 4, and more than 1 only with a producer warpgroup");
        }
        // The cp.async kernel's loads, which have no producer warpgroup.
        let (chunks, t) = (|rows: u32| rows * self.bk / 8, 128 * self.warpgroups());
        if !chunks(self.bm).is_multiple_of(t) || !chunks(self.bn).is_multiple_of(t) {
            return bad("the 16-byte chunks of a stage must divide evenly among the threads");
        }
        Ok(())
    }
}

impl crate::ptx::tune::Point for WgmmaParams {
    const NAMES: &'static [&'static str] = &["bm", "bn", "bk", "stages", "swizzle", "producer", "tiles"];
    /// `swizzle`, `producer` and `tiles` came later: texts without them are the points they
    /// always were.
    const DEFAULTS: &'static [(&'static str, u32)] = &[("swizzle", 0), ("producer", 0), ("tiles", 1)];

    fn values(self) -> Vec<u32> {
        vec![self.bm, self.bn, self.bk, self.stages, u32::from(self.swizzle), u32::from(self.producer), self.tiles]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [bm, bn, bk, stages, sw @ (0 | 1), pr @ (0 | 1), tiles] => {
                Some(WgmmaParams { bm, bn, bk, stages, swizzle: sw == 1, producer: pr == 1, tiles })
            }
            _ => None,
        }
    }
}

/// The lowering's heuristic point for small products (M or N under 128): one warpgroup.
pub const SMALL: WgmmaParams =
    WgmmaParams { bm: 64, bn: 64, bk: 64, stages: 3, swizzle: false, producer: false, tiles: 1 };
/// The lowering's heuristic point for the rest: two warpgroups, 128×128.
pub const LARGE: WgmmaParams =
    WgmmaParams { bm: 128, bn: 128, bk: 32, stages: 3, swizzle: false, producer: false, tiles: 1 };

/// Every parameter point of `matmul_wgmma` (the first two are the heuristic's). The first six
/// fill 48 KiB of static shared memory (64×256×32: 40 KiB); the next four are dynamic shared
/// memory: 128×128×64 at 3 stages (96 KiB), 128×256×64 at 3 and 4 (144 and 192 KiB, the
/// shape of CUTLASS's Hopper defaults) and 64×256×64 at 4 (160 KiB). The last four are the
/// 128-byte-swizzled forms of BK=64 points: 64×64 at 3 stages and 64×128 at 2 (static, 48
/// KiB each), 128×128 at 3 and 128×256 at 4 (dynamic).
pub fn param_space() -> Vec<WgmmaParams> {
    let p = |bm, bn, bk, stages| WgmmaParams { bm, bn, bk, stages, swizzle: false, producer: false, tiles: 1 };
    let sw = |bm, bn, stages| WgmmaParams { bm, bn, bk: 64, stages, swizzle: true, producer: false, tiles: 1 };
    vec![
        SMALL,
        LARGE,
        p(64, 128, 64, 2),
        p(64, 128, 32, 4),
        p(128, 256, 32, 2),
        p(64, 256, 32, 2),
        p(128, 128, 64, 3),
        p(128, 256, 64, 3),
        p(128, 256, 64, 4),
        p(64, 256, 64, 4),
        sw(64, 64, 3),
        sw(64, 128, 2),
        sw(128, 128, 3),
        sw(128, 256, 4),
    ]
}

/// (grid, block) for an M×N product at parameter point `p` (per matrix of the batch).
pub fn launch_dims(m: usize, n: usize, p: WgmmaParams) -> (u32, u32) {
    let tiles = m.div_ceil(p.bm as usize) * n.div_ceil(p.bn as usize);
    (u32::try_from(tiles).unwrap_or(u32::MAX), p.threads())
}

/// Why `spec` cannot run on the wgmma kernel, or `None` when it can.
pub fn wgmma_unsupported(spec: &GemmSpec) -> Option<String> {
    super::gemm_mma::cp_async_operands_unsupported("gemm_wgmma", spec)
}

/// One operand's global→shared copies in the core-matrix layout: the chunks of a `rows`×BK
/// slice from global row `row0` of a `[total, K]` matrix at `base`, placed at byte `sbase`
/// of a stage. Chunk c: row `8·(c / (8·BK/8)) + c % 8`, k block `(c / 8) % (BK/8)`; the
/// copies are `gemm_mma`'s.
#[allow(clippy::too_many_arguments)]
fn core_matrix_loader(
    b: &mut KernelBuilder,
    base: Reg,
    tid: Reg,
    row0: Reg,
    (rows, total, k): (u32, u32, u32),
    bk: u32,
    sbase: u32,
    threads: u32,
) -> Loader {
    let kblocks = bk / 8;
    let mut chunks = Vec::new();
    for i in 0..rows * kblocks / threads {
        let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
        let r8 = b.bin(BinOp::And, Ty::U32, c, imm(7));
        let c8 = b.bin(BinOp::Shr, Ty::U32, c, imm(3));
        let kb = b.bin(BinOp::Rem, Ty::U32, c8, imm(kblocks));
        let rb = b.bin(BinOp::Div, Ty::U32, c8, imm(kblocks));
        let r = b.fma(Ty::U32, rb, imm(8), r8);
        chunks.push(Chunk::at(b, (base, row0), (r, kb), (total, k), |b| {
            // Core matrix (rb, kb) at (kb·rows/8 + rb)·128, row r8 at +16·r8.
            let cm = b.fma(Ty::U32, kb, imm(rows / 8), rb);
            let soff = b.fma(Ty::U32, cm, imm(128), imm(sbase));
            b.fma(Ty::U32, r8, imm(16), soff)
        }));
    }
    Loader { chunks }
}

/// One operand's global→shared copies in the 128-byte-swizzle layout (BK a multiple of 64):
/// the slice is stored as BK/64 panels of 64 k, `rows · 128` bytes each, one after another
/// from byte `sbase` of the stage (1024-byte aligned); in a panel row r is 128 bytes at
/// `r · 128` and its 16-byte chunk j (k `8j..8j+8` of the panel) sits at chunk `j XOR (r % 8)`
/// (CUTLASS `Swizzle<3,4,3>` on byte offsets from a 1024-byte boundary). Chunk c: row
/// `c / (BK/8)`, k block `c % (BK/8)` ([`Loader::row_major`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn swizzled_loader(
    b: &mut KernelBuilder,
    base: Reg,
    tid: Reg,
    row0: Reg,
    (rows, total, k): (u32, u32, u32),
    bk: u32,
    sbase: u32,
    threads: u32,
) -> Loader {
    Loader::row_major(b, (base, tid, row0), (rows, total, k), bk, threads, |b, r, kb| {
        swizzled_offset(b, r, kb, rows, sbase)
    })
}

/// The byte offset of chunk `kb` (16 bytes, k `8·kb..`) of row `r` of an operand with `rows`
/// rows stored 128-byte-swizzled from byte `sbase` (see `swizzled_loader`).
pub fn swizzled_offset(b: &mut KernelBuilder, r: Reg, kb: Reg, rows: u32, sbase: u32) -> Reg {
    let panel = b.bin(BinOp::Shr, Ty::U32, kb, imm(3));
    let j = b.bin(BinOp::And, Ty::U32, kb, imm(7));
    let r8 = b.bin(BinOp::And, Ty::U32, r, imm(7));
    let j = b.bin(BinOp::Xor, Ty::U32, j, r8);
    let off = b.fma(Ty::U32, panel, imm(rows * 128), imm(sbase));
    let off = b.fma(Ty::U32, r, imm(128), off);
    b.fma(Ty::U32, j, imm(16), off)
}

/// A 128-byte-swizzle K-major matrix descriptor (swizzle mode 1, bits 62–63) for the operand
/// at shared address `addr` (a register; its 8-row atoms on 1024-byte boundaries, plus the
/// k step's offset inside the 128-byte rows): SBO 1024 (the next 8 rows), LBO 1 (unused for
/// K-major swizzled layouts; CUTLASS's `make_gmma_desc` sets 1), base offset 0.
pub fn swizzled_descriptor(b: &mut KernelBuilder, addr: Reg) -> Reg {
    let enc = b.bin(BinOp::Shr, Ty::U32, addr, imm(4));
    let enc = b.bin(BinOp::And, Ty::U32, enc, imm(0x3FFF));
    let lo = b.bin(BinOp::Or, Ty::U32, enc, imm(1 << 16));
    let lo = b.cvt(Ty::U64, lo);
    b.bin(BinOp::Or, Ty::U64, lo, Operand::Int(((1024i64 >> 4) << 32) | (1i64 << 62)))
}

/// A no-swizzle K-major matrix descriptor for the operand at shared address `addr` (a
/// register) with the given LBO and SBO (bytes, multiples of 16).
pub fn descriptor(b: &mut KernelBuilder, addr: Reg, lbo: u32, sbo: u32) -> Reg {
    let enc = b.bin(BinOp::Shr, Ty::U32, addr, imm(4));
    let enc = b.bin(BinOp::And, Ty::U32, enc, imm(0x3FFF));
    let lo = b.bin(BinOp::Or, Ty::U32, enc, imm(((lbo >> 4) & 0x3FFF) << 16));
    let lo = b.cvt(Ty::U64, lo);
    b.bin(BinOp::Or, Ty::U64, lo, Operand::Int(i64::from((sbo >> 4) & 0x3FFF) << 32))
}

/// The wgmma GEMM for `spec` (see [`wgmma_unsupported`] for what it takes) at `p`.
/// Parameters: a, b, \[bias\], \[epilogue inputs…\], out (as [`super::gemm_mma::gemm_mma_spec`]).
pub fn gemm_wgmma_spec(name: &str, spec: &GemmSpec, p: WgmmaParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = wgmma_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    p.check()?;
    if p.producer {
        return Err(KernelError::Invalid(format!(
            "gemm_wgmma parameters {p:?}: a producer warpgroup is a matmul_wgmma_tma point (the cp.async stages are \
             filled by every thread)"
        )));
    }
    if p.shared_bytes() > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "{name}: parameters {p:?} need {} bytes of shared memory; no target allows more than {MAX_SHARED} per block",
            p.shared_bytes()
        )));
    }
    let st = spec.store();
    let ab = if spec.in_dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    let (mu, nu, ku) = (u32_of(spec.m, "M")?, u32_of(spec.n, "N")?, u32_of(spec.k, "K")?);
    let header = format!(
        "matmul_wgmma {name}: A[{m},{k}] {dt} row-major x B stored [{n},{k}] {dt} row-major (both K-major); {}\n\
         wgmma.mma_async m64n{bn}k16 f32 accumulation, A and B from shared memory ({layout}), \
         cp.async {s}-stage pipeline; minimum sm_90a; NOT YET RUN ON A GPU (checked in vidrt's simulator and by ptxas)\n\
         1-D grid of batch*ceil(M/BM)*ceil(N/BN) = {} blocks of {} threads ({} warpgroups), {} bytes of {} shared \
         memory; params BM={} BN={bn} BK={} stages={s}{sw}",
        spec.describe(),
        launch_dims(spec.m, spec.n, p).0.saturating_mul(u32::try_from(spec.batch_count()).unwrap_or(u32::MAX)),
        p.threads(),
        p.warpgroups(),
        p.shared_bytes(),
        if p.shared_bytes() > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.bm,
        p.bk,
        m = spec.m,
        n = spec.n,
        k = spec.k,
        dt = spec.in_dtype,
        sw = if p.swizzle { " swizzle=128B" } else { "" },
        layout = if p.swizzle { "128-byte swizzle, 1024-byte aligned stages" } else { "no-swizzle core matrices" },
        bn = p.bn,
        s = p.stages,
    );
    let tiles_n = nu.div_ceil(p.bn);
    let threads = p.threads();
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (pa, pb) = (b.param(ParamTy::Ptr), b.param(ParamTy::Ptr));
    let ptrs = OutPtrs::declare(&mut b, &st);

    let a_bytes = p.bm * p.bk * 2;
    let stage_bytes = p.stage_bytes();
    let smem = b.shared_aligned(p.stages * stage_bytes, if p.swizzle { 1024 } else { 16 });

    let tid = b.special(Special::TidX);
    let (bi, tm, tn) = block_coords(&mut b, mu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    let a_off = offset_of(&mut b, bi, &spec.batch, &spec.a_batch)?;
    let b_off = offset_of(&mut b, bi, &spec.batch, &spec.b_batch)?;
    let pa = b.addr(pa, a_off, 2);
    let pb = b.addr(pb, b_off, 2);
    let loader = if p.swizzle { swizzled_loader } else { core_matrix_loader };
    let la = loader(&mut b, pa, tid, m0, (p.bm, mu, ku), p.bk, 0, threads);
    let lb = loader(&mut b, pb, tid, n0, (p.bn, nu, ku), p.bk, a_bytes, threads);

    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let wg = b.bin(BinOp::Shr, Ty::U32, tid, imm(7));
    // This warpgroup's A rows start at row 64·wg: core-matrix row block 8·wg (no swizzle) or
    // 128-byte row 64·wg of the panel (swizzled).
    let a_wg = b.bin(BinOp::Mul, Ty::U32, wg, imm(if p.swizzle { 64 * 128 } else { 8 * 128 }));
    let a_wg = b.bin(BinOp::Add, Ty::U32, base, a_wg);
    let b_at = b.bin(BinOp::Add, Ty::U32, base, imm(a_bytes));
    let (lbo_a, lbo_b) = (p.bm / 8 * 128, p.bn / 8 * 128);
    let acc = zero_accumulators(&mut b, p);

    let issue = |b: &mut KernelBuilder, k: Reg, at: Reg| {
        la.issue(b, pa, k, at, ku);
        lb.issue(b, pb, k, at, ku);
    };
    let descriptors = |b: &mut KernelBuilder, a_addr: Reg, b_addr: Reg| {
        if p.swizzle {
            (swizzled_descriptor(b, a_addr), swizzled_descriptor(b, b_addr))
        } else {
            (descriptor(b, a_addr, lbo_a, 128), descriptor(b, b_addr, lbo_b, 128))
        }
    };
    cp_async_mainloop(&mut b, (ab, p), &acc, (base, a_wg, b_at), ku, &issue, &descriptors);

    store_accumulators(&mut b, (&st, &ptrs), &acc.regs, (tid, wg), (bi, m0, n0), (mu, nu), false)?;
    Ok(b.finish())
}

/// The K loop of a wgmma kernel whose operands both reach shared memory by `cp.async`
/// (`issue(b, k, stage)`: the copies of the slice at k offset `k` into the stage at shared
/// address `stage`), over `p.stages` stages of `p.stage_bytes()` bytes from
/// `base`: slices 0..S-1 into stages 0..S-1, one commit group each; then per slice
/// `cp.async.wait_group S-2`, `fence.proxy.async` (the landed copies are generic-proxy
/// writes the wgmma reads), `bar.sync`, the copies of slice k + S - 1 into the stage read in
/// the previous step, the BK/16 wgmma of slice k (`descriptors(b, A, B)` of the warpgroup's
/// A at `a_wg` and of B at `b_at`, plus the stage), `wgmma.wait_group 0`. Leaves every copy
/// landed (the zero-fill slices past K land too; nothing reads them).
pub(super) fn cp_async_mainloop(
    b: &mut KernelBuilder,
    (ab, p): (Ty, WgmmaParams),
    acc: &Accumulators,
    (base, a_wg, b_at): (Reg, Reg, Reg),
    ku: u32,
    issue: &dyn Fn(&mut KernelBuilder, Reg, Reg),
    descriptors: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> (Reg, Reg),
) {
    let stage_bytes = p.stage_bytes();
    // Prologue: slices 0..S-1 into stages 0..S-1, one commit group each.
    let stages = p.stages;
    let ring = stages * stage_bytes;
    let k0 = b.imm_u32(0);
    for s in 0..stages - 1 {
        let at = b.bin(BinOp::Add, Ty::U32, base, imm(s * stage_bytes));
        let ks = b.imm_u32(s * p.bk);
        issue(b, ks, at);
        b.cp_async_commit();
    }
    // The byte offset (from `base`) of the stage computed on; the one written is the one
    // before it (read in the previous step), as in `gemm_mma`.
    let stage = b.imm_u32(0);

    let top = b.label();
    b.place(top);
    b.no_unroll();
    b.cp_async_wait(stages - 2);
    b.fence_proxy_async();
    b.bar_sync();
    let kn = b.bin(BinOp::Add, Ty::U32, k0, imm((stages - 1) * p.bk));
    let first = b.setp(Cmp::Eq, stage, imm(0));
    let back = b.bin(BinOp::Sub, Ty::U32, stage, imm(stage_bytes));
    let write = b.selp(Ty::U32, imm(ring - stage_bytes), back, first);
    let write = b.bin(BinOp::Add, Ty::U32, base, write);
    issue(b, kn, write);
    b.cp_async_commit();
    let a_addr = b.bin(BinOp::Add, Ty::U32, a_wg, stage);
    let b_addr = b.bin(BinOp::Add, Ty::U32, b_at, stage);
    let (da, db) = descriptors(b, a_addr, b_addr);
    slice_wgmma(b, (ab, p), acc, (da, db));
    b.wgmma_wait(0);
    let next = b.bin(BinOp::Add, Ty::U32, stage, imm(stage_bytes));
    let wrap = b.setp(Cmp::Ge, next, imm(ring));
    let next = b.selp(Ty::U32, imm(0), next, wrap);
    b.push(Inst::Mov { dst: stage, src: Operand::Reg(next) });
    let k1 = b.bin(BinOp::Add, Ty::U32, k0, imm(p.bk));
    b.push(Inst::Mov { dst: k0, src: Operand::Reg(k1) });
    let more = b.setp(Cmp::Lt, k0, imm(ku));
    b.bra_if(top, more, false);
    b.cp_async_wait_all();
}

/// A warpgroup's f32 accumulators (BN/2 registers per thread, zeroed) and the `scale-d`
/// predicate (true: accumulate) of its wgmma.
pub(super) struct Accumulators {
    pub regs: Vec<Reg>,
    scale_d: Reg,
}

pub(super) fn zero_accumulators(b: &mut KernelBuilder, p: WgmmaParams) -> Accumulators {
    let zero = b.imm_f32(0.0);
    let regs = (0..p.bn / 2)
        .map(|_| {
            let r = b.reg(Ty::F32);
            b.push(Inst::Mov { dst: r, src: Operand::Reg(zero) });
            r
        })
        .collect();
    let one = b.imm_u32(1);
    let scale_d = b.setp(Cmp::Ne, one, imm(0));
    Accumulators { regs, scale_d }
}

/// One k-slice's product into `acc`: `wgmma.fence`, the BK/16 `wgmma.mma_async` from the
/// stage's descriptors `da` (A) and `db` (B) at k-step 0, and `commit_group`. The
/// descriptors' start advance (in 16-byte units) from k-step 0 to k-step s: no swizzle,
/// 2·LBO per step (16 k = two core matrices in K); swizzled, 32 bytes per step inside the
/// 128-byte rows and a panel (rows·128 bytes) per 4 steps.
pub(super) fn slice_wgmma(b: &mut KernelBuilder, (ab, p): (Ty, WgmmaParams), acc: &Accumulators, (da, db): (Reg, Reg)) {
    let (lbo_a, lbo_b) = (p.bm / 8 * 128, p.bn / 8 * 128);
    let advance = |s: u64| -> (u64, u64) {
        if p.swizzle {
            let (panel, within) = (s / 4, (s % 4) * 32);
            ((panel * u64::from(p.bm) * 128 + within) >> 4, (panel * u64::from(p.bn) * 128 + within) >> 4)
        } else {
            (s * u64::from((2 * lbo_a) >> 4), s * u64::from((2 * lbo_b) >> 4))
        }
    };
    b.wgmma_fence();
    for s in 0..u64::from(p.bk / 16) {
        let (da_s, db_s) = if s == 0 {
            (da, db)
        } else {
            let (step_a, step_b) = advance(s);
            let x = b.bin(BinOp::Add, Ty::U64, da, Operand::Int(step_a as i64));
            let y = b.bin(BinOp::Add, Ty::U64, db, Operand::Int(step_b as i64));
            (x, y)
        };
        b.wgmma(ab, &acc.regs, da_s, db_s, acc.scale_d);
    }
    b.wgmma_commit();
}

/// The epilogue of both wgmma GEMMs: thread t (warpgroup g = `wg`, warp w = (t/32) % 4, lane
/// l) holds in `acc[i]` element (64g + 16w + l/4 + 8·((i/2) % 2), 8·(i/4) + 2·(l%4) + i%2) of
/// the tile at (`m0`, `n0`) of matrix `bi`; each goes through [`store_result`] as that
/// element, or `transposed` as element (column, row) of the `st` matrix (`conv3d_wgmma` with
/// the positions as M). `mu · nu` is the size of one matrix of the batch.
pub(super) fn store_accumulators(
    b: &mut KernelBuilder,
    (st, ptrs): (&super::gemm::Store<'_>, &OutPtrs),
    acc: &[Reg],
    (tid, wg): (Reg, Reg),
    (bi, m0, n0): (Reg, Reg, Reg),
    (mu, nu): (u32, u32),
    transposed: bool,
) -> Result<(), KernelError> {
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let w4 = b.bin(BinOp::And, Ty::U32, warp, imm(3));
    let g = b.bin(BinOp::Shr, Ty::U32, lane, imm(2));
    let q = b.bin(BinOp::And, Ty::U32, lane, imm(3));
    let row_t = b.fma(Ty::U32, wg, imm(64), m0);
    let row_t = b.fma(Ty::U32, w4, imm(16), row_t);
    let row_t = b.bin(BinOp::Add, Ty::U32, row_t, g);
    let col_t = b.fma(Ty::U32, q, imm(2), n0);
    let out_base = b.bin(BinOp::Mul, Ty::U32, bi, imm(mu * nu));
    for (i, &v) in acc.iter().enumerate() {
        let i = i as u32;
        let row = b.bin(BinOp::Add, Ty::U32, row_t, imm(8 * ((i / 2) % 2)));
        let col = b.bin(BinOp::Add, Ty::U32, col_t, imm(8 * (i / 4) + i % 2));
        let at = if transposed { (col, row) } else { (row, col) };
        store_result(b, st, ptrs, out_base, at, v)?;
    }
    Ok(())
}

/// The wgmma GEMM at shape (m, n, k) for `dtype` (BF16 or F16) at `p`: B stored `[N, K]`, C
/// written as f32, no bias or epilogue. Parameters: a, b, c.
pub fn gemm_wgmma(
    name: &str,
    m: usize,
    n: usize,
    k: usize,
    dtype: DType,
    p: WgmmaParams,
) -> Result<Kernel, KernelError> {
    gemm_wgmma_spec(name, &GemmSpec::plain(m, n, k, true, dtype, DType::F32), p)
}
