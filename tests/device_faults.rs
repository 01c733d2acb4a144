//! Device faults and numerics checks, on the backends that run without a GPU: out of device
//! memory is a typed error naming the node and the backend compiles and runs a new executable
//! afterwards (the PTX simulator with a memory capacity); `check_outputs` and
//! `check_intermediates` name the first node that produced NaN or infinity (CPU). The wgpu
//! versions are in `tests/wgpu_backend.rs`, the CUDA driver-error mapping is a unit test of
//! `runtime/src/cuda/mod.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use vidrt::ir::{DType, Graph, Tensor, UnaryOp};
use vidrt::runtime::{Backend, CheckEveryNode, CpuBackend, NoWeights, RunOptions, RuntimeError, SimBackend};

mod common;

use common::{ramp, silu_graph};

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[test]
fn out_of_device_memory_is_typed_and_the_backend_recovers() {
    // 3000 bytes of device memory: the 2048-byte input fits, the 2048-byte output does not.
    let sim = SimBackend::without_tuning().with_memory_limit(3000);
    let mut big = sim.compile(&silu_graph(512), &NoWeights).expect("compiles");
    let e = big.run(&[("x", ramp(512))]).expect_err("out of memory");
    match &e {
        RuntimeError::OutOfMemory { what, needed, available } => {
            assert_eq!((*needed, *available), (2048, 3000 - 2048), "{e}");
            assert!(what.contains("node %1 `act`") && what.contains("silu"), "{e}");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert!(e.to_string().contains("out of memory"), "{e}");

    // The same backend compiles and runs a graph that fits, with the right values.
    let mut small = sim.compile(&silu_graph(64), &NoWeights).expect("compiles after the OOM");
    let out = small.run(&[("x", ramp(64))]).expect("runs after the OOM");
    let want: Vec<f32> = ramp(64).to_f32_vec().into_iter().map(silu).collect();
    let got = out[0].1.to_f32_vec();
    assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() <= 1e-5), "{got:?}");
    // And without the limit a fresh backend compiles and runs a larger graph (the refused
    // compile left no state behind).
    let mut again = SimBackend::without_tuning().compile(&silu_graph(512), &NoWeights).expect("compiles");
    assert_eq!(again.run(&[("x", ramp(512))]).expect("runs")[0].1.dims(), &[512]);
    let _ = big;
}

/// `out = recip(exp(x))`, the exp node called `blowup`: exp(100) is infinite in f32, its
/// reciprocal 0 is finite, so only the intermediate is non-finite.
fn blowup_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", [4], DType::F32).unwrap();
    let e = g.unary(UnaryOp::Exp, x).unwrap();
    g.nodes[e.index()].name = "blowup".into();
    let r = g.unary(UnaryOp::Recip, e).unwrap();
    g.nodes[r.index()].name = "inverse".into();
    g.set_output("out", r).unwrap();
    g.set_output("exp", e).unwrap();
    g
}

fn only_inverse(mut g: Graph) -> Graph {
    g.outputs.retain(|(n, _)| n == "out");
    g
}

fn inputs() -> Vec<(&'static str, Tensor)> {
    vec![("x", Tensor::from_f32([4], vec![0.0, 1.0, 100.0, -1.0]).unwrap())]
}

#[test]
fn non_finite_values_name_the_first_node_on_the_cpu() {
    let cpu = CpuBackend::unoptimized();
    // An output holding infinity: `run` checks outputs by default.
    let e = cpu.compile(&blowup_graph(), &NoWeights).unwrap().run(&inputs()).expect_err("non-finite output");
    assert!(matches!(&e, RuntimeError::NonFinite { node: 1, index: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("node %1 `blowup` (exp)"), "{e}");
    // Only the intermediate is infinite: outputs pass, the debug mode names the node.
    let g = only_inverse(blowup_graph());
    let mut exe = cpu.compile(&g, &NoWeights).unwrap();
    let out = exe.run(&inputs()).expect("finite outputs");
    assert_eq!(out[0].1.to_f32_vec()[2], 0.0);
    let opts = RunOptions { check_outputs: true, check_intermediates: true, ..RunOptions::default() };
    let e = exe.run_with(&inputs(), &opts).expect_err("non-finite intermediate");
    assert!(matches!(&e, RuntimeError::NonFinite { node: 1, index: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("`blowup`"), "{e}");
    // With every check off, the run returns the values as they are.
    let out = exe.run_with(&inputs(), &RunOptions::default()).expect("unchecked");
    assert_eq!(out.len(), 1);
}

#[test]
fn the_debug_backend_checks_every_node_whatever_the_options() {
    let g = only_inverse(blowup_graph());
    let debug = CheckEveryNode(Box::new(CpuBackend::unoptimized()));
    assert_eq!(debug.name(), "cpu");
    let mut exe = debug.compile(&g, &NoWeights).unwrap();
    for opts in [RunOptions::default(), RunOptions { check_outputs: true, ..RunOptions::default() }] {
        let e = exe.run_with(&inputs(), &opts).expect_err("non-finite intermediate");
        assert!(e.to_string().contains("node %1 `blowup` (exp)"), "{e}");
    }
    let fine = vec![("x", Tensor::from_f32([4], vec![0.0, 1.0, 2.0, -1.0]).unwrap())];
    assert_eq!(exe.run(&fine).expect("finite everywhere")[0].1.dims(), &[4]);
}
