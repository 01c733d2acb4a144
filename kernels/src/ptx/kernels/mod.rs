//! Kernel families, one module each. Every generator takes shapes and dtypes as
//! generation-time constants and a parameter point from its family's `param_space`.

pub mod attention;
pub mod common;
pub mod conv3d;
pub mod conv3d_wgmma;
pub mod copy;
pub mod elementwise;
pub mod embed;
pub mod gemm;
pub mod gemm_mma;
pub mod gemm_wgmma;
pub mod gemm_wgmma_tma;
pub mod im2col;
pub mod rowwise;
