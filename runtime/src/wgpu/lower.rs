//! Lowering: one node → the kernel launches that compute it. Every `Op` is matched with no
//! catch-all arm; ops without a kernel yet return `Unsupported`.

use vidrt_ir::{DType, Graph, Op, ReduceOp, RmsStyle, Shape};
use vidrt_kernels::wgsl::attention::{self, AttnParams};
use vidrt_kernels::wgsl::elementwise::{self, binary_expr, binary_expr_int, unary_expr};
use vidrt_kernels::wgsl::gemm::{self, GemmKind, GemmParams};
use vidrt_kernels::wgsl::lane::{self, LaneOp};
use vidrt_kernels::wgsl::{copy, grid_for, misc, Elem, Features, WgslError, WgslKernel, LINEAR_WG};

use crate::tune::TuneKey;
use crate::tune::{Choice, Tuning};
use crate::RuntimeError;

/// A buffer of the plan (an index into the executable's buffer table).
pub(crate) type Buf = usize;

/// One kernel launch.
pub(crate) struct Step {
    pub kernel: WgslKernel,
    pub meta: Vec<u32>,
    pub ins: Vec<Buf>,
    pub out: Buf,
    pub grid: [u32; 3],
}

/// What lowering needs from the planner.
pub(crate) trait Alloc {
    /// A scratch buffer of `words` 32-bit words, live for this node only.
    fn scratch(&mut self, words: usize) -> Result<Buf, RuntimeError>;
    /// The adapter's workgroup memory limit in bytes.
    fn shared_limit(&self) -> u64;
    /// Where tuned parameters come from.
    fn tuning(&self) -> &Tuning;
    /// The optional kernel features to use (the device's, or fewer where the backend was
    /// told so).
    fn features(&self) -> Features;
    /// The largest storage binding, in bytes.
    fn binding_limit(&self) -> u64;
    /// The alignment of a binding's offset, in bytes (a multiple of 4).
    fn offset_align(&self) -> u64;
    /// The bytes binding `b` whole takes.
    fn binding_bytes(&self, b: Buf) -> u64;
    /// The window of `words` words of `b` starting at word `offset` (aligned by the caller),
    /// bound as a buffer of its own.
    fn window(&mut self, b: Buf, offset: usize, words: usize) -> Buf;
}

pub(crate) const BACKEND: &str = "wgpu";

/// How a tensor of dtype `d` is stored on a device with `features`: f16 as f16 where the
/// device has `shader-f16`; bf16 (and f16 elsewhere) in f32 words; integers as i32.
pub(crate) fn storage(d: DType, features: Features) -> Elem {
    match d {
        DType::F16 if features.f16 => Elem::F16,
        DType::I32 | DType::I64 => Elem::I32,
        _ => Elem::F32,
    }
}

/// The element type a dtype computes in (the generators' view; f16 storage is a retyping of
/// the kernel, see [`storage`]). f16/bf16 values compute in f32.
pub(crate) fn elem(d: DType) -> Option<Elem> {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Some(Elem::F32),
        DType::I32 | DType::I64 => Some(Elem::I32),
    }
}

fn kerr(e: WgslError) -> RuntimeError {
    RuntimeError::Device(format!("wgpu: {e}"))
}

fn linear(n: usize) -> [u32; 3] {
    grid_for(n.div_ceil(LINEAR_WG as usize) as u64)
}

/// Element strides of `shape` read broadcast (right-aligned) into `out`.
pub(crate) fn broadcast_strides(shape: &Shape, out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let own = shape.strides();
    (0..r)
        .map(|i| {
            if i + shape.rank() < r {
                0
            } else {
                let j = i + shape.rank() - r;
                if shape.0[j] == 1 && out[i] != 1 {
                    0
                } else {
                    own[j]
                }
            }
        })
        .collect()
}

fn contiguous(dims: &[usize]) -> Vec<usize> {
    Shape(dims.to_vec()).strides()
}

#[allow(clippy::too_many_arguments)] // one elementwise launch: names, dtypes, expression, node, buffers
fn ew(
    variant: &str,
    ins_e: &[Elem],
    out_e: Elem,
    expr: &str,
    g: &Graph,
    i: usize,
    bufs: &[Buf],
    out: Buf,
) -> Result<Vec<Step>, RuntimeError> {
    let node = &g.nodes[i];
    let dims = node.shape.dims().to_vec();
    let strides: Vec<Vec<usize>> = node.inputs.iter().map(|id| broadcast_strides(g.shape(*id), &dims)).collect();
    let kernel = elementwise::elementwise(variant, ins_e, out_e, expr).map_err(kerr)?;
    let meta = elementwise::meta(&dims, &strides).map_err(kerr)?;
    Ok(vec![Step { kernel, meta, ins: bufs.to_vec(), out, grid: linear(node.shape.numel()) }])
}

/// A strided copy of elements stored as `src_e` into elements stored as `dst_e` (f16 to f16,
/// f16 widened to f32, or 32-bit words).
fn copy_step(
    (src_e, dst_e): (Elem, Elem),
    dims: &[usize],
    src: (Buf, usize, &[usize]),
    dst: (Buf, usize, &[usize]),
) -> Result<Step, RuntimeError> {
    let meta = copy::meta(dims, src.1, src.2, dst.1, dst.2).map_err(kerr)?;
    let kernel = if src_e == Elem::F16 { copy::strided_typed(src_e, dst_e).map_err(kerr)? } else { copy::strided() };
    Ok(Step { kernel, meta, ins: vec![src.0], out: dst.0, grid: linear(dims.iter().product()) })
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// At most this many launches for one copy split into boxes.
const MAX_COPY_BOXES: usize = 1 << 16;

/// A strided copy (as [`copy_step`]) whose source or destination is larger than one
/// binding: the iteration space is bisected into boxes until both footprints (the element
/// range a box touches, from its aligned start) fit a binding, and each box copies between
/// windows, its bases relative to them. One launch when both buffers fit.
pub(crate) fn copy_steps(
    alloc: &mut dyn Alloc,
    es: (Elem, Elem),
    dims: &[usize],
    src: (Buf, usize, &[usize]),
    dst: (Buf, usize, &[usize]),
) -> Result<Vec<Step>, RuntimeError> {
    let limit = alloc.binding_limit();
    if alloc.binding_bytes(src.0) <= limit && alloc.binding_bytes(dst.0) <= limit {
        return Ok(vec![copy_step(es, dims, src, dst)?]);
    }
    let align = alloc.offset_align();
    // (first element, element count, first word) of the aligned window a box touches.
    let footprint = |e: Elem, base: usize, st: &[usize], bx: &[(usize, usize)]| {
        let lo = base + bx.iter().zip(st).map(|(r, s)| r.0 * s).sum::<usize>();
        let hi = base + bx.iter().zip(st).map(|(r, s)| (r.1 - 1) * s).sum::<usize>() + 1;
        let per_align = (align / 4) as usize * if e == Elem::F16 { 2 } else { 1 };
        let start = lo / per_align * per_align;
        (start, hi - start)
    };
    let fits = |e: Elem, (_, n): (usize, usize)| e.words(n) as u64 * 4 <= limit;
    let mut boxes = vec![dims.iter().map(|&d| (0, d)).collect::<Vec<_>>()];
    let mut steps = Vec::new();
    while let Some(bx) = boxes.pop() {
        if bx.iter().any(|r| r.1 == r.0) {
            continue;
        }
        let (fs, fd) = (footprint(es.0, src.1, src.2, &bx), footprint(es.1, dst.1, dst.2, &bx));
        if fits(es.0, fs) && fits(es.1, fd) {
            let word = |e: Elem, start: usize| if e == Elem::F16 { start / 2 } else { start };
            let sw = alloc.window(src.0, word(es.0, fs.0), es.0.words(fs.1));
            let dw = alloc.window(dst.0, word(es.1, fd.0), es.1.words(fd.1));
            let rel = |base: usize, st: &[usize], start: usize| {
                base + bx.iter().zip(st).map(|(r, s)| r.0 * s).sum::<usize>() - start
            };
            let bdims: Vec<usize> = bx.iter().map(|r| r.1 - r.0).collect();
            let (s_rel, d_rel) = (rel(src.1, src.2, fs.0), rel(dst.1, dst.2, fd.0));
            steps.push(copy_step(es, &bdims, (sw, s_rel, src.2), (dw, d_rel, dst.2))?);
            if steps.len() > MAX_COPY_BOXES {
                break;
            }
            continue;
        }
        // Bisect the axis that spans the most elements of either buffer.
        let span = |a: usize| (bx[a].1 - bx[a].0 - 1) * src.2[a].max(dst.2[a]);
        let Some(a) = (0..bx.len()).filter(|&a| bx[a].1 - bx[a].0 > 1).max_by_key(|&a| span(a)) else {
            return Err(RuntimeError::OutOfMemory {
                what: "one element of a copy (past one storage binding)".into(),
                needed: fs.1.max(fd.1) as u64 * 4,
                available: limit,
            });
        };
        let mid = (bx[a].0 + bx[a].1) / 2;
        let (mut left, mut right) = (bx.clone(), bx);
        left[a].1 = mid;
        right[a].0 = mid;
        boxes.push(right);
        boxes.push(left);
    }
    if steps.len() > MAX_COPY_BOXES {
        return Err(RuntimeError::OutOfMemory {
            what: format!("a copy past one storage binding (more than {MAX_COPY_BOXES} windows)"),
            needed: alloc.binding_bytes(src.0).max(alloc.binding_bytes(dst.0)),
            available: limit,
        });
    }
    Ok(steps)
}

/// A lane kernel over `axis` of `x`: the subgroup variant where `features` has subgroups.
#[allow(clippy::too_many_arguments)] // one lane launch: op, shape, axis, eps, features, buffers
fn lane_step(
    op: LaneOp,
    x: &[usize],
    axis: usize,
    eps: f64,
    features: Features,
    ins: Vec<Buf>,
    out: Buf,
) -> Result<Step, RuntimeError> {
    let outer: usize = x[..axis].iter().product();
    let len = x[axis];
    let inner: usize = x[axis + 1..].iter().product();
    let lanes = outer * inner;
    let wg = if len >= 1024 {
        256
    } else if len >= 128 {
        128
    } else {
        64
    };
    let kernel = lane::lane(op, wg, features.subgroups).map_err(kerr)?;
    Ok(Step { kernel, meta: lane::meta(lanes, len, inner, eps).map_err(kerr)?, ins, out, grid: grid_for(lanes as u64) })
}

fn unsupported(g: &Graph, i: usize, reason: &str) -> RuntimeError {
    let n = &g.nodes[i];
    RuntimeError::Unsupported {
        backend: BACKEND,
        op: n.op.name(),
        dtype: n.dtype,
        node: i,
        name: n.name.clone(),
        reason: reason.to_string(),
    }
}

/// The launches computing node `i` from the buffers of its inputs into `out`. Leaves and
/// reshapes are handled by the planner and never reach here. A bf16 node (or an f16 node
/// without f16 storage) computes in f32 into a scratch buffer, then a rounding kernel writes
/// `out` (data movement of already-rounded values needs no rounding); an f16 node with f16
/// storage needs no extra step: its kernels' stores round (the planner retypes them).
pub(crate) fn lower(
    g: &Graph,
    i: usize,
    ins: &[Buf],
    out: Buf,
    alloc: &mut dyn Alloc,
) -> Result<Vec<Step>, RuntimeError> {
    let node = &g.nodes[i];
    // Stored as f16, a node is rounded by its kernels' stores (see `storage`).
    let round = match node.dtype {
        DType::BF16 => Some("bf16"),
        DType::F16 if storage(DType::F16, alloc.features()) != Elem::F16 => Some("f16"),
        _ => None,
    };
    let exact = match &node.op {
        Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } | Op::Upsample { .. } | Op::Gather => true,
        Op::Cast { .. } => g.dtype(node.inputs[0]) == node.dtype,
        _ => false,
    };
    match round {
        Some(r) if !exact => {
            let n = node.shape.numel();
            let tmp = alloc.scratch(n)?;
            let mut steps = lower_f32(g, i, ins, tmp, alloc)?;
            let dims = node.shape.dims();
            let meta = elementwise::meta(dims, &[contiguous(dims)]).map_err(kerr)?;
            steps.push(Step {
                kernel: elementwise::round_to(r).map_err(kerr)?,
                meta,
                ins: vec![tmp],
                out,
                grid: linear(n),
            });
            Ok(steps)
        }
        _ => lower_f32(g, i, ins, out, alloc),
    }
}

fn lower_f32(g: &Graph, i: usize, ins: &[Buf], out: Buf, alloc: &mut dyn Alloc) -> Result<Vec<Step>, RuntimeError> {
    let node = &g.nodes[i];
    let in_shape = |k: usize| g.shape(node.inputs[k]);
    let in_dtype = |k: usize| g.dtype(node.inputs[k]);
    let out_dims = node.shape.dims();
    let features = alloc.features();
    // The storage of the copied elements: the node's (copies keep the dtype).
    let same = (storage(node.dtype, features), storage(node.dtype, features));
    let oe = elem(node.dtype).ok_or_else(|| unsupported(g, i, "no device element type for this dtype"))?;
    for k in 0..node.inputs.len() {
        if elem(in_dtype(k)).is_none() {
            return Err(unsupported(g, i, "an input with no device element type"));
        }
    }
    match &node.op {
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Constant { .. }
        | Op::RopeTable { .. }
        | Op::RelPositionBucket { .. }
        | Op::Reshape { .. } => Err(RuntimeError::Device("wgpu: internal: a leaf or view reached lowering".into())),
        Op::Unary(u) => {
            if oe != Elem::F32 {
                return Err(unsupported(g, i, "unary functions compute in floating point"));
            }
            ew(u.name(), &[Elem::F32], Elem::F32, &unary_expr(*u, "x0"), g, i, ins, out)
        }
        Op::Binary(b) => {
            if oe == Elem::F32 {
                ew(b.name(), &[Elem::F32, Elem::F32], Elem::F32, &binary_expr(*b, "x0", "x1"), g, i, ins, out)
            } else {
                let e = binary_expr_int(*b, "x0", "x1").ok_or_else(|| unsupported(g, i, "integer pow"))?;
                ew(b.name(), &[Elem::I32, Elem::I32], Elem::I32, &e, g, i, ins, out)
            }
        }
        Op::Cast { .. } => {
            let ie = elem(in_dtype(0)).ok_or_else(|| unsupported(g, i, "f16/bf16 cast"))?;
            let expr = match (ie, oe) {
                (a, b) if a == b => "x0",
                (Elem::I32, Elem::F32) => "f32(x0)",
                (Elem::F32, Elem::I32) => "i32(x0)",
                _ => return Err(unsupported(g, i, "this cast")),
            };
            ew("cast", &[ie], oe, expr, g, i, ins, out)
        }
        Op::Modulate => ew("modulate", &[Elem::F32; 3], Elem::F32, "x0 * (1.0 + x1) + x2", g, i, ins, out),
        Op::Permute { perm } => {
            let st = in_shape(0).strides();
            let src: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            copy_steps(alloc, same, out_dims, (ins[0], 0, &src), (out, 0, &contiguous(out_dims)))
        }
        Op::Slice { axis, start, .. } => {
            let st = in_shape(0).strides();
            copy_steps(alloc, same, out_dims, (ins[0], start * st[*axis], &st), (out, 0, &contiguous(out_dims)))
        }
        Op::Concat { axis } => {
            let ost = contiguous(out_dims);
            let mut off = 0;
            let mut steps = Vec::new();
            for (k, &src) in ins.iter().enumerate().take(node.inputs.len()) {
                let d = in_shape(k).dims().to_vec();
                if d.iter().product::<usize>() > 0 {
                    steps.extend(copy_steps(
                        alloc,
                        same,
                        &d,
                        (src, 0, &contiguous(&d)),
                        (out, off * ost[*axis], &ost),
                    )?);
                }
                off += d[*axis];
            }
            Ok(steps)
        }
        Op::Upsample { factors } => {
            let d = in_shape(0).dims();
            let r = d.len();
            let (h, w) = (d[r - 2], d[r - 1]);
            let outer: usize = d[..r - 2].iter().product();
            let [fh, fw] = *factors;
            let dims = [outer, h, fh, w, fw];
            let src = [h * w, w, 0, 1, 0];
            copy_steps(alloc, same, &dims, (ins[0], 0, &src), (out, 0, &contiguous(&dims)))
        }
        Op::Softmax { axis } => {
            Ok(vec![lane_step(LaneOp::Softmax, in_shape(0).dims(), *axis, 0.0, alloc.features(), ins.to_vec(), out)?])
        }
        Op::RmsNorm { axis, eps, style, weight } => {
            let op = match style {
                RmsStyle::MeanSquare => LaneOp::RmsMeanSquare { weight: *weight },
                RmsStyle::L2Clamp => LaneOp::RmsL2Clamp { weight: *weight },
            };
            Ok(vec![lane_step(op, in_shape(0).dims(), *axis, *eps, alloc.features(), ins.to_vec(), out)?])
        }
        Op::LayerNorm { eps, affine } => {
            let d = in_shape(0).dims();
            let axis = d.len().saturating_sub(1);
            if d.is_empty() {
                return Err(unsupported(g, i, "layer norm of a scalar"));
            }
            Ok(vec![lane_step(
                LaneOp::LayerNorm { affine: *affine },
                d,
                axis,
                *eps,
                alloc.features(),
                ins.to_vec(),
                out,
            )?])
        }
        Op::Reduce { op, axes, .. } => {
            if oe != Elem::F32 {
                return Err(unsupported(g, i, "integer reductions"));
            }
            let lop = match op {
                ReduceOp::Sum => LaneOp::Sum,
                ReduceOp::Mean => LaneOp::Mean,
                ReduceOp::Max => LaneOp::Max,
                ReduceOp::Min => LaneOp::Min,
            };
            let d = in_shape(0).dims().to_vec();
            let mut ax = axes.clone();
            ax.sort_unstable();
            ax.dedup();
            if ax.is_empty() {
                let n = d.iter().product::<usize>();
                return copy_steps(alloc, same, &[n], (ins[0], 0, &[1]), (out, 0, &[1]));
            }
            let consecutive = ax.windows(2).all(|w| w[1] == w[0] + 1);
            if consecutive {
                let (a0, a1) = (ax[0], ax[ax.len() - 1]);
                let mut v = d[..a0].to_vec();
                v.push(d[a0..=a1].iter().product());
                v.extend_from_slice(&d[a1 + 1..]);
                return Ok(vec![lane_step(lop, &v, a0, 0.0, alloc.features(), ins.to_vec(), out)?]);
            }
            // Move the reduced axes last (a copy), then reduce contiguous lanes.
            let kept: Vec<usize> = (0..d.len()).filter(|a| !ax.contains(a)).collect();
            let perm: Vec<usize> = kept.iter().chain(ax.iter()).copied().collect();
            let pd: Vec<usize> = perm.iter().map(|&p| d[p]).collect();
            let st = in_shape(0).strides();
            let src: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            let n: usize = d.iter().product();
            let tmp = alloc.scratch(n)?;
            // Into an f32 scratch (widened from f16 storage).
            let to_f32 = (storage(in_dtype(0), features), Elem::F32);
            let mut steps = copy_steps(alloc, to_f32, &pd, (ins[0], 0, &src), (tmp, 0, &contiguous(&pd)))?;
            let outer: usize = kept.iter().map(|&a| d[a]).product();
            let len: usize = ax.iter().map(|&a| d[a]).product();
            steps.push(lane_step(lop, &[outer, len], 1, 0.0, alloc.features(), vec![tmp], out)?);
            Ok(steps)
        }
        Op::Rope => {
            let d = in_shape(0).dims();
            let r = d.len();
            let meta = misc::rope_meta(node.shape.numel(), d[r - 3], d[r - 2], d[r - 1]).map_err(kerr)?;
            if d[r - 1] % 2 != 0 {
                return Err(unsupported(g, i, "odd head dim"));
            }
            Ok(vec![Step { kernel: misc::rope(), meta, ins: ins.to_vec(), out, grid: linear(node.shape.numel()) }])
        }
        Op::Gather => {
            if oe != Elem::F32 {
                return Err(unsupported(g, i, "gather of an integer table"));
            }
            let t = in_shape(0).dims();
            let (v, d, n) = (t[0], t[1], node.shape.numel());
            let e = storage(in_dtype(0), features);
            // A table past one binding: windows of rows, each launch writing the ids in it.
            let limit = alloc.binding_limit();
            let row_bytes = (d as u64 * if e == Elem::F16 { 2 } else { 4 }).max(1);
            let rows = if alloc.binding_bytes(ins[0]) <= limit {
                v
            } else {
                let align = alloc.offset_align();
                let gran = (align / gcd(align, row_bytes)) as usize;
                (limit / row_bytes) as usize / gran * gran
            };
            if rows == 0 {
                return Err(unsupported(g, i, "one aligned group of table rows exceeds a storage binding"));
            }
            let mut steps = Vec::new();
            for row0 in (0..v).step_by(rows) {
                let len = rows.min(v - row0);
                let table = if len == v { ins[0] } else { alloc.window(ins[0], e.words(row0 * d), e.words(len * d)) };
                let meta = misc::gather_meta(n, v, d, row0, len).map_err(kerr)?;
                steps.push(Step { kernel: misc::gather(), meta, ins: vec![table, ins[1]], out, grid: linear(n) });
            }
            Ok(steps)
        }
        Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period } => {
            if elem(in_dtype(0)) != Some(Elem::F32) {
                return Err(unsupported(g, i, "integer timesteps: cast them to f32 first"));
            }
            let half = dim / 2;
            // Exactly as the reference computes them (f32).
            let freqs: Vec<f32> = (0..half)
                .map(|j| (-(*max_period as f32).ln() * j as f32 / (half as f32 - *downscale_freq_shift as f32)).exp())
                .collect();
            let meta = misc::timestep_meta(node.shape.numel(), *dim, *flip_sin_to_cos, &freqs).map_err(kerr)?;
            Ok(vec![Step { kernel: misc::timestep(), meta, ins: ins.to_vec(), out, grid: linear(node.shape.numel()) }])
        }
        Op::MatMul { trans_a, trans_b, bias } | Op::MatMulEpilogue { trans_a, trans_b, bias, .. } => {
            let epi = gemm_epilogue(g, i, 2 + usize::from(*bias))?;
            let (a, b) = (in_shape(0).dims(), in_shape(1).dims());
            let r = out_dims.len();
            let (m, n) = (out_dims[r - 2], out_dims[r - 1]);
            let k = if *trans_a { a[a.len() - 2] } else { a[a.len() - 1] };
            let batch = &out_dims[..r - 2];
            let bstr = |s: &[usize]| -> Vec<usize> {
                let bs = Shape(s[..s.len() - 2].to_vec());
                let unit = s[s.len() - 2] * s[s.len() - 1];
                broadcast_strides(&bs, batch).into_iter().map(|x| x * unit).collect()
            };
            let (ab, bb) = (bstr(a), bstr(b));
            // Merge batch axes when more than 4 (only contiguous runs can merge; refuse otherwise).
            if batch.len() > 4 {
                return Err(unsupported(g, i, "more than 4 batch axes"));
            }
            let a_str = if *trans_a { [1, m] } else { [k, 1] };
            let b_str = if *trans_b { [1, k] } else { [n, 1] };
            let mut meta = gemm::matmul_meta(m, n, k, a_str, b_str, batch, &ab, &bb).map_err(kerr)?;
            meta.extend(epi.as_ref().map_or(Vec::new(), |e| e.1.clone()));
            let (kind, dims, layout) = matmul_problem(out_dims, a, *trans_a, *trans_b, *bias);
            let nb = dims[0];
            let p = tuned_gemm(alloc, kind, dims, &layout, pick_gemm(m, n, alloc.shared_limit()), g, i)?;
            let kernel = gemm::gemm_fused(kind, p, epi.map(|e| e.0)).map_err(kerr)?;
            let grid = [n.div_ceil(p.bn as usize), m.div_ceil(p.bm as usize), nb];
            Ok(vec![Step { kernel, meta, ins: ins.to_vec(), out, grid: grid3(g, i, grid)? }])
        }
        Op::Conv3d { stride, pad, bias } | Op::Conv3dEpilogue { stride, pad, bias, .. } => {
            let epi = gemm_epilogue(g, i, 2 + usize::from(*bias))?;
            let x = in_shape(0).dims();
            let w = in_shape(1).dims();
            let xs = [x[0], x[1], x[2], x[3], x[4]];
            let ws = [w[0], w[1], w[2], w[3], w[4]];
            let os = [out_dims[2], out_dims[3], out_dims[4]];
            let mut meta = gemm::conv_meta(xs, ws, os, *stride, [pad[0][0], pad[1][0], pad[2][0]]).map_err(kerr)?;
            meta.extend(epi.as_ref().map_or(Vec::new(), |e| e.1.clone()));
            let ngemm = x[0] * os.iter().product::<usize>();
            let (kind, dims, layout) = conv_problem(out_dims, x, w, *stride, *bias);
            let heur = pick_gemm(w[0], ngemm, alloc.shared_limit());
            let p = tuned_gemm(alloc, kind, dims, &layout, heur, g, i)?;
            let kernel = gemm::gemm_fused(kind, p, epi.map(|e| e.0)).map_err(kerr)?;
            let grid = gemm::conv_grid(ngemm.div_ceil(p.bn as usize), w[0].div_ceil(p.bm as usize));
            Ok(vec![Step { kernel, meta, ins: ins.to_vec(), out, grid: grid3(g, i, grid)? }])
        }
        Op::Attention { scale, bias, mask } => {
            let q = in_shape(0).dims();
            let (b, sq, h, d) = (q[0], q[1], q[2], q[3]);
            let sk = in_shape(1).dims()[1];
            let dv = in_shape(2).dims()[3];
            let bias_str = if *bias {
                let bs = broadcast_strides(in_shape(3), &[b, h, sq, sk]);
                [bs[0], bs[1], bs[2], bs[3]]
            } else {
                [0; 4]
            };
            let mask_e = if *mask { Some(elem(in_dtype(3 + usize::from(*bias))).unwrap_or(Elem::F32)) } else { None };
            let limit = alloc.shared_limit();
            let heur = attention_heuristic(sq, d, dv, *bias, mask_e, limit);
            if heur.shared_bytes() > limit || d > 512 || dv > 512 {
                return Err(unsupported(g, i, "head dim too large for this adapter's workgroup memory"));
            }
            let (key, _) = alloc.tuning().attention_key(&heur, [b * h, sq, sk], &operand_storage(g, i, 3, features));
            let p = match alloc.tuning().choose(&key) {
                Choice::Forced(t) => heur
                    .with_text(&t)
                    .filter(|p| p.shared_bytes() <= limit)
                    .ok_or_else(|| unsupported(g, i, &format!("forced parameters `{t}` are invalid here")))?,
                Choice::Tuned(t) => {
                    let p = heur.with_text(&t).filter(|p| p.shared_bytes() <= limit);
                    alloc.tuning().record(p.is_some());
                    p.unwrap_or(heur)
                }
                Choice::Heuristic => heur,
            };
            let bq = p.bq;
            let kernel = attention::attention(p).map_err(kerr)?;
            let meta = attention::meta(b, sq, sk, h, *scale, bias_str).map_err(kerr)?;
            let grid = [sq.div_ceil(bq as usize), b * h, 1];
            Ok(vec![Step { kernel, meta, ins: ins.to_vec(), out, grid: grid3(g, i, grid)? }])
        }
        Op::Fused { expr } => {
            let dims = out_dims.to_vec();
            let strides: Vec<Vec<usize>> =
                node.inputs.iter().map(|id| broadcast_strides(g.shape(*id), &dims)).collect();
            epilogue_step(expr, &dims, strides, ins.to_vec(), out)
        }
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => {
            let base = 1 + usize::from(*weight);
            let op = Op::RmsNorm { axis: *axis, eps: *eps, style: *style, weight: *weight };
            with_epilogue(g, i, op, base, epilogue, ins, out, alloc)
        }
        Op::LayerNormModulate { eps } => {
            let d = in_shape(0).dims().to_vec();
            if d.is_empty() {
                return Err(unsupported(g, i, "layer norm of a scalar"));
            }
            let tmp = alloc.scratch(node.shape.numel())?;
            let ln = lane_step(
                LaneOp::LayerNorm { affine: false },
                &d,
                d.len() - 1,
                *eps,
                alloc.features(),
                vec![ins[0]],
                tmp,
            )?;
            let strides = vec![contiguous(&d), broadcast_strides(in_shape(1), &d), broadcast_strides(in_shape(2), &d)];
            let kernel = elementwise::elementwise("modulate", &[Elem::F32; 3], Elem::F32, "x0 * (1.0 + x1) + x2")
                .map_err(kerr)?;
            let meta = elementwise::meta(&d, &strides).map_err(kerr)?;
            let m = Step { kernel, meta, ins: vec![tmp, ins[1], ins[2]], out, grid: linear(node.shape.numel()) };
            Ok(vec![ln, m])
        }
        Op::RmsNormRope { eps, heads } => {
            let d = in_shape(0).dims().to_vec();
            let r = out_dims.len();
            if d.is_empty() || r < 3 || !out_dims[r - 1].is_multiple_of(2) || *heads == 0 {
                return Err(unsupported(g, i, "rms_norm_rope shape"));
            }
            let tmp = alloc.scratch(node.shape.numel())?;
            let op = LaneOp::RmsMeanSquare { weight: true };
            let norm = lane_step(op, &d, d.len() - 1, *eps, alloc.features(), vec![ins[0], ins[1]], tmp)?;
            let n = node.shape.numel();
            let meta = misc::rope_meta(n, out_dims[r - 3], out_dims[r - 2], out_dims[r - 1]).map_err(kerr)?;
            let rope = Step { kernel: misc::rope(), meta, ins: vec![tmp, ins[2], ins[3]], out, grid: linear(n) };
            Ok(vec![norm, rope])
        }
    }
}

/// The fused epilogue of a matmul or conv3d epilogue node (`None` for the plain ops): its
/// program, and its meta (output dims, each extra input's broadcast strides) for the GEMM
/// kernel's store. `base`: the inputs before the epilogue's (a, b, bias).
fn gemm_epilogue(
    g: &Graph,
    i: usize,
    base: usize,
) -> Result<Option<(&vidrt_ir::ElementwiseExpr, Vec<u32>)>, RuntimeError> {
    let node = &g.nodes[i];
    let expr = match &node.op {
        Op::MatMulEpilogue { epilogue, .. } | Op::Conv3dEpilogue { epilogue, .. } => epilogue,
        _ => return Ok(None),
    };
    let extras = node.inputs.get(base..).unwrap_or(&[]);
    if expr.num_inputs() != extras.len() + 1 {
        return Err(unsupported(g, i, "epilogue slots and node inputs disagree"));
    }
    let dims = node.shape.dims();
    let strides: Vec<Vec<usize>> = extras.iter().map(|id| broadcast_strides(g.shape(*id), dims)).collect();
    Ok(Some((expr, gemm::epilogue_meta(dims, &strides).map_err(kerr)?)))
}

/// A 3-D grid within the per-dimension limit (a conv folds its columns into z; past that,
/// refused).
fn grid3(g: &Graph, i: usize, grid: [usize; 3]) -> Result<[u32; 3], RuntimeError> {
    let max = vidrt_kernels::wgsl::MAX_GROUPS_PER_DIM as usize;
    if grid.iter().any(|&x| x > max) {
        return Err(unsupported(g, i, &format!("grid {grid:?} exceeds 65535 workgroups per dimension")));
    }
    Ok([grid[0] as u32, grid[1] as u32, grid[2] as u32])
}

/// A matmul's GEMM problem: kind, `[batch, M, N, K]`, layout facts.
fn matmul_problem(
    out: &[usize],
    a: &[usize],
    trans_a: bool,
    trans_b: bool,
    bias: bool,
) -> (GemmKind, [usize; 4], String) {
    let r = out.len();
    let k = if trans_a { a[a.len() - 2] } else { a[a.len() - 1] };
    let nb: usize = out[..r - 2].iter().product();
    let layout = format!("t{}{}", u8::from(trans_a), u8::from(trans_b));
    (GemmKind::MatMul { bias }, [nb, out[r - 2], out[r - 1], k], layout)
}

/// A conv3d's implicit-GEMM problem: kind, `[1, Co, N·To·Ho·Wo, Ci·kt·kh·kw]`, layout facts.
fn conv_problem(
    out: &[usize],
    x: &[usize],
    w: &[usize],
    stride: [usize; 3],
    bias: bool,
) -> (GemmKind, [usize; 4], String) {
    let ngemm = x[0] * out[2] * out[3] * out[4];
    let layout = format!("k{}x{}x{}s{}x{}x{}", w[2], w[3], w[4], stride[0], stride[1], stride[2]);
    (GemmKind::Conv3d { bias }, [1, w[0], ngemm, w[1] * w[2] * w[3] * w[4]], layout)
}

/// The attention tile heuristic: 32-key tiles (fewer where workgroup memory is short), 32
/// query rows for short sequences, else 64.
fn attention_heuristic(sq: usize, d: usize, dv: usize, bias: bool, mask: Option<Elem>, limit: u64) -> AttnParams {
    let mut bk = 32u32;
    while bk > 1 && u64::from(bk) * (d + dv) as u64 * 4 > limit {
        bk /= 2;
    }
    let bq = if sq <= 32 { 32 } else { 64 };
    AttnParams { bq, bk, d: d as u32, dv: dv as u32, bias, mask }
}

/// The tunable problem node `i` poses, if any: its key and candidate parameter texts.
pub(crate) fn problem(g: &Graph, i: usize, limit: u64, t: &Tuning, f: Features) -> Option<(TuneKey, Vec<String>)> {
    let node = &g.nodes[i];
    let sh = |k: usize| g.shape(node.inputs[k]).dims();
    let out = node.shape.dims();
    match &node.op {
        Op::MatMul { trans_a, trans_b, bias } | Op::MatMulEpilogue { trans_a, trans_b, bias, .. } => {
            let (kind, dims, layout) = matmul_problem(out, sh(0), *trans_a, *trans_b, *bias);
            Some(t.gemm_key(kind, dims, &layout, &operand_storage(g, i, 2, f)))
        }
        Op::Conv3d { stride, bias, .. } | Op::Conv3dEpilogue { stride, bias, .. } => {
            let (kind, dims, layout) = conv_problem(out, sh(0), sh(1), *stride, *bias);
            Some(t.gemm_key(kind, dims, &layout, &operand_storage(g, i, 2, f)))
        }
        Op::Attention { bias, mask, .. } => {
            let (q, k, v) = (sh(0), sh(1), sh(2));
            let mask_e = if *mask {
                Some(elem(g.dtype(node.inputs[3 + usize::from(*bias)])).unwrap_or(Elem::F32))
            } else {
                None
            };
            let heur = attention_heuristic(q[1], q[3], v[3], *bias, mask_e, limit);
            Some(t.attention_key(&heur, [q[0] * q[2], q[1], k[1]], &operand_storage(g, i, 3, f)))
        }
        _ => None,
    }
}

/// How the first `n` inputs of node `i` (a GEMM's or attention's operands) are stored, e.g.
/// `f16,f16`: part of the tuning key, since f16 storage changes the kernel a winner runs.
fn operand_storage(g: &Graph, i: usize, n: usize, f: Features) -> String {
    let st: Vec<&str> = g.nodes[i].inputs.iter().take(n).map(|id| storage(g.dtype(*id), f).wgsl()).collect();
    st.join(",")
}

/// The GEMM tile for a problem: forced (tuner), else the database's winner if it is valid
/// on this adapter, else `heuristic`.
fn tuned_gemm(
    alloc: &dyn Alloc,
    kind: GemmKind,
    dims: [usize; 4],
    layout: &str,
    heuristic: GemmParams,
    g: &Graph,
    i: usize,
) -> Result<GemmParams, RuntimeError> {
    let limit = alloc.shared_limit();
    let (key, _) = alloc.tuning().gemm_key(kind, dims, layout, &operand_storage(g, i, 2, alloc.features()));
    let valid = |t: &str| GemmParams::from_text(t).filter(|p| p.shared_bytes() <= limit);
    match alloc.tuning().choose(&key) {
        Choice::Forced(t) => {
            valid(&t).ok_or_else(|| unsupported(g, i, &format!("forced parameters `{t}` are invalid here")))
        }
        Choice::Tuned(t) => {
            let p = valid(&t);
            alloc.tuning().record(p.is_some());
            Ok(p.unwrap_or(heuristic))
        }
        Choice::Heuristic => Ok(heuristic),
    }
}

/// The deterministic tile heuristic (no tuning database yet): the largest tile from the
/// parameter space that the problem fills and the adapter's workgroup memory allows.
fn pick_gemm(m: usize, n: usize, limit: u64) -> GemmParams {
    let fits = |p: &GemmParams| p.shared_bytes() <= limit;
    let want = if m >= 64 && n >= 64 {
        GemmParams::DEFAULT
    } else if m >= 32 && n >= 32 {
        GemmParams { bm: 32, bn: 32, bk: 16, tm: 2, tn: 2 }
    } else {
        GemmParams { bm: 16, bn: 16, bk: 16, tm: 1, tn: 1 }
    };
    if fits(&want) {
        want
    } else {
        GemmParams { bm: 16, bn: 16, bk: 8, tm: 1, tn: 1 }
    }
}

/// An elementwise program over slots read through `strides` (one per slot).
fn epilogue_step(
    expr: &vidrt_ir::ElementwiseExpr,
    dims: &[usize],
    strides: Vec<Vec<usize>>,
    ins: Vec<Buf>,
    out: Buf,
) -> Result<Vec<Step>, RuntimeError> {
    let kernel = elementwise::fused(expr).map_err(kerr)?;
    let meta = elementwise::meta(dims, &strides).map_err(kerr)?;
    Ok(vec![Step { kernel, meta, ins, out, grid: linear(dims.iter().product()) }])
}

/// `op` (the node's first `base` inputs) into a scratch buffer, then the epilogue (slot 0:
/// that result; slot k: input `base + k − 1` broadcast): two launches, for the RMS norm
/// epilogue (matmul and conv3d splice theirs into the GEMM's store).
#[allow(clippy::too_many_arguments)]
fn with_epilogue(
    g: &Graph,
    i: usize,
    op: Op,
    base: usize,
    epilogue: &vidrt_ir::ElementwiseExpr,
    ins: &[Buf],
    out: Buf,
    alloc: &mut dyn Alloc,
) -> Result<Vec<Step>, RuntimeError> {
    let node = &g.nodes[i];
    // A copy of the graph holding the plain op as node `i` (same inputs, f32 result).
    let mut g2 = g.clone();
    g2.nodes[i].op = op;
    g2.nodes[i].dtype = vidrt_ir::DType::F32;
    g2.nodes[i].inputs.truncate(base);
    let dims = node.shape.dims().to_vec();
    let tmp = alloc.scratch(node.shape.numel())?;
    let mut steps = lower_f32(&g2, i, &ins[..base], tmp, alloc)?;
    let mut strides = vec![contiguous(&dims)];
    let mut bufs = vec![tmp];
    for (k, id) in node.inputs.iter().enumerate().skip(base) {
        strides.push(broadcast_strides(g.shape(*id), &dims));
        bufs.push(ins[k]);
    }
    steps.extend(epilogue_step(epilogue, &dims, strides, bufs, out)?);
    Ok(steps)
}
