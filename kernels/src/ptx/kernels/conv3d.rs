//! Conv3d as an implicit GEMM, on tensor cores (`conv3d_mma`, `conv3d_mma_cl`, bf16/f16) or SIMT
//! (`conv3d_simt`, every float dtype): no im2col buffer.
//!
//! - Op: the IR's `conv3d` and `conv3d_epilogue`: `out[b, co, to, ho, wo] = epilogue(bias[co] +
//!   Σ_{ci, dt, dh, dw} w[co, ci, dt, dh, dw] · x[b, ci, to·st + dt − pt, ho·sh + dh − ph,
//!   wo·sw + dw − pw], extras…)`, zero outside the input (the VAE's causal padding is
//!   `pt = kt − 1` before and nothing after; its cached frames arrive concatenated in front of x).
//! - As a GEMM per batch item: M = Cout, N = To·Ho·Wo, K = Cin·kt·kh·kw; A is the weight
//!   `[Cout, K]` (row-major as stored), B the implicit im2col of x, gathered while staging the
//!   K slice into shared memory (padding taps select 0). 1×1×1 convs with stride 1 and no
//!   padding read x directly as the `[Cin, T·H·W]` matrix.
//! - Layouts: x `[B, Cin, T, H, W]`, w `[Cout, Cin, kt, kh, kw]`, bias `[Cout]`, out
//!   `[B, Cout, To, Ho, Wo]`, all row-major; f32, f16 or bf16, arithmetic in f32.
//! - `conv3d_mma`: the `matmul_mma` pipeline (`ldmatrix`, `mma.sync.m16n8k16`, f32
//!   accumulation) with the weight slice copied by `cp.async` (needs K a multiple of 8) and
//!   the im2col slice gathered into the `[BN][BK]` stage: for stride-1 convs whose widths
//!   are multiples of 8 and whose width taps shift by at most one column (the VAE's), by one
//!   16-byte load of 8 output positions per k (and a 4-byte one beside it for a shifted
//!   tap), packed into one shared store per position; else, where the output width is a
//!   multiple of 8, by 16-bit loads, each thread taking 8 positions of one output row and
//!   working out each k's taps and row once for all 8; otherwise each thread keeps one output
//!   position, `n = tid % BN`, and decomposes every k it walks. The gather is staged through
//!   registers: the loads of slice k+1 are issued before the MMAs of slice k and stored to
//!   shared memory after them, so they are in flight while the tensor cores work (cp.async
//!   cannot gather 2-byte elements). Tunables [`MmaParams`] with BN dividing the block's
//!   threads, the two-stage points only ([`mma_param_space`]: the register-staged gather
//!   runs one slice ahead, so deeper stages would only buy the weight copy). See
//!   [`mma_unsupported`] and [`mma_launch_dims`].
//! - `conv3d_mma_cl` ([`conv3d_mma_cl`]): the same pipeline for a channels-last input `[B, T,
//!   H, W, Cin]` and weight `[Cout, kt, kh, kw, Cin]` (Cin a multiple of 8), K ordered
//!   tap-major (k = tap·Cin + ci): every 8 k of a position are one 16-byte run of its input
//!   pixel, so the im2col slice is copied by `cp.async` as a stored matrix's (zero-fill in the
//!   padding), with no gather through registers and 2 to 4 stages. The lowering makes the
//!   layout with two [`super::copy::transpose`] launches into node scratch. The tensor-core
//!   family's point ([`ConvMmaPoint`], text `cl=0|1`) says which of the two runs, so the
//!   tuner times the gather against the transposes plus the channels-last conv; without
//!   tuning, channels-last where the conv allows it ([`conv_mma_heuristic`]).
//! - Launch and tunables of `conv3d_simt`: those of `matmul_simt`
//!   ([`super::gemm::SimtParams`]) with the batch axis = B, M = Cout, N = To·Ho·Wo; see
//!   [`launch_dims`]. Minimum SM: sm_80.

use vidrt_ir::DType;

use super::common::{need_float, u32_of};
use super::gemm::{self, BOperand, ConvGeom, Core, GemmEpilogue, SimtParams, Store};
use super::gemm_mma::{self, MmaB, MmaCore, MmaParams};
use crate::ptx::{Kernel, KernelError};

/// One conv3d node.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub batch: usize,
    pub cout: usize,
    pub geom: ConvGeom,
    /// x's, w's and the bias's dtype.
    pub in_dtype: DType,
    pub out_dtype: DType,
    pub bias: bool,
    /// Extras' strides are over the output's axes `[B, Cout, To, Ho, Wo]`.
    pub epilogue: Option<GemmEpilogue>,
}

impl ConvSpec {
    /// The spec of a conv of x `[B, Cin, T, H, W]` by w `[Cout, Cin, kt, kh, kw]`.
    pub fn new(
        x: &[usize],
        w: &[usize],
        stride: [usize; 3],
        pad: [[usize; 2]; 3],
        dtypes: (DType, DType),
        bias: bool,
        epilogue: Option<GemmEpilogue>,
    ) -> Result<ConvSpec, KernelError> {
        let (&[b, cin, t, h, wd], &[cout, wcin, kt, kh, kw]) = (x, w) else {
            return Err(KernelError::Invalid(format!("conv3d needs x and w of rank 5, got {x:?} and {w:?}")));
        };
        if wcin != cin {
            return Err(KernelError::Invalid(format!("conv3d channels differ: x {x:?}, w {w:?}")));
        }
        let input = [t, h, wd];
        let kernel = [kt, kh, kw];
        let mut output = [0; 3];
        for ax in 0..3 {
            let padded = input[ax].saturating_add(pad[ax][0]).saturating_add(pad[ax][1]);
            if stride[ax] == 0 || kernel[ax] == 0 || padded < kernel[ax] {
                return Err(KernelError::Invalid(format!("conv3d axis {ax}: kernel larger than the padded input")));
            }
            output[ax] = (padded - kernel[ax]) / stride[ax] + 1;
        }
        let geom = ConvGeom { cin, input, kernel, stride, pad_lo: [pad[0][0], pad[1][0], pad[2][0]], output };
        let spec = ConvSpec { batch: b, cout, geom, in_dtype: dtypes.0, out_dtype: dtypes.1, bias, epilogue };
        spec.check()?;
        Ok(spec)
    }

    pub(super) fn mnk(&self) -> (usize, usize, usize) {
        let g = &self.geom;
        (self.cout, g.output.iter().product(), g.cin * g.kernel.iter().product::<usize>())
    }

    /// The output's dims `[B, Cout, To, Ho, Wo]`.
    pub fn out_dims(&self) -> Vec<usize> {
        let o = self.geom.output;
        vec![self.batch, self.cout, o[0], o[1], o[2]]
    }

    /// A pointwise conv (1×1×1, stride 1, no padding) is a plain GEMM over x.
    pub fn is_pointwise(&self) -> bool {
        let g = &self.geom;
        g.kernel == [1; 3] && g.stride == [1; 3] && g.pad_lo == [0; 3] && g.output == g.input
    }

    pub(super) fn check(&self) -> Result<(), KernelError> {
        need_float(self.in_dtype, "conv3d inputs")?;
        need_float(self.out_dtype, "conv3d output")?;
        let (m, n, k) = self.mnk();
        if self.batch == 0 || m == 0 || n == 0 || k == 0 || self.geom.input.contains(&0) {
            return Err(KernelError::Invalid(format!("conv3d of an empty tensor: {:?}", self.out_dims())));
        }
        let total = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        u32_of(total(&self.out_dims()), "conv3d output elements")?;
        u32_of(self.batch.saturating_mul(self.geom.input_elems()), "conv3d input elements")?;
        u32_of(m.saturating_mul(k), "conv3d weight elements")?;
        // Padded coordinates (origin + tap) must not wrap.
        for ax in 0..3 {
            let g = &self.geom;
            let reach = g.output[ax].saturating_mul(g.stride[ax]).saturating_add(g.kernel[ax]);
            u32_of(reach.saturating_add(g.pad_lo[ax]), "conv3d padded extent")?;
        }
        if let Some(e) = &self.epilogue {
            if e.extra.iter().any(|x| x.strides.len() != 5) {
                return Err(KernelError::Invalid("epilogue input strides must cover the output's 5 axes".into()));
            }
        }
        Ok(())
    }

    /// A one-line description for kernel headers.
    pub fn describe(&self) -> String {
        let g = &self.geom;
        format!(
            "x [{}, {}, {:?}] * w [{}, {}, {:?}] stride {:?} pad_lo {:?} -> [{}, {}, {:?}] {} -> {}; bias {}; epilogue {}",
            self.batch,
            g.cin,
            g.input,
            self.cout,
            g.cin,
            g.kernel,
            g.stride,
            g.pad_lo,
            self.batch,
            self.cout,
            g.output,
            self.in_dtype,
            self.out_dtype,
            self.bias,
            self.epilogue.as_ref().map_or("none".to_string(), |e| format!("{:?}", e.expr)),
        )
    }

    pub(super) fn store(&self) -> Store<'_> {
        let (m, n, _) = self.mnk();
        Store {
            m,
            n,
            in_dtype: self.in_dtype,
            out_dtype: self.out_dtype,
            bias_rows: self.bias.then_some(true),
            epilogue: self.epilogue.as_ref(),
            out_dims: self.out_dims(),
        }
    }
}

/// Every parameter point (the SIMT GEMM's).
pub fn param_space() -> Vec<SimtParams> {
    gemm::simt_param_space()
}

/// (grid, block) for `spec` at `p`.
pub fn launch_dims(spec: &ConvSpec, p: SimtParams) -> Result<(u32, u32), KernelError> {
    let (m, n, _) = spec.mnk();
    let tiles = m.div_ceil(p.bm as usize).saturating_mul(n.div_ceil(p.bn as usize));
    Ok((u32_of(tiles.saturating_mul(spec.batch), "conv3d blocks")?, p.threads()))
}

/// The implicit-GEMM conv3d for `spec` at `p`. Parameters: x, w, \[bias\], \[epilogue inputs…\],
/// out — w is the GEMM's A and x its B, so the kernel takes them in the IR's order.
pub fn conv3d_simt(name: &str, spec: &ConvSpec, p: SimtParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    let (m, n, k) = spec.mnk();
    let (grid, block) = launch_dims(spec, p)?;
    let g = &spec.geom;
    let header = format!(
        "conv3d_simt {name}: {}\nimplicit GEMM M={m} N={n} K={k}{}, f32 fma accumulation; minimum sm_80\n\
         1-D grid of B*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {block} threads; params BM={} BN={} BK={} TM={} TN={}",
        spec.describe(),
        if spec.is_pointwise() {
            " (pointwise: x read as a [Cin, THW] matrix)"
        } else {
            " (im2col gathered in the K loop)"
        },
        p.bm,
        p.bn,
        p.bk,
        p.tm,
        p.tn
    );
    let x_stride = [g.input_elems()];
    let core = Core {
        k,
        batch: &[spec.batch],
        a_batch: &[0],
        trans_a: false,
        b: if spec.is_pointwise() {
            BOperand::Matrix { trans: false, strides: &x_stride }
        } else {
            BOperand::Im2col(g)
        },
        store: spec.store(),
        // x (the GEMM's B) comes first in the IR's input order.
        b_first: true,
    };
    gemm::simt_kernel(name, header, &core, p)
}

/// Why `spec` cannot run on the tensor-core conv, or `None` when it can.
pub fn mma_unsupported(spec: &ConvSpec) -> Option<String> {
    if !matches!(spec.in_dtype, DType::BF16 | DType::F16) {
        return Some(format!("conv3d_mma takes bf16 or f16 inputs, not {}", spec.in_dtype));
    }
    let (_, _, k) = spec.mnk();
    (!k.is_multiple_of(8)).then(|| format!("conv3d_mma needs Cin·kt·kh·kw a multiple of 8, got {k}"))
}

/// The parameter points of `conv3d_mma`: the two-stage points of `matmul_mma`'s space
/// (32×32, 64×64, 128×64), then 128×128×32 at two stages with 32×64 warp tiles (40 KiB of
/// static shared memory): every Cout tile gathers its positions' im2col again, so the wider
/// tile gathers half as much per product as 128×64 and a quarter as much as 64×64.
pub fn mma_param_space() -> Vec<MmaParams> {
    let mut space: Vec<MmaParams> = gemm_mma::param_space().into_iter().filter(|p| p.stages == 2).collect();
    space.push(MMA_WIDE);
    space
}

/// `conv3d_mma`'s own point, 128×128×32 at two stages with 8 warps of 32×64.
pub const MMA_WIDE: MmaParams = MmaParams { bm: 128, bn: 128, bk: 32, warps_m: 4, warps_n: 2, stages: 2 };

/// The lowering's point for `spec` without tuning: 128×128 where Cout reaches 96 and there
/// are at least 128 output positions per item (the VAE's convs: 96, 192 and 384 channels),
/// 64×64 where both reach 64, else 32×32. Arithmetic (gathers per product), not a
/// measurement: no GPU has timed these yet.
pub fn mma_heuristic(spec: &ConvSpec) -> MmaParams {
    let (m, n, _) = spec.mnk();
    if m >= 96 && n >= 128 {
        MMA_WIDE
    } else if m >= 64 && n >= 64 {
        gemm_mma::LARGE
    } else {
        gemm_mma::SMALL
    }
}

/// (grid, block) of `conv3d_mma` for `spec` at `p`.
pub fn mma_launch_dims(spec: &ConvSpec, p: MmaParams) -> Result<(u32, u32), KernelError> {
    let (m, n, _) = spec.mnk();
    let (tiles, block) = gemm_mma::launch_dims(m, n, p);
    let grid = (tiles as usize).saturating_mul(spec.batch);
    Ok((u32_of(grid, "conv3d blocks")?, block))
}

/// The tensor-core implicit-GEMM conv3d for `spec` at `p`. Parameters: x, w, \[bias\],
/// \[epilogue inputs…\], out.
pub fn conv3d_mma(name: &str, spec: &ConvSpec, p: MmaParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = mma_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    let (m, n, k) = spec.mnk();
    let (grid, block) = mma_launch_dims(spec, p)?;
    let g = &spec.geom;
    let header = format!(
        "conv3d_mma {name}: {}\nimplicit GEMM M={m} N={n} K={k}: weights by cp.async, im2col gathered through registers {} (loads overlap the MMAs), \
         ldmatrix + mma.sync.m16n8k16 f32 accumulation, {} stages; minimum sm_80\n\
         1-D grid of B*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {block} threads; params BM={} BN={} BK={} warps {}x{} stages={}",
        spec.describe(),
        super::im2col::mma_gather_text(g, p),
        p.stages,
        p.bm,
        p.bn,
        p.bk,
        p.warps_m,
        p.warps_n,
        p.stages
    );
    mma_conv_kernel(name, header, spec, MmaB::Im2col(g), p)
}

/// The implicit GEMM of `spec` (positions as B, one batch item per block row) with `b`'s
/// B operand, under `header`.
fn mma_conv_kernel(
    name: &str,
    header: String,
    spec: &ConvSpec,
    b: MmaB<'_>,
    p: MmaParams,
) -> Result<Kernel, KernelError> {
    let (_, _, k) = spec.mnk();
    let core = MmaCore { k, batch: &[spec.batch], a_batch: &[0], b, store: spec.store(), b_first: true };
    gemm_mma::mma_kernel(name, header, &core, p)
}

/// Why `spec` cannot run on the channels-last tensor-core conv, or `None` when it can.
pub fn channels_last_unsupported(spec: &ConvSpec) -> Option<String> {
    if !matches!(spec.in_dtype, DType::BF16 | DType::F16) {
        return Some(format!("conv3d_mma_cl takes bf16 or f16 inputs, not {}", spec.in_dtype));
    }
    (!spec.geom.cin.is_multiple_of(8))
        .then(|| format!("conv3d_mma_cl needs Cin a multiple of 8 (16-byte pixel chunks), got {}", spec.geom.cin))
}

/// The parameter points of `conv3d_mma_cl`: the points of `matmul_mma` (its B slice is
/// copied by `cp.async` as a stored matrix's is, so the deeper pipelines apply) and
/// `conv3d_mma`'s 128×128 two-stage point. Left out: 128×256×64 at 3 and 4 stages, which
/// spill 8 bytes on sm_80 with an epilogue (ptxas 13; each thread keeps 4 registers for each
/// of its 8 pixel chunks through the loop).
pub fn channels_last_param_space() -> Vec<MmaParams> {
    let mut space: Vec<MmaParams> =
        gemm_mma::param_space().into_iter().filter(|p| !(p.bn == 256 && p.bk == 64)).collect();
    space.push(MMA_WIDE);
    space
}

/// The lowering's point of `conv3d_mma_cl` for `spec` without tuning: 128×128×32 at three
/// stages (CUTLASS's sm_80 conv and GEMM tile) where Cout reaches 96 and there are at least
/// 128 positions per item, 64×64 at two where both reach 64, else 32×32. As
/// [`mma_heuristic`], arithmetic and not yet timed.
pub fn channels_last_heuristic(spec: &ConvSpec) -> MmaParams {
    let (m, n, _) = spec.mnk();
    if m >= 96 && n >= 128 {
        MmaParams { stages: 3, ..MMA_WIDE }
    } else {
        mma_heuristic(spec)
    }
}

/// The tensor-core implicit-GEMM conv3d of a channels-last input for `spec` at `p`.
/// Parameters: x `[B, T, H, W, Cin]`, w `[Cout, kt, kh, kw, Cin]` (the weight with its input
/// channels innermost), \[bias\], \[epilogue inputs…\], out `[B, Cout, To, Ho, Wo]` (as
/// [`conv3d_mma`]'s, extras' strides over it). K is ordered tap-major, so every operand
/// reaches shared memory by 16-byte `cp.async`: no gather through registers, and the
/// pipeline may run 3 or 4 stages.
pub fn conv3d_mma_cl(name: &str, spec: &ConvSpec, p: MmaParams) -> Result<Kernel, KernelError> {
    spec.check()?;
    if let Some(why) = channels_last_unsupported(spec) {
        return Err(KernelError::Unsupported(why));
    }
    let (m, n, k) = spec.mnk();
    let (grid, block) = mma_launch_dims(spec, p)?;
    let header = format!(
        "conv3d_mma_cl {name}: {}\nchannels-last input [B, T, H, W, Cin], weight [Cout, kt, kh, kw, Cin]; implicit GEMM \
         M={m} N={n} K={k} (k = tap*Cin + ci): weights and the im2col's 16-byte pixel chunks by cp.async (zero-fill in the \
         padding), ldmatrix + mma.sync.m16n8k16 f32 accumulation, {} stages; minimum sm_80\n\
         1-D grid of B*ceil(M/BM)*ceil(N/BN) = {grid} blocks of {block} threads; params BM={} BN={} BK={} warps {}x{} stages={}",
        spec.describe(),
        p.stages,
        p.bm,
        p.bn,
        p.bk,
        p.warps_m,
        p.warps_n,
        p.stages
    );
    mma_conv_kernel(name, header, spec, MmaB::ChannelsLast(&spec.geom), p)
}

/// A point of the tensor-core conv family: an `mma.sync` tile and whether the input is made
/// channels-last first (`conv3d_mma_cl`, its im2col by `cp.async`) or gathered in place
/// (`conv3d_mma`). Text form: `MmaParams`' with `cl=0|1`; a text without `cl` (as tuning
/// databases written before it hold) is the gather.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvMmaPoint {
    pub mma: MmaParams,
    pub channels_last: bool,
}

impl crate::ptx::tune::Point for ConvMmaPoint {
    const NAMES: &'static [&'static str] = &["bm", "bn", "bk", "warps_m", "warps_n", "stages", "cl"];
    const DEFAULTS: &'static [(&'static str, u32)] = &[("stages", 2), ("cl", 0)];

    fn values(self) -> Vec<u32> {
        let mut v = self.mma.values();
        v.push(u32::from(self.channels_last));
        v
    }

    fn from_values(v: &[u32]) -> Option<Self> {
        let (&cl, mma) = v.split_last()?;
        let channels_last = match cl {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(ConvMmaPoint { mma: MmaParams::from_values(mma)?, channels_last })
    }
}

/// Every point of the tensor-core conv family: [`mma_param_space`] gathering, then
/// [`channels_last_param_space`] channels-last (an error where [`channels_last_unsupported`]
/// says why).
pub fn conv_mma_space() -> Vec<ConvMmaPoint> {
    let gather = mma_param_space().into_iter().map(|mma| ConvMmaPoint { mma, channels_last: false });
    gather.chain(channels_last_param_space().into_iter().map(|mma| ConvMmaPoint { mma, channels_last: true })).collect()
}

/// The family's point for `spec` without tuning: channels-last ([`channels_last_heuristic`])
/// where the conv allows it, else the gather's ([`mma_heuristic`]). By instruction counts (the
/// SASS main loops, BENCHMARKS.md), not by timing: no GPU has run either yet.
pub fn conv_mma_heuristic(spec: &ConvSpec) -> ConvMmaPoint {
    match channels_last_unsupported(spec) {
        None => ConvMmaPoint { mma: channels_last_heuristic(spec), channels_last: true },
        Some(_) => ConvMmaPoint { mma: mma_heuristic(spec), channels_last: false },
    }
}

/// What the names of channels-last kernels end with ([`conv_mma_at`]): how the lowering
/// knows a chosen kernel wants its input and weight transposed first.
pub const CHANNELS_LAST_SUFFIX: &str = "_cl";

/// The family's kernel at `pt`: [`conv3d_mma_cl`] named `{name}_cl`, or [`conv3d_mma`].
pub fn conv_mma_at(name: &str, spec: &ConvSpec, pt: ConvMmaPoint) -> Result<Kernel, KernelError> {
    if pt.channels_last {
        conv3d_mma_cl(&format!("{name}{CHANNELS_LAST_SUFFIX}"), spec, pt.mma)
    } else {
        conv3d_mma(name, spec, pt.mma)
    }
}

/// (grid, block) of [`conv_mma_at`] (both forms launch alike).
pub fn conv_mma_launch_dims(spec: &ConvSpec, pt: ConvMmaPoint) -> Result<(u32, u32), KernelError> {
    mma_launch_dims(spec, pt.mma)
}
