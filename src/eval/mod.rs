//! `vidrt eval`: runs the component a golden case describes and compares every check.

mod dit;
mod ops;
mod ops_vae;
mod pipeline;
mod scheduler;
mod text_encoder;
mod vae;

use std::collections::BTreeMap;

use vidrt_ir::Tensor;
use vidrt_runtime::Backend;

use crate::error::Result;
use crate::golden::{compare, Case, Check, Comparison};

/// What a component produced, keyed by (file, tensor) as the case's checks name them.
pub type Outputs = BTreeMap<(String, String), Tensor>;

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub check: Check,
    /// The comparison, or why there is none (not produced, wrong shape).
    pub outcome: std::result::Result<Comparison, String>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, Ok(c) if self.check.passes(c))
    }
}

/// Every check of a case.
#[derive(Clone, Debug)]
pub struct Report {
    pub case: String,
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(CheckResult::passed)
    }

    pub fn failures(&self) -> Vec<&CheckResult> {
        self.results.iter().filter(|r| !r.passed()).collect()
    }

    /// The failures split into those a [`crate::golden::KnownDeviation`] explains (still
    /// within its hard bound) and the rest, each as a printable line.
    pub fn triage(&self) -> Triage {
        let mut t = Triage::default();
        for r in self.failures() {
            match (crate::golden::KnownDeviation::find(&self.case, &r.check), &r.outcome) {
                (Some(k), Ok(c)) if k.holds(c) => t.known.push(format!(
                    "KNOWN DEVIATION (not a pass) {} {}:{} rel_l2 {:.3e} max_abs {:.3e}: {}",
                    self.case, r.check.file, r.check.tensor, c.rel_l2, c.max_abs, k.reason
                )),
                _ => t.failed.push(format!("{}:{} {:?}", r.check.file, r.check.tensor, r.outcome)),
            }
        }
        t
    }
}

/// Failures of a [`Report`], triaged.
#[derive(Clone, Debug, Default)]
pub struct Triage {
    /// Explained by a known deviation, within its bound.
    pub known: Vec<String>,
    /// Everything else.
    pub failed: Vec<String>,
}

/// Runs the case's component on `backend`; returns the report and everything produced.
pub fn run_case(case: &Case, backend: &dyn Backend) -> Result<(Report, Outputs)> {
    let outputs = match case.kind.as_str() {
        "ops" => ops::run(case, backend)?,
        "dit" => dit::run(case, backend)?,
        "vae" => vae::run(case, backend)?,
        "text_encoder" => text_encoder::run(case, backend)?,
        "scheduler" => scheduler::run(case, backend)?,
        "pipeline" => pipeline::run(case, backend)?,
        other => return Err(case.error(format!("unknown case kind `{other}`"))),
    };
    let mut results = Vec::with_capacity(case.checks.len());
    for check in &case.checks {
        let key = (check.file.clone(), check.tensor.clone());
        let outcome = match outputs.get(&key) {
            None => Err("not produced".to_string()),
            Some(out) => {
                let reference = case.tensor(&check.file, &check.tensor)?;
                compare(out, &reference).map_err(|e| e.to_string())
            }
        };
        results.push(CheckResult { check: check.clone(), outcome });
    }
    Ok((Report { case: case.kind.clone(), results }, outputs))
}

/// Inserts one produced tensor under (file, tensor).
pub(crate) fn put(out: &mut Outputs, file: &str, tensor: &str, t: Tensor) {
    out.insert((file.to_string(), tensor.to_string()), t);
}
