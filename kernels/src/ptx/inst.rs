//! The instruction set of the typed PTX builder: register types and classes, virtual
//! registers, operands, state spaces, special registers, operations and the [`Inst`] list
//! that the builder ([`crate::ptx::builder`]) writes and the emitter
//! ([`crate::ptx::emit`](mod@crate::ptx::emit)) and simulator ([`crate::ptx::sim`]) read. Re-exported by
//! [`crate::ptx::builder`], whose paths the rest of the crate uses.

use std::fmt;

/// The type of a virtual register (and of the instruction that writes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// A predicate (`.pred`).
    Pred,
    /// 16-bit IEEE half, held in a `.b16` register.
    F16,
    /// 16-bit brain float, held in a `.b16` register.
    BF16,
    /// 16-bit untyped bits.
    B16,
    U32,
    S32,
    F32,
    U64,
    S64,
}

impl Ty {
    /// The PTX type suffix (`f32`, `u64`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            Ty::Pred => "pred",
            Ty::F16 => "f16",
            Ty::BF16 => "bf16",
            Ty::B16 => "b16",
            Ty::U32 => "u32",
            Ty::S32 => "s32",
            Ty::F32 => "f32",
            Ty::U64 => "u64",
            Ty::S64 => "s64",
        }
    }

    /// The untyped-bits suffix of the same width (`b16`, `b32`, `b64`).
    pub fn bits_suffix(self) -> &'static str {
        match self.bytes() {
            2 => "b16",
            4 => "b32",
            8 => "b64",
            _ => "pred",
        }
    }

    /// Size in bytes (a predicate counts 0).
    pub fn bytes(self) -> u32 {
        match self {
            Ty::Pred => 0,
            Ty::F16 | Ty::BF16 | Ty::B16 => 2,
            Ty::U32 | Ty::S32 | Ty::F32 => 4,
            Ty::U64 | Ty::S64 => 8,
        }
    }

    /// The register class the type lives in.
    pub fn class(self) -> RegClass {
        match self {
            Ty::Pred => RegClass::Pred,
            Ty::F16 | Ty::BF16 | Ty::B16 => RegClass::B16,
            Ty::U32 | Ty::S32 => RegClass::B32,
            Ty::F32 => RegClass::F32,
            Ty::U64 | Ty::S64 => RegClass::B64,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32)
    }
}

/// Register classes, each declared once per kernel as `%<prefix><N>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegClass {
    Pred,
    B16,
    B32,
    F32,
    B64,
}

impl RegClass {
    pub const ALL: [RegClass; 5] = [RegClass::Pred, RegClass::B16, RegClass::B32, RegClass::F32, RegClass::B64];

    /// Name prefix and declared type.
    pub fn decl(self) -> (&'static str, &'static str) {
        match self {
            RegClass::Pred => ("p", "pred"),
            RegClass::B16 => ("h", "b16"),
            RegClass::B32 => ("r", "b32"),
            RegClass::F32 => ("f", "f32"),
            RegClass::B64 => ("rd", "b64"),
        }
    }
}

/// A typed virtual register. `id` is unique in its kernel (the simulator's register file
/// index); `idx` numbers it within its class (its PTX name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg {
    pub id: u32,
    pub idx: u32,
    pub ty: Ty,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}{}", self.ty.class().decl().0, self.idx)
    }
}

/// An instruction source: a register or an immediate (held as raw bits of the instruction's
/// type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Reg(Reg),
    /// Integer immediate (two's complement for signed types).
    Int(i64),
    /// f32 immediate (emitted as `0fXXXXXXXX`, exact).
    F32(f32),
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Self {
        Operand::Reg(r)
    }
}

/// State spaces that loads and stores address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Global,
    Shared,
    Const,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Const => "const",
        }
    }
}

/// Special registers (1-D launches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    TidX,
    NtidX,
    CtaidX,
    NctaidX,
    LaneId,
}

impl Special {
    pub fn name(self) -> &'static str {
        match self {
            Special::TidX => "%tid.x",
            Special::NtidX => "%ntid.x",
            Special::CtaidX => "%ctaid.x",
            Special::NctaidX => "%nctaid.x",
            Special::LaneId => "%laneid",
        }
    }
}

/// Two-operand arithmetic and logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    /// `mul.lo` on integers, `mul.rn` on floats.
    Mul,
    /// `div.rn` on floats, truncating on integers.
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// One-operand arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Abs,
    /// `sqrt.rn.f32`.
    Sqrt,
    /// `rsqrt.approx.ftz.f32` (max relative error 2⁻²²·⁹ on hardware; exact in the simulator).
    Rsqrt,
    /// `rcp.rn.f32`.
    Rcp,
    /// `ex2.approx.ftz.f32` (2ˣ; max relative error 2⁻²²·⁵ on hardware).
    Ex2,
    /// `lg2.approx.ftz.f32` (log₂ x; max absolute error 2⁻²²·⁶ on hardware).
    Lg2,
    /// `sin.approx.ftz.f32` (max absolute error 2⁻²⁰·⁹ in [−π, π]; reduce the range first).
    Sin,
    /// `cos.approx.ftz.f32` (as `Sin`).
    Cos,
    /// `cvt.rni.f32.f32`: round to the nearest integer, ties to even.
    Rni,
    Not,
}

/// Comparisons for `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn name(self) -> &'static str {
        match self {
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
            Cmp::Lt => "lt",
            Cmp::Le => "le",
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
        }
    }
}

/// Warp shuffle modes (`shfl.sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShflMode {
    Bfly,
    Down,
    Up,
    Idx,
}

/// A branch target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(pub u32);

/// A predicate guard: `@%p` or `@!%p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guard {
    pub pred: Reg,
    pub negate: bool,
}

/// The A operand of a [`Inst::Wgmma`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaA {
    /// A 64-bit matrix descriptor of a K-major A in shared memory.
    Desc(Reg),
    /// Four b32 registers per thread, each two 16-bit elements (low half first), in the
    /// ISA's m64nNk16 A fragment: with w = warp in the warpgroup, g = lane / 4, q = lane % 4,
    /// `[0]` holds A(16w + g, 2q..2q+1), `[1]` A(16w + g + 8, 2q..), `[2]` A(16w + g, 2q + 8..),
    /// `[3]` A(16w + g + 8, 2q + 8..) (the `mma.m16n8k16` A fragment, one per warp).
    Regs([Reg; 4]),
}

/// One instruction of the builder's instruction set.
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// `ld.param` of kernel parameter `index` into `dst`.
    LdParam { dst: Reg, index: usize },
    /// `mov`: same-type copy of a register or immediate.
    Mov { dst: Reg, src: Operand },
    /// `mov.bN`: reinterprets the bits of `src` (same width) as `dst`'s type.
    Bitcast { dst: Reg, src: Reg },
    /// `mov.b32 %r, {%lo, %hi}`: packs two 16-bit registers.
    Pack { dst: Reg, lo: Reg, hi: Reg },
    /// `mov.b32 {%lo, %hi}, %r`: unpacks a 32-bit register.
    Unpack { lo: Reg, hi: Reg, src: Reg },
    /// `prmt.b32 d, a, b, sel` (default mode): byte i of `dst` is byte `n & 7` of the 8
    /// bytes `{b, a}` (a's bytes 0–3, b's 4–7), n being nibble i of `sel`, or that byte's
    /// sign bit replicated when `n & 8`. `sel` may be a register: a selector chosen at run
    /// time. `0x5410` packs the low halves of a and b, `0x7632` their high halves.
    Prmt { dst: Reg, a: Reg, b: Reg, sel: Operand },
    /// Reads a special register.
    ReadSpecial { dst: Reg, sreg: Special },
    /// The shared-space address of the kernel's shared buffer (32-bit).
    SharedBase { dst: Reg },
    /// The const-space address of constant table `table`.
    ConstBase { dst: Reg, table: usize },
    /// `ld.<space>[.vN].<ty>`: loads `dst.len()` (1, 2 or 4) consecutive elements from
    /// `[addr + offset]`. The address must be aligned to the whole access.
    Ld { space: Space, dst: Vec<Reg>, addr: Reg, offset: i32, guard: Option<Guard> },
    /// `st.<space>[.vN].<ty>`: the store counterpart of `Ld`.
    St { space: Space, src: Vec<Reg>, addr: Reg, offset: i32, guard: Option<Guard> },
    /// Two-operand arithmetic in `dst.ty`.
    Bin { op: BinOp, dst: Reg, a: Operand, b: Operand },
    /// One-operand arithmetic in `dst.ty`.
    Un { op: UnOp, dst: Reg, a: Operand },
    /// `fma.rn` (floats) or `mad.lo` (integers): a·b + c.
    Fma { dst: Reg, a: Operand, b: Operand, c: Operand },
    /// `mul.wide.u32`: u32 × u32 → u64.
    MulWide { dst: Reg, a: Reg, b: Operand },
    /// `cvt`: converts `src` to `dst.ty` (round to nearest even where rounding is needed;
    /// float to integer truncates toward zero).
    Cvt { dst: Reg, src: Reg },
    /// `setp.<cmp>.<ty>`.
    Setp { cmp: Cmp, dst: Reg, a: Operand, b: Operand },
    /// `selp`: `dst = pred ? a : b`.
    Selp { dst: Reg, a: Operand, b: Operand, pred: Reg },
    /// Marks a branch target.
    Label(Label),
    /// `[@p] bra`.
    Bra { target: Label, guard: Option<Guard> },
    /// `bar.sync 0`: every thread of the block must reach the same barrier.
    BarSync,
    /// A named barrier `id` (1..=15) of `count` threads (a multiple of 32): `bar.sync id,
    /// count` (`wait`: the warp waits until `count` threads have arrived) or `bar.arrive id,
    /// count` (it arrives and goes on). Executed per warp: every lane of the warp takes part.
    /// The barrier completes when `count` threads have arrived, which releases its waiters
    /// and starts it over.
    BarNamed { id: u32, count: u32, wait: bool },
    /// `shfl.sync.<mode>.b32` with a full member mask: every lane of the warp takes part.
    Shfl { mode: ShflMode, dst: Reg, src: Reg, lane: Operand },
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16`: warp-collective. Lane
    /// `8·i + r` supplies (in `addr`, a 32-bit shared address, 16-byte aligned) the address of
    /// row `r` of matrix `i` (eight contiguous b16 elements); lanes beyond `8·dst.len()` supply
    /// ignored addresses. Lane `t` receives in `dst[i]` (a `.b32`) elements
    /// `(t/4, 2·(t%4))` (low half) and `(t/4, 2·(t%4)+1)` (high half) of matrix `i`, or with
    /// `trans` elements `(2·(t%4), t/4)` and `(2·(t%4)+1, t/4)`. Every lane of the warp must take
    /// part.
    LdMatrix { trans: bool, dst: Vec<Reg>, addr: Reg },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], size[, src_size]`: an asynchronous copy
    /// of `size` (4, 8 or 16; `cg` only 16) bytes from global `src` to shared `dst` (a 32-bit
    /// shared address), both aligned to `size`. Only the first `src_size` bytes are read (when
    /// given; at most `size`), the rest of the destination is zero-filled. The copy completes at
    /// a `cp.async.wait_group`/`wait_all` that covers its commit group.
    CpAsync { cache: CpCache, dst: Reg, src: Reg, size: u32, src_size: Option<Operand> },
    /// `cp.async.commit_group`: closes the thread's outstanding copies into one group.
    CpAsyncCommit,
    /// `cp.async.wait_group n`: waits until at most `n` of the thread's committed groups are
    /// pending (older groups complete first).
    CpAsyncWait { n: u32 },
    /// `cp.async.wait_all`: commits and waits for every outstanding copy.
    CpAsyncWaitAll,
    /// `mma.sync.aligned.m16n8k16.row.col.f32.<ab>.<ab>.f32 d, a, b, c` (`ab` is `BF16` or
    /// `F16`): warp-collective D = A·B + C with A 16×16, B 16×8, C/D 16×8 f32. With
    /// g = laneid / 4 and q = laneid % 4, lane registers hold (low half first):
    /// `a[0]`: A(g, 2q..2q+1), `a[1]`: A(g+8, 2q..), `a[2]`: A(g, 2q+8..), `a[3]`: A(g+8, 2q+8..);
    /// `b[0]`: B(2q..2q+1, g), `b[1]`: B(2q+8..2q+9, g);
    /// `c/d[0..2]`: C(g, 2q), C(g, 2q+1), `c/d[2..4]`: C(g+8, 2q), C(g+8, 2q+1).
    Mma { ab: Ty, d: [Reg; 4], a: [Reg; 4], b: [Reg; 2], c: [Reg; 4] },
    /// `cvt.rn.{bf16x2,f16x2}.f32 dst, hi, lo` (`ty` is `BF16` or `F16`): rounds two f32 to
    /// nearest even and packs them, `lo` in the low half.
    CvtPack { ty: Ty, dst: Reg, hi: Reg, lo: Reg },
    /// `fence.proxy.async.shared::cta` (sm_90): orders this thread's prior generic-proxy
    /// writes to shared memory (`st.shared`, landed `cp.async` copies) before later accesses
    /// by the async proxy (`wgmma.mma_async` operand reads). Per thread.
    FenceProxyAsync,
    /// `wgmma.fence.sync.aligned` (sm_90a): warpgroup-collective (all 128 threads of the
    /// warpgroup at the same instruction). Orders prior register accesses before the
    /// accumulator accesses of later `wgmma.mma_async`; required before the first one and
    /// after any other instruction touched an accumulator register.
    WgmmaFence,
    /// `wgmma.commit_group.sync.aligned` (sm_90a): warpgroup-collective; closes the
    /// warpgroup's uncommitted `wgmma.mma_async` operations into one group.
    WgmmaCommit,
    /// `wgmma.wait_group.sync.aligned n` (sm_90a): warpgroup-collective; waits until at most
    /// `n` committed groups are pending (older groups complete first). The accumulator
    /// registers of a `wgmma.mma_async` hold its result only once a wait covers its group.
    WgmmaWait { n: u32 },
    /// `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.<ab>.<ab> d, a, b-desc, scale-d, 1, 1,
    /// [0,] trans-b` (sm_90a; `ab` is `BF16` or `F16`; `n` a multiple of 8 in 8..=256):
    /// warpgroup-collective, asynchronous D = A·B + (scale_d ? D : 0) with A 64×16, B 16×n
    /// and D 64×n f32 in `d` (`n / 2` registers per thread). Thread `t` of the warpgroup
    /// (warp w = t / 32, lane l = t % 32) holds in `d[i]` element
    /// (16·w + l/4 + 8·((i/2) % 2), 8·(i/4) + 2·(l%4) + i%2). `scale_d` is a predicate.
    /// A is read from shared memory through a 64-bit matrix descriptor (K-major,
    /// imm-trans-a 0) or from four b32 registers per thread ([`WgmmaA`]); B through the
    /// descriptor `b_desc`, K-major when `trans_b` is false, MN-major (imm-trans-b 1) when
    /// true.
    Wgmma { ab: Ty, n: u32, d: Vec<Reg>, a: WgmmaA, b_desc: Reg, scale_d: Reg, trans_b: bool },
    /// `mbarrier.init.shared::cta.b64 [addr], count` (sm_80+; used with TMA on sm_90a):
    /// initialises the 8-byte mbarrier object at shared address `addr` (8-byte aligned) to
    /// phase 0 with `count` expected arrivals (1..=2²⁰-1) and a zero transaction count.
    MbarInit { addr: Reg, count: u32 },
    /// `mbarrier.arrive.expect_tx.shared::cta.b64 _, [addr], tx` (sm_90): raises the current
    /// phase's transaction count by `tx` bytes, then arrives (one pending arrival fewer). The
    /// phase completes when its pending arrivals and its transaction count are both zero.
    MbarArriveExpectTx { addr: Reg, tx: u32 },
    /// `mbarrier.arrive.shared::cta.b64 _, [addr]`: one arrival on the current phase.
    MbarArrive { addr: Reg },
    /// `mbarrier.try_wait.parity.shared::cta.b64 dst, [addr], parity` (sm_90): `dst` is true
    /// once the phase of parity `parity` (0 or 1: the phase number's low bit) has completed,
    /// i.e. the mbarrier's current phase has the other parity. A potentially blocking test:
    /// kernels loop on it ([`crate::ptx::builder::KernelBuilder::mbar_wait`]).
    MbarTryWait { dst: Reg, addr: Reg, parity: Operand },
    /// `fence.mbarrier_init.release.cluster` (sm_90): makes prior `mbarrier.init`s visible to
    /// the async proxy (the TMA unit's complete-tx) before the barrier that publishes them.
    FenceMbarrierInit,
    /// `setmaxnreg.{inc,dec}.sync.aligned.u32 count` (sm_90a): warpgroup-collective (every warp
    /// of the warpgroup executes the same one). `.dec` lowers the warps' per-thread register
    /// maximum to `count` and returns the rest to the block's register pool; `.inc` raises it
    /// to `count`, blocking until the pool holds the registers (so an `.inc` that no `.dec`
    /// pays for blocks forever). `count` is a multiple of 8 in 24..=256. The registers a
    /// block starts with are those of its `.maxntid` (see
    /// [`crate::ptx::sim::launch_registers`]).
    SetMaxNReg { inc: bool, count: u32 },
    /// `cvta.param.u64 dst, src`: the generic address of the kernel parameter whose
    /// parameter-space address is `src` (what `mov.u64 %rd, name` gives). The tensor-map
    /// operand of `cp.async.bulk.tensor` is a generic address (PTX ISA, cp.async.bulk.tensor:
    /// "the generic address of the opaque tensor-map object which resides in .param space").
    CvtaParam { dst: Reg, src: Reg },
    /// `cp.async.bulk.tensor.{N}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
    /// [dst], [tmap, {coords}], [mbar]` (sm_90, N = `coords.len()` in 1..=5): the TMA unit
    /// copies the box of the tensor map whose generic address is `tmap` (a
    /// [`ParamTy::TensorMap`] parameter's register) at element coordinates `coords` (s32,
    /// innermost first) to shared `dst` (128-byte aligned, 1024 with the 128-byte swizzle),
    /// elements outside the tensor zero-filled, in the map's (possibly swizzled) shared layout;
    /// when the bytes have landed it performs complete-tx of the box's byte count on the
    /// mbarrier at `mbar`. Issued by one thread.
    TmaLoad { dst: Reg, tmap: Reg, coords: Vec<Reg>, mbar: Reg },
    /// `.pragma "nounroll";`: placed right after a loop's head label, tells ptxas not to
    /// unroll that loop (kernels unroll at generation time where they want to; ptxas unrolling
    /// a constant-trip-count loop on top of that can blow up register use and spill). No
    /// effect on semantics.
    NoUnroll,
    /// `ret`.
    Ret,
}

/// Cache policy of `cp.async`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpCache {
    /// `.ca`: cache at all levels (4, 8 or 16 bytes).
    Ca,
    /// `.cg`: cache in L2 only (16 bytes).
    Cg,
}

impl CpCache {
    pub fn name(self) -> &'static str {
        match self {
            CpCache::Ca => "ca",
            CpCache::Cg => "cg",
        }
    }
}

/// A kernel parameter's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamTy {
    /// A global-memory pointer.
    Ptr,
    U32,
    F32,
    /// A TMA tensor map passed by value (`.param .align 64 .b8 name[128]`, the driver's
    /// opaque `CUtensorMap`; the simulator takes vidrt's own encoding,
    /// [`crate::ptx::tma::TensorMapDesc`]). Its register ([`crate::ptx::builder::KernelBuilder::param`]) holds the
    /// parameter's generic address (`mov.u64 %rp, name; cvta.param.u64 %rd, %rp`), the `tmap`
    /// operand of [`Inst::TmaLoad`].
    TensorMap,
}
