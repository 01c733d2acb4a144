//! The tensor-core data-movement and matrix instructions: `cp.async` (per-thread pending
//! copies, completed in commit-group order at `cp.async.wait_group`/`wait_all`), and the
//! warp-collective `ldmatrix` and `mma.sync.m16n8k16` with the PTX ISA's fragment layouts.
//!
//! Shared memory keeps a per-byte count of pending `cp.async` writes: an `ld.shared`,
//! `st.shared` or `ldmatrix` that touches a byte with a pending copy is a
//! [`SimError::AsyncHazard`] (on hardware it would read stale data or race the copy), which is
//! how a missing `cp.async.wait_group` (or a barrier placed before it) is caught.

use std::collections::VecDeque;

use half::{bf16, f16};

use super::exec::{Ctx, Thread};
use super::{GlobalMem, SimError};
use crate::ptx::builder::{CpCache, Reg, Space, Ty};

/// A block's shared memory with its pending-copy counts.
pub(super) struct Shared {
    /// The shared address of the block's first byte ([`Kernel::shared_align`]); `data` is
    /// indexed by shared address, and the `base` bytes below it are out of bounds.
    ///
    /// [`Kernel::shared_align`]: crate::ptx::builder::Kernel::shared_align
    pub base: usize,
    pub data: Vec<u8>,
    pending: Vec<u32>,
    /// Per byte: pending `wgmma.mma_async` operand reads (see [`super::wgmma`]).
    pub(super) wg_reads: Vec<u32>,
    /// Per byte: generic-proxy writes (stores, landed copies) not yet covered by their
    /// writer's `fence.proxy.async`.
    pub(super) unfenced: Vec<u32>,
    /// Per byte: pending `cp.async.bulk.tensor` writes (see [`super::tma`]).
    pub(super) bulk_pending: Vec<u32>,
    /// The block's mbarriers and bulk copies in flight.
    pub(super) tma: super::tma::BlockTma,
}

impl Shared {
    /// `bytes` of shared memory at shared address `base`.
    pub fn new(base: usize, bytes: usize) -> Self {
        let end = base + bytes;
        Shared {
            base,
            data: vec![0xFF; end],
            pending: vec![0; end],
            wg_reads: vec![0; end],
            unfenced: vec![0; end],
            bulk_pending: vec![0; end],
            tma: super::tma::BlockTma::default(),
        }
    }

    /// Whether the `len` bytes at shared address `addr` are the block's.
    pub fn in_bounds(&self, addr: u64, len: u64) -> bool {
        addr >= self.base as u64 && addr.checked_add(len).is_some_and(|e| e <= self.data.len() as u64)
    }

    /// Whether a copy or a wgmma operand read is pending on any of `len` bytes at `off`.
    pub(super) fn bytes_in_use(&self, off: usize, len: usize) -> bool {
        let busy = |v: &[u32]| v.get(off..off + len).is_some_and(|p| p.iter().any(|&c| c > 0));
        busy(&self.pending) || busy(&self.bulk_pending) || busy(&self.wg_reads)
    }

    /// Errors when any of `len` bytes at `off` belongs to an mbarrier (see [`super::tma`]).
    pub fn check_not_mbarrier(
        &self,
        ctx: &Ctx<'_>,
        (t, pc): (u32, usize),
        off: usize,
        len: usize,
        what: &str,
    ) -> Result<(), SimError> {
        match self.tma.overlapping(off, len) {
            Some(m) => Err(ctx.fault(
                t,
                pc,
                format!(
                    "{what} of {len} bytes at shared 0x{off:x} touches the mbarrier at 0x{m:x} (an mbarrier is accessed \
                     only by mbarrier instructions)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Errors when any of `len` bytes at `off` has a pending `cp.async` write, or is an
    /// mbarrier's.
    pub fn check_settled(
        &self,
        ctx: &Ctx<'_>,
        (t, pc): (u32, usize),
        off: usize,
        len: usize,
        what: &str,
    ) -> Result<(), SimError> {
        self.check_not_mbarrier(ctx, (t, pc), off, len, what)?;
        if self.bulk_pending.get(off..off + len).is_some_and(|p| p.iter().any(|&c| c > 0)) {
            return Err(ctx.hazard(
                t,
                pc,
                format!(
                    "{what} of {len} bytes at shared offset 0x{off:x} while a cp.async.bulk.tensor to it is pending \
                     (missing mbarrier wait before the access?)"
                ),
            ));
        }
        let busy = self.pending.get(off..off + len).is_some_and(|p| p.iter().any(|&c| c > 0));
        if busy {
            return Err(ctx.hazard(
                t,
                pc,
                format!(
                    "{what} of {len} bytes at shared offset 0x{off:x} while a cp.async to it is pending \
                     (missing cp.async.wait_group before the barrier?)"
                ),
            ));
        }
        Ok(())
    }
}

/// One issued, not yet completed copy: its destination and the bytes it will write
/// (source bytes read at issue, zero-filled past `src-size`).
struct Copy {
    dst: usize,
    data: Vec<u8>,
}

/// A thread's outstanding `cp.async` copies: those not yet committed, then the committed
/// groups oldest first.
#[derive(Default)]
pub(super) struct AsyncState {
    open: Vec<Copy>,
    groups: VecDeque<Vec<Copy>>,
    /// Shared byte ranges of landed copies not yet covered by a `fence.proxy.async`.
    pub(super) landed: Vec<(usize, usize)>,
}

impl AsyncState {
    pub fn commit(&mut self) {
        let g = std::mem::take(&mut self.open);
        self.groups.push_back(g);
    }

    /// Completes the oldest groups until at most `n` remain pending.
    pub fn wait(&mut self, n: u32, shared: &mut Shared) {
        while self.groups.len() > n as usize {
            if let Some(g) = self.groups.pop_front() {
                for c in g {
                    self.landed.push((c.dst, c.data.len()));
                    complete(c, shared);
                }
            }
        }
    }

    /// Completes everything (a thread that exits still has its copies land).
    pub fn flush(&mut self, shared: &mut Shared) {
        self.commit();
        self.wait(0, shared);
    }
}

fn complete(c: Copy, shared: &mut Shared) {
    let end = c.dst + c.data.len();
    if let Some(d) = shared.data.get_mut(c.dst..end) {
        d.copy_from_slice(&c.data);
    }
    if let Some(p) = shared.pending.get_mut(c.dst..end) {
        for x in p {
            *x = x.saturating_sub(1);
        }
    }
    if let Some(u) = shared.unfenced.get_mut(c.dst..end) {
        for x in u {
            *x += 1;
        }
    }
}

/// Issues one `cp.async`.
#[allow(clippy::too_many_arguments)]
pub(super) fn cp_async(
    ctx: &Ctx<'_>,
    (t, pc): (u32, usize),
    cache: CpCache,
    dst: u64,
    src: u64,
    size: u32,
    src_size: u64,
    mem: &GlobalMem,
    shared: &mut Shared,
    st: &mut AsyncState,
) -> Result<(), SimError> {
    if !matches!(size, 4 | 8 | 16) || (cache == CpCache::Cg && size != 16) {
        return Err(ctx.fault(t, pc, format!("cp.async.{} with cp-size {size}", cache.name())));
    }
    if src_size > u64::from(size) {
        return Err(ctx.fault(t, pc, format!("cp.async src-size {src_size} exceeds cp-size {size}")));
    }
    for (space, addr) in [(Space::Shared, dst), (Space::Global, src)] {
        if !addr.is_multiple_of(u64::from(size)) {
            return Err(ctx.misaligned((t, pc), space.name(), addr, size));
        }
    }
    let oob = |space: Space, addr: u64, bytes: u32| ctx.out_of_bounds((t, pc), space.name(), addr, bytes);
    let d = dst as usize;
    if !shared.in_bounds(dst, u64::from(size)) {
        return Err(oob(Space::Shared, dst, size));
    }
    shared.check_not_mbarrier(ctx, (t, pc), d, size as usize, "cp.async")?;
    shared.check_wgmma_free(ctx, (t, pc), d, size as usize, "cp.async")?;
    let mut data = vec![0u8; size as usize];
    if src_size > 0 {
        let Some(bytes) = mem.read(src, src_size as usize) else {
            return Err(oob(Space::Global, src, src_size as u32));
        };
        data[..src_size as usize].copy_from_slice(bytes);
    }
    for p in &mut shared.pending[d..d + size as usize] {
        *p += 1;
    }
    st.open.push(Copy { dst: d, data });
    Ok(())
}

fn b16_to_f32(ab: Ty, bits: u64) -> f32 {
    match ab {
        Ty::F16 => f16::from_bits(bits as u16).to_f32(),
        _ => bf16::from_bits(bits as u16).to_f32(),
    }
}

/// `ldmatrix` for the 32 lanes of warp `warp` (all at `pc`).
pub(super) fn ldmatrix(
    ctx: &Ctx<'_>,
    lanes: &mut [Thread],
    (warp, pc): (usize, usize),
    trans: bool,
    dst: &[Reg],
    addr: &Reg,
    shared: &Shared,
) -> Result<(), SimError> {
    let n = dst.len();
    if !matches!(n, 1 | 2 | 4) {
        return Err(ctx.fault((warp * 32) as u32, pc, format!("ldmatrix .x{n}")));
    }
    // m[i][r][c]: element (r, c) of matrix i, as b16 bits.
    let mut m = vec![[[0u16; 8]; 8]; n];
    for (l, th) in lanes.iter().enumerate().take(8 * n) {
        let t = (warp * 32 + l) as u32;
        let a = th.regs[addr.id as usize] & 0xFFFF_FFFF;
        if !a.is_multiple_of(16) {
            return Err(ctx.misaligned((t, pc), "shared", a, 16));
        }
        let off = a as usize;
        let Some(row) = shared.data.get(off..off + 16).filter(|_| shared.in_bounds(a, 16)) else {
            return Err(ctx.out_of_bounds((t, pc), "shared", a, 16));
        };
        shared.check_settled(ctx, (t, pc), off, 16, "ldmatrix read")?;
        for (c, e) in m[l / 8][l % 8].iter_mut().enumerate() {
            *e = u16::from_le_bytes([row[2 * c], row[2 * c + 1]]);
        }
    }
    for (l, th) in lanes.iter_mut().enumerate() {
        let (r, c) = (l / 4, 2 * (l % 4));
        for (i, d) in dst.iter().enumerate() {
            let (lo, hi) = if trans { (m[i][c][r], m[i][c + 1][r]) } else { (m[i][r][c], m[i][r][c + 1]) };
            th.regs[d.id as usize] = u64::from(lo) | (u64::from(hi) << 16);
        }
    }
    Ok(())
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.<ab>.<ab>.f32` for the 32 lanes of a warp:
/// gathers A (16×16), B (16×8) and C (16×8) from the fragments, accumulates each D element in
/// f32 in k order starting from C, and scatters D.
pub(super) fn mma(lanes: &mut [Thread], ab: Ty, d: &[Reg; 4], a: &[Reg; 4], b: &[Reg; 2], c: &[Reg; 4]) {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    let mut cm = [[0f32; 8]; 16];
    for (l, th) in lanes.iter().enumerate() {
        let (g, q) = (l / 4, l % 4);
        for (i, r) in a.iter().enumerate() {
            let v = th.regs[r.id as usize];
            for h in 0..2 {
                am[g + 8 * (i % 2)][2 * q + h + 8 * (i / 2)] = b16_to_f32(ab, v >> (16 * h));
            }
        }
        for (j, r) in b.iter().enumerate() {
            let v = th.regs[r.id as usize];
            for h in 0..2 {
                bm[2 * q + h + 8 * j][g] = b16_to_f32(ab, v >> (16 * h));
            }
        }
        for (i, r) in c.iter().enumerate() {
            cm[g + 8 * (i / 2)][2 * q + i % 2] = f32::from_bits(th.regs[r.id as usize] as u32);
        }
    }
    let mut dm = [[0f32; 8]; 16];
    for (row, out) in dm.iter_mut().enumerate() {
        for (col, o) in out.iter_mut().enumerate() {
            let mut acc = cm[row][col];
            for (k, bk) in bm.iter().enumerate() {
                acc += am[row][k] * bk[col];
            }
            *o = acc;
        }
    }
    for (l, th) in lanes.iter_mut().enumerate() {
        let (g, q) = (l / 4, l % 4);
        for (i, r) in d.iter().enumerate() {
            th.regs[r.id as usize] = u64::from(dm[g + 8 * (i / 2)][2 * q + i % 2].to_bits());
        }
    }
}

/// `cvt.rn.{bf16x2,f16x2}.f32`: the packed bits.
pub(super) fn cvt_pack(ty: Ty, hi: f32, lo: f32) -> u64 {
    let bits = |x: f32| match ty {
        Ty::F16 => u64::from(f16::from_f32(x).to_bits()),
        _ => u64::from(bf16::from_f32(x).to_bits()),
    };
    bits(lo) | (bits(hi) << 16)
}
