//! The wgpu backend against the CPU reference: every harness case, and every golden case
//! folder through `vidrt::eval::run_case`.
//!
//! When no wgpu adapter exists these tests print `SKIP` with the reason and return (they do
//! not claim a pass in their output); with `VIDRT_REQUIRE_WGPU=1` a missing adapter fails.
//! CI installs Mesa's lavapipe (`scripts/install-lavapipe.sh`) so they run for real.
#![cfg(feature = "wgpu")]

use vidrt::eval::run_case as eval_case;
use vidrt::golden::{default_dir, Case};
use vidrt::harness::{all_cases, run_case, summary, support_table, Outcome};
use vidrt::runtime::wgpu::WgpuBackend;
use vidrt::runtime::{Backend, CpuBackend};

/// The backend, or `None` after printing why the test is skipped.
fn backend(test: &str) -> Option<WgpuBackend> {
    match WgpuBackend::new() {
        Ok(b) => {
            eprintln!("{test}: wgpu adapter {}", b.adapter_name());
            Some(b)
        }
        Err(e) => {
            if std::env::var("VIDRT_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                panic!("{test}: VIDRT_REQUIRE_WGPU=1 but no wgpu adapter: {e}");
            }
            eprintln!("SKIP {test}: no wgpu adapter ({e}); this test did NOT run");
            None
        }
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
    let Some(b) = backend("harness_on_wgpu") else { return };
    let reference = CpuBackend::new();
    eprintln!("{}", support_table(&[&b as &dyn Backend]));
    let mut results = Vec::new();
    for case in all_cases() {
        let r = run_case(&case, &b, &reference);
        if std::env::var_os("VIDRT_HARNESS_VERBOSE").is_some() || !r.passed() {
            eprintln!("{r}");
        }
        results.push(r);
    }
    let unsupported = results.iter().filter(|r| matches!(r.outcome, Outcome::Unsupported(_))).count();
    eprintln!("harness_on_wgpu: {} ({unsupported} unsupported on wgpu)", summary(&results));
    let failed: Vec<String> = results.iter().filter(|r| r.failed()).map(|r| r.to_string()).collect();
    assert!(failed.is_empty(), "{} case(s) failed on wgpu:\n{}", failed.len(), failed.join("\n"));
    assert!(results.iter().any(|r| r.passed()), "no case ran on wgpu");
}

fn golden(name: &str) {
    let Some(b) = backend(name) else { return };
    let Some(dir) = default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let case = Case::load(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (report, _) = eval_case(&case, &b).unwrap_or_else(|e| panic!("{name} on wgpu: {e}"));
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
    // The same known deviations as on the CPU (`vidrt::golden::KNOWN_DEVIATIONS`).
    let triage = report.triage();
    for k in &triage.known {
        eprintln!("{k}");
    }
    let failures = triage.failed;
    assert!(
        failures.is_empty(),
        "{name} on wgpu: {} of {} checks failed:\n{}",
        failures.len(),
        report.results.len(),
        failures.join("\n")
    );
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
