//! Every golden case folder passes on the CPU backend at the tolerances its case.json gives.
//! The golden folder is found through `$VIDRT_GOLDEN` or `../shared/golden`; when it is not
//! there the tests fail and say so (they are never reported as passing without data).

use vidrt::eval::run_case;
use vidrt::golden::{default_dir, Case};
use vidrt::runtime::CpuBackend;

fn check_case(name: &str) {
    let Some(dir) = default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let case = Case::load(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (report, _) = run_case(&case, &CpuBackend::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!report.results.is_empty(), "{name}: no checks ran");
    // Deviations outside vidrt's control: `vidrt::golden::KNOWN_DEVIATIONS`.
    let triage = report.triage();
    for k in &triage.known {
        eprintln!("{k}");
    }
    let failures = triage.failed;
    eprintln!(
        "{name}: {} checks, {} within the case's tolerance",
        report.results.len(),
        report.results.len() - report.failures().len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} checks failed:\n{}",
        failures.len(),
        report.results.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_ops() {
    check_case("ops");
}

#[test]
fn golden_scheduler() {
    check_case("scheduler");
}

#[test]
fn golden_dit() {
    check_case("dit");
}

#[test]
fn golden_vae() {
    check_case("vae");
}

#[test]
fn golden_text_encoder() {
    check_case("text_encoder");
}

#[test]
fn golden_pipeline() {
    check_case("pipeline");
}
