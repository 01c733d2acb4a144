//! Flash attention forward (`attention_flash`): `out = softmax(scale·q·kᵀ + bias, masked keys
//! dropped) · v` with an online softmax over key tiles, so the score matrix is never
//! materialised. Two variants:
//!
//! - [`attention_mma`] (bf16/f16 inputs, minimum sm_80): a warp owns 16 query rows. Q·Kᵀ and
//!   P·V run on `mma.sync.aligned.m16n8k16` with f32 accumulation; Q is staged once through
//!   shared memory into A fragments (`ldmatrix.x4`), K tiles feed B with `ldmatrix.x4` (K rows
//!   are the k-contiguous `[N, K]` layout), V tiles with `ldmatrix.x4.trans`; P is rounded to
//!   the input type with `cvt.rn.{bf16,f16}x2.f32` and reused in registers as the A operand
//!   (the C fragment of two adjacent n-tiles is the A fragment of one k-step). K/V tiles go
//!   through `STAGES` shared buffers with 16-byte `cp.async.cg` when the head dims are
//!   multiples of 8, else plain loads; head dims are zero-padded to multiples of 16.
//! - [`attention_wgmma`] (bf16/f16, sm_90a, not yet run on a GPU): a warpgroup owns 64 query
//!   rows; S = Q·Kᵀ by `wgmma` with Q and K in shared memory, P·V by `wgmma` with P in
//!   registers and V read MN-major (see the submodule's doc). Taken on sm_90a where wgmma is
//!   on and [`wgmma_unsupported`] allows.
//! - [`attention_simt`] (f32): a warp owns `ROWS` query rows; lane `j` scores keys
//!   `j, j+32, ..` of a tile (K rows padded by 16 bytes, read as `ld.shared.v4`), the
//!   probabilities go through shared memory, and lane `c` accumulates output columns
//!   `c, c+32, ..`.
//!
//! Layouts (row-major): q `[B, Sq, H, D]`, k `[B, Sk, H, D]`, v `[B, Sk, H, Dv]`, out
//! `[B, Sq, H, Dv]` (the input dtype); an optional additive bias read at generation-time
//! strides over `[B, H, Sq, Sk]` (0 on broadcast axes) of the input dtype; an optional key mask
//! `[B, Sk]` of any dtype (a key whose mask is 0 is dropped). A row whose keys are all dropped
//! writes zeros (as the CPU reference does). Parameters: q, k, v, \[bias\], \[mask\], out.
//!
//! Numerics: scores in the log₂ domain (q·k·scale·log₂e, bias·log₂e), `ex2.approx.ftz.f32`
//! (relative error ≤ 2⁻²²·⁵ on hardware), running max and sum in f32; the sum uses the f32
//! probabilities, the mma and wgmma variants multiply V by their bf16/f16 rounding.
//!
//! Launch: 1-D grid of `B·H·ceil(Sq/BQ)` blocks (block `i`: query tile `i % ceil(Sq/BQ)` of head
//! `(i / ceil(Sq/BQ)) % H` of batch `i / (ceil(Sq/BQ)·H)`), `32·WARPS` threads (`128·WG` for
//! the wgmma variant); see [`simt_launch_dims`], [`mma_launch_dims`], [`wgmma_launch_dims`].
//! Shared memory of the mma and wgmma variants: static up to
//! 48 KiB, dynamic past it (the builder decides, [`KernelBuilder::shared`]), at most 227 KiB
//! ([`MAX_SHARED`]); the lowering keeps the points that fit its target (163 KiB on sm_80).
//! The SIMT variant stays within 48 KiB of static shared memory. A point whose tiles are too
//! large for the head dims is `Unsupported` for that shape.
//!
//! Tunables (generation time): SIMT: WARPS, ROWS per warp (BQ = WARPS·ROWS), BK keys per tile
//! ([`simt_param_space`]); mma: WARPS (BQ = 16·WARPS), BKV keys per tile, STAGES
//! ([`mma_param_space`]); wgmma: WG warpgroups (BQ = 64·WG), BKV, STAGES
//! ([`wgmma_param_space`]).

use vidrt_ir::DType;

use super::common::{elem_ty, ld_or_zero, to_f32, u32_of, LOG2E};
use crate::ptx::builder::{
    BinOp, Cmp, Guard, Inst, KernelBuilder, Operand, ParamTy, Reg, ShflMode, Space, Special, Ty, UnOp,
};
use crate::ptx::tma::TensorMapDesc;
use crate::ptx::KernelError;

mod mma;
mod simt;
mod wgmma;
mod wgmma_tma;

pub use mma::attention_mma;
pub use simt::attention_simt;
pub use wgmma::{attention_wgmma, wgmma_launch_dims, wgmma_param_space, wgmma_unsupported, WgmmaAttnParams};

use crate::ptx::builder::MAX_SHARED;

/// One attention problem: shapes, scale and the optional operands.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnSpec {
    pub batch: usize,
    pub sq: usize,
    pub sk: usize,
    pub heads: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f64,
    /// Element strides of the bias over `[B, H, Sq, Sk]` (0 on broadcast axes), if any.
    pub bias: Option<[usize; 4]>,
    /// The dtype of the `[B, Sk]` key mask, if any.
    pub mask: Option<DType>,
}

/// The spec's sizes as u32, checked for 32-bit element indexing.
#[derive(Clone, Copy)]
struct Dims {
    sq: u32,
    sk: u32,
    h: u32,
    d: u32,
    dv: u32,
}

impl AttnSpec {
    /// The op and its layouts, as the kernels' headers state them (`dtype`: of q, k, v, out).
    pub(crate) fn describe(&self, dtype: &str) -> String {
        let (b, sq, sk, h, d, dv) = (self.batch, self.sq, self.sk, self.heads, self.d, self.dv);
        format!(
            "out[{b},{sq},{h},{dv}] {dtype} = softmax(scale*q.k^T{}{}) v; q [{b},{sq},{h},{d}], k [{b},{sk},{h},{d}], \
             v [{b},{sk},{h},{dv}] {dtype}, row-major",
            if self.bias.is_some() { " + bias" } else { "" },
            if self.mask.is_some() { ", key mask" } else { "" },
        )
    }

    fn dims(&self) -> Result<Dims, KernelError> {
        let s = self;
        if [s.batch, s.sq, s.sk, s.heads, s.d, s.dv].contains(&0) {
            return Err(KernelError::Invalid(format!("attention shape {s:?} has an empty axis")));
        }
        if !s.scale.is_finite() {
            return Err(KernelError::Invalid(format!("attention scale {} is not finite", s.scale)));
        }
        let prod = |x: &[usize]| x.iter().try_fold(1usize, |a, &v| a.checked_mul(v)).unwrap_or(usize::MAX);
        u32_of(prod(&[s.batch, s.sq, s.heads, s.d]), "B·Sq·H·D")?;
        u32_of(prod(&[s.batch, s.sk, s.heads, s.d]), "B·Sk·H·D")?;
        u32_of(prod(&[s.batch, s.sk, s.heads, s.dv]), "B·Sk·H·Dv")?;
        u32_of(prod(&[s.batch, s.sq, s.heads, s.dv]), "B·Sq·H·Dv")?;
        if let Some(st) = s.bias {
            let full = [s.batch, s.heads, s.sq, s.sk];
            let last = full
                .iter()
                .zip(st)
                .try_fold(0usize, |a, (&n, st)| (n - 1).checked_mul(st).and_then(|x| x.checked_add(a)))
                .unwrap_or(usize::MAX);
            u32_of(last.saturating_add(1), "bias extent")?;
            for x in st {
                u32_of(x, "bias stride")?;
            }
        }
        u32_of(s.batch, "B")?;
        Ok(Dims {
            sq: u32_of(s.sq, "Sq")?,
            sk: u32_of(s.sk, "Sk")?,
            h: u32_of(s.heads, "H")?,
            d: u32_of(s.d, "D")?,
            dv: u32_of(s.dv, "Dv")?,
        })
    }
}

/// Parameters of the f32 SIMT variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimtParams {
    pub warps: u32,
    /// Query rows per warp.
    pub rows: u32,
    /// Keys per tile (a multiple of 32).
    pub bk: u32,
}

impl SimtParams {
    pub fn threads(self) -> u32 {
        32 * self.warps
    }

    /// Query rows per block.
    pub fn bq(self) -> u32 {
        self.warps * self.rows
    }

    pub fn check(self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("attention_simt parameters {self:?}: {why}")));
        if self.warps == 0 || self.warps > 32 {
            return bad("warps must be in 1..=32");
        }
        if self.rows == 0 || self.rows > 8 {
            return bad("rows per warp must be in 1..=8");
        }
        if self.bk == 0 || !self.bk.is_multiple_of(32) || self.bk > 128 {
            return bad("BK must be a multiple of 32 in 32..=128");
        }
        Ok(())
    }
}

impl crate::ptx::tune::Point for SimtParams {
    const NAMES: &'static [&'static str] = &["warps", "rows", "bk"];

    fn values(self) -> Vec<u32> {
        vec![self.warps, self.rows, self.bk]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [warps, rows, bk] => Some(SimtParams { warps, rows, bk }),
            _ => None,
        }
    }
}

impl crate::ptx::tune::Point for MmaAttnParams {
    const NAMES: &'static [&'static str] = &["warps", "bkv", "stages", "mt"];
    /// `mt` came later: a text without it is the 16-rows-per-warp point it always was.
    const DEFAULTS: &'static [(&'static str, u32)] = &[("mt", 1)];

    fn values(self) -> Vec<u32> {
        vec![self.warps, self.bkv, self.stages, self.mt]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [warps, bkv, stages, mt] => Some(MmaAttnParams { warps, bkv, stages, mt }),
            _ => None,
        }
    }
}

/// Every SIMT parameter point, in the lowering's order of preference (the tuning space of
/// `attention_simt`).
pub fn simt_param_space() -> Vec<SimtParams> {
    vec![
        SimtParams { warps: 4, rows: 2, bk: 32 },
        SimtParams { warps: 4, rows: 1, bk: 32 },
        SimtParams { warps: 8, rows: 2, bk: 64 },
    ]
}

/// Parameters of the tensor-core variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaAttnParams {
    /// Warps per block, 16·`mt` query rows each.
    pub warps: u32,
    /// Keys per tile (a multiple of 16).
    pub bkv: u32,
    /// Shared-memory stages of the K/V pipeline (1 or 2).
    pub stages: u32,
    /// Query m-tiles (16 rows) per warp, 1 or 2. With 1, Q is held in registers and its
    /// shared memory is reused by the K/V stages; with 2 (FlashAttention-2's 32 rows per
    /// warp), Q stays in shared memory and is read with `ldmatrix` per k-step, and each K and V
    /// fragment a warp reads serves both m-tiles: a warp reads the K/V tile once per 32 rows
    /// instead of once per 16.
    pub mt: u32,
}

impl MmaAttnParams {
    pub fn threads(self) -> u32 {
        32 * self.warps
    }

    /// Query rows per block.
    pub fn bq(self) -> u32 {
        16 * self.warps * self.mt
    }

    pub fn check(self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("attention_mma parameters {self:?}: {why}")));
        if self.warps == 0 || self.warps > 16 {
            return bad("warps must be in 1..=16");
        }
        if self.bkv == 0 || !self.bkv.is_multiple_of(16) || self.bkv > 128 {
            return bad("BKV must be a multiple of 16 in 16..=128");
        }
        if !matches!(self.stages, 1 | 2) {
            return bad("stages must be 1 or 2");
        }
        if !matches!(self.mt, 1 | 2) {
            return bad("m-tiles per warp must be 1 or 2");
        }
        Ok(())
    }
}

/// Every tensor-core parameter point, in the lowering's order of preference (the tuning space
/// of `attention_mma`). `(4, 64, 2)` and `(8, 64, 2)` double-buffer 64-key tiles for 64 and 128
/// query rows: 68 KiB of dynamic shared memory at head dim 128, static 36 KiB at 64; `(2, 64,
/// 2)` too is dynamic at head dim 128. The last, [`mma_two_mtile_point`], has two m-tiles per
/// warp: FlashAttention-2's sm_80 tile for head dim 128, 128 × 64 with 4 warps, Q kept in
/// shared memory (102 KiB at head dim 128). ptxas 13 gives it 255 registers at head dim 128
/// with no spill, and it takes no bias or mask (with them it spills; so does a 32-key form
/// at head dim 128, left out).
pub fn mma_param_space() -> Vec<MmaAttnParams> {
    let p = |warps, bkv, stages, mt| MmaAttnParams { warps, bkv, stages, mt };
    vec![p(4, 32, 2, 1), p(4, 64, 1, 1), p(2, 64, 2, 1), p(4, 64, 2, 1), p(8, 64, 2, 1), mma_two_mtile_point()]
}

/// The two-m-tile point the lowering prefers for long sequences at head dims of 64 and more:
/// 4 warps of 32 query rows, 64-key tiles, two stages (see [`MmaAttnParams::mt`]). Chosen by
/// the shared-memory traffic per product (each warp's `ldmatrix` of K and V serves 32 rows:
/// 0.31 `ldmatrix.x4` per `mma` in the head-dim-128 loop, against 0.5 with 16 rows), not by a
/// measurement: no GPU has timed it yet.
pub fn mma_two_mtile_point() -> MmaAttnParams {
    MmaAttnParams { warps: 4, bkv: 64, stages: 2, mt: 2 }
}

fn grid(s: &AttnSpec, bq: u32) -> u32 {
    let tiles = s.sq.div_ceil(bq.max(1) as usize).saturating_mul(s.batch).saturating_mul(s.heads);
    u32::try_from(tiles).unwrap_or(u32::MAX)
}

/// (grid, block) of the SIMT variant.
pub fn simt_launch_dims(s: &AttnSpec, p: SimtParams) -> (u32, u32) {
    (grid(s, p.bq()), p.threads())
}

/// (grid, block) of the tensor-core variant.
pub fn mma_launch_dims(s: &AttnSpec, p: MmaAttnParams) -> (u32, u32) {
    (grid(s, p.bq()), p.threads())
}

use super::gemm::imm;

fn round_up(x: u32, m: u32) -> u32 {
    x.div_ceil(m) * m
}

fn st_if(b: &mut KernelBuilder, space: Space, addr: Reg, src: Vec<Reg>, pred: Option<Reg>) {
    b.push(Inst::St { space, src, addr, offset: 0, guard: pred.map(|p| Guard { pred: p, negate: false }) });
}

/// The top of a K/V tile loop over `cp.async` stages: with two stages, the next tile (keys
/// `k0 + bkv..`, if any) is issued into `other` and the current one (issued a step before)
/// waited for; with one, the current tile is issued into `stage` and waited for. Each
/// thread's copies only: the caller's barrier makes them the block's.
fn kv_stage_step(
    b: &mut KernelBuilder,
    two_stages: bool,
    (k0, bkv, sk): (Reg, u32, u32),
    (stage, other): (Reg, Reg),
    issue_kv: &dyn Fn(&mut KernelBuilder, Reg, Reg),
) {
    if two_stages {
        let k1 = b.bin(BinOp::Add, Ty::U32, k0, imm(bkv));
        let next = b.setp(Cmp::Lt, k1, imm(sk));
        when(b, Some(next), |b| issue_kv(b, k1, other));
        b.cp_async_commit();
        b.cp_async_wait(1);
    } else {
        issue_kv(b, k0, stage);
        b.cp_async_commit();
        b.cp_async_wait(0);
    }
}

/// Emits `body` only for threads where `pred` holds.
fn when(b: &mut KernelBuilder, pred: Option<Reg>, body: impl FnOnce(&mut KernelBuilder)) {
    match pred {
        None => body(b),
        Some(p) => {
            let skip = b.label();
            b.bra_if(skip, p, true);
            body(b);
            b.place(skip);
        }
    }
}

fn and(b: &mut KernelBuilder, x: Option<Reg>, y: Option<Reg>) -> Option<Reg> {
    match (x, y) {
        (Some(x), Some(y)) => Some(b.bin(BinOp::And, Ty::Pred, x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// `dst = v` for a loop-carried register.
fn set(b: &mut KernelBuilder, dst: Reg, v: impl Into<Operand>) {
    b.push(Inst::Mov { dst, src: v.into() });
}

/// The per-block coordinates: query row 0 of the tile and the element offsets of head (b, h)
/// in q, k, v, out; plus the bias and mask bases.
struct Block {
    q0: Reg,
    /// The head and the batch item.
    h: Reg,
    bb: Reg,
    q_base: Reg,
    k_base: Reg,
    v_base: Reg,
    o_base: Reg,
    scores: Scores,
}

/// Turns raw q·k dot products into log₂-domain scores: scale, bias, dropped keys.
struct Scores {
    /// scale·log₂e.
    c: f32,
    /// (pointer, element base of (b, h), strides along Sq and Sk, dtype).
    bias: Option<(Reg, Reg, [u32; 2], DType)>,
    /// (pointer, element base of batch b, dtype).
    mask: Option<(Reg, Reg, DType)>,
    sq: u32,
    sk: u32,
    /// Whether a tile can reach past Sk.
    key_tail: bool,
}

impl Scores {
    /// Whether `key` is dropped (past Sk or masked), when that can happen.
    fn dropped(&self, b: &mut KernelBuilder, key: Reg) -> Option<Reg> {
        let past = self.key_tail.then(|| b.setp(Cmp::Ge, key, imm(self.sk)));
        let Some((ptr, base, dtype)) = self.mask else { return past };
        let inside = self.key_tail.then(|| b.setp(Cmp::Lt, key, imm(self.sk)));
        let idx = b.bin(BinOp::Add, Ty::U32, base, key);
        let ty = elem_ty(dtype);
        let a = b.addr(ptr, idx, ty.bytes());
        let m = ld_or_zero(b, Space::Global, ty, a, 1, inside)[0];
        let zero = if dtype.is_float() {
            let f = to_f32(b, m);
            b.setp(Cmp::Eq, f, Operand::F32(0.0))
        } else {
            b.setp(Cmp::Eq, m, Operand::Int(0))
        };
        Some(match past {
            Some(p) => b.bin(BinOp::Or, Ty::Pred, p, zero),
            None => zero,
        })
    }

    /// The score of a raw dot product `dot` for (`qrow`, `key`).
    fn score(&self, b: &mut KernelBuilder, dot: Reg, qrow: Reg, key: Reg, drop: Option<Reg>) -> Reg {
        let mut s = b.bin(BinOp::Mul, Ty::F32, dot, Operand::F32(self.c));
        if let Some((ptr, base, [ssq, ssk], dtype)) = self.bias {
            let qok = b.setp(Cmp::Lt, qrow, imm(self.sq));
            let kok = self.key_tail.then(|| b.setp(Cmp::Lt, key, imm(self.sk)));
            let ok = and(b, Some(qok), kok);
            let i = b.fma(Ty::U32, qrow, imm(ssq), base);
            let i = b.fma(Ty::U32, key, imm(ssk), i);
            let ty = elem_ty(dtype);
            let a = b.addr(ptr, i, ty.bytes());
            let v = ld_or_zero(b, Space::Global, ty, a, 1, ok)[0];
            let v = to_f32(b, v);
            s = b.fma(Ty::F32, v, Operand::F32(LOG2E), s);
        }
        match drop {
            Some(p) => b.selp(Ty::F32, Operand::F32(f32::NEG_INFINITY), s, p),
            None => s,
        }
    }
}

/// Reads the parameters and decomposes the block index (`bq` query rows per block, keys in
/// tiles of `bk`); `dtype` is the bias dtype (that of the inputs). With `maps`, q, k and v
/// are tensor-map parameters of these descriptions (the TMA kernel), else pointers.
fn block_setup(
    b: &mut KernelBuilder,
    s: &AttnSpec,
    dt: Dims,
    dtype: DType,
    (bq, bk): (u32, u32),
    maps: Option<[TensorMapDesc; 3]>,
) -> (Reg, Reg, Reg, Reg, Block) {
    let [pq, pk, pv] = match maps {
        Some(m) => m.map(|d| b.tensor_map_param(d)),
        None => [0; 3].map(|_| b.param(ParamTy::Ptr)),
    };
    let pbias = s.bias.map(|_| b.param(ParamTy::Ptr));
    let pmask = s.mask.map(|_| b.param(ParamTy::Ptr));
    let po = b.param(ParamTy::Ptr);
    let nqt = dt.sq.div_ceil(bq);
    let cta = b.special(Special::CtaidX);
    let qt = b.bin(BinOp::Rem, Ty::U32, cta, imm(nqt));
    let bh = b.bin(BinOp::Div, Ty::U32, cta, imm(nqt));
    let h = b.bin(BinOp::Rem, Ty::U32, bh, imm(dt.h));
    let bb = b.bin(BinOp::Div, Ty::U32, bh, imm(dt.h));
    let q0 = b.bin(BinOp::Mul, Ty::U32, qt, imm(bq));
    // Element offset of (b, s = 0, h, 0) in a [B, S, H, X] tensor: (b·S·H + h)·X.
    let base = |b: &mut KernelBuilder, seq: u32, x: u32| {
        let r = b.fma(Ty::U32, bb, imm(seq * dt.h), h);
        b.bin(BinOp::Mul, Ty::U32, r, imm(x))
    };
    let q_base = base(b, dt.sq, dt.d);
    let k_base = base(b, dt.sk, dt.d);
    let v_base = base(b, dt.sk, dt.dv);
    let o_base = base(b, dt.sq, dt.dv);
    let bias = match (pbias, s.bias) {
        (Some(ptr), Some(st)) => {
            let i = b.bin(BinOp::Mul, Ty::U32, bb, imm(st[0] as u32));
            let i = b.fma(Ty::U32, h, imm(st[1] as u32), i);
            Some((ptr, i, [st[2] as u32, st[3] as u32], dtype))
        }
        _ => None,
    };
    let mask = match (pmask, s.mask) {
        (Some(ptr), Some(dtype)) => {
            let i = b.bin(BinOp::Mul, Ty::U32, bb, imm(dt.sk));
            Some((ptr, i, dtype))
        }
        _ => None,
    };
    let scores = Scores {
        c: (s.scale * f64::from(LOG2E)) as f32,
        bias,
        mask,
        sq: dt.sq,
        sk: dt.sk,
        key_tail: !dt.sk.is_multiple_of(bk),
    };
    (pq, pk, pv, po, Block { q0, h, bb, q_base, k_base, v_base, o_base, scores })
}

/// Warp butterfly reduction of f32 `v` (every lane gets the result).
fn warp_reduce(b: &mut KernelBuilder, v: Reg, op: BinOp, lanes: &[i64]) -> Reg {
    let mut v = v;
    for &s in lanes {
        let o = b.shfl(ShflMode::Bfly, v, Operand::Int(s));
        v = b.bin(op, Ty::F32, v, o);
    }
    v
}

/// The tensor-core variants' softmax step over one tile of S fragments: each `[Reg; 4]`
/// holds 8 keys' scores of this lane's two rows, row a at elements 0, 1 and row b at 2, 3
/// (keys `k0 + q2 + 8j + e`, the mma.sync C and wgmma D layouts alike). Turns them into
/// scores ([`Scores`]), then runs [`online_step`] per row over its 4 lanes. Returns the
/// probabilities in the same layout and each row's rescale factor of the accumulator.
fn fragment_softmax(
    b: &mut KernelBuilder,
    scores: &Scores,
    sacc: &[[Reg; 4]],
    (k0, q2): (Reg, Reg),
    (row_a, row_b): (Reg, Reg),
    (m, l): ([Reg; 2], [Reg; 2]),
    zero: Reg,
) -> (Vec<[Reg; 4]>, [Reg; 2]) {
    let kq = b.bin(BinOp::Add, Ty::U32, k0, q2);
    let mut sc: Vec<[Reg; 4]> = Vec::with_capacity(sacc.len());
    for (j, acc) in sacc.iter().enumerate() {
        let mut t = [acc[0]; 4];
        for e in 0..2 {
            let key = b.bin(BinOp::Add, Ty::U32, kq, imm(j as u32 * 8 + e as u32));
            let drop = scores.dropped(b, key);
            t[e] = scores.score(b, acc[e], row_a, key, drop);
            t[e + 2] = scores.score(b, acc[e + 2], row_b, key, drop);
        }
        sc.push(t);
    }
    let mut probs: Vec<[Reg; 4]> = sc.clone();
    let mut corr = [zero; 2];
    for half in 0..2 {
        let mine: Vec<Reg> = sc.iter().flat_map(|t| [t[2 * half], t[2 * half + 1]]).collect();
        let (pr, c) = online_step(b, &mine, m[half], l[half], &[1, 2]);
        for (j, t) in probs.iter_mut().enumerate() {
            t[2 * half] = pr[2 * j];
            t[2 * half + 1] = pr[2 * j + 1];
        }
        corr[half] = c;
    }
    (probs, corr)
}

/// One online-softmax step for a row: folds the tile's scores `s` (this lane's share; the
/// row's lanes are combined with butterflies over `lanes`) into the running max `m` and this
/// lane's partial sum `l`. Returns the probabilities (ex2 of the scores minus the new max) and
/// the factor that rescales the previous accumulator.
fn online_step(b: &mut KernelBuilder, s: &[Reg], m: Reg, l: Reg, lanes: &[i64]) -> (Vec<Reg>, Reg) {
    let mut mx = b.mov(Ty::F32, m);
    for &x in s {
        mx = b.bin(BinOp::Max, Ty::F32, mx, x);
    }
    let mx = warp_reduce(b, mx, BinOp::Max, lanes);
    // Every score so far dropped: subtract 0 instead of −∞ (no NaN; the probabilities are 0).
    let none = b.setp(Cmp::Eq, mx, Operand::F32(f32::NEG_INFINITY));
    let mu = b.selp(Ty::F32, Operand::F32(0.0), mx, none);
    let dm = b.bin(BinOp::Sub, Ty::F32, m, mu);
    let corr = b.un(UnOp::Ex2, Ty::F32, dm);
    set(b, m, mx);
    let mut sum = b.bin(BinOp::Mul, Ty::F32, l, corr);
    let p: Vec<Reg> = s
        .iter()
        .map(|&x| {
            let d = b.bin(BinOp::Sub, Ty::F32, x, mu);
            let e = b.un(UnOp::Ex2, Ty::F32, d);
            sum = b.bin(BinOp::Add, Ty::F32, sum, e);
            e
        })
        .collect();
    set(b, l, sum);
    (p, corr)
}

/// 1/l, or 0 for a row with nothing visible (l = 0).
fn inv_sum(b: &mut KernelBuilder, l: Reg) -> Reg {
    let pos = b.setp(Cmp::Gt, l, Operand::F32(0.0));
    let r = b.un(UnOp::Rcp, Ty::F32, l);
    b.selp(Ty::F32, r, Operand::F32(0.0), pos)
}

/// The [`AttnSpec`] of an attention node: `ins` are the node's inputs (dims, dtype) in order
/// q, k, v, \[bias\], \[mask\].
pub fn spec_for_node(
    ins: &[(&[usize], DType)],
    (scale, bias, mask): (f64, bool, bool),
    dtype: DType,
) -> Result<AttnSpec, KernelError> {
    let want = 3 + usize::from(bias) + usize::from(mask);
    if ins.len() != want {
        return Err(KernelError::Invalid(format!("attention takes {want} inputs, got {}", ins.len())));
    }
    let dims4 = |i: usize| -> Result<[usize; 4], KernelError> {
        <[usize; 4]>::try_from(ins[i].0)
            .map_err(|_| KernelError::Invalid(format!("attention input {i} has shape {:?}, not rank 4", ins[i].0)))
    };
    let (q, k, v) = (dims4(0)?, dims4(1)?, dims4(2)?);
    let ins_of_dtype = if bias { 4 } else { 3 };
    if let Some((_, t)) = ins[..ins_of_dtype].iter().find(|i| i.1 != dtype) {
        return Err(KernelError::Unsupported(format!("attention with a {t} input and a {dtype} output")));
    }
    let [b, sq, h, d] = q;
    let (sk, dv) = (k[1], v[3]);
    if k != [b, sk, h, d] || v != [b, sk, h, dv] {
        return Err(KernelError::Invalid(format!("attention q {q:?}, k {k:?}, v {v:?} do not match")));
    }
    let full = [b, h, sq, sk];
    let bias_strides = if bias {
        let bd = ins[3].0;
        let pad = 4usize.checked_sub(bd.len());
        let ok = pad.is_some_and(|p| bd.iter().enumerate().all(|(i, &n)| n == 1 || n == full[p + i]));
        if !ok {
            return Err(KernelError::Invalid(format!("bias {bd:?} does not broadcast to {full:?}")));
        }
        let st = super::elementwise::broadcast_strides(bd, &full);
        Some([st[0], st[1], st[2], st[3]])
    } else {
        None
    };
    let mask_dtype = if mask {
        let (md, mt) = ins[ins.len() - 1];
        if md != [b, sk] {
            return Err(KernelError::Invalid(format!("key mask {md:?} is not [{b}, {sk}]")));
        }
        Some(mt)
    } else {
        None
    };
    Ok(AttnSpec { batch: b, sq, sk, heads: h, d, dv, scale, bias: bias_strides, mask: mask_dtype })
}
