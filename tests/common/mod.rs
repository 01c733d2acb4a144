//! Helpers shared by the integration tests (a module, not a test target of its own).
// Each test target uses only some of these.
#![allow(dead_code)]

use vidrt::eval::run_case as eval_case;
use vidrt::golden::{default_dir, Case};
use vidrt::runtime::Backend;

/// `y = silu(x)` over `n` f32 values: the input node called `x`, the silu node `act`.
pub fn silu_graph(n: usize) -> vidrt::ir::Graph {
    let mut g = vidrt::ir::Graph::new();
    let x = g.input("x", [n], vidrt::ir::DType::F32).expect("input");
    g.nodes[x.index()].name = "x".into();
    let y = g.silu(x).expect("silu");
    g.nodes[y.index()].name = "act".into();
    g.set_output("y", y).expect("output");
    g
}

/// `n` values ramping over [-0.5, 0.5).
pub fn ramp(n: usize) -> vidrt::ir::Tensor {
    vidrt::ir::Tensor::from_f32([n], (0..n).map(|i| i as f32 / n as f32 - 0.5).collect()).expect("tensor")
}

/// Every case of the cross-backend harness on `b` against `reference`: each case the backend
/// supports must pass; unsupported ones are listed and counted, never as passes.
pub fn harness_on(b: &dyn Backend, reference: &dyn Backend, label: &str) {
    use vidrt::harness::{all_cases, run_case, summary, support_table, Outcome};
    eprintln!("{}", support_table(&[b]));
    let mut results = Vec::new();
    for case in all_cases() {
        let r = run_case(&case, b, reference);
        if std::env::var_os("VIDRT_HARNESS_VERBOSE").is_some() || !r.passed() {
            eprintln!("{r}");
        }
        results.push(r);
    }
    let unsupported = results.iter().filter(|r| matches!(r.outcome, Outcome::Unsupported(_))).count();
    eprintln!("harness on {label}: {} ({unsupported} unsupported on {label})", summary(&results));
    let failed: Vec<String> = results.iter().filter(|r| r.failed()).map(|r| r.to_string()).collect();
    assert!(failed.is_empty(), "{} case(s) failed on {label}:\n{}", failed.len(), failed.join("\n"));
    assert!(results.iter().any(|r| r.passed()), "no case ran on {label}");
}

/// Runs golden case folder `name` on `backend` through `vidrt::eval::run_case` and fails on
/// any check that is neither a pass nor one of `vidrt::golden::KNOWN_DEVIATIONS` (those are
/// printed as such, never as passes).
pub fn golden_on(backend: &dyn Backend, name: &str) {
    let Some(dir) = default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let label = backend.name();
    let case = Case::load(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (report, _) = eval_case(&case, backend).unwrap_or_else(|e| panic!("{name} on {label}: {e}"));
    assert!(!report.results.is_empty(), "{name}: no checks ran");
    for r in &report.results {
        eprintln!(
            "{} {name} {}:{} {:?}",
            if r.passed() { "ok  " } else { "FAIL" },
            r.check.file,
            r.check.tensor,
            r.outcome
        );
    }
    let triage = report.triage();
    for k in &triage.known {
        eprintln!("{k}");
    }
    let failures = triage.failed;
    assert!(
        failures.is_empty(),
        "{name} on {label}: {} of {} checks failed:\n{}",
        failures.len(),
        report.results.len(),
        failures.join("\n")
    );
}

/// Runs golden case folder `name` on `backend` (one that stores tensors in bf16 or f16) and requires
/// every float check to land within `rel_l2` (the golden README's advice for bf16: about
/// 1e-2 on single forward passes, test with e.g. 3e-2) and to be finite; integer checks must
/// still match exactly. Returns the largest rel_l2 seen.
pub fn golden_bf16_on(backend: &dyn Backend, name: &str, rel_l2: f64) -> f64 {
    let Some(dir) = default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let case = Case::load(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (report, _) = eval_case(&case, backend).unwrap_or_else(|e| panic!("{name} in bf16: {e}"));
    assert!(!report.results.is_empty(), "{name}: no checks ran");
    let mut worst = 0f64;
    let mut bad = Vec::new();
    for r in &report.results {
        match &r.outcome {
            Ok(c) => {
                eprintln!(
                    "{name} reduced precision {}:{} rel_l2 {:.3e} max_abs {:.3e}",
                    r.check.file, r.check.tensor, c.rel_l2, c.max_abs
                );
                let exact = r.check.rel_l2 == 0.0 && r.check.max_abs == 0.0;
                if c.non_finite || (exact && !r.passed()) || (!exact && c.rel_l2 > rel_l2) {
                    bad.push(format!("{}:{} {c:?}", r.check.file, r.check.tensor));
                }
                worst = worst.max(c.rel_l2);
            }
            Err(e) => bad.push(format!("{}:{} {e}", r.check.file, r.check.tensor)),
        }
    }
    assert!(bad.is_empty(), "{name} in bf16: {} check(s) past rel_l2 {rel_l2}:\n{}", bad.len(), bad.join("\n"));
    worst
}

/// The tiny pipeline at bf16 storage on `backend`: [`reduced_pipeline_is_as_close_to_f32_as_the_cpus`].
pub fn bf16_pipeline_is_as_close_to_f32_as_the_cpus(backend: Box<dyn Backend>) {
    reduced_pipeline_is_as_close_to_f32_as_the_cpus(backend, vidrt::ir::DType::BF16);
}

/// The tiny pipeline at `dtype` (bf16 or f16) storage on `backend` (wrapped in
/// `ReducedPrecision` here) against the CPU in f32, with the CPU's own run at `dtype` as the
/// yardstick.
///
/// The two bf16 paths round in different places (fused epilogues keep f32, kernel summation
/// orders differ), and the sampling loop and the VAE carry those differences to the video, so
/// they differ from each other about as much as each differs from f32. The requirement: the
/// backend's video is no more than 1.5x as far from the f32 video as the CPU's video at the
/// same dtype is, and within the golden README's bf16 advice (3e-2) plus that margin. A wrong
/// kernel lands at O(1).
pub fn reduced_pipeline_is_as_close_to_f32_as_the_cpus(backend: Box<dyn Backend>, dtype: vidrt::ir::DType) {
    use vidrt::pipeline::{GenerateParams, Model, NoProgress, Pipeline};
    use vidrt::runtime::{CpuBackend, ReducedPrecision};
    let label = backend.name();
    let params = GenerateParams {
        seed: 5,
        num_frames: Some(5),
        num_inference_steps: Some(2),
        height: Some(16),
        width: Some(32),
        ..GenerateParams::new("a lantern in the rain")
    };
    let run = |b: Box<dyn Backend>| {
        let m = Model::tiny().unwrap_or_else(|e| panic!("{e}"));
        Pipeline::new(m, b).generate(&params, &mut NoProgress).unwrap_or_else(|e| panic!("{e}")).video
    };
    let bf16 = |inner: Box<dyn Backend>| Box::new(ReducedPrecision { inner, dtype });
    let dev = run(bf16(backend));
    let cpu16 = run(bf16(Box::new(CpuBackend::new())));
    let cpu32 = run(Box::new(CpuBackend::new()));
    let cmp = |a, b| vidrt::golden::compare(a, b).unwrap_or_else(|e| panic!("{e}"));
    let (c, d, e) = (cmp(&dev, &cpu16), cmp(&cpu16, &cpu32), cmp(&dev, &cpu32));
    eprintln!("{dtype} {label} vs {dtype} cpu: rel_l2 {:.3e} max_abs {:.3e}", c.rel_l2, c.max_abs);
    eprintln!("{dtype} cpu vs f32 cpu: rel_l2 {:.3e} max_abs {:.3e}", d.rel_l2, d.max_abs);
    eprintln!("{dtype} {label} vs f32 cpu: rel_l2 {:.3e} max_abs {:.3e}", e.rel_l2, e.max_abs);
    assert!(!c.non_finite && !d.non_finite && !e.non_finite, "{c:?} {d:?} {e:?}");
    assert!(
        e.rel_l2 <= 1.5 * d.rel_l2.max(1e-2) && e.rel_l2 <= 6e-2,
        "{label} {dtype} vs f32 {e:?}, cpu {dtype} vs f32 {d:?}"
    );
}

/// With `check_intermediates`, a run names the first node whose output is not finite, even
/// when the graph's output is: `exp(x)` with exp(100) = inf in f32, then a slice that leaves
/// the inf out (a copy the fusion pass keeps as its own node, so `exp` stays a node of the
/// compiled graph). Without it the same run succeeds, and a finite input gives the same values
/// either way.
pub fn check_intermediates_names_the_first_non_finite_node(b: &dyn Backend) {
    use vidrt::ir::{DType, Graph, Tensor, UnaryOp};
    use vidrt::runtime::{NoWeights, RunOptions, RuntimeError};
    let mut g = Graph::new();
    let x = g.input("x", [4], DType::F32).expect("input");
    let e = g.unary(UnaryOp::Exp, x).expect("exp");
    g.nodes[e.index()].name = "blowup".into();
    let r = g.slice(e, 0, 0, 2).expect("slice");
    g.set_output("out", r).expect("output");
    let feeds = || vec![("x", Tensor::from_f32([4], vec![0.0, 1.0, 100.0, -1.0]).expect("tensor"))];
    let mut exe = b.compile(&g, &NoWeights).expect("compiles");
    let plain = exe.run(&feeds()).expect("the output is finite");
    let opts = RunOptions { check_outputs: true, check_intermediates: true, ..RunOptions::default() };
    let err = exe.run_with(&feeds(), &opts).expect_err("the intermediate is not");
    assert!(matches!(&err, RuntimeError::NonFinite { node: 1, index: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("node %1 `blowup` (exp)"), "{err}");
    let finite = || vec![("x", Tensor::from_f32([4], vec![0.0, 1.0, 2.0, -1.0]).expect("tensor"))];
    let one_pass = exe.run(&finite()).expect("runs");
    let checked = exe.run_with(&finite(), &opts).expect("no non-finite value");
    assert_eq!(one_pass[0].1.to_f32_vec(), checked[0].1.to_f32_vec());
    let p = plain[0].1.to_f32_vec();
    assert!(p.len() == 2 && p[0] == 1.0 && (p[1] - 1.0f32.exp()).abs() < 1e-5, "{p:?}");
}

/// One graph with a node of every tunable PTX family: matmul, conv3d and attention, each in
/// bf16 (tensor-core kernels) and f32 (SIMT kernels). Tiny shapes, or with `large` shapes
/// that run every kernel's loops several times: K of 584 (ten 64-wide slices, every stage
/// ring wrapped twice), 300 keys at head dim 128 (past every key-block ring), a causal
/// 3×3×3 conv over 16 channels at width 16.
pub fn every_family_graph(large: bool) -> vidrt::ir::Graph {
    use vidrt::ir::{DType, Graph};
    let (m, n, k) = if large { (200, 136, 584) } else { (12, 8, 16) };
    // The large conv's output width (16) takes conv3d_mma's gather by rows of 8 positions.
    let (c, kt, t, h, wd) = if large { (16, 3, 3, 10, 16) } else { (8, 1, 2, 4, 4) };
    let (sq, skv, heads, d) = if large { (300, 300, 2, 128) } else { (5, 7, 1, 16) };
    let mut g = Graph::new();
    for (tag, dtype) in [("h", DType::BF16), ("f", DType::F32)] {
        let a = g.input(&format!("a{tag}"), [m, k], dtype).unwrap();
        let w = g.input(&format!("w{tag}"), [n, k], dtype).unwrap();
        let y = g.linear(a, w, None).unwrap();
        g.set_output(format!("mm{tag}"), y).unwrap();
        let x = g.input(&format!("x{tag}"), [1, c, t, h, wd], dtype).unwrap();
        let kern = g.input(&format!("k{tag}"), [c, c, kt, 3, 3], dtype).unwrap();
        let y = g.conv3d(x, kern, None, [1; 3], [[kt - 1, 0], [1, 1], [1, 1]]).unwrap();
        g.set_output(format!("conv{tag}"), y).unwrap();
        let q = g.input(&format!("q{tag}"), [1, sq, heads, d], dtype).unwrap();
        let kv = g.input(&format!("kv{tag}"), [1, skv, heads, d], dtype).unwrap();
        let o = g.attention(q, kv, kv, 1.0 / (d as f64).sqrt(), None, None).unwrap();
        g.set_output(format!("att{tag}"), o).unwrap();
    }
    g
}

/// Every candidate point of every tunable problem of `g` on `b` (each problem's node alone,
/// compiled with its family forced to the point) against the CPU at rel_l2 `tol`: what a
/// tuner would time, checked for correctness first. Returns the number of (problem, point)
/// pairs checked; fails listing every pair that did not compile, run or match.
pub fn every_candidate_matches_the_cpu(b: &dyn vidrt::runtime::tune::Tunable, g: &vidrt::ir::Graph, tol: f64) -> usize {
    let cpu = vidrt::runtime::CpuBackend::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (pi, p) in b.problems(g).iter().enumerate() {
        let one = vidrt::tune::isolate(g, p.node).expect("isolate");
        let ins = vidrt::tune::seeded_inputs(&one, 11 + pi as u64);
        let refs: Vec<(&str, vidrt::ir::Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let want = cpu.compile(&one, &vidrt::runtime::NoWeights).expect("cpu").run(&refs).expect("cpu run");
        eprintln!("{}: {} candidates", p.key.family, p.candidates.len());
        for c in &p.candidates {
            checked += 1;
            let got =
                b.forcing(&p.key.family, c).compile(&one, &vidrt::runtime::NoWeights).and_then(|mut e| e.run(&refs));
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{} {c}: {e}", p.key.family));
                    continue;
                }
            };
            for ((name, a), (_, w)) in got.iter().zip(&want) {
                match vidrt::golden::compare(a, w) {
                    Ok(cmp) if cmp.rel_l2 <= tol && cmp.rel_l2.is_finite() => {}
                    other => failures.push(format!("{} {c}: {name}: {other:?}", p.key.family)),
                }
            }
        }
    }
    eprintln!("{checked} tuning candidates checked against the CPU on {}, {} failed", b.describe(), failures.len());
    assert!(checked > 0, "no tunable problem in the graph");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}
