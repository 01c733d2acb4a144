//! Golden evaluation of the `text_encoder` case: builds the umT5 encoder from the case's
//! `UMT5Config`, binds `weights.safetensors` and produces every check: the masked run
//! (`last_hidden_state`, `prompt_embeds` and the activations), the unmasked run
//! (`nomask_last_hidden_state`) and the relative-position bucket table.

use vidrt_graph::umt5::{relative_bucket, Umt5Config, Umt5Options};
use vidrt_graph::WeightStore;
use vidrt_ir::{DType, Tensor};
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;
use crate::text::{zero_pad_embeds, TextEncoder};
use crate::weights::StoreWeights;

/// The file holding the model inputs and outputs.
const IO_FILE: &str = "io.safetensors";
/// The file holding the hooked intermediates.
const ACTIVATIONS_FILE: &str = "activations.safetensors";

pub fn run(case: &Case, backend: &dyn Backend) -> Result<Outputs> {
    let json =
        case.config().get("UMT5Config").cloned().ok_or_else(|| case.error("config has no `UMT5Config` object"))?;
    let cfg = Umt5Config::from_value(json).map_err(|e| case.error(e.to_string()))?;

    let store = WeightStore::from_file(case.dir.join("weights.safetensors"))?;
    let weights = StoreWeights::new(&store);
    let opts = Umt5Options { activations: true, dtype: DType::F32 };
    let mut encoder = TextEncoder::new(backend, &weights, cfg.clone(), opts)?;
    let mut out = Outputs::new();

    // Masked batch: last_hidden_state, the activations and the pipeline's prompt_embeds.
    let ids = case.tensor(IO_FILE, "input_ids")?;
    let mask = case.tensor(IO_FILE, "attention_mask")?;
    let max_sequence_length = *ids.dims().get(1).ok_or_else(|| case.error("input_ids must be [B, L]"))?;
    for (name, t) in encoder.forward(&ids, &mask)? {
        if name == "last_hidden_state" {
            put(&mut out, IO_FILE, "prompt_embeds", zero_pad_embeds(&t, &mask, max_sequence_length)?);
            put(&mut out, IO_FILE, &name, t);
        } else {
            put(&mut out, ACTIVATIONS_FILE, &name, t);
        }
    }

    // Unmasked run: every position is a real token.
    let ids = case.tensor(IO_FILE, "nomask_input_ids")?;
    let ones = Tensor::full(ids.shape().clone(), DType::I64, 1.0);
    put(&mut out, IO_FILE, "nomask_last_hidden_state", encoder.encode_ids(&ids, &ones)?);

    // Bucket ids of the given relative positions, by the function the graph's op computes.
    let rel = case.tensor(IO_FILE, "relative_position")?;
    if !rel.dtype().is_int() {
        return Err(case.error(format!("relative_position must be an integer tensor, got {}", rel.dtype())));
    }
    let buckets: Vec<i64> = rel.to_i64_vec().into_iter().map(|r| relative_bucket(&cfg, r)).collect();
    let buckets = Tensor::from_i64(rel.shape().clone(), buckets).map_err(|e| Error::Other(e.to_string()))?;
    put(&mut out, IO_FILE, "relative_bucket", buckets);
    Ok(out)
}
