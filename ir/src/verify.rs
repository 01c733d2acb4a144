//! The verifier: rejects malformed graphs with a typed error naming the node.
//!
//! Checks that every input comes before its node (topological order), that arity, shapes
//! and dtypes satisfy the op (re-running inference), that stored shapes and dtypes agree
//! with inference, that input, weight and output names are unique, and that outputs exist.

use std::collections::HashSet;

use crate::error::{IrError, Result};
use crate::infer::infer;
use crate::op::Op;
use crate::Graph;

/// Verifies the whole graph.
pub fn verify(g: &Graph) -> Result<()> {
    let mut inputs = HashSet::new();
    let mut weights = HashSet::new();
    for (id, n) in g.nodes.iter().enumerate() {
        let mut infos = Vec::with_capacity(n.inputs.len());
        for &i in &n.inputs {
            if i.index() >= id {
                return Err(IrError::DanglingInput {
                    node: id,
                    op: n.op.name(),
                    name: n.name.clone(),
                    input: i.index(),
                });
            }
            let m = &g.nodes[i.index()];
            infos.push((&m.shape, m.dtype));
        }
        let declared = n.op.is_leaf().then_some((&n.shape, n.dtype));
        let (shape, dtype) = infer(&n.op, &infos, declared).map_err(|reason| IrError::Invalid {
            node: id,
            op: n.op.name(),
            name: n.name.clone(),
            reason,
        })?;
        if shape != n.shape || dtype != n.dtype {
            return Err(IrError::Mismatch {
                node: id,
                op: n.op.name(),
                name: n.name.clone(),
                stored: format!("{}{}", n.dtype, n.shape),
                inferred: format!("{dtype}{shape}"),
            });
        }
        match &n.op {
            Op::Input { name } if !inputs.insert(name.as_str()) => {
                return Err(IrError::DuplicateName { kind: "input", name: name.clone() })
            }
            Op::Weight { name } if !weights.insert(name.as_str()) => {
                return Err(IrError::DuplicateName { kind: "weight", name: name.clone() })
            }
            _ => {}
        }
    }
    let mut outs = HashSet::new();
    for (name, id) in &g.outputs {
        if id.index() >= g.nodes.len() {
            return Err(IrError::BadOutput { name: name.clone(), node: id.index() });
        }
        if !outs.insert(name.as_str()) {
            return Err(IrError::DuplicateName { kind: "output", name: name.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, NodeId, Shape};

    #[test]
    fn rejects_bad_shapes_with_node_context() {
        let mut g = Graph::new();
        let a = g.input("a", [2, 3], DType::F32).unwrap();
        let b = g.input("b", [4, 5], DType::F32).unwrap();
        let e = g.matmul(a, b, false, false).unwrap_err();
        assert!(matches!(e, IrError::Invalid { node: 2, op: "matmul", .. }), "{e}");
        assert!(e.to_string().contains("inner dimensions"), "{e}");
    }

    #[test]
    fn rejects_forward_references_and_mismatches() {
        let mut g = Graph::new();
        let a = g.input("a", [2, 3], DType::F32).unwrap();
        let s = g.silu(a).unwrap();
        g.set_output("y", s).unwrap();
        assert!(verify(&g).is_ok());
        let mut bad = g.clone();
        bad.nodes[1].inputs[0] = NodeId(1);
        assert!(matches!(verify(&bad), Err(IrError::DanglingInput { node: 1, .. })));
        let mut bad = g.clone();
        bad.nodes[1].shape = Shape::from([3, 2]);
        assert!(matches!(verify(&bad), Err(IrError::Mismatch { node: 1, .. })));
        let mut bad = g.clone();
        bad.outputs.push(("z".into(), NodeId(9)));
        assert!(matches!(verify(&bad), Err(IrError::BadOutput { .. })));
    }

    #[test]
    fn rejects_duplicate_names() {
        let mut g = Graph::new();
        g.input("a", [1], DType::F32).unwrap();
        assert!(matches!(g.input("a", [1], DType::F32), Err(IrError::DuplicateName { .. })));
    }
}
