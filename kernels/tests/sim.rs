//! Simulator tests: its fault detection (bounds, alignment, barrier and shuffle divergence),
//! warp shuffle semantics, and kernels' numerics at every parameter point against host
//! computations.

#![allow(clippy::expect_used)] // test helpers: a failed expectation is a test failure

use half::bf16;
use vidrt_ir::{DType, ReduceOp, UnaryOp};
use vidrt_kernels::ptx::builder::{BinOp, Cmp, KernelBuilder, Operand, ParamTy, ShflMode, Space, Special, Ty};
use vidrt_kernels::ptx::kernels::common::contiguous;
use vidrt_kernels::ptx::kernels::elementwise::{self, EwInput, Expr};
use vidrt_kernels::ptx::kernels::rowwise::{self, RowLayout, RowOp};
use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims, SimError};
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
