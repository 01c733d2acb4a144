//! Compiler passes. [`pipeline`] lists the named passes in the order they run; each pass is a
//! function from a graph to a new graph with the same named inputs and outputs and the same
//! computed values (up to the rounding a fused chain skips between its steps).
//!
//! 1. `verify`: rejects malformed graphs ([`crate::verify`]).
//! 2. `fold`: constant folding and algebraic identities ([`fold::fold`]).
//! 3. `cse`: common-subexpression elimination ([`cse::cse`]).
//! 4. `dce`: dead-code elimination ([`dce::dce`]); graph inputs always stay.
//! 5. `fuse`: fusion ([`fuse::fuse`]): layer norm + modulate, RMS norm + rope, elementwise
//!    chains, epilogues into matmul, conv3d and RMS norm.
//! 6. `dce` again, then `verify` again.
//! 7. `plan`: liveness-based memory plan ([`plan::plan_memory`]): offsets into one arena, in
//!    place where legal, the peak known before anything is allocated; over a configured
//!    limit the pipeline fails up front.

pub mod cse;
pub mod dce;
pub mod fold;
pub mod fuse;
pub mod plan;
pub mod precision;

use crate::error::IrError;
use crate::{DType, Graph, Node, NodeId, Op};

pub use plan::{plan_memory, MemoryPlan};
pub use precision::{reduce_precision, reduce_precision_with};

/// An error from the pass pipeline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// The graph is malformed, or a pass produced a malformed graph (a bug, named).
    #[error("{pass}: {source}")]
    Ir {
        pass: &'static str,
        #[source]
        source: IrError,
    },
    /// The memory plan needs more than the configured limit.
    #[error(
        "the graph needs {needed} bytes ({:.2} GiB) of activation memory, over the limit of {limit} bytes \
         ({:.2} GiB); largest live set at node %{at} `{name}`",
        *needed as f64 / GIB,
        *limit as f64 / GIB
    )]
    OutOfMemory { needed: u64, limit: u64, at: usize, name: String },
}

const GIB: f64 = (1u64 << 30) as f64;

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct PassOptions {
    /// Run the fusion pass (off: only verify, fold, cse, dce, plan).
    pub fuse: bool,
    /// Fail when the planned activation arena exceeds this many bytes.
    pub memory_limit: Option<u64>,
    /// Plan float tensors as if stored in this dtype (e.g. bf16 on CUDA); `None` keeps the
    /// graph's dtypes.
    pub storage: Option<DType>,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { fuse: true, memory_limit: None, storage: None }
    }
}

/// One pass's effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassStat {
    pub name: &'static str,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// What the pipeline did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassReport {
    /// Every pass run, in order.
    pub passes: Vec<PassStat>,
    /// The memory plan of the final graph.
    pub plan: MemoryPlan,
}

/// Runs the default pipeline: every pass, fusion on, no memory limit.
pub fn pipeline(graph: &Graph) -> Result<(Graph, PassReport), PassError> {
    pipeline_with(graph, &PassOptions::default())
}

/// Runs the pipeline with options.
pub fn pipeline_with(graph: &Graph, opts: &PassOptions) -> Result<(Graph, PassReport), PassError> {
    type PassFn = fn(&Graph) -> crate::Result<Graph>;
    let mut passes: Vec<(&'static str, PassFn)> = vec![
        ("verify", |g| crate::verify(g).map(|()| g.clone())),
        ("fold", fold::fold),
        ("cse", cse::cse),
        ("dce", dce::dce),
    ];
    if opts.fuse {
        passes.push(("fuse", fuse::fuse));
        passes.push(("dce", dce::dce));
    }
    passes.push(("verify", |g| crate::verify(g).map(|()| g.clone())));
    let mut g = graph.clone();
    let mut stats = Vec::with_capacity(passes.len() + 1);
    for (name, pass) in passes {
        let before = g.len();
        g = pass(&g).map_err(|source| PassError::Ir { pass: name, source })?;
        stats.push(PassStat { name, nodes_before: before, nodes_after: g.len() });
    }
    let plan = plan_memory(&g, opts.storage);
    stats.push(PassStat { name: "plan", nodes_before: g.len(), nodes_after: g.len() });
    if let Some(limit) = opts.memory_limit {
        if plan.arena_bytes > limit {
            let at = plan.peak_at;
            let name = g.get(NodeId(at as u32)).map(|n| n.name.clone()).unwrap_or_default();
            return Err(PassError::OutOfMemory { needed: plan.arena_bytes, limit, at, name });
        }
    }
    Ok((g, PassReport { passes: stats, plan }))
}

/// Rebuilds a graph node by node with a map from old ids to new ones.
pub(crate) struct Rebuild {
    pub g: Graph,
    pub map: Vec<Option<NodeId>>,
}

impl Rebuild {
    pub fn new(old: &Graph) -> Self {
        Rebuild { g: Graph::new(), map: vec![None; old.len()] }
    }

    /// The new id of old node `id`.
    pub fn get(&self, id: NodeId) -> crate::Result<NodeId> {
        self.map.get(id.index()).copied().flatten().ok_or(IrError::DanglingInput {
            node: id.index(),
            op: "rebuild",
            name: String::new(),
            input: id.index(),
        })
    }

    /// Adds `op` on new-graph `inputs` with `like`'s name; checks that inference gives
    /// `like`'s shape and dtype (a pass must not change them).
    pub fn push(&mut self, like: &Node, op: Op, inputs: &[NodeId]) -> crate::Result<NodeId> {
        let declared = op.is_leaf().then(|| (like.shape.clone(), like.dtype));
        let id = self.g.add_declared(op, inputs, declared)?;
        let n = &mut self.g.nodes[id.index()];
        if n.shape != like.shape || n.dtype != like.dtype {
            return Err(IrError::Mismatch {
                node: id.index(),
                op: n.op.name(),
                name: like.name.clone(),
                stored: format!("{}{}", like.dtype, like.shape),
                inferred: format!("{}{}", n.dtype, n.shape),
            });
        }
        n.name = like.name.clone();
        Ok(id)
    }

    /// Copies old node `id` of `old` unchanged (inputs remapped) and records the mapping.
    pub fn copy(&mut self, old: &Graph, id: NodeId) -> crate::Result<NodeId> {
        let n = old.node(id);
        let inputs = n.inputs.iter().map(|&i| self.get(i)).collect::<crate::Result<Vec<_>>>()?;
        let new = self.push(n, n.op.clone(), &inputs)?;
        self.map[id.index()] = Some(new);
        Ok(new)
    }

    /// The rebuilt graph with `old`'s outputs remapped.
    pub fn finish(mut self, old: &Graph) -> crate::Result<Graph> {
        for (name, id) in &old.outputs {
            let new = self.get(*id)?;
            self.g.set_output(name.clone(), new)?;
        }
        Ok(self.g)
    }
}
