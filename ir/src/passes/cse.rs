//! Common-subexpression elimination: two nodes with the same op, parameters, inputs, shape
//! and dtype compute the same value (every op is pure), so the later one is replaced by the
//! earlier. Graph inputs and weights are unique by name and never merged; constants and
//! tables (rope, relative-position buckets) are.

use std::collections::HashMap;

use crate::passes::Rebuild;
use crate::{Graph, NodeId, Op};

/// Merges duplicate nodes.
pub fn cse(g: &Graph) -> crate::Result<Graph> {
    let mut r = Rebuild::new(g);
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        if matches!(n.op, Op::Input { .. } | Op::Weight { .. }) {
            r.copy(g, id)?;
            continue;
        }
        let inputs = n.inputs.iter().map(|&x| r.get(x)).collect::<crate::Result<Vec<_>>>()?;
        // Debug formatting prints f64 parameters exactly (shortest round-trip form).
        let key = format!("{:?}|{:?}|{}|{}", n.op, inputs, n.dtype, n.shape);
        match seen.get(&key) {
            Some(&prev) => r.map[i] = Some(prev),
            None => {
                let new = r.copy(g, id)?;
                seen.insert(key, new);
            }
        }
    }
    r.finish(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn merges_duplicates_and_keeps_outputs() {
        let mut g = Graph::new();
        let x = g.input("x", [4], DType::F32).unwrap();
        let a = g.silu(x).unwrap();
        let b = g.silu(x).unwrap();
        let c = g.unary(crate::UnaryOp::AddScalar(1.0), x).unwrap();
        let d = g.unary(crate::UnaryOp::AddScalar(2.0), x).unwrap();
        let s = g.add_(a, b).unwrap();
        g.set_output("s", s).unwrap();
        g.set_output("b", b).unwrap();
        g.set_output("c", c).unwrap();
        g.set_output("d", d).unwrap();
        let out = cse(&g).unwrap();
        assert_eq!(out.len(), 5);
        let s = out.node(out.output("s").unwrap());
        assert_eq!(s.inputs[0], s.inputs[1]);
        assert_eq!(out.output("b").unwrap(), s.inputs[0]);
        assert_ne!(out.output("c").unwrap(), out.output("d").unwrap());
    }
}
