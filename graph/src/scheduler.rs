//! Flow-matching samplers for Wan2.1, as diffusers configures them (SPEC-NOTES §2, §5):
//!
//! - [`UniPcFlow`], diffusers' `UniPCMultistepScheduler` with `prediction_type="flow_prediction"`,
//!   `use_flow_sigmas=True`, solver order 2, `bh2`, `predict_x0`, `lower_order_final`,
//!   `final_sigmas_type="zero"` (the Wan2.1 T2V default);
//! - [`FlowEuler`], diffusers' `FlowMatchEulerDiscreteScheduler(shift)`.
//!
//! Both follow diffusers' arithmetic: the sigma tables in f64 then rounded to f32, the scalar
//! coefficients of a step as f32 scalars and every elementwise operation in f32, in the same
//! order as diffusers' tensor expressions, so the results agree with it to a few ulps.
//!
//! The step index is a counter (the pipeline calls `set_begin_index(0)`), not looked up from
//! the timestep.

use std::fmt;
use std::str::FromStr;

/// The training horizon of Wan's schedulers (`num_train_timesteps`).
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// The two samplers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// UniPC multistep (order 2, bh2) on flow sigmas: Wan2.1's default.
    UniPc,
    /// First-order flow-matching Euler.
    Euler,
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "unipc" => Ok(SchedulerKind::UniPc),
            "euler" => Ok(SchedulerKind::Euler),
            _ => Err(SchedulerError::UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchedulerKind::UniPc => "unipc",
            SchedulerKind::Euler => "euler",
        })
    }
}

/// An error building or stepping a scheduler.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// A schedule needs at least one inference step.
    #[error("the number of inference steps must be at least 1")]
    ZeroSteps,
    /// The training horizon must be at least 1.
    #[error("num_train_timesteps must be at least 1")]
    ZeroTrainTimesteps,
    /// The flow shift is NaN, infinite or not positive.
    #[error("flow shift must be finite and positive, got {0}")]
    BadShift(f64),
    /// `model_output` and `sample` (or the sample of an earlier step) differ in length.
    #[error("model output has {model_output} elements but the sample has {sample}")]
    LengthMismatch { model_output: usize, sample: usize },
    /// The sample's length differs from the one of the earlier steps.
    #[error("the sample has {got} elements but earlier steps had {expected}")]
    SampleChanged { expected: usize, got: usize },
    /// `step` was called after the last step of the schedule.
    #[error("step {step} requested but the schedule has only {steps} steps")]
    PastEnd { step: usize, steps: usize },
    /// A scheduler name other than `unipc` or `euler`.
    #[error("unknown scheduler `{0}` (expected `unipc` or `euler`)")]
    UnknownKind(String),
}

/// A flow-matching sampler: a sigma schedule and the update from one sample to the next.
pub trait Scheduler: Send {
    /// The timesteps of the schedule, one per step, as diffusers holds them (UniPC: integers,
    /// Euler: f32 values).
    fn timesteps(&self) -> &[f64];
    /// The sigmas, one per step plus the final 0 (f32 values).
    fn sigmas(&self) -> &[f64];
    /// The timestep fed to the DiT at step `i` (UniPC: int64-truncated, Euler: f32). Steps
    /// past the end give the last timestep.
    fn model_timestep(&self, i: usize) -> f32;
    /// Advances one step from `sample` with the model's velocity prediction `model_output`;
    /// returns the next sample.
    fn step(&mut self, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>, SchedulerError>;
    /// The index of the next step (the number of steps done so far).
    fn step_index(&self) -> usize;
    /// The number of inference steps.
    fn num_steps(&self) -> usize {
        self.timesteps().len()
    }
}

/// Builds a scheduler of `kind` with `num_inference_steps` steps, flow shift `shift` and
/// Wan's 1000 training timesteps.
pub fn new_scheduler(
    kind: SchedulerKind,
    num_inference_steps: usize,
    shift: f64,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(match kind {
        SchedulerKind::UniPc => Box::new(UniPcFlow::new(num_inference_steps, shift)?),
        SchedulerKind::Euler => Box::new(FlowEuler::new(num_inference_steps, shift)?),
    })
}

fn check_args(num_inference_steps: usize, shift: f64, train: usize) -> Result<(), SchedulerError> {
    if num_inference_steps == 0 {
        return Err(SchedulerError::ZeroSteps);
    }
    if train == 0 {
        return Err(SchedulerError::ZeroTrainTimesteps);
    }
    if !shift.is_finite() || shift <= 0.0 {
        return Err(SchedulerError::BadShift(shift));
    }
    Ok(())
}

/// `np.linspace(start, stop, num)` in f64, element for element as numpy computes it
/// (`i·step + start`, the last element set to `stop`).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = y.last_mut() {
        *last = stop;
    }
    y
}

/// The flow shift `shift·s / (1 + (shift − 1)·s)` in f64.
fn shift_f64(shift: f64, s: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

fn check_len(model_output: &[f32], sample: &[f32]) -> Result<(), SchedulerError> {
    if model_output.len() != sample.len() {
        return Err(SchedulerError::LengthMismatch { model_output: model_output.len(), sample: sample.len() });
    }
    Ok(())
}

// ---- UniPC ------------------------------------------------------------------------------

/// What the last UniPC step computed (borrowed from the scheduler's state).
#[derive(Clone, Copy, Debug)]
pub struct UniPcStepInfo<'a> {
    /// The data prediction `m_i = x_i − σ_i·v_i` of the step.
    pub x0_pred: &'a [f32],
    /// The sample after the UniC corrector (the input sample at step 0).
    pub corrected_sample: &'a [f32],
    /// The predictor order used at the step (1 or 2).
    pub order: usize,
}

/// UniPC multistep (order 2, bh2, predict-x0) on shifted flow sigmas; see the module docs.
#[derive(Clone, Debug)]
pub struct UniPcFlow {
    sigmas: Vec<f64>,
    sigmas_f32: Vec<f32>,
    timesteps: Vec<f64>,
    step_index: usize,
    /// Data predictions of the last two steps: `[m_{i−1}, m_i]`.
    model_outputs: [Option<Vec<f32>>; 2],
    /// The corrected sample of the last step (where its predictor started).
    last_sample: Option<Vec<f32>>,
    /// Predictor order of the last step.
    this_order: usize,
}

/// The solver order of Wan's UniPC configuration.
const SOLVER_ORDER: usize = 2;

impl UniPcFlow {
    /// The schedule for `num_inference_steps` steps and flow shift `shift`, with 1000
    /// training timesteps.
    pub fn new(num_inference_steps: usize, shift: f64) -> Result<Self, SchedulerError> {
        Self::with_train_timesteps(num_inference_steps, shift, NUM_TRAIN_TIMESTEPS)
    }

    /// As [`UniPcFlow::new`] with another `num_train_timesteps`.
    pub fn with_train_timesteps(
        num_inference_steps: usize,
        shift: f64,
        num_train_timesteps: usize,
    ) -> Result<Self, SchedulerError> {
        check_args(num_inference_steps, shift, num_train_timesteps)?;
        let train = num_train_timesteps as f64;
        // s = linspace(1, 1/T, N+1)[:-1], shifted; s[0] nudged below 1 so log(1−σ) is finite.
        let mut s: Vec<f64> = linspace(1.0, 1.0 / train, num_inference_steps + 1)
            .into_iter()
            .take(num_inference_steps)
            .map(|v| shift_f64(shift, v))
            .collect();
        if let Some(first) = s.first_mut() {
            if (*first - 1.0).abs() < 1e-6 {
                *first -= 1e-6;
            }
        }
        let timesteps: Vec<f64> = s.iter().map(|&v| (v * train).trunc()).collect();
        let mut sigmas_f32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
        sigmas_f32.push(0.0);
        Ok(UniPcFlow {
            sigmas: sigmas_f32.iter().map(|&v| f64::from(v)).collect(),
            sigmas_f32,
            timesteps,
            step_index: 0,
            model_outputs: [None, None],
            last_sample: None,
            this_order: 0,
        })
    }

    /// The sigmas (with the final 0) as diffusers' f32 tensor.
    pub fn sigmas_f32(&self) -> &[f32] {
        &self.sigmas_f32
    }

    /// The timesteps as diffusers' int64 tensor.
    pub fn timesteps_i64(&self) -> Vec<i64> {
        self.timesteps.iter().map(|&t| t as i64).collect()
    }

    /// The data prediction, corrected sample and order of the last step (`None` before the
    /// first step).
    pub fn last_step_info(&self) -> Option<UniPcStepInfo<'_>> {
        match (&self.model_outputs[1], &self.last_sample) {
            (Some(m), Some(x)) if self.step_index > 0 => {
                Some(UniPcStepInfo { x0_pred: m, corrected_sample: x, order: self.this_order })
            }
            _ => None,
        }
    }

    /// The predictor order step `i` uses: `min(2, N − i, i + 1)`.
    pub fn order_at(&self, i: usize) -> usize {
        let n = self.timesteps.len();
        SOLVER_ORDER.min(n.saturating_sub(i)).min(i.min(SOLVER_ORDER) + 1)
    }

    /// λ = ln(1 − σ) − ln(σ) in f32 (α = 1 − σ for flow sigmas).
    fn lambda(&self, i: usize) -> f32 {
        let sigma = self.sigmas_f32[i];
        let alpha = 1.0 - sigma;
        alpha.ln() - sigma.ln()
    }

    /// The UniC corrector at the current step index (≥ 1), `order` = the previous step's
    /// predictor order. `x` is the previous corrected sample, `m0` the previous data
    /// prediction, `m1` the one before it (order 2), `model_t` this step's prediction.
    fn correct(&self, model_t: &[f32], x: &[f32], m0: &[f32], m1: Option<&[f32]>, order: usize) -> Vec<f32> {
        let i = self.step_index;
        let sigma_t = self.sigmas_f32[i];
        let sigma_s0 = self.sigmas_f32[i - 1];
        let alpha_t = 1.0 - sigma_t;
        let lambda_t = self.lambda(i);
        let lambda_s0 = self.lambda(i - 1);
        let h = lambda_t - lambda_s0;
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let ratio = sigma_t / sigma_s0;
        let a_phi = alpha_t * h_phi_1;
        let a_b = alpha_t * b_h;
        match (order, m1) {
            (2, Some(m1)) => {
                let rk = (self.lambda(i - 2) - lambda_s0) / h;
                // vector_b = [h_phi_k·1!/B, h_phi_k'·2!/B] with h_phi_k = φ/hh − 1,
                // h_phi_k' = h_phi_k/hh − 1/2.
                let k1 = h_phi_1 / hh - 1.0;
                let b0 = k1 * 1.0 / b_h;
                let k2 = k1 / hh - 0.5;
                let b1 = k2 * 2.0 / b_h;
                let [rho0, rho1] = solve2([[1.0, 1.0], [rk, 1.0]], [b0, b1]);
                x.iter()
                    .zip(m0)
                    .zip(m1)
                    .zip(model_t)
                    .map(|(((&x, &m0), &m1), &mt)| {
                        let x_t_ = ratio * x - a_phi * m0;
                        let d1 = (m1 - m0) / rk;
                        let corr = rho0 * d1 + rho1 * (mt - m0);
                        x_t_ - a_b * corr
                    })
                    .collect()
            }
            _ => x
                .iter()
                .zip(m0)
                .zip(model_t)
                .map(|((&x, &m0), &mt)| {
                    let x_t_ = ratio * x - a_phi * m0;
                    x_t_ - a_b * (0.5 * (mt - m0))
                })
                .collect(),
        }
    }

    /// The UniP predictor from the current step index to the next, with `order`.
    fn predict(&self, x: &[f32], m0: &[f32], m1: Option<&[f32]>, order: usize) -> Vec<f32> {
        let i = self.step_index;
        let sigma_t = self.sigmas_f32[i + 1];
        if sigma_t == 0.0 {
            // σ = 0: λ = +∞, φ = −1, so the update is exactly the data prediction.
            return m0.to_vec();
        }
        let sigma_s0 = self.sigmas_f32[i];
        let alpha_t = 1.0 - sigma_t;
        let lambda_s0 = self.lambda(i);
        let h = self.lambda(i + 1) - lambda_s0;
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let ratio = sigma_t / sigma_s0;
        let a_phi = alpha_t * h_phi_1;
        let a_b = alpha_t * b_h;
        match (order, m1) {
            (2, Some(m1)) => {
                let rk = (self.lambda(i - 1) - lambda_s0) / h;
                x.iter()
                    .zip(m0)
                    .zip(m1)
                    .map(|((&x, &m0), &m1)| {
                        let x_t_ = ratio * x - a_phi * m0;
                        let d1 = (m1 - m0) / rk;
                        x_t_ - a_b * (0.5 * d1)
                    })
                    .collect()
            }
            _ => x.iter().zip(m0).map(|(&x, &m0)| ratio * x - a_phi * m0).collect(),
        }
    }
}

/// Solves a 2×2 system in f32 the way LAPACK's `sgesv` does (LU with partial pivoting, the
/// column scaled by the pivot's reciprocal, then two triangular solves).
fn solve2(a: [[f32; 2]; 2], b: [f32; 2]) -> [f32; 2] {
    let (a, b) = if a[1][0].abs() > a[0][0].abs() { ([a[1], a[0]], [b[1], b[0]]) } else { (a, b) };
    let l = a[1][0] * (1.0 / a[0][0]);
    let u11 = a[1][1] - l * a[0][1];
    let y1 = b[1] - l * b[0];
    let x1 = y1 / u11;
    let x0 = (b[0] - x1 * a[0][1]) / a[0][0];
    [x0, x1]
}

impl Scheduler for UniPcFlow {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn model_timestep(&self, i: usize) -> f32 {
        let i = i.min(self.timesteps.len().saturating_sub(1));
        self.timesteps.get(i).map_or(0.0, |&t| t as f32)
    }

    fn step(&mut self, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>, SchedulerError> {
        let n = self.timesteps.len();
        if self.step_index >= n {
            return Err(SchedulerError::PastEnd { step: self.step_index, steps: n });
        }
        check_len(model_output, sample)?;
        if let Some(prev) = &self.last_sample {
            if prev.len() != sample.len() {
                return Err(SchedulerError::SampleChanged { expected: prev.len(), got: sample.len() });
            }
        }
        // 1. Convert the velocity to a data prediction: m = x − σ·v.
        let sigma = self.sigmas_f32[self.step_index];
        let m: Vec<f32> = sample.iter().zip(model_output).map(|(&x, &v)| x - sigma * v).collect();
        // 2. UniC corrector from the previous step's corrected sample.
        let corrected = match (&self.last_sample, &self.model_outputs[1]) {
            (Some(last), Some(m0)) if self.step_index > 0 => {
                self.correct(&m, last, m0, self.model_outputs[0].as_deref(), self.this_order)
            }
            _ => sample.to_vec(),
        };
        // 3. History (m_{i-1}, m_i), order, then the UniP predictor from the corrected sample.
        let previous = self.model_outputs[1].take();
        self.this_order = self.order_at(self.step_index);
        let prev = self.predict(&corrected, &m, previous.as_deref(), self.this_order);
        self.model_outputs = [previous, Some(m)];
        self.last_sample = Some(corrected);
        self.step_index += 1;
        Ok(prev)
    }

    fn step_index(&self) -> usize {
        self.step_index
    }
}

// ---- Euler ------------------------------------------------------------------------------

/// `FlowMatchEulerDiscreteScheduler(shift)`: `x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i` in f32.
#[derive(Clone, Debug)]
pub struct FlowEuler {
    sigmas: Vec<f64>,
    sigmas_f32: Vec<f32>,
    timesteps: Vec<f64>,
    timesteps_f32: Vec<f32>,
    step_index: usize,
}

impl FlowEuler {
    /// The schedule for `num_inference_steps` steps and shift `shift`, with 1000 training
    /// timesteps.
    pub fn new(num_inference_steps: usize, shift: f64) -> Result<Self, SchedulerError> {
        Self::with_train_timesteps(num_inference_steps, shift, NUM_TRAIN_TIMESTEPS)
    }

    /// As [`FlowEuler::new`] with another `num_train_timesteps`.
    pub fn with_train_timesteps(
        num_inference_steps: usize,
        shift: f64,
        num_train_timesteps: usize,
    ) -> Result<Self, SchedulerError> {
        check_args(num_inference_steps, shift, num_train_timesteps)?;
        let train = num_train_timesteps as f64;
        // Construction (f32 tensors): the training table k/T, k = T…1, shifted once;
        // sigma_max and sigma_min are its ends.
        let shift32 = shift as f32;
        let shifted32 = |s: f32| shift32 * s / (1.0 + (shift - 1.0) as f32 * s);
        // (The table's first entry T/T is exactly 1.)
        let sigma_max = f64::from(shifted32(1.0));
        let sigma_min = f64::from(shifted32(1.0 / num_train_timesteps as f32));
        // set_timesteps (f64): linspace of timesteps, back to sigmas, shifted again.
        let sigmas_f32: Vec<f32> = linspace(sigma_max * train, sigma_min * train, num_inference_steps)
            .into_iter()
            .map(|t| shift_f64(shift, t / train) as f32)
            .collect();
        let timesteps_f32: Vec<f32> = sigmas_f32.iter().map(|&s| s * num_train_timesteps as f32).collect();
        let mut sigmas_f32 = sigmas_f32;
        sigmas_f32.push(0.0);
        Ok(FlowEuler {
            sigmas: sigmas_f32.iter().map(|&v| f64::from(v)).collect(),
            sigmas_f32,
            timesteps: timesteps_f32.iter().map(|&v| f64::from(v)).collect(),
            timesteps_f32,
            step_index: 0,
        })
    }

    /// The timesteps as diffusers' f32 tensor.
    pub fn timesteps_f32(&self) -> &[f32] {
        &self.timesteps_f32
    }

    /// The sigmas (with the final 0) as diffusers' f32 tensor.
    pub fn sigmas_f32(&self) -> &[f32] {
        &self.sigmas_f32
    }
}

impl Scheduler for FlowEuler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn model_timestep(&self, i: usize) -> f32 {
        let i = i.min(self.timesteps_f32.len().saturating_sub(1));
        self.timesteps_f32.get(i).copied().unwrap_or(0.0)
    }

    fn step(&mut self, model_output: &[f32], sample: &[f32]) -> Result<Vec<f32>, SchedulerError> {
        let n = self.timesteps_f32.len();
        if self.step_index >= n {
            return Err(SchedulerError::PastEnd { step: self.step_index, steps: n });
        }
        check_len(model_output, sample)?;
        let dt = self.sigmas_f32[self.step_index + 1] - self.sigmas_f32[self.step_index];
        self.step_index += 1;
        Ok(sample.iter().zip(model_output).map(|(&x, &v)| x + dt * v).collect())
    }

    fn step_index(&self) -> usize {
        self.step_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 1.3).collect()
    }

    #[test]
    fn kind_parses_and_prints() {
        for k in [SchedulerKind::UniPc, SchedulerKind::Euler] {
            assert_eq!(k.to_string().parse::<SchedulerKind>(), Ok(k));
        }
        assert_eq!("UniPC".parse::<SchedulerKind>(), Ok(SchedulerKind::UniPc));
        assert!(matches!("ddim".parse::<SchedulerKind>(), Err(SchedulerError::UnknownKind(_))));
    }

    #[test]
    fn unipc_sigmas_endpoints_and_monotone() {
        for n in [1, 2, 3, 4, 10, 50] {
            for shift in [1.0, 3.0, 5.0, 16.0] {
                let s = UniPcFlow::new(n, shift).map_err(|e| e.to_string());
                let s = s.as_ref().map_err(String::as_str);
                let Ok(s) = s else { panic!("n {n} shift {shift}: {s:?}") };
                let sig = s.sigmas();
                assert_eq!(sig.len(), n + 1);
                assert_eq!(s.timesteps().len(), n);
                assert!(sig[0] < 1.0 && sig[0] > 0.999, "first sigma {} (nudged below 1)", sig[0]);
                assert_eq!(sig[n], 0.0);
                assert!(sig.windows(2).all(|w| w[0] > w[1]), "{sig:?}");
                assert_eq!(s.timesteps()[0], 999.0);
                assert!(s.timesteps().iter().all(|t| t.fract() == 0.0));
                assert!(s.timesteps().windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn unipc_n4_shift3_timesteps() {
        let Ok(s) = UniPcFlow::new(4, 3.0) else { panic!("valid arguments") };
        assert_eq!(s.timesteps_i64(), vec![999, 900, 750, 500]);
        assert_eq!(s.model_timestep(1), 900.0);
    }

    #[test]
    fn euler_sigmas_endpoints_and_monotone() {
        for n in [1, 2, 4, 10, 50] {
            for shift in [1.0, 3.0, 5.0] {
                let Ok(s) = FlowEuler::new(n, shift) else { panic!("valid arguments") };
                let sig = s.sigmas();
                assert_eq!(sig.len(), n + 1);
                assert_eq!(sig[0], 1.0);
                assert_eq!(s.model_timestep(0), 1000.0);
                assert_eq!(sig[n], 0.0);
                assert!(sig.windows(2).all(|w| w[0] > w[1]), "{sig:?}");
                for (t, s) in s.timesteps_f32().iter().zip(s.sigmas_f32()) {
                    assert_eq!(*t, s * 1000.0);
                }
            }
        }
    }

    #[test]
    fn unipc_order_schedule() {
        let expect: [(usize, &[usize]); 4] = [(1, &[1]), (2, &[1, 1]), (3, &[1, 2, 1]), (5, &[1, 2, 2, 2, 1])];
        for (n, orders) in expect {
            let Ok(mut s) = UniPcFlow::new(n, 3.0) else { panic!("valid arguments") };
            assert!(s.last_step_info().is_none());
            let mut x = pattern(24, 0.1);
            let mut got = Vec::new();
            for (i, &order) in orders.iter().enumerate() {
                assert_eq!(s.order_at(i), order);
                let x_in = x.clone();
                x = match s.step(&pattern(24, i as f32), &x) {
                    Ok(v) => v,
                    Err(e) => panic!("{e}"),
                };
                let Some(info) = s.last_step_info() else { panic!("info after a step") };
                if i == 0 {
                    assert_eq!(info.corrected_sample, x_in.as_slice());
                }
                got.push(info.order);
            }
            assert_eq!(got, orders, "n = {n}");
            assert_eq!(s.step_index(), n);
        }
    }

    #[test]
    fn unipc_last_step_returns_data_prediction() {
        let Ok(mut s) = UniPcFlow::new(3, 5.0) else { panic!("valid arguments") };
        let mut x = pattern(16, 0.4);
        for i in 0..3 {
            let Ok(next) = s.step(&pattern(16, 2.0 + i as f32), &x) else { panic!("step {i}") };
            x = next;
        }
        let Some(info) = s.last_step_info() else { panic!("info") };
        assert_eq!(x.as_slice(), info.x0_pred);
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn unipc_recovers_constant_velocity_flow() {
        // x_σ = (1−σ)·x0 + σ·ε with v = ε − x0 exactly: every data prediction is x0 and the
        // sampler lands on x0.
        let x0 = pattern(32, 0.9);
        let eps = pattern(32, 3.3);
        let v: Vec<f32> = eps.iter().zip(&x0).map(|(e, x)| e - x).collect();
        for kind in [SchedulerKind::UniPc, SchedulerKind::Euler] {
            let Ok(mut s) = new_scheduler(kind, 8, 3.0) else { panic!("valid arguments") };
            let s0 = s.sigmas()[0] as f32;
            let mut x: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| (1.0 - s0) * a + s0 * e).collect();
            for _ in 0..8 {
                let Ok(next) = s.step(&v, &x) else { panic!("{kind} step") };
                x = next;
            }
            let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "{kind}: max error {err}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(UniPcFlow::new(0, 3.0).err(), Some(SchedulerError::ZeroSteps));
        assert_eq!(FlowEuler::new(0, 3.0).err(), Some(SchedulerError::ZeroSteps));
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            assert!(matches!(new_scheduler(SchedulerKind::UniPc, 4, bad), Err(SchedulerError::BadShift(_))));
            assert!(matches!(new_scheduler(SchedulerKind::Euler, 4, bad), Err(SchedulerError::BadShift(_))));
        }
        for kind in [SchedulerKind::UniPc, SchedulerKind::Euler] {
            let Ok(mut s) = new_scheduler(kind, 2, 3.0) else { panic!("valid arguments") };
            assert_eq!(
                s.step(&[1.0; 3], &[1.0; 4]).err(),
                Some(SchedulerError::LengthMismatch { model_output: 3, sample: 4 })
            );
            assert!(s.step(&[0.5; 4], &[1.0; 4]).is_ok());
            assert!(s.step(&[0.5; 4], &[1.0; 4]).is_ok());
            assert_eq!(s.step(&[0.5; 4], &[1.0; 4]).err(), Some(SchedulerError::PastEnd { step: 2, steps: 2 }));
        }
        let Ok(mut s) = UniPcFlow::new(3, 3.0) else { panic!("valid arguments") };
        assert!(s.step(&[0.5; 4], &[1.0; 4]).is_ok());
        assert_eq!(s.step(&[0.5; 5], &[1.0; 5]).err(), Some(SchedulerError::SampleChanged { expected: 4, got: 5 }));
    }
}
