//! mbarriers and TMA bulk tensor copies (`mbarrier.init/arrive/arrive.expect_tx/try_wait.parity`,
//! `fence.mbarrier_init`, `cp.async.bulk.tensor` tile loads).
//!
//! Semantics, after the PTX ISA ("Parallel Synchronization and Communication Instructions:
//! mbarrier", "Data Movement: cp.async.bulk.tensor", "Tensor Copy"):
//! - an mbarrier is an 8-byte, 8-byte aligned shared object with a phase (its parity is what
//!   `try_wait.parity` tests), an expected arrival count (set by `init`, 1..=2²⁰-1), the
//!   current phase's pending arrivals and its transaction count (tx-count). `arrive` lowers
//!   the pending arrivals by one; `arrive.expect_tx` first raises the tx-count by its bytes;
//!   a TMA copy's complete-tx lowers it by the bytes that landed. The phase completes when
//!   both are zero: the phase number advances and the pending arrivals are reset. An
//!   arrival on a phase with none pending, an mbarrier used before its `init`, and a phase
//!   whose arrivals are all in but that received more bytes than expected (tx-count below
//!   zero) are a [`SimError::Fault`];
//! - `try_wait.parity p` is true once the phase of parity `p` has completed (the current
//!   phase's parity is `!p`; so at phase 0 a wait on parity 1 passes at once, and nothing
//!   lands for it). The simulator does not spin: a thread whose wait is not yet
//!   satisfied blocks at the `try_wait` until it is; when no thread can progress and some
//!   wait, the wait can never complete (an `expect_tx` larger than the bytes copied, a missing
//!   arrival, the wrong parity): a [`SimError::Deadlock`] naming the mbarrier's state;
//! - `cp.async.bulk.tensor` reads the box from global memory at issue (through the tensor
//!   map parameter's [`TensorMapDesc`], vidrt's simulator encoding; elements outside the
//!   tensor read as zero, as `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`) and lands, with its
//!   complete-tx, when a thread waits on its mbarrier (a legal moment: the copy may complete
//!   any time after issue). Until then its destination bytes are pending: reading them
//!   (`ld.shared`, `ldmatrix`, `wgmma.mma_async`) or writing them is a
//!   [`SimError::AsyncHazard`] (a read before the wait); a copy into bytes a pending
//!   `wgmma.mma_async` reads is one too. The destination is 128-byte aligned (1024 with the
//!   128-byte swizzle) and the box is stored row after row (`box[0]·elem` bytes a row); with
//!   the 128-byte swizzle (rows of exactly 128 bytes here) the 16-byte chunk bits 4–6 of each
//!   address are XORed with its bits 7–9, the layout wgmma's 128-byte-swizzle descriptors read;
//! - an `mbarrier.init` is published to the block's other threads by a `bar.sync` after it:
//!   another thread's arrive, wait or copy on the mbarrier before one is a [`SimError::Fault`];
//!   and to the async proxy by `fence.mbarrier_init` or `fence.proxy.async` of the initialising
//!   thread (the CUDA guide's TMA example, CUTLASS's `fence_barrier_init`): a bulk copy
//!   completing on an mbarrier whose init was not so fenced is a [`SimError::Fault`];
//! - an mbarrier's 8 bytes are for mbarrier instructions only (the ISA: an opaque object,
//!   until `mbarrier.inval`, which vidrt does not use): `ld`/`st.shared`, `ldmatrix`,
//!   `cp.async`, a bulk copy or a wgmma operand read touching them is a [`SimError::Fault`].

use std::collections::BTreeMap;

use super::exec::Ctx;
use super::matrix::Shared;
use super::{ArgValue, GlobalMem, SimError};
use crate::ptx::tma::{TensorMapDesc, TmaSwizzle};

/// The register value `mov.u64` gives for a [`crate::ptx::builder::ParamTy::TensorMap`]
/// parameter: this tag with the parameter index (a parameter-space address, distinct from
/// global and const ones). It is not a valid TMA operand.
pub(super) const PARAM_SPACE_TAG: u64 = 1 << 63;

/// The generic address `cvta.param.u64` makes of a [`PARAM_SPACE_TAG`] address: this tag
/// with the parameter index. The tensor-map operand of `cp.async.bulk.tensor` must be one.
pub(super) const GENERIC_PARAM_TAG: u64 = 1 << 62;

/// One mbarrier object.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mbar {
    count: u32,
    pending: u32,
    tx: i64,
    phase: u64,
    /// The thread whose `mbarrier.init` made it, and the block's barrier count then.
    initiator: u32,
    init_barriers: u64,
    /// Whether the initiator ran `fence.mbarrier_init` or `fence.proxy.async` since the init
    /// (the async proxy, whose copies complete on it, sees the init only then).
    fenced: bool,
}

/// An issued bulk tensor copy that has not landed.
struct Bulk {
    /// (shared address, bytes) pairs: the box after the layout, chunk by chunk.
    writes: Vec<(usize, Vec<u8>)>,
    bytes: u32,
    mbar: usize,
}

/// A block's mbarriers and pending bulk copies.
#[derive(Default)]
pub(super) struct BlockTma {
    mbars: BTreeMap<usize, Mbar>,
    copies: Vec<Bulk>,
    /// `bar.sync`s the block has completed.
    barriers: u64,
}

impl BlockTma {
    /// A `bar.sync` completed: the mbarrier inits before it are visible to every thread.
    pub fn barrier(&mut self) {
        self.barriers += 1;
    }

    /// `fence.mbarrier_init` or `fence.proxy.async` by thread `t`: its inits so far are
    /// visible to the async proxy.
    pub fn fence_inits(&mut self, t: u32) {
        for m in self.mbars.values_mut().filter(|m| m.initiator == t) {
            m.fenced = true;
        }
    }

    /// The mbarrier whose 8 bytes overlap the `len` bytes at `off`, if any.
    pub fn overlapping(&self, off: usize, len: usize) -> Option<usize> {
        self.mbars.range(off.saturating_sub(7)..off + len).next().map(|(&a, _)| a)
    }

    pub fn waiting_on(&self, addr: usize) -> String {
        match self.mbars.get(&addr) {
            Some(m) => format!(
                "mbarrier at shared 0x{addr:x}: phase {} (parity {}), {} of {} arrivals pending, tx-count {}, {} \
                 copies in flight",
                m.phase,
                m.phase & 1,
                m.pending,
                m.count,
                m.tx,
                self.copies.iter().filter(|c| c.mbar == addr).count()
            ),
            None => format!("uninitialised mbarrier at shared 0x{addr:x}"),
        }
    }
}

fn mbar_addr(ctx: &Ctx<'_>, (t, pc): (u32, usize), shared: &Shared, a: u64, what: &str) -> Result<usize, SimError> {
    let a = a & 0xFFFF_FFFF;
    if !a.is_multiple_of(8) {
        return Err(ctx.misaligned((t, pc), "shared", a, 8));
    }
    if !shared.in_bounds(a, 8) {
        return Err(ctx.out_of_bounds((t, pc), "shared", a, 8));
    }
    if what == "mbarrier.init" {
        if let Some(m) = shared.tma.overlapping(a as usize, 8).filter(|&m| m != a as usize) {
            return Err(ctx.fault(t, pc, format!("mbarrier.init at shared 0x{a:x} overlaps the mbarrier at 0x{m:x}")));
        }
        return Ok(a as usize);
    }
    let Some(m) = shared.tma.mbars.get(&(a as usize)) else {
        return Err(ctx.fault(t, pc, format!("{what} on shared 0x{a:x}, which no mbarrier.init initialised")));
    };
    if m.initiator != t && m.init_barriers == shared.tma.barriers {
        return Err(ctx.fault(
            t,
            pc,
            format!(
                "{what} on the mbarrier at shared 0x{a:x} before a bar.sync published its mbarrier.init (by thread {}) \
                 to the other threads",
                m.initiator
            ),
        ));
    }
    Ok(a as usize)
}

fn complete_if_done(m: &mut Mbar) {
    if m.pending == 0 && m.tx == 0 {
        m.phase += 1;
        m.pending = m.count;
    }
}

/// `mbarrier.init`.
pub(super) fn init(ctx: &Ctx<'_>, tp: (u32, usize), shared: &mut Shared, a: u64, count: u32) -> Result<(), SimError> {
    let addr = mbar_addr(ctx, tp, shared, a, "mbarrier.init")?;
    if count == 0 || count >= 1 << 20 {
        return Err(ctx.fault(tp.0, tp.1, format!("mbarrier.init with count {count} (1..=2^20-1)")));
    }
    if shared.tma.copies.iter().any(|c| c.mbar == addr) {
        return Err(ctx.fault(tp.0, tp.1, "mbarrier.init of an mbarrier with bulk copies in flight"));
    }
    if shared.bytes_in_use(addr, 8) {
        return Err(ctx.fault(
            tp.0,
            tp.1,
            format!("mbarrier.init at shared 0x{addr:x}: a copy or wgmma is pending on those bytes"),
        ));
    }
    let init_barriers = shared.tma.barriers;
    shared
        .tma
        .mbars
        .insert(addr, Mbar { count, pending: count, tx: 0, phase: 0, initiator: tp.0, init_barriers, fenced: false });
    Ok(())
}

/// `mbarrier.arrive[.expect_tx]`.
pub(super) fn arrive(ctx: &Ctx<'_>, tp: (u32, usize), shared: &mut Shared, a: u64, tx: u32) -> Result<(), SimError> {
    let what = if tx > 0 { "mbarrier.arrive.expect_tx" } else { "mbarrier.arrive" };
    let addr = mbar_addr(ctx, tp, shared, a, what)?;
    let fault = |why: String| ctx.fault(tp.0, tp.1, why);
    let Some(m) = shared.tma.mbars.get_mut(&addr) else {
        return Err(fault(format!("{what}: no mbarrier at 0x{addr:x}")));
    };
    if m.pending == 0 {
        return Err(fault(format!("{what} on mbarrier 0x{addr:x} whose phase {} has no pending arrivals", m.phase)));
    }
    m.tx += i64::from(tx);
    m.pending -= 1;
    if m.pending == 0 && m.tx < 0 {
        return Err(fault(format!(
            "mbarrier 0x{addr:x}: phase {} received {} bytes more than its expect_tx announced",
            m.phase, -m.tx
        )));
    }
    complete_if_done(m);
    Ok(())
}

/// Lands every bulk copy in flight on the mbarrier at `addr` (their bytes and complete-tx).
fn land(ctx: &Ctx<'_>, tp: (u32, usize), shared: &mut Shared, addr: usize) -> Result<(), SimError> {
    let (mine, rest): (Vec<Bulk>, Vec<Bulk>) =
        std::mem::take(&mut shared.tma.copies).into_iter().partition(|c| c.mbar == addr);
    shared.tma.copies = rest;
    let mut bytes = 0i64;
    for c in mine {
        bytes += i64::from(c.bytes);
        for (o, data) in c.writes {
            shared.data[o..o + data.len()].copy_from_slice(&data);
            for p in &mut shared.bulk_pending[o..o + data.len()] {
                *p = p.saturating_sub(1);
            }
        }
    }
    if bytes == 0 {
        return Ok(());
    }
    if let Some(m) = shared.tma.mbars.get_mut(&addr) {
        m.tx -= bytes;
        if m.pending == 0 && m.tx < 0 {
            return Err(ctx.fault(
                tp.0,
                tp.1,
                format!(
                    "mbarrier 0x{addr:x}: phase {} received {} bytes more than its expect_tx announced (expect_tx \
                     mismatch)",
                    m.phase, -m.tx
                ),
            ));
        }
        complete_if_done(m);
    }
    Ok(())
}

/// `mbarrier.try_wait.parity`: lands the copies in flight on it, then whether the phase of
/// parity `parity` has completed.
pub(super) fn try_wait(
    ctx: &Ctx<'_>,
    tp: (u32, usize),
    shared: &mut Shared,
    a: u64,
    parity: u64,
) -> Result<bool, SimError> {
    let addr = mbar_addr(ctx, tp, shared, a, "mbarrier.try_wait")?;
    let done = |shared: &Shared| shared.tma.mbars.get(&addr).is_some_and(|m| (m.phase & 1) != (parity & 1));
    // Already complete (a wait on the previous phase's parity passes at once): nothing lands.
    if done(shared) {
        return Ok(true);
    }
    land(ctx, tp, shared, addr)?;
    Ok(done(shared))
}

/// The tensor map a `tmap` register names.
fn tensor_map(ctx: &Ctx<'_>, (t, pc): (u32, usize), tmap: u64) -> Result<TensorMapDesc, SimError> {
    let fault = |why: String| ctx.fault(t, pc, why);
    if tmap & PARAM_SPACE_TAG != 0 {
        return Err(fault(format!(
            "cp.async.bulk.tensor: 0x{tmap:x} is a .param-space address; the tensor-map operand is a generic \
             address (missing cvta.param)"
        )));
    }
    if tmap & GENERIC_PARAM_TAG == 0 {
        return Err(fault(format!("cp.async.bulk.tensor: 0x{tmap:x} is not a tensor-map parameter's address")));
    }
    let i = (tmap & !GENERIC_PARAM_TAG) as usize;
    match ctx.args().get(i) {
        Some(ArgValue::TensorMap(bytes)) => {
            TensorMapDesc::decode_sim(bytes).map_err(|e| fault(format!("cp.async.bulk.tensor: {e}")))
        }
        _ => Err(fault(format!("cp.async.bulk.tensor: parameter {i} is not a tensor map"))),
    }
}

/// `cp.async.bulk.tensor` (tile mode, global → shared, complete-tx on `mbar`).
#[allow(clippy::too_many_arguments)]
pub(super) fn load(
    ctx: &Ctx<'_>,
    tp: (u32, usize),
    dst: u64,
    tmap: u64,
    coords: &[i64],
    mbar: u64,
    mem: &GlobalMem,
    shared: &mut Shared,
) -> Result<(), SimError> {
    let (t, pc) = tp;
    let fault = |why: String| ctx.fault(t, pc, why);
    let d = tensor_map(ctx, tp, tmap)?;
    let mbar = mbar_addr(ctx, tp, shared, mbar, "cp.async.bulk.tensor")?;
    if shared.tma.mbars.get(&mbar).is_some_and(|m| !m.fenced) {
        return Err(fault(format!(
            "cp.async.bulk.tensor completing on the mbarrier at shared 0x{mbar:x}, whose mbarrier.init was not made \
             visible to the async proxy (fence.mbarrier_init or fence.proxy.async by its initialising thread after the \
             init)"
        )));
    }
    let rank = d.rank as usize;
    if coords.len() != rank {
        return Err(fault(format!("cp.async.bulk.tensor.{}d with a rank-{rank} tensor map", coords.len())));
    }
    let dst = dst & 0xFFFF_FFFF;
    let align = if d.swizzle == TmaSwizzle::B128 { 1024 } else { 128 };
    if !dst.is_multiple_of(align) {
        return Err(ctx.misaligned((t, pc), "shared", dst, align as u32));
    }
    let total = d.box_bytes() as usize;
    if !shared.in_bounds(dst, total as u64) {
        return Err(ctx.out_of_bounds((t, pc), "shared", dst, total as u32));
    }
    if d.swizzle == TmaSwizzle::B128 && d.row_bytes() != 128 {
        return Err(fault(format!("128-byte swizzle with {}-byte box rows (only 128 is simulated)", d.row_bytes())));
    }
    let dst = dst as usize;
    shared.check_settled(ctx, tp, dst, total, "cp.async.bulk.tensor")?;
    shared.check_wgmma_free(ctx, tp, dst, total, "cp.async.bulk.tensor")?;
    let elem = d.dtype.bytes() as usize;
    let row = d.row_bytes() as usize;
    let box_n: Vec<usize> = d.box_dims[..rank].iter().map(|&b| b as usize).collect();
    let rows: usize = box_n[1..].iter().product();
    let mut writes = Vec::with_capacity(total / 16);
    let mut idx = vec![0usize; rank];
    for r in 0..rows {
        // idx[1..] = the row's outer box indices (dimension 1 fastest).
        let mut rem = r;
        for (i, n) in box_n.iter().enumerate().skip(1) {
            idx[i] = rem % n;
            rem /= n;
        }
        let mut bytes = vec![0u8; row];
        let outer_in = (1..rank).all(|i| {
            let c = coords[i] + idx[i] as i64;
            c >= 0 && (c as u64) < d.dims[i]
        });
        if outer_in {
            let mut base = d.address;
            for i in 1..rank {
                base += (coords[i] + idx[i] as i64) as u64 * d.strides[i - 1];
            }
            for x in 0..box_n[0] {
                let c = coords[0] + x as i64;
                if c < 0 || c as u64 >= d.dims[0] {
                    continue;
                }
                let a = base + c as u64 * elem as u64;
                let Some(v) = mem.read(a, elem) else {
                    return Err(ctx.out_of_bounds((t, pc), "global", a, elem as u32));
                };
                bytes[x * elem..(x + 1) * elem].copy_from_slice(v);
            }
        }
        let at = dst + r * row;
        for (j, chunk) in bytes.chunks(16).enumerate() {
            let mut a = at + 16 * j;
            if d.swizzle == TmaSwizzle::B128 {
                a ^= ((a >> 7) & 7) << 4;
            }
            writes.push((a, chunk.to_vec()));
        }
    }
    for (a, c) in &writes {
        for p in &mut shared.bulk_pending[*a..*a + c.len()] {
            *p += 1;
        }
    }
    shared.tma.copies.push(Bulk { writes, bytes: total as u32, mbar });
    Ok(())
}
