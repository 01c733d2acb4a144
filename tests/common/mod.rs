//! Helpers shared by the integration tests (a module, not a test target of its own).

use vidrt::eval::run_case as eval_case;
use vidrt::golden::{default_dir, Case};
use vidrt::runtime::Backend;

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
