//! Constant folding and algebraic identities.
//!
//! - An elementwise node (unary, binary, cast, modulate, fused) whose inputs are all
//!   constants becomes a constant (computed in f64, rounded to the node's dtype).
//! - A view or upsample of a constant becomes a constant of the new shape; so does a concat
//!   of equal constants.
//! - Identities become their input: a reshape to the same shape, an identity permutation, a
//!   full slice, a cast to the same dtype, `x + 0`, `x · 1`, `x − 0`, `x / 1` (the constant
//!   may be a scalar op or a constant tensor, as long as `x` already has the output's shape).
//! - A reshape of a reshape reads the first reshape's input.

use crate::expr::{binary_f64, unary_f64};
use crate::passes::Rebuild;
use crate::{BinaryOp, DType, Graph, Node, NodeId, Op, UnaryOp};

/// Rounds an f64 to what a tensor of `d` stores.
pub fn round_to(d: DType, v: f64) -> f64 {
    match d {
        DType::F32 => f64::from(v as f32),
        DType::F16 => f64::from(half::f16::from_f64(v)),
        DType::BF16 => f64::from(half::bf16::from_f64(v)),
        DType::I32 | DType::I64 => v.trunc(),
    }
}

/// The constant value of new-graph node `id`, if it is a constant.
fn const_of(g: &Graph, id: NodeId) -> Option<f64> {
    match g.node(id).op {
        Op::Constant { value } => Some(value),
        _ => None,
    }
}

/// Folds constants and identities.
pub fn fold(g: &Graph) -> crate::Result<Graph> {
    let mut r = Rebuild::new(g);
    for (i, n) in g.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        if n.op.is_leaf() || n.inputs.is_empty() {
            r.copy(g, id)?;
            continue;
        }
        let ins = n.inputs.iter().map(|&x| r.get(x)).collect::<crate::Result<Vec<_>>>()?;
        if let Some(v) = folded_value(&r.g, n, &ins) {
            let new = r.push(n, Op::Constant { value: v }, &[])?;
            r.map[i] = Some(new);
            continue;
        }
        if let Some(same) = identity_of(&r.g, n, &ins) {
            r.map[i] = Some(same);
            continue;
        }
        if let Op::Reshape { shape } = &n.op {
            let src = r.g.node(ins[0]);
            if let Op::Reshape { .. } = src.op {
                let inner = src.inputs[0];
                if r.g.shape(inner) == shape {
                    r.map[i] = Some(inner);
                    continue;
                }
                let new = r.push(n, Op::Reshape { shape: shape.clone() }, &[inner])?;
                r.map[i] = Some(new);
                continue;
            }
        }
        let new = r.push(n, n.op.clone(), &ins)?;
        r.map[i] = Some(new);
    }
    r.finish(g)
}

/// The value of `n` when it is a constant function of constant inputs.
fn folded_value(g: &Graph, n: &Node, ins: &[NodeId]) -> Option<f64> {
    let vals: Vec<f64> = ins.iter().map(|&i| const_of(g, i).map(|v| round_to(g.dtype(i), v))).collect::<Option<_>>()?;
    let v = match &n.op {
        _ if !n.dtype.is_float() && !matches!(n.op, Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. }) => {
            return None
        }
        Op::Unary(u) => unary_f64(*u, vals[0]),
        Op::Binary(b) => binary_f64(*b, vals[0], vals[1]),
        Op::Cast { .. } => vals[0],
        Op::Modulate => vals[0] * (1.0 + vals[1]) + vals[2],
        Op::Fused { expr } => expr.eval_f64(&vals, round_to),
        Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Upsample { .. } => vals[0],
        Op::Concat { .. } if vals.iter().all(|v| v.to_bits() == vals[0].to_bits()) => vals[0],
        _ => return None,
    };
    let v = round_to(n.dtype, v);
    v.is_finite().then_some(v)
}

/// The new-graph node `n` equals, when it is an identity of one of its inputs.
fn identity_of(g: &Graph, n: &Node, ins: &[NodeId]) -> Option<NodeId> {
    let same = |i: usize| {
        let m = g.node(ins[i]);
        m.shape == n.shape && m.dtype == n.dtype
    };
    let is = |i: usize, v: f64| const_of(g, ins[i]) == Some(v);
    match &n.op {
        Op::Reshape { .. } if same(0) => Some(ins[0]),
        Op::Permute { perm } if perm.iter().enumerate().all(|(a, &p)| a == p) => Some(ins[0]),
        Op::Slice { axis, start, end } if *start == 0 && g.node(ins[0]).shape.0.get(*axis) == Some(end) => Some(ins[0]),
        Op::Concat { .. } if ins.len() == 1 => Some(ins[0]),
        Op::Cast { to } if *to == g.node(ins[0]).dtype => Some(ins[0]),
        Op::Unary(UnaryOp::AddScalar(c)) if *c == 0.0 => Some(ins[0]),
        Op::Unary(UnaryOp::MulScalar(c)) if *c == 1.0 => Some(ins[0]),
        Op::Binary(BinaryOp::Add) if same(0) && is(1, 0.0) => Some(ins[0]),
        Op::Binary(BinaryOp::Add) if same(1) && is(0, 0.0) => Some(ins[1]),
        Op::Binary(BinaryOp::Sub) if same(0) && is(1, 0.0) => Some(ins[0]),
        Op::Binary(BinaryOp::Mul) if same(0) && is(1, 1.0) => Some(ins[0]),
        Op::Binary(BinaryOp::Mul) if same(1) && is(0, 1.0) => Some(ins[1]),
        Op::Binary(BinaryOp::Div) if same(0) && is(1, 1.0) => Some(ins[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_constants_and_identities() {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3], DType::F32).unwrap();
        let c = g.constant(2.0, [2, 3], DType::F32).unwrap();
        let e = g.unary(UnaryOp::Square, c).unwrap();
        let one = g.constant(1.0, [1], DType::F32).unwrap();
        let y = g.mul(x, one).unwrap();
        let y = g.add_(y, e).unwrap();
        let r = g.reshape(y, [3, 2]).unwrap();
        let r = g.reshape(r, [6]).unwrap();
        let p = g.permute(r, &[0]).unwrap();
        g.set_output("p", p).unwrap();
        let f = crate::passes::dce::dce(&fold(&g).unwrap()).unwrap();
        let text = crate::text::print(&f);
        assert!(!text.contains("square"), "{text}");
        assert!(!text.contains("mul"), "{text}");
        assert!(!text.contains("permute"), "{text}");
        assert_eq!(text.matches("reshape").count(), 1, "{text}");
        assert!(text.contains("value=4.0"), "{text}");
    }
}
