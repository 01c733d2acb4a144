//! Criterion benches of the CPU reference kernels: matmul, conv3d and attention, each a
//! single-op graph compiled on `CpuBackend`. Throughput is counted in flops from
//! `vidrt_ir::cost`, and each bench prints a `GFLOP/s` line (best and mean per-iteration
//! time over criterion's samples).
//!
//! `cargo bench --bench cpu_kernels -- --quick` runs in a few minutes on 2 cores.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vidrt::ir::{cost, DType, Graph, NodeId, Shape, Tensor};
use vidrt::runtime::{Backend, CpuBackend, Executable, NoWeights, RunOptions};

/// A single-op bench: the graph, its seeded inputs, and the op's flops.
struct Case {
    name: String,
    exe: Box<dyn Executable>,
    inputs: Vec<(String, Tensor)>,
    flops: u64,
}

/// Seeded values in [-1, 1) (a 64-bit LCG; never zeros).
fn data(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("shape matches data")
}

/// Builds a one-op graph from `inputs` with `op`, compiles it on the CPU, and seeds inputs.
fn case(name: &str, inputs: &[(&str, &[usize])], op: impl FnOnce(&mut Graph, &[NodeId]) -> NodeId) -> Case {
    let mut g = Graph::new();
    let ids: Vec<NodeId> =
        inputs.iter().map(|(n, s)| g.input(n, Shape::from(*s), DType::F32).expect("valid input")).collect();
    let y = op(&mut g, &ids);
    g.set_output("y", y).expect("fresh output");
    let flops = cost::node_cost(&g, y).flops;
    let exe = CpuBackend::new().compile(&g, &NoWeights).expect("compiles on the CPU");
    let inputs = inputs.iter().enumerate().map(|(i, (n, s))| (n.to_string(), data(s, i as u64 + 1))).collect();
    Case { name: name.to_string(), exe, inputs, flops }
}

fn run(c: &mut Criterion, group: &str, cases: Vec<Case>) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let mut lines = Vec::new();
    for mut case in cases {
        g.throughput(Throughput::Elements(case.flops));
        let feeds: Vec<(&str, Tensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let opts = RunOptions::default();
        let (mut best, mut total, mut count) = (f64::INFINITY, 0.0f64, 0u64);
        g.bench_function(BenchmarkId::from_parameter(&case.name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let out = case.exe.run_with(&feeds, &opts).expect("runs");
                    std::hint::black_box(out);
                }
                let d = start.elapsed();
                let per = d.as_secs_f64() / iters.max(1) as f64;
                best = best.min(per);
                total += d.as_secs_f64();
                count += iters;
                d
            })
        });
        let mean = total / count.max(1) as f64;
        lines.push(format!(
            "{group}/{}: {:.3} GFLOP, best {:.2} ms = {:.1} GFLOP/s, mean {:.2} ms = {:.1} GFLOP/s",
            case.name,
            case.flops as f64 * 1e-9,
            best * 1e3,
            case.flops as f64 / best * 1e-9,
            mean * 1e3,
            case.flops as f64 / mean * 1e-9
        ));
    }
    g.finish();
    for l in lines {
        println!("{l}");
    }
}

fn matmul(c: &mut Criterion) {
    let mm = |m: usize, k: usize, n: usize| {
        case(&format!("{m}x{k}x{n}"), &[("a", &[m, k]), ("b", &[k, n])], |g, x| {
            g.matmul(x[0], x[1], false, false).expect("valid matmul")
        })
    };
    // A DiT linear: 1560 tokens (a 480×832 / 8 / 2 latent frame), 1536 wide, weight [out, in].
    let linear = case("dit_linear_1560x1536x1536", &[("x", &[1560, 1536]), ("w", &[1536, 1536])], |g, x| {
        g.linear(x[0], x[1], None).expect("valid linear")
    });
    run(c, "matmul", vec![mm(512, 512, 512), mm(1536, 1536, 256), linear]);
}

fn conv3d(c: &mut Criterion) {
    // A VAE-shaped causal 3×3×3 conv (96 channels, 4 frames of 32×32) and a 1×1×1 conv.
    let causal = case("causal333_96c_4x32x32", &[("x", &[1, 96, 4, 32, 32]), ("w", &[96, 96, 3, 3, 3])], |g, x| {
        g.conv3d(x[0], x[1], None, [1, 1, 1], [[2, 0], [1, 1], [1, 1]]).expect("valid conv")
    });
    let point =
        case("pointwise_384to192_4x32x32", &[("x", &[1, 384, 4, 32, 32]), ("w", &[192, 384, 1, 1, 1])], |g, x| {
            g.conv3d(x[0], x[1], None, [1, 1, 1], [[0, 0]; 3]).expect("valid conv")
        });
    run(c, "conv3d", vec![causal, point]);
}

fn attention(c: &mut Criterion) {
    let (s, h, d) = (1560, 12, 128);
    let scale = 1.0 / (d as f64).sqrt();
    let att = |name: &str, sk: usize| {
        case(name, &[("q", &[1, s, h, d]), ("k", &[1, sk, h, d]), ("v", &[1, sk, h, d])], |g, x| {
            g.attention(x[0], x[1], x[2], scale, None, None).expect("valid attention")
        })
    };
    run(c, "attention", vec![att("self_1560_h12_d128", s), att("cross_1560x512_h12_d128", 512)]);
}

criterion_group!(benches, matmul, conv3d, attention);
criterion_main!(benches);
