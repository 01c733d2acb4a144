//! Tensor-core GEMM (`matmul_mma`): `out = epilogue(A·B + bias)` for bf16 or f16 A and B,
//! f32 accumulation through `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}`, any output
//! dtype (see [`super::gemm::GemmSpec`]; [`gemm_mma`] is the plain f32-output form). Minimum
//! SM: sm_80. The same pipeline with a gathered B is the tensor-core conv3d
//! ([`super::conv3d::conv3d_mma`]).
//!
//! - Layouts: A is `[M, K]` row-major; B is stored `[N, K]` row-major (that is, the K×N operand
//!   in column-major order, the layout of a linear layer's `[out, in]` weight); the output is
//!   `[batch…, M, N]` row-major. Parameters: a, b, \[bias\], \[epilogue inputs…\], out. Shapes are
//!   generation-time constants.
//! - Requirements: K a multiple of 8 (every 16-byte `cp.async` row chunk of A and B is then
//!   aligned and either wholly inside or wholly outside the matrix); any M, N ≥ 1. Tiles past
//!   M, N or K are zero-filled by `cp.async` with `src-size` 0, and the epilogue store is
//!   guarded per element.
//! - Launch: 1-D grid of `batch · ceil(M/BM) · ceil(N/BN)` blocks (block `i`: batch
//!   `i / tiles`, then tile row and column), `32 · WARPS_M · WARPS_N` threads; see
//!   [`launch_dims`] (per matrix). Shared memory: `STAGES · (BM + BN) · (BK + 8) · 2` bytes
//!   ([`MmaParams::shared_bytes`]), static up to 48 KiB and dynamic past it (the builder
//!   decides, [`KernelBuilder::shared`]; the CUDA backend raises the function's dynamic limit
//!   at load and passes the bytes at launch). A point needs at most 227 KiB
//!   ([`MAX_SHARED`], sm_90a); the lowering keeps the points that fit its target (163 KiB on
//!   sm_80, [`crate::ptx::Target::max_shared`]), so a larger one is an `Unsupported` error,
//!   never a failed launch.
//! - Pipeline: STAGES (2..=4) shared-memory stages, CUTLASS's multistage scheme. The prologue
//!   issues slices 0..STAGES-1 of A and B with 16-byte `cp.async.cg`, one commit group per
//!   slice. Each k-step `k` then waits with `cp.async.wait_group STAGES-2` (slice `k` has
//!   landed, the STAGES-2 younger ones may still be in flight), synchronises the block (which
//!   also frees stage `(k-1) % STAGES`, read in the previous step), issues slice
//!   `k + STAGES - 1` into that freed stage and commits, then each warp loads its fragments
//!   from stage `k % STAGES` with `ldmatrix.x4` (A, 16×16) and `ldmatrix.x2` (B, 8 n × 16 k,
//!   no transpose since B is K-contiguous) and issues the MMAs of its WM×WN warp tile. Slices
//!   past K are all zero-fill (`src-size` 0), so every step commits exactly one group and the
//!   wait count stays uniform, also when K has fewer slices than stages. One barrier per
//!   k-step. Shared rows are padded by 16 bytes against bank conflicts.
//! - Tunables (generation time): BM×BN×BK, the warp grid WARPS_M×WARPS_N and STAGES; the
//!   points are in [`param_space`] (text form `bm=..,bn=..,bk=..,warps_m=..,warps_n=..,stages=..`;
//!   a text without `stages`, as older tuning databases hold, reads as 2 stages): tiles up to
//!   128×64 in static shared memory, and CUTLASS's sm_80 bf16 tiles (128×128, 128×256,
//!   256×128, 8 warps) in dynamic shared memory.

use vidrt_ir::DType;

use super::common::{offset_of, u32_of};
use super::gemm::{block_coords, store_result, ConvGeom, GemmSpec, OutPtrs, Store};
use super::im2col::{gathers_rows, ChannelsLastGather, Gather, RowGather, RowLayout, StagedGather, VecRowGather};
use crate::ptx::builder::{BinOp, Cmp, CpCache, Inst, Kernel, KernelBuilder, Operand, ParamTy, Reg, Special, Ty};
use crate::ptx::builder::{MAX_SHARED, STATIC_SHARED_MAX};
use crate::ptx::KernelError;

/// Generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaParams {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub warps_m: u32,
    pub warps_n: u32,
    /// Shared-memory pipeline stages (2..=4).
    pub stages: u32,
}

impl MmaParams {
    pub fn threads(self) -> u32 {
        32 * self.warps_m * self.warps_n
    }

    /// Bytes per row of a shared tile (BK b16 elements plus 16 bytes of padding).
    fn row_bytes(self) -> u32 {
        (self.bk + 8) * 2
    }

    /// Shared memory of the pipeline: `stages` stages of A `[BM][BK+8]` and B `[BN][BK+8]`
    /// (static up to 48 KiB, dynamic past it).
    pub fn shared_bytes(self) -> u32 {
        self.stages.saturating_mul(self.bm.saturating_add(self.bn)).saturating_mul(self.row_bytes())
    }

    fn check(self) -> Result<(u32, u32), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("gemm_mma parameters {self:?}: {why}")));
        if self.warps_m == 0
            || self.warps_n == 0
            || !self.bm.is_multiple_of(self.warps_m)
            || !self.bn.is_multiple_of(self.warps_n)
        {
            return bad("the warp grid must divide the tile");
        }
        let (wm, wn) = (self.bm / self.warps_m, self.bn / self.warps_n);
        if wm == 0 || wn == 0 || !wm.is_multiple_of(16) || !wn.is_multiple_of(8) {
            return bad("each warp tile must be a multiple of 16 (M) by 8 (N)");
        }
        if self.bk == 0 || !self.bk.is_multiple_of(16) {
            return bad("BK must be a multiple of 16");
        }
        if !(2..=4).contains(&self.stages) {
            return bad("stages must be 2, 3 or 4");
        }
        let chunks = |rows: u32| rows * self.bk / 8;
        if !chunks(self.bm).is_multiple_of(self.threads()) || !chunks(self.bn).is_multiple_of(self.threads()) {
            return bad("the 16-byte chunks of a stage must divide evenly among the threads");
        }
        Ok((wm, wn))
    }
}

impl crate::ptx::tune::Point for MmaParams {
    const NAMES: &'static [&'static str] = &["bm", "bn", "bk", "warps_m", "warps_n", "stages"];
    /// Texts written before `stages` existed were all two-stage kernels.
    const DEFAULTS: &'static [(&'static str, u32)] = &[("stages", 2)];

    fn values(self) -> Vec<u32> {
        vec![self.bm, self.bn, self.bk, self.warps_m, self.warps_n, self.stages]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [bm, bn, bk, warps_m, warps_n, stages] => Some(MmaParams { bm, bn, bk, warps_m, warps_n, stages }),
            _ => None,
        }
    }
}

/// Every parameter point of `matmul_mma` (the first two are the lowering's heuristic picks for
/// small and large problems; `conv3d_mma` takes the two-stage points,
/// [`super::conv3d::mma_param_space`]). Every point assembles with no spills (the ptxas test).
///
/// The first six fit 48 KiB of static shared memory: per stage 5 KiB (32×32), 10 KiB
/// (64×64), 15 KiB (128×64), so 128×64 stops at 3 stages. Left out because they spill with
/// the batched gate·acc + residual epilogue on sm_90a (ptxas holds them at 80 registers
/// there): `bm=64,bn=32,warps 2x1`, and 64×64 at 3 stages (8 bytes; at 4 stages ptxas takes 96
/// registers and does not spill).
///
/// The rest use dynamic shared memory, 8 warps each: CUTLASS's sm_80 bf16 tensor-op tiles
/// (128×128×32 at 3 and 4 stages with 32×64 warp tiles; 128×256×32 and 256×128×32 at 3 with
/// 64×64 warp tiles; its default, 128×256×64 at 3 stages, 162 KiB with our padded rows, fits
/// sm_80's 163 KiB) and 128×256×64 at 4 stages (216 KiB, sm_90a only: valid where the target
/// allows it, [`crate::ptx::Target::max_shared`]). Left out because they spill on sm_90a:
/// 128×128 with 64×32 warp tiles (8 bytes with the epilogue, ptxas holds it at 128
/// registers) and with 4 warps of 64×64 (16 bytes at 168 registers, also at BK = 64).
pub fn param_space() -> Vec<MmaParams> {
    let p = |bm, bn, warps_m, warps_n, stages| MmaParams { bm, bn, bk: 32, warps_m, warps_n, stages };
    let p64 = |bm, bn, warps_m, warps_n, stages| MmaParams { bk: 64, ..p(bm, bn, warps_m, warps_n, stages) };
    vec![
        SMALL,
        LARGE,
        p(128, 64, 4, 2, 2),
        p(32, 32, 1, 1, 3),
        p(128, 64, 4, 2, 3),
        p(64, 64, 2, 2, 4),
        // Dynamic shared memory: 60, 80, 90, 90, 162 and 216 KiB.
        p(128, 128, 4, 2, 3),
        p(128, 128, 4, 2, 4),
        p(128, 256, 2, 4, 3),
        p(256, 128, 4, 2, 3),
        p64(128, 256, 2, 4, 3),
        p64(128, 256, 2, 4, 4),
    ]
}

/// The lowering's heuristic point for small products (M or N under 64).
pub const SMALL: MmaParams = MmaParams { bm: 32, bn: 32, bk: 32, warps_m: 1, warps_n: 1, stages: 2 };
/// The lowering's heuristic point for the rest.
pub const LARGE: MmaParams = MmaParams { bm: 64, bn: 64, bk: 32, warps_m: 2, warps_n: 2, stages: 2 };

/// (grid, block) for an M×N product at parameter point `p`.
pub fn launch_dims(m: usize, n: usize, p: MmaParams) -> (u32, u32) {
    let tiles = m.div_ceil(p.bm as usize) * n.div_ceil(p.bn as usize);
    (u32::try_from(tiles).unwrap_or(u32::MAX), p.threads())
}

use super::gemm::imm;

/// One 16-byte chunk a thread copies per stage: its row pointer at its k offset (the row
/// clamped into the matrix), its shared offset within a stage, its k offset (elements) and
/// the bytes to read for in-bounds rows (16, or 0 past the last row). Shared with
/// `gemm_wgmma`, which places chunks in its core-matrix layout.
pub(super) struct Chunk {
    ptr: Reg,
    soff: Reg,
    kel: Reg,
    bytes: Reg,
}

impl Chunk {
    /// The chunk of slice row `r`, k block `kb` (8 elements) of a `[total, K]` matrix at
    /// `base` read from global row `row0`; `soff` gives its shared offset.
    pub(super) fn at(
        b: &mut KernelBuilder,
        (base, row0): (Reg, Reg),
        (r, kb): (Reg, Reg),
        (total, k): (u32, u32),
        soff: impl FnOnce(&mut KernelBuilder) -> Reg,
    ) -> Chunk {
        let gr = b.bin(BinOp::Add, Ty::U32, row0, r);
        let inside = b.setp(Cmp::Lt, gr, imm(total));
        let bytes = b.selp(Ty::U32, imm(16), imm(0), inside);
        let grc = b.bin(BinOp::Min, Ty::U32, gr, imm(total - 1));
        let kel = b.bin(BinOp::Mul, Ty::U32, kb, imm(8));
        let idx = b.fma(Ty::U32, grc, imm(k), kel);
        let ptr = b.addr(base, idx, 2);
        let soff = soff(b);
        Chunk { ptr, soff, kel, bytes }
    }
}

/// How B reaches shared memory.
enum BLoad<'a> {
    Async(Loader),
    /// A channels-last conv input's im2col, also by `cp.async`.
    ChannelsLast(ChannelsLastGather, &'a ConvGeom),
    Im2col(StagedGather, &'a ConvGeom),
}

impl BLoad<'_> {
    /// Starts the slice at `k0` towards the stage at `stage`: `cp.async` copies for a stored
    /// B (nothing left to do), or the gather's global loads into registers, returned for
    /// [`BLoad::finish`] to store once the MMAs they overlap have been issued.
    fn start(&self, b: &mut KernelBuilder, base: Reg, k0: Reg, stage: Reg, k: u32) -> Vec<Reg> {
        match self {
            BLoad::Async(l) => {
                l.issue(b, base, k0, stage, k);
                Vec::new()
            }
            BLoad::ChannelsLast(c, geom) => {
                c.issue(b, base, k0, stage, geom);
                Vec::new()
            }
            BLoad::Im2col(g, geom) => g.load(b, base, k0, geom),
        }
    }

    /// Completes [`BLoad::start`] into the stage at `stage`.
    fn finish(&self, b: &mut KernelBuilder, vals: &[Reg], stage: Reg) {
        match self {
            BLoad::Async(_) | BLoad::ChannelsLast(..) => {}
            BLoad::Im2col(g, _) => g.store(b, vals, stage),
        }
    }

    fn issue(&self, b: &mut KernelBuilder, base: Reg, k0: Reg, stage: Reg, k: u32) {
        let vals = self.start(b, base, k0, stage, k);
        self.finish(b, &vals, stage);
    }
}

/// Per-thread state of one operand's global→shared copies.
pub(super) struct Loader {
    pub(super) chunks: Vec<Chunk>,
}

impl Loader {
    /// Sets up the chunks of a `rows`×BK slice starting at global row `row0` of a `[total, K]`
    /// matrix at `base`, stored at byte `sbase` of a stage with `stride` bytes per row.
    #[allow(clippy::too_many_arguments)]
    fn new(
        b: &mut KernelBuilder,
        base: Reg,
        tid: Reg,
        row0: Reg,
        (rows, total, k): (u32, u32, u32),
        bk: u32,
        (sbase, stride): (u32, u32),
        threads: u32,
    ) -> Loader {
        Loader::row_major(b, (base, tid, row0), (rows, total, k), bk, threads, |b, r, kc| {
            let soff = b.fma(Ty::U32, r, imm(stride), imm(sbase));
            b.fma(Ty::U32, kc, imm(16), soff)
        })
    }

    /// The chunks of a `rows`×BK slice from global row `row0` of a `[total, K]` matrix at
    /// `base`, chunk c = tid + i·threads at row c / (BK/8), k block c % (BK/8) (consecutive
    /// threads read consecutive 16 bytes of a row), stored at the stage byte offset
    /// `offset(row, k block)`.
    pub(super) fn row_major(
        b: &mut KernelBuilder,
        (base, tid, row0): (Reg, Reg, Reg),
        (rows, total, k): (u32, u32, u32),
        bk: u32,
        threads: u32,
        offset: impl Fn(&mut KernelBuilder, Reg, Reg) -> Reg,
    ) -> Loader {
        let per_row = bk / 8;
        let mut chunks = Vec::new();
        for i in 0..rows * per_row / threads {
            let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
            let r = b.bin(BinOp::Div, Ty::U32, c, imm(per_row));
            let kc = b.bin(BinOp::Rem, Ty::U32, c, imm(per_row));
            chunks.push(Chunk::at(b, (base, row0), (r, kc), (total, k), |b| offset(b, r, kc)));
        }
        Loader { chunks }
    }

    /// Issues the copies of the slice at k offset `k0` (elements) into the stage at shared
    /// address `stage`.
    pub(super) fn issue(&self, b: &mut KernelBuilder, base: Reg, k0: Reg, stage: Reg, k: u32) {
        for c in &self.chunks {
            // Past K nothing is read (src-size 0: zero-fill) and the source is the matrix base.
            let gk = b.bin(BinOp::Add, Ty::U32, k0, c.kel);
            let ok = b.setp(Cmp::Lt, gk, imm(k));
            let step = b.mul_wide(k0, imm(2));
            let moved = b.bin(BinOp::Add, Ty::U64, c.ptr, step);
            let src = b.selp(Ty::U64, moved, base, ok);
            let n = b.selp(Ty::U32, c.bytes, imm(0), ok);
            let dst = b.bin(BinOp::Add, Ty::U32, stage, c.soff);
            b.cp_async(CpCache::Cg, dst, src, 16, Some(Operand::Reg(n)));
        }
    }
}

/// The tensor-core GEMM at shape (m, n, k) for `dtype` (BF16 or F16) at parameter point `p`:
/// B stored `[N, K]`, C written as f32, no bias or epilogue. Parameters: a, b, c.
pub fn gemm_mma(name: &str, m: usize, n: usize, k: usize, dtype: DType, p: MmaParams) -> Result<Kernel, KernelError> {
    gemm_mma_spec(name, &GemmSpec::plain(m, n, k, true, dtype, DType::F32), p)
}

/// Why `spec` cannot run on the tensor-core kernel, or `None` when it can.
pub fn mma_unsupported(spec: &GemmSpec) -> Option<String> {
    cp_async_operands_unsupported("gemm_mma", spec)
}

/// What both tensor-core kernels (`kernel`: gemm_mma, gemm_wgmma) need of `spec`: 16-bit
/// inputs, K-major A `[M, K]` and B `[N, K]`, and 16-byte aligned cp.async rows.
pub(super) fn cp_async_operands_unsupported(kernel: &str, spec: &GemmSpec) -> Option<String> {
    if !matches!(spec.in_dtype, DType::BF16 | DType::F16) {
        return Some(format!("{kernel} takes bf16 or f16 inputs, not {}", spec.in_dtype));
    }
    if spec.trans_a || !spec.trans_b {
        return Some(format!("{kernel} needs A stored [M, K] and B stored [N, K] (K-major operands)"));
    }
    if !spec.k.is_multiple_of(8) {
        return Some(format!("{kernel} needs K a multiple of 8 (16-byte cp.async rows), got K = {}", spec.k));
    }
    if spec.a_batch.iter().chain(&spec.b_batch).any(|s| !s.is_multiple_of(8)) {
        return Some(format!("{kernel} needs batch strides that keep 16-byte alignment"));
    }
    None
}

/// The tensor-core GEMM for `spec` (see [`mma_unsupported`] for what it takes) at `p`.
/// Parameters: a, b, \[bias\], \[epilogue inputs…\], out (as [`super::gemm::gemm_simt`]).
pub fn gemm_mma_spec(name: &str, spec: &GemmSpec, p: MmaParams) -> Result<Kernel, KernelError> {
    gemm_mma_spec_waiting(name, spec, p, p.stages.saturating_sub(2))
}

/// [`gemm_mma_spec`] with the k-loop's `cp.async.wait_group` count given instead of the
/// correct `stages - 2`: only for tests that check a wrong count is caught by the simulator.
#[doc(hidden)]
pub fn gemm_mma_spec_waiting(name: &str, spec: &GemmSpec, p: MmaParams, wait: u32) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = mma_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    let (m, n, k, dtype) = (spec.m, spec.n, spec.k, spec.in_dtype);
    let header = format!(
        "matmul_mma {name}: A[{m},{k}] {dtype} row-major x B stored [{n},{k}] {dtype} row-major \
         (K x N column-major); {}\nmma.sync.m16n8k16 f32 accumulation, cp.async {}-stage pipeline, ldmatrix; minimum sm_80\n\
         1-D grid of batch*ceil(M/BM)*ceil(N/BN) = {} blocks of {} threads, {} bytes of {} shared memory; \
         params BM={} BN={} BK={} warps {}x{} stages={}",
        spec.describe(),
        p.stages,
        launch_dims(m, n, p).0.saturating_mul(u32::try_from(spec.batch_count()).unwrap_or(u32::MAX)),
        p.threads(),
        p.shared_bytes(),
        if p.shared_bytes() > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.bm,
        p.bn,
        p.bk,
        p.warps_m,
        p.warps_n,
        p.stages
    );
    let core = MmaCore {
        k,
        batch: &spec.batch,
        a_batch: &spec.a_batch,
        b: MmaB::Matrix { strides: &spec.b_batch },
        store: spec.store(),
        b_first: false,
    };
    pipeline_kernel(name, header, &core, p, wait)
}

/// The B operand of a tensor-core product.
pub(crate) enum MmaB<'a> {
    /// Stored `[N, K]` (K-contiguous, 16-byte rows: `cp.async`), element strides per batch axis.
    Matrix { strides: &'a [usize] },
    /// The implicit im2col of a conv input `[batch, Cin, T, H, W]`, gathered through registers
    /// into shared memory (zero in the padding): `super::im2col`'s gathers.
    Im2col(&'a ConvGeom),
    /// The implicit im2col of a channels-last conv input `[batch, T, H, W, Cin]` (Cin a
    /// multiple of 8), K ordered tap-major, copied by `cp.async` (`ChannelsLastGather`).
    ChannelsLast(&'a ConvGeom),
}

/// A tensor-core product: `batch` matrices `A[M, K] · B` stored through `store`.
pub(crate) struct MmaCore<'a> {
    pub k: usize,
    pub batch: &'a [usize],
    pub a_batch: &'a [usize],
    pub b: MmaB<'a>,
    pub store: Store<'a>,
    /// The kernel's first parameter is B, then A (a conv's x, w order).
    pub b_first: bool,
}

/// Generates the tensor-core kernel for `core` at `p`. Parameters: A, B (or B, A with
/// `b_first`), \[bias\], \[epilogue inputs…\], out.
pub(crate) fn mma_kernel(name: &str, header: String, core: &MmaCore, p: MmaParams) -> Result<Kernel, KernelError> {
    pipeline_kernel(name, header, core, p, p.stages.saturating_sub(2))
}

/// [`mma_kernel`] with the k-loop's `cp.async.wait_group` count `wait` (`stages - 2` is right).
fn pipeline_kernel(name: &str, header: String, core: &MmaCore, p: MmaParams, wait: u32) -> Result<Kernel, KernelError> {
    let st = &core.store;
    let ab = match st.in_dtype {
        DType::BF16 => Ty::BF16,
        DType::F16 => Ty::F16,
        other => return Err(KernelError::Unsupported(format!("mma.sync takes bf16 or f16 inputs, not {other}"))),
    };
    if !core.k.is_multiple_of(8) {
        return Err(KernelError::Unsupported(format!(
            "the tensor-core kernels need K a multiple of 8 (16-byte cp.async rows of A), got K = {}",
            core.k
        )));
    }
    let (wm, wn) = p.check()?;
    if p.shared_bytes() > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "{name}: parameters {p:?} need {} bytes of shared memory; no target allows more than {MAX_SHARED} per block",
            p.shared_bytes()
        )));
    }
    let (mu, nu, ku) = (u32_of(st.m, "M")?, u32_of(st.n, "N")?, u32_of(core.k, "K")?);
    let tiles_n = nu.div_ceil(p.bn);
    let threads = p.threads();
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (first, second) = (b.param(ParamTy::Ptr), b.param(ParamTy::Ptr));
    let (pa, pb) = if core.b_first { (second, first) } else { (first, second) };
    let ptrs = OutPtrs::declare(&mut b, st);

    // Shared layout: per stage, A [BM][BK+8] then B [BN][BK+8] (b16 elements).
    let stride = p.row_bytes();
    let a_bytes = p.bm * stride;
    let stage_bytes = a_bytes + p.bn * stride;
    let smem = b.shared(p.stages * stage_bytes);

    let tid = b.special(Special::TidX);
    let (bi, tm, tn) = block_coords(&mut b, mu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    let a_off = offset_of(&mut b, bi, core.batch, core.a_batch)?;
    let b_off = match &core.b {
        MmaB::Matrix { strides } => offset_of(&mut b, bi, core.batch, strides)?,
        MmaB::Im2col(g) | MmaB::ChannelsLast(g) => {
            b.bin(BinOp::Mul, Ty::U32, bi, imm(u32_of(g.input_elems(), "conv input")?))
        }
    };
    let pa = b.addr(pa, a_off, 2);
    let pb = b.addr(pb, b_off, 2);
    let la = Loader::new(&mut b, pa, tid, m0, (p.bm, mu, ku), p.bk, (0, stride), threads);
    let lb = match &core.b {
        MmaB::Matrix { .. } => {
            BLoad::Async(Loader::new(&mut b, pb, tid, n0, (p.bn, nu, ku), p.bk, (a_bytes, stride), threads))
        }
        MmaB::ChannelsLast(g) => {
            let offset = |b: &mut KernelBuilder, r: Reg, kc: Reg| {
                let soff = b.fma(Ty::U32, r, imm(stride), imm(a_bytes));
                b.fma(Ty::U32, kc, imm(16), soff)
            };
            BLoad::ChannelsLast(ChannelsLastGather::new(&mut b, (tid, n0), g, (p.bn, nu), (threads, p.bk), offset)?, g)
        }
        MmaB::Im2col(g) if VecRowGather::fits(g, (threads, p.bn, p.bk)) => {
            let layout = RowLayout::Padded { sbase: a_bytes, stride };
            let v = VecRowGather::new(&mut b, (tid, n0), g, nu, (threads, p.bn, p.bk), layout);
            BLoad::Im2col(StagedGather::Vec(v), g)
        }
        MmaB::Im2col(g) if gathers_rows(g, p) => {
            let layout = RowLayout::Padded { sbase: a_bytes, stride };
            let r = RowGather::new(&mut b, (tid, n0), g, nu, (threads, p.bn, p.bk), layout);
            BLoad::Im2col(StagedGather::Rows(r), g)
        }
        MmaB::Im2col(g) => {
            BLoad::Im2col(StagedGather::Element(Gather::new(&mut b, (tid, n0), g, (nu, p), (a_bytes, stride))?), g)
        }
    };

    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    // Per-lane ldmatrix row offsets within a stage.
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let wy = b.bin(BinOp::Div, Ty::U32, warp, imm(p.warps_n));
    let wx = b.bin(BinOp::Rem, Ty::U32, warp, imm(p.warps_n));
    // A (x4): lane l addresses row l % 16, k offset 8·(l / 16).
    let l16 = b.bin(BinOp::And, Ty::U32, lane, imm(15));
    let lhi = b.bin(BinOp::Shr, Ty::U32, lane, imm(4));
    let arow = b.fma(Ty::U32, wy, imm(wm), l16);
    let aoff = b.bin(BinOp::Mul, Ty::U32, arow, imm(stride));
    let a_lane = b.fma(Ty::U32, lhi, imm(16), aoff);
    // B (x2): lane l addresses n row l % 8, k offset 8·((l / 8) % 2).
    let l8 = b.bin(BinOp::And, Ty::U32, lane, imm(7));
    let lmid = b.bin(BinOp::Shr, Ty::U32, lane, imm(3));
    let lmid = b.bin(BinOp::And, Ty::U32, lmid, imm(1));
    let brow = b.fma(Ty::U32, wx, imm(wn), l8);
    let boff = b.fma(Ty::U32, brow, imm(stride), imm(a_bytes));
    let b_lane = b.fma(Ty::U32, lmid, imm(16), boff);

    let (mt, nt) = ((wm / 16) as usize, (wn / 8) as usize);
    let zero = b.imm_f32(0.0);
    let acc: Vec<[Reg; 4]> = (0..mt * nt)
        .map(|_| {
            let r = [b.reg(Ty::F32), b.reg(Ty::F32), b.reg(Ty::F32), b.reg(Ty::F32)];
            for x in r {
                b.push(Inst::Mov { dst: x, src: Operand::Reg(zero) });
            }
            r
        })
        .collect();

    // Prologue: slices 0..S-1 into stages 0..S-1, one commit group each (slices past K are
    // all zero-fill: the group count stays uniform when K has fewer slices than stages).
    let stages = p.stages;
    let ring = stages * stage_bytes;
    let k0 = b.imm_u32(0);
    for s in 0..stages - 1 {
        let at = b.bin(BinOp::Add, Ty::U32, base, imm(s * stage_bytes));
        let ks = b.imm_u32(s * p.bk);
        la.issue(&mut b, pa, ks, at, ku);
        lb.issue(&mut b, pb, ks, at, ku);
        b.cp_async_commit();
    }
    // The byte offset (from `base`) of the stage computed on (slice k); it advances by one
    // stage per step, wrapping at the ring's end. The stage written (slice k + S - 1) is the
    // one before it: the stage read in the previous step. Offsets against immediates keep the
    // ring arithmetic to one loop-carried register.
    let stage = b.imm_u32(0);
    let a_lane = b.bin(BinOp::Add, Ty::U32, base, a_lane);
    let b_lane = b.bin(BinOp::Add, Ty::U32, base, b_lane);

    let top = b.label();
    b.place(top);
    // Slice k has landed (at most S-2 younger groups pending) and every warp is done with the
    // previous step's stage, which is now written: ahead of the MMAs, so that the copy
    // overlaps them (with 2 stages it is the only one in flight).
    b.cp_async_wait(wait);
    b.bar_sync();
    let kn = b.bin(BinOp::Add, Ty::U32, k0, imm((stages - 1) * p.bk));
    let first = b.setp(Cmp::Eq, stage, imm(0));
    let back = b.bin(BinOp::Sub, Ty::U32, stage, imm(stage_bytes));
    let write = b.selp(Ty::U32, imm(ring - stage_bytes), back, first);
    let write = b.bin(BinOp::Add, Ty::U32, base, write);
    la.issue(&mut b, pa, kn, write, ku);
    // A gathered B slice is loaded into registers here and stored after the MMAs, so that
    // its global loads are in flight while the tensor cores work (the stage it goes to is
    // not read in this step; the next step's barrier publishes it).
    let gathered = lb.start(&mut b, pb, kn, write, ku);
    b.cp_async_commit();
    for kk in 0..p.bk / 16 {
        let abase = b.bin(BinOp::Add, Ty::U32, stage, a_lane);
        let bbase = b.bin(BinOp::Add, Ty::U32, stage, b_lane);
        let afrag: Vec<Vec<Reg>> = (0..mt as u32)
            .map(|i| {
                let ad = b.bin(BinOp::Add, Ty::U32, abase, imm(i * 16 * stride + kk * 32));
                b.ldmatrix(4, false, ad)
            })
            .collect();
        let bfrag: Vec<Vec<Reg>> = (0..nt as u32)
            .map(|j| {
                let ad = b.bin(BinOp::Add, Ty::U32, bbase, imm(j * 8 * stride + kk * 32));
                b.ldmatrix(2, false, ad)
            })
            .collect();
        for (i, fa) in afrag.iter().enumerate() {
            for (j, fb) in bfrag.iter().enumerate() {
                b.mma_acc(ab, [fa[0], fa[1], fa[2], fa[3]], [fb[0], fb[1]], acc[i * nt + j]);
            }
        }
    }
    lb.finish(&mut b, &gathered, write);
    let next = b.bin(BinOp::Add, Ty::U32, stage, imm(stage_bytes));
    let wrap = b.setp(Cmp::Ge, next, imm(ring));
    let next = b.selp(Ty::U32, imm(0), next, wrap);
    b.push(Inst::Mov { dst: stage, src: Operand::Reg(next) });
    let k1 = b.bin(BinOp::Add, Ty::U32, k0, imm(p.bk));
    b.push(Inst::Mov { dst: k0, src: Operand::Reg(k1) });
    let more = b.setp(Cmp::Lt, k0, imm(ku));
    b.bra_if(top, more, false);
    // The zero-fill slices past K still land in shared memory; nothing reads them.
    b.cp_async_wait_all();

    // Epilogue: lane (g, q) holds C(g, 2q..2q+1) and C(g+8, 2q..2q+1) of each 16×8 tile.
    // The block's and warp's coordinates are recomputed here rather than held across the
    // k loop (fewer live registers through it: ptxas spilled one of them otherwise).
    let (bi, tm, tn) = block_coords(&mut b, mu.div_ceil(p.bm) * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    let tid = b.special(Special::TidX);
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let wy = b.bin(BinOp::Div, Ty::U32, warp, imm(p.warps_n));
    let wx = b.bin(BinOp::Rem, Ty::U32, warp, imm(p.warps_n));
    let g = b.bin(BinOp::Shr, Ty::U32, lane, imm(2));
    let q = b.bin(BinOp::And, Ty::U32, lane, imm(3));
    let row_w = b.fma(Ty::U32, wy, imm(wm), m0);
    let row_w = b.bin(BinOp::Add, Ty::U32, row_w, g);
    let col_w = b.fma(Ty::U32, wx, imm(wn), n0);
    let col_w = b.fma(Ty::U32, q, imm(2), col_w);
    let out_base = b.bin(BinOp::Mul, Ty::U32, bi, imm(mu * nu));
    for i in 0..mt {
        for j in 0..nt {
            for (e, &v) in acc[i * nt + j].iter().enumerate() {
                let dr = (i as u32) * 16 + 8 * (e as u32 / 2);
                let dc = (j as u32) * 8 + e as u32 % 2;
                let row = b.bin(BinOp::Add, Ty::U32, row_w, imm(dr));
                let col = b.bin(BinOp::Add, Ty::U32, col_w, imm(dc));
                store_result(&mut b, st, &ptrs, out_base, (row, col), v)?;
            }
        }
    }
    Ok(b.finish())
}
