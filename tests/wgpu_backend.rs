//! The wgpu backend against the CPU reference: every harness case, and every golden case
//! folder through `vidrt::eval::run_case`.
//!
//! Without a wgpu adapter these tests fail (a check that did not run is never a pass).
//! `scripts/test.sh` installs Mesa's lavapipe (`scripts/install-lavapipe.sh`) so they run for
//! real, and leaves them out of the run (counted as skipped) only where it could not install
//! it outside CI.
#![cfg(feature = "wgpu")]

mod common;

use vidrt::harness::{all_cases, run_case};
use vidrt::runtime::wgpu::WgpuBackend;
use vidrt::runtime::{Backend, CpuBackend};

/// The backend, or a failure naming the missing adapter.
fn backend(test: &str) -> WgpuBackend {
    match WgpuBackend::new() {
        Ok(b) => {
            eprintln!("{test}: wgpu adapter {}", b.adapter_name());
            b
        }
        Err(e) => panic!("{test}: no wgpu adapter ({e}); run scripts/install-lavapipe.sh (scripts/test.sh does)"),
    }
}

#[test]
fn no_panic_and_a_typed_result_opening_the_backend() {
    // Either an adapter or a typed error; never a panic.
    match WgpuBackend::new() {
        Ok(b) => assert!(!b.adapter_name().is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Every harness case that the backend says it supports must pass; the unsupported ones are
/// listed (they are reported, never counted as passes).
#[test]
fn harness_on_wgpu() {
    let b = backend("harness_on_wgpu");
    common::harness_on(&b, &CpuBackend::new(), "wgpu");
}

fn golden(name: &str) {
    let b = backend(name);
    common::golden_on(&b, name);
}

#[test]
fn golden_ops_on_wgpu() {
    golden("ops");
}

#[test]
fn golden_dit_on_wgpu() {
    golden("dit");
}

#[test]
fn golden_vae_on_wgpu() {
    golden("vae");
}

#[test]
fn golden_text_encoder_on_wgpu() {
    golden("text_encoder");
}

#[test]
fn golden_scheduler_on_wgpu() {
    golden("scheduler");
}

#[test]
fn golden_pipeline_on_wgpu() {
    golden("pipeline");
}

/// The whole tiny pipeline on wgpu matches the CPU path (same seed, same noise), and the CLI
/// writes a video with `--backend wgpu`.
#[test]
fn generate_on_wgpu_matches_cpu() {
    use vidrt::pipeline::{GenerateParams, Model, NoProgress, Pipeline};
    let b = backend("generate_on_wgpu_matches_cpu");
    let params = GenerateParams {
        seed: 11,
        num_frames: Some(5),
        num_inference_steps: Some(2),
        height: Some(32),
        width: Some(48),
        ..GenerateParams::new("a lantern in the rain")
    };
    let gpu = Pipeline::new(Model::tiny().unwrap(), Box::new(b)).generate(&params, &mut NoProgress).unwrap();
    let cpu =
        Pipeline::new(Model::tiny().unwrap(), Box::new(CpuBackend::new())).generate(&params, &mut NoProgress).unwrap();
    assert_eq!(gpu.video.shape(), cpu.video.shape());
    let c = vidrt::golden::compare(&gpu.video, &cpu.video).unwrap();
    eprintln!("generate_on_wgpu_matches_cpu: rel_l2 {:.3e} max_abs {:.3e}", c.rel_l2, c.max_abs);
    assert!(!c.non_finite && c.rel_l2 <= 1e-4 && c.max_abs <= 1e-3, "{c:?}");

    let dir = std::env::temp_dir().join(format!("vidrt-wgpu-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("w.gif");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["generate", "--backend", "wgpu", "--frames", "5", "--steps", "2", "--height", "32", "--width", "48"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    assert_eq!(&std::fs::read(&out).unwrap()[..6], b"GIF89a", "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vidrt tune` end to end on the adapter: it tunes, a second run re-tunes nothing, an edited
/// kernel (a database made from other kernel text) is tuned again, the runtime compiles with
/// the winners, a winner that cannot run here is ignored, and a corrupt database does not
/// fail a run.
#[test]
fn tune_end_to_end() {
    use vidrt::runtime::tune::TuneDb;
    let b = backend("tune_end_to_end");
    let dir = std::env::temp_dir().join(format!("vidrt-tune-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = dir.join("db.json");
    let tune = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
            .args(["tune", "--model", "tiny", "--height", "32", "--width", "32", "--frames", "5"])
            .args(["--component", "dit", "--repeats", "1", "--warmup", "0", "--backend", "wgpu"])
            .arg("--tune-db")
            .arg(&db)
            .output()
            .unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{log}");
        let line = log.lines().find(|l| l.starts_with("tuned ")).unwrap_or_else(|| panic!("{log}")).to_string();
        let nums: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
        (nums[0], nums[1], line)
    };
    let (tuned, cached, line) = tune();
    assert!(tuned > 0 && cached == 0, "{line}");
    let (again, cached2, line) = tune();
    assert_eq!((again, cached2), (0, tuned), "a second run re-tunes nothing: {line}");

    // The runtime uses the winners: every tunable node compiles with one.
    let dev = b.device_info();
    let tuned_b = b.with_db(Some(TuneDb::open(&db, dev.clone())));
    assert!(tuned_b.tuning_warnings().is_empty(), "{:?}", tuned_b.tuning_warnings());
    let graphs = vidrt::tune::pipeline_graphs("tiny", 32, 32, 5, true).unwrap();
    let dit = &graphs.iter().find(|(n, _)| n == "DiT").unwrap().1;
    let problems = tuned_b.problems(dit);
    assert_eq!(problems.len(), tuned);
    for p in &problems {
        let one = vidrt::tune::isolate(dit, p.node).unwrap();
        tuned_b.compile(&one, &vidrt::runtime::NoWeights).unwrap();
    }
    assert_eq!(tuned_b.tuning_hits(), (problems.len(), 0));

    // A winner that cannot run here is ignored (heuristic), and the result is still right.
    let text = std::fs::read_to_string(&db).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for e in json["entries"].as_array_mut().unwrap() {
        e["winner"] = "bm=4096,bn=4096,bk=64,tm=1,tn=1".into();
    }
    let bad = dir.join("bad-winner.json");
    std::fs::write(&bad, serde_json::to_string(&json).unwrap()).unwrap();
    let bad_b = b.with_db(Some(TuneDb::open(&bad, dev.clone())));
    let p = &problems[0];
    let one = vidrt::tune::isolate(dit, p.node).unwrap();
    let ins = vidrt::tune::seeded_inputs(&one, 5);
    let refs: Vec<(&str, vidrt::ir::Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let got = bad_b.compile(&one, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    let want = CpuBackend::new().compile(&one, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    let c = vidrt::golden::compare(&got[0].1, &want[0].1).unwrap();
    assert!(c.rel_l2 < 1e-5, "{c:?}");
    assert_eq!(bad_b.tuning_hits(), (0, 1));

    // An edited kernel: entries keyed by another kernel text hash are never served.
    for e in json["entries"].as_array_mut().unwrap() {
        e["key"]["kernel_hash"] = 12345.into();
    }
    std::fs::write(&db, serde_json::to_string(&json).unwrap()).unwrap();
    let (retuned, cached3, line) = tune();
    assert_eq!((retuned, cached3), (tuned, 0), "stale entries are tuned again: {line}");

    // A corrupt database is a warning, never a failure.
    std::fs::write(&db, b"{\"version\": 1, \"entries\": [tru").unwrap();
    let gif = dir.join("c.gif");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["generate", "--backend", "wgpu", "--frames", "5", "--steps", "1", "--height", "32", "--width", "32"])
        .arg("--tune-db")
        .arg(&db)
        .arg("--out")
        .arg(&gif)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    assert!(log.contains("warning: tuning database") && log.contains("corrupt"), "{log}");
    assert!(gif.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// --- Device faults and numerics checks (issue 9) ---

use common::{ramp, silu_graph};

/// Runs `silu_graph(64)` on `b` and compares it with the CPU.
fn silu_matches_cpu(b: &dyn Backend) {
    let g = silu_graph(64);
    let want = CpuBackend::new().compile(&g, &vidrt::runtime::NoWeights).expect("cpu").run(&[("x", ramp(64))]);
    let got = b.compile(&g, &vidrt::runtime::NoWeights).expect("compiles").run(&[("x", ramp(64))]).expect("runs");
    let (w, o) = (want.expect("cpu runs")[0].1.to_f32_vec(), got[0].1.to_f32_vec());
    assert!(w.iter().zip(&o).all(|(a, b)| (a - b).abs() <= 1e-5), "{o:?} vs {w:?}");
}

#[test]
fn a_buffer_past_the_adapter_limits_is_a_typed_error_and_the_next_graph_runs() {
    let b = backend("a_buffer_past_the_adapter_limits_is_a_typed_error_and_the_next_graph_runs");
    // 2^31 f32 values: 8 GiB in one binding, past every adapter's storage binding limit.
    // Refused before anything of that size is allocated, on the host or the device.
    let e = b.compile(&silu_graph(1 << 31), &vidrt::runtime::NoWeights).err().expect("refused");
    match &e {
        vidrt::runtime::RuntimeError::OutOfMemory { what, needed, available } => {
            assert!(what.contains("node %0 `x`"), "{e}");
            assert_eq!(*needed, 8 << 30, "{e}");
            assert!(*available < *needed, "{e}");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    silu_matches_cpu(&b);
}

#[test]
fn check_intermediates_names_the_first_non_finite_node_on_wgpu() {
    let b = backend("check_intermediates_names_the_first_non_finite_node_on_wgpu");
    common::check_intermediates_names_the_first_non_finite_node(&b);
}

#[test]
fn a_lost_device_is_a_typed_error_and_a_new_backend_works() {
    let b = backend("a_lost_device_is_a_typed_error_and_a_new_backend_works");
    use vidrt::runtime::{NoWeights, RuntimeError};
    let mut exe = b.compile(&silu_graph(64), &NoWeights).expect("compiles");
    b.simulate_device_loss();
    let e = exe.run(&[("x", ramp(64))]).expect_err("the device is gone");
    assert!(matches!(e, RuntimeError::DeviceLost(_)), "{e:?}");
    assert!(e.to_string().contains("device lost") && e.to_string().contains("open a new backend"), "{e}");
    let e = b.compile(&silu_graph(64), &NoWeights).err().expect("the device is gone");
    assert!(matches!(e, RuntimeError::DeviceLost(_)), "{e:?}");
    // A new backend opens a new device.
    let fresh = WgpuBackend::without_tuning().expect("a new device");
    silu_matches_cpu(&fresh);
}

/// With timestamp queries, a run reports the kernels' device time (no transfers), and
/// `time_runs` uses it; without them the time is the wall time and says so.
#[test]
fn kernel_time_comes_from_timestamps_where_the_adapter_has_them() {
    let b = backend("kernel_time_comes_from_timestamps_where_the_adapter_has_them");
    let g = silu_graph(1 << 16);
    let mut exe = b.compile(&g, &vidrt::runtime::NoWeights).unwrap();
    let x = ramp(1 << 16);
    exe.run(&[("x", x.clone())]).unwrap();
    let t = exe.last_kernel_time();
    let settings = vidrt::runtime::tune::TimingSettings { warmup: 1, repeats: 3 };
    let timed =
        vidrt::runtime::tune::time_runs(exe.as_mut(), &mut |_| vec![("x".to_string(), x.clone())], settings).unwrap();
    if b.has_kernel_timing() {
        let t = t.expect("an adapter with timestamps reports the kernel time");
        eprintln!("kernel time of a 65536-element silu: {t:?}; median {:.1} us", timed.us);
        assert!(t > std::time::Duration::ZERO && timed.kernel);
    } else {
        // Lavapipe (CI's adapter) has timestamp queries: there this branch must not be taken.
        assert!(!b.adapter_name().contains("llvmpipe"), "lavapipe reports no timestamp queries");
        eprintln!("this adapter has no timestamp queries: wall times only");
        assert!(t.is_none() && !timed.kernel);
    }
}

/// The lane kernels (softmax, RMS and layer norms, reductions, and the fused norm nodes)
/// both ways: the subgroup variant the device's features select, and the plain tree
/// reduction. Lavapipe has subgroups (size 8), so CI runs both for real.
#[test]
fn lane_kernels_with_and_without_subgroups_match_cpu() {
    use vidrt::ir::Op;
    use vidrt::runtime::wgpu::Features;
    let b = backend("lane_kernels_with_and_without_subgroups_match_cpu");
    assert!(
        b.kernel_features().subgroups,
        "adapter {} offers no subgroups: this test checks the subgroup kernels",
        b.adapter_name()
    );
    let plain = b.with_kernel_features(Features::NONE);
    assert!(!plain.kernel_features().subgroups);
    let reference = CpuBackend::new();
    let lane_op = |op: &Op| {
        matches!(
            op,
            Op::Softmax { .. }
                | Op::RmsNorm { .. }
                | Op::LayerNorm { .. }
                | Op::Reduce { .. }
                | Op::LayerNormModulate { .. }
                | Op::RmsNormRope { .. }
                | Op::RmsNormEpilogue { .. }
        )
    };
    let cases: Vec<_> = all_cases().into_iter().filter(|c| lane_op(&c.op)).collect();
    assert!(cases.len() >= 8, "only {} lane cases in the harness", cases.len());
    let mut failed = Vec::new();
    for (what, backend) in [("subgroups", &b), ("tree", &plain)] {
        let mut passed = 0;
        for case in &cases {
            let r = run_case(case, backend, &reference);
            if r.passed() {
                passed += 1;
            } else {
                failed.push(format!("[{what}] {r}"));
            }
        }
        eprintln!("{what}: {passed}/{} lane cases passed", cases.len());
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// f16 tensors live as f16 on an adapter with `shader-f16` (lavapipe has it): the same f16
/// graph (matmul, silu, softmax, a permute copy, a concat) takes about half the device
/// memory of the f32-word storage, and gives the same bits — both paths compute in f32 and
/// round to nearest even at every op's output — and matches the CPU reference.
#[test]
fn f16_tensors_are_stored_as_f16_where_the_adapter_has_shader_f16() {
    use vidrt::ir::{DType, Graph, Tensor};
    use vidrt::runtime::wgpu::Features;
    use vidrt::runtime::NoWeights;
    let b = backend("f16_tensors_are_stored_as_f16_where_the_adapter_has_shader_f16");
    assert!(b.kernel_features().f16, "adapter {} has no shader-f16: this test checks f16 storage", b.adapter_name());
    let words = b.with_kernel_features(Features { f16: false, ..b.kernel_features() });
    let (m, k, n) = (33, 70, 96);
    let mut g = Graph::new();
    let x = g.input("x", [m, k], DType::F16).expect("x");
    let w = g.input("w", [k, n], DType::F16).expect("w");
    let y = g.matmul(x, w, false, false).expect("matmul");
    let s = g.silu(y).expect("silu");
    let p = g.softmax(s, 1).expect("softmax");
    let t = g.permute(p, &[1, 0]).expect("permute");
    let c = g.concat(&[t, t], 1).expect("concat");
    g.set_output("out", c).expect("output");
    let ramp = |len: usize, f: f32| {
        Tensor::from_f32([len], (0..len).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * f).collect())
            .expect("tensor")
            .cast(DType::F16)
    };
    let xs = ramp(m * k, 0.3).reshape([m, k]).expect("x");
    let ws = ramp(k * n, 0.2).reshape([k, n]).expect("w");
    let feeds = [("x", xs), ("w", ws)];
    let mut half = b.compile(&g, &NoWeights).expect("f16 storage compiles");
    let mut full = words.compile(&g, &NoWeights).expect("f32 words compile");
    let (hb, fb) = (half.device_bytes().expect("bytes"), full.device_bytes().expect("bytes"));
    eprintln!("device bytes: f16 storage {hb}, f32 words {fb}");
    assert!(hb * 100 <= fb * 55, "f16 storage holds {hb} bytes, f32 words {fb}: not half");
    let got = half.run(&feeds).expect("f16 run")[0].1.clone();
    let same = full.run(&feeds).expect("f32-word run")[0].1.clone();
    let want = CpuBackend::new().compile(&g, &NoWeights).expect("cpu").run(&feeds).expect("cpu run")[0].1.clone();
    assert_eq!(got.dtype(), DType::F16);
    let bits = |t: &Tensor| t.to_f32_vec().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&got), bits(&same), "f16 storage and f32-word storage differ");
    let (g32, w32) = (got.to_f32_vec(), want.to_f32_vec());
    let worst = g32.iter().zip(&w32).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 2e-3, "max |wgpu - cpu| = {worst}");
    // Odd lengths: the last word holds one half (and the broadcast bias straddles words).
    let mut g = Graph::new();
    let x = g.input("x", [3, 7], DType::F16).expect("x");
    let bias = g.input("bias", [7], DType::F16).expect("bias");
    let y = g.add(vidrt::ir::Op::Binary(vidrt::ir::BinaryOp::Add), &[x, bias]).expect("add");
    g.set_output("y", y).expect("output");
    let feeds = [("x", ramp(21, 0.7).reshape([3, 7]).expect("x")), ("bias", ramp(7, 0.1))];
    let mut half = b.compile(&g, &NoWeights).expect("compiles");
    let got = half.run(&feeds).expect("runs")[0].1.to_f32_vec();
    let want = CpuBackend::new().compile(&g, &NoWeights).expect("cpu").run(&feeds).expect("cpu run")[0].1.to_f32_vec();
    assert_eq!(got, want, "odd-length f16 add");
}

/// The tiny pipeline with every tensor in f16, stored as f16 on the adapter (shader-f16),
/// against the CPU in f32, the CPU's own f16 run as the yardstick.
#[test]
fn generate_in_f16_on_wgpu_is_as_close_to_f32_as_the_cpu_in_f16() {
    let b = backend("generate_in_f16_on_wgpu_is_as_close_to_f32_as_the_cpu_in_f16");
    assert!(b.kernel_features().f16, "adapter {} has no shader-f16: this test checks f16 storage", b.adapter_name());
    common::reduced_pipeline_is_as_close_to_f32_as_the_cpus(Box::new(b), vidrt::ir::DType::F16);
}

/// Single forward passes in f16 storage against the f32 golden references (the golden
/// README's bf16 advice, 3e-2, as the bound; f16 has three more mantissa bits).
#[test]
fn golden_dit_and_text_encoder_in_f16_on_wgpu() {
    let b = backend("golden_dit_and_text_encoder_in_f16_on_wgpu");
    assert!(b.kernel_features().f16, "adapter {} has no shader-f16: this test checks f16 storage", b.adapter_name());
    let f16 = vidrt::runtime::ReducedPrecision { inner: Box::new(b), dtype: vidrt::ir::DType::F16 };
    for name in ["dit", "text_encoder"] {
        let worst = common::golden_bf16_on(&f16, name, 3e-2);
        eprintln!("{name} in f16 on wgpu: worst rel_l2 {worst:.3e}");
    }
}

// --- Work past one storage binding (issue 7) ---

/// Every harness case compiled with a binding limit below its largest tensor: its nodes are
/// computed in chunks that bind windows of their buffers (no binding exceeds the limit, the
/// planner refuses any that would), and the outputs are the same bits as an unsplit run. Ops
/// that cannot split are refused with a typed error saying why; the ops that must split are
/// listed below.
#[test]
fn nodes_past_the_binding_limit_run_in_chunks_with_the_same_bits() {
    use std::collections::BTreeSet;
    use vidrt::runtime::RuntimeError;
    let b = backend("nodes_past_the_binding_limit_run_in_chunks_with_the_same_bits");
    eprintln!("adapter binding limit: {} bytes", b.binding_limit());
    let mut split = BTreeSet::new();
    let mut refused = Vec::new();
    for case in all_cases() {
        if !matches!(b.support(&case.op, case.dtype), vidrt::runtime::Support::Yes) {
            continue;
        }
        let built = case.build().expect("builds");
        let g = &built.fused;
        let largest = g.nodes.iter().map(|n| n.shape.numel() as u64 * 4).max().unwrap_or(4);
        // Limits below the largest tensor, tightest first; the first that splits is checked.
        let limits: Vec<u64> = [largest / 2, largest * 3 / 4, largest - 4]
            .into_iter()
            .map(|l| l / 4 * 4)
            .filter(|&l| l >= 64 && l < largest)
            .collect();
        if limits.is_empty() {
            continue;
        }
        let feeds: Vec<(&str, vidrt::ir::Tensor)> = built.inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let want = b.compile(g, &built.weights).expect("compiles").run(&feeds).expect("runs");
        let mut why = String::new();
        for &limit in &limits {
            let before = b.split_nodes();
            match b.with_binding_limit(limit).compile(g, &built.weights) {
                Ok(mut exe) => {
                    let got = exe.run(&feeds).unwrap_or_else(|e| panic!("{}: split run: {e}", case.name));
                    for ((n, w), (_, o)) in want.iter().zip(&got) {
                        let (w, o) = (w.to_f32_vec(), o.to_f32_vec());
                        let same = w.len() == o.len() && w.iter().zip(&o).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{}: output {n} differs when split at {limit} bytes", case.name);
                    }
                    // (A graph whose large tensors are only leaves binds nothing large.)
                    if b.split_nodes() > before {
                        split.insert(case.op.name());
                    }
                    why.clear();
                    break;
                }
                Err(RuntimeError::OutOfMemory { what, needed, available }) => {
                    assert!(what.contains("cannot be split"), "{}: {what}", case.name);
                    assert!(needed > available && available == limit, "{}: {what}", case.name);
                    why = format!("{}: {what}", case.name);
                }
                Err(e) => panic!("{}: {e}", case.name),
            }
        }
        if !why.is_empty() {
            refused.push(why);
        }
    }
    eprintln!("split: {split:?}\nrefused ({}):\n{}", refused.len(), refused.join("\n"));
    // (Elementwise ops are named by their function: `exp` and `add` stand for them.)
    let must = [
        "exp",
        "add",
        "fused",
        "modulate",
        "matmul",
        "matmul_epilogue",
        "attention",
        "softmax",
        "rms_norm",
        "layer_norm",
        "layer_norm_modulate",
        "rope",
        "rms_norm_rope",
        "slice",
        "concat",
        "permute",
        "upsample",
    ];
    let missing: Vec<&&str> = must.iter().filter(|m| !split.contains(**m)).collect();
    assert!(missing.is_empty(), "these ops never ran split: {missing:?}");
}

/// Causal conv3d split by batch (with bias), and by output channel: the harness's conv3d
/// cases are too small for the alignment. Same bits as unsplit, and the CPU's values.
#[test]
fn conv3d_past_the_binding_limit_runs_per_batch_and_per_output_channel() {
    use std::collections::HashMap;
    use vidrt::ir::{DType, Graph};
    let b = backend("conv3d_past_the_binding_limit_runs_per_batch_and_per_output_channel");
    let mut g = Graph::new();
    let x = g.input("x", [2, 8, 3, 8, 8], DType::F32).expect("x");
    let w = g.weight("w", [4, 8, 3, 3, 3], DType::F32).expect("w");
    let bias = g.weight("b", [4], DType::F32).expect("b");
    let y = g.conv3d(x, w, Some(bias), [1, 1, 1], [[2, 0], [1, 1], [1, 1]]).expect("conv");
    g.set_output("y", y).expect("out");
    let weights: HashMap<String, vidrt::ir::Tensor> =
        [("w".to_string(), ramp(4 * 8 * 27).reshape([4, 8, 3, 3, 3]).expect("w")), ("b".to_string(), ramp(4))].into();
    let feeds = [("x", ramp(2 * 8 * 3 * 64).reshape([2, 8, 3, 8, 8]).expect("x"))];
    let run =
        |be: &dyn Backend| be.compile(&g, &weights).expect("compiles").run(&feeds).expect("runs")[0].1.to_f32_vec();
    // One batch of x (6 KiB) per binding.
    let small = b.with_binding_limit(8 * 3 * 64 * 4);
    let (cpu, whole, split) = (run(&CpuBackend::new()), run(&b), run(&small));
    assert!(small.split_nodes() > 0, "nothing split");
    assert_eq!(
        whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        split.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(cpu.iter().zip(&split).all(|(a, b)| (a - b).abs() <= 1e-5), "{split:?} vs {cpu:?}");
    // One batch, split by output channel: x whole, the weight's rows in windows.
    let mut g = Graph::new();
    let x = g.input("x", [1, 8, 3, 8, 8], DType::F32).expect("x");
    let w = g.weight("w", [16, 8, 3, 3, 3], DType::F32).expect("w");
    let y = g.conv3d(x, w, None, [1, 1, 1], [[2, 0], [1, 1], [1, 1]]).expect("conv");
    g.set_output("y", y).expect("out");
    let weights: HashMap<String, vidrt::ir::Tensor> =
        [("w".to_string(), ramp(16 * 8 * 27).reshape([16, 8, 3, 3, 3]).expect("w"))].into();
    let feeds = [("x", ramp(8 * 3 * 64).reshape([1, 8, 3, 8, 8]).expect("x"))];
    let run =
        |be: &dyn Backend| be.compile(&g, &weights).expect("compiles").run(&feeds).expect("runs")[0].1.to_f32_vec();
    // x (6 KiB) fits; the output (12 KiB) and the weight (13.5 KiB) do not.
    let small = b.with_binding_limit(8 << 10);
    let before = small.split_nodes();
    let (cpu, whole, split) = (run(&CpuBackend::new()), run(&b), run(&small));
    assert!(small.split_nodes() > before, "nothing split");
    assert_eq!(
        whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        split.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(cpu.iter().zip(&split).all(|(a, b)| (a - b).abs() <= 1e-5), "{split:?} vs {cpu:?}");
}

/// The tiny DiT golden case with every binding at most 128 KiB (its cross-attention keys per batch): its
/// larger activations run in chunks, and it passes at the same tolerances.
#[test]
fn golden_dit_on_wgpu_past_a_small_binding_limit() {
    let b = backend("golden_dit_on_wgpu_past_a_small_binding_limit").with_binding_limit(128 << 10);
    common::golden_on(&b, "dit");
    assert!(b.split_nodes() > 0, "no node of the DiT was split at 128 KiB");
    eprintln!("{} nodes split in f32", b.split_nodes());
    // In f16 storage (half the bytes) at 64 KiB: windows of halves; the same error as unsplit.
    assert!(b.kernel_features().f16, "adapter {} has no shader-f16: this part checks f16 windows", b.adapter_name());
    let f16 = |b: WgpuBackend| vidrt::runtime::ReducedPrecision { inner: Box::new(b), dtype: vidrt::ir::DType::F16 };
    let small = b.with_binding_limit(64 << 10);
    let before = small.split_nodes();
    let split = common::golden_bf16_on(&f16(small.clone()), "dit", 3e-2);
    assert!(small.split_nodes() > before, "no node of the f16 DiT was split at 64 KiB");
    let whole = common::golden_bf16_on(&f16(backend("unsplit")), "dit", 3e-2);
    assert_eq!(split, whole, "the f16 DiT's error differs when split");
}

/// A conv3d whose implicit GEMM has more column tiles (output positions) than one grid
/// dimension takes (65535): the tiles continue in z. 1×1×1 with one output channel, so the
/// 16-column tile of the heuristic gives 2^16 + 4 tiles; against the CPU.
#[test]
fn a_conv3d_past_65535_column_tiles_folds_its_grid() {
    use std::collections::HashMap;
    use vidrt::ir::{DType, Graph};
    // No tuning database: the heuristic's 16-column tile is what this shape needs.
    let b = backend("a_conv3d_past_65535_column_tiles_folds_its_grid").with_db(None);
    let (h, w) = (1024, 1025);
    let mut g = Graph::new();
    let x = g.input("x", [1, 1, 1, h, w], DType::F32).expect("x");
    let wt = g.weight("w", [1, 1, 1, 1, 1], DType::F32).expect("w");
    let y = g.conv3d(x, wt, None, [1, 1, 1], [[0, 0], [0, 0], [0, 0]]).expect("conv");
    g.set_output("y", y).expect("out");
    let weights: HashMap<String, vidrt::ir::Tensor> =
        [("w".to_string(), vidrt::ir::Tensor::from_f32([1, 1, 1, 1, 1], vec![-1.5]).expect("w"))].into();
    let feeds = [("x", ramp(h * w).reshape([1, 1, 1, h, w]).expect("x"))];
    let run =
        |be: &dyn Backend| be.compile(&g, &weights).expect("compiles").run(&feeds).expect("runs")[0].1.to_f32_vec();
    let (cpu, got) = (run(&CpuBackend::new()), run(&b));
    assert_eq!(cpu.len(), got.len());
    let worst = cpu.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "max |wgpu - cpu| = {worst}");
}

/// Wan2.1-T2V-1.3B at 832×480×81 within 128 MiB storage bindings (lavapipe's) and 4 GiB
/// buffers, planned without a device: the DiT with classifier-free guidance as one batch of
/// 2 (32,760 tokens; f32, bf16 in f32 words, f16 storage), a steady VAE decoder chunk and
/// the umT5-XXL text encoder at 512 tokens (its f32 embedding table is 4.2 GB). Every node
/// fits or splits. (WebGPU's default 256 MiB buffers are too small for the DiT's FFN.)
#[test]
fn wan_1_3b_at_832x480x81_plans_within_128_mib_bindings() {
    use vidrt::graph::umt5::{build_umt5, Umt5Options};
    use vidrt::graph::wan_dit::{build_dit, DitOptions, DitShape};
    use vidrt::graph::wan_vae::{build_decoder_chunk, ChunkKind, ChunkOptions};
    use vidrt::ir::{passes::reduce_precision, DType};
    use vidrt::runtime::wgpu::{plan_bindings, Features};
    let cfg = vidrt::graph::config::ModelConfig::wan21_t2v_1_3b();
    let (limit, align) = (128 << 20, 256);
    let shape = DitShape { batch: 2, frames: 21, height: 60, width: 104, text_len: 512 };
    let dit = build_dit(&cfg.dit, &shape, &DitOptions::default()).expect("dit");
    let vae = build_decoder_chunk(&cfg.vae, ChunkKind::Steady, &ChunkOptions::new(1, 60, 104)).expect("vae").graph;
    let text = build_umt5(&cfg.text, 1, 512, &Umt5Options::default()).expect("umt5");
    for (name, g) in [("dit", dit), ("vae decoder chunk", vae), ("text encoder", text)] {
        for (dtype, f16) in [(DType::F32, false), (DType::BF16, false), (DType::F16, true)] {
            let g = if dtype == DType::F32 { g.clone() } else { reduce_precision(&g, dtype).expect("precision") };
            let f = Features { f16, subgroups: false };
            let split =
                plan_bindings(&g, limit, align, 4 << 30, f).unwrap_or_else(|e| panic!("{name} in {dtype}: {e}"));
            eprintln!("{name} in {dtype}: {split} nodes split");
            assert!(split > 0, "{name} in {dtype}: nothing past 128 MiB?");
        }
    }
}

/// An embedding gather from a table larger than one binding (umT5-XXL's is 2 GiB in f16):
/// the table is read in windows of rows, each launch writing the ids that fall in it.
#[test]
fn a_gather_from_a_table_past_the_binding_limit_reads_it_in_windows() {
    use std::collections::HashMap;
    use vidrt::ir::{DType, Graph, Op, Tensor};
    let b = backend("a_gather_from_a_table_past_the_binding_limit_reads_it_in_windows");
    let (v, d) = (1000, 16);
    let mut g = Graph::new();
    let table = g.weight("table", [v, d], DType::F32).expect("table");
    let ids = g.input("ids", [3, 7], DType::I64).expect("ids");
    let y = g.add(Op::Gather, &[table, ids]).expect("gather");
    g.set_output("y", y).expect("out");
    let weights: HashMap<String, Tensor> = [("table".to_string(), ramp(v * d).reshape([v, d]).expect("t"))].into();
    // Ids in every window, the first and last rows among them.
    let id: Vec<i64> = (0..19).map(|k| (k * 389 + 7) % v as i64).chain([0, 999]).collect();
    let feeds = [("ids", Tensor::new(vidrt::ir::Shape(vec![3, 7]), vidrt::ir::TensorData::I64(id)).expect("ids"))];
    let run =
        |be: &dyn Backend| be.compile(&g, &weights).expect("compiles").run(&feeds).expect("runs")[0].1.to_f32_vec();
    // 64 000 bytes of table in windows of at most 16 KiB.
    let small = b.with_binding_limit(16 << 10);
    let before = small.split_nodes();
    let (cpu, split) = (run(&CpuBackend::new()), run(&small));
    assert!(small.split_nodes() > before, "the gather was not split");
    assert_eq!(cpu, split);
}

/// The tiny VAE golden case (decoder and encoder chunks) with every binding at most 64 KiB:
/// its convolutions stage output rows with their input halo, its channel norms stage
/// spatial rows, and it passes at the same tolerances.
#[test]
fn golden_vae_on_wgpu_past_a_small_binding_limit() {
    let b = backend("golden_vae_on_wgpu_past_a_small_binding_limit").with_binding_limit(64 << 10);
    common::golden_on(&b, "vae");
    assert!(b.split_nodes() > 0, "no node of the VAE was split at 64 KiB");
    eprintln!("{} nodes split", b.split_nodes());
}

/// Staged chunks (boxes copied through scratch), where no contiguous window works: a
/// single-batch strided causal conv3d whose input exceeds one binding (output rows with
/// their input halo; stride 2 and the downsampler's asymmetric padding), and attention with
/// a per-head bias that varies along the query rows (by heads). Same bits as unsplit, and
/// the CPU's values.
#[test]
fn staged_conv3d_rows_and_attention_heads_match_unsplit() {
    use std::collections::HashMap;
    use vidrt::ir::{DType, Graph, Tensor};
    let b = backend("staged_conv3d_rows_and_attention_heads_match_unsplit");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let check = |g: &Graph, weights: &HashMap<String, Tensor>, feeds: &[(&str, Tensor)], limit: u64| {
        let run =
            |be: &dyn Backend| be.compile(g, weights).expect("compiles").run(feeds).expect("runs")[0].1.to_f32_vec();
        let small = b.with_binding_limit(limit);
        let before = small.split_nodes();
        let (cpu, whole, split) = (run(&CpuBackend::new()), run(&b), run(&small));
        assert!(small.split_nodes() > before, "nothing split");
        assert_eq!(bits(&whole), bits(&split), "split differs from unsplit");
        let worst = cpu.iter().zip(&split).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4, "max |wgpu - cpu| = {worst}");
    };
    // x: 24 KiB, past the 8 KiB binding; the weight (6.75 KiB) fits.
    let mut g = Graph::new();
    let x = g.input("x", [1, 8, 3, 16, 16], DType::F32).expect("x");
    let w = g.weight("w", [8, 8, 3, 3, 3], DType::F32).expect("w");
    let y = g.conv3d(x, w, None, [1, 2, 2], [[2, 0], [0, 1], [0, 1]]).expect("conv");
    g.set_output("y", y).expect("out");
    let weights: HashMap<String, Tensor> =
        [("w".to_string(), ramp(8 * 8 * 27).reshape([8, 8, 3, 3, 3]).expect("w"))].into();
    let feeds = [("x", ramp(8 * 3 * 256).reshape([1, 8, 3, 16, 16]).expect("x"))];
    check(&g, &weights, &feeds, 8 << 10);
    // One batch, a [1, H, Sq, Sk] bias of 96 KiB (24 KiB per head) at 32 KiB bindings.
    let mut g = Graph::new();
    let q = g.input("q", [1, 64, 4, 16], DType::F32).expect("q");
    let k = g.input("k", [1, 96, 4, 16], DType::F32).expect("k");
    let v = g.input("v", [1, 96, 4, 16], DType::F32).expect("v");
    let bias = g.input("bias", [1, 4, 64, 96], DType::F32).expect("bias");
    let a = g.attention(q, k, v, 0.25, Some(bias), None).expect("attention");
    g.set_output("a", a).expect("out");
    let feeds = [
        ("q", ramp(64 * 64).reshape([1, 64, 4, 16]).expect("q")),
        ("k", ramp(96 * 64).reshape([1, 96, 4, 16]).expect("k")),
        ("v", ramp(96 * 64).reshape([1, 96, 4, 16]).expect("v")),
        ("bias", ramp(4 * 64 * 96).reshape([1, 4, 64, 96]).expect("bias")),
    ];
    check(&g, &HashMap::new(), &feeds, 32 << 10);
}
