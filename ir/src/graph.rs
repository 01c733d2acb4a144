//! The graph: nodes in topological order (a node's inputs always come before it), named
//! graph inputs, weights and outputs, and the builder API that checks every node as it is
//! added.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{IrError, Result};
use crate::infer::infer;
use crate::op::{BinaryOp, Op, ReduceOp, RmsStyle, TrigPart, UnaryOp};
use crate::{DType, Shape};

/// Index of a node in its graph.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation applied to earlier nodes, with its inferred shape and dtype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    pub dtype: DType,
    /// A readable name (diffusers-style module path where it helps); may be empty.
    pub name: String,
}

impl Node {
    pub fn bytes(&self) -> usize {
        self.shape.numel().saturating_mul(self.dtype.size_bytes())
    }
}

/// A dataflow graph of ops.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Named outputs, in order.
    pub outputs: Vec<(String, NodeId)>,
    /// Prefix applied to names given through [`Graph::named`] (a module scope).
    #[serde(skip)]
    scope: Vec<String>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.nodes[id.index()].shape
    }

    pub fn dtype(&self, id: NodeId) -> DType {
        self.nodes[id.index()].dtype
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Graph inputs, in node order: (name, id).
    pub fn inputs(&self) -> Vec<(&str, NodeId)> {
        self.leaves(|op| matches!(op, Op::Input { .. }))
    }

    /// Weights, in node order: (name, id).
    pub fn weights(&self) -> Vec<(&str, NodeId)> {
        self.leaves(|op| matches!(op, Op::Weight { .. }))
    }

    fn leaves(&self, pick: impl Fn(&Op) -> bool) -> Vec<(&str, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| pick(&n.op))
            .filter_map(|(i, n)| match &n.op {
                Op::Input { name } | Op::Weight { name } => Some((name.as_str(), NodeId(i as u32))),
                _ => None,
            })
            .collect()
    }

    /// The node with this name, if any (the first one).
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).map(|i| NodeId(i as u32))
    }

    /// The output with this name.
    pub fn output(&self, name: &str) -> Result<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .ok_or_else(|| IrError::NotFound { kind: "output", name: name.to_string() })
    }

    // ---- building ----------------------------------------------------------------------

    /// Enters a naming scope: names given by [`Graph::named`] are prefixed by the scopes
    /// joined with dots.
    pub fn push_scope(&mut self, s: impl Into<String>) {
        self.scope.push(s.into());
    }

    pub fn pop_scope(&mut self) {
        self.scope.pop();
    }

    fn scoped(&self, name: &str) -> String {
        if self.scope.is_empty() {
            name.to_string()
        } else if name.is_empty() {
            self.scope.join(".")
        } else {
            format!("{}.{}", self.scope.join("."), name)
        }
    }

    /// Gives a node a name within the current scope and returns it.
    pub fn named(&mut self, id: NodeId, name: &str) -> NodeId {
        let full = self.scoped(name);
        if let Some(n) = self.nodes.get_mut(id.index()) {
            n.name = full;
        }
        id
    }

    /// Adds a node after checking its inputs and inferring its shape and dtype.
    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        self.add_declared(op, inputs, None)
    }

    /// Adds a node; leaf ops need `declared` (shape, dtype).
    pub fn add_declared(&mut self, op: Op, inputs: &[NodeId], declared: Option<(Shape, DType)>) -> Result<NodeId> {
        let id = self.nodes.len();
        let err = |reason: String, op: &Op| IrError::Invalid { node: id, op: op.name(), name: String::new(), reason };
        let mut infos = Vec::with_capacity(inputs.len());
        for &i in inputs {
            let n = self.nodes.get(i.index()).ok_or(IrError::DanglingInput {
                node: id,
                op: op.name(),
                name: String::new(),
                input: i.index(),
            })?;
            infos.push((&n.shape, n.dtype));
        }
        let (shape, dtype) = infer(&op, &infos, declared.as_ref().map(|(s, d)| (s, *d))).map_err(|r| err(r, &op))?;
        if let Op::Input { name } | Op::Weight { name } = &op {
            let kind = if matches!(op, Op::Input { .. }) { "input" } else { "weight" };
            let clash = self.nodes.iter().any(|n| match (&n.op, &op) {
                (Op::Input { name: a }, Op::Input { .. }) | (Op::Weight { name: a }, Op::Weight { .. }) => a == name,
                _ => false,
            });
            if clash {
                return Err(IrError::DuplicateName { kind, name: name.clone() });
            }
        }
        self.nodes.push(Node { op, inputs: inputs.to_vec(), shape, dtype, name: String::new() });
        Ok(NodeId(id as u32))
    }

    /// Marks `id` as an output called `name`.
    pub fn set_output(&mut self, name: impl Into<String>, id: NodeId) -> Result<()> {
        let name = name.into();
        if id.index() >= self.nodes.len() {
            return Err(IrError::BadOutput { name, node: id.index() });
        }
        if self.outputs.iter().any(|(n, _)| *n == name) {
            return Err(IrError::DuplicateName { kind: "output", name });
        }
        self.outputs.push((name, id));
        Ok(())
    }

    pub fn input(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<NodeId> {
        let id = self.add_declared(Op::Input { name: name.to_string() }, &[], Some((shape.into(), dtype)))?;
        self.nodes[id.index()].name = name.to_string();
        Ok(id)
    }

    /// A weight with its full (unscoped) parameter name.
    pub fn weight(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<NodeId> {
        let id = self.add_declared(Op::Weight { name: name.to_string() }, &[], Some((shape.into(), dtype)))?;
        self.nodes[id.index()].name = name.to_string();
        Ok(id)
    }

    /// A weight whose name is relative to the current scope (`scope.name`).
    pub fn param(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<NodeId> {
        let full = self.scoped(name);
        self.weight(&full, shape, dtype)
    }

    pub fn constant(&mut self, value: f64, shape: impl Into<Shape>, dtype: DType) -> Result<NodeId> {
        self.add_declared(Op::Constant { value }, &[], Some((shape.into(), dtype)))
    }

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.add(Op::Unary(op), &[x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add(Op::Binary(op), &[a, b])
    }

    pub fn add_(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }

    pub fn silu(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Silu, x)
    }

    pub fn gelu_tanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::GeluTanh, x)
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        self.add(Op::Cast { to }, &[x])
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId, trans_a: bool, trans_b: bool) -> Result<NodeId> {
        self.add(Op::MatMul { trans_a, trans_b, bias: false }, &[a, b])
    }

    /// `y = x·wᵀ + b` with a PyTorch `Linear` weight `[out, in]`.
    pub fn linear(&mut self, x: NodeId, w: NodeId, b: Option<NodeId>) -> Result<NodeId> {
        match b {
            Some(b) => self.add(Op::MatMul { trans_a: false, trans_b: true, bias: true }, &[x, w, b]),
            None => self.add(Op::MatMul { trans_a: false, trans_b: true, bias: false }, &[x, w]),
        }
    }

    /// Attention in BSHD layout; see [`Op::Attention`].
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        scale: f64,
        bias: Option<NodeId>,
        mask: Option<NodeId>,
    ) -> Result<NodeId> {
        let mut ins = vec![q, k, v];
        ins.extend(bias);
        ins.extend(mask);
        self.add(Op::Attention { scale, bias: bias.is_some(), mask: mask.is_some() }, &ins)
    }

    pub fn conv3d(
        &mut self,
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        stride: [usize; 3],
        pad: [[usize; 2]; 3],
    ) -> Result<NodeId> {
        let mut ins = vec![x, w];
        ins.extend(b);
        self.add(Op::Conv3d { stride, pad, bias: b.is_some() }, &ins)
    }

    pub fn rms_norm(
        &mut self,
        x: NodeId,
        weight: Option<NodeId>,
        axis: usize,
        eps: f64,
        style: RmsStyle,
    ) -> Result<NodeId> {
        let mut ins = vec![x];
        ins.extend(weight);
        self.add(Op::RmsNorm { axis, eps, style, weight: weight.is_some() }, &ins)
    }

    pub fn layer_norm(&mut self, x: NodeId, affine: Option<(NodeId, NodeId)>, eps: f64) -> Result<NodeId> {
        match affine {
            Some((w, b)) => self.add(Op::LayerNorm { eps, affine: true }, &[x, w, b]),
            None => self.add(Op::LayerNorm { eps, affine: false }, &[x]),
        }
    }

    pub fn modulate(&mut self, x: NodeId, scale: NodeId, shift: NodeId) -> Result<NodeId> {
        self.add(Op::Modulate, &[x, scale, shift])
    }

    pub fn rope_table(&mut self, grid: [usize; 3], dims: [usize; 3], theta: f64, part: TrigPart) -> Result<NodeId> {
        self.add(Op::RopeTable { grid, dims, theta, part }, &[])
    }

    pub fn rope(&mut self, x: NodeId, cos: NodeId, sin: NodeId) -> Result<NodeId> {
        self.add(Op::Rope, &[x, cos, sin])
    }

    pub fn softmax(&mut self, x: NodeId, axis: usize) -> Result<NodeId> {
        self.add(Op::Softmax { axis }, &[x])
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[usize], keepdim: bool) -> Result<NodeId> {
        self.add(Op::Reduce { op, axes: axes.to_vec(), keepdim }, &[x])
    }

    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        self.add(Op::Reshape { shape: shape.into() }, &[x])
    }

    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.add(Op::Permute { perm: perm.to_vec() }, &[x])
    }

    pub fn slice(&mut self, x: NodeId, axis: usize, start: usize, end: usize) -> Result<NodeId> {
        self.add(Op::Slice { axis, start, end }, &[x])
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        self.add(Op::Concat { axis }, xs)
    }

    pub fn upsample(&mut self, x: NodeId, factors: [usize; 2]) -> Result<NodeId> {
        self.add(Op::Upsample { factors }, &[x])
    }

    pub fn gather(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId> {
        self.add(Op::Gather, &[table, ids])
    }

    pub fn timestep_embedding(
        &mut self,
        t: NodeId,
        dim: usize,
        flip_sin_to_cos: bool,
        downscale_freq_shift: f64,
    ) -> Result<NodeId> {
        self.add(Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period: 10000.0 }, &[t])
    }

    /// Number of consumers of every node (outputs count as consumers).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                if let Some(x) = c.get_mut(i.index()) {
                    *x += 1;
                }
            }
        }
        for (_, o) in &self.outputs {
            if let Some(x) = c.get_mut(o.index()) {
                *x += 1;
            }
        }
        c
    }

    /// Position of the last node that reads each node (outputs: `len()`), or `None` when
    /// nothing reads it.
    pub fn last_uses(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.nodes.len()];
        for (pos, n) in self.nodes.iter().enumerate() {
            for i in &n.inputs {
                if let Some(x) = last.get_mut(i.index()) {
                    *x = Some(pos);
                }
            }
        }
        for (_, o) in &self.outputs {
            if let Some(x) = last.get_mut(o.index()) {
                *x = Some(self.nodes.len());
            }
        }
        last
    }

    /// Map from name to id for inputs.
    pub fn input_map(&self) -> HashMap<String, NodeId> {
        self.inputs().into_iter().map(|(n, i)| (n.to_string(), i)).collect()
    }
}
