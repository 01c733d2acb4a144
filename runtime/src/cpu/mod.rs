//! The CPU reference backend: f32 arithmetic (f16/bf16 storage converted on the way in and
//! out), multithreaded with rayon, GEMM-shaped work through `matrixmultiply`. It is the
//! oracle every other backend is tested against, so every op is implemented plainly and
//! exactly as the IR documents it.
//!
//! Compilation runs the compiler passes first (`vidrt_ir::passes`: fold, cse, dce, fusion,
//! memory plan) unless the backend is [`CpuBackend::unoptimized`] (reference runs). The
//! memory plan's arena size is checked against the configured limit before anything runs;
//! the executor itself keeps one buffer per value, freed after its last reader (it does
//! not place values at the plan's offsets).
//!
//! Memory: values are dropped after their last reader, and attention never holds more than
//! one tile of scores per worker thread, so the working set is bounded by the live
//! activations of the graph.

mod attention;
mod conv;
mod elementwise;
mod embed;
mod fused;
mod layout;
mod matmul;
mod norm;

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use vidrt_ir::{DType, Graph, Node, NodeId, Op, Tensor, TensorData};

use crate::backend::{Backend, Executable, RunOptions, Support, WeightSource};
use crate::RuntimeError;

pub use attention::attention;
pub use conv::conv3d;
pub use matmul::{matmul, sgemm};

/// The CPU reference backend.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    optimize: bool,
    memory_limit: Option<u64>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend { optimize: true, memory_limit: None }
    }
}

impl CpuBackend {
    /// The backend with the default compile path (every pass, fusion included).
    pub fn new() -> Self {
        Self::default()
    }

    /// The backend running graphs exactly as given (verify only, no fold, CSE, DCE or
    /// fusion): the reference for checking the passes and fused ops.
    pub fn unoptimized() -> Self {
        CpuBackend { optimize: false, memory_limit: None }
    }

    /// Fails compilation up front when the planned activation memory exceeds `bytes`.
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Whether compilation runs the passes.
    pub fn is_optimized(&self) -> bool {
        self.optimize
    }
}

/// The memory the OS reports available (`MemAvailable` of `/proc/meminfo`), in bytes;
/// `None` where that cannot be read.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Runs the pass pipeline (`vidrt_ir::passes::pipeline_with`) and turns its errors into
/// runtime errors: an over-limit plan is [`RuntimeError::OutOfMemory`].
pub fn optimize(
    graph: &Graph,
    opts: &vidrt_ir::passes::PassOptions,
) -> Result<(Graph, vidrt_ir::passes::PassReport), RuntimeError> {
    use vidrt_ir::passes::PassError;
    vidrt_ir::passes::pipeline_with(graph, opts).map_err(|e| match e {
        PassError::Ir { source, .. } => RuntimeError::Ir(source),
        PassError::OutOfMemory { needed, limit, at, name } => RuntimeError::OutOfMemory {
            what: format!("the planned activation arena (largest live set at node %{at} `{name}`)"),
            needed,
            available: limit,
        },
    })
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        // Exhaustive on purpose: a new op fails to compile here until it is decided.
        let float_only = |what: &str| {
            if dtype.is_float() {
                Support::Yes
            } else {
                Support::No(format!("{what} computes in floating point"))
            }
        };
        match op {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } | Op::Cast { .. } => Support::Yes,
            Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } => Support::Yes,
            Op::RelPositionBucket { .. } => Support::Yes,
            Op::Binary(_) => Support::Yes,
            Op::RopeTable { .. }
            | Op::Unary(_)
            | Op::MatMul { .. }
            | Op::Attention { .. }
            | Op::Conv3d { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Modulate
            | Op::Rope
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::Upsample { .. }
            | Op::Gather
            | Op::TimestepEmbedding { .. }
            | Op::Fused { .. }
            | Op::MatMulEpilogue { .. }
            | Op::Conv3dEpilogue { .. }
            | Op::LayerNormModulate { .. }
            | Op::RmsNormRope { .. }
            | Op::RmsNormEpilogue { .. } => float_only(op.name()),
        }
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        vidrt_ir::verify(graph)?;
        let optimized;
        let graph = if self.optimize {
            let opts = vidrt_ir::passes::PassOptions { memory_limit: self.memory_limit, ..Default::default() };
            optimized = optimize(graph, &opts)?.0;
            &optimized
        } else {
            if let Some(limit) = self.memory_limit {
                let plan = vidrt_ir::passes::plan_memory(graph, None);
                if plan.arena_bytes > limit {
                    return Err(RuntimeError::OutOfMemory {
                        what: "the planned activation arena".into(),
                        needed: plan.arena_bytes,
                        available: limit,
                    });
                }
            }
            graph
        };
        for (i, n) in graph.nodes.iter().enumerate() {
            if let Support::No(reason) = self.support(&n.op, n.dtype) {
                return Err(RuntimeError::Unsupported {
                    backend: "cpu",
                    op: n.op.name(),
                    dtype: n.dtype,
                    node: i,
                    name: n.name.clone(),
                    reason,
                });
            }
        }
        let mut bound = vec![None; graph.len()];
        for (name, id) in graph.weights() {
            let n = graph.node(id);
            let t = weights.fetch(name, &n.shape, n.dtype)?;
            if t.shape() != &n.shape {
                return Err(RuntimeError::ShapeMismatch {
                    name: name.to_string(),
                    expected: n.shape.clone(),
                    expected_dtype: n.dtype,
                    got: t.shape().clone(),
                    got_dtype: t.dtype(),
                });
            }
            bound[id.index()] = Some(t.cast(n.dtype));
        }
        Ok(Box::new(CpuExecutable { graph: graph.clone(), weights: bound, last_use: graph.last_uses() }))
    }
}

/// A graph compiled for the CPU.
pub struct CpuExecutable {
    graph: Graph,
    weights: Vec<Option<Tensor>>,
    last_use: Vec<Option<usize>>,
}

impl Executable for CpuExecutable {
    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let g = &self.graph;
        let mut fed: Vec<Option<&Tensor>> = vec![None; g.len()];
        for (name, t) in inputs {
            let id = g.inputs().into_iter().find(|(n, _)| n == name).map(|(_, id)| id).ok_or_else(|| {
                RuntimeError::BadInput { name: name.to_string(), reason: "the graph has no such input".into() }
            })?;
            if fed[id.index()].is_some() {
                return Err(RuntimeError::BadInput { name: name.to_string(), reason: "fed twice".into() });
            }
            let n = g.node(id);
            if t.shape() != &n.shape || t.dtype().is_float() != n.dtype.is_float() {
                return Err(RuntimeError::ShapeMismatch {
                    name: name.to_string(),
                    expected: n.shape.clone(),
                    expected_dtype: n.dtype,
                    got: t.shape().clone(),
                    got_dtype: t.dtype(),
                });
            }
            fed[id.index()] = Some(t);
        }
        let mut values: Vec<Option<Cow<'_, Tensor>>> = Vec::with_capacity(g.len());
        values.resize_with(g.len(), || None);
        for (i, node) in g.nodes.iter().enumerate() {
            if let Some(c) = &opts.cancel {
                if c.load(Ordering::Relaxed) {
                    return Err(RuntimeError::Cancelled);
                }
            }
            let value: Cow<'_, Tensor> = match &node.op {
                Op::Input { name } => {
                    let t = fed[i]
                        .ok_or_else(|| RuntimeError::BadInput { name: name.clone(), reason: "not fed".into() })?;
                    if t.dtype() == node.dtype {
                        Cow::Borrowed(t)
                    } else {
                        Cow::Owned(t.cast(node.dtype))
                    }
                }
                Op::Weight { name } => match &self.weights[i] {
                    Some(t) => Cow::Borrowed(t),
                    None => return Err(RuntimeError::Weight { name: name.clone(), reason: "not bound".into() }),
                },
                _ => {
                    let ins: Vec<&Tensor> = node
                        .inputs
                        .iter()
                        .map(|id| values[id.index()].as_deref())
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| RuntimeError::Device(format!("node %{i}: an input was freed too early")))?;
                    Cow::Owned(eval(node, &ins)?)
                }
            };
            let check =
                opts.check_intermediates || (opts.check_outputs && g.outputs.iter().any(|(_, o)| o.index() == i));
            if check && !node.op.is_leaf() {
                if let Some(index) = value.first_non_finite() {
                    return Err(RuntimeError::NonFinite {
                        node: i,
                        name: node.name.clone(),
                        op: node.op.name(),
                        index,
                    });
                }
            }
            values[i] = Some(value);
            for inp in &node.inputs {
                if self.last_use[inp.index()] == Some(i) {
                    values[inp.index()] = None;
                }
            }
            if self.last_use[i].is_none() {
                values[i] = None;
            }
        }
        let mut out = Vec::with_capacity(g.outputs.len());
        for (name, id) in &g.outputs {
            let v = values[id.index()]
                .as_deref()
                .ok_or_else(|| RuntimeError::Device(format!("output `{name}` was not computed")))?;
            out.push((name.clone(), v.clone()));
        }
        Ok(out)
    }
}

/// Borrows f32 elements, converting other dtypes.
fn f32s(t: &Tensor) -> Cow<'_, [f32]> {
    match t.as_f32() {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(t.to_f32_vec()),
    }
}

/// Wraps f32 results as a tensor of the node's dtype.
fn finish(node: &Node, v: Vec<f32>) -> Result<Tensor, RuntimeError> {
    let t = Tensor::from_f32(node.shape.clone(), v).map_err(|e| RuntimeError::Device(format!("internal: {e}")))?;
    Ok(if node.dtype == DType::F32 { t } else { t.cast(node.dtype) })
}

/// Evaluates one non-leaf node.
pub fn eval(node: &Node, ins: &[&Tensor]) -> Result<Tensor, RuntimeError> {
    let x = |i: usize| f32s(ins[i]);
    let sh = |i: usize| ins[i].shape();
    let out = &node.shape;
    let v = match &node.op {
        Op::Input { .. } | Op::Weight { .. } => {
            return Err(RuntimeError::Device("internal: leaves are bound, not evaluated".into()))
        }
        Op::Constant { value } => return Ok(Tensor::full(out.clone(), node.dtype, *value)),
        Op::RelPositionBucket { q_len, k_len, num_buckets, max_distance } => {
            let v = embed::rel_position_bucket(*q_len, *k_len, *num_buckets, *max_distance);
            return Tensor::new(out.clone(), TensorData::I64(v)).map_err(|e| RuntimeError::Device(e.to_string()));
        }
        Op::Cast { to } => return Ok(ins[0].cast(*to)),
        Op::Reshape { .. } => {
            return ins[0].clone().reshape(out.clone()).map_err(|e| RuntimeError::Device(e.to_string()));
        }
        Op::Permute { perm } => return Ok(layout::permute(ins[0], perm)),
        Op::Slice { axis, start, end } => return Ok(layout::slice(ins[0], *axis, *start, *end)),
        Op::Concat { axis } => return layout::concat(ins, *axis, out),
        Op::Binary(b) if node.dtype.is_int() => return elementwise::binary_int(*b, ins[0], ins[1], out),
        Op::RopeTable { grid, dims, theta, part } => embed::rope_table(*grid, *dims, *theta, *part),
        Op::Unary(u) => elementwise::unary(*u, &x(0)),
        Op::Binary(b) => elementwise::binary(*b, &x(0), sh(0), &x(1), sh(1), out),
        Op::Modulate => elementwise::modulate(&x(0), sh(0), &x(1), sh(1), &x(2), sh(2)),
        Op::MatMul { trans_a, trans_b, bias } => {
            let b = bias.then(|| x(2));
            matmul(&x(0), sh(0), &x(1), sh(1), *trans_a, *trans_b, b.as_deref(), out)
        }
        Op::Attention { scale, bias, mask } => {
            let bias_t = bias.then(|| (x(3), sh(3).clone()));
            let mask_t = mask.then(|| x(3 + usize::from(*bias)));
            attention(
                &x(0),
                sh(0),
                &x(1),
                sh(1),
                &x(2),
                sh(2),
                *scale,
                bias_t.as_ref().map(|(v, s)| (&v[..], s)),
                mask_t.as_deref(),
            )
        }
        Op::Conv3d { stride, pad, bias } => {
            let b = bias.then(|| x(2));
            conv3d(&x(0), sh(0), &x(1), sh(1), b.as_deref(), *stride, *pad, out)
        }
        Op::RmsNorm { axis, eps, style, weight } => {
            let w = weight.then(|| x(1));
            norm::rms_norm(&x(0), sh(0), *axis, *eps, *style, w.as_deref())
        }
        Op::LayerNorm { eps, affine } => {
            let wb = affine.then(|| (x(1), x(2)));
            norm::layer_norm(&x(0), sh(0).last(), *eps, wb.as_ref().map(|(w, b)| (&w[..], &b[..])))
        }
        Op::Rope => embed::rope(&x(0), sh(0), &x(1), &x(2)),
        Op::Softmax { axis } => norm::softmax(&x(0), sh(0), *axis),
        Op::Reduce { op, axes, .. } => norm::reduce(*op, &x(0), sh(0), axes),
        Op::Upsample { factors } => layout::upsample(&x(0), sh(0), *factors),
        Op::Gather => layout::gather(&x(0), sh(0), &ins[1].to_i64_vec(), node)?,
        Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period } => {
            embed::timestep_embedding(&x(0), *dim, *flip_sin_to_cos, *downscale_freq_shift, *max_period)
        }
        Op::Fused { expr } => {
            let data: Vec<Cow<'_, [f32]>> = (0..ins.len()).map(x).collect();
            let slots: Vec<(&[f32], &vidrt_ir::Shape)> =
                data.iter().zip(ins).map(|(d, t)| (&d[..], t.shape())).collect();
            fused::fused(expr, &slots, out)
        }
        Op::MatMulEpilogue { trans_a, trans_b, bias, epilogue } => {
            let b = bias.then(|| x(2));
            let acc = matmul(&x(0), sh(0), &x(1), sh(1), *trans_a, *trans_b, b.as_deref(), out);
            apply_epilogue(epilogue, acc, out, &ins[2 + usize::from(*bias)..])
        }
        Op::Conv3dEpilogue { stride, pad, bias, epilogue } => {
            let b = bias.then(|| x(2));
            let acc = conv3d(&x(0), sh(0), &x(1), sh(1), b.as_deref(), *stride, *pad, out);
            apply_epilogue(epilogue, acc, out, &ins[2 + usize::from(*bias)..])
        }
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => {
            let w = weight.then(|| x(1));
            let acc = norm::rms_norm(&x(0), sh(0), *axis, *eps, *style, w.as_deref());
            apply_epilogue(epilogue, acc, out, &ins[1 + usize::from(*weight)..])
        }
        Op::LayerNormModulate { eps } => fused::layer_norm_modulate(&x(0), sh(0), *eps, (&x(1), sh(1)), (&x(2), sh(2))),
        Op::RmsNormRope { eps, heads } => fused::rms_norm_rope(&x(0), sh(0), *eps, *heads, &x(1), &x(2), &x(3)),
    };
    finish(node, v)
}

/// Applies an epilogue (slot 0 = `acc`, slots 1.. = `extra`) to a matmul/conv result.
fn apply_epilogue(
    epilogue: &vidrt_ir::ElementwiseExpr,
    acc: Vec<f32>,
    out: &vidrt_ir::Shape,
    extra: &[&Tensor],
) -> Vec<f32> {
    let data: Vec<Cow<'_, [f32]>> = extra.iter().map(|t| f32s(t)).collect();
    let mut slots: Vec<(&[f32], &vidrt_ir::Shape)> = vec![(&acc[..], out)];
    slots.extend(data.iter().zip(extra).map(|(d, t)| (&d[..], t.shape())));
    fused::fused(epilogue, &slots, out)
}

/// Runs the graph's node `id` alone on the given input tensors (used by tests and tools).
pub fn eval_node(g: &Graph, id: NodeId, ins: &[&Tensor]) -> Result<Tensor, RuntimeError> {
    eval(g.node(id), ins)
}
