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
    let sim = SimBackend::new();
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
    common::golden_on(&SimBackend::new(), "ops");
}

#[test]
fn golden_dit_on_the_simulator() {
    common::golden_on(&SimBackend::new(), "dit");
}

#[test]
fn golden_text_encoder_on_the_simulator() {
    common::golden_on(&SimBackend::new(), "text_encoder");
}

#[test]
#[ignore = "minutes in the simulator; run with --run-ignored all"]
fn golden_vae_on_the_simulator() {
    common::golden_on(&SimBackend::new(), "vae");
}

#[test]
#[ignore = "minutes in the simulator; run with --run-ignored all"]
fn golden_pipeline_on_the_simulator() {
    common::golden_on(&SimBackend::new(), "pipeline");
}
