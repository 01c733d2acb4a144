//! Typed runtime errors.

use vidrt_ir::{DType, IrError, Shape};

/// An error compiling or running a graph on a backend.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The backend has no kernel for this op and dtype. Backends never fall back silently.
    #[error("backend `{backend}` does not support {op} on {dtype} (node %{node} `{name}`): {reason}")]
    Unsupported { backend: &'static str, op: &'static str, dtype: DType, node: usize, name: String, reason: String },
    /// A graph input was not fed, or fed twice, or fed something it does not have.
    #[error("input `{name}`: {reason}")]
    BadInput { name: String, reason: String },
    /// A weight could not be bound.
    #[error("weight `{name}`: {reason}")]
    Weight { name: String, reason: String },
    /// A tensor has the wrong shape or dtype for where it is used.
    #[error("`{name}`: expected {expected_dtype}{expected}, got {got_dtype}{got}")]
    ShapeMismatch { name: String, expected: Shape, expected_dtype: DType, got: Shape, got_dtype: DType },
    /// An output (or, in debug mode, an intermediate) holds NaN or infinity.
    #[error("node %{node} `{name}` ({op}) produced a non-finite value at element {index}")]
    NonFinite { node: usize, name: String, op: &'static str, index: usize },
    /// Memory needed exceeds what is allowed or available.
    #[error("out of memory: {what} needs {needed} bytes, {available} available")]
    OutOfMemory { what: String, needed: u64, available: u64 },
    /// A run was cancelled through its cancel flag.
    #[error("cancelled")]
    Cancelled,
    /// A device or driver failure.
    #[error("device error: {0}")]
    Device(String),
    /// The device is gone (a driver reset, a removed GPU, a fatal fault, or the device was
    /// destroyed): executables compiled on it cannot run again. The message says how to go on
    /// (wgpu: open a new backend; CUDA after a fatal fault: restart the process).
    #[error("device lost: {0}")]
    DeviceLost(String),
}
