//! Fusion: rewrites that remove round trips through memory. Every fused node has the
//! unfused composition it replaces as its reference (DESIGN.md, Ops).
//!
//! 1. `layer_norm(x) → modulate(·, scale, shift)` (no affine) becomes
//!    [`Op::LayerNormModulate`] (the DiT's norm1, norm3 and norm_out).
//! 2. `rms_norm(x, w, last axis) → reshape [.., S, H, hd] → rope` becomes
//!    [`Op::RmsNormRope`] (the DiT's q/k norms across heads with rotary embedding).
//! 3. Elementwise chains: an elementwise node whose only reader is an elementwise node of the
//!    same shape joins its reader's group; a group of two or more becomes one
//!    [`Op::Fused`] node. A matmul, conv3d or RMS norm whose only reader is in a group (same
//!    shape) becomes the group's anchor: the group turns into an epilogue
//!    ([`Op::MatMulEpilogue`], [`Op::Conv3dEpilogue`], [`Op::RmsNormEpilogue`]): bias,
//!    gelu-tanh, silu, `gate·x + residual`, the VAE's norm → silu.
//!
//! Inside a fused expression, a member whose dtype is not f32 is followed by a cast step to
//! its dtype, so the fused node rounds exactly where the unfused graph stored.
//!
//! A node that is a graph output is never fused away (its value must be written), and a
//! node read by several nodes is never duplicated.

use std::collections::HashMap;

use crate::expr::{ElementwiseExpr, ExprStep};
use crate::passes::Rebuild;
use crate::{BinaryOp, Graph, NodeId, Op, RmsStyle, UnaryOp};

/// Runs every fusion rewrite.
pub fn fuse(g: &Graph) -> crate::Result<Graph> {
    let g = fuse_norms(g)?;
    let g = crate::passes::dce::dce(&g)?;
    fuse_chains(&g)
}

/// Use facts: each node's single reader when it has exactly one use and is no output.
struct Uses {
    only_reader: Vec<Option<usize>>,
}

impl Uses {
    fn of(g: &Graph) -> Self {
        // Readers are counted as distinct nodes (a node reading a value twice is one reader);
        // an output counts as a reader.
        let mut readers = vec![0usize; g.len()];
        let mut only_reader = vec![None; g.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, inp) in n.inputs.iter().enumerate() {
                if !n.inputs[..k].contains(inp) {
                    readers[inp.index()] += 1;
                    only_reader[inp.index()] = Some(i);
                }
            }
        }
        for (_, o) in &g.outputs {
            readers[o.index()] += 1;
        }
        for (r, c) in only_reader.iter_mut().zip(&readers) {
            if *c != 1 {
                *r = None;
            }
        }
        Uses { only_reader }
    }

    /// The node `id`'s only reader, when `id` is read once and is no graph output.
    fn single(&self, id: NodeId) -> Option<usize> {
        self.only_reader.get(id.index()).copied().flatten()
    }
}

/// Rewrites 1 and 2 (norm patterns).
fn fuse_norms(g: &Graph) -> crate::Result<Graph> {
    let uses = Uses::of(g);
    let mut r = Rebuild::new(g);
    for (i, n) in g.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        let fused = match &n.op {
            Op::Modulate => {
                let ln = g.node(n.inputs[0]);
                match ln.op {
                    Op::LayerNorm { eps, affine: false } if uses.single(n.inputs[0]) == Some(i) => {
                        Some((Op::LayerNormModulate { eps }, vec![ln.inputs[0], n.inputs[1], n.inputs[2]]))
                    }
                    _ => None,
                }
            }
            Op::Rope => rms_rope(g, &uses, i).map(|(op, x, w)| (op, vec![x, w, n.inputs[1], n.inputs[2]])),
            _ => None,
        };
        match fused {
            Some((op, old_inputs)) => {
                let ins = old_inputs.iter().map(|&x| r.get(x)).collect::<crate::Result<Vec<_>>>()?;
                let new = r.push(n, op, &ins)?;
                r.map[i] = Some(new);
            }
            None => {
                r.copy(g, id)?;
            }
        }
    }
    r.finish(g)
}

/// Matches `rope(reshape(rms_norm(x, w)))` ending at node `i`: (op, x, w).
fn rms_rope(g: &Graph, uses: &Uses, i: usize) -> Option<(Op, NodeId, NodeId)> {
    let rope = &g.nodes[i];
    let rs_id = rope.inputs[0];
    let rs = g.node(rs_id);
    if !matches!(rs.op, Op::Reshape { .. }) || uses.single(rs_id) != Some(i) {
        return None;
    }
    let norm_id = rs.inputs[0];
    let norm = g.node(norm_id);
    let Op::RmsNorm { axis, eps, style: RmsStyle::MeanSquare, weight: true } = norm.op else {
        return None;
    };
    let rank = norm.shape.rank();
    if uses.single(norm_id) != Some(rs_id.index()) || rank < 2 || axis != rank - 1 {
        return None;
    }
    let (a, b) = (&norm.shape.0, &rs.shape.0);
    if b.len() != rank + 1 || a[..rank - 1] != b[..rank - 1] || b[rank - 1] * b[rank] != a[rank - 1] {
        return None;
    }
    Some((Op::RmsNormRope { eps, heads: b[rank - 1] }, norm.inputs[0], norm.inputs[1]))
}

/// Elementwise nodes that can live inside a fused expression.
fn is_elementwise(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    matches!(n.op, Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Modulate | Op::Fused { .. })
        && n.dtype.is_float()
        && n.inputs.iter().all(|&i| g.dtype(i).is_float())
}

/// Ops that take an elementwise epilogue.
fn is_anchor(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    matches!(n.op, Op::MatMul { .. } | Op::Conv3d { .. } | Op::RmsNorm { .. }) && n.dtype.is_float()
}

/// Rewrite 3 (elementwise groups and epilogues).
fn fuse_chains(g: &Graph) -> crate::Result<Graph> {
    let n = g.len();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate() {
        for inp in &node.inputs {
            if readers[inp.index()].last() != Some(&i) {
                readers[inp.index()].push(i);
            }
        }
    }
    let mut is_out = vec![false; n];
    for (_, o) in &g.outputs {
        is_out[o.index()] = true;
    }
    // The group (its root) every node of `readers` belongs to, when they share one.
    let common_group = |group: &[Option<usize>], p: usize| -> Option<usize> {
        let rs = &readers[p];
        let first = group[*rs.first()?]?;
        (!is_out[p] && rs.iter().all(|&r| group[r] == Some(first)) && g.nodes[first].shape == g.nodes[p].shape)
            .then_some(first)
    };
    // Reverse order: a node joins the group of its readers when they all share one.
    let mut group: Vec<Option<usize>> = vec![None; n];
    let mut absorbed = vec![false; n];
    for p in (0..n).rev() {
        if !is_elementwise(g, NodeId(p as u32)) {
            continue;
        }
        match common_group(&group, p) {
            Some(root) => {
                group[p] = Some(root);
                absorbed[p] = true;
            }
            None => group[p] = Some(p),
        }
    }
    let anchor_of = |m: NodeId| is_anchor(g, m).then(|| common_group(&group, m.index())).flatten();
    let mut r = Rebuild::new(g);
    for i in 0..g.len() {
        let id = NodeId(i as u32);
        if !is_elementwise(g, id) || absorbed[i] {
            r.copy(g, id)?;
            continue;
        }
        // `id` roots a group: collect members and external reads in order.
        let mut members = Vec::new();
        let mut externals = Vec::new();
        collect(g, id, &absorbed, &mut members, &mut externals);
        let anchor = externals.iter().copied().find(|&m| anchor_of(m) == Some(i));
        if members.len() < 2 && anchor.is_none() {
            r.copy(g, id)?;
            continue;
        }
        let mut b = ExprBuilder { g, absorbed: &absorbed, steps: Vec::new(), slots: Vec::new(), memo: HashMap::new() };
        if let Some(m) = anchor {
            b.slots.push(m);
            // The base op's result is stored in its dtype by the unfused graph: round it too.
            let d = g.dtype(m);
            if d != crate::DType::F32 {
                let a = b.push(ExprStep::Input(0));
                let c = b.push(ExprStep::Cast(d, a));
                b.memo.insert(m, c);
            }
        }
        b.emit(id)?;
        let expr = ElementwiseExpr::new(b.steps);
        let root = g.node(id);
        let (op, old_inputs) = match anchor {
            None => (Op::Fused { expr }, b.slots),
            Some(m) => {
                let base = g.node(m);
                let mut ins = base.inputs.clone();
                ins.extend(b.slots.iter().skip(1));
                let op = match &base.op {
                    Op::MatMul { trans_a, trans_b, bias } => {
                        Op::MatMulEpilogue { trans_a: *trans_a, trans_b: *trans_b, bias: *bias, epilogue: expr }
                    }
                    Op::Conv3d { stride, pad, bias } => {
                        Op::Conv3dEpilogue { stride: *stride, pad: *pad, bias: *bias, epilogue: expr }
                    }
                    Op::RmsNorm { axis, eps, style, weight } => {
                        Op::RmsNormEpilogue { axis: *axis, eps: *eps, style: *style, weight: *weight, epilogue: expr }
                    }
                    _ => {
                        r.copy(g, id)?;
                        continue;
                    }
                };
                (op, ins)
            }
        };
        let ins = old_inputs.iter().map(|&x| r.get(x)).collect::<crate::Result<Vec<_>>>()?;
        let new = r.push(root, op, &ins)?;
        r.map[i] = Some(new);
    }
    r.finish(g)
}

/// Members of the group rooted at `id` (post-order) and the outside nodes it reads (first
/// read order, deduplicated).
fn collect(g: &Graph, id: NodeId, absorbed: &[bool], members: &mut Vec<NodeId>, externals: &mut Vec<NodeId>) {
    for &inp in &g.node(id).inputs {
        if members.contains(&inp) {
            continue;
        }
        if absorbed[inp.index()] {
            collect(g, inp, absorbed, members, externals);
        } else if !externals.contains(&inp) {
            externals.push(inp);
        }
    }
    members.push(id);
}

struct ExprBuilder<'a> {
    g: &'a Graph,
    absorbed: &'a [bool],
    steps: Vec<ExprStep>,
    /// Old node ids read through input slots, by slot.
    slots: Vec<NodeId>,
    memo: HashMap<NodeId, usize>,
}

impl ExprBuilder<'_> {
    fn push(&mut self, s: ExprStep) -> usize {
        self.steps.push(s);
        self.steps.len() - 1
    }

    /// The step holding old node `id`'s value; `id` is the root or a member when `member`.
    fn value(&mut self, id: NodeId) -> crate::Result<usize> {
        if let Some(&s) = self.memo.get(&id) {
            return Ok(s);
        }
        let s = if self.absorbed[id.index()] {
            self.emit(id)?
        } else {
            let k = match self.slots.iter().position(|&x| x == id) {
                Some(k) => k,
                None => {
                    self.slots.push(id);
                    self.slots.len() - 1
                }
            };
            self.push(ExprStep::Input(k))
        };
        self.memo.insert(id, s);
        Ok(s)
    }

    /// Emits the steps of member (or root) `id`.
    fn emit(&mut self, id: NodeId) -> crate::Result<usize> {
        let n = self.g.node(id);
        let ins = n.inputs.clone();
        let s = match &n.op {
            Op::Unary(u) => {
                let a = self.value(ins[0])?;
                self.push(ExprStep::Unary(*u, a))
            }
            Op::Binary(op) => {
                let a = self.value(ins[0])?;
                let b = self.value(ins[1])?;
                self.push(ExprStep::Binary(*op, a, b))
            }
            Op::Cast { to } => {
                let a = self.value(ins[0])?;
                self.push(ExprStep::Cast(*to, a))
            }
            Op::Modulate => {
                // x·(1 + scale) + shift, in the CPU reference's operation order.
                let x = self.value(ins[0])?;
                let s = self.value(ins[1])?;
                let t = self.value(ins[2])?;
                let s1 = self.push(ExprStep::Unary(UnaryOp::AddScalar(1.0), s));
                let m = self.push(ExprStep::Binary(BinaryOp::Mul, x, s1));
                self.push(ExprStep::Binary(BinaryOp::Add, m, t))
            }
            Op::Fused { expr } => {
                let mut local = Vec::with_capacity(expr.steps.len());
                for st in &expr.steps {
                    let v = match *st {
                        ExprStep::Input(k) => self.value(ins[k])?,
                        ExprStep::Unary(u, a) => self.push(ExprStep::Unary(u, local[a])),
                        ExprStep::Binary(op, a, b) => self.push(ExprStep::Binary(op, local[a], local[b])),
                        ExprStep::Cast(d, a) => self.push(ExprStep::Cast(d, local[a])),
                    };
                    local.push(v);
                }
                local.last().copied().unwrap_or(0)
            }
            other => {
                return Err(crate::IrError::Invalid {
                    node: id.index(),
                    op: other.name(),
                    name: n.name.clone(),
                    reason: "fuse: not an elementwise op, cannot join a fused expression".into(),
                })
            }
        };
        // Keep the unfused graph's storage rounding of a non-f32 member (exact semantics).
        Ok(if n.dtype != crate::DType::F32 { self.push(ExprStep::Cast(n.dtype, s)) } else { s })
    }
}
