//! The matmul family's shared description ([`GemmSpec`]: batch, transposes, bias, fused
//! epilogue, dtypes), its epilogue store, and the SIMT GEMM (`matmul_simt`) that covers every
//! layout and dtype. The tensor-core kernel for bf16/f16 is [`super::gemm_mma`].
//!
//! `matmul_simt`:
//! - Op: `out[b, m, n] = epilogue(Σ_k A[b, m, k] · B[b, k, n] + bias[n], extras…)`, the IR's
//!   `matmul` and `matmul_epilogue`. A is stored `[M, K]` or, transposed, `[K, M]`; B `[K, N]`
//!   or, transposed, `[N, K]`; both row-major per batch, with per-batch-axis element strides
//!   (0 where the operand is broadcast). Inputs f32, f16 or bf16; arithmetic in f32; output
//!   any float dtype, row-major `[batch…, M, N]`.
//! - Launch: 1-D grid of `batch · ceil(M/BM) · ceil(N/BN)` blocks (block `i`: batch
//!   `i / tiles`, then tile row, tile column), `(BM/TM)·(BN/TN)` threads; see
//!   [`simt_launch_dims`].
//! - Per K step of BK, the block stages A and B through shared memory as f32 (`As[BK][BM]`,
//!   `Bs[BK][BN]`; loads past M, N or K read a clamped in-bounds element and select 0), then
//!   each thread accumulates its TM×TN register tile with `fma` (16-byte shared loads where
//!   TM or TN is a multiple of 4).
//! - Tunables: BM, BN, BK, TM, TN ([`simt_param_space`]). Minimum SM: sm_80.

use vidrt_ir::DType;

use super::common::{elem_ty, from_f32, load_f32, need_float, offset_of, u32_of};
use super::elementwise::{eval, EwInput, Expr};
use super::im2col::{im2col_index, im2col_origin, PosSlot};
use crate::ptx::builder::{BinOp, Cmp, Guard, Inst, Kernel, KernelBuilder, Operand, ParamTy, Reg, Space, Special, Ty};
use crate::ptx::KernelError;

/// A fused elementwise epilogue: slot 0 is the product (bias added, rounded to the input
/// dtype as the unfused matmul's output would be); slot `k ≥ 1` is `extra[k − 1]`, with
/// strides over the output's axes (`[batch…, M, N]`; 0 where broadcast).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmEpilogue {
    pub expr: Expr,
    pub extra: Vec<EwInput>,
}

/// One (batched) matrix product with its bias and epilogue.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The output's batch axes (empty for one matrix).
    pub batch: Vec<usize>,
    /// A's and B's element strides per batch axis (0 where broadcast).
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
    /// A stored `[K, M]` instead of `[M, K]`.
    pub trans_a: bool,
    /// B stored `[N, K]` instead of `[K, N]` (a linear layer's `[out, in]` weight).
    pub trans_b: bool,
    /// A's, B's and the bias's dtype.
    pub in_dtype: DType,
    pub out_dtype: DType,
    /// A bias `[N]` (in `in_dtype`) follows A and B in the parameters.
    pub bias: bool,
    pub epilogue: Option<GemmEpilogue>,
}

impl GemmSpec {
    /// A plain `[M, K] · [K, N]` (or `[N, K]` with `trans_b`) product, no bias or epilogue.
    pub fn plain(m: usize, n: usize, k: usize, trans_b: bool, in_dtype: DType, out_dtype: DType) -> GemmSpec {
        GemmSpec {
            m,
            n,
            k,
            batch: vec![],
            a_batch: vec![],
            b_batch: vec![],
            trans_a: false,
            trans_b,
            in_dtype,
            out_dtype,
            bias: false,
            epilogue: None,
        }
    }

    /// The number of matrices in the batch.
    pub fn batch_count(&self) -> usize {
        self.batch.iter().product()
    }

    /// The output's dims `[batch…, M, N]`.
    pub fn out_dims(&self) -> Vec<usize> {
        let mut d = self.batch.clone();
        d.extend([self.m, self.n]);
        d
    }

    /// Checks the spec's consistency and that every index fits 32 bits.
    pub(crate) fn check(&self) -> Result<(), KernelError> {
        need_float(self.in_dtype, "matmul inputs")?;
        need_float(self.out_dtype, "matmul output")?;
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return Err(KernelError::Invalid(format!("matmul shape {}x{}x{} is empty", self.m, self.n, self.k)));
        }
        if self.a_batch.len() != self.batch.len() || self.b_batch.len() != self.batch.len() {
            return Err(KernelError::Invalid("matmul batch strides do not match the batch axes".into()));
        }
        let out: usize = self.out_dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        u32_of(out, "matmul output elements")?;
        let span = |strides: &[usize], mat: usize| {
            self.batch
                .iter()
                .zip(strides)
                .try_fold(mat, |acc, (&d, &s)| d.checked_sub(1)?.checked_mul(s)?.checked_add(acc))
                .unwrap_or(usize::MAX)
        };
        u32_of(span(&self.a_batch, self.m.saturating_mul(self.k)), "matmul A elements")?;
        u32_of(span(&self.b_batch, self.n.saturating_mul(self.k)), "matmul B elements")?;
        if let Some(e) = &self.epilogue {
            let rank = self.batch.len() + 2;
            if e.extra.iter().any(|x| x.strides.len() != rank) {
                return Err(KernelError::Invalid("epilogue input strides must cover the output's axes".into()));
            }
            for x in &e.extra {
                need_float(x.dtype, "matmul epilogue inputs")?;
            }
        }
        Ok(())
    }

    /// A short description for kernel headers.
    pub fn describe(&self) -> String {
        let a = if self.trans_a { "[K,M]" } else { "[M,K]" };
        let b = if self.trans_b { "[N,K]" } else { "[K,N]" };
        format!(
            "batch {:?} (A strides {:?}, B strides {:?}) x M={} N={} K={}; A {a} B {b} {} -> {}; bias {}; epilogue {}",
            self.batch,
            self.a_batch,
            self.b_batch,
            self.m,
            self.n,
            self.k,
            self.in_dtype,
            self.out_dtype,
            self.bias,
            self.epilogue.as_ref().map_or("none".to_string(), |e| format!("{:?}", e.expr)),
        )
    }
}

/// How results are stored: the matrix shape, dtypes, bias axis, epilogue and the output's
/// dims (whose row-major linear index is `batch·M·N + row·N + col`).
pub(crate) struct Store<'a> {
    pub m: usize,
    pub n: usize,
    pub in_dtype: DType,
    pub out_dtype: DType,
    /// `Some(true)`: a bias per row (`[M]`, conv channels); `Some(false)`: per column (`[N]`).
    pub bias_rows: Option<bool>,
    pub epilogue: Option<&'a GemmEpilogue>,
    pub out_dims: Vec<usize>,
}

impl GemmSpec {
    pub(crate) fn store(&self) -> Store<'_> {
        Store {
            m: self.m,
            n: self.n,
            in_dtype: self.in_dtype,
            out_dtype: self.out_dtype,
            bias_rows: self.bias.then_some(false),
            epilogue: self.epilogue.as_ref(),
            out_dims: self.out_dims(),
        }
    }
}

/// The pointer parameters after A and B: the bias, the epilogue's inputs, the output.
pub(crate) struct OutPtrs {
    bias: Option<Reg>,
    extra: Vec<Reg>,
    out: Reg,
}

impl OutPtrs {
    /// Declares the parameters (after A and B) in the IR's input order, then the output.
    pub(crate) fn declare(b: &mut KernelBuilder, st: &Store) -> OutPtrs {
        let bias = st.bias_rows.map(|_| b.param(ParamTy::Ptr));
        let n_extra = st.epilogue.map_or(0, |e| e.extra.len());
        let extra = (0..n_extra).map(|_| b.param(ParamTy::Ptr)).collect();
        let out = b.param(ParamTy::Ptr);
        OutPtrs { bias, extra, out }
    }
}

pub(crate) fn imm(v: u32) -> Operand {
    Operand::Int(i64::from(v))
}

/// Stores accumulator `v` (f32) for output element (`row`, `col`) of the matrix whose first
/// output element is `out_base`; rows or columns past the matrix are not stored (every load
/// on the way reads a clamped, in-bounds element).
pub(crate) fn store_result(
    b: &mut KernelBuilder,
    st: &Store,
    ptrs: &OutPtrs,
    out_base: Reg,
    (row, col): (Reg, Reg),
    v: Reg,
) -> Result<(), KernelError> {
    let (mu, nu) = (u32_of(st.m, "M")?, u32_of(st.n, "N")?);
    let rok = b.setp(Cmp::Lt, row, imm(mu));
    let cok = b.setp(Cmp::Lt, col, imm(nu));
    let ok = b.bin(BinOp::And, Ty::Pred, rok, cok);
    let rowc = b.bin(BinOp::Min, Ty::U32, row, imm(mu - 1));
    let colc = b.bin(BinOp::Min, Ty::U32, col, imm(nu - 1));
    let local = b.fma(Ty::U32, rowc, imm(nu), colc);
    let idx = b.bin(BinOp::Add, Ty::U32, out_base, local);
    let mut v = v;
    if let (Some(pb), Some(rows)) = (ptrs.bias, st.bias_rows) {
        let bv = load_f32(b, pb, if rows { rowc } else { colc }, st.in_dtype);
        v = b.bin(BinOp::Add, Ty::F32, v, bv);
    }
    if let Some(e) = st.epilogue {
        // The unfused product's result is rounded to its dtype before the epilogue reads it.
        let ty = elem_ty(st.in_dtype);
        if ty != Ty::F32 {
            let r = b.cvt(ty, v);
            v = super::common::to_f32(b, r);
        }
        let mut slots = vec![v];
        for (x, &p) in e.extra.iter().zip(&ptrs.extra) {
            let off = offset_of(b, idx, &st.out_dims, &x.strides)?;
            slots.push(load_f32(b, p, off, x.dtype));
        }
        v = eval(b, &e.expr, &slots)?;
    }
    let ty = elem_ty(st.out_dtype);
    let narrowed = from_f32(b, v, ty);
    let ad = b.addr(ptrs.out, idx, ty.bytes());
    b.push(Inst::St {
        space: Space::Global,
        src: vec![narrowed],
        addr: ad,
        offset: 0,
        guard: Some(Guard { pred: ok, negate: false }),
    });
    Ok(())
}

/// The batch index of this block and its tile row and column, for `tiles_n` tile columns and
/// `tiles` tiles per matrix.
pub(crate) fn block_coords(b: &mut KernelBuilder, tiles: u32, tiles_n: u32) -> (Reg, Reg, Reg) {
    let cta = b.special(Special::CtaidX);
    tile_coords(b, cta, tiles, tiles_n)
}

/// [`block_coords`] of tile number `tile` (a register) instead of the block's own.
pub(crate) fn tile_coords(b: &mut KernelBuilder, tile: Reg, tiles: u32, tiles_n: u32) -> (Reg, Reg, Reg) {
    let cta = tile;
    let bi = b.bin(BinOp::Div, Ty::U32, cta, imm(tiles));
    let t = b.bin(BinOp::Rem, Ty::U32, cta, imm(tiles));
    let tm = b.bin(BinOp::Div, Ty::U32, t, imm(tiles_n));
    let tn = b.bin(BinOp::Rem, Ty::U32, t, imm(tiles_n));
    (bi, tm, tn)
}

/// SIMT generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimtParams {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

impl SimtParams {
    pub fn threads(self) -> u32 {
        if self.tm == 0 || self.tn == 0 {
            return 0;
        }
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    fn check(self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Invalid(format!("matmul_simt parameters {self:?}: {why}")));
        if ![1, 2, 4, 8].contains(&self.tm) || ![1, 2, 4, 8].contains(&self.tn) {
            return bad("TM and TN must be 1, 2, 4 or 8");
        }
        if self.bm == 0 || self.bn == 0 || !self.bm.is_multiple_of(self.tm) || !self.bn.is_multiple_of(self.tn) {
            return bad("the thread tile must divide the block tile");
        }
        let t = self.threads();
        if !t.is_multiple_of(32) || t == 0 || t > 1024 {
            return bad("the block must have a multiple of 32 threads, at most 1024");
        }
        if self.bk == 0 || !(self.bm * self.bk).is_multiple_of(t) || !(self.bn * self.bk).is_multiple_of(t) {
            return bad("the tiles' elements must divide evenly among the threads");
        }
        if 4 * self.bk * (self.bm + self.bn) > crate::ptx::builder::STATIC_SHARED_MAX {
            return bad("more than 48 KiB of shared memory");
        }
        Ok(())
    }
}

impl crate::ptx::tune::Point for SimtParams {
    const NAMES: &'static [&'static str] = &["bm", "bn", "bk", "tm", "tn"];

    fn values(self) -> Vec<u32> {
        vec![self.bm, self.bn, self.bk, self.tm, self.tn]
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        match *v {
            [bm, bn, bk, tm, tn] => Some(SimtParams { bm, bn, bk, tm, tn }),
            _ => None,
        }
    }
}

/// Every SIMT parameter point (the tuning space of `matmul_simt` and `conv3d_simt`).
pub fn simt_param_space() -> Vec<SimtParams> {
    vec![
        SIMT_SMALL,
        SIMT_LARGE,
        SimtParams { bm: 128, bn: 64, bk: 16, tm: 8, tn: 4 },
        SimtParams { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
    ]
}

/// The lowering's heuristic SIMT point for small products.
pub const SIMT_SMALL: SimtParams = SimtParams { bm: 32, bn: 32, bk: 16, tm: 2, tn: 2 };
/// The lowering's heuristic SIMT point for the rest.
pub const SIMT_LARGE: SimtParams = SimtParams { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };

/// (grid, block) of `matmul_simt` for `spec` at `p`.
pub fn simt_launch_dims(spec: &GemmSpec, p: SimtParams) -> Result<(u32, u32), KernelError> {
    let tiles = spec.m.div_ceil(p.bm as usize).saturating_mul(spec.n.div_ceil(p.bn as usize));
    Ok((u32_of(tiles.saturating_mul(spec.batch_count()), "matmul blocks")?, p.threads()))
}

/// Where one thread's share of a staged tile comes from: the tile-local row (M or N) and k,
/// and the shared offset it goes to.
struct Slot {
    mn: Reg,
    kk: Reg,
    soff: Reg,
}

/// Per-thread slots of a `rows × BK` tile whose global layout is K-contiguous (`k_fast`) or
/// row-contiguous, stored in shared memory as `[BK][rows]` f32 at byte `sbase`.
fn slots(b: &mut KernelBuilder, tid: Reg, rows: u32, bk: u32, k_fast: bool, sbase: u32, threads: u32) -> Vec<Slot> {
    (0..rows * bk / threads)
        .map(|i| {
            let e = b.bin(BinOp::Add, Ty::U32, tid, imm(i * threads));
            let (mn, kk) = if k_fast {
                (b.bin(BinOp::Div, Ty::U32, e, imm(bk)), b.bin(BinOp::Rem, Ty::U32, e, imm(bk)))
            } else {
                (b.bin(BinOp::Rem, Ty::U32, e, imm(rows)), b.bin(BinOp::Div, Ty::U32, e, imm(rows)))
            };
            let s = b.fma(Ty::U32, kk, imm(rows), mn);
            let soff = b.fma(Ty::U32, s, imm(4), imm(sbase));
            Slot { mn, kk, soff }
        })
        .collect()
}

/// Stages one operand's slice at `k0`: element (row `r0 + mn`, `k0 + kk`) of a matrix with
/// `rows` rows, stored `[rows, K]` (`k_fast`) or `[K, rows]`, into shared memory.
#[allow(clippy::too_many_arguments)]
fn stage(
    b: &mut KernelBuilder,
    slots: &[Slot],
    base: Reg,
    r0: Reg,
    k0: Reg,
    (rows, k): (u32, u32),
    k_fast: bool,
    dtype: DType,
    smem_base: Reg,
) {
    for s in slots {
        let gr = b.bin(BinOp::Add, Ty::U32, r0, s.mn);
        let gk = b.bin(BinOp::Add, Ty::U32, k0, s.kk);
        let rok = b.setp(Cmp::Lt, gr, imm(rows));
        let kok = b.setp(Cmp::Lt, gk, imm(k));
        let ok = b.bin(BinOp::And, Ty::Pred, rok, kok);
        let grc = b.bin(BinOp::Min, Ty::U32, gr, imm(rows - 1));
        let gkc = b.bin(BinOp::Min, Ty::U32, gk, imm(k - 1));
        let idx = if k_fast { b.fma(Ty::U32, grc, imm(k), gkc) } else { b.fma(Ty::U32, gkc, imm(rows), grc) };
        let v = load_f32(b, base, idx, dtype);
        let v = b.selp(Ty::F32, v, Operand::F32(0.0), ok);
        let ad = b.bin(BinOp::Add, Ty::U32, smem_base, s.soff);
        b.st(Space::Shared, ad, v);
    }
}

/// The geometry of a conv3d as an implicit GEMM: `M = Cout`, `N = To·Ho·Wo`,
/// `K = Cin·kt·kh·kw`, with `B[k, n]` the input element under tap `k` of output position `n`
/// (zero in the padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub cin: usize,
    /// The input's (T, H, W).
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Padding before each axis (the padding after only shapes the output).
    pub pad_lo: [usize; 3],
    /// The output's (T, H, W).
    pub output: [usize; 3],
}

impl ConvGeom {
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Elements of one batch item of the input.
    pub fn input_elems(&self) -> usize {
        self.cin * self.input.iter().product::<usize>()
    }
}

/// Stages the implicit im2col slice at `k0` of the batch item whose input starts at `x`.
#[allow(clippy::too_many_arguments)]
fn stage_im2col(
    b: &mut KernelBuilder,
    slots: &[Slot],
    pos: &[PosSlot],
    x: Reg,
    k0: Reg,
    g: &ConvGeom,
    dtype: DType,
    smem_base: Reg,
) {
    for (s, ps) in slots.iter().zip(pos) {
        let gk = b.bin(BinOp::Add, Ty::U32, k0, s.kk);
        let (idx, ok) = im2col_index(b, ps, gk, g);
        let v = load_f32(b, x, idx, dtype);
        let v = b.selp(Ty::F32, v, Operand::F32(0.0), ok);
        let ad = b.bin(BinOp::Add, Ty::U32, smem_base, s.soff);
        b.st(Space::Shared, ad, v);
    }
}

/// Loads `n` consecutive shared f32 values at `addr` (16-byte loads where `n` allows).
fn ld_shared_run(b: &mut KernelBuilder, addr: Reg, n: u32) -> Vec<Reg> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < n {
        let w = if n - at >= 4 {
            4
        } else if n - at >= 2 {
            2
        } else {
            1
        };
        let ad = if at == 0 { addr } else { b.bin(BinOp::Add, Ty::U32, addr, imm(4 * at)) };
        if w == 1 {
            out.push(b.ld(Space::Shared, Ty::F32, ad));
        } else {
            out.extend(b.ld_vec(Space::Shared, Ty::F32, ad, w as usize));
        }
        at += w;
    }
    out
}

/// The B operand of a SIMT product.
pub(crate) enum BOperand<'a> {
    /// A matrix stored `[K, N]` or, `trans`, `[N, K]`, with element strides per batch axis.
    Matrix { trans: bool, strides: &'a [usize] },
    /// The implicit im2col of a conv input `[batch, Cin, T, H, W]`.
    Im2col(&'a ConvGeom),
}

/// A SIMT product: `batch` matrices `A · B` stored through `store`.
pub(crate) struct Core<'a> {
    pub k: usize,
    pub batch: &'a [usize],
    /// A's element strides per batch axis; A stored `[M, K]` or, `trans_a`, `[K, M]`.
    pub a_batch: &'a [usize],
    pub trans_a: bool,
    pub b: BOperand<'a>,
    pub store: Store<'a>,
    /// The kernel's first parameter is B, then A (a conv's x, w order).
    pub b_first: bool,
}

/// Generates the SIMT kernel for `core` at `p`. Parameters: A, B, \[bias\], [epilogue
/// inputs…], out.
pub(crate) fn simt_kernel(name: &str, header: String, core: &Core, p: SimtParams) -> Result<Kernel, KernelError> {
    p.check()?;
    let st = &core.store;
    let (mu, nu, ku) = (u32_of(st.m, "M")?, u32_of(st.n, "N")?, u32_of(core.k, "K")?);
    let (tiles_m, tiles_n) = (mu.div_ceil(p.bm), nu.div_ceil(p.bn));
    let threads = p.threads();
    let mut b = KernelBuilder::new(name, header);
    b.block(threads);
    let (first, second) = (b.param(ParamTy::Ptr), b.param(ParamTy::Ptr));
    let (pa, pb) = if core.b_first { (second, first) } else { (first, second) };
    let ptrs = OutPtrs::declare(&mut b, st);
    let a_bytes = 4 * p.bk * p.bm;
    let smem = b.shared(a_bytes + 4 * p.bk * p.bn);

    let tid = b.special(Special::TidX);
    let (bi, tm, tn) = block_coords(&mut b, tiles_m * tiles_n, tiles_n);
    let m0 = b.bin(BinOp::Mul, Ty::U32, tm, imm(p.bm));
    let n0 = b.bin(BinOp::Mul, Ty::U32, tn, imm(p.bn));
    let esz = elem_ty(st.in_dtype).bytes();
    let a_off = offset_of(&mut b, bi, core.batch, core.a_batch)?;
    let pa_b = b.addr(pa, a_off, esz);
    let (b_off, b_kfast) = match &core.b {
        BOperand::Matrix { trans, strides } => (offset_of(&mut b, bi, core.batch, strides)?, *trans),
        BOperand::Im2col(g) => (b.bin(BinOp::Mul, Ty::U32, bi, imm(u32_of(g.input_elems(), "conv input")?)), false),
    };
    let pb_b = b.addr(pb, b_off, esz);
    let sa = slots(&mut b, tid, p.bm, p.bk, !core.trans_a, 0, threads);
    let sb = slots(&mut b, tid, p.bn, p.bk, b_kfast, a_bytes, threads);
    let pos = match &core.b {
        BOperand::Im2col(g) => sb
            .iter()
            .map(|s| {
                let gn = b.bin(BinOp::Add, Ty::U32, n0, s.mn);
                im2col_origin(&mut b, gn, g, nu)
            })
            .collect(),
        BOperand::Matrix { .. } => Vec::new(),
    };
    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));

    let cols = p.bn / p.tn;
    let ty_ = b.bin(BinOp::Div, Ty::U32, tid, imm(cols));
    let tx = b.bin(BinOp::Rem, Ty::U32, tid, imm(cols));
    // This thread's first A column and B column in shared memory (bytes).
    let a_lane = b.fma(Ty::U32, ty_, imm(4 * p.tm), base);
    let b_lane = b.fma(Ty::U32, tx, imm(4 * p.tn), base);
    let b_lane = b.bin(BinOp::Add, Ty::U32, b_lane, imm(a_bytes));

    let zero = b.imm_f32(0.0);
    let acc: Vec<Reg> = (0..p.tm * p.tn).map(|_| b.mov(Ty::F32, zero)).collect();
    let k0 = b.imm_u32(0);
    super::common::for_range_rolled(&mut b, k0, ku, p.bk, |b, k0| {
        stage(b, &sa, pa_b, m0, k0, (mu, ku), !core.trans_a, st.in_dtype, base);
        match &core.b {
            BOperand::Matrix { trans, .. } => stage(b, &sb, pb_b, n0, k0, (nu, ku), *trans, st.in_dtype, base),
            BOperand::Im2col(g) => stage_im2col(b, &sb, &pos, pb_b, k0, g, st.in_dtype, base),
        }
        b.bar_sync();
        for kk in 0..p.bk {
            let aa = b.bin(BinOp::Add, Ty::U32, a_lane, imm(4 * kk * p.bm));
            let av = ld_shared_run(b, aa, p.tm);
            let ba = b.bin(BinOp::Add, Ty::U32, b_lane, imm(4 * kk * p.bn));
            let bv = ld_shared_run(b, ba, p.tn);
            for (i, &x) in av.iter().enumerate() {
                for (j, &y) in bv.iter().enumerate() {
                    let c = acc[i * p.tn as usize + j];
                    b.push(Inst::Fma { dst: c, a: Operand::Reg(x), b: Operand::Reg(y), c: Operand::Reg(c) });
                }
            }
        }
        b.bar_sync();
        Ok(())
    })?;

    let out_base = b.bin(BinOp::Mul, Ty::U32, bi, imm(mu * nu));
    let row0 = b.fma(Ty::U32, ty_, imm(p.tm), m0);
    let col0 = b.fma(Ty::U32, tx, imm(p.tn), n0);
    for i in 0..p.tm {
        let row = b.bin(BinOp::Add, Ty::U32, row0, imm(i));
        for j in 0..p.tn {
            let col = b.bin(BinOp::Add, Ty::U32, col0, imm(j));
            store_result(&mut b, st, &ptrs, out_base, (row, col), acc[(i * p.tn + j) as usize])?;
        }
    }
    Ok(b.finish())
}

/// The SIMT GEMM for `spec` at `p`. Parameters: A, B, \[bias\], \[epilogue inputs…\], out.
pub fn gemm_simt(name: &str, spec: &GemmSpec, p: SimtParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    let (grid, _) = simt_launch_dims(spec, p)?;
    let header = format!(
        "matmul_simt {name}: {}\nf32 fma accumulation, A and B staged through shared memory as f32; minimum sm_80\n\
         1-D grid of batch*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {} threads; params BM={} BN={} BK={} TM={} TN={}",
        spec.describe(),
        p.threads(),
        p.bm,
        p.bn,
        p.bk,
        p.tm,
        p.tn
    );
    let core = Core {
        k: spec.k,
        batch: &spec.batch,
        a_batch: &spec.a_batch,
        trans_a: spec.trans_a,
        b: BOperand::Matrix { trans: spec.trans_b, strides: &spec.b_batch },
        store: spec.store(),
        b_first: false,
    };
    simt_kernel(name, header, &core, p)
}
