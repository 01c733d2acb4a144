//! The f32 SIMT variant of flash attention (see the parent module for the layouts, launch and
//! numerics).

use vidrt_ir::DType;

use super::{
    and, block_setup, imm, inv_sum, ld_or_zero, online_step, round_up, simt_launch_dims, st_if, warp_reduce, when,
    AttnSpec, Scores, SimtParams,
};
use crate::ptx::builder::{
    BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, Reg, Space, Special, Ty, STATIC_SHARED_MAX,
};
use crate::ptx::kernels::common::LOG2E;
use crate::ptx::KernelError;

/// A `rows × cols_p` f32 tile copied from a `[.., rows_total, .., cols]` tensor (row stride
/// `stride` elements) into shared memory (row stride `s_stride` bytes), zero past the tensor,
/// optionally multiplied by `mul`. Threads take 4-column vectors round-robin.
struct F32Tile {
    ptr: Reg,
    rows: u32,
    total: u32,
    stride: u32,
    cols: u32,
    cols_p: u32,
    s_stride: u32,
    mul: Option<f32>,
}

impl F32Tile {
    fn load(&self, b: &mut KernelBuilder, base: Reg, row0: Reg, saddr: Reg, (tid, threads): (Reg, u32)) {
        let vpr = self.cols_p / 4;
        let total = self.rows * vpr;
        for i in 0..total.div_ceil(threads) {
            let c = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
            let live = ((i + 1) * threads > total).then(|| b.setp(Cmp::Lt, c, imm(total)));
            when(b, live, |b| {
                let r = b.bin(BinOp::Div, Ty::U32, c, imm(vpr));
                let c4 = b.bin(BinOp::Rem, Ty::U32, c, imm(vpr));
                let col = b.bin(BinOp::Mul, Ty::U32, c4, imm(4));
                let grow = b.bin(BinOp::Add, Ty::U32, row0, r);
                let rok = b.setp(Cmp::Lt, grow, imm(self.total));
                let idx = b.fma(Ty::U32, grow, imm(self.stride), base);
                let idx = b.bin(BinOp::Add, Ty::U32, idx, col);
                let mut v = if self.cols.is_multiple_of(4) {
                    let cok = (self.cols_p > self.cols).then(|| b.setp(Cmp::Lt, col, imm(self.cols)));
                    let ok = and(b, Some(rok), cok);
                    let a = b.addr(self.ptr, idx, 4);
                    ld_or_zero(b, Space::Global, Ty::F32, a, 4, ok)
                } else {
                    (0..4u32)
                        .map(|e| {
                            let ce = b.bin(BinOp::Add, Ty::U32, col, imm(e));
                            let cok = b.setp(Cmp::Lt, ce, imm(self.cols));
                            let ok = and(b, Some(rok), Some(cok));
                            let ie = b.bin(BinOp::Add, Ty::U32, idx, imm(e));
                            let a = b.addr(self.ptr, ie, 4);
                            ld_or_zero(b, Space::Global, Ty::F32, a, 1, ok)[0]
                        })
                        .collect()
                };
                if let Some(f) = self.mul {
                    v = v.into_iter().map(|x| b.bin(BinOp::Mul, Ty::F32, x, Operand::F32(f))).collect();
                }
                let so = b.fma(Ty::U32, r, imm(self.s_stride), saddr);
                let so = b.fma(Ty::U32, c4, imm(16), so);
                b.st_vec(Space::Shared, so, v);
            });
        }
    }
}

/// The f32 SIMT flash-attention kernel (f32 q, k, v, bias; any mask dtype; f32 output).
pub fn attention_simt(name: &str, s: &AttnSpec, dtype: DType, p: SimtParams) -> Result<Kernel, KernelError> {
    if dtype != DType::F32 {
        return Err(KernelError::Unsupported(format!("attention_simt computes f32 tensors, not {dtype}")));
    }
    p.check()?;
    let dt = s.dims()?;
    let (threads, bq, bk) = (p.threads(), p.bq(), p.bk);
    // Shared layout (f32): Q [BQ][DP+4] (pre-scaled by scale·log2e), K [BK][DP+4],
    // V [BK][DVP], P [BQ][BK].
    let dp = round_up(dt.d, 4);
    let qs = (dp + 4) * 4;
    let dvp = round_up(dt.dv, 32);
    let bytes = bq * qs + bk * qs + bk * dvp * 4 + bq * bk * 4;
    // Static shared memory only: past 48 KiB (head dim 128 at 8 warps × 2 rows, 64 keys) the
    // f32 kernel spills on sm_90a, and the tensor-core variant is the fast path anyway.
    if bytes > STATIC_SHARED_MAX {
        return Err(KernelError::Unsupported(format!(
            "attention_simt {p:?} needs {bytes} bytes of shared memory for D = {}, Dv = {}",
            dt.d, dt.dv
        )));
    }
    let header = format!(
        "attention_flash simt {name}: {}\nonline softmax in f32 (ex2.approx), K/V tiles \
         in shared memory, scale = {}\n1-D grid of B*H*ceil(Sq/BQ) = {} blocks of {threads} threads, {bytes} B shared; \
         params warps={} rows={} BK={bk}",
        s.describe("f32"),
        s.scale,
        simt_launch_dims(s, p).0,
        p.warps,
        p.rows,
    );
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let q_off = b.shared(bq * qs);
    let k_off = b.shared(bk * qs);
    let v_off = b.shared(bk * dvp * 4);
    let p_off = b.shared(bq * bk * 4);
    let (pq, pk, pv, po, blk) = block_setup(&mut b, s, dt, DType::F32, (bq, bk), None);
    let tid = b.special(Special::TidX);
    let lane = b.special(Special::LaneId);
    let warp = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let sbase = b.shared_base();
    let sq_ = b.bin(BinOp::Add, Ty::U32, sbase, imm(q_off));
    let sk_ = b.bin(BinOp::Add, Ty::U32, sbase, imm(k_off));
    let sv_ = b.bin(BinOp::Add, Ty::U32, sbase, imm(v_off));
    let sp_ = b.bin(BinOp::Add, Ty::U32, sbase, imm(p_off));
    let hd = dt.h * dt.d;
    let hdv = dt.h * dt.dv;
    let qtile = F32Tile {
        ptr: pq,
        rows: bq,
        total: dt.sq,
        stride: hd,
        cols: dt.d,
        cols_p: dp,
        s_stride: qs,
        mul: Some((s.scale * f64::from(LOG2E)) as f32),
    };
    let ktile =
        F32Tile { ptr: pk, rows: bk, total: dt.sk, stride: hd, cols: dt.d, cols_p: dp, s_stride: qs, mul: None };
    let vtile = F32Tile {
        ptr: pv,
        rows: bk,
        total: dt.sk,
        stride: hdv,
        cols: dt.dv,
        cols_p: dvp,
        s_stride: dvp * 4,
        mul: None,
    };
    qtile.load(&mut b, blk.q_base, blk.q0, sq_, (tid, threads));
    // The Q tile is pre-scaled, so the score step multiplies by 1.
    let scores = Scores { c: 1.0, ..blk.scores };

    let rows = p.rows as usize;
    let kpl = (bk / 32) as usize; // keys per lane
    let u = (dvp / 32) as usize; // output columns per lane
                                 // This warp's rows: local r0 = warp·ROWS.
    let r0 = b.bin(BinOp::Mul, Ty::U32, warp, imm(p.rows));
    let qrow: Vec<Reg> = (0..p.rows)
        .map(|r| {
            let x = b.bin(BinOp::Add, Ty::U32, blk.q0, r0);
            b.bin(BinOp::Add, Ty::U32, x, imm(r))
        })
        .collect();
    let q_row_addr = b.fma(Ty::U32, r0, imm(qs), sq_);
    let p_row_addr = b.fma(Ty::U32, r0, imm(bk * 4), sp_);
    let k_lane_addr = b.fma(Ty::U32, lane, imm(qs), sk_);
    let v_lane_addr = b.fma(Ty::U32, lane, imm(4), sv_);
    let p_lane_addr = b.fma(Ty::U32, lane, imm(4), p_row_addr);
    let m: Vec<Reg> = (0..rows).map(|_| b.imm_f32(f32::NEG_INFINITY)).collect();
    let l: Vec<Reg> = (0..rows).map(|_| b.imm_f32(0.0)).collect();
    let acc: Vec<Vec<Reg>> = (0..rows).map(|_| (0..u).map(|_| b.imm_f32(0.0)).collect()).collect();

    let k0 = b.imm_u32(0);
    let top = b.label();
    b.place(top);
    ktile.load(&mut b, blk.k_base, k0, sk_, (tid, threads));
    vtile.load(&mut b, blk.v_base, k0, sv_, (tid, threads));
    b.bar_sync();
    // Scores: lane j takes keys j + 32t.
    let mut dot: Vec<Vec<Reg>> = (0..rows).map(|_| (0..kpl).map(|_| b.imm_f32(0.0)).collect()).collect();
    for d4 in 0..dp / 4 {
        let qv: Vec<Vec<Reg>> = (0..p.rows)
            .map(|r| {
                let a = b.bin(BinOp::Add, Ty::U32, q_row_addr, imm(r * qs + d4 * 16));
                b.ld_vec(Space::Shared, Ty::F32, a, 4)
            })
            .collect();
        let kv: Vec<Vec<Reg>> = (0..kpl as u32)
            .map(|t| {
                let a = b.bin(BinOp::Add, Ty::U32, k_lane_addr, imm(t * 32 * qs + d4 * 16));
                b.ld_vec(Space::Shared, Ty::F32, a, 4)
            })
            .collect();
        for (drow, qr) in dot.iter_mut().zip(&qv) {
            for (x, kt) in drow.iter_mut().zip(&kv) {
                for (&qe, &ke) in qr.iter().zip(kt) {
                    *x = b.fma(Ty::F32, qe, ke, *x);
                }
            }
        }
    }
    let keys: Vec<Reg> = (0..kpl)
        .map(|t| {
            let x = b.bin(BinOp::Add, Ty::U32, k0, lane);
            b.bin(BinOp::Add, Ty::U32, x, imm(t as u32 * 32))
        })
        .collect();
    let drops: Vec<Option<Reg>> = keys.iter().map(|&k| scores.dropped(&mut b, k)).collect();
    let mut corr = Vec::new();
    for r in 0..rows {
        let sc: Vec<Reg> = (0..kpl).map(|t| scores.score(&mut b, dot[r][t], qrow[r], keys[t], drops[t])).collect();
        let (pr, c) = online_step(&mut b, &sc, m[r], l[r], &[16, 8, 4, 2, 1]);
        for (t, &x) in pr.iter().enumerate() {
            let a = b.bin(BinOp::Add, Ty::U32, p_lane_addr, imm(r as u32 * bk * 4 + t as u32 * 128));
            b.st(Space::Shared, a, x);
        }
        corr.push(c);
    }
    b.bar_sync();
    for r in 0..rows {
        for &a in &acc[r] {
            b.push(Inst::Bin { op: BinOp::Mul, dst: a, a: Operand::Reg(a), b: Operand::Reg(corr[r]) });
        }
    }
    for j4 in 0..bk / 4 {
        let pr: Vec<Vec<Reg>> = (0..p.rows)
            .map(|r| {
                let a = b.bin(BinOp::Add, Ty::U32, p_row_addr, imm(r * bk * 4 + j4 * 16));
                b.ld_vec(Space::Shared, Ty::F32, a, 4)
            })
            .collect();
        for jj in 0..4 {
            let j = j4 * 4 + jj;
            let vv: Vec<Reg> = (0..u as u32)
                .map(|c| {
                    let a = b.bin(BinOp::Add, Ty::U32, v_lane_addr, imm(j * dvp * 4 + c * 128));
                    b.ld(Space::Shared, Ty::F32, a)
                })
                .collect();
            for (arow, prow) in acc.iter().zip(&pr) {
                for (&x, &v) in arow.iter().zip(&vv) {
                    let pj = Operand::Reg(prow[jj as usize]);
                    b.push(Inst::Fma { dst: x, a: pj, b: Operand::Reg(v), c: Operand::Reg(x) });
                }
            }
        }
    }
    b.bar_sync();
    b.push(Inst::Bin { op: BinOp::Add, dst: k0, a: Operand::Reg(k0), b: imm(bk) });
    let more = b.setp(Cmp::Lt, k0, imm(dt.sk));
    b.bra_if(top, more, false);

    // Epilogue: out[b, qrow, h, lane + 32c] = acc / l.
    for r in 0..rows {
        let lt = warp_reduce(&mut b, l[r], BinOp::Add, &[16, 8, 4, 2, 1]);
        let inv = inv_sum(&mut b, lt);
        let rok = b.setp(Cmp::Lt, qrow[r], imm(dt.sq));
        let ob = b.fma(Ty::U32, qrow[r], imm(hdv), blk.o_base);
        for (c, &a) in acc[r].iter().enumerate() {
            let col = b.bin(BinOp::Add, Ty::U32, lane, imm(c as u32 * 32));
            let cok = ((c as u32 + 1) * 32 > dt.dv).then(|| b.setp(Cmp::Lt, col, imm(dt.dv)));
            let ok = and(&mut b, Some(rok), cok);
            let o = b.bin(BinOp::Mul, Ty::F32, a, inv);
            let i = b.bin(BinOp::Add, Ty::U32, ob, col);
            let ad = b.addr(po, i, 4);
            st_if(&mut b, Space::Global, ad, vec![o], ok);
        }
    }
    Ok(b.finish())
}
