//! `SimBackend`: runs the CUDA backend's generated PTX kernels in the CPU simulator of
//! `vidrt_kernels::ptx::sim`, so the harness checks the CUDA kernels' numerics (and catches
//! out-of-bounds accesses and barrier divergence) on machines without a GPU. Slow: for
//! tests, not for models.
//!
//! Tunable like the CUDA backend (same lowering, same families; see [`crate::tune::ptx`]):
//! [`SimBackend::new`] reads the simulator's tuning database, [`SimBackend::forcing`] and
//! [`SimBackend::problems`] serve `vidrt tune --backend ptx-sim`. Its timings are the CPU
//! wall time of the simulator: they test the tuning plumbing, and say nothing of GPU speed.

use std::sync::Arc;

use vidrt_ir::{DType, Graph, Node, Op, Tensor, TensorData};
use vidrt_kernels::ptx::lower::{lower_with, scratch_bytes, unsupported_reason, Arg, Lowered};
use vidrt_kernels::ptx::sim::{self, DeviceLimits, GlobalMem, LaunchDims};
use vidrt_kernels::ptx::tune::Chooser;
use vidrt_kernels::ptx::{KernelError, Target};

use crate::backend::{Backend, Executable, RunOptions, Support, WeightSource};
use crate::tune::ptx::sim_device_info;
use crate::tune::{default_db_path, DeviceInfo, Problem, Tunable, TuneDb, Tuning};
use crate::RuntimeError;

/// What a simulator tuning run measures.
pub const SIM_TIMING_NOTE: &str = "ptx-sim times are the CPU wall time of the PTX simulator: they exercise the \
     tuning plumbing and say nothing about GPU speed";

/// The PTX simulator backend (name `ptx-sim`).
#[derive(Clone, Debug)]
pub struct SimBackend {
    /// Simulated device memory, in bytes (`None`: unlimited); see [`SimBackend::with_memory_limit`].
    memory_limit: Option<u64>,
    tuning: Arc<Tuning>,
}

impl Default for SimBackend {
    fn default() -> Self {
        SimBackend::without_tuning()
    }
}

impl SimBackend {
    /// The simulator with its tuning database from the user's cache directory (see
    /// [`crate::tune`]); a broken database is only a warning ([`SimBackend::tuning_warnings`]).
    pub fn new() -> Self {
        let b = SimBackend::without_tuning();
        let dev = b.device_info();
        let db = default_db_path(&dev).map(|p| TuneDb::open(&p, dev));
        b.with_db(db)
    }

    /// The simulator with no tuning database (the heuristics only; `--no-tune-cache`).
    pub fn without_tuning() -> Self {
        SimBackend { memory_limit: None, tuning: Arc::new(Tuning::new(sim_device_info(), None)) }
    }

    /// The simulator lowering as the CUDA backend does on Hopper (PTX target sm_90a, so the
    /// 16-bit matmuls take the TMA-fed `matmul_wgmma_tma` kernel, its tensor maps in the
    /// simulator's encoding), no tuning database. Its tuning key's device says
    /// `sm_90a (simulated)`.
    pub fn hopper() -> Self {
        let mut dev = sim_device_info();
        dev.arch = "sm_90a (simulated)".into();
        let t = Tuning::new(dev, None).with_ptx_target(Target::Sm90a).with_wgmma(true);
        SimBackend { memory_limit: None, tuning: Arc::new(t) }
    }

    /// The same backend with `db` as its tuning database.
    pub fn with_db(&self, db: Option<TuneDb>) -> Self {
        SimBackend {
            memory_limit: self.memory_limit,
            tuning: Arc::new(self.retuned(Tuning::new(self.device_info(), db))),
        }
    }

    /// `t` with this backend's PTX target.
    fn retuned(&self, t: Tuning) -> Tuning {
        let t = t.with_wgmma(self.tuning.wgmma);
        match self.tuning.ptx_target {
            Some(target) => t.with_ptx_target(target),
            None => t,
        }
    }

    /// The same backend, with every node of kernel family `family` (e.g. `matmul_simt_f32`)
    /// compiled at parameter point `params` (how the tuner times a candidate). An invalid
    /// point fails to compile.
    pub fn forcing(&self, family: &str, params: &str) -> Self {
        SimBackend {
            memory_limit: self.memory_limit,
            tuning: Arc::new(self.retuned(Tuning::forcing(self.device_info(), family, params))),
        }
    }

    /// What the tuning key records of the simulator.
    pub fn device_info(&self) -> DeviceInfo {
        self.tuning.device.clone()
    }

    /// The tuning database in use, if any.
    pub fn tune_db(&self) -> Option<&TuneDb> {
        self.tuning.db.as_ref()
    }

    /// (nodes compiled with a tuning-database winner, winners ignored as invalid here) since
    /// this backend was made.
    pub fn tuning_hits(&self) -> (usize, usize) {
        self.tuning.hits()
    }

    /// Warnings from opening the tuning database (corrupt, foreign, unreadable).
    pub fn tuning_warnings(&self) -> Vec<String> {
        self.tuning.warnings()
    }

    /// The distinct tunable problems of `graph`, in graph order.
    pub fn problems(&self, graph: &Graph) -> Vec<Problem> {
        crate::tune::ptx::problems(graph, &self.tuning)
    }
}

impl Tunable for SimBackend {
    fn device_info(&self) -> DeviceInfo {
        SimBackend::device_info(self)
    }

    fn tune_db(&self) -> Option<&TuneDb> {
        SimBackend::tune_db(self)
    }

    fn describe(&self) -> String {
        "the PTX simulator (CPU)".into()
    }

    fn problems(&self, graph: &Graph) -> Vec<Problem> {
        SimBackend::problems(self, graph)
    }

    fn forcing(&self, family: &str, params: &str) -> Box<dyn Backend> {
        Box::new(SimBackend::forcing(self, family, params))
    }

    fn timing_note(&self) -> Option<&'static str> {
        Some(SIM_TIMING_NOTE)
    }
}

/// Little-endian bytes of a tensor's elements.
pub(crate) fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// A tensor of `node`'s shape and dtype from little-endian bytes.
pub(crate) fn tensor_from_bytes(node: &Node, b: &[u8]) -> Result<Tensor, RuntimeError> {
    let n = node.shape.numel();
    let size = node.dtype.size_bytes();
    if b.len() < n * size {
        return Err(RuntimeError::Device(format!("output `{}`: {} bytes for {n} elements", node.name, b.len())));
    }
    let chunks = b[..n * size].chunks_exact(size);
    let data = match node.dtype {
        DType::F32 => TensorData::F32(chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::F16 => TensorData::F16(chunks.map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()),
        DType::BF16 => {
            TensorData::BF16(chunks.map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DType::I32 => TensorData::I32(chunks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I64 => TensorData::I64(
            chunks.map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
    };
    Tensor::new(node.shape.clone(), data).map_err(|e| RuntimeError::Device(format!("internal: {e}")))
}

/// Lowers every node of a verified graph (tunable nodes at `chooser`'s points), naming the
/// first unsupported one.
pub(crate) fn lower_graph(
    graph: &Graph,
    backend: &'static str,
    chooser: &dyn Chooser,
) -> Result<Vec<Lowered>, RuntimeError> {
    let mut plans = Vec::with_capacity(graph.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let ins: Vec<(&[usize], DType)> =
            node.inputs.iter().map(|id| (graph.shape(*id).dims(), graph.dtype(*id))).collect();
        let unsupported = |reason: String| RuntimeError::Unsupported {
            backend,
            op: node.op.name(),
            dtype: node.dtype,
            node: i,
            name: node.name.clone(),
            reason,
        };
        match lower_with(&node.op, &ins, node.shape.dims(), node.dtype, &format!("n{i}"), chooser) {
            Ok(p) => plans.push(p),
            Err(KernelError::Unsupported(r)) => return Err(unsupported(r)),
            Err(e @ KernelError::Invalid(_)) => return Err(unsupported(e.to_string())),
        }
    }
    Ok(plans)
}

/// Fetches and checks a graph's weights (cast to the declared dtype).
pub(crate) fn bind_weights(graph: &Graph, weights: &dyn WeightSource) -> Result<Vec<Option<Tensor>>, RuntimeError> {
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
    Ok(bound)
}

/// Matches fed inputs to the graph's input nodes, cast to their declared dtypes.
pub(crate) fn feed_inputs(graph: &Graph, inputs: &[(&str, Tensor)]) -> Result<Vec<Option<Tensor>>, RuntimeError> {
    let mut fed: Vec<Option<Tensor>> = vec![None; graph.len()];
    for (name, t) in inputs {
        let id = graph.inputs().into_iter().find(|(n, _)| n == name).map(|(_, id)| id).ok_or_else(|| {
            RuntimeError::BadInput { name: name.to_string(), reason: "the graph has no such input".into() }
        })?;
        if fed[id.index()].is_some() {
            return Err(RuntimeError::BadInput { name: name.to_string(), reason: "fed twice".into() });
        }
        let n = graph.node(id);
        if t.shape() != &n.shape || t.dtype().is_float() != n.dtype.is_float() {
            return Err(RuntimeError::ShapeMismatch {
                name: name.to_string(),
                expected: n.shape.clone(),
                expected_dtype: n.dtype,
                got: t.shape().clone(),
                got_dtype: t.dtype(),
            });
        }
        fed[id.index()] = Some(t.cast(n.dtype));
    }
    Ok(fed)
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "ptx-sim"
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        match unsupported_reason(op, dtype) {
            None => Support::Yes,
            Some(r) => Support::No(r),
        }
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        vidrt_ir::verify(graph)?;
        // The compiler's passes (fold, CSE, DCE, fusion) first: fused nodes lower to one kernel.
        let (optimized, _) = crate::cpu::optimize(graph, &vidrt_ir::passes::PassOptions::default())?;
        let graph = &optimized;
        let plans = lower_graph(graph, "ptx-sim", &*self.tuning)?;
        let weights = bind_weights(graph, weights)?;
        // The simulated device's per-block limit is the one the kernels were chosen for.
        let limits = DeviceLimits { max_shared: Chooser::max_shared(&*self.tuning) };
        Ok(Box::new(SimExecutable { graph: graph.clone(), plans, weights, memory_limit: self.memory_limit, limits }))
    }
}

/// A graph lowered to PTX kernels, run in the simulator.
pub struct SimExecutable {
    graph: Graph,
    plans: Vec<Lowered>,
    weights: Vec<Option<Tensor>>,
    memory_limit: Option<u64>,
    limits: DeviceLimits,
}

impl Executable for SimExecutable {
    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let g = &self.graph;
        let mut fed = feed_inputs(g, inputs)?;
        let mut mem = GlobalMem::new();
        let mut addr: Vec<u64> = vec![0; g.len()];
        let mut device = DeviceMemory { limit: self.memory_limit, used: 0 };
        for (i, (node, plan)) in g.nodes.iter().zip(&self.plans).enumerate() {
            if let Some(c) = &opts.cancel {
                if c.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(RuntimeError::Cancelled);
                }
            }
            if !matches!(plan, Lowered::Alias) {
                device.reserve(i, node)?;
            }
            let input_addr = |k: usize| -> Result<u64, RuntimeError> {
                node.inputs
                    .get(k)
                    .map(|id| addr[id.index()])
                    .ok_or_else(|| RuntimeError::Device(format!("node %{i}: no input {k}")))
            };
            addr[i] = match plan {
                Lowered::Leaf => {
                    let t = match &node.op {
                        Op::Input { name } => fed[i]
                            .take()
                            .ok_or_else(|| RuntimeError::BadInput { name: name.clone(), reason: "not fed".into() })?,
                        Op::Weight { name } => self.weights[i]
                            .clone()
                            .ok_or_else(|| RuntimeError::Weight { name: name.clone(), reason: "not bound".into() })?,
                        other => {
                            return Err(RuntimeError::Device(format!("internal: {} lowered as a leaf", other.name())))
                        }
                    };
                    mem.alloc_with(tensor_bytes(&t))
                }
                Lowered::Alias => input_addr(0)?,
                Lowered::Launches(launches) => {
                    let out = mem.alloc(node.shape.numel() * node.dtype.size_bytes());
                    let mut scratch = Vec::new();
                    for bytes in scratch_bytes(launches) {
                        device.take(bytes as u64, || {
                            format!("scratch of node %{i} `{}` ({})", node.name, node.op.name())
                        })?;
                        scratch.push(mem.alloc(bytes.max(1)));
                    }
                    for l in launches {
                        // A buffer goes as a pointer, or as the kernel's tensor map of it
                        // (vidrt's simulator encoding) where the parameter is one.
                        let as_arg = |j: usize, addr: u64| {
                            sim::buffer_arg(&l.kernel, j, addr).ok_or_else(|| {
                                RuntimeError::Device(format!(
                                    "internal: `{}` parameter {j} takes no buffer (or lacks its tensor map)",
                                    l.kernel.name
                                ))
                            })
                        };
                        let args = l
                            .args
                            .iter()
                            .enumerate()
                            .map(|(j, a)| match a {
                                Arg::Input(k) => input_addr(*k).and_then(|p| as_arg(j, p)),
                                Arg::Output => as_arg(j, out),
                                Arg::Scratch { slot, .. } => scratch
                                    .get(*slot)
                                    .ok_or_else(|| {
                                        RuntimeError::Device(format!("internal: node %{i}: no scratch {slot}"))
                                    })
                                    .and_then(|p| as_arg(j, *p)),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        // With the kernel's dynamic shared memory, as the CUDA launch passes it.
                        let dims = LaunchDims { grid: l.grid, block: l.block };
                        sim::launch_with(&l.kernel, dims, &args, &mut mem, self.limits).map_err(|e| {
                            RuntimeError::Device(format!("node %{i} `{}` ({}): {e}", node.name, node.op.name()))
                        })?;
                    }
                    if opts.check_intermediates {
                        let bytes = mem
                            .read(out, node.shape.numel() * node.dtype.size_bytes())
                            .ok_or_else(|| RuntimeError::Device(format!("node %{i}: output not readable")))?;
                        check_finite(i, node, bytes)?;
                    }
                    out
                }
            };
        }
        let mut outs = Vec::with_capacity(g.outputs.len());
        for (name, id) in &g.outputs {
            let node = g.node(*id);
            let bytes = mem
                .read(addr[id.index()], node.shape.numel() * node.dtype.size_bytes())
                .ok_or_else(|| RuntimeError::Device(format!("output `{name}` has no buffer")))?;
            let t = tensor_from_bytes(node, bytes)?;
            if opts.check_outputs && !node.op.is_leaf() {
                non_finite(id.index(), node, &t)?;
            }
            outs.push((name.clone(), t));
        }
        Ok(outs)
    }
}

/// [`RuntimeError::NonFinite`] naming node `i` when `t` (its output) holds NaN or infinity.
pub(crate) fn non_finite(i: usize, node: &Node, t: &Tensor) -> Result<(), RuntimeError> {
    match t.first_non_finite() {
        Some(index) => Err(RuntimeError::NonFinite { node: i, name: node.name.clone(), op: node.op.name(), index }),
        None => Ok(()),
    }
}

/// [`non_finite`] of node `i`'s output given as device bytes.
pub(crate) fn check_finite(i: usize, node: &Node, bytes: &[u8]) -> Result<(), RuntimeError> {
    non_finite(i, node, &tensor_from_bytes(node, bytes)?)
}

// --- Simulated device memory (issue 9: device faults) ---

impl SimBackend {
    /// The same backend with `bytes` of simulated device memory: a run whose buffers (one per
    /// node, held for the whole run, as the simulator allocates them) would exceed it fails
    /// with [`RuntimeError::OutOfMemory`] naming the node, as a driver's out-of-memory does on
    /// a GPU. The backend stays usable afterwards.
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
}

/// The device memory one simulated run has taken.
struct DeviceMemory {
    limit: Option<u64>,
    used: u64,
}

impl DeviceMemory {
    /// Takes the buffer of node `i`, or fails as the device would.
    fn reserve(&mut self, i: usize, node: &Node) -> Result<(), RuntimeError> {
        let bytes = (node.shape.numel() as u64).saturating_mul(node.dtype.size_bytes() as u64);
        self.take(bytes, || format!("device buffer of node %{i} `{}` ({})", node.name, node.op.name()))
    }

    /// Takes `bytes` more (`what` names them), or fails as the device would.
    fn take(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
        let Some(limit) = self.limit else { return Ok(()) };
        let available = limit.saturating_sub(self.used);
        if bytes > available {
            return Err(RuntimeError::OutOfMemory { what: format!("ptx-sim: {}", what()), needed: bytes, available });
        }
        self.used += bytes;
        Ok(())
    }
}
