//! The facade's error type: everything a pipeline or an evaluation can fail with, typed.

use std::path::PathBuf;

use vidrt_graph::WeightError;
use vidrt_ir::IrError;
use vidrt_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A golden case or model folder is not laid out as expected.
    #[error("{path}: {reason}")]
    Case { path: PathBuf, reason: String },
    /// An argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Other component-specific failures.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the work was stopped on request (a cancel flag, Ctrl-C).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Runtime(RuntimeError::Cancelled))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
