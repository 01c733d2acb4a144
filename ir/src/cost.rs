//! Cost model: floating-point operations and the minimal bytes a node must move (read each
//! input once, write the output once). Leaves cost nothing by themselves; their bytes are
//! counted where they are read.

use crate::op::Op;
use crate::{Graph, NodeId};

/// The cost of one node.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub flops: u64,
    pub bytes: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost { flops: self.flops.saturating_add(o.flops), bytes: self.bytes.saturating_add(o.bytes) }
    }
}

/// The cost of node `id` of `g`.
pub fn node_cost(g: &Graph, id: NodeId) -> Cost {
    let n = g.node(id);
    if n.op.is_leaf() {
        return Cost::default();
    }
    let out = n.shape.numel() as u64;
    let ins: Vec<&crate::Node> = n.inputs.iter().map(|&i| g.node(i)).collect();
    let bytes = n.bytes() as u64 + ins.iter().map(|m| m.bytes() as u64).sum::<u64>();
    let flops = match &n.op {
        Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => 0,
        Op::RopeTable { .. } | Op::RelPositionBucket { .. } => 8 * out,
        Op::Unary(u) => u.flops_per_elem() * out,
        Op::Binary(_) | Op::Cast { .. } => out,
        Op::Modulate => 3 * out,
        Op::MatMul { trans_a, bias, .. } => {
            let a = &ins[0].shape;
            let k = if *trans_a { a.0[a.rank() - 2] } else { a.0[a.rank() - 1] } as u64;
            2 * out * k + if *bias { out } else { 0 }
        }
        Op::Attention { .. } => {
            let (q, k) = (&ins[0].shape, &ins[1].shape);
            let (b, sq, h, d) = (q.0[0] as u64, q.0[1] as u64, q.0[2] as u64, q.0[3] as u64);
            let sk = k.0[1] as u64;
            let dv = n.shape.0[3] as u64;
            let scores = b * h * sq * sk;
            2 * scores * d + 2 * scores * dv + 5 * scores
        }
        Op::Conv3d { bias, .. } => {
            let w = &ins[1].shape;
            let taps = (w.0[1] * w.0[2] * w.0[3] * w.0[4]) as u64;
            2 * out * taps + if *bias { out } else { 0 }
        }
        Op::RmsNorm { .. } => 4 * out,
        Op::LayerNorm { affine, .. } => (if *affine { 7 } else { 5 }) * out,
        Op::Rope => 3 * out,
        Op::Softmax { .. } => 5 * out,
        Op::Reduce { .. } => ins[0].shape.numel() as u64,
        Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Upsample { .. }
        | Op::Gather => 0,
        Op::TimestepEmbedding { .. } => 10 * out,
        Op::Fused { expr } => expr.flops_per_elem() * out,
        Op::MatMulEpilogue { trans_a, bias, epilogue, .. } => {
            let a = &ins[0].shape;
            let k = if *trans_a { a.0[a.rank() - 2] } else { a.0[a.rank() - 1] } as u64;
            2 * out * k + if *bias { out } else { 0 } + epilogue.flops_per_elem() * out
        }
        Op::Conv3dEpilogue { bias, epilogue, .. } => {
            let w = &ins[1].shape;
            let taps = (w.0[1] * w.0[2] * w.0[3] * w.0[4]) as u64;
            2 * out * taps + if *bias { out } else { 0 } + epilogue.flops_per_elem() * out
        }
        Op::LayerNormModulate { .. } => 8 * out,
        Op::RmsNormRope { .. } => 7 * out,
        Op::RmsNormEpilogue { epilogue, .. } => 4 * out + epilogue.flops_per_elem() * out,
    };
    Cost { flops, bytes }
}

/// Total cost of every node in `g`.
pub fn graph_cost(g: &Graph) -> Cost {
    g.ids().map(|id| node_cost(g, id)).fold(Cost::default(), |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn matmul_flops() {
        let mut g = Graph::new();
        let a = g.input("a", [2, 8, 16], DType::F32).unwrap();
        let w = g.weight("w", [32, 16], DType::F32).unwrap();
        let y = g.linear(a, w, None).unwrap();
        let c = node_cost(&g, y);
        assert_eq!(c.flops, 2 * 2 * 8 * 32 * 16);
        assert_eq!(c.bytes, 4 * (2 * 8 * 16 + 32 * 16 + 2 * 8 * 32));
    }
}
