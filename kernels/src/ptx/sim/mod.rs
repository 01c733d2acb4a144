//! A CPU simulator of the builder's instruction set: it runs a [`Kernel`] over a 1-D grid of
//! blocks, each block's threads grouped in warps of 32, with per-block shared memory and
//! `bar.sync`. It is how CI checks kernel numerics without a GPU.
//!
//! Semantics follow the PTX ISA with these choices:
//! - threads run one at a time up to their next synchronisation point (`bar.sync`, a warp
//!   shuffle, exit); between two barriers a correct kernel's result does not depend on the
//!   interleaving, so this is faithful for race-free kernels;
//! - `shfl.sync` (full member mask) requires all 32 lanes of the warp at the same shuffle;
//!   `bar.sync` requires every thread of the block at the same barrier. Anything else is a
//!   [`SimError::Divergence`];
//! - every global, shared and const access is bounds- and alignment-checked
//!   ([`SimError::OutOfBounds`], [`SimError::Misaligned`]); global addresses encode their
//!   buffer, so an access can never silently land in a neighbouring tensor;
//! - approximate instructions (`ex2.approx`, `lg2.approx`, `rsqrt.approx`, `sin/cos.approx`)
//!   compute the correctly rounded f32 result; the hardware's documented error bounds are
//!   below the tolerances the kernels are tested with;
//! - shared memory starts filled with 0xFF bytes (NaN in every float type) to expose reads
//!   of unwritten data; a block gets the kernel's static or dynamic shared memory
//!   ([`Kernel::shared_total`]: a launch passes exactly the dynamic bytes the kernel records),
//!   and a kernel needing more than the device's per-block maximum ([`DeviceLimits`]) is a
//!   [`SimError::BadLaunch`], as the driver refuses it; the block's shared memory sits at
//!   shared address [`shared_window`] (the kernel's declared alignment, 16 unless it asks for
//!   more, and the addresses below it are out of bounds), so an undeclared alignment shows;
//! - `ldmatrix` and `mma.sync` are warp-collective like `shfl.sync` (all 32 lanes at the same
//!   instruction), with the PTX ISA's fragment layouts; `mma` accumulates in f32 in k order;
//! - `cp.async` reads its source at issue but writes shared memory only when a
//!   `cp.async.wait_group`/`wait_all` covers its commit group (or the thread exits); touching
//!   shared bytes with a pending copy is a [`SimError::AsyncHazard`];
//! - mbarriers and `cp.async.bulk.tensor` (TMA) follow `sim::tma`'s rules: a wait that is not
//!   yet satisfied blocks its thread, copies land at a wait on their mbarrier, reading a
//!   copy's destination before that is a hazard, and waits that can never complete are a
//!   [`SimError::Deadlock`];
//! - the sm_90a `wgmma.*` instructions are warpgroup-collective (128 threads), read their
//!   shared operands through matrix descriptors and complete at `wgmma.wait_group`, with the
//!   register and shared-memory hazards and the `fence.proxy.async` rule of [`wgmma`].
//! - `setmaxnreg` is warpgroup-collective too and moves registers between a warpgroup and its
//!   block's pool: a block starts with [`launch_registers`] per thread and an empty pool, a
//!   `.dec` returns registers to the pool, an `.inc` blocks until the pool holds what it
//!   asks for (one that can never be paid is a [`SimError::Deadlock`]); a count outside
//!   24..=256 or not a multiple of 8, a `.dec` above or an `.inc` below the warpgroup's
//!   count, and a second `setmaxnreg` by one warpgroup (whose required synchronisation is
//!   not modelled) are faults. Register use itself is not counted: ptxas checks that.

mod exec;
mod matrix;
mod tma;
pub mod wgmma;

use half::{bf16, f16};

use super::builder::{Kernel, Target, STATIC_SHARED_MAX};

pub use exec::{launch, launch_with};

/// Registers per thread a block of `threads` threads starts with when its kernel uses
/// `setmaxnreg` ([`crate::ptx::builder::registers_at_entry`]).
pub fn launch_registers(threads: u32) -> u32 {
    crate::ptx::builder::registers_at_entry(threads)
}

/// Bits of an address that hold the offset inside a buffer; the buffer index + 1 sits above.
pub const OFFSET_BITS: u32 = 40;

/// Something a simulated kernel did wrong, or a bad launch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("kernel `{kernel}`: out-of-bounds {space} access of {bytes} bytes at 0x{addr:x} (block {block}, thread {thread}, instruction {pc})")]
    OutOfBounds { kernel: String, space: &'static str, addr: u64, bytes: u32, block: u32, thread: u32, pc: usize },
    #[error("kernel `{kernel}`: misaligned {space} access of {bytes} bytes at 0x{addr:x} (block {block}, thread {thread}, instruction {pc})")]
    Misaligned { kernel: String, space: &'static str, addr: u64, bytes: u32, block: u32, thread: u32, pc: usize },
    #[error("kernel `{kernel}`: divergence in block {block}: {what}")]
    Divergence { kernel: String, block: u32, what: String },
    #[error("kernel `{kernel}`: thread {thread} of block {block} ran past the step limit of {limit} instructions")]
    StepLimit { kernel: String, block: u32, thread: u32, limit: u64 },
    #[error("kernel `{kernel}`: {reason} (block {block}, thread {thread}, instruction {pc})")]
    Fault { kernel: String, reason: String, block: u32, thread: u32, pc: usize },
    #[error("kernel `{kernel}`: {what} (block {block}, thread {thread}, instruction {pc})")]
    AsyncHazard { kernel: String, what: String, block: u32, thread: u32, pc: usize },
    #[error("kernel `{kernel}`: deadlock in block {block}: {what}")]
    Deadlock { kernel: String, block: u32, what: String },
    #[error("kernel `{kernel}`: bad launch: {0}", kernel = .1)]
    BadLaunch(String, String),
}

/// A kernel argument value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue {
    /// A global address from [`GlobalMem::alloc`].
    Ptr(u64),
    U32(u32),
    F32(f32),
    /// A [`super::builder::ParamTy::TensorMap`] argument: vidrt's simulator encoding of a
    /// tensor map ([`super::tma::TensorMapDesc::encode_sim`]).
    TensorMap([u8; 128]),
}

/// The launch argument of parameter `index` of `k` for a buffer at global address `addr`: a
/// pointer, or for a [`super::builder::ParamTy::TensorMap`] parameter the kernel's tensor map
/// for that buffer in vidrt's simulator encoding. `None` for a parameter that takes no buffer.
pub fn buffer_arg(k: &Kernel, index: usize, addr: u64) -> Option<ArgValue> {
    use super::builder::ParamTy;
    match k.params.get(index)? {
        ParamTy::Ptr => Some(ArgValue::Ptr(addr)),
        ParamTy::TensorMap => k.tensor_map_arg(index, addr).ok()?.map(|d| ArgValue::TensorMap(d.encode_sim())),
        ParamTy::U32 | ParamTy::F32 => None,
    }
}

/// Per-block limits of the simulated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// The most shared memory (static plus dynamic) one block may use: the device's opt-in
    /// maximum ([`Target::max_shared`]).
    pub max_shared: u32,
}

impl DeviceLimits {
    /// The limits of `target`'s devices (sm_80: 163 KiB of shared memory, sm_90a: 227 KiB).
    pub fn of(target: Target) -> Self {
        DeviceLimits { max_shared: target.max_shared() }
    }
}

impl Default for DeviceLimits {
    /// An sm_90 device (227 KiB of shared memory per block).
    fn default() -> Self {
        DeviceLimits::of(Target::Sm90a)
    }
}

/// Launch geometry (1-D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: u32,
    pub block: u32,
}

/// Simulated global memory: separate buffers, addressed as `(index + 1) << OFFSET_BITS | offset`.
#[derive(Clone, Debug, Default)]
pub struct GlobalMem {
    bufs: Vec<Vec<u8>>,
}

impl GlobalMem {
    pub fn new() -> Self {
        GlobalMem::default()
    }

    /// Allocates `bytes` filled with 0xFF (NaN in every float type) and returns its address.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        self.bufs.push(vec![0xFF; bytes]);
        (self.bufs.len() as u64) << OFFSET_BITS
    }

    /// Allocates a buffer holding `data`.
    pub fn alloc_with(&mut self, data: Vec<u8>) -> u64 {
        self.bufs.push(data);
        (self.bufs.len() as u64) << OFFSET_BITS
    }

    fn locate(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let b = (addr >> OFFSET_BITS) as usize;
        let off = (addr & ((1u64 << OFFSET_BITS) - 1)) as usize;
        let buf = self.bufs.get(b.checked_sub(1)?)?;
        (off.checked_add(len)? <= buf.len()).then_some((b - 1, off))
    }

    /// The bytes of the buffer at `addr` (its start), if it is one.
    pub fn buffer(&self, addr: u64) -> Option<&[u8]> {
        let (b, off) = self.locate(addr, 0)?;
        (off == 0).then(|| self.bufs[b].as_slice())
    }

    /// `len` bytes at `addr`, if in bounds.
    pub fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (b, off) = self.locate(addr, len)?;
        Some(&self.bufs[b][off..off + len])
    }

    /// Writable `len` bytes at `addr`, if in bounds.
    pub fn write(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (b, off) = self.locate(addr, len)?;
        Some(&mut self.bufs[b][off..off + len])
    }
}

/// f32 → f16 bits, round to nearest even.
pub fn f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// f32 → bf16 bits, round to nearest even.
pub fn bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// The shared address at which the simulator places a block's shared memory: the kernel's
/// declared alignment ([`Kernel::shared_align`], at least 16) and no more (an address aligned to
/// `A` but not `2A`), so code that assumes more alignment than it declares (a 128-byte swizzle
/// on a buffer declared `.align 16`) computes wrong addresses here, as it may on hardware.
pub fn shared_window(k: &Kernel) -> u32 {
    k.shared_align.max(16)
}

/// The largest shared alignment the simulator accepts (the 128-byte swizzle's 1024-byte atoms).
pub const MAX_SHARED_ALIGN: u32 = 1024;

/// Checks a kernel's shared memory against the static limit and the device's maximum.
pub(crate) fn check_shared(k: &Kernel, limits: DeviceLimits) -> Result<(), SimError> {
    if !k.shared_align.is_power_of_two() || !(16..=MAX_SHARED_ALIGN).contains(&k.shared_align) {
        return Err(SimError::BadLaunch(
            format!("shared alignment {} (a power of two from 16 to {MAX_SHARED_ALIGN})", k.shared_align),
            k.name.clone(),
        ));
    }
    if k.shared_bytes > STATIC_SHARED_MAX {
        return Err(SimError::BadLaunch(
            format!("{} bytes of static shared memory (static stops at {STATIC_SHARED_MAX})", k.shared_bytes),
            k.name.clone(),
        ));
    }
    if k.shared_total() > limits.max_shared {
        return Err(SimError::BadLaunch(
            format!(
                "{} bytes of shared memory ({} dynamic), more than the device's {} per block",
                k.shared_total(),
                k.dynamic_shared,
                limits.max_shared
            ),
            k.name.clone(),
        ));
    }
    Ok(())
}

/// Checks a launch's arguments against the kernel's parameters.
pub(crate) fn check_args(k: &Kernel, args: &[ArgValue]) -> Result<(), SimError> {
    use super::builder::ParamTy;
    if args.len() != k.params.len() {
        return Err(SimError::BadLaunch(
            format!("{} arguments for {} parameters", args.len(), k.params.len()),
            k.name.clone(),
        ));
    }
    for (i, (a, p)) in args.iter().zip(&k.params).enumerate() {
        let ok = matches!(
            (a, p),
            (ArgValue::Ptr(_), ParamTy::Ptr)
                | (ArgValue::U32(_), ParamTy::U32)
                | (ArgValue::F32(_), ParamTy::F32)
                | (ArgValue::TensorMap(_), ParamTy::TensorMap)
        );
        if !ok {
            return Err(SimError::BadLaunch(format!("argument {i} is {a:?}, parameter is {p:?}"), k.name.clone()));
        }
    }
    Ok(())
}
