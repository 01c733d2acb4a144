//! Simulator tests: its fault detection (bounds, alignment, barrier and shuffle divergence),
//! warp shuffle semantics, and kernels' numerics at every parameter point against host
//! computations.

#![allow(clippy::expect_used)] // test helpers: a failed expectation is a test failure

use half::bf16;
use vidrt_ir::{DType, ReduceOp, UnaryOp};
use vidrt_kernels::ptx::builder::STATIC_SHARED_MAX;
use vidrt_kernels::ptx::builder::{BinOp, Cmp, KernelBuilder, Operand, ParamTy, ShflMode, Space, Special, Ty};
use vidrt_kernels::ptx::kernels::common::contiguous;
use vidrt_kernels::ptx::kernels::elementwise::{self, EwInput, Expr};
use vidrt_kernels::ptx::kernels::rowwise::{self, RowLayout, RowOp};
use vidrt_kernels::ptx::sim::{
    launch, launch_with, shared_window, ArgValue, DeviceLimits, GlobalMem, LaunchDims, SimError,
};
use vidrt_kernels::ptx::{emit, Target};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(mem: &GlobalMem, addr: u64, n: usize) -> Vec<f32> {
    let b = mem.read(addr, 4 * n).expect("in bounds");
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// `out[i] = x[i + shift]` for i < n, one thread per element.
fn shifted_copy(shift: i64) -> vidrt_kernels::ptx::Kernel {
    let mut b = KernelBuilder::new("shifted", "test");
    let x = b.param(ParamTy::Ptr);
    let o = b.param(ParamTy::Ptr);
    let t = b.special(Special::TidX);
    let s = b.bin(BinOp::Add, Ty::U32, t, Operand::Int(shift));
    let a = b.addr(x, s, 4);
    let v = b.ld(Space::Global, Ty::F32, a);
    let oa = b.addr(o, t, 4);
    b.st(Space::Global, oa, v);
    b.finish()
}

#[test]
fn out_of_bounds_reads_are_caught() {
    let mut mem = GlobalMem::new();
    let x = mem.alloc_with(f32_bytes(&[1.0; 32]));
    let o = mem.alloc(4 * 32);
    let dims = LaunchDims { grid: 1, block: 32 };
    launch(&shifted_copy(0), dims, &[ArgValue::Ptr(x), ArgValue::Ptr(o)], &mut mem).expect("in bounds");
    let err = launch(&shifted_copy(1), dims, &[ArgValue::Ptr(x), ArgValue::Ptr(o)], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::OutOfBounds { thread: 31, .. }), "{err}");
}

#[test]
fn misaligned_vector_loads_are_caught() {
    let mut b = KernelBuilder::new("misaligned", "test");
    let x = b.param(ParamTy::Ptr);
    let a = b.bin(BinOp::Add, Ty::U64, x, Operand::Int(4));
    let _ = b.ld_vec(Space::Global, Ty::F32, a, 4);
    let k = b.finish();
    let mut mem = GlobalMem::new();
    let x = mem.alloc(64);
    let err = launch(&k, LaunchDims { grid: 1, block: 1 }, &[ArgValue::Ptr(x)], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::Misaligned { bytes: 16, .. }), "{err}");
}

#[test]
fn barrier_divergence_is_caught() {
    let mut b = KernelBuilder::new("divergent_bar", "test");
    let t = b.special(Special::TidX);
    let skip = b.label();
    let p = b.setp(Cmp::Ge, t, Operand::Int(16));
    b.bra_if(skip, p, false);
    b.bar_sync();
    b.place(skip);
    let k = b.finish();
    let mut mem = GlobalMem::new();
    let err = launch(&k, LaunchDims { grid: 1, block: 64 }, &[], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::Divergence { .. }), "{err}");
}

#[test]
fn shuffle_divergence_is_caught() {
    let mut b = KernelBuilder::new("divergent_shfl", "test");
    let t = b.special(Special::TidX);
    let skip = b.label();
    let p = b.setp(Cmp::Ge, t, Operand::Int(8));
    b.bra_if(skip, p, false);
    let _ = b.shfl(ShflMode::Bfly, t, Operand::Int(1));
    b.place(skip);
    let k = b.finish();
    let mut mem = GlobalMem::new();
    let err = launch(&k, LaunchDims { grid: 1, block: 32 }, &[], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::Divergence { .. }), "{err}");
}

#[test]
fn shuffles_follow_the_ptx_lane_rules() {
    for (mode, b_val, want) in [
        (ShflMode::Bfly, 5u32, (0..32).map(|i| i ^ 5).collect::<Vec<u32>>()),
        (ShflMode::Down, 3, (0..32).map(|i| if i + 3 < 32 { i + 3 } else { i }).collect()),
        (ShflMode::Up, 2, (0..32).map(|i| if i >= 2 { i - 2 } else { i }).collect()),
        (ShflMode::Idx, 7, vec![7; 32]),
    ] {
        let mut b = KernelBuilder::new("shfl", "test");
        let o = b.param(ParamTy::Ptr);
        let t = b.special(Special::TidX);
        let v = b.shfl(mode, t, Operand::Int(i64::from(b_val)));
        let a = b.addr(o, t, 4);
        b.st(Space::Global, a, v);
        let k = b.finish();
        let mut mem = GlobalMem::new();
        let out = mem.alloc(4 * 32);
        launch(&k, LaunchDims { grid: 1, block: 32 }, &[ArgValue::Ptr(out)], &mut mem).expect("runs");
        let got: Vec<u32> = mem
            .read(out, 128)
            .expect("in bounds")
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, want, "{mode:?}");
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[test]
fn elementwise_vector_paths_match_the_host_at_every_parameter_point() {
    let dims = [4, 8, 24];
    let n: usize = dims.iter().product();
    let xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
    let expr = Expr::Unary(UnaryOp::Silu, Box::new(Expr::Input(0)));
    for dtype in [DType::F32, DType::BF16] {
        for p in elementwise::param_space(dtype) {
            let input = EwInput { dtype, strides: contiguous(&dims) };
            let k = elementwise::elementwise("silu", &expr, &[input], &dims, dtype, p).expect("generates");
            if p.vec == 4 && dtype == DType::F32 {
                assert!(emit(&k, Target::Sm80).contains("ld.global.v4.f32"), "no 16-byte load at vec 4");
            }
            let mut mem = GlobalMem::new();
            let (x, o) = match dtype {
                DType::F32 => (mem.alloc_with(f32_bytes(&xs)), mem.alloc(4 * n)),
                _ => {
                    let b: Vec<u8> = xs.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect();
                    (mem.alloc_with(b), mem.alloc(2 * n))
                }
            };
            let threads = n.div_ceil(p.vec as usize) as u32;
            let dims_l = LaunchDims { grid: threads.div_ceil(p.block), block: p.block };
            launch(&k, dims_l, &[ArgValue::Ptr(x), ArgValue::Ptr(o)], &mut mem).expect("runs");
            let got: Vec<f32> = match dtype {
                DType::F32 => read_f32(&mem, o, n),
                _ => mem
                    .read(o, 2 * n)
                    .expect("in bounds")
                    .chunks_exact(2)
                    .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                    .collect(),
            };
            for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
                let x = if dtype == DType::F32 { x } else { bf16::from_f32(x).to_f32() };
                let want = silu(x);
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
                assert!((g - want).abs() <= tol * want.abs().max(1.0), "{dtype} {p:?} element {i}: {g} vs {want}");
            }
        }
    }
}

#[test]
fn row_reductions_match_the_host_at_every_block_size() {
    let dims = [3, 700];
    let n: usize = dims.iter().product();
    let xs: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 7.0).collect();
    for p in rowwise::param_space() {
        for (op, host) in [
            (ReduceOp::Sum, (|r: &[f32]| r.iter().map(|&v| f64::from(v)).sum::<f64>()) as fn(&[f32]) -> f64),
            (ReduceOp::Max, |r: &[f32]| r.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)))),
        ] {
            let layout = RowLayout::over_axes(&dims, &[1]);
            let k = rowwise::row_kernel("red", &RowOp::Reduce(op), &layout, DType::F32, DType::F32, p, None)
                .expect("generates");
            let mut mem = GlobalMem::new();
            let x = mem.alloc_with(f32_bytes(&xs));
            let o = mem.alloc(4 * 3);
            launch(&k, LaunchDims { grid: 3, block: p.block }, &[ArgValue::Ptr(x), ArgValue::Ptr(o)], &mut mem)
                .expect("runs");
            let got = read_f32(&mem, o, 3);
            for r in 0..3 {
                let want = host(&xs[r * 700..(r + 1) * 700]);
                assert!((f64::from(got[r]) - want).abs() <= 1e-4 * want.abs().max(1.0), "{op:?} {p:?} row {r}");
            }
        }
    }
}

#[test]
fn emitted_text_names_the_target_and_isa() {
    let k = shifted_copy(0);
    for t in Target::ALL {
        let s = emit(&k, t);
        assert!(s.contains(".version 8.0"));
        assert!(s.contains(&format!(".target {}", t.name())));
        assert!(s.contains(".visible .entry shifted("));
    }
}

/// Threads of [`reversal`].
const REV_THREADS: u32 = 256;

/// `out[i] = x[n - 1 - i + shift]` for the `n = bytes / 4` words of one block, through shared
/// memory: each of 256 threads stores words `t + 256·j` of `x` at the same shared index, then
/// after a barrier reads them back reversed (index `n - 1 - i + shift`). Touches every byte of
/// its `bytes` of shared memory; with `shift = 1` thread 0 reads one word past the end.
fn reversal(bytes: u32, shift: u32) -> vidrt_kernels::ptx::Kernel {
    let n = bytes / 4;
    let mut b = KernelBuilder::new("reversal", "test: reverse through shared memory");
    b.block(REV_THREADS);
    let x = b.param(ParamTy::Ptr);
    let o = b.param(ParamTy::Ptr);
    let off = b.shared(bytes);
    let t = b.special(Special::TidX);
    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, Operand::Int(i64::from(off)));
    for j in 0..n / REV_THREADS {
        let i = b.bin(BinOp::Add, Ty::U32, t, Operand::Int(i64::from(j * REV_THREADS)));
        let xa = b.addr(x, i, 4);
        let v = b.ld(Space::Global, Ty::F32, xa);
        let sa = b.fma(Ty::U32, i, Operand::Int(4), base);
        b.st(Space::Shared, sa, v);
    }
    b.bar_sync();
    for j in 0..n / REV_THREADS {
        let i = b.bin(BinOp::Add, Ty::U32, t, Operand::Int(i64::from(j * REV_THREADS)));
        // n - 1 - i + shift
        let r = b.bin(BinOp::Sub, Ty::U32, Operand::Int(i64::from(n - 1 + shift)), i);
        let sa = b.fma(Ty::U32, r, Operand::Int(4), base);
        let v = b.ld(Space::Shared, Ty::F32, sa);
        let oa = b.addr(o, i, 4);
        b.st(Space::Global, oa, v);
    }
    b.finish()
}

/// Runs [`reversal`] on a ramp; returns the output or the simulator's error.
fn run_reversal(k: &vidrt_kernels::ptx::Kernel, n: usize, limits: DeviceLimits) -> Result<Vec<f32>, SimError> {
    let mut mem = GlobalMem::new();
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + 1.0).collect();
    let px = mem.alloc_with(f32_bytes(&x));
    let po = mem.alloc(4 * n);
    let dims = LaunchDims { grid: 1, block: REV_THREADS };
    launch_with(k, dims, &[ArgValue::Ptr(px), ArgValue::Ptr(po)], &mut mem, limits)?;
    Ok(read_f32(&mem, po, n))
}

/// Past 48 KiB a kernel's shared memory is dynamic: recorded on the kernel, declared
/// `.extern`, and the simulator gives the block exactly that much: a 96 KiB round trip through
/// every byte of it is exact; small kernels stay static.
#[test]
fn shared_memory_past_48_kib_is_dynamic_and_fully_usable() {
    let bytes = 96 * 1024;
    let k = reversal(bytes, 0);
    assert_eq!((k.shared_bytes, k.dynamic_shared, k.shared_total()), (0, bytes, bytes));
    let text = emit(&k, Target::Sm80);
    assert!(text.contains(".extern .shared .align 16 .b8 reversal_smem[];"), "{text}");
    assert!(!text.contains("\t.shared"), "{text}");
    let n = (bytes / 4) as usize;
    let got = run_reversal(&k, n, DeviceLimits::of(Target::Sm80)).expect("runs");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, (n - 1 - i) as f32 * 0.5 + 1.0, "out[{i}]");
    }
    // At the static limit: still static, declared in the kernel.
    let s = reversal(STATIC_SHARED_MAX, 0);
    assert_eq!((s.shared_bytes, s.dynamic_shared), (STATIC_SHARED_MAX, 0));
    let text = emit(&s, Target::Sm90a);
    assert!(text.contains(&format!("\t.shared .align 16 .b8 reversal_smem[{STATIC_SHARED_MAX}];")), "{text}");
    assert!(!text.contains(".extern"), "{text}");
    let got = run_reversal(&s, (STATIC_SHARED_MAX / 4) as usize, DeviceLimits::default()).expect("runs");
    assert_eq!(got[0], (STATIC_SHARED_MAX / 4 - 1) as f32 * 0.5 + 1.0);
}

/// One word past the dynamic size is an out-of-bounds shared access, not a read of
/// neighbouring memory (the block's shared memory starts at [`shared_window`], 16 here).
#[test]
fn accesses_past_the_dynamic_shared_size_are_caught() {
    let bytes = 64 * 1024;
    let k = reversal(bytes, 1);
    assert_eq!(shared_window(&k), 16);
    let err = run_reversal(&k, (bytes / 4) as usize, DeviceLimits::default()).unwrap_err();
    assert!(
        matches!(err, SimError::OutOfBounds { space: "shared", addr, bytes: 4, thread: 0, .. } if addr == 16 + 64 * 1024),
        "{err}"
    );
}

/// A kernel needing more shared memory than the device's per-block maximum is a typed bad
/// launch (sm_80: 163 KiB, sm_90: 227 KiB), before any thread runs.
#[test]
fn launches_past_the_per_block_shared_maximum_are_refused() {
    let sm80 = DeviceLimits::of(Target::Sm80);
    assert_eq!(sm80.max_shared, 166_912);
    assert_eq!(DeviceLimits::default(), DeviceLimits::of(Target::Sm90a));
    assert_eq!(DeviceLimits::default().max_shared, 232_448);
    let k = reversal(200 * 1024, 0);
    let n = (200 * 1024 / 4) as usize;
    let err = run_reversal(&k, n, sm80).unwrap_err();
    assert!(matches!(&err, SimError::BadLaunch(why, name) if name == "reversal" && why.contains("166912")), "{err}");
    // The same kernel fits an sm_90 device.
    let got = run_reversal(&k, n, DeviceLimits::default()).expect("fits sm_90");
    assert_eq!(got[n - 1], 1.0);
    // Past sm_90's maximum, and past a configured smaller one.
    let over = reversal(232_448 + 1024, 0);
    let err = run_reversal(&over, (over.dynamic_shared / 4) as usize, DeviceLimits::default()).unwrap_err();
    assert!(matches!(err, SimError::BadLaunch(..)), "{err}");
    let small = DeviceLimits { max_shared: 64 * 1024 };
    let err = run_reversal(&reversal(96 * 1024, 0), 96 * 256, small).unwrap_err();
    assert!(matches!(err, SimError::BadLaunch(..)), "{err}");
    // Exactly the maximum is allowed.
    let edge = reversal(64 * 1024, 0);
    run_reversal(&edge, 64 * 256, small).expect("exactly the maximum");
}

/// Two halves of a 128-thread block (warps 0–1 and 2–3) take turns through named barriers
/// 1 and 2, FlashAttention-3's warpgroup ping-pong: the second half arrives on barrier 1 so
/// the first goes first; each turn `bar.sync`s its own barrier (64 waiting + the other half's
/// 64 arrivals = 128), appends its mark to a log in shared memory and `bar.arrive`s the
/// other's (the second half not after its last turn, so no round is left open). The log is
/// 1, 2, 1, 2, …; with `skip` the second half's first arrival is left out (a deadlock at
/// barrier 1); `count` replaces the barriers' count.
fn ping_pong(turns: u32, skip: bool, count: u32) -> vidrt_kernels::ptx::Kernel {
    let mut b = KernelBuilder::new("ping_pong", "test");
    b.block(128);
    let out = b.param(ParamTy::Ptr);
    let smem = b.shared(4 * (2 * turns + 1));
    let t = b.special(Special::TidX);
    let base = b.shared_base();
    let log = b.bin(BinOp::Add, Ty::U32, base, Operand::Int(i64::from(smem)));
    // log[0] (the length) starts at 0: shared memory is not initialised.
    let is_t0 = b.setp(Cmp::Eq, t, Operand::Int(0));
    let init = b.label();
    b.bra_if(init, is_t0, true);
    let zero = b.imm_u32(0);
    b.st(Space::Shared, log, zero);
    b.place(init);
    b.bar_sync();
    let half = b.bin(BinOp::Shr, Ty::U32, t, Operand::Int(6));
    let second = b.setp(Cmp::Eq, half, Operand::Int(1));
    let first_turn = b.label();
    b.bra_if(first_turn, second, true);
    if !skip {
        b.bar_named_arrive(1, count);
    }
    b.place(first_turn);
    let mark = b.bin(BinOp::Add, Ty::U32, half, Operand::Int(1));
    // Barrier 1 + half is this half's turn, 2 - half the other's.
    for turn in 0..turns {
        let mine = b.label();
        let done = b.label();
        b.bra_if(mine, second, false);
        b.bar_named_sync(1, count);
        b.bra(done);
        b.place(mine);
        b.bar_named_sync(2, count);
        b.place(done);
        // Thread 0 of the half appends: log[0] is the length.
        let lead = b.bin(BinOp::And, Ty::U32, t, Operand::Int(63));
        let is_lead = b.setp(Cmp::Eq, lead, Operand::Int(0));
        let skip_write = b.label();
        b.bra_if(skip_write, is_lead, true);
        let n = b.ld(Space::Shared, Ty::U32, log);
        let n1 = b.bin(BinOp::Add, Ty::U32, n, Operand::Int(1));
        b.st(Space::Shared, log, n1);
        let at = b.fma(Ty::U32, n1, Operand::Int(4), log);
        b.st(Space::Shared, at, mark);
        b.place(skip_write);
        let other_first = b.label();
        let next = b.label();
        b.bra_if(other_first, second, false);
        b.bar_named_arrive(2, count);
        b.bra(next);
        b.place(other_first);
        if turn + 1 < turns {
            b.bar_named_arrive(1, count);
        }
        b.place(next);
    }
    b.bar_sync();
    let end = b.label();
    b.bra_if(end, is_t0, true);
    for i in 0..=2 * turns {
        let at = b_at(&mut b, log, i);
        let v = b.ld(Space::Shared, Ty::U32, at);
        let o = b.imm_u32(i);
        let a = b.addr(out, o, 4);
        b.st(Space::Global, a, v);
    }
    b.place(end);
    b.finish()
}

fn b_at(b: &mut KernelBuilder, log: vidrt_kernels::ptx::builder::Reg, i: u32) -> vidrt_kernels::ptx::builder::Reg {
    b.bin(BinOp::Add, Ty::U32, log, Operand::Int(i64::from(4 * i)))
}

/// Named barriers (`bar.sync`/`bar.arrive id, count`): the ping-pong above alternates
/// exactly; without the second half's first arrival it deadlocks at barrier 1; a count that
/// is not a multiple of 32, or larger than the block, is refused; the emitted text is PTX's.
#[test]
fn named_barriers_alternate_two_groups() {
    let turns = 4;
    let run = |k: &vidrt_kernels::ptx::Kernel| {
        let mut mem = GlobalMem::new();
        let out = mem.alloc(4 * (2 * turns as usize + 1));
        launch(k, LaunchDims { grid: 1, block: 128 }, &[ArgValue::Ptr(out)], &mut mem).map(|()| {
            let raw = mem.read(out, 4 * (2 * turns as usize + 1)).expect("in bounds");
            raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<u32>>()
        })
    };
    let k = ping_pong(turns, false, 128);
    let log = run(&k).expect("runs");
    let want: Vec<u32> = std::iter::once(2 * turns).chain((0..2 * turns).map(|i| 1 + i % 2)).collect();
    assert_eq!(log, want);
    let text = vidrt_kernels::ptx::emit(&k, vidrt_kernels::ptx::Target::Sm80);
    assert!(text.contains("bar.sync 1, 128;") && text.contains("bar.arrive 2, 128;"), "{text}");
    match run(&ping_pong(turns, true, 128)) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("named barrier 1"), "{what}"),
        other => panic!("without the first arrival: {other:?}"),
    }
    for bad in [100, 256] {
        match run(&ping_pong(turns, false, bad)) {
            Err(SimError::Fault { reason, .. }) => assert!(reason.contains("multiple of 32"), "{reason}"),
            other => panic!("count {bad}: {other:?}"),
        }
    }
}

/// `prmt.b32` with run-time selectors (one per thread, loaded) and an immediate one, against
/// the PTX ISA's default mode: byte i of the result is byte `n & 7` of `{b, a}` for nibble n
/// of the selector, or that byte's sign replicated when `n & 8`.
#[test]
fn prmt_picks_bytes_as_the_isa_says() {
    let sels: [u32; 8] = [0x5410, 0x7632, 0x5432, 0x7610, 0x3210, 0x0123, 0x8888, 0xC4C4];
    let (a, b_word) = (0x0302_0100u32, 0x8786_8584u32);
    let mut b = KernelBuilder::new("prmt", "test");
    let ps = b.param(ParamTy::Ptr);
    let po = b.param(ParamTy::Ptr);
    let t = b.special(Special::TidX);
    let sa = b.addr(ps, t, 4);
    let sel = b.ld(Space::Global, Ty::U32, sa);
    let ra = b.imm_u32(a);
    let rb = b.imm_u32(b_word);
    let d = b.prmt(ra, rb, sel);
    let fixed = b.prmt(rb, ra, Operand::Int(0x5410));
    let d = b.bin(BinOp::Xor, Ty::U32, d, fixed);
    let oa = b.addr(po, t, 4);
    b.st(Space::Global, oa, d);
    let k = b.finish();
    assert!(emit(&k, Target::Sm80).contains("prmt.b32"));
    let mut mem = GlobalMem::new();
    let s = mem.alloc_with(sels.iter().flat_map(|v| v.to_le_bytes()).collect());
    let o = mem.alloc(4 * sels.len());
    launch(&k, LaunchDims { grid: 1, block: sels.len() as u32 }, &[ArgValue::Ptr(s), ArgValue::Ptr(o)], &mut mem)
        .expect("runs");
    let got: Vec<u32> = mem
        .read(o, 4 * sels.len())
        .expect("in bounds")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // The ISA's table: the 8 source bytes b7..b4 = b, b3..b0 = a; result byte i from
    // selector nibble i (its low 3 bits the byte, its high bit the sign-replicate mode).
    let host = |a: u32, b: u32, sel: u32| -> u32 {
        let src: Vec<u8> = a.to_le_bytes().into_iter().chain(b.to_le_bytes()).collect();
        let out: Vec<u8> = (0..4)
            .map(|i| {
                let nibble = (sel >> (4 * i)) as usize & 0xF;
                let byte = src[nibble % 8];
                match (nibble >= 8, byte >= 0x80) {
                    (false, _) => byte,
                    (true, true) => 0xFF,
                    (true, false) => 0x00,
                }
            })
            .collect();
        u32::from_le_bytes([out[0], out[1], out[2], out[3]])
    };
    // Spot values from the ISA's examples: the low halves packed, the high halves packed.
    assert_eq!(host(a, b_word, 0x5410), 0x8584_0100);
    assert_eq!(host(a, b_word, 0x7632), 0x8786_0302);
    assert_eq!(host(a, b_word, 0xC4C4), 0xFF84_FF84);
    let fixed = host(b_word, a, 0x5410);
    let want: Vec<u32> = sels.iter().map(|&s| host(a, b_word, s) ^ fixed).collect();
    assert_eq!(got, want);
}

/// The tiled transpose moves every element of `batch` row-major matrices to its transposed
/// place, raw bits, for 2-, 4- and 8-byte types and shapes with tails in both tile axes
/// (and smaller than one tile); the canaries around the output stay untouched.
#[test]
fn tiled_transpose_matches_the_host() {
    use vidrt_kernels::ptx::kernels::copy;
    for (dtype, (batch, rows, cols)) in [
        (DType::BF16, (2, 40, 70)),
        (DType::F16, (1, 96, 27)),
        (DType::F32, (3, 5, 33)),
        (DType::I64, (1, 33, 64)),
        (DType::BF16, (1, 1, 1)),
    ] {
        let size = dtype.size_bytes();
        let n = batch * rows * cols;
        // Distinct bit patterns per element: its index, little-endian (n < 2^16).
        let x: Vec<u8> = (0..n as u64).flat_map(|i: u64| i.to_le_bytes().into_iter().take(size)).collect();
        let k = copy::transpose("tr", batch, rows, cols, dtype).expect("generates");
        let (grid, block) = copy::transpose_launch_dims(batch, rows, cols).expect("fits");
        let mut mem = GlobalMem::new();
        let src = mem.alloc_with(x.clone());
        let canary = vec![0xA5u8; 64];
        let out = mem.alloc_with([canary.clone(), vec![0; n * size], canary.clone()].concat());
        let args = [ArgValue::Ptr(src), ArgValue::Ptr(out + 64)];
        launch(&k, LaunchDims { grid, block }, &args, &mut mem).expect("runs");
        let got = mem.read(out, n * size + 128).expect("in bounds");
        assert_eq!(&got[..64], &canary[..], "{dtype} {rows}x{cols}: canary before");
        assert_eq!(&got[64 + n * size..], &canary[..], "{dtype} {rows}x{cols}: canary after");
        for i in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    let s = ((i * rows + r) * cols + c) * size;
                    let d = 64 + ((i * cols + c) * rows + r) * size;
                    assert_eq!(&got[d..d + size], &x[s..s + size], "{dtype} item {i} ({r}, {c})");
                }
            }
        }
    }
}
