//! The interpreter: blocks one after another, threads of a block up to their next
//! synchronisation point, then barriers and warp-collective instructions (shuffles, `ldmatrix`,
//! `mma.sync`) resolved collectively.

use half::{bf16, f16};

use super::matrix::{self, AsyncState, Shared};
use super::tma;
use super::wgmma::{self, GroupWg, ThreadWg};
use super::{check_args, check_shared, ArgValue, DeviceLimits, GlobalMem, LaunchDims, SimError, OFFSET_BITS};
use crate::ptx::builder::{BinOp, Cmp, Inst, Kernel, Operand, Reg, ShflMode, Space, Special, Ty, UnOp};

/// Instructions one thread may execute in one launch before it is declared runaway.
const STEP_LIMIT: u64 = 50_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Run,
    /// Waiting at the `bar.sync` at this pc.
    Bar(usize),
    /// Waiting at the warp-collective instruction (shuffle, `ldmatrix`, `mma`) at this pc.
    Warp(usize),
    /// Waiting at the warpgroup-collective instruction (`wgmma.*`) at this pc.
    Group(usize),
    /// Blocked at the `mbarrier.try_wait` at this pc (its phase has not completed).
    Mbar(usize),
    /// Waiting at the named `bar.sync id, count` at this pc (the barrier has not completed).
    Named(usize),
    Done,
}

/// A block's named barriers 1..=15 (`bar.sync id, count` / `bar.arrive id, count`): per id,
/// the threads arrived in the current round and the round's count.
#[derive(Default)]
struct NamedBars {
    rounds: [(u32, Option<u32>); 16],
}

/// A warp's `bar.sync`/`bar.arrive id, count` (every lane at it): 32 arrivals; waiters block
/// until the round has `count`, which releases every waiter of that id and starts a new
/// round. A barrier id outside 1..=15, a count that is not a multiple of 32 or exceeds the
/// block, and two counts in one round are a [`SimError::Fault`] (the ISA: all threads of a
/// round must give the same count).
fn named_barrier(
    ctx: &Ctx<'_>,
    threads: &mut [Thread],
    (w, pc): (usize, usize),
    bars: &mut NamedBars,
) -> Result<(), SimError> {
    let t0 = (w * 32) as u32;
    let Some(&Inst::BarNamed { id, count, wait }) = ctx.k.insts.get(pc) else {
        return Err(ctx.fault(t0, pc, "internal: not a named barrier"));
    };
    if !(1..=15).contains(&id) {
        return Err(ctx.fault(t0, pc, format!("named barrier {id} (1..=15; 0 is bar.sync 0's, the whole block)")));
    }
    if count == 0 || !count.is_multiple_of(32) || count > ctx.dims.block {
        return Err(ctx.fault(
            t0,
            pc,
            format!(
                "named barrier {id} with a count of {count} (a multiple of 32 up to the block's {})",
                ctx.dims.block
            ),
        ));
    }
    let (arrived, round) = &mut bars.rounds[id as usize];
    if let Some(c) = *round {
        if c != count {
            return Err(ctx.fault(t0, pc, format!("named barrier {id}: a count of {count} in a round of {c}")));
        }
    }
    *round = Some(count);
    *arrived += 32;
    for th in &mut threads[w * 32..w * 32 + 32] {
        if wait {
            th.state = State::Named(pc);
        } else {
            th.state = State::Run;
            th.pc = pc + 1;
        }
    }
    if *arrived >= count {
        *arrived -= count;
        *round = None;
        for th in threads.iter_mut() {
            if let State::Named(p) = th.state {
                if matches!(ctx.k.insts.get(p), Some(Inst::BarNamed { id: i, .. }) if *i == id) {
                    th.state = State::Run;
                    th.pc = p + 1;
                }
            }
        }
    }
    Ok(())
}

pub(super) struct Thread {
    pc: usize,
    pub(super) regs: Vec<u64>,
    state: State,
    steps: u64,
    asyncs: AsyncState,
    pub(super) wg: ThreadWg,
}

fn mask(ty: Ty) -> u64 {
    match ty.bytes() {
        0 => 1,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// Value bits → f32 for a float type.
fn to_f32(ty: Ty, v: u64) -> f32 {
    match ty {
        Ty::F16 => f16::from_bits(v as u16).to_f32(),
        Ty::BF16 => bf16::from_bits(v as u16).to_f32(),
        _ => f32::from_bits(v as u32),
    }
}

/// f32 → value bits for a float type (round to nearest even).
fn from_f32(ty: Ty, x: f32) -> u64 {
    match ty {
        Ty::F16 => u64::from(f16::from_f32(x).to_bits()),
        Ty::BF16 => u64::from(bf16::from_f32(x).to_bits()),
        _ => u64::from(x.to_bits()),
    }
}

/// Value bits → i64, sign-extended for signed types.
fn to_i64(ty: Ty, v: u64) -> i64 {
    match ty {
        Ty::S32 => i64::from(v as u32 as i32),
        Ty::S64 => v as i64,
        _ => (v & mask(ty)) as i64,
    }
}

fn is_signed(ty: Ty) -> bool {
    matches!(ty, Ty::S32 | Ty::S64)
}

pub(super) struct Ctx<'a> {
    pub(super) k: &'a Kernel,
    labels: Vec<usize>,
    args: &'a [ArgValue],
    dims: LaunchDims,
    pub(super) block: u32,
}

impl Ctx<'_> {
    pub(super) fn args(&self) -> &[ArgValue] {
        self.args
    }

    pub(super) fn fault(&self, t: u32, pc: usize, reason: impl Into<String>) -> SimError {
        SimError::Fault { kernel: self.k.name.clone(), reason: reason.into(), block: self.block, thread: t, pc }
    }

    pub(super) fn misaligned(&self, (t, pc): (u32, usize), space: &'static str, addr: u64, bytes: u32) -> SimError {
        SimError::Misaligned { kernel: self.k.name.clone(), space, addr, bytes, block: self.block, thread: t, pc }
    }

    pub(super) fn out_of_bounds(&self, (t, pc): (u32, usize), space: &'static str, addr: u64, bytes: u32) -> SimError {
        SimError::OutOfBounds { kernel: self.k.name.clone(), space, addr, bytes, block: self.block, thread: t, pc }
    }

    pub(super) fn hazard(&self, t: u32, pc: usize, what: impl Into<String>) -> SimError {
        SimError::AsyncHazard { kernel: self.k.name.clone(), what: what.into(), block: self.block, thread: t, pc }
    }
}

/// Operand bits in the type `ty`.
fn val(regs: &[u64], o: &Operand, ty: Ty) -> u64 {
    match o {
        Operand::Reg(r) => regs[r.id as usize],
        Operand::Int(i) => {
            if ty.is_float() {
                from_f32(ty, *i as f32)
            } else {
                (*i as u64) & mask(ty)
            }
        }
        Operand::F32(f) => from_f32(ty, *f),
    }
}

/// Runs `k` over the grid on an sm_90 device ([`DeviceLimits::default`]). Global memory is
/// read and written in place.
pub fn launch(k: &Kernel, dims: LaunchDims, args: &[ArgValue], mem: &mut GlobalMem) -> Result<(), SimError> {
    launch_with(k, dims, args, mem, DeviceLimits::default())
}

/// [`launch`] on a device with `limits`: a kernel needing more shared memory per block is a
/// [`SimError::BadLaunch`].
pub fn launch_with(
    k: &Kernel,
    dims: LaunchDims,
    args: &[ArgValue],
    mem: &mut GlobalMem,
    limits: DeviceLimits,
) -> Result<(), SimError> {
    check_args(k, args)?;
    check_shared(k, limits)?;
    if dims.grid > crate::ptx::lower::MAX_GRID_X {
        return Err(SimError::BadLaunch(
            format!("grid of {} blocks exceeds CUDA's 2^31 - 1", dims.grid),
            k.name.clone(),
        ));
    }
    if dims.block == 0 || dims.block > 1024 {
        return Err(SimError::BadLaunch(format!("block size {} not in 1..=1024", dims.block), k.name.clone()));
    }
    if let Some(b) = k.block {
        if dims.block > b {
            return Err(SimError::BadLaunch(format!("block size {} exceeds .maxntid {b}", dims.block), k.name.clone()));
        }
        if k.uses_setmaxnreg() && dims.block != b {
            return Err(SimError::BadLaunch(
                format!("block size {} is not the .reqntid {b}", dims.block),
                k.name.clone(),
            ));
        }
    }
    let mut labels = Vec::new();
    for (pc, i) in k.insts.iter().enumerate() {
        if let Inst::Label(l) = i {
            let l = l.0 as usize;
            if labels.len() <= l {
                labels.resize(l + 1, usize::MAX);
            }
            labels[l] = pc;
        }
    }
    for block in 0..dims.grid {
        let ctx = Ctx { k, labels: labels.clone(), args, dims, block };
        run_block(&ctx, mem)?;
    }
    Ok(())
}

fn run_block(ctx: &Ctx<'_>, mem: &mut GlobalMem) -> Result<(), SimError> {
    let k = ctx.k;
    let n = ctx.dims.block as usize;
    let mut shared = Shared::new(super::shared_window(k) as usize, k.shared_total() as usize);
    let mut threads: Vec<Thread> = (0..n)
        .map(|_| Thread {
            pc: 0,
            regs: vec![0; k.regs.len()],
            state: State::Run,
            steps: 0,
            asyncs: AsyncState::default(),
            wg: ThreadWg::default(),
        })
        .collect();
    let mut groups: Vec<GroupWg> = (0..n.div_ceil(128)).map(|_| GroupWg::default()).collect();
    let mut pool = RegPool::new(k.block.unwrap_or(ctx.dims.block), n.div_ceil(128));
    let mut named = NamedBars::default();
    loop {
        for (t, th) in threads.iter_mut().enumerate() {
            if th.state == State::Run {
                run_thread(ctx, t as u32, th, mem, &mut shared)?;
            }
        }
        // Warp-collective instructions first: every lane of the warp at the same one.
        let mut progressed = false;
        for w in 0..n.div_ceil(32) {
            let lanes = w * 32..(w * 32 + 32).min(n);
            let first = threads[lanes.clone()].iter().find_map(|t| match t.state {
                State::Warp(pc) => Some(pc),
                _ => None,
            });
            let Some(pc) = first else { continue };
            // A lane blocked at an mbarrier wait may still come: not a divergence yet.
            if threads[lanes.clone()].iter().any(|t| matches!(t.state, State::Mbar(_))) {
                continue;
            }
            if lanes.len() != 32 || threads[lanes.clone()].iter().any(|t| t.state != State::Warp(pc)) {
                let states: Vec<String> = threads[lanes.clone()].iter().map(|t| format!("{:?}", t.state)).collect();
                return Err(SimError::Divergence {
                    kernel: k.name.clone(),
                    block: ctx.block,
                    what: format!(
                        "warp {w}: {} at instruction {pc} needs every lane of the warp, but the lanes are at [{}]",
                        collective_name(k.insts.get(pc)),
                        states.join(", ")
                    ),
                });
            }
            if matches!(k.insts.get(pc), Some(Inst::BarNamed { .. })) {
                named_barrier(ctx, &mut threads, (w, pc), &mut named)?;
            } else {
                collective(ctx, &mut threads[lanes], (w, pc), &shared)?;
            }
            progressed = true;
        }
        if progressed {
            continue;
        }
        if warpgroups(ctx, &mut threads, &mut shared, (&mut groups, &mut pool))? {
            continue;
        }
        // Warpgroups still at a collective now are at a `setmaxnreg.inc` the pool cannot pay
        // for: the root cause when the mbarrier waits are stuck too (they wait on them).
        let unpaid = threads
            .iter()
            .position(
                |t| matches!(t.state, State::Group(pc) if matches!(k.insts.get(pc), Some(Inst::SetMaxNReg { .. }))),
            )
            .map(|t| t / 128);
        // Likewise warps at a named barrier that nothing can complete (the mbarrier waits of
        // a producer then wait on them).
        let named_waiting = threads.iter().any(|t| matches!(t.state, State::Named(_)));
        match mbar_waiters(ctx, &mut threads, &mut shared) {
            Ok(true) => continue,
            Ok(false) | Err(SimError::Deadlock { .. }) if unpaid.is_some() || named_waiting => {}
            Ok(false) => {}
            Err(e) => return Err(e),
        }
        if let Some(g) = unpaid {
            return Err(SimError::Deadlock {
                kernel: k.name.clone(),
                block: ctx.block,
                what: format!("warpgroup {g} blocks at a setmaxnreg.inc that nothing can pay for: {}", pool.describe()),
            });
        }
        if let Some(t) = threads.iter().position(|t| matches!(t.state, State::Named(_))) {
            let pc = match threads[t].state {
                State::Named(pc) => pc,
                _ => 0,
            };
            let (id, count) = match k.insts.get(pc) {
                Some(&Inst::BarNamed { id, count, .. }) => (id, count),
                _ => (0, 0),
            };
            let arrived = named.rounds.get(id as usize).map_or(0, |r| r.0);
            return Err(SimError::Deadlock {
                kernel: k.name.clone(),
                block: ctx.block,
                what: format!(
                    "thread {t} waits at named barrier {id} (bar.sync {id}, {count} at instruction {pc}) with {arrived} \
                     of {count} threads arrived, and nothing else can run"
                ),
            });
        }
        let waiting: Vec<usize> = threads
            .iter()
            .filter_map(|t| match t.state {
                State::Bar(pc) => Some(pc),
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let pc = waiting[0];
        if waiting.len() != n || waiting.iter().any(|&p| p != pc) {
            let done = threads.iter().filter(|t| t.state == State::Done).count();
            return Err(SimError::Divergence {
                kernel: k.name.clone(),
                block: ctx.block,
                what: format!(
                    "bar.sync: {} of {n} threads wait (at instructions {:?}), {done} exited",
                    waiting.len(),
                    {
                        let mut p = waiting.clone();
                        p.dedup();
                        p
                    }
                ),
            });
        }
        shared.tma.barrier();
        for th in threads.iter_mut() {
            th.state = State::Run;
            th.pc = pc + 1;
        }
    }
}

/// The block's register pool for `setmaxnreg` (see the module notes in [`super`]).
struct RegPool {
    /// Registers per thread at launch.
    launch: u32,
    /// Registers in the pool.
    free: u64,
    /// Each warpgroup's per-thread count once it has executed its `setmaxnreg`.
    set: Vec<Option<u32>>,
}

impl RegPool {
    fn new(threads: u32, warpgroups: usize) -> Self {
        RegPool { launch: super::launch_registers(threads), free: 0, set: vec![None; warpgroups] }
    }

    fn describe(&self) -> String {
        let counts: Vec<String> =
            self.set.iter().map(|c| c.map_or(format!("{} (launch)", self.launch), |c| c.to_string())).collect();
        format!("{} registers free in the pool, warpgroups at [{}] per thread", self.free, counts.join(", "))
    }

    /// `setmaxnreg` by warpgroup `g`: whether it went through (false: an `.inc` waiting for
    /// the pool), or why it is wrong.
    fn adjust(&mut self, g: usize, inc: bool, count: u32) -> Result<bool, String> {
        if !(24..=256).contains(&count) || !count.is_multiple_of(8) {
            return Err(format!("setmaxnreg count {count} is not a multiple of 8 in 24..=256"));
        }
        let Some(slot) = self.set.get_mut(g) else { return Err(format!("no warpgroup {g}")) };
        if slot.is_some() {
            return Err(format!(
                "warpgroup {g} executes a second setmaxnreg (the simulator models one per warpgroup, not the                  synchronisation the ISA requires between two)"
            ));
        }
        let cur = self.launch;
        let per_group = |regs: u32| 128 * u64::from(regs);
        if inc {
            if count < cur {
                return Err(format!("setmaxnreg.inc to {count} below the warpgroup's {cur} registers per thread"));
            }
            let need = per_group(count - cur);
            if self.free < need {
                return Ok(false);
            }
            self.free -= need;
        } else {
            if count > cur {
                return Err(format!("setmaxnreg.dec to {count} above the warpgroup's {cur} registers per thread"));
            }
            self.free += per_group(cur - count);
        }
        *slot = Some(count);
        Ok(true)
    }
}

/// Runs the warpgroup-collective instructions (`wgmma.*`, `setmaxnreg`) that every thread of their
/// warpgroup (128 threads, warps 4g..4g+3) has reached; a warpgroup with only some of its
/// threads at one is a divergence. Returns whether any ran.
fn warpgroups(
    ctx: &Ctx<'_>,
    threads: &mut [Thread],
    shared: &mut Shared,
    (groups, pool): (&mut [GroupWg], &mut RegPool),
) -> Result<bool, SimError> {
    let n = threads.len();
    let mut progressed = false;
    for (g, st) in groups.iter_mut().enumerate() {
        let range = g * 128..(g * 128 + 128).min(n);
        let first = threads[range.clone()].iter().find_map(|t| match t.state {
            State::Group(pc) => Some(pc),
            _ => None,
        });
        let Some(pc) = first else { continue };
        // A thread blocked at an mbarrier wait (a producer) may still come.
        if threads[range.clone()].iter().any(|t| matches!(t.state, State::Mbar(_))) {
            continue;
        }
        if range.len() != 128 || threads[range.clone()].iter().any(|t| t.state != State::Group(pc)) {
            let states: Vec<String> = threads[range.clone()].iter().map(|t| format!("{:?}", t.state)).collect();
            return Err(SimError::Divergence {
                kernel: ctx.k.name.clone(),
                block: ctx.block,
                what: format!(
                    "warpgroup {g}: the warpgroup-collective instruction at {pc} needs all 128 threads of the \
                     warpgroup, but they are at [{}]",
                    states.join(", ")
                ),
            });
        }
        if let Some(&Inst::SetMaxNReg { inc, count }) = ctx.k.insts.get(pc) {
            match pool.adjust(g, inc, count) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => return Err(ctx.fault((g * 128) as u32, pc, why)),
            }
        } else {
            wgmma::collective(ctx, &mut threads[range.clone()], (g, pc), shared, st)?;
        }
        for th in &mut threads[range] {
            th.pc = pc + 1;
            th.state = State::Run;
        }
        progressed = true;
    }
    Ok(progressed)
}

/// Re-tests the threads blocked at an `mbarrier.try_wait`: those whose phase has completed
/// run again (the wait then succeeds). Returns whether any did; when none did, and nothing
/// else can run, the waits can never complete: a [`SimError::Deadlock`].
fn mbar_waiters(ctx: &Ctx<'_>, threads: &mut [Thread], shared: &mut Shared) -> Result<bool, SimError> {
    let mut progressed = false;
    let mut stuck = Vec::new();
    for (t, th) in threads.iter_mut().enumerate() {
        let State::Mbar(pc) = th.state else { continue };
        let Some(Inst::MbarTryWait { addr, parity, .. }) = ctx.k.insts.get(pc) else {
            return Err(ctx.fault(t as u32, pc, "internal: not an mbarrier.try_wait"));
        };
        let a = th.regs[addr.id as usize];
        let p = val(&th.regs, parity, Ty::U32);
        if tma::try_wait(ctx, (t as u32, pc), shared, a, p)? {
            th.state = State::Run;
            progressed = true;
        } else {
            stuck.push((t, pc, a, p));
        }
    }
    if progressed || stuck.is_empty() {
        return Ok(progressed);
    }
    let (t, pc, a, p) = stuck[0];
    let others = threads.iter().filter(|th| matches!(th.state, State::Bar(_))).count();
    Err(SimError::Deadlock {
        kernel: ctx.k.name.clone(),
        block: ctx.block,
        what: format!(
            "{} threads wait on mbarrier phases that can never complete ({others} more at bar.sync); thread {t} at \
             instruction {pc} waits for the phase of parity {p} of the {}",
            stuck.len(),
            shared.tma.waiting_on((a & 0xFFFF_FFFF) as usize)
        ),
    })
}

fn collective_name(i: Option<&Inst>) -> &'static str {
    match i {
        Some(Inst::Shfl { .. }) => "shfl.sync (full mask)",
        Some(Inst::LdMatrix { .. }) => "ldmatrix.sync.aligned",
        Some(Inst::Mma { .. }) => "mma.sync.aligned",
        _ => "a warp-collective instruction",
    }
}

/// Runs the warp-collective instruction at `pc` for the 32 lanes of warp `w`, then resumes them.
fn collective(ctx: &Ctx<'_>, lanes: &mut [Thread], (w, pc): (usize, usize), shared: &Shared) -> Result<(), SimError> {
    let t0 = (w * 32) as u32;
    match ctx.k.insts.get(pc) {
        Some(Inst::Shfl { .. }) => return shuffle(ctx, lanes, pc),
        Some(Inst::LdMatrix { trans, dst, addr }) => matrix::ldmatrix(ctx, lanes, (w, pc), *trans, dst, addr, shared)?,
        Some(Inst::Mma { ab, d, a, b, c }) => {
            if !matches!(ab, Ty::BF16 | Ty::F16) {
                return Err(ctx.fault(t0, pc, format!("mma.sync with {} inputs", ab.suffix())));
            }
            matrix::mma(lanes, *ab, d, a, b, c);
        }
        _ => return Err(ctx.fault(t0, pc, "internal: not a warp-collective instruction")),
    }
    for th in lanes.iter_mut() {
        th.pc = pc + 1;
        th.state = State::Run;
    }
    Ok(())
}

fn shuffle(ctx: &Ctx<'_>, lanes: &mut [Thread], pc: usize) -> Result<(), SimError> {
    let Some(Inst::Shfl { mode, dst, src, lane }) = ctx.k.insts.get(pc) else {
        return Err(ctx.fault(0, pc, "internal: not a shuffle"));
    };
    let vals: Vec<u64> = lanes.iter().map(|t| t.regs[src.id as usize] & 0xFFFF_FFFF).collect();
    for (i, th) in lanes.iter_mut().enumerate() {
        let b = val(&th.regs, lane, Ty::U32) as i64;
        let i = i as i64;
        let j = match mode {
            ShflMode::Bfly => i ^ b,
            ShflMode::Down => i + b,
            ShflMode::Up => i - b,
            ShflMode::Idx => b & 31,
        };
        let v = if (0..32).contains(&j) { vals[j as usize] } else { vals[i as usize] };
        th.regs[dst.id as usize] = v;
        th.pc = pc + 1;
        th.state = State::Run;
    }
    Ok(())
}

fn access(
    ctx: &Ctx<'_>,
    (t, pc): (u32, usize),
    space: Space,
    addr: u64,
    bytes: u32,
    shared: &Shared,
    mem: &GlobalMem,
) -> Result<(), SimError> {
    let oob = || ctx.out_of_bounds((t, pc), space.name(), addr, bytes);
    if !addr.is_multiple_of(u64::from(bytes)) {
        return Err(ctx.misaligned((t, pc), space.name(), addr, bytes));
    }
    let ok = match space {
        Space::Global => mem.read(addr, bytes as usize).is_some(),
        Space::Shared => shared.in_bounds(addr, u64::from(bytes)),
        Space::Const => {
            let tab = (addr >> OFFSET_BITS) as usize;
            let off = addr & ((1u64 << OFFSET_BITS) - 1);
            tab >= 1 && ctx.k.consts.get(tab - 1).is_some_and(|c| off + u64::from(bytes) <= 4 * c.words.len() as u64)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(oob())
    }
}

fn read_bytes(ctx: &Ctx<'_>, space: Space, addr: u64, len: usize, mem: &GlobalMem, shared: &Shared) -> Vec<u8> {
    match space {
        Space::Global => mem.read(addr, len).map(<[u8]>::to_vec).unwrap_or_default(),
        Space::Shared => shared.data[addr as usize..addr as usize + len].to_vec(),
        Space::Const => {
            let tab = (addr >> OFFSET_BITS) as usize - 1;
            let off = (addr & ((1u64 << OFFSET_BITS) - 1)) as usize;
            let bytes: Vec<u8> = ctx.k.consts[tab].words.iter().flat_map(|w| w.to_le_bytes()).collect();
            bytes[off..off + len].to_vec()
        }
    }
}

fn run_thread(
    ctx: &Ctx<'_>,
    t: u32,
    th: &mut Thread,
    mem: &mut GlobalMem,
    shared: &mut Shared,
) -> Result<(), SimError> {
    let k = ctx.k;
    loop {
        let pc = th.pc;
        th.steps += 1;
        if th.steps > STEP_LIMIT {
            return Err(SimError::StepLimit { kernel: k.name.clone(), block: ctx.block, thread: t, limit: STEP_LIMIT });
        }
        let Some(inst) = k.insts.get(pc) else {
            return Err(ctx.fault(t, pc, "ran off the end of the kernel"));
        };
        if th.wg.busy() {
            wgmma::check_regs(ctx, (t, pc), inst, &th.wg)?;
        }
        let regs = &mut th.regs;
        let set = |regs: &mut Vec<u64>, r: &Reg, v: u64| regs[r.id as usize] = v & mask(r.ty);
        th.pc += 1;
        match inst {
            Inst::LdParam { dst, index } => {
                let v = match ctx.args.get(*index) {
                    Some(ArgValue::Ptr(p)) => *p,
                    Some(ArgValue::U32(u)) => u64::from(*u),
                    Some(ArgValue::F32(f)) => u64::from(f.to_bits()),
                    Some(ArgValue::TensorMap(_)) => tma::PARAM_SPACE_TAG | *index as u64,
                    None => return Err(ctx.fault(t, pc, format!("no argument {index}"))),
                };
                set(regs, dst, v);
            }
            Inst::Mov { dst, src } => {
                let v = val(regs, src, dst.ty);
                set(regs, dst, v);
            }
            Inst::Bitcast { dst, src } => {
                let v = regs[src.id as usize];
                set(regs, dst, v);
            }
            Inst::Pack { dst, lo, hi } => {
                let v = (regs[lo.id as usize] & 0xFFFF) | ((regs[hi.id as usize] & 0xFFFF) << 16);
                set(regs, dst, v);
            }
            Inst::Unpack { lo, hi, src } => {
                let v = regs[src.id as usize];
                set(regs, lo, v & 0xFFFF);
                set(regs, hi, (v >> 16) & 0xFFFF);
            }
            Inst::Prmt { dst, a, b, sel } => {
                let bytes = (regs[a.id as usize] & 0xFFFF_FFFF) | ((regs[b.id as usize] & 0xFFFF_FFFF) << 32);
                let sel = val(regs, sel, Ty::U32);
                let v = (0..4).fold(0u64, |v, i| {
                    let n = (sel >> (4 * i)) & 0xF;
                    let byte = (bytes >> (8 * (n & 7))) & 0xFF;
                    let byte = if n & 8 != 0 {
                        if byte & 0x80 != 0 {
                            0xFF
                        } else {
                            0
                        }
                    } else {
                        byte
                    };
                    v | (byte << (8 * i))
                });
                set(regs, dst, v);
            }
            Inst::ReadSpecial { dst, sreg } => {
                let v = match sreg {
                    Special::TidX => t,
                    Special::NtidX => ctx.dims.block,
                    Special::CtaidX => ctx.block,
                    Special::NctaidX => ctx.dims.grid,
                    Special::LaneId => t % 32,
                };
                set(regs, dst, u64::from(v));
            }
            Inst::SharedBase { dst } => set(regs, dst, shared.base as u64),
            Inst::ConstBase { dst, table } => set(regs, dst, ((*table as u64) + 1) << OFFSET_BITS),
            Inst::Ld { space, dst, addr, offset, guard } => {
                if let Some(g) = guard {
                    if (regs[g.pred.id as usize] != 0) == g.negate {
                        continue;
                    }
                }
                let Some(first) = dst.first() else { continue };
                let size = first.ty.bytes();
                let total = size * dst.len() as u32;
                let a = regs[addr.id as usize].wrapping_add(*offset as i64 as u64);
                access(ctx, (t, pc), *space, a, total, shared, mem)?;
                if *space == Space::Shared {
                    shared.check_settled(ctx, (t, pc), a as usize, total as usize, "ld.shared")?;
                }
                let bytes = read_bytes(ctx, *space, a, total as usize, mem, shared);
                for (i, r) in dst.iter().enumerate() {
                    let mut w = [0u8; 8];
                    w[..size as usize].copy_from_slice(&bytes[i * size as usize..(i + 1) * size as usize]);
                    set(regs, r, u64::from_le_bytes(w));
                }
            }
            Inst::St { space, src, addr, offset, guard } => {
                if let Some(g) = guard {
                    if (regs[g.pred.id as usize] != 0) == g.negate {
                        continue;
                    }
                }
                let Some(first) = src.first() else { continue };
                let size = first.ty.bytes() as usize;
                let total = size * src.len();
                let a = regs[addr.id as usize].wrapping_add(*offset as i64 as u64);
                access(ctx, (t, pc), *space, a, total as u32, shared, mem)?;
                if *space == Space::Shared {
                    shared.check_settled(ctx, (t, pc), a as usize, total, "st.shared")?;
                    shared.check_wgmma_free(ctx, (t, pc), a as usize, total, "st.shared")?;
                    wgmma::generic_write(&mut th.wg, shared, a as usize, total);
                }
                let bytes: Vec<u8> =
                    src.iter().flat_map(|r| regs[r.id as usize].to_le_bytes()[..size].to_vec()).collect();
                match space {
                    Space::Global => {
                        if let Some(w) = mem.write(a, total) {
                            w.copy_from_slice(&bytes);
                        }
                    }
                    Space::Shared => shared.data[a as usize..a as usize + total].copy_from_slice(&bytes),
                    Space::Const => return Err(ctx.fault(t, pc, "store to the const space")),
                }
            }
            Inst::Bin { op, dst, a, b } => {
                let ty = dst.ty;
                let (va, vb) = (val(regs, a, ty), val(regs, b, ty));
                let v = if ty.is_float() {
                    let (x, y) = (to_f32(ty, va), to_f32(ty, vb));
                    let r = match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        BinOp::Min => x.min(y),
                        BinOp::Max => x.max(y),
                        BinOp::Rem | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => {
                            return Err(ctx.fault(t, pc, format!("{op:?} on a float type")))
                        }
                    };
                    from_f32(ty, r)
                } else {
                    let signed = is_signed(ty);
                    let (x, y) = (to_i64(ty, va), to_i64(ty, vb));
                    let (ux, uy) = (va & mask(ty), vb & mask(ty));
                    match op {
                        BinOp::Add => ux.wrapping_add(uy),
                        BinOp::Sub => ux.wrapping_sub(uy),
                        BinOp::Mul => ux.wrapping_mul(uy),
                        BinOp::Div | BinOp::Rem if uy == 0 => return Err(ctx.fault(t, pc, "integer division by zero")),
                        BinOp::Div if signed => x.wrapping_div(y) as u64,
                        BinOp::Div => ux / uy,
                        BinOp::Rem if signed => x.wrapping_rem(y) as u64,
                        BinOp::Rem => ux % uy,
                        BinOp::Min if signed => x.min(y) as u64,
                        BinOp::Min => ux.min(uy),
                        BinOp::Max if signed => x.max(y) as u64,
                        BinOp::Max => ux.max(uy),
                        BinOp::And => ux & uy,
                        BinOp::Or => ux | uy,
                        BinOp::Xor => ux ^ uy,
                        BinOp::Shl => {
                            if uy >= u64::from(ty.bytes() * 8) {
                                0
                            } else {
                                ux << uy
                            }
                        }
                        BinOp::Shr if signed => (x >> uy.min(63)) as u64,
                        BinOp::Shr => ux.checked_shr(uy as u32).unwrap_or(0),
                    }
                };
                set(regs, dst, v);
            }
            Inst::Un { op, dst, a } => {
                let ty = dst.ty;
                let va = val(regs, a, ty);
                let v = if ty.is_float() {
                    let x = to_f32(ty, va);
                    let r = match op {
                        UnOp::Neg => -x,
                        UnOp::Abs => x.abs(),
                        UnOp::Sqrt => x.sqrt(),
                        UnOp::Rsqrt => (1.0 / f64::from(x).sqrt()) as f32,
                        UnOp::Rcp => 1.0 / x,
                        UnOp::Ex2 => (f64::from(x).exp2()) as f32,
                        UnOp::Lg2 => (f64::from(x).log2()) as f32,
                        UnOp::Sin => (f64::from(x).sin()) as f32,
                        UnOp::Cos => (f64::from(x).cos()) as f32,
                        UnOp::Rni => x.round_ties_even(),
                        UnOp::Not => return Err(ctx.fault(t, pc, "not on a float type")),
                    };
                    from_f32(ty, r)
                } else {
                    let x = to_i64(ty, va);
                    match op {
                        UnOp::Neg => x.wrapping_neg() as u64,
                        UnOp::Abs => x.wrapping_abs() as u64,
                        UnOp::Not => !va,
                        _ => return Err(ctx.fault(t, pc, format!("{op:?} on an integer type"))),
                    }
                };
                set(regs, dst, v);
            }
            Inst::Fma { dst, a, b, c } => {
                let ty = dst.ty;
                let (va, vb, vc) = (val(regs, a, ty), val(regs, b, ty), val(regs, c, ty));
                let v = if ty.is_float() {
                    from_f32(ty, to_f32(ty, va).mul_add(to_f32(ty, vb), to_f32(ty, vc)))
                } else {
                    va.wrapping_mul(vb).wrapping_add(vc)
                };
                set(regs, dst, v);
            }
            Inst::MulWide { dst, a, b } => {
                let x = regs[a.id as usize] & 0xFFFF_FFFF;
                let y = val(regs, b, Ty::U32);
                set(regs, dst, x * y);
            }
            Inst::Cvt { dst, src } => {
                let v = regs[src.id as usize];
                let out = match (dst.ty.is_float(), src.ty.is_float()) {
                    (true, true) => from_f32(dst.ty, to_f32(src.ty, v)),
                    (true, false) => {
                        let x = to_i64(src.ty, v);
                        from_f32(dst.ty, if is_signed(src.ty) { x as f32 } else { (v & mask(src.ty)) as f32 })
                    }
                    (false, true) => {
                        let x = to_f32(src.ty, v).trunc();
                        match dst.ty {
                            Ty::S32 => i64::from(x as i32) as u64,
                            Ty::S64 => (x as i64) as u64,
                            Ty::U32 => u64::from(x as u32),
                            _ => x as u64,
                        }
                    }
                    (false, false) => to_i64(src.ty, v) as u64,
                };
                set(regs, dst, out);
            }
            Inst::Setp { cmp, dst, a, b } => {
                let ty = match (a, b) {
                    (Operand::Reg(r), _) | (_, Operand::Reg(r)) => r.ty,
                    _ => Ty::S32,
                };
                let (va, vb) = (val(regs, a, ty), val(regs, b, ty));
                let ord = if ty.is_float() {
                    to_f32(ty, va).partial_cmp(&to_f32(ty, vb))
                } else if is_signed(ty) {
                    Some(to_i64(ty, va).cmp(&to_i64(ty, vb)))
                } else {
                    Some((va & mask(ty)).cmp(&(vb & mask(ty))))
                };
                use std::cmp::Ordering::{Equal, Greater, Less};
                let r = match (cmp, ord) {
                    (Cmp::Ne, None) => false,
                    (_, None) => false,
                    (Cmp::Eq, Some(o)) => o == Equal,
                    (Cmp::Ne, Some(o)) => o != Equal,
                    (Cmp::Lt, Some(o)) => o == Less,
                    (Cmp::Le, Some(o)) => o != Greater,
                    (Cmp::Gt, Some(o)) => o == Greater,
                    (Cmp::Ge, Some(o)) => o != Less,
                };
                set(regs, dst, u64::from(r));
            }
            Inst::Selp { dst, a, b, pred } => {
                let v = if regs[pred.id as usize] != 0 { val(regs, a, dst.ty) } else { val(regs, b, dst.ty) };
                set(regs, dst, v);
            }
            Inst::Label(_) | Inst::NoUnroll => {}
            Inst::Bra { target, guard } => {
                let taken = guard.is_none_or(|g| (regs[g.pred.id as usize] != 0) != g.negate);
                if taken {
                    match ctx.labels.get(target.0 as usize) {
                        Some(&p) if p != usize::MAX => th.pc = p,
                        _ => return Err(ctx.fault(t, pc, format!("branch to undefined label L{}", target.0))),
                    }
                }
            }
            Inst::BarSync => {
                th.pc = pc;
                th.state = State::Bar(pc);
                return Ok(());
            }
            Inst::Shfl { .. } | Inst::LdMatrix { .. } | Inst::Mma { .. } | Inst::BarNamed { .. } => {
                th.pc = pc;
                th.state = State::Warp(pc);
                return Ok(());
            }
            Inst::WgmmaFence
            | Inst::WgmmaCommit
            | Inst::WgmmaWait { .. }
            | Inst::Wgmma { .. }
            | Inst::SetMaxNReg { .. } => {
                th.pc = pc;
                th.state = State::Group(pc);
                return Ok(());
            }
            Inst::FenceProxyAsync => {
                wgmma::fence_proxy(&mut th.wg, &mut th.asyncs, shared);
                shared.tma.fence_inits(t);
            }
            Inst::CpAsync { cache, dst, src, size, src_size } => {
                let d = regs[dst.id as usize] & 0xFFFF_FFFF;
                let s = regs[src.id as usize];
                let n = src_size.as_ref().map_or(u64::from(*size), |o| val(regs, o, Ty::U32));
                matrix::cp_async(ctx, (t, pc), *cache, d, s, *size, n, mem, shared, &mut th.asyncs)?;
            }
            Inst::MbarInit { addr, count } => tma::init(ctx, (t, pc), shared, regs[addr.id as usize], *count)?,
            Inst::MbarArriveExpectTx { addr, tx } => tma::arrive(ctx, (t, pc), shared, regs[addr.id as usize], *tx)?,
            Inst::MbarArrive { addr } => tma::arrive(ctx, (t, pc), shared, regs[addr.id as usize], 0)?,
            Inst::MbarTryWait { dst, addr, parity } => {
                let p = val(regs, parity, Ty::U32);
                if tma::try_wait(ctx, (t, pc), shared, regs[addr.id as usize], p)? {
                    set(regs, dst, 1);
                } else {
                    th.pc = pc;
                    th.state = State::Mbar(pc);
                    return Ok(());
                }
            }
            Inst::FenceMbarrierInit => shared.tma.fence_inits(t),
            Inst::CvtaParam { dst, src } => {
                // Only kernel parameters' addresses are in the parameter space here (the
                // simulator gives other parameters' values, not addresses).
                let v = regs[src.id as usize];
                if v & tma::PARAM_SPACE_TAG == 0 {
                    return Err(ctx.fault(t, pc, format!("cvta.param of 0x{v:x}, not a parameter's address")));
                }
                set(regs, dst, (v & !tma::PARAM_SPACE_TAG) | tma::GENERIC_PARAM_TAG);
            }
            Inst::TmaLoad { dst, tmap, coords, mbar } => {
                let c: Vec<i64> = coords.iter().map(|r| i64::from(regs[r.id as usize] as u32 as i32)).collect();
                let (d, m, mb) = (regs[dst.id as usize], regs[tmap.id as usize], regs[mbar.id as usize]);
                tma::load(ctx, (t, pc), d, m, &c, mb, mem, shared)?;
            }
            Inst::CpAsyncCommit => th.asyncs.commit(),
            Inst::CpAsyncWait { n } => th.asyncs.wait(*n, shared),
            Inst::CpAsyncWaitAll => th.asyncs.flush(shared),
            Inst::CvtPack { ty, dst, hi, lo } => {
                let v = matrix::cvt_pack(
                    *ty,
                    f32::from_bits(regs[hi.id as usize] as u32),
                    f32::from_bits(regs[lo.id as usize] as u32),
                );
                set(regs, dst, v);
            }
            Inst::Ret => {
                th.asyncs.flush(shared);
                th.state = State::Done;
                return Ok(());
            }
        }
    }
}
