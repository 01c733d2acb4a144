//! The backend interface. A backend compiles a verified graph, with its weights bound, into
//! an [`Executable`]; it must say `Unsupported` for anything it cannot run and never fall
//! back to another backend silently.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vidrt_ir::{DType, Graph, Op, Shape, Tensor};

use crate::RuntimeError;

/// Where a backend gets weights when it compiles a graph.
pub trait WeightSource {
    /// The tensor called `name`, which the graph declares with `shape` and `dtype`. The source
    /// may return another float dtype; the backend converts. A missing or mis-shaped tensor
    /// is an error naming it.
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError>;
}

/// A source with no weights (for graphs that declare none).
pub struct NoWeights;

impl WeightSource for NoWeights {
    fn fetch(&self, name: &str, _: &Shape, _: DType) -> Result<Tensor, RuntimeError> {
        Err(RuntimeError::Weight { name: name.to_string(), reason: "no weights were given".into() })
    }
}

impl WeightSource for std::collections::HashMap<String, Tensor> {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError> {
        let t =
            self.get(name).ok_or_else(|| RuntimeError::Weight { name: name.to_string(), reason: "missing".into() })?;
        if t.shape() != shape || (t.dtype().is_float() != dtype.is_float()) {
            return Err(RuntimeError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.clone(),
                expected_dtype: dtype,
                got: t.shape().clone(),
                got_dtype: t.dtype(),
            });
        }
        Ok(t.clone())
    }
}

/// Whether a backend runs an op on a dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Yes,
    No(String),
}

/// Options for one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Check every output for NaN/inf and name the node that produced it.
    pub check_outputs: bool,
    /// Check every intermediate too (slow; for debugging).
    pub check_intermediates: bool,
    /// Set to true from another thread (e.g. a Ctrl-C handler) to stop the run between nodes.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A compiled graph, ready to run.
pub trait Executable: Send {
    /// Runs with the named inputs and returns the named outputs in graph order.
    fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.run_with(inputs, &RunOptions { check_outputs: true, ..RunOptions::default() })
    }

    fn run_with(&mut self, inputs: &[(&str, Tensor)], opts: &RunOptions)
        -> Result<Vec<(String, Tensor)>, RuntimeError>;

    /// The device time of the last run's kernels alone (no host transfers), where the backend
    /// measures it: CUDA events around the launches, wgpu timestamp queries around the compute
    /// pass. `None` where it cannot (the CPU, an adapter without timestamps).
    fn last_kernel_time(&self) -> Option<std::time::Duration> {
        None
    }

    /// Bytes of device memory the executable's tensors hold (weights, activations, scratch),
    /// where the backend counts them; `None` where it does not.
    fn device_bytes(&self) -> Option<u64> {
        None
    }
}

/// A device backend.
pub trait Backend {
    fn name(&self) -> &'static str;

    /// Whether this backend has a kernel for `op` producing `dtype`.
    fn support(&self, op: &Op, dtype: DType) -> Support;

    /// Verifies `graph`, binds its weights from `weights` and prepares it to run.
    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError>;
}

/// A backend whose executables check every intermediate for NaN/inf on every run, whatever
/// the caller's [`RunOptions`] say: the debug mode of `vidrt generate --check-intermediates`.
/// Slow (a GPU backend runs node by node to check); the error names the first node that
/// produced a non-finite value.
pub struct CheckEveryNode(pub Box<dyn Backend>);

impl Backend for CheckEveryNode {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        self.0.support(op, dtype)
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        Ok(Box::new(CheckedExecutable(self.0.compile(graph, weights)?)))
    }
}

/// A backend that refuses, before compiling, a graph whose planned device memory exceeds
/// `limit` bytes: the activation arena of the memory plan of the graph as given plus the
/// weights, which a GPU backend keeps resident. An estimate: the CUDA pool rounds run
/// buffers up to powers of two. The error is [`RuntimeError::OutOfMemory`]
/// naming the largest live set, and nothing has been allocated. `vidrt generate` wraps the GPU
/// backends in it with the device's free memory (or `--memory-limit`).
pub struct MemoryLimited {
    pub inner: Box<dyn Backend>,
    pub limit: u64,
}

impl Backend for MemoryLimited {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        self.inner.support(op, dtype)
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        // The plan of the graph as the inner backend receives it, before the fusion the GPU
        // backends run: fused nodes only drop intermediates, so this errs on the safe side.
        let plan = vidrt_ir::passes::plan_memory(graph, None);
        let needed = plan.arena_bytes.saturating_add(plan.weight_bytes);
        if needed > self.limit {
            let name = graph.nodes.get(plan.peak_at).map(|n| n.name.as_str()).unwrap_or_default();
            return Err(RuntimeError::OutOfMemory {
                what: format!(
                    "the planned activation arena ({} bytes, largest live set at node %{} `{name}`) plus {} bytes \
                     of weights",
                    plan.arena_bytes, plan.peak_at, plan.weight_bytes
                ),
                needed,
                available: self.limit,
            });
        }
        self.inner.compile(graph, weights)
    }
}

/// A backend that runs float tensors in `dtype` (bf16 or f16; f32 changes nothing): every
/// graph goes through [`vidrt_ir::passes::reduce_precision`] before the inner backend
/// compiles it, so on CUDA the tensor-core kernels run. Outputs stay f32.
pub struct ReducedPrecision {
    pub inner: Box<dyn Backend>,
    pub dtype: DType,
}

impl Backend for ReducedPrecision {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        self.inner.support(op, dtype)
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        if self.dtype == DType::F32 {
            return self.inner.compile(graph, weights);
        }
        let g = vidrt_ir::passes::reduce_precision(graph, self.dtype)?;
        self.inner.compile(&g, weights)
    }
}

struct CheckedExecutable(Box<dyn Executable>);

impl Executable for CheckedExecutable {
    fn last_kernel_time(&self) -> Option<std::time::Duration> {
        self.0.last_kernel_time()
    }

    fn device_bytes(&self) -> Option<u64> {
        self.0.device_bytes()
    }

    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let opts = RunOptions { check_outputs: true, check_intermediates: true, cancel: opts.cancel.clone() };
        self.0.run_with(inputs, &opts)
    }
}
