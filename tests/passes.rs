//! Every pass leaves the computed result unchanged on the CPU backend: random graphs (the
//! generator of `ir/tests/gen`) run unoptimized and through the default compile path
//! (fold, CSE, DCE, fusion, plan) must give the same named outputs.

#[path = "../ir/tests/gen/mod.rs"]
mod gen;

use std::collections::HashMap;

use proptest::prelude::*;
use vidrt::ir::{DType, Tensor};
use vidrt::runtime::{Backend, CpuBackend};

fn seeded(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}

fn run(backend: &CpuBackend, g: &vidrt::ir::Graph, seed: u64) -> Vec<(String, Tensor)> {
    let mut w: HashMap<String, Tensor> = HashMap::new();
    w.insert("w".into(), seeded(&[gen::C, gen::C], seed + 1, 0.3));
    w.insert("b".into(), seeded(&[gen::C], seed + 2, 0.5));
    w.insert("g".into(), seeded(&[gen::C], seed + 3, 1.0));
    let mut exe = backend.compile(g, &w).unwrap();
    let x = seeded(&[gen::B, gen::S, gen::C], seed + 4, 1.0);
    let m = seeded(&[gen::B, 1, gen::C], seed + 5, 0.5);
    exe.run(&[("x", x), ("mod", m)]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn passes_keep_values(prog in prop::collection::vec((0u8..13, any::<u32>(), any::<u32>()), 1..40), seed in 0u64..1000) {
        let g = gen::build(&prog).unwrap();
        let want = run(&CpuBackend::unoptimized(), &g, seed);
        let got = run(&CpuBackend::new(), &g, seed);
        prop_assert_eq!(want.len(), got.len());
        for ((nw, tw), (ng, tg)) in want.iter().zip(&got) {
            prop_assert_eq!(nw, ng);
            prop_assert_eq!(tw.shape(), tg.shape());
            prop_assert_eq!(tw.dtype(), tg.dtype());
            let (a, b) = (tw.to_f64_vec(), tg.to_f64_vec());
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            prop_assert!(worst <= 1e-5, "output `{}` differs by {} after the passes", nw, worst);
        }
    }
}

#[test]
fn passes_keep_bf16_values_exactly() {
    // bf16 sections (cast → silu → scale → cast): the fused node rounds where the graph stored.
    let g = gen::build(&[(9, 0, 0), (0, 1, 4), (9, 2, 0), (3, 1, 5)]).unwrap();
    assert_eq!(g.nodes.iter().filter(|n| n.dtype == DType::BF16).count(), 6);
    let (a, b) = (run(&CpuBackend::unoptimized(), &g, 7), run(&CpuBackend::new(), &g, 7));
    assert_eq!(a[0].1.to_f64_vec(), b[0].1.to_f64_vec());
}

#[test]
fn memory_limit_is_checked_before_running() {
    let g = gen::build(&[(7, 0, 1), (5, 1, 0)]).unwrap();
    let err = CpuBackend::new().with_memory_limit(1000).compile(&g, &HashMap::<String, Tensor>::new()).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("out of memory") && msg.contains("arena"), "{msg}");
}
