//! The CUDA backend on real hardware, against the CPU reference through the cross-backend
//! op harness.
//!
//! On a machine without a CUDA driver the backend must refuse to open with the typed
//! "no CUDA driver found" error (cudarc's loader would panic; the backend probes first), and
//! the hardware tests are `#[ignore]`d (reported as skipped). Run on a GPU machine with
//! `--run-ignored all` (or a test binary's `--include-ignored`); run without a device they
//! fail, never pass.
#![cfg(feature = "cuda")]

mod common;

use vidrt::runtime::cuda::{CudaBackend, NO_DRIVER};
use vidrt::runtime::CpuBackend;

#[test]
fn opening_without_a_driver_is_a_typed_error() {
    match CudaBackend::new() {
        Ok(b) => {
            // With a device, opening must give a usable backend: a name and a PTX target.
            let name = b.device_name().unwrap_or_else(|e| panic!("device name: {e}"));
            assert!(!name.is_empty());
            assert!(matches!(b.target(), "sm_80" | "sm_90a"), "{}", b.target());
            eprintln!("opening_without_a_driver_is_a_typed_error: a CUDA device is present ({name}, {})", b.target());
        }
        Err(e) => {
            // Either no libcuda at all (the documented message) or a driver call that failed,
            // named; never a panic from the dynamic loader.
            let msg = e.to_string();
            assert!(
                msg.contains(NO_DRIVER) || msg.contains("CUDA driver") || msg.contains("compute capability"),
                "{msg}"
            );
            eprintln!("opening_without_a_driver_is_a_typed_error: {msg}");
        }
    }
}

/// The backend, or a failure: these tests run only when asked for (`#[ignore]`), and a
/// hardware check that could not run is never a pass.
fn cuda(test: &str) -> CudaBackend {
    CudaBackend::new().unwrap_or_else(|e| panic!("{test} needs a CUDA GPU: {e}"))
}

/// Needs a CUDA GPU, so it is ignored by default: on a machine without one nextest reports it
/// as skipped, never as passed. On a GPU machine: `cargo nextest run --features cuda
/// --run-ignored all --test cuda_backend`.
#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn harness_on_cuda() {
    let b = cuda("harness_on_cuda");
    eprintln!("harness_on_cuda: {}", b.device_name().unwrap_or_default());
    common::harness_on(&b, &CpuBackend::unoptimized(), "cuda");
}

/// Every golden case folder on the GPU at the f32 tolerances (the same known deviations as on
/// the CPU).
#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn golden_cases_on_cuda() {
    let b = cuda("golden_cases_on_cuda");
    for name in ["ops", "dit", "text_encoder", "scheduler", "vae", "pipeline"] {
        common::golden_on(&b, name);
    }
}

/// The DiT and text encoder in bf16 on the tensor-core kernels, at the golden README's bf16
/// limit (rel_l2 ≤ 3e-2 against the f32 references).
#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn golden_forwards_in_bf16_on_cuda() {
    let b = cuda("golden_forwards_in_bf16_on_cuda");
    let b = vidrt::runtime::ReducedPrecision { inner: Box::new(b), dtype: vidrt::ir::DType::BF16 };
    for name in ["dit", "text_encoder"] {
        let worst = common::golden_bf16_on(&b, name, 3e-2);
        eprintln!("{name} in bf16 on cuda: worst rel_l2 {worst:.3e}");
    }
}

/// The tiny pipeline in bf16 on the GPU against the CPU in f32, with the CPU's own bf16 run
/// as the yardstick (as `ptx_sim_backend` checks in the simulator).
#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn generate_in_bf16_on_cuda_is_as_close_to_f32_as_the_cpu_in_bf16() {
    let b = cuda("generate_in_bf16_on_cuda");
    common::bf16_pipeline_is_as_close_to_f32_as_the_cpus(Box::new(b));
}

/// Every tuning candidate of every PTX family (each point of matmul, conv3d and attention,
/// with the wgmma and TMA points on Hopper when `VIDRT_CUDA_WGMMA=1`) at shapes that run the
/// kernels' pipelines several times, against the CPU: the points the heuristics do not pick
/// run on hardware before a tuner may choose them.
#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn every_tuning_candidate_matches_the_cpu_on_cuda() {
    let b = cuda("every_tuning_candidate_matches_the_cpu_on_cuda");
    common::every_candidate_matches_the_cpu(&b, &common::every_family_graph(true), 2e-2);
}

#[test]
#[ignore = "needs a CUDA GPU (run with --run-ignored all on one)"]
fn check_intermediates_names_the_first_non_finite_node_on_cuda() {
    common::check_intermediates_names_the_first_non_finite_node(&cuda("check_intermediates_on_cuda"));
}
