//! vidrt-runtime: the [`Backend`] trait, the CPU reference backend (the oracle for every
//! test and the embedded default) and the executor.
//!
//! ```
//! use vidrt_ir::{DType, Graph, Tensor};
//! use vidrt_runtime::{Backend, CpuBackend, NoWeights};
//! let mut g = Graph::new();
//! let x = g.input("x", [2, 3], DType::F32)?;
//! let y = g.silu(x)?;
//! g.set_output("y", y)?;
//! let mut exe = CpuBackend::new().compile(&g, &NoWeights)?;
//! let out = exe.run(&[("x", Tensor::from_f32([2, 3], vec![0.0, 1.0, -1.0, 2.0, 3.0, -4.0])?)])?;
//! assert_eq!(out[0].0, "y");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
pub mod cpu;
pub mod cuda_sim;
mod error;
pub mod tune;

pub use backend::{
    Backend, CheckEveryNode, Executable, MemoryLimited, NoWeights, ReducedPrecision, RunOptions, Support, WeightSource,
};
pub use cpu::CpuBackend;
pub use cuda_sim::SimBackend;
pub use error::RuntimeError;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;
