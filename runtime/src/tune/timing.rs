//! Timing one candidate: warm-up runs, then `repeats` timed runs, each with fresh inputs
//! (a new seed every run, so no cache holds the previous run's data), reporting the median.
//!
//! The time is the wall time of one whole `Executable::run` (inputs written, kernels run,
//! outputs read back and synchronised). Every candidate of a problem pays the same transfer
//! cost, so the ranking is the kernels'; absolute kernel times come from `vidrt bench`.

use serde::{Deserialize, Serialize};
use vidrt_ir::Tensor;

use crate::backend::{Executable, RunOptions};
use crate::RuntimeError;

/// How candidates are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingSettings {
    pub warmup: u32,
    pub repeats: u32,
}

impl Default for TimingSettings {
    fn default() -> Self {
        TimingSettings { warmup: 2, repeats: 7 }
    }
}

/// The median wall time of one run of `exe`, in microseconds. `inputs(seed)` makes fresh
/// inputs for each run.
pub fn time_candidate(
    exe: &mut dyn Executable,
    inputs: &mut dyn FnMut(u64) -> Vec<(String, Tensor)>,
    settings: TimingSettings,
) -> Result<f64, RuntimeError> {
    let opts = RunOptions::default();
    let mut seed = 1u64;
    let mut run = |seed: u64| -> Result<f64, RuntimeError> {
        let ins = inputs(seed);
        let refs: Vec<(&str, Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let start = std::time::Instant::now();
        exe.run_with(&refs, &opts)?;
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };
    for _ in 0..settings.warmup {
        run(seed)?;
        seed += 1;
    }
    let mut times = Vec::with_capacity(settings.repeats.max(1) as usize);
    for _ in 0..settings.repeats.max(1) {
        times.push(run(seed)?);
        seed += 1;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
