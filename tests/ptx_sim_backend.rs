//! The CUDA backend's generated PTX kernels, run in the CPU simulator (`SimBackend`), against
//! the CPU reference through the cross-backend op harness, and on the golden cases at their
//! f32 tolerances. Unsupported cases are listed, never counted as passes; a minimum set of ops
//! must pass.
//!
//! The VAE and whole-pipeline golden cases take minutes in the simulator (the VAE's convs);
//! they are `#[ignore]`d here, so CI reports them as skipped, and run with
//! `cargo nextest run --test ptx_sim_backend --run-ignored all`.

mod common;

use vidrt::harness::{all_cases, run_case, summary, Outcome};
use vidrt::runtime::{CpuBackend, SimBackend};

/// Ops whose every case must run and pass on the simulator (at least one case each).
const REQUIRED: &[&str] = &[
    "input",
    "weight",
    "constant",
    "neg",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "recip",
    "square",
    "tanh",
    "sigmoid",
    "silu",
    "gelu_tanh",
    "gelu_erf",
    "sin",
    "cos",
    "add_scalar",
    "mul_scalar",
    "clamp",
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "pow",
    "cast",
    "modulate",
    "rms_norm",
    "layer_norm",
    "softmax",
    "reduce",
    "rope",
    "reshape",
    "permute",
    "slice",
    "concat",
    "upsample",
    "gather",
    "timestep_embedding",
    "rope_table",
    "fused",
    "layer_norm_modulate",
    "rms_norm_epilogue",
    "matmul",
    "matmul_epilogue",
    "conv3d",
    "conv3d_epilogue",
    "rel_position_bucket",
    "rms_norm_rope",
    "attention",
];

#[test]
fn ptx_kernels_in_the_simulator_match_the_cpu_reference() {
    let reference = CpuBackend::unoptimized();
    let sim = SimBackend::without_tuning();
    let cases = all_cases();
    let mut results = Vec::new();
    let mut unsupported = Vec::new();
    let mut failed = Vec::new();
    for case in &cases {
        let r = run_case(case, &sim, &reference);
        match &r.outcome {
            Outcome::Pass => {}
            Outcome::Unsupported(why) => unsupported.push(format!("{}: {why}", r.case)),
            Outcome::Fail(reasons) => {
                // The backend refusing a case at compile time (e.g. a cast from an integer
                // dtype) is an explicit "unsupported", listed with the others.
                if reasons.len() == 1 && reasons[0].contains("does not support") {
                    unsupported.push(format!("{}: {}", r.case, reasons[0]));
                } else {
                    failed.push(r.to_string());
                }
            }
        }
        if std::env::var_os("VIDRT_HARNESS_VERBOSE").is_some() {
            eprintln!("{r}");
        }
        results.push((case.op.name(), r));
    }
    eprintln!("unsupported on ptx-sim ({}):", unsupported.len());
    for u in &unsupported {
        eprintln!("  {u}");
    }
    let rs: Vec<_> = results.iter().map(|(_, r)| r.clone()).collect();
    eprintln!("ptx_sim_backend: {}", summary(&rs));
    assert!(failed.is_empty(), "{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
    let mut missing = Vec::new();
    for op in REQUIRED {
        let mine: Vec<_> = results.iter().filter(|(n, _)| n == op).collect();
        if mine.is_empty() || !mine.iter().any(|(_, r)| r.passed()) {
            missing.push(*op);
        }
    }
    assert!(missing.is_empty(), "required ops with no passing case on ptx-sim: {missing:?}");
}

#[test]
fn golden_ops_on_the_simulator() {
    common::golden_on(&SimBackend::without_tuning(), "ops");
}

#[test]
fn golden_dit_on_the_simulator() {
    common::golden_on(&SimBackend::without_tuning(), "dit");
}

#[test]
fn golden_text_encoder_on_the_simulator() {
    common::golden_on(&SimBackend::without_tuning(), "text_encoder");
}

#[test]
#[ignore = "minutes in the simulator; run with --run-ignored all"]
fn golden_vae_on_the_simulator() {
    common::golden_on(&SimBackend::without_tuning(), "vae");
}

#[test]
#[ignore = "minutes in the simulator; run with --run-ignored all"]
fn golden_pipeline_on_the_simulator() {
    common::golden_on(&SimBackend::without_tuning(), "pipeline");
}

/// The tiny pipeline with the CUDA kernels at bf16 storage (tensor-core matmul, attention and
/// conv3d) against the CPU in f32, the CPU's own bf16 run as the yardstick.
#[test]
fn generate_in_bf16_on_the_simulator_is_as_close_to_f32_as_the_cpu_in_bf16() {
    common::bf16_pipeline_is_as_close_to_f32_as_the_cpus(Box::new(SimBackend::without_tuning()));
}

/// Single forward passes in bf16 on the CUDA kernels, against the f32 golden references at
/// the golden README's bf16 limit (rel_l2 ≤ 3e-2).
#[test]
fn golden_dit_in_bf16_on_the_simulator() {
    let b = vidrt::runtime::ReducedPrecision {
        inner: Box::new(SimBackend::without_tuning()),
        dtype: vidrt::ir::DType::BF16,
    };
    let worst = common::golden_bf16_on(&b, "dit", 3e-2);
    eprintln!("dit in bf16 on ptx-sim: worst rel_l2 {worst:.3e}");
}

#[test]
fn golden_text_encoder_in_bf16_on_the_simulator() {
    let b = vidrt::runtime::ReducedPrecision {
        inner: Box::new(SimBackend::without_tuning()),
        dtype: vidrt::ir::DType::BF16,
    };
    let worst = common::golden_bf16_on(&b, "text_encoder", 3e-2);
    eprintln!("text_encoder in bf16 on ptx-sim: worst rel_l2 {worst:.3e}");
}

#[test]
fn check_intermediates_names_the_first_non_finite_node_on_the_simulator() {
    common::check_intermediates_names_the_first_non_finite_node(&SimBackend::without_tuning());
}

// --- Tuning on the simulator (issue 8): the CUDA backend's tuning plumbing, run in CI ---

fn every_family_graph() -> vidrt::ir::Graph {
    common::every_family_graph(false)
}

fn temp_db(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vidrt-sim-tune-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("db.json")
}

/// `tune_backend` on the simulator: every family is tuned into a file database, a second run
/// tunes nothing, the backend compiled with the database uses every winner (and gets the
/// CPU's results), an invalid winner is ignored, entries of another candidate set (kernel
/// text hash) are tuned again, and a corrupt file is a warning after which tuning works.
#[test]
fn tuning_on_the_simulator_round_trip() {
    use vidrt::runtime::tune::{TimingSettings, TuneDb};
    use vidrt::runtime::Backend;
    let g = every_family_graph();
    let graphs = vec![("every family".to_string(), g.clone())];
    let sim = SimBackend::without_tuning();
    let dev = sim.device_info();
    assert_eq!(dev.backend, "ptx-sim");
    let path = temp_db("round-trip");
    let settings = TimingSettings { warmup: 0, repeats: 1 };
    let tune =
        |db: &mut TuneDb| vidrt::tune::tune_backend(&sim, db, &graphs, settings, &mut vidrt::tune::Quiet).unwrap();

    let problems = sim.problems(&g);
    let mut families: Vec<&str> = problems.iter().map(|p| p.key.family.as_str()).collect();
    families.sort_unstable();
    assert_eq!(
        families,
        [
            "attention_mma_bf16",
            "attention_simt_f32",
            "conv3d_mma_bf16",
            "conv3d_simt_f32",
            "matmul_mma_bf16",
            "matmul_simt_f32"
        ]
    );
    assert!(problems.iter().all(|p| p.candidates.len() > 1), "{problems:?}");
    let mut db = TuneDb::open(&path, dev.clone());
    let s = tune(&mut db);
    assert_eq!((s.tuned, s.cached, s.failed), (problems.len(), 0, 0), "{:?}", s.lines);
    let s = tune(&mut TuneDb::open(&path, dev.clone()));
    assert_eq!((s.tuned, s.cached), (0, problems.len()), "a second run tunes nothing: {:?}", s.lines);

    // The backend reads the file and compiles every tunable node with its winner.
    let tuned = sim.with_db(Some(TuneDb::open(&path, dev.clone())));
    assert!(tuned.tuning_warnings().is_empty(), "{:?}", tuned.tuning_warnings());
    let ins = vidrt::tune::seeded_inputs(&g, 3);
    let refs: Vec<(&str, vidrt::ir::Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let want = CpuBackend::new().compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    let got = tuned.compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    assert_eq!(tuned.tuning_hits(), (problems.len(), 0));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        let c = vidrt::golden::compare(a, b).unwrap();
        assert!(c.rel_l2 < 2e-2, "{name}: {c:?}");
    }

    // A winner that is not a valid point here is ignored (heuristic), never a failure.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for e in json["entries"].as_array_mut().unwrap() {
        e["winner"] = "bm=4096,bn=4096,bk=64,warps_m=1,warps_n=1".into();
    }
    let bad = path.with_file_name("bad-winner.json");
    std::fs::write(&bad, serde_json::to_string(&json).unwrap()).unwrap();
    let bad_b = sim.with_db(Some(TuneDb::open(&bad, dev.clone())));
    let got = bad_b.compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    assert_eq!(bad_b.tuning_hits(), (0, problems.len()));
    assert_eq!(got.len(), want.len());

    // Another candidate set (an edited kernel's text hash): never served, tuned again.
    for e in json["entries"].as_array_mut().unwrap() {
        e["key"]["kernel_hash"] = 12345.into();
    }
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let stale = sim.with_db(Some(TuneDb::open(&path, dev.clone())));
    stale.compile(&g, &vidrt::runtime::NoWeights).unwrap();
    assert_eq!(stale.tuning_hits(), (0, 0));
    let s = tune(&mut TuneDb::open(&path, dev.clone()));
    assert_eq!((s.tuned, s.cached), (problems.len(), 0), "stale entries are tuned again: {:?}", s.lines);

    // A corrupt file: a warning, the heuristics, and tuning replaces it.
    std::fs::write(&path, b"{\"version\": 1, \"entries\": [tru").unwrap();
    let mut db = TuneDb::open(&path, dev.clone());
    assert!(db.warnings.iter().any(|w| w.contains("corrupt")), "{:?}", db.warnings);
    let corrupt = sim.with_db(Some(db.clone()));
    assert_eq!(corrupt.tuning_warnings().len(), 1);
    corrupt.compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    let s = tune(&mut db);
    assert_eq!(s.tuned, problems.len());
    assert!(TuneDb::open(&path, dev).warnings.is_empty());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A forced point compiles that point (a tuner's candidate); one that is not a point of the
/// family, or is invalid for the shape, fails to compile with a typed error.
#[test]
fn forced_points_on_the_simulator() {
    use vidrt::runtime::Backend;
    let g = every_family_graph();
    let sim = SimBackend::without_tuning();
    for p in sim.problems(&g) {
        let one = vidrt::tune::isolate(&g, p.node).unwrap();
        for c in &p.candidates {
            sim.forcing(&p.key.family, c).compile(&one, &vidrt::runtime::NoWeights).unwrap();
        }
        let e = sim.forcing(&p.key.family, "nope=1").compile(&one, &vidrt::runtime::NoWeights).err();
        assert!(e.is_some_and(|e| e.to_string().contains("not a parameter point")), "{}", p.key.family);
    }
    // A point outside the family's rules (a 262144-thread block) is an error, not a panic.
    let p = sim.problems(&g).into_iter().find(|p| p.key.family == "matmul_simt_f32").unwrap();
    let one = vidrt::tune::isolate(&g, p.node).unwrap();
    let e = sim.forcing(&p.key.family, "bm=512,bn=512,bk=8,tm=1,tn=1").compile(&one, &vidrt::runtime::NoWeights);
    assert!(e.is_err());
}

/// `vidrt tune --backend ptx-sim` on the tiny model's DiT (batch 1): it says its times are not
/// GPU speed, tunes, a second run tunes nothing, and a corrupt database is a warning (the
/// simulator backend of any command reads it).
#[test]
fn tune_cli_on_the_simulator() {
    let path = temp_db("cli");
    let tune = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
            .args(["tune", "--model", "tiny", "--height", "32", "--width", "32", "--frames", "5"])
            .args(["--component", "dit", "--no-cfg", "--repeats", "1", "--warmup", "0", "--backend", "ptx-sim"])
            .arg("--tune-db")
            .arg(&path)
            .output()
            .unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{log}");
        let line = log.lines().find(|l| l.starts_with("tuned ")).unwrap_or_else(|| panic!("{log}")).to_string();
        let nums: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
        (nums[0], nums[1], log)
    };
    let (tuned, cached, log) = tune();
    assert!(tuned > 0 && cached == 0, "{log}");
    assert!(log.contains("say nothing about GPU speed"), "{log}");
    // Each problem's line names the heuristic's candidate: the winner itself, or its time.
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" µs)")).collect();
    assert_eq!(lines.len(), tuned, "{log}");
    for l in &lines {
        assert!(l.ends_with("; the heuristic's point") || l.contains("x the winner's)"), "{l}");
    }
    let (again, cached2, log) = tune();
    assert_eq!((again, cached2), (0, tuned), "{log}");
    // A corrupt database is a warning: the run goes on with the heuristics.
    std::fs::write(&path, b"not json").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["ops", "--backend", "ptx-sim", "--filter", "silu"])
        .arg("--tune-db")
        .arg(&path)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    assert!(log.contains("warning: tuning database") && log.contains("corrupt"), "{log}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// `vidrt tune --precision bf16` tunes the graphs as a bf16 generation compiles them (reduced
/// precision, then the passes' fusion), so a reduced-precision compile of the same DiT finds
/// every tensor-core winner it looks up: the keys of the tuner and of compile agree.
#[test]
fn tune_cli_in_bf16_gives_the_winners_a_bf16_compile_looks_up() {
    use vidrt::runtime::tune::TuneDb;
    use vidrt::runtime::{Backend, ReducedPrecision};
    let path = temp_db("cli-bf16");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["tune", "--model", "tiny", "--height", "32", "--width", "32", "--frames", "5", "--precision", "bf16"])
        .args(["--component", "dit", "--no-cfg", "--repeats", "1", "--warmup", "0", "--backend", "ptx-sim"])
        .arg("--tune-db")
        .arg(&path)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("matmul_mma_bf16"), "no tensor-core matmul tuned:\n{log}");
    let sim = SimBackend::without_tuning();
    let tuned = sim.with_db(Some(TuneDb::open(&path, sim.device_info())));
    let graphs = vidrt::tune::pipeline_graphs("tiny", 32, 32, 5, false).unwrap();
    let (_, dit) = graphs.iter().find(|(n, _)| n.starts_with("DiT")).unwrap();
    let bf16 = ReducedPrecision { inner: Box::new(tuned.clone()), dtype: vidrt::ir::DType::BF16 };
    bf16.compile(dit, &vidrt::weights::SeededWeights { seed: 1 }).expect("compiles with the winners");
    let (hits, rejected) = tuned.tuning_hits();
    eprintln!("bf16 DiT compile: {hits} tuned nodes, {rejected} rejected winners\n{log}");
    assert!(hits > 0 && rejected == 0, "{hits} hits, {rejected} rejected:\n{log}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// `matmul_mma` points in dynamic shared memory (past 48 KiB) are candidates on the simulator
/// backend, which launches them with their dynamic bytes at the limit its kernels are chosen
/// for (sm_80: 163 KiB), and they match the CPU; the sm_90a-only point (216 KiB) is not a
/// candidate there, and forcing it fails to compile with a typed error.
#[test]
fn dynamic_shared_memory_points_on_the_simulator() {
    use vidrt::ir::{DType, Graph};
    use vidrt::runtime::Backend;
    let mut g = Graph::new();
    let a = g.input("a", [130, 72], DType::BF16).unwrap();
    let w = g.input("w", [136, 72], DType::BF16).unwrap();
    let y = g.linear(a, w, None).unwrap();
    g.set_output("y", y).unwrap();
    let sim = SimBackend::without_tuning();
    let problems = sim.problems(&g);
    let p = problems.iter().find(|p| p.key.family == "matmul_mma_bf16").expect("a tensor-core matmul");
    // 60 KiB (128x128x32, 3 stages) and 162 KiB (128x256x64, 3 stages).
    let dynamic =
        ["bm=128,bn=128,bk=32,warps_m=4,warps_n=2,stages=3", "bm=128,bn=256,bk=64,warps_m=2,warps_n=4,stages=3"];
    for c in dynamic {
        assert!(p.candidates.iter().any(|x| x == c), "{c} not in {:?}", p.candidates);
    }
    let sm90_only = "bm=128,bn=256,bk=64,warps_m=2,warps_n=4,stages=4";
    assert!(!p.candidates.iter().any(|x| x == sm90_only), "{:?}", p.candidates);
    let ins = vidrt::tune::seeded_inputs(&g, 5);
    let refs: Vec<(&str, vidrt::ir::Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let want = CpuBackend::new().compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    for c in dynamic {
        let got = sim.forcing(&p.key.family, c).compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
        let cmp = vidrt::golden::compare(&got[0].1, &want[0].1).unwrap();
        assert!(cmp.rel_l2 < 2e-2, "{c}: {cmp:?}");
    }
    let e = sim.forcing(&p.key.family, sm90_only).compile(&g, &vidrt::runtime::NoWeights).err();
    assert!(e.as_ref().is_some_and(|e| e.to_string().contains("shared memory")), "{e:?}");
}

/// The simulator lowering as on Hopper (sm_90a): the bf16 matmul takes the TMA-fed
/// `matmul_wgmma_tma`, attention `attention_wgmma` and the conv `conv3d_wgmma` (their own
/// tuning families; the conv's output width is not a multiple of 8, so it takes the
/// channels-last form only: the transposes into scratch, then the conv), everything else
/// what sm_80 takes; the graph matches the CPU; every wgmma candidate runs in
/// the tuner; and the tuning keys name the simulated sm_90a device.
#[test]
fn hopper_lowering_on_the_simulator_uses_wgmma_and_matches_the_cpu() {
    use vidrt::runtime::tune::{TimingSettings, TuneDb};
    use vidrt::runtime::Backend;
    let g = every_family_graph();
    let hopper = SimBackend::hopper();
    let problems = hopper.problems(&g);
    let mut families: Vec<&str> = problems.iter().map(|p| p.key.family.as_str()).collect();
    families.sort_unstable();
    assert_eq!(
        families,
        [
            "attention_simt_f32",
            "attention_wgmma_bf16",
            "conv3d_simt_f32",
            "conv3d_wgmma_bf16",
            "matmul_simt_f32",
            "matmul_wgmma_tma_bf16"
        ]
    );
    assert!(problems.iter().all(|p| p.key.device.arch == "sm_90a (simulated)"));
    let wgmma = problems.iter().find(|p| p.key.family == "matmul_wgmma_tma_bf16").unwrap();
    // Every TMA point fits sm_90a's 227 KiB (all in dynamic shared memory).
    let tma = vidrt_kernels::ptx::kernels::gemm_wgmma_tma::param_space();
    assert_eq!(wgmma.candidates.len(), tma.len(), "{:?}", wgmma.candidates);
    let attention = problems.iter().find(|p| p.key.family == "attention_wgmma_bf16").unwrap();
    let space = vidrt_kernels::ptx::kernels::attention::wgmma_param_space();
    assert_eq!(attention.candidates.len(), space.len(), "{:?}", attention.candidates);
    // The conv's candidates: every tile in the channels-last form (the gather form refuses
    // this width), the heuristic among them.
    let conv = problems.iter().find(|p| p.key.family == "conv3d_wgmma_bf16").unwrap();
    let cl: Vec<String> = vidrt_kernels::ptx::kernels::conv3d_wgmma::conv_wgmma_space()
        .into_iter()
        .filter(|p| p.channels_last)
        .map(|p| p.to_text())
        .collect();
    assert_eq!(conv.candidates, cl);
    // Each problem names the candidate an untuned compile takes: for the attention the first
    // point (what the lowering prefers at any size that fits), for every problem a candidate.
    use vidrt_kernels::ptx::tune::Point;
    assert_eq!(attention.heuristic.as_deref(), Some(space[0].to_text().as_str()));
    for p in &problems {
        let h = p.heuristic.as_ref().unwrap_or_else(|| panic!("{}: no heuristic named", p.key.family));
        assert!(p.candidates.contains(h), "{}: {h} not a candidate", p.key.family);
    }

    let ins = vidrt::tune::seeded_inputs(&g, 5);
    let refs: Vec<(&str, vidrt::ir::Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let want = CpuBackend::new().compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    let got = hopper.compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        let c = vidrt::golden::compare(a, b).unwrap();
        assert!(c.rel_l2 < 2e-2, "{name}: {c:?}");
    }

    // Every candidate of every family (the TMA wgmma points among them) runs in the tuner.
    let path = temp_db("hopper");
    let mut db = TuneDb::open(&path, hopper.device_info());
    let graphs = vec![("every family".to_string(), g.clone())];
    let settings = TimingSettings { warmup: 0, repeats: 1 };
    let s = vidrt::tune::tune_backend(&hopper, &mut db, &graphs, settings, &mut vidrt::tune::Quiet).unwrap();
    assert_eq!((s.tuned, s.failed), (problems.len(), 0), "{:?}", s.lines);
    let tuned = hopper.with_db(Some(TuneDb::open(&path, hopper.device_info())));
    assert_eq!(tuned.problems(&g).len(), problems.len());
    tuned.compile(&g, &vidrt::runtime::NoWeights).unwrap().run(&refs).unwrap();
    assert_eq!(tuned.tuning_hits(), (problems.len(), 0));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Every tuning candidate of every family on the simulated sm_80 and sm_90a devices (the
/// latter with the wgmma and TMA points, producer warpgroups among them) against the CPU, as
/// `cuda_backend` checks them on hardware.
#[test]
fn every_tuning_candidate_matches_the_cpu_on_the_simulator() {
    let g = every_family_graph();
    common::every_candidate_matches_the_cpu(&SimBackend::without_tuning(), &g, 2e-2);
    let hopper = SimBackend::hopper();
    let families: Vec<String> = hopper.problems(&g).into_iter().map(|p| p.key.family).collect();
    assert!(families.iter().any(|f| f == "matmul_wgmma_tma_bf16"), "{families:?}");
    assert!(families.iter().any(|f| f == "attention_wgmma_bf16"), "{families:?}");
    common::every_candidate_matches_the_cpu(&hopper, &g, 2e-2);
    // The large graph `cuda_backend` runs them on compiles for every candidate here (running
    // it would take the simulator minutes).
    let large = common::every_family_graph(true);
    for b in [SimBackend::without_tuning(), hopper] {
        for p in b.problems(&large) {
            let one = vidrt::tune::isolate(&large, p.node).unwrap();
            for c in &p.candidates {
                let compiled =
                    vidrt::runtime::Backend::compile(&b.forcing(&p.key.family, c), &one, &vidrt::runtime::NoWeights);
                assert!(compiled.is_ok(), "{} {c}: {:?}", p.key.family, compiled.err());
            }
        }
    }
}

/// The simulated Hopper, recording the tuning families of every graph it compiles.
struct Recording {
    inner: SimBackend,
    families: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl vidrt::runtime::Backend for Recording {
    fn name(&self) -> &'static str {
        vidrt::runtime::Backend::name(&self.inner)
    }

    fn support(&self, op: &vidrt::ir::Op, dtype: vidrt::ir::DType) -> vidrt::runtime::Support {
        vidrt::runtime::Backend::support(&self.inner, op, dtype)
    }

    fn compile(
        &self,
        graph: &vidrt::ir::Graph,
        weights: &dyn vidrt::runtime::WeightSource,
    ) -> Result<Box<dyn vidrt::runtime::Executable>, vidrt::runtime::RuntimeError> {
        let mut f = self.families.lock().unwrap();
        f.extend(self.inner.problems(graph).into_iter().map(|p| p.key.family));
        drop(f);
        vidrt::runtime::Backend::compile(&self.inner, graph, weights)
    }
}

/// A DiT forward pass in bf16 with the Hopper lowering (its linear layers on the TMA-fed
/// `matmul_wgmma_tma`, its attention on `attention_wgmma`, as the tuning families of the
/// compiled graphs show), against the f32 golden reference at the bf16 limit.
#[test]
fn golden_dit_in_bf16_on_the_simulated_hopper() {
    let families = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = Recording { inner: SimBackend::hopper(), families: families.clone() };
    let b = vidrt::runtime::ReducedPrecision { inner: Box::new(rec), dtype: vidrt::ir::DType::BF16 };
    let worst = common::golden_bf16_on(&b, "dit", 3e-2);
    eprintln!("dit in bf16 on ptx-sim (sm_90a lowering): worst rel_l2 {worst:.3e}");
    let families = families.lock().unwrap();
    let families: std::collections::BTreeSet<&str> = families.iter().map(String::as_str).collect();
    eprintln!("dit on the simulated hopper: families {families:?}");
    assert!(families.contains("matmul_wgmma_tma_bf16"), "{families:?}");
    assert!(families.contains("attention_wgmma_bf16"), "{families:?}");
    assert!(!families.iter().any(|f| f.starts_with("attention_mma")), "{families:?}");
}

/// The tiny pipeline at bf16 storage with the Hopper lowering against the CPU in f32 (the
/// CPU's own bf16 run as the yardstick): the DiT on `matmul_wgmma_tma` and `attention_wgmma`,
/// the VAE decoder's convs at widths 8, 16 and 32 on `conv3d_wgmma` (the narrower ones on
/// `conv3d_mma`), as the compiled graphs' tuning families show.
#[test]
fn generate_in_bf16_on_the_simulated_hopper_is_as_close_to_f32_as_the_cpu_in_bf16() {
    let families = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = Recording { inner: SimBackend::hopper(), families: families.clone() };
    common::bf16_pipeline_is_as_close_to_f32_as_the_cpus(Box::new(rec));
    let families = families.lock().unwrap();
    let families: std::collections::BTreeSet<&str> = families.iter().map(String::as_str).collect();
    eprintln!("the tiny pipeline on the simulated hopper: families {families:?}");
    for f in ["matmul_wgmma_tma_bf16", "attention_wgmma_bf16", "conv3d_wgmma_bf16"] {
        assert!(families.contains(f), "{f} not in {families:?}");
    }
}
