//! The wgpu backend (issue 7): runs graphs on any wgpu adapter (Vulkan, Metal, DX12) with
//! the WGSL kernels of `vidrt_kernels::wgsl`.
//!
//! - [`WgpuBackend::new`] opens an adapter (override: `VIDRT_WGPU_ADAPTER`, a substring of
//!   the adapter's name) with the adapter's own limits, or returns an error when there is
//!   none.
//! - `compile` plans one buffer per node (reshapes alias their input; a buffer is reused by
//!   a later node once its last reader has run), uploads weights, constants and the host
//!   computed tables (rotary tables and relative-position buckets depend only on op
//!   parameters), and records every launch with its bind group.
//! - `run` writes the inputs, encodes every launch in one compute pass, submits once and
//!   reads the outputs back.
//!
//! Numerics: f32 arithmetic and accumulation; integer tensors are i32 on the device (i64
//! values are range-checked on the way in). f16 tensors are stored as f16 (two per word)
//! where the adapter has `shader-f16`: every kernel reading or writing one is retyped
//! ([`vidrt_kernels::wgsl::f16::retype`]: widened on load, rounded to nearest even on
//! store), so f16 graphs take half the memory and bandwidth. bf16 tensors (no WGSL type),
//! and f16 tensors on adapters without `shader-f16`, are kept in f32 words, rounded to
//! their dtype at every op's output: the dtype's numerics, not its memory.
//!
//! Optional adapter features are used where the adapter has them
//! ([`WgpuBackend::kernel_features`]): f16 storage, and subgroups for the lane reductions
//! (softmax, norms, reductions).
//!
//! Adapter limits: buffers may be as large as `max_buffer_size`; a kernel binds at most
//! `max_storage_buffer_binding_size` ([`WgpuBackend::binding_limit`]). A node with a larger
//! tensor is computed in chunks (`split`): where the op's parts are contiguous, chunks bind
//! aligned windows of its buffers (elementwise ops, norms, matmul rows and batches,
//! attention batches and query rows, rope, conv3d batches and output channels); otherwise
//! boxes are staged through scratch copies (attention by heads, conv3d by output rows with
//! their input halo, matmul by columns, elementwise ops and norms along any other axis).
//! Copies split their iteration space into boxes; a gather reads a large table in windows
//! of rows. The results are the same bits as unsplit ones. What cannot split (reductions,
//! an operand that must be bound whole and is too large) is refused with
//! [`RuntimeError::OutOfMemory`] saying why; [`plan_bindings`] checks a graph without a
//! device (Wan2.1-1.3B at 832×480×81 fits 128 MiB bindings). Grids: elementwise launches
//! fold into 2-D, a conv's column tiles into z; a grid still past 65535 workgroups per
//! dimension is refused.
//!
//! Faults: a buffer past the adapter's binding or buffer size limit, or one the device has no
//! memory for, is [`RuntimeError::OutOfMemory`] naming the node; validation failures are
//! caught with error scopes; a lost device (driver reset, removed GPU, destroyed) is
//! [`RuntimeError::DeviceLost`] from then on, and a new [`WgpuBackend`] opens a fresh device.
//! `RunOptions::check_intermediates` runs the graph one node at a time, reading back each
//! node's output (slow; for debugging) and naming the first that holds NaN or infinity.

mod device;
mod lower;
mod plan;
mod split;
mod tuning;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vidrt_ir::{DType, Graph, Op, Tensor, TensorData};

use crate::backend::{Backend, Executable, RunOptions, Support, WeightSource};
use crate::RuntimeError;

pub use crate::tune::{Problem, Tuning};
use device::Ctx;
pub use device::ADAPTER_ENV;
use lower::{Buf, BACKEND};
pub use plan::plan_bindings;
use plan::{Launch, Planner};

use crate::tune::{default_db_path, DeviceInfo, Tunable, TuneDb};
use vidrt_kernels::wgsl::Elem;
pub use vidrt_kernels::wgsl::Features;

/// The wgpu backend.
#[derive(Clone)]
pub struct WgpuBackend {
    ctx: Arc<Ctx>,
    tuning: Arc<Tuning>,
    /// The optional kernel features compiled graphs use (at most the device's).
    features: Features,
    /// The largest storage binding compiled graphs use, in bytes (at most the adapter's).
    binding_limit: u64,
    /// Nodes compiled in chunks (past one binding) by this backend and its clones.
    split_nodes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend").field("adapter", &self.ctx.info.name).finish()
    }
}

impl WgpuBackend {
    /// Opens the default (or `VIDRT_WGPU_ADAPTER`-selected) adapter with this device's
    /// tuning database from the user's cache directory (see [`crate::tune`]). An error,
    /// never a panic, when no adapter exists; a broken database is only a warning
    /// ([`WgpuBackend::tuning_warnings`]).
    pub fn new() -> Result<Self, RuntimeError> {
        let b = Self::without_tuning()?;
        let dev = b.device_info();
        let db = default_db_path(&dev).map(|p| TuneDb::open(&p, dev.clone()));
        Ok(b.with_db(db))
    }

    /// Opens the adapter with no tuning database (the heuristics only; `--no-tune-cache`).
    pub fn without_tuning() -> Result<Self, RuntimeError> {
        let ctx = Arc::new(Ctx::open()?);
        let dev = device_info(&ctx);
        let features = ctx.features;
        let binding_limit = ctx.binding_limit();
        Ok(WgpuBackend {
            ctx,
            tuning: Arc::new(Tuning::new(dev, None)),
            features,
            binding_limit,
            split_nodes: Arc::default(),
        })
    }

    /// The same adapter with `db` as its tuning database.
    pub fn with_db(&self, db: Option<TuneDb>) -> Self {
        WgpuBackend {
            ctx: self.ctx.clone(),
            tuning: Arc::new(Tuning::new(self.device_info(), db)),
            features: self.features,
            binding_limit: self.binding_limit,
            split_nodes: self.split_nodes.clone(),
        }
    }

    /// The same adapter, with every node of kernel family `family` compiled at parameter
    /// point `params` (how the tuner times a candidate). An invalid point fails to compile.
    pub fn forcing(&self, family: &str, params: &str) -> Self {
        WgpuBackend {
            ctx: self.ctx.clone(),
            tuning: Arc::new(Tuning::forcing(self.device_info(), family, params)),
            features: self.features,
            binding_limit: self.binding_limit,
            split_nodes: self.split_nodes.clone(),
        }
    }

    /// The optional kernel features compiled graphs use: the device's, unless narrowed by
    /// [`WgpuBackend::with_kernel_features`].
    pub fn kernel_features(&self) -> Features {
        self.features
    }

    /// The same device, compiling with at most `f` of its optional features (e.g.
    /// [`Features::NONE`]: the plain-WGSL kernels everywhere; to compare or work around a
    /// driver). A feature the device lacks stays off.
    pub fn with_kernel_features(&self, f: Features) -> Self {
        let have = self.ctx.features;
        WgpuBackend { features: f.and(have), ..self.clone() }
    }

    /// The largest storage binding compiled graphs use, in bytes: the adapter's
    /// `max_storage_buffer_binding_size` (within `max_buffer_size`), unless narrowed by
    /// [`WgpuBackend::with_binding_limit`]. A node whose tensors are larger is computed in
    /// chunks that each bind windows of them (see the module docs).
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// The same device, compiling as if its storage binding limit were at most `bytes`: to
    /// exercise splitting with small tensors, or to keep every binding small. Buffers may
    /// still be as large as the adapter allows.
    pub fn with_binding_limit(&self, bytes: u64) -> Self {
        WgpuBackend { binding_limit: bytes.min(self.ctx.binding_limit()), ..self.clone() }
    }

    /// How many nodes this backend (and the backends made from it) compiled in chunks or
    /// boxes because their tensors exceed one binding.
    pub fn split_nodes(&self) -> usize {
        self.split_nodes.load(Ordering::Relaxed)
    }

    /// The adapter's name and backend, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)`.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.ctx.info.name, self.ctx.info.backend)
    }

    /// What the tuning key records of this device.
    pub fn device_info(&self) -> DeviceInfo {
        self.tuning.device.clone()
    }

    /// The tuning database in use, if any.
    pub fn tune_db(&self) -> Option<&TuneDb> {
        self.tuning.db.as_ref()
    }

    /// (nodes compiled with a tuning-database winner, winners ignored as invalid on this
    /// adapter) since this backend was made.
    pub fn tuning_hits(&self) -> (usize, usize) {
        self.tuning.hits()
    }

    /// Warnings from opening the tuning database (corrupt, foreign, unreadable).
    pub fn tuning_warnings(&self) -> Vec<String> {
        self.tuning.db.as_ref().map(|d| d.warnings.clone()).unwrap_or_default()
    }

    /// Whether executables report the kernels' device time ([`Executable::last_kernel_time`]):
    /// the adapter has timestamp queries.
    pub fn has_kernel_timing(&self) -> bool {
        self.ctx.timestamp_period.is_some()
    }

    /// Destroys this backend's device, as a driver reset would: from then on every compile
    /// and run on it (and on its clones and executables) fails with
    /// [`RuntimeError::DeviceLost`]. For tests of device loss; open a new backend to continue.
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.ctx.destroy();
    }

    /// The distinct tunable problems of `graph` (matmul, conv3d and attention nodes, fused
    /// or not), in graph order.
    pub fn problems(&self, graph: &Graph) -> Vec<Problem> {
        let limit = u64::from(self.ctx.limits.max_compute_workgroup_storage_size);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for i in 0..graph.len() {
            if let Some((key, candidates)) = lower::problem(graph, i, limit, &self.tuning, self.features) {
                if seen.insert(key.id()) {
                    out.push(Problem { key, candidates, node: i, heuristic: None });
                }
            }
        }
        out
    }
}

impl Tunable for WgpuBackend {
    fn device_info(&self) -> DeviceInfo {
        WgpuBackend::device_info(self)
    }

    fn tune_db(&self) -> Option<&TuneDb> {
        WgpuBackend::tune_db(self)
    }

    fn describe(&self) -> String {
        self.adapter_name()
    }

    fn problems(&self, graph: &Graph) -> Vec<Problem> {
        WgpuBackend::problems(self, graph)
    }

    fn forcing(&self, family: &str, params: &str) -> Box<dyn crate::Backend> {
        Box::new(WgpuBackend::forcing(self, family, params))
    }
}

fn device_info(ctx: &Ctx) -> DeviceInfo {
    let i = &ctx.info;
    DeviceInfo {
        backend: BACKEND.into(),
        name: i.name.clone(),
        arch: format!("{:?} {:?} {:04x}:{:04x}", i.backend, i.device_type, i.vendor, i.device),
        driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        let float_only = || {
            if dtype.is_float() {
                Support::Yes
            } else {
                Support::No(format!("{} computes in floating point", op.name()))
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
            | Op::RmsNormEpilogue { .. } => float_only(),
        }
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        vidrt_ir::verify(graph)?;
        self.ctx.check_lost()?;
        // The compiler's passes (fold, CSE, DCE, fusion) first: fused nodes lower to one kernel.
        let (optimized, _) = crate::cpu::optimize(graph, &vidrt_ir::passes::PassOptions::default())?;
        let graph = &optimized;
        for (i, n) in graph.nodes.iter().enumerate() {
            if let Support::No(reason) = self.support(&n.op, n.dtype) {
                return Err(RuntimeError::Unsupported {
                    backend: BACKEND,
                    op: n.op.name(),
                    dtype: n.dtype,
                    node: i,
                    name: n.name.clone(),
                    reason,
                });
            }
        }
        let planner = Planner::new(self.ctx.clone(), self.tuning.clone(), self.features, self.binding_limit, graph);
        let (exe, split) = planner.build(weights)?;
        self.split_nodes.fetch_add(split, Ordering::Relaxed);
        Ok(exe)
    }
}

/// A host tensor as device words for a node of `dtype` stored as `st`.
fn to_words(t: &Tensor, dtype: DType, st: Elem, name: &str) -> Result<Vec<u32>, RuntimeError> {
    if st == Elem::F16 {
        // Two halves per word, element 2i in the low half (little-endian, as WGSL reads it).
        let pack = |v: &[half::f16]| -> Vec<u32> {
            v.chunks(2)
                .map(|p| u32::from(p[0].to_bits()) | (u32::from(p.get(1).map_or(0, |h| h.to_bits())) << 16))
                .collect()
        };
        return match t.data() {
            TensorData::F16(v) => Ok(pack(v)),
            _ => match t.cast(DType::F16).data() {
                TensorData::F16(v) => Ok(pack(v)),
                _ => Err(RuntimeError::Device("wgpu: internal: an f16 cast gave another dtype".into())),
            },
        };
    }
    if dtype.is_int() {
        t.to_i64_vec()
            .into_iter()
            .map(|v| {
                i32::try_from(v).map(|x| x as u32).map_err(|_| RuntimeError::BadInput {
                    name: name.to_string(),
                    reason: format!("integer {v} does not fit the wgpu backend's 32-bit integers"),
                })
            })
            .collect()
    } else if dtype == DType::F32 {
        Ok(match t.as_f32() {
            Some(v) => v.iter().map(|x| x.to_bits()).collect(),
            None => t.to_f32_vec().iter().map(|x| x.to_bits()).collect(),
        })
    } else {
        // Rounded to the node's dtype on the host, kept in f32 words.
        Ok(t.cast(dtype).to_f32_vec().iter().map(|x| x.to_bits()).collect())
    }
}

/// Device words (stored as `st`) back to a host tensor of `dtype`.
fn from_words(w: Vec<u32>, shape: &vidrt_ir::Shape, dtype: DType, st: Elem) -> Result<Tensor, RuntimeError> {
    if st == Elem::F16 {
        let n = shape.numel();
        let halves: Vec<half::f16> = w
            .iter()
            .flat_map(|x| [(*x & 0xffff) as u16, (*x >> 16) as u16])
            .take(n)
            .map(half::f16::from_bits)
            .collect();
        if halves.len() != n {
            return Err(RuntimeError::Device(format!("wgpu: internal: read {} of {n} halves", halves.len())));
        }
        let t = Tensor::new(shape.clone(), TensorData::F16(halves))
            .map_err(|e| RuntimeError::Device(format!("wgpu: internal: {e}")))?;
        // An f16 node: the tensor is already of its dtype.
        return Ok(if dtype == DType::F16 { t } else { t.cast(dtype) });
    }
    let data = match dtype {
        DType::I32 => TensorData::I32(w.into_iter().map(|x| x as i32).collect()),
        DType::I64 => TensorData::I64(w.into_iter().map(|x| i64::from(x as i32)).collect()),
        _ => TensorData::F32(w.into_iter().map(f32::from_bits).collect()),
    };
    let t = Tensor::new(shape.clone(), data).map_err(|e| RuntimeError::Device(format!("wgpu: internal: {e}")))?;
    Ok(if dtype.is_float() && dtype != DType::F32 { t.cast(dtype) } else { t })
}

/// A graph compiled for a wgpu device.
pub struct WgpuExecutable {
    ctx: Arc<Ctx>,
    /// The kernel features it was compiled with (they decide each node's storage).
    features: Features,
    graph: Graph,
    /// By [`Buf`] (a window's entry is its buffer).
    bufs: Vec<wgpu::Buffer>,
    /// The bytes of the buffers (windows not counted again).
    device_bytes: u64,
    /// (input name, node, buffer)
    inputs: Vec<(String, usize, Buf)>,
    /// (output name, node, buffer)
    outputs: Vec<(String, usize, Buf)>,
    launches: Vec<Launch>,
    /// (node, its output buffer) of every node computed by launches, in launch order.
    computed: Vec<(usize, Buf)>,
    /// Timestamps at the start and end of the whole-graph pass, and the buffer they resolve
    /// into, when the device has timestamp queries.
    timer: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    last_kernel: Option<std::time::Duration>,
}

impl WgpuExecutable {
    /// Encodes the launches of `node` into `enc`'s compute pass (all of them with `None`,
    /// between the two timestamps where the device has them).
    fn encode(&self, enc: &mut wgpu::CommandEncoder, node: Option<usize>) {
        let timer = self.timer.as_ref().filter(|_| node.is_none());
        let timestamp_writes = timer.map(|(q, _)| wgpu::ComputePassTimestampWrites {
            query_set: q,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("graph"), timestamp_writes });
        for l in self.launches.iter().filter(|l| node.is_none_or(|n| l.node == n)) {
            pass.set_pipeline(&l.pipeline.pipeline);
            pass.set_bind_group(0, &l.group, &[]);
            pass.dispatch_workgroups(l.grid[0], l.grid[1], l.grid[2]);
        }
        drop(pass);
        if let Some((q, b)) = timer {
            enc.resolve_query_set(q, 0..2, b, 0);
        }
    }

    /// Runs the graph one node at a time, reading back each computed node's output, and fails
    /// naming the first node whose output holds NaN or infinity (or on cancellation).
    fn run_checking_each_node(&self, opts: &RunOptions) -> Result<(), RuntimeError> {
        let g = &self.graph;
        for &(node, buf) in &self.computed {
            if let Some(c) = &opts.cancel {
                if c.load(Ordering::Relaxed) {
                    return Err(RuntimeError::Cancelled);
                }
            }
            let n = &g.nodes[node];
            let mut enc =
                self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("node") });
            self.encode(&mut enc, Some(node));
            let st = lower::storage(n.dtype, self.features);
            let words = self.ctx.read(enc, &[(&self.bufs[buf], st.words(n.shape.numel()) as u64)])?;
            for w in words {
                if let Some(index) = from_words(w, &n.shape, n.dtype, st)?.first_non_finite() {
                    return Err(RuntimeError::NonFinite { node, name: n.name.clone(), op: n.op.name(), index });
                }
            }
        }
        Ok(())
    }
}

impl Executable for WgpuExecutable {
    fn last_kernel_time(&self) -> Option<std::time::Duration> {
        self.last_kernel
    }

    fn device_bytes(&self) -> Option<u64> {
        Some(self.device_bytes)
    }

    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.ctx.check_lost()?;
        let g = &self.graph;
        let mut fed = vec![false; self.inputs.len()];
        for (name, t) in inputs {
            let k = self.inputs.iter().position(|(n, _, _)| n == name).ok_or_else(|| RuntimeError::BadInput {
                name: name.to_string(),
                reason: "the graph has no such input".into(),
            })?;
            if fed[k] {
                return Err(RuntimeError::BadInput { name: name.to_string(), reason: "fed twice".into() });
            }
            let (_, node, buf) = &self.inputs[k];
            let n = &g.nodes[*node];
            if t.shape() != &n.shape || t.dtype().is_float() != n.dtype.is_float() {
                return Err(RuntimeError::ShapeMismatch {
                    name: name.to_string(),
                    expected: n.shape.clone(),
                    expected_dtype: n.dtype,
                    got: t.shape().clone(),
                    got_dtype: t.dtype(),
                });
            }
            let words = to_words(t, n.dtype, lower::storage(n.dtype, self.features), name)?;
            if !words.is_empty() {
                self.ctx.queue.write_buffer(&self.bufs[*buf], 0, bytemuck::cast_slice(&words));
            }
            fed[k] = true;
        }
        if let Some(k) = fed.iter().position(|f| !f) {
            return Err(RuntimeError::BadInput { name: self.inputs[k].0.clone(), reason: "not fed".into() });
        }
        if let Some(c) = &opts.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(RuntimeError::Cancelled);
            }
        }
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        if opts.check_intermediates {
            // Every node already ran (and was checked); `enc` only reads the outputs back.
            self.run_checking_each_node(opts)?;
        } else {
            self.encode(&mut enc, None);
        }
        let words_of = |node: usize| {
            let n = &g.nodes[node];
            lower::storage(n.dtype, self.features).words(n.shape.numel()) as u64
        };
        let mut reads: Vec<(&wgpu::Buffer, u64)> =
            self.outputs.iter().map(|(_, node, b)| (&self.bufs[*b], words_of(*node))).collect();
        let timed = !opts.check_intermediates && self.timer.is_some();
        if let (true, Some((_, b))) = (timed, &self.timer) {
            reads.push((b, 4));
        }
        let mut words = self.ctx.read(enc, &reads)?;
        self.last_kernel = None;
        if timed {
            if let (Some(w), Some(period)) = (words.pop(), self.ctx.timestamp_period) {
                let ticks = |lo: usize| u64::from(w[lo]) | (u64::from(w[lo + 1]) << 32);
                if w.len() == 4 && ticks(2) >= ticks(0) {
                    let ns = (ticks(2) - ticks(0)) as f64 * f64::from(period);
                    self.last_kernel = Some(std::time::Duration::from_secs_f64(ns * 1e-9));
                }
            }
        }
        let mut out = Vec::with_capacity(words.len());
        for ((name, node, _), w) in self.outputs.iter().zip(words) {
            let n = &g.nodes[*node];
            let t = from_words(w, &n.shape, n.dtype, lower::storage(n.dtype, self.features))?;
            if (opts.check_outputs || opts.check_intermediates) && !n.op.is_leaf() {
                if let Some(index) = t.first_non_finite() {
                    return Err(RuntimeError::NonFinite { node: *node, name: n.name.clone(), op: n.op.name(), index });
                }
            }
            out.push((name.clone(), t));
        }
        Ok(out)
    }
}
