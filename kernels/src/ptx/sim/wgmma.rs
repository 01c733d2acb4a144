//! The sm_90a warpgroup instructions: `wgmma.fence`, `wgmma.mma_async` (A and B from shared
//! memory through matrix descriptors), `wgmma.commit_group`, `wgmma.wait_group`, and the
//! per-thread `fence.proxy.async`.
//!
//! Semantics, after the PTX ISA (9.7.15 "Asynchronous Warpgroup Level Matrix Multiply-
//! Accumulate Instructions"):
//! - the four `wgmma.*` instructions are warpgroup-collective (`.sync.aligned`): the 128
//!   threads of a warpgroup (warps 4g..4g+3) must be at the same one, or it is a
//!   [`SimError::Divergence`];
//! - a matrix descriptor is decoded as the ISA's "Matrix Descriptor Format": start address
//!   bits 0–13, leading dimension byte offset (LBO) bits 16–29, stride dimension byte offset
//!   (SBO) bits 32–45 (each encoded `(x & 0x3FFFF) >> 4`), base offset bits 49–51, swizzle
//!   mode bits 62–63 (0 none, 1 128-byte, 2 64-byte, 3 32-byte). A descriptor A is K-major
//!   (imm-trans-a 0); B is K-major, or MN-major with imm-trans-b 1. A may instead come from
//!   registers: four b32 per thread in the ISA's m64nNk16 A fragment (warp w of the
//!   warpgroup holds rows 16w..16w+16 as `mma.m16n8k16` holds its A; see
//!   [`crate::ptx::builder::WgmmaA::Regs`]). An MN-major operand with no swizzle is the ISA's
//!   canonical `((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))`: element (mn, k) at
//!   `start + (mn/8)·SBO + (mn%8)·2 + (k/8)·LBO + (k%8)·16` (core matrices of 8 k-rows of 8
//!   consecutive MN elements); with the 128-byte swizzle, `((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))`
//!   before the swizzle (k-rows of 64 MN elements 128 bytes apart, see [`Descriptor::element_mn`]).
//!   With no swizzle, a K-major matrix is 8-row × 16-byte core matrices: element
//!   (row r, k) of a K-major operand is at `start + (r/8)·SBO + (r%8)·16 + (k/8)·LBO + (k%8)·2`
//!   (LBO: the distance between core matrices adjacent in K; SBO: between core matrices
//!   adjacent in M or N). With the 128-byte swizzle, rows are 128 bytes apart inside 8-row
//!   groups SBO apart, k runs contiguously (LBO unused), and the 16-byte chunk bits 4–6 of
//!   the address are XORed with bits 7–9 (CUTLASS's `Swizzle<3,4,3>` on byte addresses);
//!   only base offset 0 is simulated, with the pattern starting on a 1024-byte boundary
//!   (start bits 7–9 zero; a k step inside the 128-byte rows moves only bits 4–6). The 64- and 32-byte swizzles are a [`SimError::Fault`];
//! - `wgmma.mma_async` reads its shared operands at issue (reading bytes with a pending
//!   `cp.async`, or bytes written through the generic proxy by a thread that has not run
//!   `fence.proxy.async` since, is a [`SimError::AsyncHazard`]: the ISA's async proxy needs
//!   that fence); until its group completes, a `st.shared` or `cp.async` into those bytes is
//!   a hazard too;
//! - results land in the accumulator registers when a `wgmma.wait_group` covers the
//!   operation's commit group (operations complete in issue order, each reading its
//!   accumulator input at completion, so chains on one accumulator compose). Any other
//!   instruction that reads or writes a register of a pending accumulator or of a pending
//!   register A fragment is an [`SimError::AsyncHazard`] (the ISA makes such accesses
//!   undefined); the A fragment's values are taken at issue;
//! - `wgmma.fence` must come before the first `wgmma.mma_async` of each thread, and between
//!   another instruction's write to an accumulator or A fragment register and the
//!   `wgmma.mma_async` that uses it (checked by value: a write that leaves the value
//!   unchanged is not caught);
//! - the descriptors and `scale-d` must be the same in all 128 threads (a fault otherwise);
//!   D accumulates in f32 in k order, like `mma.sync`.

use std::collections::{HashMap, VecDeque};

use half::{bf16, f16};

use super::exec::{Ctx, Thread};
use super::matrix::{AsyncState, Shared};
use super::SimError;
use crate::ptx::builder::{Inst, Reg, Ty, WgmmaA};

/// A thread's wgmma state.
#[derive(Default)]
pub(super) struct ThreadWg {
    /// Register id → number of pending `wgmma.mma_async` with it as accumulator.
    pending: HashMap<u32, u32>,
    /// The register values at this thread's last `wgmma.fence` (kept current for the
    /// accumulators that completing wgmma operations write); `None` before the first.
    fenced: Option<Vec<u64>>,
    /// Shared byte ranges this thread wrote with `st.shared` since its last `fence.proxy.async`.
    unfenced: Vec<(usize, usize)>,
}

impl ThreadWg {
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// One issued `wgmma.mma_async`.
struct Op {
    /// A (64×16) and B (n×16, B's column j as row j) as f32, row-major.
    a: Vec<f32>,
    b: Vec<f32>,
    d: Vec<Reg>,
    /// The A fragment registers (register A only): pending until the operation completes.
    a_regs: Vec<Reg>,
    scale_d: bool,
    /// The shared byte offsets (2 bytes each) it reads.
    reads: Vec<usize>,
}

/// A warpgroup's issued, not yet completed operations: uncommitted, then committed groups
/// oldest first.
#[derive(Default)]
pub(super) struct GroupWg {
    open: Vec<Op>,
    groups: VecDeque<Vec<Op>>,
}

/// A decoded matrix descriptor (byte values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub start: usize,
    pub lbo: usize,
    pub sbo: usize,
    pub base_offset: u32,
    pub swizzle: u32,
}

impl Descriptor {
    pub fn decode(d: u64) -> Descriptor {
        let field = |lo: u32| (((d >> lo) & 0x3FFF) << 4) as usize;
        Descriptor {
            start: field(0),
            lbo: field(16),
            sbo: field(32),
            base_offset: ((d >> 49) & 7) as u32,
            swizzle: (d >> 62) as u32,
        }
    }

    /// The shared byte offset of element (row `r`, `k`) of a K-major 16-bit operand.
    pub fn element(&self, r: usize, k: usize) -> Result<usize, String> {
        match (self.swizzle, self.base_offset) {
            (0, _) => Ok(self.start + (r / 8) * self.sbo + (r % 8) * 16 + (k / 8) * self.lbo + (k % 8) * 2),
            (1, 0) if (self.start >> 7) & 7 != 0 => Err(format!(
                "128-byte swizzle with base offset 0 but a start address (0x{:x}) whose 8-row pattern does not begin \
                 on a 1024-byte boundary (the ISA's base offset would be {}; only 0 is simulated)",
                self.start,
                (self.start >> 7) & 7
            )),
            (1, 0) => {
                let lin = self.start + (r / 8) * self.sbo + (r % 8) * 128 + k * 2;
                Ok(lin ^ (((lin >> 7) & 7) << 4))
            }
            (1, b) => Err(format!("128-byte swizzle with base offset {b} (only 0 is simulated)")),
            (s, _) => {
                Err(format!("swizzle mode {s} ({}) is not simulated", if s == 2 { "64-byte" } else { "32-byte" }))
            }
        }
    }

    /// The shared byte offset of element (`mn`, `k`) of an MN-major 16-bit operand (read
    /// with imm-trans set), in the ISA's canonical MN-major layouts (T = 8 elements, 16
    /// bytes):
    /// - no swizzle ("interleave"), `((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))`: core matrices
    ///   of 8 k-rows × 16 bytes holding 8 consecutive MN elements, MN neighbours SBO apart and
    ///   K neighbours LBO apart;
    /// - the 128-byte swizzle, `((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))`: a k-row holds 64
    ///   consecutive MN elements (128 bytes), 8 k-rows 128 bytes apart make a 1024-byte atom,
    ///   the next 64 MN elements are LBO away and the next 8 k-rows SBO away (the roles of
    ///   LBO and SBO swap against the interleave mode, as in CUTLASS's `make_gmma_desc`);
    ///   then the chunk bits 4–6 are XORed with bits 7–9, with the same base-offset rule as
    ///   the K-major swizzle. This is the box a 128-byte-swizzled TMA copy writes of a
    ///   `[k, mn]` row-major tile 64 elements wide. The 64- and 32-byte swizzles are a fault.
    pub fn element_mn(&self, mn: usize, k: usize) -> Result<usize, String> {
        match (self.swizzle, self.base_offset) {
            (0, _) => Ok(self.start + (mn / 8) * self.sbo + (mn % 8) * 2 + (k / 8) * self.lbo + (k % 8) * 16),
            (1, 0) if (self.start >> 7) & 7 != 0 => Err(format!(
                "MN-major 128-byte swizzle with base offset 0 but a start address (0x{:x}) whose 8-row pattern does \
                 not begin on a 1024-byte boundary (only base offset 0 is simulated)",
                self.start
            )),
            (1, 0) => {
                let lin = self.start + (mn / 64) * self.lbo + (mn % 64) * 2 + (k / 8) * self.sbo + (k % 8) * 128;
                Ok(lin ^ (((lin >> 7) & 7) << 4))
            }
            (1, b) => Err(format!("MN-major 128-byte swizzle with base offset {b} (only 0 is simulated)")),
            (s, _) => Err(format!(
                "MN-major operand with swizzle mode {s} ({}; only none and 128-byte are simulated)",
                if s == 2 { "64-byte" } else { "32-byte" }
            )),
        }
    }
}

fn b16(ab: Ty, bits: u16) -> f32 {
    match ab {
        Ty::F16 => f16::from_bits(bits).to_f32(),
        _ => bf16::from_bits(bits).to_f32(),
    }
}

impl Shared {
    /// Errors when any of `len` bytes at `off` is read by a pending `wgmma.mma_async`.
    pub fn check_wgmma_free(
        &self,
        ctx: &Ctx<'_>,
        (t, pc): (u32, usize),
        off: usize,
        len: usize,
        what: &str,
    ) -> Result<(), SimError> {
        if self.wg_reads.get(off..off + len).is_some_and(|p| p.iter().any(|&c| c > 0)) {
            return Err(ctx.hazard(
                t,
                pc,
                format!(
                    "{what} of {len} bytes at shared offset 0x{off:x} while a wgmma.mma_async reading them is \
                     pending (missing wgmma.wait_group before the barrier?)"
                ),
            ));
        }
        Ok(())
    }
}

/// Records a generic-proxy write (`st.shared`) of `len` bytes at `off` by this thread.
pub(super) fn generic_write(wg: &mut ThreadWg, shared: &mut Shared, off: usize, len: usize) {
    if let Some(u) = shared.unfenced.get_mut(off..off + len) {
        for x in u {
            *x += 1;
        }
        wg.unfenced.push((off, len));
    }
}

/// `fence.proxy.async`: this thread's generic-proxy writes so far (stores and landed copies)
/// become visible to the async proxy.
pub(super) fn fence_proxy(wg: &mut ThreadWg, asyncs: &mut AsyncState, shared: &mut Shared) {
    for (off, len) in wg.unfenced.drain(..).chain(asyncs.landed.drain(..)) {
        if let Some(u) = shared.unfenced.get_mut(off..off + len) {
            for x in u {
                *x = x.saturating_sub(1);
            }
        }
    }
}

/// The registers `i` reads or writes.
fn regs_of(i: &Inst) -> Vec<Reg> {
    match i {
        Inst::LdParam { dst, .. } | Inst::ReadSpecial { dst, .. } | Inst::SharedBase { dst } => vec![*dst],
        Inst::ConstBase { dst, .. } => vec![*dst],
        Inst::Mov { dst, src } => ops(&[*dst], &[src]),
        Inst::Bitcast { dst, src } | Inst::Cvt { dst, src } | Inst::CvtaParam { dst, src } => vec![*dst, *src],
        Inst::Pack { dst, lo, hi } => vec![*dst, *lo, *hi],
        Inst::Unpack { lo, hi, src } => vec![*lo, *hi, *src],
        Inst::Prmt { dst, a, b, sel } => ops(&[*dst, *a, *b], &[sel]),
        Inst::Ld { dst, addr, guard, .. } => {
            let mut v = dst.clone();
            v.push(*addr);
            v.extend(guard.map(|g| g.pred));
            v
        }
        Inst::St { src, addr, guard, .. } => {
            let mut v = src.clone();
            v.push(*addr);
            v.extend(guard.map(|g| g.pred));
            v
        }
        Inst::Bin { dst, a, b, .. } | Inst::Setp { dst, a, b, .. } => ops(&[*dst], &[a, b]),
        Inst::Un { dst, a, .. } => ops(&[*dst], &[a]),
        Inst::Fma { dst, a, b, c } => ops(&[*dst], &[a, b, c]),
        Inst::MulWide { dst, a, b } => ops(&[*dst, *a], &[b]),
        Inst::Selp { dst, a, b, pred } => ops(&[*dst, *pred], &[a, b]),
        Inst::Bra { guard, .. } => guard.map(|g| g.pred).into_iter().collect(),
        Inst::Shfl { dst, src, lane, .. } => ops(&[*dst, *src], &[lane]),
        Inst::LdMatrix { dst, addr, .. } => {
            let mut v = dst.clone();
            v.push(*addr);
            v
        }
        Inst::CpAsync { dst, src, src_size, .. } => {
            let mut v = vec![*dst, *src];
            if let Some(crate::ptx::builder::Operand::Reg(r)) = src_size {
                v.push(*r);
            }
            v
        }
        Inst::Mma { d, a, b, c, .. } => d.iter().chain(a).chain(b).chain(c).copied().collect(),
        Inst::CvtPack { dst, hi, lo, .. } => vec![*dst, *hi, *lo],
        // The wgmma instructions themselves: accumulator chains of one shape are ordered.
        Inst::Wgmma { .. } | Inst::WgmmaFence | Inst::WgmmaCommit | Inst::WgmmaWait { .. } => Vec::new(),
        Inst::MbarInit { addr, .. } | Inst::MbarArriveExpectTx { addr, .. } | Inst::MbarArrive { addr } => {
            vec![*addr]
        }
        Inst::MbarTryWait { dst, addr, parity } => ops(&[*dst, *addr], &[parity]),
        Inst::TmaLoad { dst, tmap, coords, mbar } => {
            let mut v = vec![*dst, *tmap, *mbar];
            v.extend(coords);
            v
        }
        Inst::Label(_)
        | Inst::FenceMbarrierInit
        | Inst::SetMaxNReg { .. }
        | Inst::BarSync
        | Inst::BarNamed { .. }
        | Inst::CpAsyncCommit
        | Inst::CpAsyncWait { .. }
        | Inst::CpAsyncWaitAll
        | Inst::FenceProxyAsync
        | Inst::NoUnroll
        | Inst::Ret => Vec::new(),
    }
}

fn ops(regs: &[Reg], operands: &[&crate::ptx::builder::Operand]) -> Vec<Reg> {
    let mut v = regs.to_vec();
    v.extend(operands.iter().filter_map(|o| match o {
        crate::ptx::builder::Operand::Reg(r) => Some(*r),
        _ => None,
    }));
    v
}

/// Errors when `inst` touches a register of a pending wgmma accumulator.
pub(super) fn check_regs(ctx: &Ctx<'_>, (t, pc): (u32, usize), inst: &Inst, wg: &ThreadWg) -> Result<(), SimError> {
    if let Some(r) = regs_of(inst).into_iter().find(|r| wg.pending.contains_key(&r.id)) {
        return Err(ctx.hazard(
            t,
            pc,
            format!(
                "register {r} is an operand of a pending wgmma.mma_async (its accumulator or A fragment; missing \
                 wgmma.wait_group before this access?)"
            ),
        ));
    }
    Ok(())
}

/// The value of `r` in every thread of the warpgroup, if all agree.
fn uniform(lanes: &[Thread], r: &Reg) -> Option<u64> {
    let v = lanes.first()?.regs[r.id as usize];
    lanes.iter().all(|th| th.regs[r.id as usize] == v).then_some(v)
}

/// Runs the warpgroup-collective instruction at `pc` for the 128 threads of warpgroup `g`.
pub(super) fn collective(
    ctx: &Ctx<'_>,
    lanes: &mut [Thread],
    (g, pc): (usize, usize),
    shared: &mut Shared,
    st: &mut GroupWg,
) -> Result<(), SimError> {
    let t0 = (g * 128) as u32;
    match ctx.k.insts.get(pc) {
        Some(Inst::WgmmaFence) => {
            for th in lanes.iter_mut() {
                th.wg.fenced = Some(th.regs.clone());
            }
        }
        Some(Inst::WgmmaCommit) => {
            let open = std::mem::take(&mut st.open);
            st.groups.push_back(open);
        }
        Some(Inst::WgmmaWait { n }) => {
            while st.groups.len() > *n as usize {
                if let Some(group) = st.groups.pop_front() {
                    for op in group {
                        complete(lanes, op, shared);
                    }
                }
            }
        }
        Some(Inst::Wgmma { ab, n, d, a, b_desc, scale_d, trans_b }) => {
            let op = issue(ctx, lanes, (t0, pc), (*ab, *n, d), (a, b_desc, scale_d, *trans_b), shared)?;
            for th in lanes.iter_mut() {
                for r in op.d.iter().chain(&op.a_regs) {
                    *th.wg.pending.entry(r.id).or_insert(0) += 1;
                }
            }
            for &o in &op.reads {
                for c in &mut shared.wg_reads[o..o + 2] {
                    *c += 1;
                }
            }
            st.open.push(op);
        }
        _ => return Err(ctx.fault(t0, pc, "internal: not a warpgroup-collective instruction")),
    }
    Ok(())
}

/// Checks and reads the operands of one `wgmma.mma_async`.
fn issue(
    ctx: &Ctx<'_>,
    lanes: &[Thread],
    (t0, pc): (u32, usize),
    (ab, n, d): (Ty, u32, &[Reg]),
    (a_op, b_desc, scale_d, trans_b): (&WgmmaA, &Reg, &Reg, bool),
    shared: &Shared,
) -> Result<Op, SimError> {
    let fault = |why: String| ctx.fault(t0, pc, why);
    if !matches!(ab, Ty::BF16 | Ty::F16) {
        return Err(fault(format!("wgmma.mma_async with {} inputs (bf16 or f16 only)", ab.suffix())));
    }
    if n == 0 || n > 256 || !n.is_multiple_of(8) || d.len() != n as usize / 2 || d.iter().any(|r| r.ty != Ty::F32) {
        return Err(fault(format!("wgmma.mma_async m64n{n}k16 with {} accumulator registers", d.len())));
    }
    let hazard = |t: u32, what: String| ctx.hazard(t, pc, what);
    let a_regs: Vec<Reg> = match a_op {
        WgmmaA::Regs(r) => r.to_vec(),
        WgmmaA::Desc(_) => Vec::new(),
    };
    for (i, th) in lanes.iter().enumerate() {
        let t = t0 + i as u32;
        let Some(vals) = &th.wg.fenced else {
            return Err(hazard(t, "wgmma.mma_async before any wgmma.fence".into()));
        };
        if let Some(r) = d.iter().find(|r| th.regs[r.id as usize] != vals[r.id as usize]) {
            return Err(hazard(
                t,
                format!("accumulator register {r} was written since the last wgmma.fence (missing wgmma.fence?)"),
            ));
        }
        if let Some(r) = a_regs.iter().find(|r| th.regs[r.id as usize] != vals[r.id as usize]) {
            return Err(hazard(
                t,
                format!("A fragment register {r} was written since the last wgmma.fence (missing wgmma.fence?)"),
            ));
        }
    }
    let a_desc = match a_op {
        WgmmaA::Desc(r) => Some(r),
        WgmmaA::Regs(_) => None,
    };
    let ad = a_desc.map(|r| uniform(lanes, r));
    let (Some(bd), Some(sd)) = (uniform(lanes, b_desc), uniform(lanes, scale_d)) else {
        return Err(fault("wgmma.mma_async descriptors and scale-d differ between the warpgroup's threads".into()));
    };
    if ad == Some(None) {
        return Err(fault("wgmma.mma_async descriptors and scale-d differ between the warpgroup's threads".into()));
    }
    let mut reads = Vec::with_capacity(16 * (64 + n as usize));
    let mut read = |desc: u64, rows: usize, mn_major: bool| -> Result<Vec<f32>, SimError> {
        let desc = Descriptor::decode(desc);
        let mut v = Vec::with_capacity(rows * 16);
        for r in 0..rows {
            for k in 0..16 {
                let o = if mn_major { desc.element_mn(r, k) } else { desc.element(r, k) };
                let o = o.map_err(|e| fault(format!("wgmma.mma_async descriptor: {e}")))?;
                if !shared.in_bounds(o as u64, 2) {
                    return Err(ctx.out_of_bounds((t0, pc), "shared", o as u64, 2));
                }
                shared.check_settled(ctx, (t0, pc), o, 2, "wgmma.mma_async operand read")?;
                if shared.unfenced[o] > 0 || shared.unfenced[o + 1] > 0 {
                    return Err(hazard(
                        t0,
                        format!(
                            "wgmma.mma_async reads shared offset 0x{o:x}, written through the generic proxy by a \
                             thread that has not run fence.proxy.async since (missing fence.proxy.async?)"
                        ),
                    ));
                }
                reads.push(o);
                v.push(b16(ab, u16::from_le_bytes([shared.data[o], shared.data[o + 1]])));
            }
        }
        Ok(v)
    };
    let a = match (ad, a_op) {
        (Some(Some(ad)), _) => read(ad, 64, false)?,
        (_, WgmmaA::Regs(r)) => a_fragment(lanes, ab, r),
        _ => return Err(fault("internal: wgmma.mma_async A operand".into())),
    };
    let b = read(bd, n as usize, trans_b)?;
    Ok(Op { a, b, d: d.to_vec(), a_regs, scale_d: sd != 0, reads })
}

/// A (64×16, row-major) from the register fragments of the warpgroup's 128 threads (ISA
/// "Register Fragments", Figure "WGMMA .m64nNk16 register fragment layout for matrix A"):
/// thread 32w + l (g = l / 4, q = l % 4) holds in `r[j]` (low half first) the elements
/// (16w + g + 8·(j % 2), 2q + 8·(j / 2)) and the next column.
fn a_fragment(lanes: &[Thread], ab: Ty, r: &[Reg; 4]) -> Vec<f32> {
    let mut a = vec![0f32; 64 * 16];
    for (t, th) in lanes.iter().enumerate() {
        let (w, l) = (t / 32, t % 32);
        let (g, q) = (l / 4, l % 4);
        for (j, reg) in r.iter().enumerate() {
            let bits = th.regs[reg.id as usize] as u32;
            let (row, col) = (16 * w + g + 8 * (j % 2), 2 * q + 8 * (j / 2));
            a[row * 16 + col] = b16(ab, bits as u16);
            a[row * 16 + col + 1] = b16(ab, (bits >> 16) as u16);
        }
    }
    a
}

/// One fewer pending operation uses `r`.
fn release(wg: &mut ThreadWg, r: &Reg) {
    if let Some(c) = wg.pending.get_mut(&r.id) {
        *c -= 1;
        if *c == 0 {
            wg.pending.remove(&r.id);
        }
    }
}

/// Completes one operation: D = A·B (+ D) into every thread's accumulator registers.
fn complete(lanes: &mut [Thread], op: Op, shared: &mut Shared) {
    for (l, th) in lanes.iter_mut().enumerate() {
        let (w, lane) = (l / 32, l % 32);
        for (i, r) in op.d.iter().enumerate() {
            let row = 16 * w + lane / 4 + 8 * ((i / 2) % 2);
            let col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
            let mut acc = if op.scale_d { f32::from_bits(th.regs[r.id as usize] as u32) } else { 0.0 };
            for k in 0..16 {
                acc += op.a[row * 16 + k] * op.b[col * 16 + k];
            }
            let bits = u64::from(acc.to_bits());
            th.regs[r.id as usize] = bits;
            if let Some(f) = th.wg.fenced.as_mut() {
                f[r.id as usize] = bits;
            }
            release(&mut th.wg, r);
        }
        for r in &op.a_regs {
            release(&mut th.wg, r);
        }
    }
    for o in op.reads {
        for c in &mut shared.wg_reads[o..o + 2] {
            *c = c.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Descriptor;

    #[test]
    fn descriptor_fields_decode_per_the_isa_bit_layout() {
        // start 0x1230 >> 4, LBO 2048 >> 4, SBO 128 >> 4, base offset 5, swizzle 1.
        let d: u64 = (0x1230 >> 4) | ((2048 >> 4) << 16) | ((128u64 >> 4) << 32) | (5 << 49) | (1 << 62);
        assert_eq!(
            Descriptor::decode(d),
            Descriptor { start: 0x1230, lbo: 2048, sbo: 128, base_offset: 5, swizzle: 1 }
        );
        // Bits outside the fields (14-15, 30-31, 46-48, 52-61) are ignored.
        let junk = (3u64 << 14) | (3 << 30) | (7 << 46) | (0x3FF << 52);
        assert_eq!(Descriptor::decode(d | junk), Descriptor::decode(d));
    }

    #[test]
    fn no_swizzle_and_128_byte_swizzle_element_offsets() {
        let d = Descriptor { start: 256, lbo: 1024, sbo: 128, base_offset: 0, swizzle: 0 };
        // Row 9 = core-matrix row 1 of the second 8-row group; k 11 = element 3 of the second
        // core matrix in K.
        assert_eq!(d.element(9, 11), Ok(256 + 128 + 16 + 1024 + 6));
        let s = Descriptor { start: 0, lbo: 16, sbo: 1024, base_offset: 0, swizzle: 1 };
        // Row 3, k 8: linear 3·128 + 16 = 400; chunk 1 XOR row 3 = chunk 2.
        assert_eq!(s.element(3, 8), Ok(3 * 128 + 2 * 16));
        assert!(Descriptor { swizzle: 2, ..s }.element(0, 0).is_err());
        assert!(Descriptor { base_offset: 1, ..s }.element(0, 0).is_err());
        // A k step (start + 32) stays in the pattern; a start 128 bytes in (row 1 of an atom)
        // would need base offset 1.
        // Row 3, k 0 at start 32 is k 16 of the row: chunk 2 XOR 3 = chunk 1.
        assert_eq!(Descriptor { start: 32, ..s }.element(3, 0), Ok(3 * 128 + 16));
        assert!(Descriptor { start: 128, ..s }.element(0, 0).is_err());
    }
}
