//! The typed PTX builder: virtual registers with types, state spaces, the instruction list
//! that both the text emitter ([`crate::ptx::emit`](mod@crate::ptx::emit)) and the simulator ([`crate::ptx::sim`])
//! consume. A kernel is built once per shape and parameter point; sizes are immediates.

pub use super::inst::*;

/// A constant table (`.const .b32 name[N] = {...}`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstTable {
    pub name: String,
    pub words: Vec<u32>,
}

/// PTX targets vidrt emits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Sm80,
    Sm90a,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Sm80, Target::Sm90a];

    /// The `.target` name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Sm80 => "sm_80",
            Target::Sm90a => "sm_90a",
        }
    }

    /// The `.version` to emit: 8.0 covers sm_80 (drivers from CUDA 12.0); sm_90a needs 8.0 too.
    pub fn ptx_version(self) -> &'static str {
        match self {
            Target::Sm80 | Target::Sm90a => "8.0",
        }
    }

    /// The most shared memory one block may use here, static and dynamic together: the opt-in
    /// maximum (`CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`), reached through
    /// dynamic shared memory only: sm_80 (A100) 163 KiB, sm_90a (H100/H200) 227 KiB. The other
    /// sm_8x devices run the sm_80 text with less (sm_86/sm_89: 99 KiB); the CUDA backend
    /// checks the device's own value.
    pub const fn max_shared(self) -> u32 {
        match self {
            Target::Sm80 => 163 * 1024,
            Target::Sm90a => 227 * 1024,
        }
    }
}

/// Static shared memory (`.shared`) one kernel may declare on every target: 48 KiB. Past it a
/// kernel's shared memory is dynamic (see [`KernelBuilder::shared`]).
pub const STATIC_SHARED_MAX: u32 = 48 * 1024;

/// The largest [`Target::max_shared`] (sm_90a's): what a kernel generator may ask for at most
/// (the lowering then keeps the points that fit the target it lowers for).
pub const MAX_SHARED: u32 = Target::Sm90a.max_shared();

/// A finished kernel: the instruction list and everything the emitter and simulator need.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Entry point name.
    pub name: String,
    /// The header comment: op, layouts, launch geometry, tunable parameters.
    pub header: String,
    pub params: Vec<ParamTy>,
    pub insts: Vec<Inst>,
    /// Every register, indexed by `Reg::id`.
    pub regs: Vec<Reg>,
    /// Static shared memory in bytes (`.shared`, at most [`STATIC_SHARED_MAX`]).
    pub shared_bytes: u32,
    /// Dynamic shared memory in bytes (`.extern .shared`, sized by the launch), 0 for a kernel
    /// with static shared memory only. A kernel has one or the other (see
    /// [`KernelBuilder::shared`]); [`Kernel::shared_total`] is what it addresses.
    pub dynamic_shared: u32,
    pub consts: Vec<ConstTable>,
    /// The block size the kernel is written for (`.maxntid`), if fixed.
    pub block: Option<u32>,
    /// The alignment (bytes, a power of two, at least 16) of the shared buffer's base, as
    /// declared (`.shared .align N` / `.extern .shared .align N`): 16 unless a generator asked
    /// for more with [`KernelBuilder::shared_aligned`] (1024 for 128-byte-swizzled tiles, whose
    /// 8-row atoms the swizzle pattern addresses from 1024-byte boundaries). The simulator
    /// places a block's shared memory at exactly this alignment.
    pub shared_align: u32,
    /// One tensor map per [`ParamTy::TensorMap`] parameter, in parameter order: what the
    /// launcher encodes for it, with `address` 0 standing for the global address of the
    /// launch argument in that position (the operand the map reads); see
    /// [`KernelBuilder::tensor_map_param`].
    pub tensor_maps: Vec<crate::ptx::tma::TensorMapDesc>,
}

/// The entry name of every [`Kernel::canonical`] kernel.
pub const CANONICAL_ENTRY: &str = "vidrt_kernel";

/// Registers per thread of a block of `threads` threads that one SM's register file (65,536)
/// holds once, in steps of 8, at most 256: what ptxas gives a `setmaxnreg` kernel of that
/// `.reqntid` with `.minnctapersm 1` (168 at 384 threads; `kernels/tests/ptxas.rs` checks it
/// against ptxas's report, and the CUDA backend against the loaded function's).
pub fn registers_at_entry(threads: u32) -> u32 {
    (65_536 / threads.max(1) / 8 * 8).min(256)
}

impl Kernel {
    /// This kernel named [`CANONICAL_ENTRY`], with its header and constant tables renamed to
    /// match. Kernels that differ only by name (the lowering names each after its node, so
    /// every layer of a model has its own) then have the same module text: a module cache
    /// keyed by the text loads each distinct kernel once, and the driver JIT-compiles (and
    /// disk-caches) it once.
    pub fn canonical(&self) -> Kernel {
        let rename = |s: &str| s.replace(&self.name, CANONICAL_ENTRY);
        let mut k = self.clone();
        k.header = rename(&k.header);
        for t in &mut k.consts {
            t.name = rename(&t.name);
        }
        k.name = CANONICAL_ENTRY.to_string();
        k
    }

    /// The shared memory the kernel addresses from [`Inst::SharedBase`]: static plus dynamic.
    /// Whether the kernel moves registers between warpgroups (`setmaxnreg`): it is emitted
    /// with `.reqntid` (exactly its block size) and `.minnctapersm 1`, the launch bounds under
    /// which ptxas gives it [`registers_at_entry`] of its block size, which its `.inc`s are
    /// paid from.
    pub fn uses_setmaxnreg(&self) -> bool {
        self.insts.iter().any(|i| matches!(i, Inst::SetMaxNReg { .. }))
    }

    /// The registers per thread a `setmaxnreg` kernel must start with (see
    /// [`Kernel::uses_setmaxnreg`]), or `None` for other kernels.
    pub fn registers_at_entry(&self) -> Option<u32> {
        self.uses_setmaxnreg().then(|| registers_at_entry(self.block.unwrap_or(1024)))
    }

    pub fn shared_total(&self) -> u32 {
        self.shared_bytes.saturating_add(self.dynamic_shared)
    }

    /// The tensor map that parameter `index` takes for the buffer at global address `addr`
    /// (its [`Kernel::tensor_maps`] entry, in parameter order, with that address); `Ok(None)`
    /// when the parameter is not a [`ParamTy::TensorMap`]. Every launcher (CUDA, the
    /// simulator) builds tensor-map arguments through this.
    pub fn tensor_map_arg(
        &self,
        index: usize,
        addr: u64,
    ) -> Result<Option<crate::ptx::tma::TensorMapDesc>, crate::ptx::KernelError> {
        if self.params.get(index) != Some(&ParamTy::TensorMap) {
            return Ok(None);
        }
        let nth = self.params[..index].iter().filter(|p| **p == ParamTy::TensorMap).count();
        match self.tensor_maps.get(nth) {
            Some(desc) => Ok(Some(crate::ptx::tma::TensorMapDesc { address: addr, ..*desc })),
            None => Err(crate::ptx::KernelError::Invalid(format!(
                "`{}`: parameter {index} is tensor map {nth}, but the kernel has {} tensor maps",
                self.name,
                self.tensor_maps.len()
            ))),
        }
    }
}

/// Builds one kernel.
pub struct KernelBuilder {
    k: Kernel,
    counts: [u32; 5],
    labels: u32,
}

fn class_index(c: RegClass) -> usize {
    match c {
        RegClass::Pred => 0,
        RegClass::B16 => 1,
        RegClass::B32 => 2,
        RegClass::F32 => 3,
        RegClass::B64 => 4,
    }
}

impl KernelBuilder {
    /// A new kernel called `name` with a header comment.
    pub fn new(name: impl Into<String>, header: impl Into<String>) -> Self {
        KernelBuilder {
            k: Kernel {
                name: name.into(),
                header: header.into(),
                params: Vec::new(),
                insts: Vec::new(),
                regs: Vec::new(),
                shared_bytes: 0,
                dynamic_shared: 0,
                consts: Vec::new(),
                block: None,
                shared_align: 16,
                tensor_maps: Vec::new(),
            },
            counts: [0; 5],
            labels: 0,
        }
    }

    /// Declares the block size (`.maxntid`).
    pub fn block(&mut self, threads: u32) {
        self.k.block = Some(threads);
    }

    /// Reserves `bytes` of shared memory (16-byte aligned) and returns its offset from
    /// [`Inst::SharedBase`].
    ///
    /// The kernel's shared memory is one buffer, static while its total stays within
    /// [`STATIC_SHARED_MAX`] and dynamic past it ([`KernelBuilder::finish`] decides:
    /// [`Kernel::dynamic_shared`] then holds the whole size). Decided here, not by each
    /// generator, because nothing in a kernel's code depends on it: every access is
    /// `SharedBase + offset` either way, and only the declaration and the launch differ. So
    /// small kernels stay static (no launch attribute, no driver call, ptxas sees their size),
    /// no generator can declare static memory past the limit that ptxas and the driver refuse,
    /// and the bytes a launch passes are exactly the bytes the kernel addresses. Whether a
    /// size fits a device is the lowering's rule ([`crate::ptx::tune::within_shared_limit`]),
    /// checked again where a kernel is launched (the simulator, the CUDA backend's load).
    pub fn shared(&mut self, bytes: u32) -> u32 {
        self.shared_aligned(bytes, 16)
    }

    /// [`KernelBuilder::shared`] with the reservation aligned to `align` bytes (a power of two;
    /// at least 16 is used) from an equally aligned base: the kernel's shared buffer is then
    /// declared with that alignment ([`Kernel::shared_align`], the largest asked for).
    pub fn shared_aligned(&mut self, bytes: u32, align: u32) -> u32 {
        let align = align.max(16).next_power_of_two();
        self.k.shared_align = self.k.shared_align.max(align);
        let off = self.k.shared_bytes.div_ceil(align) * align;
        self.k.shared_bytes = off.saturating_add(bytes);
        off
    }

    /// Adds a constant table of 32-bit words; returns its index.
    pub fn const_table(&mut self, words: Vec<u32>) -> usize {
        let i = self.k.consts.len();
        self.k.consts.push(ConstTable { name: format!("{}_c{i}", self.k.name), words });
        i
    }

    /// A fresh register of type `ty`.
    pub fn reg(&mut self, ty: Ty) -> Reg {
        let c = class_index(ty.class());
        let r = Reg { id: self.k.regs.len() as u32, idx: self.counts[c], ty };
        self.counts[c] += 1;
        self.k.regs.push(r);
        r
    }

    /// A fresh label.
    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    pub fn push(&mut self, i: Inst) {
        self.k.insts.push(i);
    }

    /// Adds a parameter and loads it into a register.
    pub fn param(&mut self, ty: ParamTy) -> Reg {
        let index = self.k.params.len();
        self.k.params.push(ty);
        let dst = self.reg(match ty {
            ParamTy::Ptr | ParamTy::TensorMap => Ty::U64,
            ParamTy::U32 => Ty::U32,
            ParamTy::F32 => Ty::F32,
        });
        self.push(Inst::LdParam { dst, index });
        if ty == ParamTy::TensorMap {
            // The LdParam register is the parameter-space address; TMA takes a generic one.
            let generic = self.reg(Ty::U64);
            self.push(Inst::CvtaParam { dst: generic, src: dst });
            return generic;
        }
        dst
    }

    /// Adds a [`ParamTy::TensorMap`] parameter the launcher builds from `desc` (its `address`
    /// replaced by the launch argument's global address) and returns its register (the
    /// parameter's address, the `tmap` operand of [`KernelBuilder::tma_load`]).
    pub fn tensor_map_param(&mut self, desc: crate::ptx::tma::TensorMapDesc) -> Reg {
        self.k.tensor_maps.push(crate::ptx::tma::TensorMapDesc { address: 0, ..desc });
        self.param(ParamTy::TensorMap)
    }

    pub fn special(&mut self, sreg: Special) -> Reg {
        let dst = self.reg(Ty::U32);
        self.push(Inst::ReadSpecial { dst, sreg });
        dst
    }

    pub fn mov(&mut self, ty: Ty, src: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Mov { dst, src: src.into() });
        dst
    }

    pub fn imm_u32(&mut self, v: u32) -> Reg {
        self.mov(Ty::U32, Operand::Int(i64::from(v)))
    }

    pub fn imm_f32(&mut self, v: f32) -> Reg {
        self.mov(Ty::F32, Operand::F32(v))
    }

    pub fn bin(&mut self, op: BinOp, ty: Ty, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Bin { op, dst, a: a.into(), b: b.into() });
        dst
    }

    pub fn un(&mut self, op: UnOp, ty: Ty, a: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Un { op, dst, a: a.into() });
        dst
    }

    pub fn fma(&mut self, ty: Ty, a: impl Into<Operand>, b: impl Into<Operand>, c: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Fma { dst, a: a.into(), b: b.into(), c: c.into() });
        dst
    }

    pub fn cvt(&mut self, ty: Ty, src: Reg) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Cvt { dst, src });
        dst
    }

    pub fn bitcast(&mut self, ty: Ty, src: Reg) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Bitcast { dst, src });
        dst
    }

    pub fn setp(&mut self, cmp: Cmp, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let dst = self.reg(Ty::Pred);
        self.push(Inst::Setp { cmp, dst, a: a.into(), b: b.into() });
        dst
    }

    pub fn selp(&mut self, ty: Ty, a: impl Into<Operand>, b: impl Into<Operand>, pred: Reg) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Selp { dst, a: a.into(), b: b.into(), pred });
        dst
    }

    /// `u64 = a (u32) · b` widened.
    pub fn mul_wide(&mut self, a: Reg, b: impl Into<Operand>) -> Reg {
        let dst = self.reg(Ty::U64);
        self.push(Inst::MulWide { dst, a, b: b.into() });
        dst
    }

    /// `base (u64 pointer) + index (u32) · elem_bytes`.
    pub fn addr(&mut self, base: Reg, index: Reg, elem_bytes: u32) -> Reg {
        let off = self.mul_wide(index, Operand::Int(i64::from(elem_bytes)));
        self.bin(BinOp::Add, Ty::U64, base, off)
    }

    /// Loads one element of type `ty` from `[addr]` in `space`.
    pub fn ld(&mut self, space: Space, ty: Ty, addr: Reg) -> Reg {
        let dst = self.reg(ty);
        self.push(Inst::Ld { space, dst: vec![dst], addr, offset: 0, guard: None });
        dst
    }

    /// Loads `n` (2 or 4) consecutive elements of type `ty` as one vector access.
    pub fn ld_vec(&mut self, space: Space, ty: Ty, addr: Reg, n: usize) -> Vec<Reg> {
        let dst: Vec<Reg> = (0..n).map(|_| self.reg(ty)).collect();
        self.push(Inst::Ld { space, dst: dst.clone(), addr, offset: 0, guard: None });
        dst
    }

    pub fn st(&mut self, space: Space, addr: Reg, src: Reg) {
        self.push(Inst::St { space, src: vec![src], addr, offset: 0, guard: None });
    }

    pub fn st_vec(&mut self, space: Space, addr: Reg, src: Vec<Reg>) {
        self.push(Inst::St { space, src, addr, offset: 0, guard: None });
    }

    pub fn place(&mut self, l: Label) {
        self.push(Inst::Label(l));
    }

    /// Branches to `l` when `pred` is true (or false when `negate`).
    pub fn bra_if(&mut self, l: Label, pred: Reg, negate: bool) {
        self.push(Inst::Bra { target: l, guard: Some(Guard { pred, negate }) });
    }

    pub fn bra(&mut self, l: Label) {
        self.push(Inst::Bra { target: l, guard: None });
    }

    /// Marks the loop whose head label was just placed as not to be unrolled by ptxas.
    pub fn no_unroll(&mut self) {
        self.push(Inst::NoUnroll);
    }

    /// `bar.sync id, count` (see [`Inst::BarNamed`]).
    pub fn bar_named_sync(&mut self, id: u32, count: u32) {
        self.push(Inst::BarNamed { id, count, wait: true });
    }

    /// `bar.arrive id, count` (see [`Inst::BarNamed`]).
    pub fn bar_named_arrive(&mut self, id: u32, count: u32) {
        self.push(Inst::BarNamed { id, count, wait: false });
    }

    pub fn bar_sync(&mut self) {
        self.push(Inst::BarSync);
    }

    pub fn shfl(&mut self, mode: ShflMode, src: Reg, lane: impl Into<Operand>) -> Reg {
        let dst = self.reg(src.ty);
        self.push(Inst::Shfl { mode, dst, src, lane: lane.into() });
        dst
    }

    pub fn shared_base(&mut self) -> Reg {
        let dst = self.reg(Ty::U32);
        self.push(Inst::SharedBase { dst });
        dst
    }

    pub fn const_base(&mut self, table: usize) -> Reg {
        let dst = self.reg(Ty::U64);
        self.push(Inst::ConstBase { dst, table });
        dst
    }

    /// `ldmatrix` of `n` (1, 2 or 4) 8×8 b16 matrices from the shared address `addr` (see
    /// [`Inst::LdMatrix`]); returns the `n` `.b32` fragment registers.
    pub fn ldmatrix(&mut self, n: usize, trans: bool, addr: Reg) -> Vec<Reg> {
        let dst: Vec<Reg> = (0..n).map(|_| self.reg(Ty::U32)).collect();
        self.push(Inst::LdMatrix { trans, dst: dst.clone(), addr });
        dst
    }

    /// `cp.async` of `size` bytes from global `src` to shared `dst`, reading only `src_size`
    /// bytes when given (the rest zero-filled).
    pub fn cp_async(&mut self, cache: CpCache, dst: Reg, src: Reg, size: u32, src_size: Option<Operand>) {
        self.push(Inst::CpAsync { cache, dst, src, size, src_size });
    }

    pub fn cp_async_commit(&mut self) {
        self.push(Inst::CpAsyncCommit);
    }

    pub fn cp_async_wait(&mut self, n: u32) {
        self.push(Inst::CpAsyncWait { n });
    }

    pub fn cp_async_wait_all(&mut self) {
        self.push(Inst::CpAsyncWaitAll);
    }

    /// `mma.sync.aligned.m16n8k16.row.col.f32.<ab>.<ab>.f32`; returns the four f32 D registers.
    pub fn mma(&mut self, ab: Ty, a: [Reg; 4], b: [Reg; 2], c: [Reg; 4]) -> [Reg; 4] {
        let d = [self.reg(Ty::F32), self.reg(Ty::F32), self.reg(Ty::F32), self.reg(Ty::F32)];
        self.push(Inst::Mma { ab, d, a, b, c });
        d
    }

    /// Like [`KernelBuilder::mma`] but accumulating in place (D = C).
    pub fn mma_acc(&mut self, ab: Ty, a: [Reg; 4], b: [Reg; 2], acc: [Reg; 4]) {
        self.push(Inst::Mma { ab, d: acc, a, b, c: acc });
    }

    /// `prmt.b32` (see [`Inst::Prmt`]): the bytes of `a` and `b` that `sel` picks.
    pub fn prmt(&mut self, a: Reg, b: Reg, sel: impl Into<Operand>) -> Reg {
        let dst = self.reg(Ty::U32);
        self.push(Inst::Prmt { dst, a, b, sel: sel.into() });
        dst
    }

    /// `cvt.rn.{bf16x2,f16x2}.f32`: packs two f32 (`lo` in the low half) as `ty` (`BF16`/`F16`).
    pub fn cvt_pack(&mut self, ty: Ty, lo: Reg, hi: Reg) -> Reg {
        let dst = self.reg(Ty::U32);
        self.push(Inst::CvtPack { ty, dst, hi, lo });
        dst
    }

    /// `fence.proxy.async.shared::cta` (see [`Inst::FenceProxyAsync`]).
    pub fn fence_proxy_async(&mut self) {
        self.push(Inst::FenceProxyAsync);
    }

    /// `wgmma.fence.sync.aligned`.
    pub fn wgmma_fence(&mut self) {
        self.push(Inst::WgmmaFence);
    }

    /// `wgmma.commit_group.sync.aligned`.
    pub fn wgmma_commit(&mut self) {
        self.push(Inst::WgmmaCommit);
    }

    /// `wgmma.wait_group.sync.aligned n`.
    pub fn wgmma_wait(&mut self, n: u32) {
        self.push(Inst::WgmmaWait { n });
    }

    /// `wgmma.mma_async` m64n{acc.len()·2}k16 accumulating in place into `acc` (f32
    /// registers, see [`Inst::Wgmma`]) when `scale_d` is true.
    pub fn wgmma(&mut self, ab: Ty, acc: &[Reg], a_desc: Reg, b_desc: Reg, scale_d: Reg) {
        let n = 2 * acc.len() as u32;
        self.push(Inst::Wgmma { ab, n, d: acc.to_vec(), a: WgmmaA::Desc(a_desc), b_desc, scale_d, trans_b: false });
    }

    /// `wgmma.mma_async` m64n{acc.len()·2}k16 with A from registers (`a`, the fragment of
    /// [`WgmmaA::Regs`]) and B through `b_desc`, MN-major when `trans_b`; accumulates in
    /// place into `acc` when `scale_d` is true.
    pub fn wgmma_rs(&mut self, ab: Ty, acc: &[Reg], a: [Reg; 4], b_desc: Reg, scale_d: Reg, trans_b: bool) {
        let n = 2 * acc.len() as u32;
        self.push(Inst::Wgmma { ab, n, d: acc.to_vec(), a: WgmmaA::Regs(a), b_desc, scale_d, trans_b });
    }

    /// `mbarrier.init.shared::cta.b64 [addr], count`.
    pub fn mbar_init(&mut self, addr: Reg, count: u32) {
        self.push(Inst::MbarInit { addr, count });
    }

    /// `mbarrier.arrive.expect_tx.shared::cta.b64 _, [addr], tx`.
    pub fn mbar_arrive_expect_tx(&mut self, addr: Reg, tx: u32) {
        self.push(Inst::MbarArriveExpectTx { addr, tx });
    }

    /// `mbarrier.arrive.shared::cta.b64 _, [addr]`.
    pub fn mbar_arrive(&mut self, addr: Reg) {
        self.push(Inst::MbarArrive { addr });
    }

    /// Waits until the phase of parity `parity` of the mbarrier at `addr` has completed: a
    /// `mbarrier.try_wait.parity` loop.
    pub fn mbar_wait(&mut self, addr: Reg, parity: impl Into<Operand>) {
        let parity = parity.into();
        let top = self.label();
        self.place(top);
        let dst = self.reg(Ty::Pred);
        self.push(Inst::MbarTryWait { dst, addr, parity });
        self.bra_if(top, dst, true);
    }

    /// `setmaxnreg` (see [`Inst::SetMaxNReg`]): raises (`inc`) or lowers the executing
    /// warpgroup's per-thread register maximum to `count`.
    pub fn setmaxnreg(&mut self, inc: bool, count: u32) {
        self.push(Inst::SetMaxNReg { inc, count });
    }

    /// `fence.mbarrier_init.release.cluster`.
    pub fn fence_mbarrier_init(&mut self) {
        self.push(Inst::FenceMbarrierInit);
    }

    /// `cp.async.bulk.tensor` of the box at `coords` of tensor map `tmap` into shared `dst`,
    /// completing on the mbarrier at `mbar` (see [`Inst::TmaLoad`]).
    pub fn tma_load(&mut self, dst: Reg, tmap: Reg, coords: &[Reg], mbar: Reg) {
        self.push(Inst::TmaLoad { dst, tmap, coords: coords.to_vec(), mbar });
    }

    /// Finishes with `ret`; shared memory past [`STATIC_SHARED_MAX`] becomes dynamic (see
    /// [`KernelBuilder::shared`]).
    pub fn finish(mut self) -> Kernel {
        self.push(Inst::Ret);
        if self.k.shared_bytes > STATIC_SHARED_MAX {
            self.k.dynamic_shared = self.k.shared_bytes;
            self.k.shared_bytes = 0;
        }
        self.k
    }
}
