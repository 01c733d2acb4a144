//! PTX generation: a typed builder ([`builder`]), text emission for sm_80 and sm_90a
//! ([`emit`](mod@emit)), one module per kernel family ([`kernels`]), the lowering of IR ops to kernel
//! launches ([`lower`]) with its tuning hook ([`tune`]) and a CPU simulator of the builder's
//! instruction set ([`sim`]).
//!
//! The builder, emitter and simulator have the sm_80 tensor-core instructions (`ldmatrix`,
//! `cp.async` with commit/wait groups, `mma.sync` m16n8k16 bf16/f16, `cvt.rn.{bf16,f16}x2.f32`);
//! `kernels::gemm_mma` is a tensor-core GEMM built on them. For sm_90a they also have
//! `wgmma.mma_async` (shared-memory descriptors) with its fence/commit/wait and
//! `fence.proxy.async` ([`emit::try_emit`] refuses those for sm_80); `kernels::gemm_wgmma`
//! is the Hopper GEMM built on them, chosen by the lowering when the target is sm_90a
//! ([`tune::Chooser::target`]). They also have mbarriers and TMA tile loads
//! (`cp.async.bulk.tensor` with a tensor-map parameter described by [`tma::TensorMapDesc`],
//! simulated by `sim`'s `tma` module); `kernels::gemm_wgmma_tma` is the wgmma GEMM fed by
//! them, which the sm_90a lowering prefers.

pub mod builder;
pub mod catalog;
pub mod emit;
pub mod inst;
pub mod kernels;
pub mod lower;
pub mod sim;
pub mod tma;
pub mod tune;

pub use builder::{Kernel, KernelBuilder, Target};
pub use emit::{emit, text_hash, try_emit, TargetError};

/// An error generating a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// No kernel exists for this op, dtype or shape (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request is malformed (a bad parameter point or shape).
    #[error("invalid kernel request: {0}")]
    Invalid(String),
}
