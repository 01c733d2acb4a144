//! Structural properties of the passes on random graphs (values are checked on the CPU
//! backend by the root package's `tests/passes.rs`): the pipeline verifies, keeps every
//! named input and output with its shape and dtype, is idempotent, and the memory planner
//! never overlaps two live buffers.

mod gen;

use proptest::prelude::*;
use vidrt_ir::passes::{self, plan_memory, PassOptions};
use vidrt_ir::{DType, Graph, Op};

fn instrs() -> impl Strategy<Value = Vec<gen::Instr>> {
    prop::collection::vec((0u8..13, any::<u32>(), any::<u32>()), 1..40)
}

fn signature(g: &Graph) -> (Vec<String>, Vec<(String, String)>) {
    let ins = g.inputs().iter().map(|(n, id)| format!("{n}:{}{}", g.dtype(*id), g.shape(*id))).collect();
    let outs = g.outputs.iter().map(|(n, id)| (n.clone(), format!("{}{}", g.dtype(*id), g.shape(*id)))).collect();
    (ins, outs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn pipeline_keeps_interface_and_is_idempotent(prog in instrs()) {
        let g = gen::build(&prog).unwrap();
        let (once, report) = passes::pipeline(&g).unwrap();
        vidrt_ir::verify(&once).unwrap();
        prop_assert_eq!(signature(&once), signature(&g));
        prop_assert!(once.len() <= g.len());
        let (twice, _) = passes::pipeline(&once).unwrap();
        prop_assert_eq!(vidrt_ir::text::print(&twice), vidrt_ir::text::print(&once));
        prop_assert_eq!(report.passes.first().map(|p| p.name), Some("verify"));
        // Each single pass is idempotent too.
        for (name, pass) in [
            ("fold", passes::fold::fold as fn(&Graph) -> vidrt_ir::Result<Graph>),
            ("cse", passes::cse::cse),
            ("dce", passes::dce::dce),
        ] {
            let a = pass(&g).unwrap();
            let b = pass(&a).unwrap();
            prop_assert_eq!(vidrt_ir::text::print(&a), vidrt_ir::text::print(&b), "{} is not idempotent", name);
        }
        // The text form round-trips fused graphs.
        let back = vidrt_ir::text::parse(&vidrt_ir::text::print(&once)).unwrap();
        prop_assert_eq!(&back.nodes, &once.nodes);
    }

    #[test]
    fn planner_never_overlaps_live_buffers(prog in instrs(), bf16 in any::<bool>()) {
        let g = gen::build(&prog).unwrap();
        let storage = bf16.then_some(DType::BF16);
        for graph in [g.clone(), passes::pipeline(&g).unwrap().0] {
            let plan = plan_memory(&graph, storage);
            plan.check().map_err(TestCaseError::fail)?;
            // Independent check from the graph's own liveness: every value read by a node is
            // still in its buffer, i.e. no later-defined buffer overlapping it was written
            // between its definition and that read.
            let last = graph.last_uses();
            #[allow(clippy::needless_range_loop)] // i indexes the graph, the plan and `last` alike
            for i in 0..graph.len() {
                let Some(bi) = plan.buffer_of[i] else { continue };
                let b = plan.buffers[bi];
                prop_assert!(b.first <= i && last[i].unwrap_or(i) <= b.last, "node {} outlives its buffer {:?}", i, b);
                for (j, m) in graph.nodes.iter().enumerate().skip(i + 1).take(last[i].unwrap_or(i).saturating_sub(i)) {
                    if matches!(m.op, Op::Weight { .. }) || j >= last[i].unwrap_or(i) {
                        continue;
                    }
                    if let Some(bj) = plan.buffer_of[j] {
                        if bj == bi {
                            prop_assert!(matches!(m.op, Op::Reshape { .. }), "node {} is overwritten in place by node {} before its last use {:?}", i, j, last[i]);
                            continue;
                        }
                        let o = plan.buffers[bj];
                        let overlap = o.offset < b.offset + b.size && b.offset < o.offset + o.size;
                        prop_assert!(!(overlap && o.size > 0 && b.size > 0), "node {} (live until {:?}) is overwritten by node {}", i, last[i], j);
                    }
                }
            }
            // First fit never does worse than giving every buffer its own (aligned) range.
            let aligned_sum: u64 = plan.buffers.iter().map(|b| b.size).sum();
            prop_assert!(plan.arena_bytes <= aligned_sum, "arena {} > sum of buffers {}", plan.arena_bytes, aligned_sum);
            prop_assert!(plan.live_peak_bytes <= plan.arena_bytes);
        }
    }

    #[test]
    fn memory_limit_fails_up_front(prog in instrs()) {
        let g = gen::build(&prog).unwrap();
        let (_, report) = passes::pipeline(&g).unwrap();
        let need = report.plan.arena_bytes;
        let opts = PassOptions { memory_limit: Some(need.saturating_sub(1)), ..PassOptions::default() };
        let fits = PassOptions { memory_limit: Some(need), ..PassOptions::default() };
        prop_assert!(need == 0 || passes::pipeline_with(&g, &opts).is_err());
        prop_assert!(passes::pipeline_with(&g, &fits).is_ok());
    }
}

#[test]
fn fusion_finds_the_dit_patterns() {
    // x → layer_norm → modulate → linear → gelu ; q-norm + rope ; gated residual.
    let prog: Vec<gen::Instr> = vec![(5, 0, 0), (7, 1, 0), (6, 2, 0), (7, 3, 1)];
    let g = gen::build(&prog).unwrap();
    let (f, _) = passes::pipeline(&g).unwrap();
    let names: Vec<&str> = f.nodes.iter().map(|n| n.op.name()).collect();
    for want in ["layer_norm_modulate", "matmul_epilogue", "rms_norm_rope"] {
        assert!(names.contains(&want), "{want} missing: {}", vidrt_ir::text::print(&f));
    }
    assert!(!names.contains(&"layer_norm") && !names.contains(&"gelu_tanh"), "{}", vidrt_ir::text::print(&f));
}
