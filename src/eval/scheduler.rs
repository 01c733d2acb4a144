//! Golden evaluation of the `scheduler` case: for every file the case's `config.files` names
//! (flow shift and step count each), runs UniPC and flow-Euler from `sample0` over the fixed
//! `model_outputs` (`x = step(model_outputs[i], x)`, the step index a counter from 0) and
//! produces the sigma and timestep tables and every per-step tensor the checks name.

use vidrt_graph::scheduler::{FlowEuler, Scheduler, SchedulerError, UniPcFlow, NUM_TRAIN_TIMESTEPS};
use vidrt_ir::Tensor;
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;

/// Runs both schedulers for every file of the case.
pub fn run(case: &Case, _backend: &dyn Backend) -> Result<Outputs> {
    let config = case.config();
    let files =
        config.get("files").and_then(|f| f.as_object()).ok_or_else(|| case.error("config has no `files` table"))?;
    let unipc_train =
        train_timesteps(config, "unipc_full_config").or_else(|| train_timesteps(config, "unipc_init_kwargs"));
    let euler_train = train_timesteps(config, "euler_init_kwargs");
    let mut out = Outputs::new();
    for (file, spec) in files {
        let shift = spec
            .get("flow_shift")
            .or_else(|| spec.get("shift"))
            .and_then(|v| v.as_f64())
            .ok_or_else(|| case.error(format!("{file}: no numeric `flow_shift`")))?;
        let steps = spec
            .get("num_inference_steps")
            .and_then(|v| v.as_u64())
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| case.error(format!("{file}: no `num_inference_steps`")))?;
        let sample0 = case.tensor(file, "sample0")?;
        let model_outputs = case.tensor(file, "model_outputs")?;
        let per_step = model_output_slices(case, file, &sample0, &model_outputs, steps)?;
        let sample = sample0.to_f32_vec();

        let sched = |e: SchedulerError| Error::Other(format!("{}: {file}: {e}", case.dir.display()));
        let mut unipc =
            UniPcFlow::with_train_timesteps(steps, shift, unipc_train.unwrap_or(NUM_TRAIN_TIMESTEPS)).map_err(sched)?;
        put(&mut out, file, "unipc.sigmas", tensor_f32(&[steps + 1], unipc.sigmas_f32().to_vec())?);
        put(&mut out, file, "unipc.timesteps", tensor_i64(&[steps], unipc.timesteps_i64())?);
        let (mut x0, mut corrected, mut prev, mut order) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut x = sample.clone();
        for v in &per_step {
            x = unipc.step(v, &x).map_err(sched)?;
            let info = unipc.last_step_info().ok_or_else(|| Error::Other("UniPC kept no step state".into()))?;
            x0.extend_from_slice(info.x0_pred);
            corrected.extend_from_slice(info.corrected_sample);
            order.push(info.order as i64);
            prev.extend_from_slice(&x);
        }
        let stacked = model_outputs.dims();
        put(&mut out, file, "unipc.order", tensor_i64(&[steps], order)?);
        put(&mut out, file, "unipc.x0_pred", tensor_f32(stacked, x0)?);
        put(&mut out, file, "unipc.corrected_sample", tensor_f32(stacked, corrected)?);
        put(&mut out, file, "unipc.prev_samples", tensor_f32(stacked, prev)?);

        let mut euler =
            FlowEuler::with_train_timesteps(steps, shift, euler_train.unwrap_or(NUM_TRAIN_TIMESTEPS)).map_err(sched)?;
        put(&mut out, file, "euler.sigmas", tensor_f32(&[steps + 1], euler.sigmas_f32().to_vec())?);
        put(&mut out, file, "euler.timesteps", tensor_f32(&[steps], euler.timesteps_f32().to_vec())?);
        let mut prev = Vec::new();
        let mut x = sample;
        for v in &per_step {
            x = euler.step(v, &x).map_err(sched)?;
            prev.extend_from_slice(&x);
        }
        put(&mut out, file, "euler.prev_samples", tensor_f32(stacked, prev)?);
    }
    Ok(out)
}

/// `num_train_timesteps` of a config sub-table, when it is there.
fn train_timesteps(config: &serde_json::Value, table: &str) -> Option<usize> {
    config.get(table)?.get("num_train_timesteps")?.as_u64().and_then(|v| usize::try_from(v).ok())
}

/// Splits `model_outputs` `[steps, ..sample0.shape]` into one slice per step.
fn model_output_slices(
    case: &Case,
    file: &str,
    sample0: &Tensor,
    model_outputs: &Tensor,
    steps: usize,
) -> Result<Vec<Vec<f32>>> {
    let dims = model_outputs.dims();
    if dims.first() != Some(&steps) || &dims[1..] != sample0.dims() {
        return Err(case.error(format!(
            "{file}: model_outputs {} does not stack {steps} tensors of sample0's shape {}",
            model_outputs.shape(),
            sample0.shape()
        )));
    }
    let all = model_outputs.to_f32_vec();
    let len = sample0.numel();
    Ok((0..steps).map(|i| all[i * len..(i + 1) * len].to_vec()).collect())
}

fn tensor_f32(dims: &[usize], v: Vec<f32>) -> Result<Tensor> {
    Tensor::from_f32(dims.to_vec(), v).map_err(|e| Error::Other(e.to_string()))
}

fn tensor_i64(dims: &[usize], v: Vec<i64>) -> Result<Tensor> {
    Tensor::from_i64(dims.to_vec(), v).map_err(|e| Error::Other(e.to_string()))
}
