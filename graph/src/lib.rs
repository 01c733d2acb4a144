//! vidrt-graph: the Wan2.1 model graphs built from configs (DiT, VAE, umT5 text encoder),
//! the flow-matching schedulers, model configs and weight loading. It builds
//! [`vidrt_ir::Graph`]s and never knows a backend.

pub mod config;
pub mod scheduler;
pub mod umt5;
pub mod wan_dit;
pub mod wan_vae;
pub mod weights;

pub use weights::{SafeTensorsFile, WeightError, WeightStore};
