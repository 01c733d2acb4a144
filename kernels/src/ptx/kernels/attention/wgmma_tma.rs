//! The warp-specialized, TMA-fed form of [`super::attention_wgmma`] (its `producer` points):
//! FlashAttention-3's producer/consumer structure on vidrt's wgmma flash attention. Minimum
//! SM: sm_90a.
//!
//! **Not run on a GPU yet**: checked only in vidrt's PTX simulator (wgmma, mbarrier, TMA and
//! `setmaxnreg` semantics written from the PTX ISA, [`crate::ptx::sim`]) and by ptxas.
//!
//! - Parameters: tensor maps of q, k and v ([`tensor_maps`]: each a 4-D map `[X, H, S, B]`,
//!   X the head dim, innermost first, with a box of 64 × 1 × rows × 1 and the 128-byte
//!   swizzle; the launcher fills in the tensor's address), then the bias and mask if any, and out, as the
//!   other variants. The per-batch S dimension makes the TMA zero-fill keys and queries past
//!   Sk and Sq (never the next batch item's rows) and the head dims past D and Dv.
//! - Block: warpgroup 0 is the producer, warpgroups 1..=WG compute (64 query rows each, BQ
//!   = 64·WG). With two computing warpgroups (384 threads, 168 registers each at entry) the
//!   producer lowers its registers to 40 and the computing warpgroups raise theirs to 232
//!   (`setmaxnreg`, the split of `matmul_wgmma_tma`).
//! - Shared memory (1024-byte aligned): Q `[D/64 panels][BQ rows][128 B]`, then STAGES K
//!   stages `[D/64][BKV][128 B]`, STAGES V stages `[Dv/64][BKV][128 B]` (head dims rounded
//!   up to 64), then the mbarriers: `q_full`, and per stage `full_k`, `full_v` (one arrival:
//!   the producer's `expect_tx`, completed by its copies) and `empty_k`, `empty_v` (one
//!   arrival from lane 0 of every computing warp).
//! - Producer (thread 0): Q's panels on `q_full`, then K_0, and for j = 1.. K_j and V_{j-1},
//!   then V_last, each into its ring's next stage once the computing warps released that
//!   stage's previous round (`empty`, the other parity). The other 127 threads exit at once;
//!   thread 0 after the last copy.
//! - Computing warpgroups: FlashAttention-3's intra-warpgroup pipeline of the cp.async
//!   3-stage form. Tile 0: S_0 = Q·K_0ᵀ, K_0's stage released, its softmax. Iteration j:
//!   wait for K_j and V_{j-1}; one `wgmma.fence`; S_j (one group, Q and K K-major through
//!   128-byte-swizzle descriptors, the k-steps moving the start 32 bytes inside a panel and a
//!   panel's bytes between panels) and O += P_{j-1}·V_{j-1} (a second group, P in registers,
//!   V MN-major through a 128-byte-swizzle descriptor: LBO the V panel's BKV·128 bytes, SBO
//!   1024, a k-step of 16 keys moving the start 2048 bytes); `wait_group 1` (S_j complete:
//!   K_j's stage released), the softmax of S_j in f32 while P·V_{j-1} runs (held before the
//!   next wait by the softmax anchor, [`super::wgmma`]'s `anchor_softmax`: 8 bytes per
//!   computing thread after the mbarriers), `wait_group 0` (V_{j-1}'s stage released), O
//!   rescaled and P_j rounded into the P registers. After the loop the last tile's P·V. So with rings of 2 the
//!   copies of K_{j+1} and V_j are in flight during iteration j. The TMA writes and the wgmma
//!   reads are both async proxy: no `fence.proxy.async`. No block-wide barrier after the
//!   producer's threads exit.
//! - The P·V wgmma's N is Dv rounded up to 64 (whole swizzle panels; the columns past Dv are
//!   the TMA's zeros and are not stored); S = Q·Kᵀ runs ceil(D/16) k-steps.
//! - Ping-pong points (`pingpong`, two computing warpgroups): FlashAttention-3's
//!   inter-warpgroup schedule. Each warpgroup issues every batch of wgmma (tile 0's S, each
//!   iteration's S_j and P·V_{j-1}, the last P·V) after `bar.sync` on its own named barrier
//!   and hands the turn to the other with `bar.arrive` on the other's (256 threads: one
//!   warpgroup waiting, the other arriving); warpgroup 1's arrival before its first batch lets
//!   warpgroup 0 go first. So the tensor cores take the two warpgroups' batches in turn, and
//!   one warpgroup's softmax overlaps the other's matrix products.
//! - Scores, masking, softmax and the epilogue are the cp.async variant's.

use vidrt_ir::DType;

use super::wgmma::{
    anchor_softmax, fragment_rows, p_regs, pack_p, rescale, softmax_f32, softmax_to_p, store_rows, wgmma_launch_dims,
    Acc, WgmmaAttnParams, ANCHOR_BYTES,
};
use super::{block_setup, imm, set, AttnSpec, MAX_SHARED};
use crate::ptx::builder::{BinOp, Cmp, Kernel, KernelBuilder, Operand, Reg, Special, Ty, STATIC_SHARED_MAX};
use crate::ptx::kernels::gemm_wgmma::swizzled_descriptor;
use crate::ptx::kernels::gemm_wgmma_tma::{advance_ring, producer_warpgroup, COMPUTING_REGS, PRODUCER_REGS};
use crate::ptx::tma::{TensorMapDesc, TmaDtype, TmaSwizzle};
use crate::ptx::KernelError;

/// 64-element panels (one 128-byte swizzled row each) of a head dim.
fn panels(x: u32) -> u32 {
    x.div_ceil(64)
}

/// The tensor maps of q, k and v for `s` at `p` (address 0: the launcher's is used): 4-D
/// `[X, H, S, B]` (innermost first, X the head dim), boxes of 64 × 1 × BQ (q) or BKV (k, v)
/// × 1, the 128-byte swizzle.
pub fn tensor_maps(s: &AttnSpec, dtype: DType, p: WgmmaAttnParams) -> [TensorMapDesc; 3] {
    let dt = if dtype == DType::F16 { TmaDtype::F16 } else { TmaDtype::BF16 };
    let map = |x: usize, seq: usize, rows: u32| {
        let (x, h, seq, batch) = (x as u64, s.heads as u64, seq as u64, s.batch as u64);
        TensorMapDesc {
            dtype: dt,
            rank: 4,
            address: 0,
            dims: [x, h, seq, batch, 1],
            strides: [2 * x, 2 * x * h, 2 * x * h * seq, 0],
            box_dims: [64, 1, rows, 1, 1],
            swizzle: TmaSwizzle::B128,
        }
    };
    [map(s.d, s.sq, p.bq()), map(s.d, s.sk, p.bkv), map(s.dv, s.sk, p.bkv)]
}

/// A 128-byte-swizzle MN-major matrix descriptor (swizzle mode 1) for the operand at shared
/// address `addr`: LBO `lbo` between 64-element panels, SBO 1024 between 8-row groups (see
/// [`crate::ptx::sim::wgmma::Descriptor::element_mn`]).
fn mn_swizzled_descriptor(b: &mut KernelBuilder, addr: Reg, lbo: u32) -> Reg {
    let enc = b.bin(BinOp::Shr, Ty::U32, addr, imm(4));
    let enc = b.bin(BinOp::And, Ty::U32, enc, imm(0x3FFF));
    let lo = b.bin(BinOp::Or, Ty::U32, enc, imm(((lbo >> 4) & 0x3FFF) << 16));
    let lo = b.cvt(Ty::U64, lo);
    b.bin(BinOp::Or, Ty::U64, lo, Operand::Int(((1024i64 >> 4) << 32) | (1i64 << 62)))
}

/// A descriptor `d` with its start moved by `bytes` (a multiple of 16), or `d` itself.
fn moved(b: &mut KernelBuilder, d: Reg, bytes: u32) -> Reg {
    if bytes == 0 {
        d
    } else {
        b.bin(BinOp::Add, Ty::U64, d, Operand::Int(i64::from(bytes >> 4)))
    }
}

/// The named barriers of the ping-pong: computing warpgroup 0's turn and warpgroup 1's.
const TURN_WG0: u32 = 1;
const TURN_WG1: u32 = 2;

/// One ring (K or V): its stages' base, bytes per stage, mbarriers and tensor map.
#[derive(Clone, Copy)]
struct Ring {
    at: Reg,
    bytes: u32,
    panels: u32,
    full: Reg,
    empty: Reg,
    map: Reg,
}

/// The TMA attention kernel at a producer point `p` (the caller, [`super::attention_wgmma`],
/// checked the shape and the point).
pub(super) fn attention_wgmma_tma(
    name: &str,
    s: &AttnSpec,
    dtype: DType,
    p: WgmmaAttnParams,
) -> Result<Kernel, KernelError> {
    let ab = if dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    let dt = s.dims()?;
    let (threads, bq, bkv, st) = (p.threads(), p.bq(), p.bkv, p.stages);
    let (pd, pdv) = (panels(dt.d), panels(dt.dv));
    let q_bytes = bq * 128 * pd;
    let (k_bytes, v_bytes) = (bkv * 128 * pd, bkv * 128 * pdv);
    let data = q_bytes + st * (k_bytes + v_bytes);
    let bar_bytes = 8 * (1 + 4 * st);
    let anchor_bytes = ANCHOR_BYTES * 128 * p.wg;
    let total = data + bar_bytes + anchor_bytes;
    if total > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "attention_wgmma {p:?} needs {total} bytes of shared memory for D = {}, Dv = {}",
            dt.d, dt.dv
        )));
    }
    let maps = tensor_maps(s, dtype, p);
    for m in &maps {
        m.check().map_err(|e| KernelError::Unsupported(format!("attention_wgmma {p:?}: {e}")))?;
    }
    let n_tiles = dt.sk.div_ceil(bkv);
    let nv = 64 * pdv;
    let header = format!(
        "attention_flash wgmma {name}: {}\nwgmma.mma_async f32 accumulation: S = Q.K^T m64n{bkv}k16 (Q, K \
         K-major), O += P.V m64n{nv}k16 (P in registers, V MN-major), 128-byte-swizzled stages filled by \
         cp.async.bulk.tensor (TMA) from a producer warpgroup, full/empty mbarriers per K and V stage{}; online \
         softmax in f32 (ex2.approx), P rounded to {dtype}; scale = {}; minimum sm_90a; NOT YET RUN ON A GPU \
         (checked in vidrt's simulator and by ptxas)\n1-D grid of B*H*ceil(Sq/BQ) = {} blocks of {threads} threads \
         (a producer and {} computing warpgroups), {total} B of {} shared memory; params wg={} (BQ={bq}) BKV={bkv} \
         stages={st} producer=1 pingpong={}",
        s.describe(&dtype.to_string()),
        if p.wg == 2 {
            format!("; setmaxnreg {PRODUCER_REGS} / {COMPUTING_REGS} registers per thread")
        } else {
            String::new()
        },
        s.scale,
        wgmma_launch_dims(s, p).0,
        p.wg,
        if total > STATIC_SHARED_MAX { "dynamic" } else { "static" },
        p.wg,
        u32::from(p.pingpong),
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (tq, tk, tv, po, blk) = block_setup(&mut b, s, dt, dtype, (bq, bkv), Some(maps));
    let smem = b.shared_aligned(data, 1024);
    let bars = b.shared(bar_bytes);
    let anchors = b.shared(anchor_bytes);
    let tid = b.special(Special::TidX);
    let base = b.shared_base();
    let qs = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    let bar0 = b.bin(BinOp::Add, Ty::U32, base, imm(bars));
    let q_full = bar0;
    let at = |b: &mut KernelBuilder, r: Reg, off: u32| b.bin(BinOp::Add, Ty::U32, r, imm(off));
    let k_ring = Ring {
        at: at(&mut b, qs, q_bytes),
        bytes: k_bytes,
        panels: pd,
        full: at(&mut b, bar0, 8),
        empty: at(&mut b, bar0, 8 + 16 * st),
        map: tk,
    };
    let v_ring = Ring {
        at: at(&mut b, qs, q_bytes + st * k_bytes),
        bytes: v_bytes,
        panels: pdv,
        full: at(&mut b, bar0, 8 + 8 * st),
        empty: at(&mut b, bar0, 8 + 24 * st),
        map: tv,
    };
    let computing_warps = 4 * p.wg;

    // Thread 0 initialises the mbarriers and publishes them (as matmul_wgmma_tma).
    let leader = b.setp(Cmp::Eq, tid, imm(0));
    let after_init = b.label();
    b.bra_if(after_init, leader, true);
    b.mbar_init(q_full, 1);
    for ring in [k_ring, v_ring] {
        for i in 0..st {
            let f = at(&mut b, ring.full, 8 * i);
            b.mbar_init(f, 1);
            let e = at(&mut b, ring.empty, 8 * i);
            b.mbar_init(e, computing_warps);
        }
    }
    b.fence_mbarrier_init();
    b.fence_proxy_async();
    b.place(after_init);
    b.bar_sync();

    let done = b.label();
    let (h, bb, q0) = (blk.h, blk.bb, blk.q0);
    let ctid = producer_warpgroup(&mut b, p.wg == 2, (tid, done), |b| {
        b.mbar_arrive_expect_tx(q_full, q_bytes);
        for i in 0..pd {
            let dst = at(b, qs, i * bq * 128);
            let x = b.imm_u32(64 * i);
            b.tma_load(dst, tq, &[x, h, q0, bb], q_full);
        }
        // Ring state: stage, parity, tiles issued.
        let state = |b: &mut KernelBuilder| [b.imm_u32(0), b.imm_u32(0), b.imm_u32(0)];
        let (ks, vs) = (state(b), state(b));
        // The next tile of `ring` into its next stage, once that stage's previous round was
        // released (round g / STAGES - 1 of its `empty`: the other parity).
        let issue = |b: &mut KernelBuilder, ring: Ring, [s, parity, g]: [Reg; 3]| {
            let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
            let fresh = b.setp(Cmp::Lt, g, imm(st));
            let skip = b.label();
            b.bra_if(skip, fresh, false);
            let empty = b.bin(BinOp::Add, Ty::U32, ring.empty, s8);
            let other = b.bin(BinOp::Xor, Ty::U32, parity, imm(1));
            b.mbar_wait(empty, other);
            b.place(skip);
            let full = b.bin(BinOp::Add, Ty::U32, ring.full, s8);
            b.mbar_arrive_expect_tx(full, ring.bytes);
            let off = b.bin(BinOp::Mul, Ty::U32, s, imm(ring.bytes));
            let stage = b.bin(BinOp::Add, Ty::U32, ring.at, off);
            let key0 = b.bin(BinOp::Mul, Ty::U32, g, imm(bkv));
            for i in 0..ring.panels {
                let dst = at(b, stage, i * bkv * 128);
                let x = b.imm_u32(64 * i);
                b.tma_load(dst, ring.map, &[x, h, key0, bb], full);
            }
            advance_ring(b, st, (s, parity, g));
        };
        issue(b, k_ring, ks);
        if n_tiles > 1 {
            let top = b.label();
            b.place(top);
            b.no_unroll();
            issue(b, k_ring, ks);
            issue(b, v_ring, vs);
            let more = b.setp(Cmp::Lt, ks[2], imm(n_tiles));
            b.bra_if(top, more, false);
        }
        issue(b, v_ring, vs);
        Ok(())
    })?;

    // The computing warpgroups.
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, ctid, imm(5));
    let wg = b.bin(BinOp::Shr, Ty::U32, ctid, imm(7));
    let (row_a, row_b, q2) = fragment_rows(&mut b, lane, warp, q0);
    let signals = b.setp(Cmp::Eq, lane, imm(0));
    let anchor = b.bin(BinOp::Add, Ty::U32, base, imm(anchors));
    let anchor = b.fma(Ty::U32, ctid, imm(ANCHOR_BYTES), anchor);
    let q_wg = b.fma(Ty::U32, wg, imm(64 * 128), qs);
    let dq = swizzled_descriptor(&mut b, q_wg);

    let Acc { o, sacc, m, l, zero, acc_on, acc_off } = Acc::new(&mut b, nv, bkv);
    let k0 = b.imm_u32(0);

    // Ring state of the consumer: stage, parity, tiles consumed.
    let (ks, vs) = ([b.imm_u32(0), b.imm_u32(0), b.imm_u32(0)], [b.imm_u32(0), b.imm_u32(0), b.imm_u32(0)]);
    let stage_of = |b: &mut KernelBuilder, ring: Ring, s: Reg| {
        let off = b.bin(BinOp::Mul, Ty::U32, s, imm(ring.bytes));
        b.bin(BinOp::Add, Ty::U32, ring.at, off)
    };
    let wait_full = |b: &mut KernelBuilder, ring: Ring, [s, parity, _]: [Reg; 3]| {
        let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
        let full = b.bin(BinOp::Add, Ty::U32, ring.full, s8);
        b.mbar_wait(full, parity);
    };
    // This warp's arrival on the stage's `empty` (after its warpgroup's wait covering it).
    let release = |b: &mut KernelBuilder, ring: Ring, [s, _, _]: [Reg; 3]| {
        let s8 = b.bin(BinOp::Mul, Ty::U32, s, imm(8));
        let empty = b.bin(BinOp::Add, Ty::U32, ring.empty, s8);
        let skip = b.label();
        b.bra_if(skip, signals, true);
        b.mbar_arrive(empty);
        b.place(skip);
    };
    // S = Q·Kᵀ over the K stage `s` (the first k-step overwrites S), one group.
    let s_wgmma = |b: &mut KernelBuilder, s: Reg| {
        let kst = stage_of(b, k_ring, s);
        let dk = swizzled_descriptor(b, kst);
        for kk in 0..dt.d.div_ceil(16) {
            let (panel, step) = (kk / 4, 32 * (kk % 4));
            let da = moved(b, dq, panel * bq * 128 + step);
            let db = moved(b, dk, panel * bkv * 128 + step);
            b.wgmma(ab, &sacc, da, db, if kk == 0 { acc_off } else { acc_on });
        }
        b.wgmma_commit();
    };
    // O += P·V over the V stage `s`: keys 16kk.. are k-step kk (two 8-row atoms), one group.
    let pv_wgmma = |b: &mut KernelBuilder, s: Reg, pa: &[[Reg; 4]]| {
        let vst = stage_of(b, v_ring, s);
        let dv = mn_swizzled_descriptor(b, vst, bkv * 128);
        for (kk, fa) in pa.iter().enumerate() {
            let db = moved(b, dv, 2048 * kk as u32);
            b.wgmma_rs(ab, &o, *fa, db, acc_on, true);
        }
        b.wgmma_commit();
    };
    let softmax = |b: &mut KernelBuilder, pa: &[[Reg; 4]]| {
        softmax_to_p(b, &blk.scores, &sacc, (k0, q2, row_a, row_b), (m, l, zero), (pa, ab))
    };
    let advance = |b: &mut KernelBuilder| {
        let k1 = b.bin(BinOp::Add, Ty::U32, k0, imm(bkv));
        set(b, k0, k1);
    };
    // Ping-pong: computing warpgroup w issues a batch of wgmma after `bar.sync 1 + w` and
    // then hands the turn over with `bar.arrive 2 - w` (256 threads each: the waiting
    // warpgroup and the other's arrival). The second warpgroup's first arrival lets the
    // first go first, and it skips its arrival after its last batch, so every round closes:
    // both issue n_tiles + 1 batches.
    let first_wg = b.setp(Cmp::Eq, wg, imm(0));
    let turn = |b: &mut KernelBuilder, wait: bool, last: bool| {
        if !p.pingpong {
            return;
        }
        let second = b.label();
        let done = b.label();
        b.bra_if(second, first_wg, true);
        if wait {
            b.bar_named_sync(TURN_WG0, 256);
        } else {
            b.bar_named_arrive(TURN_WG1, 256);
        }
        b.bra(done);
        b.place(second);
        if wait {
            b.bar_named_sync(TURN_WG1, 256);
        } else if !last {
            b.bar_named_arrive(TURN_WG0, 256);
        }
        b.place(done);
    };
    if p.pingpong {
        let skip = b.label();
        b.bra_if(skip, first_wg, false);
        b.bar_named_arrive(TURN_WG0, 256);
        b.place(skip);
    }

    b.mbar_wait(q_full, imm(0));
    let pa = p_regs(&mut b, bkv);
    // Tile 0: S and its softmax; its P·V waits for the loop (or the tail).
    wait_full(&mut b, k_ring, ks);
    turn(&mut b, true, false);
    b.wgmma_fence();
    s_wgmma(&mut b, ks[0]);
    turn(&mut b, false, false);
    b.wgmma_wait(0);
    release(&mut b, k_ring, ks);
    let corr = softmax(&mut b, &pa);
    rescale(&mut b, &o, corr);
    advance_ring(&mut b, st, (ks[0], ks[1], ks[2]));
    advance(&mut b);
    if n_tiles > 1 {
        let top = b.label();
        b.place(top);
        b.no_unroll();
        wait_full(&mut b, k_ring, ks);
        wait_full(&mut b, v_ring, vs);
        // One fence covers both: P and O were written by ordinary instructions.
        turn(&mut b, true, false);
        b.wgmma_fence();
        s_wgmma(&mut b, ks[0]);
        pv_wgmma(&mut b, vs[0], &pa);
        turn(&mut b, false, false);
        // S_j is complete (K_j's stage goes back); P·V_{j-1} is still running: the softmax
        // of S_j in f32 now, its rounding into the P fragments (still P·V_{j-1}'s operand)
        // after the wait.
        b.wgmma_wait(1);
        release(&mut b, k_ring, ks);
        let (probs, corr) = softmax_f32(&mut b, &blk.scores, &sacc, (k0, q2, row_a, row_b), (m, l, zero));
        anchor_softmax(&mut b, anchor, l);
        b.wgmma_wait(0);
        release(&mut b, v_ring, vs);
        rescale(&mut b, &o, corr);
        pack_p(&mut b, &probs, (&pa, ab));
        advance_ring(&mut b, st, (ks[0], ks[1], ks[2]));
        advance_ring(&mut b, st, (vs[0], vs[1], vs[2]));
        advance(&mut b);
        let more = b.setp(Cmp::Lt, k0, imm(dt.sk));
        b.bra_if(top, more, false);
    }
    // The last tile's P·V.
    wait_full(&mut b, v_ring, vs);
    turn(&mut b, true, false);
    b.wgmma_fence();
    pv_wgmma(&mut b, vs[0], &pa);
    turn(&mut b, false, true);
    b.wgmma_wait(0);
    store_rows(&mut b, (&o, l), (row_a, row_b, q2), (dt, &blk, po, ab));
    b.place(done);
    Ok(b.finish())
}
