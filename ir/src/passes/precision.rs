//! Reduced precision: runs a graph's float compute in bf16 or f16, as mixed-precision
//! inference does on tensor-core GPUs.
//!
//! - Float graph inputs, weights and constants are declared in the target dtype (the runtime
//!   converts what it is fed or loads, once), except those read in a kept slot (below).
//! - Every other op takes its float inputs in the target dtype: an input of another float
//!   dtype gets one cast (shared by all its readers). Exceptions, whose dtype is part of the
//!   op's definition: the rotary tables of `rope` and `rms_norm_rope` (f32), an attention key
//!   mask (any dtype), the timesteps of `timestep_embedding` (f32: a sinusoid of up to 1000
//!   rad needs them exact), and the ops that define their own output dtype (`timestep_embedding`,
//!   `rope_table`: f32; an explicit `cast` keeps its target, so a graph can pin f32 where it
//!   needs it).
//! - Arithmetic inside every kernel stays in f32 (norms, softmax, accumulation); what changes
//!   is the storage between ops, which the unfused reference rounds the same way.
//! - Float graph outputs are cast back to f32, so callers see the same dtypes as before.

use std::collections::HashMap;

use crate::{DType, Graph, IrError, NodeId, Op};

/// Input slots of `op` that keep their dtype (see the module doc).
fn kept_slots(op: &Op) -> Vec<usize> {
    match op {
        Op::Rope => vec![1, 2],
        Op::RmsNormRope { .. } => vec![2, 3],
        Op::Attention { bias, mask: true, .. } => vec![3 + usize::from(*bias)],
        // An explicit cast takes its input as it is (a cast to f32 pins f32).
        Op::Cast { .. } => vec![0],
        // Timesteps up to 1000 feed sinusoids of up to 1000 rad: bf16's 8 bits would move
        // them by whole radians (diffusers keeps them in f32 too).
        Op::TimestepEmbedding { .. } => vec![0],
        _ => vec![],
    }
}

/// `graph` with its float storage in `dtype` (bf16 or f16), outputs cast back to f32.
pub fn reduce_precision(graph: &Graph, dtype: DType) -> crate::Result<Graph> {
    reduce_precision_with(graph, dtype, true)
}

/// [`reduce_precision`], with the float outputs left in `dtype` unless `f32_outputs` (a
/// benchmark of one op wants no trailing cast).
pub fn reduce_precision_with(graph: &Graph, dtype: DType, f32_outputs: bool) -> crate::Result<Graph> {
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Err(IrError::Invalid {
            node: 0,
            op: "reduce_precision",
            name: String::new(),
            reason: format!("reduced precision is bf16 or f16, not {dtype}"),
        });
    }
    crate::verify(graph)?;
    let mut g = Graph::new();
    let mut map: Vec<NodeId> = Vec::with_capacity(graph.len());
    // Casts of new-graph nodes to `dtype`, made once per node.
    let mut casts: HashMap<NodeId, NodeId> = HashMap::new();
    // Leaves read in a kept slot stay in their dtype (their other readers get the cast).
    let mut pinned = vec![false; graph.len()];
    for n in &graph.nodes {
        for slot in kept_slots(&n.op) {
            if let Some(p) = n.inputs.get(slot).and_then(|x| pinned.get_mut(x.index())) {
                *p = true;
            }
        }
    }
    let get = |map: &[NodeId], i: usize, id: NodeId| {
        map.get(id.index()).copied().ok_or(IrError::DanglingInput {
            node: i,
            op: "reduce_precision",
            name: String::new(),
            input: id.index(),
        })
    };
    for (i, n) in graph.nodes.iter().enumerate() {
        let ins = n.inputs.iter().map(|&x| get(&map, i, x)).collect::<crate::Result<Vec<NodeId>>>()?;
        let id = if n.op.is_leaf() {
            let dt = if n.dtype.is_float() && !pinned[i] { dtype } else { n.dtype };
            g.add_declared(n.op.clone(), &[], Some((n.shape.clone(), dt)))?
        } else {
            let kept = kept_slots(&n.op);
            let mut moved = Vec::with_capacity(ins.len());
            for (slot, &x) in ins.iter().enumerate() {
                let xd = g.node(x).dtype;
                if !xd.is_float() || xd == dtype || kept.contains(&slot) {
                    moved.push(x);
                    continue;
                }
                let c = match casts.get(&x) {
                    Some(&c) => c,
                    None => {
                        let c = g.cast(x, dtype)?;
                        g.nodes[c.index()].name = format!("{}.to_{}", g.node(x).name, dtype.name());
                        casts.insert(x, c);
                        c
                    }
                };
                moved.push(c);
            }
            g.add(n.op.clone(), &moved)?
        };
        g.nodes[id.index()].name = n.name.clone();
        map.push(id);
    }
    for (name, id) in &graph.outputs {
        let new = get(&map, graph.len(), *id)?;
        let out = if f32_outputs && g.node(new).dtype.is_float() && g.node(new).dtype != DType::F32 {
            let c = g.cast(new, DType::F32)?;
            g.nodes[c.index()].name = format!("{name}.to_f32");
            c
        } else {
            new
        };
        g.set_output(name.clone(), out)?;
    }
    crate::verify(&g)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// t → timestep embedding → linear (+ a second reader of t), x → rope with f32 tables.
    fn graph() -> Graph {
        let mut g = Graph::new();
        let t = g.input("t", [2], DType::F32).unwrap();
        let e = g.timestep_embedding(t, 16, true, 0.0).unwrap();
        let w = g.weight("proj.weight", [8, 16], DType::F32).unwrap();
        let y = g.linear(e, w, None).unwrap();
        let t2 = g.reshape(t, [2, 1]).unwrap();
        let y = g.add_(y, t2).unwrap();
        let x = g.input("x", [1, 3, 2, 4], DType::F32).unwrap();
        let cos = g.input("cos", [3, 4], DType::F32).unwrap();
        let sin = g.input("sin", [3, 4], DType::F32).unwrap();
        let r = g.rope(x, cos, sin).unwrap();
        let ids = g.input("ids", [3], DType::I64).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("r", r).unwrap();
        g.set_output("ids", ids).unwrap();
        g
    }

    #[test]
    fn storage_moves_to_bf16_except_the_pinned_slots_and_outputs_stay_f32() {
        let old = graph();
        let g = reduce_precision(&old, DType::BF16).unwrap();
        let by_name = |name: &str| g.nodes.iter().find(|n| n.name == name).unwrap();
        // The weight and x move; t (timesteps) and the rope tables keep f32; ids stay integer.
        assert_eq!(by_name("proj.weight").dtype, DType::BF16);
        assert_eq!(by_name("x").dtype, DType::BF16);
        assert_eq!(by_name("t").dtype, DType::F32);
        assert_eq!(by_name("cos").dtype, DType::F32);
        assert_eq!(by_name("ids").dtype, DType::I64);
        // The embedding (f32 by definition) is cast once before the bf16 linear.
        let casts = g.nodes.iter().filter(|n| matches!(n.op, Op::Cast { to: DType::BF16 })).count();
        assert_eq!(casts, 2, "one for the embedding, one for t's other reader");
        // Every output keeps its original dtype.
        for (name, id) in &g.outputs {
            let want = old.node(old.outputs.iter().find(|o| &o.0 == name).unwrap().1).dtype;
            assert_eq!(g.node(*id).dtype, want, "{name}");
        }
        crate::verify(&g).unwrap();
    }

    /// `cast(to f32)` of an f32 value reads it unrounded: no bf16 cast is put in front.
    #[test]
    fn an_explicit_cast_reads_its_input_as_it_is() {
        let mut g = Graph::new();
        let t = g.input("t", [2], DType::F32).unwrap();
        let e = g.timestep_embedding(t, 8, true, 0.0).unwrap();
        let c = g.cast(e, DType::F32).unwrap();
        g.set_output("c", c).unwrap();
        let r = reduce_precision(&g, DType::BF16).unwrap();
        let casts: Vec<DType> =
            r.nodes.iter().filter_map(|n| if let Op::Cast { to } = n.op { Some(to) } else { None }).collect();
        assert_eq!(casts, vec![DType::F32], "only the graph's own cast");
    }

    #[test]
    fn only_16_bit_float_targets_are_accepted() {
        for d in [DType::F32, DType::I32] {
            assert!(reduce_precision(&graph(), d).is_err(), "{d}");
        }
        assert!(reduce_precision(&graph(), DType::F16).is_ok());
    }
}
