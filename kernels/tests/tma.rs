//! mbarriers and TMA (`cp.async.bulk.tensor`) in the simulator, one behaviour per test:
//! phases complete after every arrival and `try_wait.parity` follows the phase parity; a wait
//! that can never complete (a missing arrival, an `expect_tx` larger than the bytes copied) is
//! a deadlock, more bytes than announced a fault, an mbarrier used before `init` a fault; a 2-D
//! tile copy lands the box row-major, zero-fills elements outside the tensor (past either end
//! and at negative coordinates), writes the 128-byte-swizzle layout, refuses a misaligned
//! destination, a tensor-map operand left in the parameter space (no `cvta.param`); reading the destination before the wait (or after waiting on the wrong
//! parity, which passes at once) is a hazard; and the emitter writes the instructions and the
//! tensor-map parameter for sm_90a and refuses them for sm_80.
//!
//! The host side states the expected layouts from the ISA and the driver's documentation
//! independently of the simulator: a box is `box[1]` rows of `box[0]` elements, row r at byte
//! `r·row`; with `CU_TENSOR_MAP_SWIZZLE_128B` (rows of 128 bytes, 1024-byte aligned
//! destination) the 16-byte chunk j of row r sits at chunk `j XOR (r % 8)`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

use vidrt_kernels::ptx::builder::{BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, ParamTy, Space, Special, Ty};
use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims, SimError};
use vidrt_kernels::ptx::tma::{TensorMapDesc, TmaDtype, TmaSwizzle};
use vidrt_kernels::ptx::{emit, try_emit, Target};

fn imm(v: u32) -> Operand {
    Operand::Int(i64::from(v))
}

const THREADS: u32 = 64;

/// What a TMA test kernel does differently (each a bug the simulator must catch).
#[derive(Clone, Copy, Debug, Default)]
struct Opts {
    /// Added to the `expect_tx` byte count (may be negative).
    tx_delta: i32,
    /// Skip the wait on the mbarrier.
    no_wait: bool,
    /// Wait on parity 1 (already "complete" at phase 0) instead of 0.
    wrong_parity: bool,
    /// Destination this many bytes past its aligned place.
    misalign: u32,
    /// Skip the `mbarrier.init`.
    no_init: bool,
    /// Pass the tensor map's parameter-space address (`mov.u64` alone) to the copy instead of
    /// the generic address `cvta.param` makes of it.
    no_cvta: bool,
    /// Skip the `fence.mbarrier_init` after the init.
    no_fence: bool,
    /// Skip the `bar.sync` that publishes the init.
    no_barrier: bool,
    /// The last thread stores a word into the mbarrier's bytes after the wait.
    touch_mbar: bool,
}

/// One block of [`THREADS`]: thread 0 initialises an mbarrier (count 1), `fence.mbarrier_init`,
/// `bar.sync`; thread 0 arrives with `expect_tx(box bytes)` and issues one 2-D tile copy at
/// coordinates (params c0, c1) into a 1024-byte aligned destination; every thread waits for
/// phase 0, then the threads copy the destination to `out` word by word. Parameters: tmap,
/// c0, c1, out.
fn tma_kernel(box_bytes: u32, o: Opts) -> Kernel {
    let mut b = KernelBuilder::new("tma_one", "test: one cp.async.bulk.tensor");
    b.block(THREADS);
    let tmap = b.param(ParamTy::TensorMap);
    let c0 = b.param(ParamTy::U32);
    let c1 = b.param(ParamTy::U32);
    let out = b.param(ParamTy::Ptr);
    let smem = b.shared_aligned(box_bytes + o.misalign, 1024);
    let bar = b.shared(8);
    let tid = b.special(Special::TidX);
    let base = b.shared_base();
    let dst = b.bin(BinOp::Add, Ty::U32, base, imm(smem + o.misalign));
    let mb = b.bin(BinOp::Add, Ty::U32, base, imm(bar));
    let first = b.setp(Cmp::Eq, tid, imm(0));
    let after_init = b.label();
    b.bra_if(after_init, first, true);
    if !o.no_init {
        b.mbar_init(mb, 1);
    }
    if !o.no_fence {
        b.fence_mbarrier_init();
    }
    b.place(after_init);
    if !o.no_barrier {
        b.bar_sync();
    }
    let after_issue = b.label();
    b.bra_if(after_issue, first, true);
    b.mbar_arrive_expect_tx(mb, (box_bytes as i32 + o.tx_delta) as u32);
    b.tma_load(dst, tmap, &[c0, c1], mb);
    b.place(after_issue);
    if !o.no_wait {
        b.mbar_wait(mb, imm(u32::from(o.wrong_parity)));
    }
    if o.touch_mbar {
        let last = b.setp(Cmp::Eq, tid, imm(THREADS - 1));
        let z = b.imm_u32(0);
        let skip = b.label();
        b.bra_if(skip, last, true);
        b.st(Space::Shared, mb, z);
        b.place(skip);
    }
    for i in 0..(box_bytes / 4).div_ceil(THREADS) {
        let w = b.bin(BinOp::Add, Ty::U32, tid, imm(i * THREADS));
        let inside = b.setp(Cmp::Lt, w, imm(box_bytes / 4));
        let skip = b.label();
        b.bra_if(skip, inside, true);
        let sa = b.fma(Ty::U32, w, imm(4), dst);
        let v = b.ld(Space::Shared, Ty::U32, sa);
        let ga = b.addr(out, w, 4);
        b.st(Space::Global, ga, v);
        b.place(skip);
    }
    let mut k = b.finish();
    if o.no_cvta {
        for i in &mut k.insts {
            if let Inst::CvtaParam { dst, src } = *i {
                *i = Inst::Mov { dst, src: Operand::Reg(src) };
            }
        }
    }
    k
}

/// A `[rows, cols]` b16 matrix whose element (r, c) holds `r·256 + c + 1` (never 0).
fn matrix(rows: u64, cols: u64) -> Vec<u8> {
    (0..rows * cols).flat_map(|i| ((i / cols * 256 + i % cols + 1) as u16).to_le_bytes()).collect()
}

/// Runs [`tma_kernel`] on a `[rows, cols]` matrix with a `box_rows × box_cols` box at
/// (row `r0`, col `c0`); the destination's b16 values on success.
fn run(
    (rows, cols): (u64, u64),
    (box_rows, box_cols): (u32, u32),
    (r0, c0): (i32, i32),
    swizzle: TmaSwizzle,
    o: Opts,
) -> Result<Vec<u16>, SimError> {
    let mut mem = GlobalMem::new();
    let a = mem.alloc_with(matrix(rows, cols));
    let desc = TensorMapDesc::matrix_2d(TmaDtype::BF16, a, (rows, cols), (box_rows, box_cols), swizzle);
    desc.check().expect("a valid map");
    let bytes = desc.box_bytes();
    let out = mem.alloc(bytes as usize);
    let k = tma_kernel(bytes, o);
    let args = [
        ArgValue::TensorMap(desc.encode_sim()),
        ArgValue::U32(c0 as u32),
        ArgValue::U32(r0 as u32),
        ArgValue::Ptr(out),
    ];
    launch(&k, LaunchDims { grid: 1, block: THREADS }, &args, &mut mem)?;
    let raw = mem.read(out, bytes as usize).expect("in bounds");
    Ok(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// The value the box element (row y, col x) must hold: the matrix's, or 0 outside it.
fn want(rows: u64, cols: u64, (r0, c0): (i32, i32), (y, x): (u32, u32)) -> u16 {
    let (r, c) = (i64::from(r0) + i64::from(y), i64::from(c0) + i64::from(x));
    if r < 0 || c < 0 || r as u64 >= rows || c as u64 >= cols {
        0
    } else {
        (r as u64 * 256 + c as u64 + 1) as u16
    }
}

#[test]
fn a_tile_copy_lands_the_box_row_major_and_zero_fills_outside_the_tensor() {
    let (rows, cols) = (40, 72);
    // Inside; past the last row and column; at negative coordinates.
    for (r0, c0) in [(8, 16), (32, 56), (-3, -8)] {
        let (br, bc) = (16, 24);
        let got = run((rows, cols), (br, bc), (r0, c0), TmaSwizzle::None, Opts::default()).expect("runs");
        for y in 0..br {
            for x in 0..bc {
                let g = got[(y * bc + x) as usize];
                assert_eq!(g, want(rows, cols, (r0, c0), (y, x)), "box at ({r0}, {c0}): element ({y}, {x})");
            }
        }
        assert!(r0 < 0 || r0 + 16 <= rows as i32 || got.contains(&0), "the zero fill was exercised");
    }
}

#[test]
fn a_tile_copy_with_the_128_byte_swizzle_permutes_16_byte_chunks_by_row() {
    let (rows, cols) = (20, 104);
    let (br, bc) = (16, 64);
    for (r0, c0) in [(0, 0), (8, 64)] {
        let got = run((rows, cols), (br, bc), (r0, c0), TmaSwizzle::B128, Opts::default()).expect("runs");
        for y in 0..br {
            for x in 0..bc {
                let (j, e) = (x / 8, x % 8);
                let at = y * 64 + ((j ^ (y % 8)) * 8) + e;
                assert_eq!(got[at as usize], want(rows, cols, (r0, c0), (y, x)), "({r0}, {c0}): ({y}, {x})");
            }
        }
    }
}

#[test]
fn a_tensor_map_operand_in_the_parameter_space_is_a_fault() {
    // The ISA's operand is the tensor map's generic address; `mov.u64` of a kernel parameter
    // gives its .param-space address, which hardware does not take.
    match run((40, 72), (16, 24), (0, 0), TmaSwizzle::None, Opts { no_cvta: true, ..Opts::default() }) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("missing cvta.param"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn expect_tx_mismatches_are_caught() {
    let shape = ((40, 72), (16, 24), (0, 0));
    // Announcing 16 bytes more than the box: the phase never completes.
    match run(shape.0, shape.1, shape.2, TmaSwizzle::None, Opts { tx_delta: 16, ..Opts::default() }) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("tx-count 16"), "{what}"),
        other => panic!("{other:?}"),
    }
    // Announcing 16 fewer: more bytes complete than expected.
    match run(shape.0, shape.1, shape.2, TmaSwizzle::None, Opts { tx_delta: -16, ..Opts::default() }) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("16 bytes more than"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reading_the_destination_before_the_wait_is_a_hazard() {
    let shape = ((40, 72), (16, 24), (0, 0));
    for o in [Opts { no_wait: true, ..Opts::default() }, Opts { wrong_parity: true, ..Opts::default() }] {
        match run(shape.0, shape.1, shape.2, TmaSwizzle::None, o) {
            Err(SimError::AsyncHazard { what, .. }) => {
                assert!(what.contains("ld.shared") && what.contains("cp.async.bulk.tensor"), "{o:?}: {what}")
            }
            other => panic!("{o:?}: {other:?}"),
        }
    }
}

#[test]
fn a_misaligned_destination_and_an_uninitialised_mbarrier_are_refused() {
    let shape = ((40, 72), (16, 64), (0, 0));
    // 128 bytes past a 1024-byte boundary: enough without the swizzle, not with it.
    let o = Opts { misalign: 128, ..Opts::default() };
    assert!(run(shape.0, shape.1, shape.2, TmaSwizzle::None, o).is_ok());
    match run(shape.0, shape.1, shape.2, TmaSwizzle::B128, o) {
        Err(SimError::Misaligned { space: "shared", bytes: 1024, .. }) => {}
        other => panic!("{other:?}"),
    }
    let o = Opts { misalign: 16, ..Opts::default() };
    assert!(matches!(
        run(shape.0, shape.1, shape.2, TmaSwizzle::None, o),
        Err(SimError::Misaligned { space: "shared", bytes: 128, .. })
    ));
    match run(shape.0, shape.1, shape.2, TmaSwizzle::None, Opts { no_init: true, ..Opts::default() }) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("no mbarrier.init"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// Every thread arrives on an mbarrier of `count` expected arrivals, then waits for phase 0;
/// then arrives and waits for phase 1 (`second` times: 0 leaves the second wait unsatisfied),
/// then stores 1 to `out[t]`. Parameter: out.
fn phases_kernel(count: u32, second: bool) -> Kernel {
    let mut b = KernelBuilder::new("mbar_phases", "test: mbarrier phases");
    b.block(THREADS);
    let out = b.param(ParamTy::Ptr);
    let bar = b.shared(8);
    let tid = b.special(Special::TidX);
    let base = b.shared_base();
    let mb = b.bin(BinOp::Add, Ty::U32, base, imm(bar));
    let first = b.setp(Cmp::Eq, tid, imm(0));
    let after = b.label();
    b.bra_if(after, first, true);
    b.mbar_init(mb, count);
    b.fence_mbarrier_init();
    b.place(after);
    b.bar_sync();
    b.mbar_arrive(mb);
    b.mbar_wait(mb, imm(0));
    if second {
        b.mbar_arrive(mb);
    }
    b.mbar_wait(mb, imm(1));
    let one = b.imm_u32(1);
    let ga = b.addr(out, tid, 4);
    b.st(Space::Global, ga, one);
    b.finish()
}

fn run_phases(count: u32, second: bool) -> Result<Vec<u32>, SimError> {
    let mut mem = GlobalMem::new();
    let out = mem.alloc_with(vec![0; 4 * THREADS as usize]);
    launch(&phases_kernel(count, second), LaunchDims { grid: 1, block: THREADS }, &[ArgValue::Ptr(out)], &mut mem)?;
    let raw = mem.read(out, 4 * THREADS as usize).expect("in bounds");
    Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[test]
fn mbarrier_phases_complete_after_every_arrival_and_waits_follow_the_parity() {
    assert_eq!(run_phases(THREADS, true).expect("two phases"), vec![1; THREADS as usize]);
    // Without the second round of arrivals phase 1 never completes.
    match run_phases(THREADS, false) {
        Err(SimError::Deadlock { what, .. }) => {
            assert!(what.contains("parity 1") && what.contains("64 of 64 arrivals pending"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    // One arrival more expected than threads: phase 0 never completes.
    match run_phases(THREADS + 1, true) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("1 of 65 arrivals pending"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_instructions_and_the_tensor_map_parameter_are_emitted_for_sm90a_only() {
    let k = tma_kernel(16 * 24 * 2, Opts::default());
    let text = try_emit(&k, Target::Sm90a).expect("sm_90a has TMA");
    for want in [
        ".param .align 64 .b8 tma_one_param_0[128]",
        "mov.u64 %rd0, tma_one_param_0;",
        "cvta.param.u64 %rd1, %rd0;",
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r",
        "mbarrier.init.shared::cta.b64 [%r",
        "fence.mbarrier_init.release.cluster;",
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r",
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r",
        "mbarrier.try_wait.parity.shared::cta.b64 %p",
        ".shared .align 1024 .b8 tma_one_smem",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    // The copy's tensor-map operand is the generic address.
    let copy = text.lines().find(|l| l.trim_start().starts_with("cp.async.bulk.tensor")).expect("a copy");
    assert!(copy.contains(", [%rd1, {"), "{copy}");
    assert_eq!(text, emit(&k, Target::Sm90a));
    let e = try_emit(&k, Target::Sm80).expect_err("sm_80 has no TMA");
    assert_eq!(e.inst, "fence.mbarrier_init");
}

/// An mbarrier's init must be published: to the async proxy that completes the copy on it
/// (`fence.mbarrier_init` or `fence.proxy.async` by the initialising thread) and by a
/// `bar.sync` to the other threads that wait on it; and its bytes are for mbarrier
/// instructions only. Each omission or misuse is a fault.
#[test]
fn an_unpublished_mbarrier_init_and_a_store_into_an_mbarrier_are_faults() {
    let shape = ((40, 72), (16, 24), (0, 0));
    assert!(run(shape.0, shape.1, shape.2, TmaSwizzle::None, Opts::default()).is_ok());
    for (o, want) in [
        (Opts { no_fence: true, ..Opts::default() }, "not made visible to the async proxy"),
        (Opts { no_barrier: true, ..Opts::default() }, "before a bar.sync published its mbarrier.init"),
        (Opts { touch_mbar: true, ..Opts::default() }, "touches the mbarrier"),
    ] {
        match run(shape.0, shape.1, shape.2, TmaSwizzle::None, o) {
            Err(SimError::Fault { reason, .. }) => assert!(reason.contains(want), "{o:?}: {reason}"),
            other => panic!("{o:?}: {other:?}"),
        }
    }
}
