//! Lowering of IR ops to PTX kernel launches, shared by the CUDA backend and the simulator
//! backend. The match over [`Op`] has no catch-all: a new op fails to compile here until it
//! gets a kernel or an explicit "unsupported".
//!
//! Tunable nodes (matmul, conv3d, attention, fused or not) take their parameter point from a
//! [`Chooser`] ([`lower_with`]; see [`super::tune`]): forced, a tuning database's winner, or
//! the deterministic heuristic below ([`lower`] uses the heuristics alone).

use vidrt_ir::{DType, Op};

use super::kernels::common::contiguous;
use super::kernels::conv3d::{self, ConvSpec};
use super::kernels::conv3d_wgmma;
use super::kernels::copy::{self, CopyParams, Walk};
use super::kernels::elementwise::{self, broadcast_strides, EwInput, EwParams, Expr};
use super::kernels::embed;
use super::kernels::gemm::{self, GemmEpilogue, GemmSpec, SimtParams};
use super::kernels::gemm_mma;
use super::kernels::gemm_wgmma;
use super::kernels::gemm_wgmma_tma;
use super::kernels::rowwise::{self, Post, RowLayout, RowOp, RowParams};
use super::tune::{bucket, within_shared_limit, Chooser, Heuristics, Pick, Point, TuneProblem};
use super::{Kernel, KernelError, Target};

/// A kernel argument in a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The node's input `i`.
    Input(usize),
    /// The node's output.
    Output,
    /// Scratch buffer `slot` of the node, at least `bytes` long: allocated before the node's
    /// first launch, live across its launches (one writes it, a later one reads it) and free
    /// after the last ([`scratch_bytes`]).
    Scratch { slot: usize, bytes: usize },
}

/// The bytes of each scratch slot the launches use (the largest any of them asks for; a slot
/// no launch names is 0).
pub fn scratch_bytes(launches: &[Launch]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for a in launches.iter().flat_map(|l| &l.args) {
        if let Arg::Scratch { slot, bytes } = *a {
            if out.len() <= slot {
                out.resize(slot + 1, 0);
            }
            out[slot] = out[slot].max(bytes);
        }
    }
    out
}

/// One kernel launch (1-D geometry).
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub kernel: Kernel,
    pub grid: u32,
    pub block: u32,
    pub args: Vec<Arg>,
}

/// How a node runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Lowered {
    /// A graph input or weight: bound from the host.
    Leaf,
    /// The output is input 0's bytes unchanged (reshape).
    Alias,
    /// These launches, in order, write the output.
    Launches(Vec<Launch>),
}

/// Why an op has no kernel on this dtype, or `None` when it has one (before shapes are known).
pub fn unsupported_reason(op: &Op, dtype: DType) -> Option<String> {
    let float = |what: &str| (!dtype.is_float()).then(|| format!("{what} kernels compute in floating point"));
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => None,
        Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } => None,
        Op::Cast { .. } => None,
        Op::Unary(_) | Op::Binary(_) | Op::Modulate => float("elementwise"),
        Op::RmsNorm { .. } | Op::LayerNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. } => float("row"),
        Op::Rope => float("rope"),
        Op::Upsample { .. } | Op::Gather => float("copy"),
        Op::TimestepEmbedding { .. } => (dtype != DType::F32).then(|| "timestep embedding writes f32".to_string()),
        Op::RopeTable { .. } => (dtype != DType::F32).then(|| "rope_table writes f32".to_string()),
        Op::RelPositionBucket { .. } => (dtype != DType::I64).then(|| "rel_position_bucket writes i64".to_string()),
        Op::MatMul { .. } | Op::MatMulEpilogue { .. } => float("matmul"),
        Op::Conv3dEpilogue { .. } => float("conv3d"),
        Op::Fused { .. } => float("fused elementwise"),
        Op::LayerNormModulate { .. } => float("row"),
        Op::RmsNormRope { .. } => float("row"),
        Op::RmsNormEpilogue { .. } => float("row"),
        Op::Attention { .. } => float("attention"),
        Op::Conv3d { .. } => float("conv3d"),
    }
}

fn cdiv(a: usize, b: u32) -> Result<u32, KernelError> {
    u32::try_from(a.div_ceil(b as usize)).map_err(|_| KernelError::Unsupported(format!("grid of {a} threads")))
}

/// The default elementwise parameter point: 256 threads, the widest vector the layout allows.
fn ew_params(inputs: &[EwInput], out_dims: &[usize], dtype: DType) -> EwParams {
    let dense = contiguous(out_dims);
    let numel: usize = out_dims.iter().product();
    let all_dense =
        inputs.iter().all(|i| i.strides.iter().zip(&dense).zip(out_dims).all(|((s, d), n)| *n == 1 || s == d));
    let max = 16 / dtype.size_bytes() as u32;
    let mut vec = 1;
    if all_dense {
        for v in [max, max / 2, 2] {
            if v > 1
                && numel.is_multiple_of(v as usize)
                && inputs.iter().all(|i| i.dtype.size_bytes() == dtype.size_bytes())
            {
                vec = v;
                break;
            }
        }
    }
    EwParams { block: 256, vec }
}

fn row_params(len: usize) -> RowParams {
    let block = (len.next_power_of_two() as u32).clamp(32, 256);
    RowParams { block }
}

const COPY: CopyParams = CopyParams { block: 256 };

fn ew(name: &str, expr: Expr, ins: &[(&[usize], DType)], out: &[usize], dtype: DType) -> Result<Lowered, KernelError> {
    let inputs: Vec<EwInput> =
        ins.iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, out) }).collect();
    let p = ew_params(&inputs, out, dtype);
    let k = elementwise::elementwise(name, &expr, &inputs, out, dtype, p)?;
    let numel: usize = out.iter().product();
    let args = (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect();
    Ok(one(k, cdiv(numel.div_ceil(p.vec as usize), p.block)?, p.block, args, numel))
}

/// The fused epilogue of a matmul or conv node: `extra` are its inputs after a, b and the
/// bias, broadcast to the output `out`.
fn product_epilogue(
    e: &vidrt_ir::expr::ElementwiseExpr,
    extra: &[(&[usize], DType)],
    out: &[usize],
) -> Result<GemmEpilogue, KernelError> {
    let extra = extra.iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, out) }).collect();
    Ok(GemmEpilogue { expr: Expr::from_ir(e)?, extra })
}

/// The [`GemmSpec`] of a matmul node: inputs a, b, \[bias\], \[epilogue inputs…\], output `out`.
fn gemm_spec(
    ins: &[(&[usize], DType)],
    out: &[usize],
    (trans_a, trans_b, bias): (bool, bool, bool),
    dtype: DType,
    epilogue: Option<GemmEpilogue>,
) -> Result<GemmSpec, KernelError> {
    let (a, b) = match ins {
        [a, b, ..] => (a, b),
        _ => return Err(KernelError::Invalid("matmul needs two inputs".into())),
    };
    let (ar, br, or) = (a.0.len(), b.0.len(), out.len());
    if ar < 2 || br < 2 || or < 2 || a.1 != b.1 || (bias && ins.get(2).map(|x| x.1) != Some(a.1)) {
        return Err(KernelError::Invalid("matmul operands of rank < 2 or of different dtypes".into()));
    }
    let (m, k) = if trans_a { (a.0[ar - 1], a.0[ar - 2]) } else { (a.0[ar - 2], a.0[ar - 1]) };
    let n = if trans_b { b.0[br - 2] } else { b.0[br - 1] };
    let batch = out[..or - 2].to_vec();
    // Per output batch axis: the operand's element stride, 0 where it is broadcast (or absent).
    let batch_strides = |dims: &[usize]| {
        let st = contiguous(dims);
        let lead = dims.len() - 2;
        (0..batch.len())
            .map(|i| {
                let j = (i + lead).checked_sub(batch.len());
                j.map_or(0, |j| if dims[j] == 1 { 0 } else { st[j] })
            })
            .collect::<Vec<usize>>()
    };
    Ok(GemmSpec {
        m,
        n,
        k,
        a_batch: batch_strides(a.0),
        b_batch: batch_strides(b.0),
        batch,
        trans_a,
        trans_b,
        in_dtype: a.1,
        out_dtype: dtype,
        bias,
        epilogue,
    })
}

/// A tunable node's problem, before the chooser sees it (see [`TuneProblem`]).
struct Desc {
    family: String,
    dtypes: String,
    dims: Vec<usize>,
    align: Vec<usize>,
    layout: String,
}

/// A generated kernel with its (grid, block).
type Built = (Kernel, u32, u32);

/// The kernel of a tunable node at the point `chooser` picks from `space`: `exact` builds the
/// node's kernel at a point, `representative` the same family at the bucketed shape (for the
/// candidate-set hash), `heuristic` the deterministic choice.
fn tuned<P: Point>(
    chooser: &dyn Chooser,
    desc: Desc,
    space: &[P],
    exact: &dyn Fn(P) -> Result<Built, KernelError>,
    representative: &dyn Fn(P) -> Result<Kernel, KernelError>,
    heuristic: &dyn Fn() -> Result<Built, KernelError>,
) -> Result<Built, KernelError> {
    let family = desc.family.clone();
    let parse = |t: &str| {
        P::from_text(t).ok_or_else(|| KernelError::Invalid(format!("`{t}` is not a parameter point of {family}")))
    };
    // Points are valid where their shared memory fits the device the chooser picks for.
    let max = chooser.max_shared();
    let fits = |(k, g, b): Built| Ok((within_shared_limit(k, max)?, g, b));
    let checked = |p: P| exact(p).and_then(fits);
    let generate = |t: &str| parse(t).and_then(checked).map(|b| b.0);
    let rep = |t: &str| parse(t).and_then(representative).and_then(|k| within_shared_limit(k, max));
    let problem = TuneProblem {
        family: desc.family,
        dtypes: desc.dtypes,
        dims: desc.dims,
        align: desc.align,
        layout: desc.layout,
        space: space.iter().map(|p| p.to_text()).collect(),
        generate: &generate,
        representative: &rep,
    };
    match chooser.pick(&problem) {
        Pick::Forced(t) => parse(&t).and_then(checked),
        Pick::Tuned(t) => match parse(&t).and_then(checked) {
            Ok(b) => {
                chooser.record(true);
                Ok(b)
            }
            Err(_) => {
                chooser.record(false);
                heuristic().and_then(fits)
            }
        },
        Pick::Heuristic => heuristic().and_then(fits),
    }
}

/// The name a representative kernel has (the candidate-set hash must not depend on the node).
const REPRESENTATIVE: &str = "tune_candidate";

/// A tensor-core GEMM family (`matmul_mma`, `matmul_wgmma`): its tuning description, space
/// and heuristic point, its generator and its launch geometry per matrix.
struct TensorCore<'a, P> {
    desc: Desc,
    space: &'a [P],
    heuristic: P,
    generate: &'a dyn Fn(&str, &GemmSpec, P) -> Result<Kernel, KernelError>,
    /// (grid over every matrix of the batch, block).
    grid: &'a dyn Fn(&GemmSpec, P) -> Result<Dims, KernelError>,
}

/// A launch's (grid, block).
type Dims = (u32, u32);

/// (grid, block) for one block per tile of every matrix of `spec`'s batch, from the
/// per-matrix (tiles, block).
fn per_matrix(spec: &GemmSpec, (tiles, block): (u32, u32)) -> Result<(u32, u32), KernelError> {
    let grid = tiles
        .checked_mul(u32::try_from(spec.batch_count()).unwrap_or(u32::MAX))
        .ok_or_else(|| KernelError::Unsupported("matmul grid exceeds 2^32 blocks".into()))?;
    Ok((grid, block))
}

impl<P: Point> TensorCore<'_, P> {
    /// The kernel `name` for `spec` at the chosen point, with its grid over every matrix of
    /// the batch; `rep` is the representative problem the candidate hash is taken over.
    fn tuned(self, chooser: &dyn Chooser, name: &str, spec: &GemmSpec, rep: &GemmSpec) -> Result<Built, KernelError> {
        let build = |p: P| -> Result<Built, KernelError> {
            let k = (self.generate)(name, spec, p)?;
            let (grid, block) = (self.grid)(spec, p)?;
            Ok((k, grid, block))
        };
        let heuristic = self.heuristic;
        tuned(chooser, self.desc, self.space, &build, &|p| (self.generate)(REPRESENTATIVE, rep, p), &|| {
            build(heuristic)
        })
    }
}

/// The matmul kernel for `spec`: on sm_90a (with the wgmma opt-in) the TMA-fed wgmma kernel
/// where [`gemm_wgmma_tma::tma_unsupported`] allows, else the cp.async wgmma kernel where
/// [`gemm_wgmma::wgmma_unsupported`] allows, then tensor cores where
/// [`gemm_mma::mma_unsupported`] allows, the SIMT kernel otherwise.
fn gemm(name: &str, spec: &GemmSpec, chooser: &dyn Chooser) -> Result<Lowered, KernelError> {
    let inputs = 2 + usize::from(spec.bias) + spec.epilogue.as_ref().map_or(0, |e| e.extra.len());
    let args: Vec<Arg> = (0..inputs).map(Arg::Input).chain([Arg::Output]).collect();
    let work = spec.batch_count() * spec.m * spec.n;
    let t = |b: bool| if b { "t" } else { "n" };
    let layout = format!(
        "{}{}{}{}{}",
        t(spec.trans_a),
        t(spec.trans_b),
        if spec.bias { ",bias" } else { "" },
        spec.epilogue.as_ref().map_or(String::new(), |e| format!(",epilogue{}", e.extra.len())),
        if !spec.batch.is_empty() && spec.b_batch.iter().all(|&s| s == 0) { ",b_shared" } else { "" },
    );
    let desc = |family: &str| Desc {
        family: format!("{family}_{}", spec.in_dtype.name()),
        dtypes: format!("{0},{0}->{1}", spec.in_dtype.name(), spec.out_dtype.name()),
        dims: vec![spec.batch_count(), spec.m, spec.n, spec.k],
        align: vec![spec.m, spec.n, spec.k],
        layout: layout.clone(),
    };
    // The same layout at the bucketed shape, one matrix, no epilogue.
    let rep = GemmSpec {
        trans_a: spec.trans_a,
        bias: spec.bias,
        ..GemmSpec::plain(bucket(spec.m), bucket(spec.n), bucket(spec.k), spec.trans_b, spec.in_dtype, spec.out_dtype)
    };
    if chooser.target() == Target::Sm90a && chooser.wgmma() && gemm_wgmma_tma::tma_unsupported(spec).is_none() {
        let big = spec.m >= 128 && spec.n >= 128;
        let family = TensorCore {
            desc: desc("matmul_wgmma_tma"),
            space: &gemm_wgmma_tma::param_space(),
            heuristic: if big { gemm_wgmma_tma::large() } else { gemm_wgmma_tma::small() },
            generate: &gemm_wgmma_tma::gemm_wgmma_tma_spec,
            grid: &gemm_wgmma_tma::launch_grid,
        };
        let (k, grid, block) = family.tuned(chooser, &format!("{name}_wgmma_tma"), spec, &rep)?;
        return Ok(one(k, grid, block, args, work));
    }
    if chooser.target() == Target::Sm90a && chooser.wgmma() && gemm_wgmma::wgmma_unsupported(spec).is_none() {
        let big = spec.m >= 128 && spec.n >= 128;
        let family = TensorCore {
            desc: desc("matmul_wgmma"),
            space: &gemm_wgmma::param_space(),
            heuristic: if big { gemm_wgmma::LARGE } else { gemm_wgmma::SMALL },
            generate: &gemm_wgmma::gemm_wgmma_spec,
            grid: &|s: &GemmSpec, p| per_matrix(s, gemm_wgmma::launch_dims(s.m, s.n, p)),
        };
        let (k, grid, block) = family.tuned(chooser, &format!("{name}_wgmma"), spec, &rep)?;
        return Ok(one(k, grid, block, args, work));
    }
    if gemm_mma::mma_unsupported(spec).is_none() {
        let big = spec.m >= 64 && spec.n >= 64;
        let family = TensorCore {
            desc: desc("matmul_mma"),
            space: &gemm_mma::param_space(),
            heuristic: if big { gemm_mma::LARGE } else { gemm_mma::SMALL },
            generate: &gemm_mma::gemm_mma_spec,
            grid: &|s: &GemmSpec, p| per_matrix(s, gemm_mma::launch_dims(s.m, s.n, p)),
        };
        let (k, grid, block) = family.tuned(chooser, &format!("{name}_mma"), spec, &rep)?;
        return Ok(one(k, grid, block, args, work));
    }
    let small = spec.m <= 32 || spec.n <= 32;
    let heuristic = if small { gemm::SIMT_SMALL } else { gemm::SIMT_LARGE };
    let build = |p: SimtParams| -> Result<Built, KernelError> {
        let k = gemm::gemm_simt(&format!("{name}_simt"), spec, p)?;
        let (grid, block) = gemm::simt_launch_dims(spec, p)?;
        Ok((k, grid, block))
    };
    let (k, grid, block) = tuned(
        chooser,
        desc("matmul_simt"),
        &gemm::simt_param_space(),
        &build,
        &|p| gemm::gemm_simt(REPRESENTATIVE, &rep, p),
        &|| build(heuristic),
    )?;
    Ok(one(k, grid, block, args, work))
}

/// A conv3d node: inputs x, w, \[bias\], \[epilogue inputs…\].
fn conv(
    name: &str,
    ins: &[(&[usize], DType)],
    (stride, pad, bias): ([usize; 3], [[usize; 2]; 3], bool),
    dtype: DType,
    epilogue: Option<GemmEpilogue>,
    chooser: &dyn Chooser,
) -> Result<Lowered, KernelError> {
    let (x, w) = match ins {
        [x, w, ..] if x.1 == w.1 && (!bias || ins.get(2).map(|b| b.1) == Some(x.1)) => (x, w),
        _ => return Err(KernelError::Unsupported("conv3d with inputs of different dtypes".into())),
    };
    let spec = ConvSpec::new(x.0, w.0, stride, pad, (x.1, dtype), bias, epilogue)?;
    let inputs = 2 + usize::from(bias) + spec.epilogue.as_ref().map_or(0, |e| e.extra.len());
    let args: Vec<Arg> = (0..inputs).map(Arg::Input).chain([Arg::Output]).collect();
    let n_out: usize = spec.out_dims().iter().product();
    let (&[b, cin, t, h, wd], &[cout, _, kt, kh, kw]) = (x.0, w.0) else {
        return Err(KernelError::Invalid(format!("conv3d needs x and w of rank 5, got {:?} and {:?}", x.0, w.0)));
    };
    let desc = |family: &str| Desc {
        family: format!("{family}_{}", x.1.name()),
        dtypes: format!("{0},{0}->{1}", x.1.name(), dtype.name()),
        dims: vec![b, cout, cin, t, h, wd],
        align: vec![cout, cin, wd],
        layout: format!(
            "k{kt}x{kh}x{kw},s{}x{}x{},p{:?}{}{}",
            stride[0],
            stride[1],
            stride[2],
            pad,
            if bias { ",bias" } else { "" },
            spec.epilogue.as_ref().map_or(String::new(), |e| format!(",epilogue{}", e.extra.len())),
        ),
    };
    // The same conv at the bucketed shape, one sample, no epilogue.
    let rep_spec = || {
        let c = bucket(cin);
        ConvSpec::new(
            &[1, c, bucket(t), bucket(h), bucket(wd)],
            &[bucket(cout), c, kt, kh, kw],
            stride,
            pad,
            (x.1, dtype),
            bias,
            None,
        )
    };
    // One family of conv kernels: `generate`/`dims` at the chosen point of `space`.
    let family = |family: &str, suffix: &str| ConvFamily { desc: desc(family), suffix: suffix.to_string() };
    let (k, grid, block) =
        if chooser.target() == Target::Sm90a && chooser.wgmma() && conv3d_wgmma::wgmma_unsupported(&spec).is_none() {
            let space = conv3d_wgmma::wgmma_param_space();
            let heuristic = conv3d_wgmma::wgmma_heuristic(&spec);
            let gen: ConvGen<'_, _> = (&conv3d_wgmma::conv3d_wgmma, &conv3d_wgmma::wgmma_launch_dims);
            family("conv3d_wgmma", "wgmma").tuned(chooser, (name, &spec, &rep_spec), &space, heuristic, gen)?
        } else if conv3d::mma_unsupported(&spec).is_none() {
            let heuristic = conv3d::conv_mma_heuristic(&spec);
            let gen: ConvGen<'_, _> = (&conv3d::conv_mma_at, &conv3d::conv_mma_launch_dims);
            let built = family("conv3d_mma", "mma").tuned(
                chooser,
                (name, &spec, &rep_spec),
                &conv3d::conv_mma_space(),
                heuristic,
                gen,
            )?;
            if built.0.name.ends_with(conv3d::CHANNELS_LAST_SUFFIX) {
                return channels_last_launches(name, &spec, built, args, n_out);
            }
            built
        } else {
            let heuristic = if spec.cout <= 32 { gemm::SIMT_SMALL } else { gemm::SIMT_LARGE };
            let gen: ConvGen<'_, _> = (&conv3d::conv3d_simt, &conv3d::launch_dims);
            family("conv3d_simt", "simt").tuned(
                chooser,
                (name, &spec, &rep_spec),
                &conv3d::param_space(),
                heuristic,
                gen,
            )?
        };
    Ok(one(k, grid, block, args, n_out))
}

/// The launches of a channels-last conv (`conv3d_mma_cl`, built): x `[B, Cin, T·H·W]`
/// transposed into scratch 0 as `[B, T·H·W, Cin]`, the weight `[Cout, Cin, taps]` into
/// scratch 1 as `[Cout, taps, Cin]` (not for a 1×1×1 kernel, where the two are the same), then
/// the conv reading them with the node's other inputs (`args`: x, w, bias, extras, out). The
/// tuner times the three together: what the layout change costs is in the point's time.
fn channels_last_launches(
    name: &str,
    spec: &ConvSpec,
    (kernel, grid, block): Built,
    mut args: Vec<Arg>,
    work: usize,
) -> Result<Lowered, KernelError> {
    if work == 0 {
        return Ok(Lowered::Launches(Vec::new()));
    }
    let g = &spec.geom;
    let (bytes, positions, taps) = (spec.in_dtype.size_bytes(), g.input.iter().product::<usize>(), g.taps());
    let mut launches = Vec::with_capacity(3);
    let mut transposed = |what: &str, input: usize, (batch, rows, cols): (usize, usize, usize), slot: usize| {
        let k = copy::transpose(&format!("{name}_{what}_cl"), batch, rows, cols, spec.in_dtype)?;
        let (grid, block) = copy::transpose_launch_dims(batch, rows, cols)?;
        let to = Arg::Scratch { slot, bytes: batch * rows * cols * bytes };
        launches.push(Launch { kernel: k, grid, block, args: vec![Arg::Input(input), to] });
        Ok::<Arg, KernelError>(to)
    };
    args[0] = transposed("x", 0, (spec.batch, g.cin, positions), 0)?;
    if taps > 1 {
        args[1] = transposed("w", 1, (spec.cout, g.cin, taps), 1)?;
    }
    launches.push(Launch { kernel, grid, block, args });
    Ok(Lowered::Launches(launches))
}

/// A conv kernel generator at a point, and its (grid, block).
type ConvGen<'a, P> = (
    &'a dyn Fn(&str, &ConvSpec, P) -> Result<Kernel, KernelError>,
    &'a dyn Fn(&ConvSpec, P) -> Result<Dims, KernelError>,
);

/// One tunable conv family: its tuning description and the suffix of its kernels' names.
struct ConvFamily {
    desc: Desc,
    suffix: String,
}

impl ConvFamily {
    /// The kernel `{name}_{suffix}` for `spec` at the chosen point of `space` (`heuristic`
    /// without a database or forced point); candidates are hashed at `rep`'s bucketed spec.
    fn tuned<P: Point>(
        self,
        chooser: &dyn Chooser,
        (name, spec, rep): (&str, &ConvSpec, &dyn Fn() -> Result<ConvSpec, KernelError>),
        space: &[P],
        heuristic: P,
        (generate, dims): ConvGen<'_, P>,
    ) -> Result<Built, KernelError> {
        let kernel = format!("{name}_{}", self.suffix);
        let build = |p: P| -> Result<Built, KernelError> {
            let k = generate(&kernel, spec, p)?;
            let (grid, block) = dims(spec, p)?;
            Ok((k, grid, block))
        };
        tuned(chooser, self.desc, space, &build, &|p| rep().and_then(|s| generate(REPRESENTATIVE, &s, p)), &|| {
            build(heuristic)
        })
    }
}

/// An attention node: f32 runs the SIMT variant, bf16/f16 the tensor-core one (on sm_90a with
/// wgmma on, the wgmma variant where [`super::kernels::attention::wgmma_unsupported`] allows,
/// else the `mma.sync` one); the heuristic
/// is the first point of the family's space (in order of preference) whose tiles fit static
/// shared memory (48 KiB), else the first whose dynamic shared memory fits the device; for
/// `attention_mma` at 128 query rows or more, head dims of 64 or more and no bias or mask,
/// first [`super::kernels::attention::mma_two_mtile_point`] where it fits the device; for
/// `attention_wgmma` (sm_90a) the first that fits the device.
fn attention(
    name: &str,
    ins: &[(&[usize], DType)],
    flags: (f64, bool, bool),
    dtype: DType,
    chooser: &dyn Chooser,
) -> Result<Built, KernelError> {
    use super::kernels::attention::{self as at, AttnSpec};
    let spec = at::spec_for_node(ins, flags, dtype)?;
    let bias_axes = spec.bias.map(|st| st.map(|s| u8::from(s != 0)));
    let desc = |family: &str| Desc {
        family: format!("{family}_{}", dtype.name()),
        dtypes: format!("{0},{0},{0}->{0}", dtype.name()),
        dims: vec![spec.batch * spec.heads, spec.sq, spec.sk],
        align: vec![spec.d, spec.dv, spec.sk],
        layout: format!("d{},dv{},bias{:?},mask{:?}", spec.d, spec.dv, bias_axes, spec.mask),
    };
    // The same head dims, bias pattern and mask at the bucketed lengths, one head.
    let (sq, sk) = (bucket(spec.sq), bucket(spec.sk));
    let rep = AttnSpec {
        batch: 1,
        heads: 1,
        sq,
        sk,
        scale: 0.125,
        bias: spec.bias.map(|st| [0, 0, if st[2] != 0 { sk } else { 0 }, usize::from(st[3] != 0)]),
        ..spec.clone()
    };
    // The first point whose kernel has static shared memory only, else the first whose
    // dynamic shared memory fits here (`max`); with `any_fit` (sm_90a's wgmma family: every
    // such device has the 227 KiB opt-in, and static-first would take the single-stage point
    // at head dim 128) simply the first that fits.
    let max = chooser.max_shared();
    fn first<P: Copy>(
        space: &[P],
        build: &dyn Fn(P) -> Result<Built, KernelError>,
        (dtype, max, any_fit): (DType, u32, bool),
    ) -> Result<Built, KernelError> {
        let mut last = KernelError::Unsupported(format!("no attention kernel for {dtype}"));
        let mut dynamic = None;
        for p in space {
            match build(*p).and_then(|(k, g, b)| Ok((within_shared_limit(k, max)?, g, b))) {
                Ok(b) if any_fit || b.0.dynamic_shared == 0 => return Ok(b),
                Ok(b) => dynamic = dynamic.or(Some(b)),
                Err(e) => last = e,
            }
        }
        dynamic.ok_or(last)
    }
    match dtype {
        DType::F32 => {
            let space = at::simt_param_space();
            let build = |p: at::SimtParams| -> Result<Built, KernelError> {
                let k = at::attention_simt(name, &spec, dtype, p)?;
                let (g, b) = at::simt_launch_dims(&spec, p);
                Ok((k, g, b))
            };
            tuned(
                chooser,
                desc("attention_simt"),
                &space,
                &build,
                &|p| at::attention_simt(REPRESENTATIVE, &rep, dtype, p),
                &|| first(&space, &build, (dtype, max, false)),
            )
        }
        DType::BF16 | DType::F16
            if chooser.target() == Target::Sm90a
                && chooser.wgmma()
                && at::wgmma_unsupported(&spec, dtype).is_none() =>
        {
            let space = at::wgmma_param_space();
            let name = format!("{name}_wgmma");
            let build = |p: at::WgmmaAttnParams| -> Result<Built, KernelError> {
                let k = at::attention_wgmma(&name, &spec, dtype, p)?;
                let (g, b) = at::wgmma_launch_dims(&spec, p);
                Ok((k, g, b))
            };
            tuned(
                chooser,
                desc("attention_wgmma"),
                &space,
                &build,
                &|p| at::attention_wgmma(REPRESENTATIVE, &rep, dtype, p),
                &|| first(&space, &build, (dtype, max, true)),
            )
        }
        DType::BF16 | DType::F16 => {
            let space = at::mma_param_space();
            let build = |p: at::MmaAttnParams| -> Result<Built, KernelError> {
                let k = at::attention_mma(name, &spec, dtype, p)?;
                let (g, b) = at::mma_launch_dims(&spec, p);
                Ok((k, g, b))
            };
            // Long sequences at head dims of 64 and more, with no bias or mask (the DiT's
            // attention), take the two-m-tile point where it fits (FlashAttention-2's 128 × 64
            // tile of 4 warps: each K/V fragment a warp reads serves 32 query rows, where one
            // m-tile reads the tile once per 16).
            let plain = spec.bias.is_none() && spec.mask.is_none();
            let two = (plain && spec.sq >= 128 && spec.d >= 64 && spec.dv >= 64).then(at::mma_two_mtile_point);
            tuned(
                chooser,
                desc("attention_mma"),
                &space,
                &build,
                &|p| at::attention_mma(REPRESENTATIVE, &rep, dtype, p),
                &|| match two.map(|p| first(&[p], &build, (dtype, max, true))) {
                    Some(Ok(b)) => Ok(b),
                    _ => first(&space, &build, (dtype, max, false)),
                },
            )
        }
        DType::I32 | DType::I64 => Err(KernelError::Unsupported(format!("no attention kernel for {dtype}"))),
    }
}

fn one(kernel: Kernel, grid: u32, block: u32, args: Vec<Arg>, work: usize) -> Lowered {
    if work == 0 {
        Lowered::Launches(Vec::new())
    } else {
        Lowered::Launches(vec![Launch { kernel, grid, block, args }])
    }
}

fn row(
    name: &str,
    op: RowOp,
    layout: RowLayout,
    (in_dtype, out_dtype): (DType, DType),
    args: Vec<Arg>,
    post: Option<&Post>,
) -> Result<Lowered, KernelError> {
    let p = row_params(layout.len());
    let k = rowwise::row_kernel(name, &op, &layout, in_dtype, out_dtype, p, post)?;
    let rows = layout.rows();
    let grid = u32::try_from(rows).map_err(|_| KernelError::Unsupported(format!("{rows} rows")))?;
    Ok(one(k, grid, p.block, args, rows))
}

/// Lowers one node with the heuristics' parameter points ([`lower_with`] and [`Heuristics`]).
pub fn lower(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
) -> Result<Lowered, KernelError> {
    lower_with(op, ins, out, dtype, tag, &Heuristics)
}

/// Lowers one node. `ins` are the inputs' (dims, dtype); `tag` makes kernel names unique
/// (e.g. the node index); `chooser` picks the parameter point of a tunable node.
pub fn lower_with(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
    chooser: &dyn Chooser,
) -> Result<Lowered, KernelError> {
    let lowered = lower_op(op, ins, out, dtype, tag, chooser)?;
    if let Lowered::Launches(ls) = &lowered {
        if let Some(l) = ls.iter().find(|l| l.grid > MAX_GRID_X) {
            return Err(KernelError::Unsupported(format!(
                "`{}` needs a grid of {} blocks; CUDA allows at most {MAX_GRID_X} (2^31 - 1) in x",
                l.kernel.name, l.grid
            )));
        }
    }
    Ok(lowered)
}

/// The most blocks a 1-D CUDA grid may have (`gridDim.x` ≤ 2³¹ − 1).
pub const MAX_GRID_X: u32 = i32::MAX as u32;

fn lower_op(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
    chooser: &dyn Chooser,
) -> Result<Lowered, KernelError> {
    if let Some(r) = unsupported_reason(op, dtype) {
        return Err(KernelError::Unsupported(r));
    }
    let numel: usize = out.iter().product();
    let d0 = || ins.first().map(|i| i.1).ok_or_else(|| KernelError::Invalid("missing input".into()));
    let same_in = |what: &str| -> Result<(), KernelError> {
        match ins.iter().find(|i| i.1 != dtype) {
            Some(i) => Err(KernelError::Unsupported(format!("{what} with a {} input and a {dtype} output", i.1))),
            None => Ok(()),
        }
    };
    let n = |family: &str| format!("{family}_{}_{tag}", dtype.name());
    let inp = |i: usize| Box::new(Expr::Input(i));
    match op {
        Op::Input { .. } | Op::Weight { .. } => Ok(Lowered::Leaf),
        Op::Constant { value } => Ok(one(
            copy::fill(&n("fill"), numel, dtype, *value, COPY)?,
            cdiv(numel, 256)?,
            256,
            vec![Arg::Output],
            numel,
        )),
        Op::Reshape { .. } => Ok(Lowered::Alias),
        Op::Unary(u) => ew(&n(&format!("ew_{}", u.name())), Expr::Unary(*u, inp(0)), ins, out, dtype),
        Op::Binary(bop) => ew(&n(&format!("ew_{}", bop.name())), Expr::Binary(*bop, inp(0), inp(1)), ins, out, dtype),
        Op::Fused { expr } => ew(&n("ew_fused"), Expr::from_ir(expr)?, ins, out, dtype),
        Op::Modulate => ew(&n("ew_modulate"), Expr::Modulate(inp(0), inp(1), inp(2)), ins, out, dtype),
        Op::Cast { .. } => {
            let src = d0()?;
            let dims = ins[0].0;
            let k = copy::strided_copy(
                &n("copy_cast"),
                dims,
                &Walk { base: 0, strides: contiguous(dims) },
                &Walk { base: 0, strides: contiguous(dims) },
                src,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Permute { perm } => {
            same_in("permute")?;
            let in_st = contiguous(ins[0].0);
            let src = Walk { base: 0, strides: perm.iter().map(|&p| in_st.get(p).copied().unwrap_or(0)).collect() };
            let k = copy::strided_copy(
                &n("copy_permute"),
                out,
                &src,
                &Walk { base: 0, strides: contiguous(out) },
                dtype,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Slice { axis, start, .. } => {
            same_in("slice")?;
            let in_st = contiguous(ins[0].0);
            let base = start * in_st.get(*axis).copied().unwrap_or(0);
            let k = copy::strided_copy(
                &n("copy_slice"),
                out,
                &Walk { base, strides: in_st },
                &Walk { base: 0, strides: contiguous(out) },
                dtype,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Concat { axis } => {
            same_in("concat")?;
            let out_st = contiguous(out);
            let mut at = 0;
            let mut launches = Vec::new();
            for (i, (dims, _)) in ins.iter().enumerate() {
                let cnt: usize = dims.iter().product();
                let base = at * out_st.get(*axis).copied().unwrap_or(0);
                at += dims.get(*axis).copied().unwrap_or(0);
                if cnt == 0 {
                    continue;
                }
                let k = copy::strided_copy(
                    &format!("{}_{i}", n("copy_concat")),
                    dims,
                    &Walk { base: 0, strides: contiguous(dims) },
                    &Walk { base, strides: out_st.clone() },
                    dtype,
                    dtype,
                    COPY,
                )?;
                launches.push(Launch {
                    kernel: k,
                    grid: cdiv(cnt, 256)?,
                    block: 256,
                    args: vec![Arg::Input(i), Arg::Output],
                });
            }
            Ok(Lowered::Launches(launches))
        }
        Op::Upsample { factors } => {
            same_in("upsample")?;
            let k = copy::upsample(&n("upsample_nearest"), ins[0].0, *factors, dtype, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Gather => {
            let (table, ids) = (ins[0], ins.get(1).ok_or_else(|| KernelError::Invalid("gather needs ids".into()))?);
            if table.1 != dtype || table.0.len() != 2 {
                return Err(KernelError::Unsupported("gather needs a [V, D] table of the output dtype".into()));
            }
            let n_ids: usize = ids.0.iter().product();
            let k = copy::gather(&n("gather_rows"), table.0[0], table.0[1], n_ids, dtype, ids.1, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Input(1), Arg::Output], numel))
        }
        Op::Rope => {
            if ins[0].1 != dtype || ins.len() != 3 || ins[1].1 != ins[2].1 {
                return Err(KernelError::Unsupported(
                    "rope needs x of the output dtype and tables of one dtype".into(),
                ));
            }
            let k = embed::rope(&n("rope_interleaved"), ins[0].0, dtype, ins[1].1, COPY)?;
            Ok(one(
                k,
                cdiv(numel / 2, 256)?,
                256,
                vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output],
                numel,
            ))
        }
        Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period } => {
            let t = ins[0];
            let k = embed::timestep(
                &n("timestep_sinusoid"),
                &embed::TimestepSpec {
                    batch: t.0.iter().product(),
                    dim: *dim,
                    flip_sin_to_cos: *flip_sin_to_cos,
                    shift: *downscale_freq_shift,
                    max_period: *max_period,
                },
                t.1,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Softmax { axis } => {
            same_in("softmax")?;
            let layout = RowLayout::over_axes(ins[0].0, &[*axis]);
            row(&n("softmax_row"), RowOp::Softmax, layout, (dtype, dtype), vec![Arg::Input(0), Arg::Output], None)
        }
        Op::RmsNorm { axis, eps, style, weight } => {
            same_in("rms_norm")?;
            let layout = RowLayout::over_axes(ins[0].0, &[*axis]);
            let args = if *weight {
                vec![Arg::Input(0), Arg::Input(1), Arg::Output]
            } else {
                vec![Arg::Input(0), Arg::Output]
            };
            row(
                &n("norm_rms"),
                RowOp::Rms { eps: *eps, style: *style, weight: *weight },
                layout,
                (dtype, dtype),
                args,
                None,
            )
        }
        Op::LayerNorm { eps, affine } => {
            same_in("layer_norm")?;
            let r = ins[0].0.len();
            let layout = RowLayout::over_axes(ins[0].0, &[r.saturating_sub(1)]);
            let args = if *affine {
                vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output]
            } else {
                vec![Arg::Input(0), Arg::Output]
            };
            row(&n("norm_layer"), RowOp::LayerNorm { eps: *eps, affine: *affine }, layout, (dtype, dtype), args, None)
        }
        Op::LayerNormModulate { eps } => {
            same_in("layer_norm_modulate")?;
            let x = ins[0].0;
            let layout = RowLayout::over_axes(x, &[x.len().saturating_sub(1)]);
            let post = Post {
                expr: Expr::Modulate(inp(0), inp(1), inp(2)),
                extra: ins[1..].iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, x) }).collect(),
                x_dims: x.to_vec(),
            };
            let args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output];
            let op = RowOp::LayerNorm { eps: *eps, affine: false };
            row(&n("norm_layer_modulate"), op, layout, (dtype, dtype), args, Some(&post))
        }
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => {
            let x = ins[0].0;
            let x_dtype = ins[0].1;
            let first_extra = 1 + usize::from(*weight);
            if ins[..first_extra].iter().any(|i| i.1 != x_dtype) {
                return Err(KernelError::Unsupported("rms_norm weight of another dtype than x".into()));
            }
            let layout = RowLayout::over_axes(x, &[*axis]);
            let post = Post {
                expr: Expr::from_ir(epilogue)?,
                extra: ins[first_extra..]
                    .iter()
                    .map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, x) })
                    .collect(),
                x_dims: x.to_vec(),
            };
            let args = (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect();
            let op = RowOp::Rms { eps: *eps, style: *style, weight: *weight };
            row(&n("norm_rms_epilogue"), op, layout, (x_dtype, dtype), args, Some(&post))
        }
        Op::Reduce { op: rop, axes, .. } => {
            same_in("reduce")?;
            let layout = RowLayout::over_axes(ins[0].0, axes);
            if layout.is_empty() {
                return Err(KernelError::Unsupported("reduction over an empty axis".into()));
            }
            row(
                &n(&format!("reduce_{}", rop.name())),
                RowOp::Reduce(*rop),
                layout,
                (dtype, dtype),
                vec![Arg::Input(0), Arg::Output],
                None,
            )
        }
        Op::RopeTable { grid, dims, theta, part } => {
            let cos = *part == vidrt_ir::TrigPart::Cos;
            let k = embed::rope_table(&n("rope_table"), *grid, *dims, *theta, cos, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Output], numel))
        }
        Op::MatMul { trans_a, trans_b, bias } => {
            let spec = gemm_spec(ins, out, (*trans_a, *trans_b, *bias), dtype, None)?;
            gemm(&n("matmul"), &spec, chooser)
        }
        Op::MatMulEpilogue { trans_a, trans_b, bias, epilogue } => {
            let epi = product_epilogue(epilogue, &ins[(2 + usize::from(*bias)).min(ins.len())..], out)?;
            let spec = gemm_spec(ins, out, (*trans_a, *trans_b, *bias), dtype, Some(epi))?;
            gemm(&n("matmul_epilogue"), &spec, chooser)
        }
        Op::Conv3d { stride, pad, bias } => conv(&n("conv3d"), ins, (*stride, *pad, *bias), dtype, None, chooser),
        Op::Conv3dEpilogue { stride, pad, bias, epilogue } => {
            let epi = product_epilogue(epilogue, &ins[(2 + usize::from(*bias)).min(ins.len())..], out)?;
            conv(&n("conv3d_epilogue"), ins, (*stride, *pad, *bias), dtype, Some(epi), chooser)
        }
        Op::Attention { scale, bias, mask } => {
            if numel == 0 {
                return Ok(Lowered::Launches(Vec::new()));
            }
            let (k, grid, block) = attention(&n("attention_flash"), ins, (*scale, *bias, *mask), dtype, chooser)?;
            Ok(one(k, grid, block, (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect(), numel))
        }
        Op::RelPositionBucket { q_len, k_len, num_buckets, max_distance } => {
            let k = embed::rel_position_bucket(
                &n("rel_position_bucket"),
                (*q_len, *k_len),
                (*num_buckets, *max_distance),
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Output], numel))
        }
        Op::RmsNormRope { eps, .. } => {
            // Two launches: the RMS norm across heads into the output, then the rotary
            // embedding in place (each thread reads its pair before writing it back).
            let (x, table_dtype) = match ins {
                [x, w, c, s] if x.1 == dtype && w.1 == dtype && c.1 == s.1 => (x, c.1),
                _ => {
                    return Err(KernelError::Unsupported(
                        "rms_norm_rope needs x and weight of the output dtype and tables of one dtype".into(),
                    ))
                }
            };
            let layout = RowLayout::over_axes(x.0, &[x.0.len().saturating_sub(1)]);
            let op = RowOp::Rms { eps: *eps, style: vidrt_ir::RmsStyle::MeanSquare, weight: true };
            let norm = match row(
                &n("norm_rms_heads"),
                op,
                layout,
                (dtype, dtype),
                vec![Arg::Input(0), Arg::Input(1), Arg::Output],
                None,
            )? {
                Lowered::Launches(l) => l,
                other => {
                    return Err(KernelError::Invalid(format!("the rms norm of rms_norm_rope lowered as {other:?}")))
                }
            };
            let k = embed::rope(&n("rope_interleaved_inplace"), out, dtype, table_dtype, COPY)?;
            let mut launches = norm;
            if numel > 0 {
                launches.push(Launch {
                    kernel: k,
                    grid: cdiv(numel / 2, 256)?,
                    block: 256,
                    args: vec![Arg::Output, Arg::Input(2), Arg::Input(3), Arg::Output],
                });
            }
            Ok(Lowered::Launches(launches))
        }
    }
}
