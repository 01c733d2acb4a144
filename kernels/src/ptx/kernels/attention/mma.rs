//! The tensor-core (bf16/f16, `mma.sync.m16n8k16`) variant of flash attention (see the parent
//! module for the layouts, launch and numerics).

use vidrt_ir::DType;

use super::{
    and, block_setup, fragment_softmax, imm, inv_sum, kv_stage_step, ld_or_zero, mma_launch_dims, round_up, set, st_if,
    warp_reduce, when, AttnSpec, MmaAttnParams, MAX_SHARED,
};
use crate::ptx::builder::{BinOp, Cmp, CpCache, Inst, Kernel, KernelBuilder, Operand, Reg, Space, Special, Ty};
use crate::ptx::kernels::common::from_f32;
use crate::ptx::KernelError;

/// A `rows × cols_p` b16 tile of a `[.., total, .., cols]` tensor (row stride `stride`
/// elements) copied into shared memory (row stride `s_stride` bytes) in 16-byte chunks, zero
/// past the tensor: `cp.async.cg` with src-size 0 past it when `cols` is a multiple of 8 (every
/// chunk is then aligned and wholly inside or outside a row), else element loads and a
/// `st.shared.v4`.
struct B16Tile {
    ptr: Reg,
    rows: u32,
    total: u32,
    stride: u32,
    cols: u32,
    cols_p: u32,
    s_stride: u32,
}

impl B16Tile {
    fn issue(&self, b: &mut KernelBuilder, base: Reg, row0: Reg, saddr: Reg, (tid, threads): (Reg, u32)) {
        let cpr = self.cols_p / 8;
        let total = self.rows * cpr;
        let aligned = self.cols.is_multiple_of(8);
        for i in 0..total.div_ceil(threads) {
            let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
            let live = ((i + 1) * threads > total).then(|| b.setp(Cmp::Lt, c, imm(total)));
            when(b, live, |b| {
                let r = b.bin(BinOp::Div, Ty::U32, c, imm(cpr));
                let ch = b.bin(BinOp::Rem, Ty::U32, c, imm(cpr));
                let col = b.bin(BinOp::Mul, Ty::U32, ch, imm(8));
                let grow = b.bin(BinOp::Add, Ty::U32, row0, r);
                let rok = b.setp(Cmp::Lt, grow, imm(self.total));
                let idx = b.fma(Ty::U32, grow, imm(self.stride), base);
                let idx = b.bin(BinOp::Add, Ty::U32, idx, col);
                let so = b.fma(Ty::U32, r, imm(self.s_stride), saddr);
                let so = b.fma(Ty::U32, ch, imm(16), so);
                if aligned {
                    let cok = (self.cols_p > self.cols).then(|| b.setp(Cmp::Lt, col, imm(self.cols)));
                    let ok = and(b, Some(rok), cok).unwrap_or(rok);
                    // Outside the tensor nothing is read and the source is the tensor's base.
                    let a = b.addr(self.ptr, idx, 2);
                    let src = b.selp(Ty::U64, a, self.ptr, ok);
                    let n = b.selp(Ty::U32, imm(16), imm(0), ok);
                    b.cp_async(CpCache::Cg, so, src, 16, Some(Operand::Reg(n)));
                } else {
                    let h: Vec<Reg> = (0..8u32)
                        .map(|e| {
                            let ce = b.bin(BinOp::Add, Ty::U32, col, imm(e));
                            let cok = b.setp(Cmp::Lt, ce, imm(self.cols));
                            let ok = b.bin(BinOp::And, Ty::Pred, rok, cok);
                            let ie = b.bin(BinOp::Add, Ty::U32, idx, imm(e));
                            let a = b.addr(self.ptr, ie, 2);
                            ld_or_zero(b, Space::Global, Ty::B16, a, 1, Some(ok))[0]
                        })
                        .collect();
                    let w: Vec<Reg> = (0..4)
                        .map(|j| {
                            let w = b.reg(Ty::U32);
                            b.push(Inst::Pack { dst: w, lo: h[2 * j], hi: h[2 * j + 1] });
                            w
                        })
                        .collect();
                    b.st_vec(Space::Shared, so, w);
                }
            });
        }
    }
}

/// The tensor-core flash-attention kernel: bf16 or f16 q, k, v, bias (`dtype`), any mask
/// dtype, output in `dtype`.
pub fn attention_mma(name: &str, s: &AttnSpec, dtype: DType, p: MmaAttnParams) -> Result<Kernel, KernelError> {
    let ab = match dtype {
        DType::BF16 => Ty::BF16,
        DType::F16 => Ty::F16,
        other => return Err(KernelError::Unsupported(format!("attention_mma takes bf16 or f16 inputs, not {other}"))),
    };
    p.check()?;
    if p.mt == 2 && (s.bias.is_some() || s.mask.is_some()) {
        return Err(KernelError::Unsupported(format!(
            "attention_mma with two m-tiles per warp takes no bias or key mask (with them ptxas 13 spills at 255 \
             registers); {p:?}"
        )));
    }
    let dt = s.dims()?;
    let (threads, bq, bkv) = (p.threads(), p.bq(), p.bkv);
    // Shared layout (b16, rows padded by 16 bytes): Q [BQ][DP+8] first, then STAGES × (K
    // [BKV][DP+8], V [BKV][DVP+8]). With one m-tile per warp Q is read into registers once and
    // the stages reuse its bytes; with two it stays there, read per k-step.
    let (mt, q_regs) = (p.mt, p.mt == 1);
    let dp = round_up(dt.d, 16);
    let dvp = round_up(dt.dv, 16);
    let (kst, vst) = ((dp + 8) * 2, (dvp + 8) * 2);
    let q_bytes = bq * kst;
    let stage_bytes = bkv * (kst + vst);
    let kv0 = if q_regs { 0 } else { q_bytes };
    let bytes = if q_regs { q_bytes.max(p.stages * stage_bytes) } else { q_bytes + p.stages * stage_bytes };
    if bytes > MAX_SHARED {
        return Err(KernelError::Unsupported(format!(
            "attention_mma {p:?} needs {bytes} bytes of shared memory for D = {}, Dv = {}",
            dt.d, dt.dv
        )));
    }
    let header = format!(
        "attention_flash mma {name}: {}\nmma.sync.m16n8k16 f32 accumulation, ldmatrix \
         (.trans for V), {} K/V loads, online softmax in f32 (ex2.approx), P rounded to {dtype}; scale = {}; \
         minimum sm_80\n1-D grid of B*H*ceil(Sq/BQ) = {} blocks of {threads} threads, {bytes} B shared; params \
         warps={} (BQ={bq}) BKV={bkv} stages={}{}",
        s.describe(&dtype.to_string()),
        if dt.d.is_multiple_of(8) && dt.dv.is_multiple_of(8) { "cp.async" } else { "plain" },
        s.scale,
        mma_launch_dims(s, p).0,
        p.warps,
        p.stages,
        if q_regs { String::new() } else { format!(" mt={mt} (Q read from shared memory per k-step)") },
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let smem = b.shared(bytes);
    let (pq, pk, pv, po, blk) = block_setup(&mut b, s, dt, dtype, (bq, bkv), None);
    let tid = b.special(Special::TidX);
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let sbase = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, sbase, imm(smem));
    let (hd, hdv) = (dt.h * dt.d, dt.h * dt.dv);
    let qtile = B16Tile { ptr: pq, rows: bq, total: dt.sq, stride: hd, cols: dt.d, cols_p: dp, s_stride: kst };
    let ktile = B16Tile { ptr: pk, rows: bkv, total: dt.sk, stride: hd, cols: dt.d, cols_p: dp, s_stride: kst };
    let vtile = B16Tile { ptr: pv, rows: bkv, total: dt.sk, stride: hdv, cols: dt.dv, cols_p: dvp, s_stride: vst };

    // Q: shared, then A fragments. Lane l addresses row l % 16, column 8·(l / 16) of each of
    // the warp's m-tiles (rows 16·mt·warp + 16·t ..).
    qtile.issue(&mut b, blk.q_base, blk.q0, base, (tid, threads));
    b.cp_async_wait_all();
    b.bar_sync();
    let l16 = b.bin(BinOp::And, Ty::U32, lane, imm(15));
    let lhi = b.bin(BinOp::Shr, Ty::U32, lane, imm(4));
    let qr = b.fma(Ty::U32, warp, imm(16 * mt), l16);
    let qa = b.fma(Ty::U32, qr, imm(kst), base);
    let qa = b.fma(Ty::U32, lhi, imm(16), qa);
    // The A fragment of m-tile t at k-step kk (registers held, or an ldmatrix from Q).
    let q_frag = |b: &mut KernelBuilder, t: u32, kk: u32| -> [Reg; 4] {
        let a = b.bin(BinOp::Add, Ty::U32, qa, imm(t * 16 * kst + kk * 32));
        let f = b.ldmatrix(4, false, a);
        [f[0], f[1], f[2], f[3]]
    };
    let qf: Vec<[Reg; 4]> = if q_regs { (0..dp / 16).map(|kk| q_frag(&mut b, 0, kk)).collect() } else { Vec::new() };
    // Every warp has its fragments before the stages, which reuse Q's bytes, are written.
    // With Q kept in shared memory nothing overwrites it: no barrier.
    if q_regs {
        b.bar_sync();
    }

    // ldmatrix lane offsets. K (x4, no transpose): matrix i = l / 8 holds keys 8·(i / 2)..+8,
    // columns 8·(i % 2)..+8, giving (b0, b1) of two adjacent key n-tiles. V (x4, .trans):
    // matrix i holds keys 8·(i % 2)..+8, columns 8·(i / 2)..+8, giving (b0, b1) of two
    // adjacent output n-tiles.
    let l8 = b.bin(BinOp::And, Ty::U32, lane, imm(7));
    let li = b.bin(BinOp::Shr, Ty::U32, lane, imm(3));
    let i_lo = b.bin(BinOp::And, Ty::U32, li, imm(1));
    let i_hi = b.bin(BinOp::Shr, Ty::U32, li, imm(1));
    let krow = b.fma(Ty::U32, i_hi, imm(8), l8);
    let k_lane = b.bin(BinOp::Mul, Ty::U32, krow, imm(kst));
    let k_lane = b.fma(Ty::U32, i_lo, imm(16), k_lane);
    let vrow = b.fma(Ty::U32, i_lo, imm(8), l8);
    let v_lane = b.fma(Ty::U32, vrow, imm(vst), imm(bkv * kst));
    let v_lane = b.fma(Ty::U32, i_hi, imm(16), v_lane);

    // Lane (g, q) holds rows g and g + 8 of each of the warp's m-tiles, keys/columns 2q,
    // 2q + 1 of each n-tile.
    let g = b.bin(BinOp::Shr, Ty::U32, lane, imm(2));
    let q = b.bin(BinOp::And, Ty::U32, lane, imm(3));
    let row0 = b.fma(Ty::U32, warp, imm(16 * mt), blk.q0);
    let row0 = b.bin(BinOp::Add, Ty::U32, row0, g);
    let rows: Vec<(Reg, Reg)> = (0..mt)
        .map(|t| {
            let row_a = if t == 0 { row0 } else { b.bin(BinOp::Add, Ty::U32, row0, imm(16 * t)) };
            (row_a, b.bin(BinOp::Add, Ty::U32, row_a, imm(8)))
        })
        .collect();
    let q2 = b.bin(BinOp::Mul, Ty::U32, q, imm(2));

    let nkt = (bkv / 8) as usize;
    let not = (dvp / 8) as usize;
    let zero = b.imm_f32(0.0);
    let zeros = |b: &mut KernelBuilder, n: usize| -> Vec<[Reg; 4]> {
        (0..n)
            .map(|_| {
                let r = [b.reg(Ty::F32), b.reg(Ty::F32), b.reg(Ty::F32), b.reg(Ty::F32)];
                for x in r {
                    set(b, x, zero);
                }
                r
            })
            .collect()
    };
    // Per m-tile: the output accumulators and the running max and sum of its two rows.
    let mut o = Vec::with_capacity(mt as usize);
    let mut ml = Vec::with_capacity(mt as usize);
    for _ in 0..mt {
        o.push(zeros(&mut b, not));
        let m = [b.imm_f32(f32::NEG_INFINITY), b.imm_f32(f32::NEG_INFINITY)];
        ml.push((m, [b.imm_f32(0.0), b.imm_f32(0.0)]));
    }

    let k0 = b.imm_u32(0);
    let stage = if q_regs { b.mov(Ty::U32, base) } else { b.bin(BinOp::Add, Ty::U32, base, imm(kv0)) };
    let other = b.bin(BinOp::Add, Ty::U32, base, imm(kv0 + stage_bytes));
    let issue_kv = |b: &mut KernelBuilder, k0: Reg, at: Reg| {
        ktile.issue(b, blk.k_base, k0, at, (tid, threads));
        let vs = b.bin(BinOp::Add, Ty::U32, at, imm(bkv * kst));
        vtile.issue(b, blk.v_base, k0, vs, (tid, threads));
    };
    if p.stages == 2 {
        issue_kv(&mut b, k0, stage);
        b.cp_async_commit();
    }
    let top = b.label();
    b.place(top);
    kv_stage_step(&mut b, p.stages == 2, (k0, bkv, dt.sk), (stage, other), &issue_kv);
    b.bar_sync();

    // S = Q·Kᵀ for the tile's BKV keys, per m-tile; each K fragment serves every m-tile.
    let sacc: Vec<Vec<[Reg; 4]>> = (0..mt).map(|_| zeros(&mut b, nkt)).collect();
    let kb = b.bin(BinOp::Add, Ty::U32, stage, k_lane);
    for kk in 0..dp / 16 {
        let fas: Vec<[Reg; 4]> =
            if q_regs { vec![qf[kk as usize]] } else { (0..mt).map(|t| q_frag(&mut b, t, kk)).collect() };
        for jj in 0..nkt / 2 {
            let a = b.bin(BinOp::Add, Ty::U32, kb, imm(jj as u32 * 16 * kst + kk * 32));
            let f = b.ldmatrix(4, false, a);
            for (fa, acc) in fas.iter().zip(&sacc) {
                b.mma_acc(ab, *fa, [f[0], f[1]], acc[2 * jj]);
                b.mma_acc(ab, *fa, [f[2], f[3]], acc[2 * jj + 1]);
            }
        }
    }
    // Scores, then the online softmax of rows a (elements 0, 1) and b (2, 3) of each m-tile.
    let mut probs = Vec::with_capacity(mt as usize);
    for (((acc, &(row_a, row_b)), &(m, l)), out) in sacc.iter().zip(&rows).zip(&ml).zip(&o) {
        let (pr, corr) = fragment_softmax(&mut b, &blk.scores, acc, (k0, q2), (row_a, row_b), (m, l), zero);
        for acc in out {
            for (e, &x) in acc.iter().enumerate() {
                b.push(Inst::Bin { op: BinOp::Mul, dst: x, a: Operand::Reg(x), b: Operand::Reg(corr[e / 2]) });
            }
        }
        probs.push(pr);
    }
    // O += P·V: the C fragments of key n-tiles 2kk, 2kk + 1 are the A fragment of k-step kk;
    // each V fragment serves every m-tile.
    let vb = b.bin(BinOp::Add, Ty::U32, stage, v_lane);
    for kk in 0..nkt / 2 {
        let fas: Vec<[Reg; 4]> = probs
            .iter()
            .map(|pr| {
                let (p0, p1) = (pr[2 * kk], pr[2 * kk + 1]);
                [
                    b.cvt_pack(ab, p0[0], p0[1]),
                    b.cvt_pack(ab, p0[2], p0[3]),
                    b.cvt_pack(ab, p1[0], p1[1]),
                    b.cvt_pack(ab, p1[2], p1[3]),
                ]
            })
            .collect();
        for nt in 0..not / 2 {
            let a = b.bin(BinOp::Add, Ty::U32, vb, imm(kk as u32 * 16 * vst + nt as u32 * 32));
            let f = b.ldmatrix(4, true, a);
            for (fa, out) in fas.iter().zip(&o) {
                b.mma_acc(ab, *fa, [f[0], f[1]], out[2 * nt]);
                b.mma_acc(ab, *fa, [f[2], f[3]], out[2 * nt + 1]);
            }
        }
    }
    b.bar_sync();
    if p.stages == 2 {
        let tmp = b.mov(Ty::U32, stage);
        set(&mut b, stage, other);
        set(&mut b, other, tmp);
    }
    b.push(Inst::Bin { op: BinOp::Add, dst: k0, a: Operand::Reg(k0), b: imm(bkv) });
    let more = b.setp(Cmp::Lt, k0, imm(dt.sk));
    b.bra_if(top, more, false);
    b.cp_async_wait_all();

    // Epilogue: O / l per row, stored in the input dtype (pairs packed when Dv is even).
    let st_ty = ab;
    for ((&(row_a, row_b), (_, l)), o) in rows.iter().zip(&ml).zip(&o) {
        let inv: Vec<Reg> = (0..2)
            .map(|half| {
                let lt = warp_reduce(&mut b, l[half], BinOp::Add, &[1, 2]);
                inv_sum(&mut b, lt)
            })
            .collect();
        for (half, &row) in [row_a, row_b].iter().enumerate() {
            let rok = b.setp(Cmp::Lt, row, imm(dt.sq));
            let ob = b.fma(Ty::U32, row, imm(hdv), blk.o_base);
            let ob = b.bin(BinOp::Add, Ty::U32, ob, q2);
            for (nt, acc) in o.iter().enumerate() {
                let c0 = nt as u32 * 8;
                let x0 = b.bin(BinOp::Mul, Ty::F32, acc[2 * half], inv[half]);
                let x1 = b.bin(BinOp::Mul, Ty::F32, acc[2 * half + 1], inv[half]);
                let col = b.bin(BinOp::Add, Ty::U32, q2, imm(c0));
                let i = b.bin(BinOp::Add, Ty::U32, ob, imm(c0));
                if dt.dv.is_multiple_of(2) {
                    let cok = (c0 + 8 > dt.dv).then(|| b.setp(Cmp::Lt, col, imm(dt.dv)));
                    let ok = and(&mut b, Some(rok), cok);
                    let w = b.cvt_pack(st_ty, x0, x1);
                    let ad = b.addr(po, i, 2);
                    st_if(&mut b, Space::Global, ad, vec![w], ok);
                } else {
                    for (e, x) in [x0, x1].into_iter().enumerate() {
                        let ce = b.bin(BinOp::Add, Ty::U32, col, imm(e as u32));
                        let cok = b.setp(Cmp::Lt, ce, imm(dt.dv));
                        let ok = b.bin(BinOp::And, Ty::Pred, rok, cok);
                        let v = from_f32(&mut b, x, st_ty);
                        let ie = b.bin(BinOp::Add, Ty::U32, i, imm(e as u32));
                        let ad = b.addr(po, ie, 2);
                        st_if(&mut b, Space::Global, ad, vec![v], Some(ok));
                    }
                }
            }
        }
    }
    Ok(b.finish())
}
