//! Dead-code elimination: drops every node that no output depends on. Graph inputs always
//! stay (callers feed them by name), even when nothing reads them.

use crate::passes::Rebuild;
use crate::{Graph, NodeId, Op};

/// Which nodes an output depends on (graph inputs count as live).
pub fn live_nodes(g: &Graph) -> Vec<bool> {
    let mut live = vec![false; g.len()];
    for (_, id) in &g.outputs {
        if let Some(l) = live.get_mut(id.index()) {
            *l = true;
        }
    }
    for i in (0..g.len()).rev() {
        if matches!(g.nodes[i].op, Op::Input { .. }) {
            live[i] = true;
        }
        if live[i] {
            for inp in &g.nodes[i].inputs {
                if let Some(l) = live.get_mut(inp.index()) {
                    *l = true;
                }
            }
        }
    }
    live
}

/// Removes dead nodes.
pub fn dce(g: &Graph) -> crate::Result<Graph> {
    let live = live_nodes(g);
    let mut r = Rebuild::new(g);
    for (i, keep) in live.iter().enumerate() {
        if *keep {
            r.copy(g, NodeId(i as u32))?;
        }
    }
    r.finish(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn drops_unused_nodes_but_keeps_inputs() {
        let mut g = Graph::new();
        let x = g.input("x", [4], DType::F32).unwrap();
        let _unused = g.input("unused", [4], DType::F32).unwrap();
        let w = g.weight("w", [4], DType::F32).unwrap();
        let dead = g.mul(x, w).unwrap();
        let _dead2 = g.silu(dead).unwrap();
        let y = g.silu(x).unwrap();
        g.set_output("y", y).unwrap();
        let out = dce(&g).unwrap();
        assert_eq!(out.len(), 3, "{}", crate::text::print(&out));
        assert_eq!(out.inputs().len(), 2);
        assert!(out.weights().is_empty());
        assert_eq!(out.node(out.output("y").unwrap()).op, Op::Unary(crate::UnaryOp::Silu));
    }
}
