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

/// Runs golden case folder `name` on `backend` (one that stores tensors in bf16) and requires
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
                    "{name} bf16 {}:{} rel_l2 {:.3e} max_abs {:.3e}",
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
