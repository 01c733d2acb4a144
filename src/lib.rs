//! vidrt: a kernel runtime and compiler for video generation models (Wan2.1 text-to-video)
//! with no framework underneath. This crate is the facade: the pipeline API, golden-case
//! evaluation and the pieces the `vidrt` command line uses.

pub mod bench;
pub mod error;
pub mod eval;
/// The fuzz targets' bodies (for `fuzz/` and `tests/fuzz_corpus.rs`), not a user API.
#[doc(hidden)]
pub mod fuzzing;
pub mod golden;
pub mod harness;
pub mod inspect;
pub mod pipeline;
pub mod text;
pub mod tune;
pub mod vae;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
pub use vidrt_graph as graph;
pub use vidrt_ir as ir;
pub use vidrt_runtime as runtime;
