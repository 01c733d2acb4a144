//! Golden evaluation of the `ops` case. Not implemented yet: produces nothing, so every
//! check reports "not produced" and the case fails.

use vidrt_runtime::Backend;

use super::Outputs;
use crate::error::Result;
use crate::golden::Case;

pub fn run(_case: &Case, _backend: &dyn Backend) -> Result<Outputs> {
    Ok(Outputs::new())
}
