//! vidrt-kernels: kernel generators that never touch a device.
//!
//! - [`ptx`]: a typed PTX builder, one module per kernel family, and a CPU simulator of the
//!   builder's instruction set (how CI checks kernel numerics without a GPU).
//! - [`wgsl`]: WGSL compute shaders, one module per kernel family.

pub mod ptx;
pub mod wgsl;
