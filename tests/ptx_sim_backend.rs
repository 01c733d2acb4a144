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

/// The tiny pipeline with the CUDA kernels at bf16 storage (tensor-core matmul, attention and
/// conv3d) against the CPU in f32, the CPU's own bf16 run as the yardstick.
#[test]
fn generate_in_bf16_on_the_simulator_is_as_close_to_f32_as_the_cpu_in_bf16() {
    common::bf16_pipeline_is_as_close_to_f32_as_the_cpus(Box::new(SimBackend::new()));
}

/// Single forward passes in bf16 on the CUDA kernels, against the f32 golden references at
/// the golden README's bf16 limit (rel_l2 ≤ 3e-2).
#[test]
fn golden_dit_in_bf16_on_the_simulator() {
    let b = vidrt::runtime::ReducedPrecision { inner: Box::new(SimBackend::new()), dtype: vidrt::ir::DType::BF16 };
    let worst = common::golden_bf16_on(&b, "dit", 3e-2);
    eprintln!("dit in bf16 on ptx-sim: worst rel_l2 {worst:.3e}");
}

#[test]
fn golden_text_encoder_in_bf16_on_the_simulator() {
    let b = vidrt::runtime::ReducedPrecision { inner: Box::new(SimBackend::new()), dtype: vidrt::ir::DType::BF16 };
    let worst = common::golden_bf16_on(&b, "text_encoder", 3e-2);
    eprintln!("text_encoder in bf16 on ptx-sim: worst rel_l2 {worst:.3e}");
}

#[test]
fn check_intermediates_names_the_first_non_finite_node_on_the_simulator() {
    common::check_intermediates_names_the_first_non_finite_node(&SimBackend::new());
}
