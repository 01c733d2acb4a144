//! Golden evaluation of the `dit` case: builds the Wan DiT graph from the case's
//! `init_kwargs` and the io file's tensor shapes, binds `weights.safetensors`, runs it with
//! every intermediate the activations file holds, and returns each check's tensor.

use vidrt_graph::wan_dit::{build_dit, DitError, DitOptions, DitShape, WanDitConfig};
use vidrt_graph::WeightStore;
use vidrt_ir::{DType, Tensor};
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;
use crate::weights::StoreWeights;

/// The file holding the model inputs and the final output.
const IO_FILE: &str = "io.safetensors";
/// The file holding the hooked intermediates.
const ACTIVATIONS_FILE: &str = "activations.safetensors";

fn dit_error(case: &Case, e: DitError) -> Error {
    match e {
        DitError::Ir(e) => Error::Ir(e),
        other => case.error(other.to_string()),
    }
}

/// The dims of `tensor` in `file`, with the rank `rank`.
fn dims(case: &Case, file: &str, tensor: &str, rank: usize) -> Result<Vec<usize>> {
    let shape = case.file(file)?.shape(tensor).ok_or_else(|| case.error(format!("{file} has no `{tensor}`")))?;
    if shape.rank() != rank {
        return Err(case.error(format!("{file}:{tensor} has shape {shape}, expected rank {rank}")));
    }
    Ok(shape.dims().to_vec())
}

pub fn run(case: &Case, backend: &dyn Backend) -> Result<Outputs> {
    let kwargs =
        case.config().get("init_kwargs").ok_or_else(|| case.error("config has no `init_kwargs` for the DiT"))?;
    let cfg = WanDitConfig::from_json(kwargs).map_err(|e| dit_error(case, e))?;

    // Shapes come from the io file (the config's "input" block is informational).
    let x = dims(case, IO_FILE, "hidden_states", 5)?;
    let ctx = dims(case, IO_FILE, "encoder_hidden_states", 3)?;
    let shape = DitShape { batch: x[0], frames: x[2], height: x[3], width: x[4], text_len: ctx[1] };
    let graph = build_dit(&cfg, &shape, &DitOptions { activations: true }).map_err(|e| dit_error(case, e))?;

    let store = WeightStore::from_file(case.dir.join("weights.safetensors"))?;
    let mut exe = backend.compile(&graph, &StoreWeights::new(&store))?;

    let mut inputs: Vec<(&str, Tensor)> = Vec::with_capacity(case.inputs.len());
    for r in &case.inputs {
        let t = case.tensor(&r.file, &r.tensor)?;
        // The pipeline passes integer timesteps; the model turns them into float.
        let t = if t.dtype().is_float() { t } else { t.cast(DType::F32) };
        inputs.push((r.tensor.as_str(), t));
    }
    let produced = exe.run(&inputs)?;

    let mut out = Outputs::new();
    for (name, t) in produced {
        let file = case
            .checks
            .iter()
            .find(|c| c.tensor == name)
            .map(|c| c.file.clone())
            .unwrap_or_else(|| if name == "output" { IO_FILE } else { ACTIVATIONS_FILE }.to_string());
        put(&mut out, &file, &name, t);
    }
    Ok(out)
}
