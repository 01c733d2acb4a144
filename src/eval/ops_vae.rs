//! Golden `ops` sub-cases that exercise VAE blocks (`vae_resample`, `vae_attention_block`).
//! Not implemented yet: produces nothing.

use vidrt_runtime::Backend;

use super::Outputs;
use crate::error::Result;
use crate::golden::Case;

/// Adds the outputs of the VAE-block op files to `out`.
pub fn run(_case: &Case, _backend: &dyn Backend, _out: &mut Outputs) -> Result<()> {
    Ok(())
}
