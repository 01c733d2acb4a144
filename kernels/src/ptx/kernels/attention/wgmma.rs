//! The Hopper (sm_90a, `wgmma.mma_async`) variant of flash attention (see the parent module
//! for the layouts, launch and numerics).
//!
//! **Not run on a GPU yet**: its numerics are checked only in vidrt's PTX simulator (whose
//! wgmma semantics, register A fragments and MN-major layout included, are written from the
//! PTX ISA, [`crate::ptx::sim::wgmma`]) and its text only by ptxas. It stays opt-in on real
//! CUDA (`VIDRT_CUDA_WGMMA=1`, as `matmul_wgmma`); the simulated Hopper uses it.
//!
//! - A block is one or two warpgroups, each owning 64 query rows (BQ = 64·WG). Q is staged
//!   once into shared memory and stays there; K and V tiles of BKV keys go through STAGES
//!   (1 to 3; 3 is the pipelined schedule below) shared buffers, filled with 16-byte
//!   `cp.async.cg` (zero-filled past Sq, Sk and the head dims by `src-size` 0).
//! - Shared layout: no swizzle, the ISA's core matrices (8 rows × 16 bytes). A `[R, C]` tile
//!   (rows R, C columns rounded up) stores core matrix (row block i, column block j) at byte
//!   `(j·R/8 + i)·128`, its row r at `+ 16·r`. Q `[BQ, DP]` first (DP = D rounded up to 16),
//!   then per stage K `[BKV, DP]` and V `[BKV, DVP]` (DVP = Dv rounded up to 8).
//! - S = Q·Kᵀ: DP/16 SS `wgmma` m64nBKVk16 per tile, A = Q through a K-major descriptor
//!   (warpgroup g: start `Q + 8g·128`, LBO `BQ/8·128`, SBO 128), B = K K-major (start `K`,
//!   LBO `BKV/8·128`, SBO 128), each k-step moving the starts by 2·LBO; the first k-step with
//!   `scale-d` false.
//! - Online softmax in f32 on the accumulator registers: thread (warp w of the warpgroup,
//!   lane g·4 + q) holds rows 16w + g and + 8, keys 8j + 2q, + 1 of each 8-key block j,
//!   the layout of `mma.m16n8k16`'s C, so the score, masking and softmax code is the mma
//!   variant's (rows reduced over the 4 lanes of a quad).
//! - O += P·V: P rounded to bf16/f16 registers in the wgmma register-A fragment (keys
//!   16kk..16kk+16 of the accumulator are exactly the A fragment of k-step kk, as with
//!   `mma.sync`), B = V read MN-major (`imm-trans-b` 1: V is `[keys, Dv]`, Dv contiguous)
//!   from the same core-matrix tile: start `V + kk·256`, LBO 128 (the next 8 keys), SBO
//!   `BKV/8·128` (the next 8 columns). This is FlashAttention-3's register-A form; P never
//!   goes through shared memory and V is never transposed.
//! - Synchronisation per tile with 1 or 2 stages: `cp.async.wait_group`, `fence.proxy.async`
//!   (the landed copies are generic-proxy writes), `bar.sync`; `wgmma.fence` before each
//!   batch of wgmma (the accumulators and P registers were written by ordinary
//!   instructions), `commit_group`, `wait_group 0`; a final `bar.sync` before the stage is
//!   refilled. S and P·V of one tile run in sequence.
//! - With 3 stages, FlashAttention-3's intra-warpgroup pipeline (its paper's Algorithm 2):
//!   iteration j waits for tile j's copies (`cp.async.wait_group 0`, `fence.proxy.async`,
//!   `bar.sync`: after it every thread is past tile j - 2's P·V, so tile j + 1 is issued into
//!   that buffer), then one `wgmma.fence`, S_j = Q·K_jᵀ (one group) and O += P_{j-1}·V_{j-1}
//!   (a second group, P from registers), `wait_group 1` (S_j complete), the softmax of S_j
//!   in f32 while P·V_{j-1} runs, `wait_group 0`, O rescaled by the correction and P_j
//!   rounded into the P registers (P·V_{j-1}'s operand until that wait). Tile 0's S and
//!   softmax come before the loop and the last tile's P·V after it. ptxas would hoist the
//!   `wait_group 0` above the softmax's `ex2`s (no register dependence orders them) and
//!   serialise the two; a store of the row sums to shared memory just before the wait
//!   ([`anchor_softmax`], 8 bytes per thread after the stages) keeps them in order, as the
//!   SASS check in `tests/ptxas.rs` verifies.
//! - Requirements ([`wgmma_unsupported`]): bf16/f16; D and Dv multiples of 8 (whole 16-byte
//!   chunks), Dv ≤ 256 (the wgmma N); any Sq, Sk, bias and mask. Otherwise lowering takes
//!   [`super::attention_mma`].
//! - Tunables (generation time): WG (1 or 2 warpgroups), BKV (keys per tile, the S wgmma's
//!   N: a multiple of 16 up to 128) and STAGES; [`wgmma_param_space`], text form
//!   `wg=..,bkv=..,stages=..`.

use vidrt_ir::DType;

use super::{
    and, block_setup, fragment_softmax, imm, inv_sum, kv_stage_step, round_up, set, st_if, warp_reduce, when, AttnSpec,
    MAX_SHARED,
};
use crate::ptx::builder::{BinOp, Cmp, CpCache, Inst, Kernel, KernelBuilder, Operand, Reg, Special, Ty};
use crate::ptx::builder::{Space, STATIC_SHARED_MAX};
use crate::ptx::kernels::gemm_wgmma::descriptor;
use crate::ptx::KernelError;

/// Parameters of the wgmma variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgmmaAttnParams {
    /// Warpgroups per block (1 or 2), 64 query rows each.
    pub wg: u32,
    /// Keys per tile (a multiple of 16 up to 128): the N of the S = Q·Kᵀ wgmma.
    pub bkv: u32,
    /// Shared-memory stages of the K/V pipeline: 1 or 2 with S and P·V of a tile in sequence,
    /// 3 for FlashAttention-3's intra-warpgroup pipeline (tile j's S = Q·Kᵀ issued with tile
    /// j - 1's P·V, the softmax of S_j while P·V_{j-1} runs; the third buffer holds tile j + 1
    /// loading meanwhile). With `producer`, the depth (2 or 3) of the K ring and of the V ring.
    pub stages: u32,
    /// FlashAttention-3's warp-specialized form (the `wgmma_tma` module): one more warpgroup
    /// copies Q, K and V by TMA into 128-byte-swizzled stages, released through mbarriers.
    pub producer: bool,
    /// With a producer and two computing warpgroups: FlashAttention-3's ping-pong, the
    /// warpgroups issuing their wgmma batches in turn (named barriers), so that one's softmax
    /// runs while the other's matrix products do.
    pub pingpong: bool,
}

impl WgmmaAttnParams {
    /// Threads per block: the computing warpgroups, and the producer's.
    pub fn threads(self) -> u32 {
        128 * (self.wg + u32::from(self.producer))
    }

    /// Query rows per block.
    pub fn bq(self) -> u32 {
        64 * self.wg
    }

    pub fn check(self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("attention_wgmma parameters {self:?}: {why}")));
        if !matches!(self.wg, 1 | 2) {
            return bad("warpgroups must be 1 or 2");
        }
        if self.bkv == 0 || !self.bkv.is_multiple_of(16) || self.bkv > 128 {
            return bad("BKV must be a multiple of 16 in 16..=128");
        }
        if !matches!(self.stages, 1..=3) {
            return bad("stages must be 1, 2 or 3");
        }
        if self.producer && self.stages == 1 {
            return bad("a producer point needs 2 or 3 stages (the K and V rings)");
        }
        if self.pingpong && !(self.producer && self.wg == 2) {
            return bad("ping-pong takes a producer point with two computing warpgroups");
        }
        Ok(())
    }

    /// Shared bytes for head dims rounded up to `dp` (Q, K) and `dvp` (V); with 3 stages the
    /// softmax anchors ([`anchor_softmax`]) last.
    fn shared_bytes(self, dp: u32, dvp: u32) -> u32 {
        let q = self.bq() * dp * 2;
        q + self.stages * self.bkv * (dp + dvp) * 2 + if self.stages == 3 { ANCHOR_BYTES * self.threads() } else { 0 }
    }
}

impl crate::ptx::tune::Point for WgmmaAttnParams {
    const NAMES: &'static [&'static str] = &["wg", "bkv", "stages", "producer", "pingpong"];
    /// `producer` and `pingpong` came later: texts without them are the points they always were.
    const DEFAULTS: &'static [(&'static str, u32)] = &[("producer", 0), ("pingpong", 0)];

    fn values(self) -> Vec<u32> {
        vec![self.wg, self.bkv, self.stages, u32::from(self.producer), u32::from(self.pingpong)]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [wg, bkv, stages, pr @ (0 | 1), pp @ (0 | 1)] => {
                Some(WgmmaAttnParams { wg, bkv, stages, producer: pr == 1, pingpong: pp == 1 })
            }
            _ => None,
        }
    }
}

/// Every wgmma parameter point, in the lowering's order of preference (the tuning space of
/// `attention_wgmma`): FlashAttention-3's schedule first, two warpgroups (its 128-row tile)
/// with the intra-warpgroup pipeline over 64-key tiles (3 stages: 64 KiB at head dim 64,
/// 128 KiB at 128), then one warpgroup so pipelined; one warpgroup with 64-key double-buffered
/// tiles (static 40 KiB at head dim 64, dynamic 80 KiB at 128), two warpgroups so, a
/// single-stage point, a small 32-key tile and the large 128-key tile. Then the producer
/// (TMA, warp-specialized) points: two computing warpgroups over 64- and 128-key tiles with
/// K and V rings of 2 (FlashAttention-3's hdim-128 shape: 160 KiB at 128 keys), 64 keys with
/// rings of 3, one computing warpgroup over 128 keys; last the two-warpgroup 128- and 64-key
/// points with ping-pong. The order is not measured yet (no GPU run): `vidrt tune` picks by
/// timing, and the heuristic stays on the first point.
pub fn wgmma_param_space() -> Vec<WgmmaAttnParams> {
    let p = |wg, bkv, stages| WgmmaAttnParams { wg, bkv, stages, producer: false, pingpong: false };
    let t = |wg, bkv, stages| WgmmaAttnParams { producer: true, ..p(wg, bkv, stages) };
    let pp = |bkv| WgmmaAttnParams { pingpong: true, ..t(2, bkv, 2) };
    vec![
        p(2, 64, 3),
        p(1, 64, 3),
        p(1, 64, 2),
        p(2, 64, 2),
        p(1, 64, 1),
        p(1, 32, 2),
        p(2, 128, 2),
        t(2, 64, 2),
        t(2, 128, 2),
        t(2, 64, 3),
        t(1, 128, 2),
        pp(128),
        pp(64),
    ]
}

/// (grid, block) of the wgmma variant.
pub fn wgmma_launch_dims(s: &AttnSpec, p: WgmmaAttnParams) -> (u32, u32) {
    (super::grid(s, p.bq()), p.threads())
}

/// Why `s` (with inputs of `dtype`) cannot run on the wgmma kernel, or `None` when it can.
pub fn wgmma_unsupported(s: &AttnSpec, dtype: DType) -> Option<&'static str> {
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Some("attention_wgmma takes bf16 or f16 inputs");
    }
    if !s.d.is_multiple_of(8) || !s.dv.is_multiple_of(8) {
        return Some("attention_wgmma needs head dims that are multiples of 8 (whole 16-byte cp.async chunks)");
    }
    if s.dv > 256 {
        return Some("attention_wgmma needs Dv ≤ 256 (the wgmma N of P·V)");
    }
    None
}

/// A `rows × cols_p` b16 tile of a `[.., total, .., cols]` tensor (row stride `stride`
/// elements) copied with 16-byte `cp.async.cg` into the core-matrix layout (module doc) at a
/// shared address, zero past the tensor (`src-size` 0).
struct CoreTile {
    ptr: Reg,
    rows: u32,
    total: u32,
    stride: u32,
    cols: u32,
    cols_p: u32,
}

impl CoreTile {
    /// Chunk c: row `8·(c / (8·CB)) + c % 8`, column block `(c / 8) % CB` (CB = cols_p / 8):
    /// eight consecutive threads fill one 128-byte core matrix.
    fn issue(&self, b: &mut KernelBuilder, base: Reg, row0: Reg, saddr: Reg, (tid, threads): (Reg, u32)) {
        let cb = self.cols_p / 8;
        let total = self.rows * cb;
        for i in 0..total.div_ceil(threads) {
            let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
            let live = ((i + 1) * threads > total).then(|| b.setp(Cmp::Lt, c, imm(total)));
            when(b, live, |b| {
                let r8 = b.bin(BinOp::And, Ty::U32, c, imm(7));
                let c8 = b.bin(BinOp::Shr, Ty::U32, c, imm(3));
                let kb = b.bin(BinOp::Rem, Ty::U32, c8, imm(cb));
                let rb = b.bin(BinOp::Div, Ty::U32, c8, imm(cb));
                let r = b.fma(Ty::U32, rb, imm(8), r8);
                let grow = b.bin(BinOp::Add, Ty::U32, row0, r);
                let rok = b.setp(Cmp::Lt, grow, imm(self.total));
                let col = b.bin(BinOp::Mul, Ty::U32, kb, imm(8));
                let cok = (self.cols_p > self.cols).then(|| b.setp(Cmp::Lt, col, imm(self.cols)));
                let ok = and(b, Some(rok), cok).unwrap_or(rok);
                let idx = b.fma(Ty::U32, grow, imm(self.stride), base);
                let idx = b.bin(BinOp::Add, Ty::U32, idx, col);
                // Core matrix (rb, kb) at (kb·rows/8 + rb)·128, row r8 at +16·r8.
                let cm = b.fma(Ty::U32, kb, imm(self.rows / 8), rb);
                let so = b.fma(Ty::U32, cm, imm(128), saddr);
                let so = b.fma(Ty::U32, r8, imm(16), so);
                // Outside the tensor nothing is read and the source is the tensor's base.
                let a = b.addr(self.ptr, idx, 2);
                let src = b.selp(Ty::U64, a, self.ptr, ok);
                let n = b.selp(Ty::U32, imm(16), imm(0), ok);
                b.cp_async(CpCache::Cg, so, src, 16, Some(Operand::Reg(n)));
            });
        }
    }
}

/// The wgmma flash-attention kernel: bf16 or f16 q, k, v, bias (`dtype`), any mask dtype,
/// output in `dtype` (see [`wgmma_unsupported`] for the head dims it takes).
pub fn attention_wgmma(name: &str, s: &AttnSpec, dtype: DType, p: WgmmaAttnParams) -> Result<Kernel, KernelError> {
    if let Some(why) = wgmma_unsupported(s, dtype) {
        return Err(KernelError::Unsupported(format!("{why} (D = {}, Dv = {}, {dtype})", s.d, s.dv)));
    }
    let ab = if dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    p.check()?;
    if p.producer {
        return super::wgmma_tma::attention_wgmma_tma(name, s, dtype, p);
    }
    let dt = s.dims()?;
    let (threads, bq, bkv) = (p.threads(), p.bq(), p.bkv);
    let dp = round_up(dt.d, 16);
    let dvp = round_up(dt.dv, 8);
    let bytes = p.shared_bytes(dp, dvp);
    if bytes > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "attention_wgmma {p:?} needs {bytes} bytes of shared memory for D = {}, Dv = {}",
            dt.d, dt.dv
        )));
    }
    let header = format!(
        "attention_flash wgmma {name}: {}\nwgmma.mma_async f32 accumulation: S = Q.K^T m64n{bkv}k16 (Q, K from \
         shared memory, K-major no-swizzle core matrices), O += P.V m64n{dvp}k16 (P in registers, V MN-major); \
         cp.async K/V loads, online softmax in f32 (ex2.approx), P rounded to {dtype}; scale = {}; minimum sm_90a; \
         NOT YET RUN ON A GPU (checked in vidrt's simulator and by ptxas)\n1-D grid of B*H*ceil(Sq/BQ) = {} blocks \
         of {threads} threads ({} warpgroups), {bytes} B of {} shared memory; params wg={} (BQ={bq}) BKV={bkv} \
         stages={}",
        s.describe(&dtype.to_string()),
        s.scale,
        wgmma_launch_dims(s, p).0,
        p.wg,
        if bytes > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.wg,
        p.stages,
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let smem = b.shared(bytes);
    let (pq, pk, pv, po, blk) = block_setup(&mut b, s, dt, dtype, (bq, bkv), None);
    let tid = b.special(Special::TidX);
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let wg = b.bin(BinOp::Shr, Ty::U32, tid, imm(7));
    let sbase = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, sbase, imm(smem));
    let (hd, hdv) = (dt.h * dt.d, dt.h * dt.dv);
    let q_bytes = bq * dp * 2;
    let k_bytes = bkv * dp * 2;
    let stage_bytes = k_bytes + bkv * dvp * 2;
    let qtile = CoreTile { ptr: pq, rows: bq, total: dt.sq, stride: hd, cols: dt.d, cols_p: dp };
    let ktile = CoreTile { ptr: pk, rows: bkv, total: dt.sk, stride: hd, cols: dt.d, cols_p: dp };
    let vtile = CoreTile { ptr: pv, rows: bkv, total: dt.sk, stride: hdv, cols: dt.dv, cols_p: dvp };

    // Descriptor constants (bytes): Q as A (K-major), K as B (K-major), V as B (MN-major).
    let (lbo_q, lbo_k) = (bq / 8 * 128, bkv / 8 * 128);
    let (lbo_v, sbo_v) = (128, bkv / 8 * 128);
    let q_wg = b.fma(Ty::U32, wg, imm(8 * 128), base);
    let dq = descriptor(&mut b, q_wg, lbo_q, 128);

    let (row_a, row_b, q2) = fragment_rows(&mut b, lane, warp, blk.q0);
    let Acc { o, sacc, m, l, zero, acc_on, acc_off } = Acc::new(&mut b, dvp, bkv);

    let k0 = b.imm_u32(0);
    let kv0 = b.bin(BinOp::Add, Ty::U32, base, imm(q_bytes));
    let issue_kv = |b: &mut KernelBuilder, k0: Reg, at: Reg| {
        ktile.issue(b, blk.k_base, k0, at, (tid, threads));
        let vs = b.bin(BinOp::Add, Ty::U32, at, imm(k_bytes));
        vtile.issue(b, blk.v_base, k0, vs, (tid, threads));
    };
    // S = Q·Kᵀ for the BKV keys of the tile at `stage` (the first k-step overwrites S),
    // committed as one group.
    let s_wgmma = |b: &mut KernelBuilder, stage: Reg| {
        let dk = descriptor(b, stage, lbo_k, 128);
        for kk in 0..u64::from(dp / 16) {
            let (da, db) = if kk == 0 {
                (dq, dk)
            } else {
                let x = b.bin(BinOp::Add, Ty::U64, dq, Operand::Int((kk * u64::from((2 * lbo_q) >> 4)) as i64));
                let y = b.bin(BinOp::Add, Ty::U64, dk, Operand::Int((kk * u64::from((2 * lbo_k) >> 4)) as i64));
                (x, y)
            };
            b.wgmma(ab, &sacc, da, db, if kk == 0 { acc_off } else { acc_on });
        }
        b.wgmma_commit();
    };
    // O += P·V with the V of the tile at `stage`: keys 16kk..16kk+16 of P (blocks 2kk,
    // 2kk + 1) are the A fragment `pa[kk]` of k-step kk; one group.
    let pv_wgmma = |b: &mut KernelBuilder, stage: Reg, pa: &[[Reg; 4]]| {
        let vs = b.bin(BinOp::Add, Ty::U32, stage, imm(k_bytes));
        let dv = descriptor(b, vs, lbo_v, sbo_v);
        for (kk, fa) in pa.iter().enumerate() {
            let db = if kk == 0 {
                dv
            } else {
                // 16 keys = two core matrices along K, 2·LBO bytes.
                b.bin(BinOp::Add, Ty::U64, dv, Operand::Int(kk as i64 * i64::from((2 * lbo_v) >> 4)))
            };
            b.wgmma_rs(ab, &o, *fa, db, acc_on, true);
        }
        b.wgmma_commit();
    };
    // Scores of the tile at keys k0.., then the online softmax of rows a (elements 0, 1 of
    // each 8-key block) and b (2, 3): P packed into `pa`, and the rows' corrections of O.
    let softmax = |b: &mut KernelBuilder, pa: &[[Reg; 4]]| -> [Reg; 2] {
        softmax_to_p(b, &blk.scores, &sacc, (k0, q2, row_a, row_b), (m, l, zero), (pa, ab))
    };
    let rescale = |b: &mut KernelBuilder, corr: [Reg; 2]| rescale(b, &o, corr);
    let p_regs = |b: &mut KernelBuilder| p_regs(b, bkv);
    let pa = p_regs(&mut b);
    let advance = |b: &mut KernelBuilder| {
        b.push(Inst::Bin { op: BinOp::Add, dst: k0, a: Operand::Reg(k0), b: imm(bkv) });
    };

    if p.stages == 3 {
        // FlashAttention-3's intra-warpgroup pipeline: tile j's S = Q·K_jᵀ and tile j - 1's
        // O += P·V_{j-1} are issued back to back, and the softmax of S_j runs while P·V_{j-1}
        // is in flight. Three K/V buffers: tile j (K read now), tile j - 1 (its V read now)
        // and tile j + 1 (loading during the iteration).
        let ring = [0, 1, 2].map(|i| b.bin(BinOp::Add, Ty::U32, kv0, imm(i * stage_bytes)));
        // This thread's softmax anchor, after the three stages.
        let anchor = b.bin(BinOp::Add, Ty::U32, kv0, imm(3 * stage_bytes));
        let anchor = b.fma(Ty::U32, tid, imm(ANCHOR_BYTES), anchor);
        let (prev, cur, next) = (b.mov(Ty::U32, ring[2]), b.mov(Ty::U32, ring[0]), b.mov(Ty::U32, ring[1]));
        let rotate = |b: &mut KernelBuilder| {
            let t = b.mov(Ty::U32, prev);
            set(b, prev, cur);
            set(b, cur, next);
            set(b, next, t);
        };
        // Tile j lands (the only pending copies), and every thread is past tile j - 2's
        // P·V, so its buffer (`next`) is free: tile j + 1 starts loading into it.
        let land_and_prefetch = |b: &mut KernelBuilder| {
            b.cp_async_wait(0);
            b.fence_proxy_async();
            b.bar_sync();
            let k1 = b.bin(BinOp::Add, Ty::U32, k0, imm(bkv));
            let more = b.setp(Cmp::Lt, k1, imm(dt.sk));
            when(b, Some(more), |b| issue_kv(b, k1, next));
            b.cp_async_commit();
        };
        qtile.issue(&mut b, blk.q_base, blk.q0, base, (tid, threads));
        issue_kv(&mut b, k0, cur);
        b.cp_async_commit();
        // Tile 0: S, softmax; its P·V waits for the loop (or the tail).
        land_and_prefetch(&mut b);
        b.wgmma_fence();
        s_wgmma(&mut b, cur);
        b.wgmma_wait(0);
        let corr = softmax(&mut b, &pa);
        rescale(&mut b, corr);
        rotate(&mut b);
        advance(&mut b);
        let tail = b.label();
        let done = b.setp(Cmp::Ge, k0, imm(dt.sk));
        b.bra_if(tail, done, false);
        let top = b.label();
        b.place(top);
        b.no_unroll();
        land_and_prefetch(&mut b);
        // One fence covers both: S was read and P, O written by ordinary instructions.
        b.wgmma_fence();
        s_wgmma(&mut b, cur);
        pv_wgmma(&mut b, prev, &pa);
        // S_j is complete; P·V_{j-1} (reading `pa` and accumulating O) is still running.
        b.wgmma_wait(1);
        // The softmax of S_j in f32 while P·V_{j-1} runs; its rounding into the P fragments
        // (still P·V_{j-1}'s operand) after the wait.
        let (probs, corr) = softmax_f32(&mut b, &blk.scores, &sacc, (k0, q2, row_a, row_b), (m, l, zero));
        anchor_softmax(&mut b, anchor, l);
        b.wgmma_wait(0);
        rescale(&mut b, corr);
        pack_p(&mut b, &probs, (&pa, ab));
        rotate(&mut b);
        advance(&mut b);
        let more = b.setp(Cmp::Lt, k0, imm(dt.sk));
        b.bra_if(top, more, false);
        // The last tile's P·V (its V is `prev` after the rotation).
        b.place(tail);
        b.wgmma_fence();
        pv_wgmma(&mut b, prev, &pa);
        b.wgmma_wait(0);
        b.cp_async_wait_all();
    } else {
        let stage = b.mov(Ty::U32, kv0);
        let other = b.bin(BinOp::Add, Ty::U32, kv0, imm(stage_bytes));
        // Q (and with two stages the first K/V tile) in the first commit group.
        qtile.issue(&mut b, blk.q_base, blk.q0, base, (tid, threads));
        if p.stages == 2 {
            issue_kv(&mut b, k0, stage);
        }
        b.cp_async_commit();
        let top = b.label();
        b.place(top);
        b.no_unroll();
        kv_stage_step(&mut b, p.stages == 2, (k0, bkv, dt.sk), (stage, other), &issue_kv);
        b.fence_proxy_async();
        b.bar_sync();
        b.wgmma_fence();
        s_wgmma(&mut b, stage);
        b.wgmma_wait(0);
        let corr = softmax(&mut b, &pa);
        rescale(&mut b, corr);
        b.wgmma_fence();
        pv_wgmma(&mut b, stage, &pa);
        b.wgmma_wait(0);
        // Every warpgroup's wgmma has read this stage before it is refilled.
        b.bar_sync();
        if p.stages == 2 {
            let tmp = b.mov(Ty::U32, stage);
            set(&mut b, stage, other);
            set(&mut b, other, tmp);
        }
        advance(&mut b);
        let more = b.setp(Cmp::Lt, k0, imm(dt.sk));
        b.bra_if(top, more, false);
        b.cp_async_wait_all();
    }

    store_rows(&mut b, (&o, l), (row_a, row_b, q2), (dt, &blk, po, ab));
    Ok(b.finish())
}

/// Bytes per computing thread of the softmax anchors.
pub(super) const ANCHOR_BYTES: u32 = 8;

/// Keeps the softmax before the `wgmma.wait_group 0` that follows it in the pipelined
/// schedules: this thread's two running row sums (which depend on every exponential of the
/// tile) stored to its own 8 bytes of shared memory at `at`, just before the wait. ptxas
/// otherwise hoists the wait above the `ex2`s (nothing orders them: the wait has no register
/// dependence on them), and the tensor cores sit idle during the exponentials. ptxas keeps
/// shared stores in order with `wgmma.wait_group`; the SASS check in `tests/ptxas.rs` holds
/// it to that. The bytes are never read.
pub(super) fn anchor_softmax(b: &mut KernelBuilder, at: Reg, l: [Reg; 2]) {
    b.st_vec(Space::Shared, at, vec![l[0], l[1]]);
}

/// This lane's two rows of the accumulators and its column offset: lane (g, q) of warp `warp`
/// (of the computing threads) holds rows 16·warp + g and + 8 (from query row `q0`), columns
/// 2q, 2q + 1 of each 8-wide block.
pub(super) fn fragment_rows(b: &mut KernelBuilder, lane: Reg, warp: Reg, q0: Reg) -> (Reg, Reg, Reg) {
    let g = b.bin(BinOp::Shr, Ty::U32, lane, imm(2));
    let q = b.bin(BinOp::And, Ty::U32, lane, imm(3));
    let row_a = b.fma(Ty::U32, warp, imm(16), q0);
    let row_a = b.bin(BinOp::Add, Ty::U32, row_a, g);
    let row_b = b.bin(BinOp::Add, Ty::U32, row_a, imm(8));
    let q2 = b.bin(BinOp::Mul, Ty::U32, q, imm(2));
    (row_a, row_b, q2)
}

/// A computing thread's flash-attention state: O (`n` columns, zeroed), S (`bkv` keys), the
/// running max and sum of its two rows, 0.0, and the `scale-d` predicates (on, off).
pub(super) struct Acc {
    pub o: Vec<Reg>,
    pub sacc: Vec<Reg>,
    pub m: [Reg; 2],
    pub l: [Reg; 2],
    pub zero: Reg,
    pub acc_on: Reg,
    pub acc_off: Reg,
}

impl Acc {
    pub fn new(b: &mut KernelBuilder, n: u32, bkv: u32) -> Acc {
        let zero = b.imm_f32(0.0);
        let o: Vec<Reg> = (0..n / 2)
            .map(|_| {
                let r = b.reg(Ty::F32);
                set(b, r, zero);
                r
            })
            .collect();
        let sacc: Vec<Reg> = (0..bkv / 2).map(|_| b.reg(Ty::F32)).collect();
        let m = [b.imm_f32(f32::NEG_INFINITY), b.imm_f32(f32::NEG_INFINITY)];
        let l = [b.imm_f32(0.0), b.imm_f32(0.0)];
        let one = b.imm_u32(1);
        let acc_on = b.setp(Cmp::Ne, one, imm(0));
        let acc_off = b.setp(Cmp::Eq, one, imm(0));
        Acc { o, sacc, m, l, zero, acc_on, acc_off }
    }
}

/// The online softmax of the S accumulators `sacc` (keys k0.., this lane's rows a and b:
/// elements 0, 1 and 2, 3 of each 8-key block) with P rounded to `ab` and packed into the
/// wgmma register-A fragments `pa` (keys 16kk..16kk+16 are k-step kk's fragment, as with
/// `mma.sync`); returns the rows' corrections of O.
pub(super) fn softmax_to_p(
    b: &mut KernelBuilder,
    scores: &super::Scores,
    sacc: &[Reg],
    (k0, q2, row_a, row_b): (Reg, Reg, Reg, Reg),
    (m, l, zero): ([Reg; 2], [Reg; 2], Reg),
    (pa, ab): (&[[Reg; 4]], Ty),
) -> [Reg; 2] {
    let (probs, corr) = softmax_f32(b, scores, sacc, (k0, q2, row_a, row_b), (m, l, zero));
    pack_p(b, &probs, (pa, ab));
    corr
}

/// The f32 half of [`softmax_to_p`]: the probabilities (in the accumulator layout) and the
/// rows' corrections of O.
pub(super) fn softmax_f32(
    b: &mut KernelBuilder,
    scores: &super::Scores,
    sacc: &[Reg],
    (k0, q2, row_a, row_b): (Reg, Reg, Reg, Reg),
    (m, l, zero): ([Reg; 2], [Reg; 2], Reg),
) -> (Vec<[Reg; 4]>, [Reg; 2]) {
    let tiles: Vec<[Reg; 4]> = sacc.chunks_exact(4).map(|a| [a[0], a[1], a[2], a[3]]).collect();
    fragment_softmax(b, scores, &tiles, (k0, q2), (row_a, row_b), (m, l), zero)
}

/// The other half: the probabilities rounded to `ab` and packed into the register-A
/// fragments `pa`.
pub(super) fn pack_p(b: &mut KernelBuilder, probs: &[[Reg; 4]], (pa, ab): (&[[Reg; 4]], Ty)) {
    for (kk, fa) in pa.iter().enumerate() {
        let (p0, p1) = (probs[2 * kk], probs[2 * kk + 1]);
        for (dst, (x, y)) in fa.iter().zip([(p0[0], p0[1]), (p0[2], p0[3]), (p1[0], p1[1]), (p1[2], p1[3])]) {
            b.push(Inst::CvtPack { ty: ab, dst: *dst, hi: y, lo: x });
        }
    }
}

/// O *= the correction of its row (elements 0, 1 of each 8-column block are row a's).
pub(super) fn rescale(b: &mut KernelBuilder, o: &[Reg], corr: [Reg; 2]) {
    for (i, &x) in o.iter().enumerate() {
        b.push(Inst::Bin { op: BinOp::Mul, dst: x, a: Operand::Reg(x), b: Operand::Reg(corr[(i % 4) / 2]) });
    }
}

/// The register-A fragments of P for a tile of `bkv` keys (four b32 per 16 keys).
pub(super) fn p_regs(b: &mut KernelBuilder, bkv: u32) -> Vec<[Reg; 4]> {
    (0..bkv / 16).map(|_| [0; 4].map(|_| b.reg(Ty::U32))).collect()
}

/// The epilogue: O / l per row (`l` this lane's partial sums, reduced over the quad), stored
/// in the input dtype `ab` (pairs packed: Dv is even) for rows below Sq, the accumulator's
/// 8-column blocks past Dv skipped (Dv is a multiple of 8: every block is wholly inside or
/// outside the row).
pub(super) fn store_rows(
    b: &mut KernelBuilder,
    (o, l): (&[Reg], [Reg; 2]),
    (row_a, row_b, q2): (Reg, Reg, Reg),
    (dt, blk, po, ab): (super::Dims, &super::Block, Reg, Ty),
) {
    let inv: Vec<Reg> = (0..2)
        .map(|half| {
            let lt = warp_reduce(b, l[half], BinOp::Add, &[1, 2]);
            inv_sum(b, lt)
        })
        .collect();
    let hdv = dt.h * dt.dv;
    for (half, &row) in [row_a, row_b].iter().enumerate() {
        let rok = b.setp(Cmp::Lt, row, imm(dt.sq));
        let ob = b.fma(Ty::U32, row, imm(hdv), blk.o_base);
        let ob = b.bin(BinOp::Add, Ty::U32, ob, q2);
        for (nt, acc) in o.chunks_exact(4).enumerate().take_while(|(nt, _)| (*nt as u32) * 8 < dt.dv) {
            let c0 = nt as u32 * 8;
            let x0 = b.bin(BinOp::Mul, Ty::F32, acc[2 * half], inv[half]);
            let x1 = b.bin(BinOp::Mul, Ty::F32, acc[2 * half + 1], inv[half]);
            let i = b.bin(BinOp::Add, Ty::U32, ob, imm(c0));
            let w = b.cvt_pack(ab, x0, x1);
            let ad = b.addr(po, i, 2);
            st_if(b, Space::Global, ad, vec![w], Some(rok));
        }
    }
}
