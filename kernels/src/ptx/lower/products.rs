//! The lowering of the tunable products: matmul (SIMT, `mma.sync`, `wgmma`, TMA), conv3d
//! (SIMT, implicit GEMM gathering or channels-last, `wgmma`) and attention, each taking its
//! parameter point from the [`Chooser`] and checked against the device's shared memory.

use super::*;
/// The fused epilogue of a matmul or conv node: `extra` are its inputs after a, b and the
/// bias, broadcast to the output `out`.
pub(super) fn product_epilogue(
    e: &vidrt_ir::expr::ElementwiseExpr,
    extra: &[(&[usize], DType)],
    out: &[usize],
) -> Result<GemmEpilogue, KernelError> {
    let extra = extra.iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, out) }).collect();
    Ok(GemmEpilogue { expr: Expr::from_ir(e)?, extra })
}

/// The [`GemmSpec`] of a matmul node: inputs a, b, \[bias\], \[epilogue inputs…\], output `out`.
pub(super) fn gemm_spec(
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
pub(super) fn gemm(name: &str, spec: &GemmSpec, chooser: &dyn Chooser) -> Result<Lowered, KernelError> {
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
pub(super) fn conv(
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
    let built = if chooser.target() == Target::Sm90a
        && chooser.wgmma()
        && conv3d_wgmma::conv_wgmma_unsupported(&spec).is_none()
    {
        let space = conv3d_wgmma::conv_wgmma_space();
        let heuristic = conv3d_wgmma::conv_wgmma_heuristic(&spec);
        let gen: ConvGen<'_, _> = (&conv3d_wgmma::conv_wgmma_at, &conv3d_wgmma::wgmma_launch_dims);
        family("conv3d_wgmma", "wgmma").tuned(chooser, (name, &spec, &rep_spec), &space, heuristic, gen)?
    } else if conv3d::mma_unsupported(&spec).is_none() {
        let heuristic = conv3d::conv_mma_heuristic(&spec);
        let gen: ConvGen<'_, _> = (&conv3d::conv_mma_at, &conv3d::conv_mma_launch_dims);
        family("conv3d_mma", "mma").tuned(
            chooser,
            (name, &spec, &rep_spec),
            &conv3d::conv_mma_space(),
            heuristic,
            gen,
        )?
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
    // A channels-last point of either tensor-core family reads x and w transposed into scratch.
    if built.0.name.ends_with(conv3d::CHANNELS_LAST_SUFFIX) {
        return channels_last_launches(name, &spec, built, args, n_out);
    }
    let (k, grid, block) = built;
    Ok(one(k, grid, block, args, n_out))
}

/// The launches of a channels-last conv (`conv3d_mma_cl` or `conv3d_wgmma`'s `_cl` form,
/// built): x `[B, Cin, T·H·W]` transposed into scratch 0 as `[B, T·H·W, Cin]`, the weight
/// `[Cout, Cin, taps]` into scratch 1 as `[Cout, taps, Cin]` (not for a 1×1×1 kernel, where
/// the two are the same), then
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
pub(super) fn attention(
    name: &str,
    ins: &[(&[usize], DType)],
    flags: (f64, bool, bool),
    dtype: DType,
    chooser: &dyn Chooser,
) -> Result<Built, KernelError> {
    use crate::ptx::kernels::attention::{self as at, AttnSpec};
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
