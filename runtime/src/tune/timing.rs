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

/// A median time and what it measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timed {
    /// Microseconds.
    pub us: f64,
    /// The device's own clock around the kernels alone (CUDA events, wgpu timestamps), no
    /// host transfers; `false`: the wall time of whole runs (inputs written, kernels run,
    /// outputs read back).
    pub kernel: bool,
}

/// The median time of one run of `exe`, in microseconds: the kernels' device time when the
/// executable reports one for every run ([`Executable::last_kernel_time`]), else the wall
/// time of whole runs. `inputs(seed)` makes fresh inputs for each run.
pub fn time_candidate(
    exe: &mut dyn Executable,
    inputs: &mut dyn FnMut(u64) -> Vec<(String, Tensor)>,
    settings: TimingSettings,
) -> Result<f64, RuntimeError> {
    time_runs(exe, inputs, settings).map(|t| t.us)
}

/// [`time_candidate`], saying whether the time is the kernels' device time.
pub fn time_runs(
    exe: &mut dyn Executable,
    inputs: &mut dyn FnMut(u64) -> Vec<(String, Tensor)>,
    settings: TimingSettings,
) -> Result<Timed, RuntimeError> {
    let opts = RunOptions::default();
    let mut seed = 1u64;
    let mut run = |seed: u64| -> Result<(f64, Option<f64>), RuntimeError> {
        let ins = inputs(seed);
        let refs: Vec<(&str, Tensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let start = std::time::Instant::now();
        exe.run_with(&refs, &opts)?;
        let wall = start.elapsed().as_secs_f64() * 1e6;
        Ok((wall, exe.last_kernel_time().map(|d| d.as_secs_f64() * 1e6)))
    };
    for _ in 0..settings.warmup {
        run(seed)?;
        seed += 1;
    }
    let mut wall = Vec::with_capacity(settings.repeats.max(1) as usize);
    let mut kernel = Vec::with_capacity(wall.capacity());
    for _ in 0..settings.repeats.max(1) {
        let (w, k) = run(seed)?;
        wall.push(w);
        kernel.extend(k);
        seed += 1;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(if kernel.len() == wall.len() {
        Timed { us: median(kernel), kernel: true }
    } else {
        Timed { us: median(wall), kernel: false }
    })
}
