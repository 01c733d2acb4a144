//! `conv3d_simt` (implicit GEMM) in the simulator against a direct f64 host convolution, at
//! every parameter point: causal 3×3×3 padding, stride 2 in space and in time, asymmetric
//! padding with a 2×2×2 kernel, 2-D (kt = 1), pointwise (the plain-GEMM path), a row bias, a
//! fused epilogue (silu, and gate·acc + residual), and f32, bf16 and f16.
//!
//! Tolerance per element: (K + 2)·2⁻²⁴·Σ|w·x| (f32 accumulation in any order) times the
//! epilogue's gain, plus (ahead of an epilogue) one unit in the last place of the intermediate
//! in the input dtype (the kernel's sum and the exact one may round to neighbours), and one
//! rounding of the result to the output dtype.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

mod common;

use common::{decode, encode, round, unit, Rng};

use vidrt_ir::{BinaryOp, DType, UnaryOp};
use vidrt_kernels::ptx::kernels::common::contiguous;
use vidrt_kernels::ptx::kernels::conv3d::{self, ConvSpec};
use vidrt_kernels::ptx::kernels::elementwise::{broadcast_strides, EwInput, Expr};
use vidrt_kernels::ptx::kernels::gemm::GemmEpilogue;
use vidrt_kernels::ptx::kernels::gemm_mma;
use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims};
use vidrt_kernels::ptx::{emit, Kernel, Target};

#[derive(Clone, Copy, Debug)]
enum Epi {
    None,
    Silu,
    /// `acc · gate[co] + residual` (gate `[Cout, 1, 1, 1]`, residual dense; both f32).
    GateResidual,
}

struct Case {
    x: [usize; 5],
    w: [usize; 5],
    stride: [usize; 3],
    pad: [[usize; 2]; 3],
    dtypes: (DType, DType),
    bias: bool,
    epi: Epi,
}

fn spec_of(c: &Case) -> ConvSpec {
    let mut s = ConvSpec::new(&c.x, &c.w, c.stride, c.pad, c.dtypes, c.bias, None).expect("valid conv");
    let out = s.out_dims();
    s.epilogue = match c.epi {
        Epi::None => None,
        Epi::Silu => Some(GemmEpilogue { expr: Expr::Unary(UnaryOp::Silu, Box::new(Expr::Input(0))), extra: vec![] }),
        Epi::GateResidual => Some(GemmEpilogue {
            expr: Expr::Binary(
                BinaryOp::Add,
                Box::new(Expr::Binary(BinaryOp::Mul, Box::new(Expr::Input(0)), Box::new(Expr::Input(1)))),
                Box::new(Expr::Input(2)),
            ),
            extra: vec![
                EwInput { dtype: DType::F32, strides: broadcast_strides(&[c.w[0], 1, 1, 1], &out) },
                EwInput { dtype: DType::F32, strides: contiguous(&out) },
            ],
        }),
    };
    s
}

fn run(c: &Case, name: &str, p: vidrt_kernels::ptx::kernels::gemm::SimtParams, seed: u64) -> f64 {
    let spec = spec_of(c);
    let kern = conv3d::conv3d_simt(name, &spec, p).expect("generates");
    let dims = conv3d::launch_dims(&spec, p).expect("fits");
    run_kernel(c, &kern, dims, seed)
}

/// Runs `kern` (a conv3d kernel for `c`) on seeded inputs and checks every output element
/// against the host; returns the largest error relative to its tolerance.
fn run_kernel(c: &Case, kern: &Kernel, dims: (u32, u32), seed: u64) -> f64 {
    run_in(c, kern, dims, seed, false)
}

/// [`run_kernel`] for a kernel that takes x `[B, T, H, W, Cin]` and w `[Cout, kt, kh, kw,
/// Cin]` (`channels_last`): the same seeded tensors, uploaded with their channels innermost.
fn run_in(c: &Case, kern: &Kernel, (grid, block): (u32, u32), seed: u64, channels_last: bool) -> f64 {
    let spec = spec_of(c);
    let name = kern.name.as_str();
    let (din, dout) = c.dtypes;
    let mut rng = Rng(seed);
    let mut gen = |n: usize, dt: DType| -> Vec<f32> { (0..n).map(|_| round(dt, rng.uniform())).collect() };
    let x = gen(c.x.iter().product(), din);
    let w = gen(c.w.iter().product(), din);
    let bias = gen(c.w[0], din);
    let out = spec.out_dims();
    let n_out: usize = out.iter().product();
    let gate: Vec<f32> = gen(c.w[0], DType::F32).into_iter().map(|v| 2.0 * v).collect();
    let resid = gen(n_out, DType::F32);

    // [a, c, rest…] → [a, rest…, c]: channels last.
    let last = |v: &[f32], d: [usize; 5]| -> Vec<f32> {
        let inner = d[2] * d[3] * d[4];
        let mut o = vec![0.0; v.len()];
        for a in 0..d[0] {
            for ch in 0..d[1] {
                for r in 0..inner {
                    o[(a * inner + r) * d[1] + ch] = v[(a * d[1] + ch) * inner + r];
                }
            }
        }
        o
    };
    let (xu, wu) = if channels_last { (last(&x, c.x), last(&w, c.w)) } else { (x.clone(), w.clone()) };
    let mut mem = GlobalMem::new();
    let mut args =
        vec![ArgValue::Ptr(mem.alloc_with(encode(din, &xu))), ArgValue::Ptr(mem.alloc_with(encode(din, &wu)))];
    if c.bias {
        args.push(ArgValue::Ptr(mem.alloc_with(encode(din, &bias))));
    }
    if let Epi::GateResidual = c.epi {
        args.push(ArgValue::Ptr(mem.alloc_with(encode(DType::F32, &gate))));
        args.push(ArgValue::Ptr(mem.alloc_with(encode(DType::F32, &resid))));
    }
    let o = mem.alloc(n_out * dout.size_bytes());
    args.push(ArgValue::Ptr(o));
    launch(kern, LaunchDims { grid, block }, &args, &mut mem).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = decode(dout, mem.read(o, n_out * dout.size_bytes()).expect("in bounds"));

    let [nb, cin, t, h, wd] = c.x;
    let [cout, _, kt, kh, kw] = c.w;
    let (xs, ws) = (contiguous(&c.x), contiguous(&c.w));
    let k = cin * kt * kh * kw;
    let mut worst = 0f64;
    for b in 0..nb {
        for co in 0..cout {
            for to in 0..out[2] {
                for ho in 0..out[3] {
                    for wo in 0..out[4] {
                        let (mut acc, mut mag) = (0f64, 0f64);
                        for ci in 0..cin {
                            for dt in 0..kt {
                                for dh in 0..kh {
                                    for dw in 0..kw {
                                        let ti = (to * c.stride[0] + dt) as isize - c.pad[0][0] as isize;
                                        let hi = (ho * c.stride[1] + dh) as isize - c.pad[1][0] as isize;
                                        let wi = (wo * c.stride[2] + dw) as isize - c.pad[2][0] as isize;
                                        if ti < 0 || hi < 0 || wi < 0 {
                                            continue;
                                        }
                                        let (ti, hi, wi) = (ti as usize, hi as usize, wi as usize);
                                        if ti >= t || hi >= h || wi >= wd {
                                            continue;
                                        }
                                        let xv = x[b * xs[0] + ci * xs[1] + ti * xs[2] + hi * xs[3] + wi];
                                        let wv = w[co * ws[0] + ci * ws[1] + dt * ws[2] + dh * ws[3] + dw];
                                        let pr = f64::from(xv) * f64::from(wv);
                                        acc += pr;
                                        mag += pr.abs();
                                    }
                                }
                            }
                        }
                        if c.bias {
                            acc += f64::from(bias[co]);
                            mag += f64::from(bias[co]).abs();
                        }
                        let oi = (((b * cout + co) * out[2] + to) * out[3] + ho) * out[4] + wo;
                        let mid = f64::from(round(din, acc as f32));
                        let (want, gain) = match c.epi {
                            Epi::None => (acc, 1.0),
                            Epi::Silu => (mid / (1.0 + (-mid).exp()), 1.1),
                            Epi::GateResidual => {
                                (mid * f64::from(gate[co]) + f64::from(resid[oi]), f64::from(gate[co]).abs().max(1.0))
                            }
                        };
                        let tol = gain * (k as f64 + 2.0) * 2f64.powi(-24) * mag
                            // The intermediate is rounded to x's dtype only ahead of an epilogue;
                            // the kernel's f32 sum and the exact one can round to neighbouring
                            // values, a whole unit in the last place (twice `unit`) apart.
                            + if matches!(c.epi, Epi::None) { 0.0 } else { 2.0 * gain * unit(din) * acc.abs() }
                            + unit(dout) * want.abs()
                            + 2e-6 * (want.abs() + 1e-3);
                        let g = f64::from(got[oi]);
                        assert!(
                            (g - want).abs() <= tol,
                            "{name}: out[{b},{co},{to},{ho},{wo}] = {g}, want {want} (tolerance {tol:e})\n{}",
                            kern.header
                        );
                        worst = worst.max((g - want).abs() / tol);
                    }
                }
            }
        }
    }
    worst
}

fn cases() -> Vec<Case> {
    use DType::{BF16, F16, F32};
    let causal = [[2, 0], [1, 1], [1, 1]];
    let none = [[0, 0]; 3];
    let c = |x, w, stride, pad, dtypes, bias, epi| Case { x, w, stride, pad, dtypes, bias, epi };
    vec![
        c([1, 3, 4, 6, 7], [5, 3, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::None),
        c([2, 5, 2, 3, 5], [4, 5, 1, 1, 1], [1; 3], none, (F32, F32), true, Epi::None),
        c([1, 3, 2, 7, 9], [4, 3, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F32, F32), true, Epi::None),
        c([1, 4, 5, 3, 3], [4, 4, 3, 1, 1], [2, 1, 1], none, (F32, F32), true, Epi::None),
        c([1, 2, 4, 5, 6], [3, 2, 2, 2, 2], [1, 2, 1], [[1, 0], [0, 1], [1, 1]], (F32, F32), false, Epi::None),
        c([2, 3, 1, 5, 6], [2, 3, 1, 3, 3], [1; 3], [[0, 0], [1, 1], [1, 1]], (F32, F32), true, Epi::GateResidual),
        c([1, 4, 3, 5, 5], [3, 4, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([1, 6, 2, 4, 4], [5, 6, 1, 1, 1], [1; 3], none, (F16, F16), true, Epi::None),
        c([1, 40, 2, 9, 10], [36, 40, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::Silu),
    ]
}

#[test]
fn conv3d_simt_matches_a_direct_convolution_at_every_parameter_point() {
    for (pi, p) in conv3d::param_space().into_iter().enumerate() {
        for (ci, c) in cases().iter().enumerate() {
            let worst = run(c, &format!("conv_{pi}_{ci}"), p, 300 + ci as u64);
            println!("case {ci} x{:?} w{:?} {:?} {p:?}: max error / tolerance = {worst:.3}", c.x, c.w, c.dtypes);
        }
    }
}

#[test]
fn conv3d_pointwise_takes_the_plain_gemm_path_and_bad_shapes_are_errors() {
    let pw =
        ConvSpec::new(&[1, 2, 3, 4, 5], &[3, 2, 1, 1, 1], [1; 3], [[0, 0]; 3], (DType::F32, DType::F32), false, None)
            .expect("valid");
    assert!(pw.is_pointwise());
    let k = conv3d::conv3d_simt("pw", &pw, conv3d::param_space()[0]).expect("generates");
    assert!(k.header.contains("pointwise"), "{}", k.header);
    let strided = ConvSpec::new(
        &[1, 2, 3, 4, 5],
        &[3, 2, 1, 1, 1],
        [1, 2, 2],
        [[0, 0]; 3],
        (DType::F32, DType::F32),
        false,
        None,
    )
    .expect("valid");
    assert!(!strided.is_pointwise());
    for (x, w) in [
        (&[1, 2, 3, 4, 5][..], &[3, 4, 1, 1, 1][..]), // channels differ
        (&[1, 2, 3, 4, 5], &[3, 2, 4, 1, 1]),         // kernel longer than the input
        (&[1, 2, 3, 4], &[3, 2, 1, 1, 1]),            // rank 4
    ] {
        assert!(
            ConvSpec::new(x, w, [1; 3], [[0, 0]; 3], (DType::F32, DType::F32), false, None).is_err(),
            "{x:?} {w:?}"
        );
    }
    assert!(ConvSpec::new(
        &[1, 2, 3, 4, 5],
        &[3, 2, 1, 1, 1],
        [1; 3],
        [[0, 0]; 3],
        (DType::I32, DType::F32),
        false,
        None
    )
    .is_err());
}

#[test]
fn conv3d_mma_matches_a_direct_convolution_at_every_parameter_point() {
    use DType::{BF16, F16, F32};
    let causal = [[2, 0], [1, 1], [1, 1]];
    let c = |x, w, stride, pad, dtypes, bias, epi| Case { x, w, stride, pad, dtypes, bias, epi };
    let cases = [
        c([1, 8, 3, 5, 6], [12, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([2, 8, 2, 7, 9], [8, 8, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F16, F32), true, Epi::None),
        c([2, 16, 2, 4, 4], [20, 16, 1, 1, 1], [1; 3], [[0, 0]; 3], (BF16, BF16), false, Epi::GateResidual),
        c([1, 8, 5, 3, 3], [40, 8, 3, 1, 1], [2, 1, 1], [[0, 0]; 3], (BF16, F32), true, Epi::None),
        // Output widths of 8 and 16: gathered by rows of 8 positions (causal, strided, and
        // with several k slices and a time pad).
        c([1, 8, 3, 6, 8], [16, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([2, 8, 2, 7, 16], [8, 8, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F16, F32), true, Epi::None),
        c(
            [1, 16, 2, 3, 16],
            [24, 16, 2, 3, 3],
            [1; 3],
            [[1, 0], [1, 1], [1, 1]],
            (BF16, F32),
            false,
            Epi::GateResidual,
        ),
    ];
    let (mut by_rows, mut by_vec) = (0, 0);
    // matmul_mma's points and conv3d_mma's own (its tuning space).
    let mut points = gemm_mma::param_space();
    let own: Vec<_> = conv3d::mma_param_space().into_iter().filter(|p| !points.contains(p)).collect();
    assert!(!own.is_empty());
    points.extend(own);
    for (pi, &p) in points.iter().enumerate() {
        for (ci, case) in cases.iter().enumerate() {
            let spec = spec_of(case);
            assert_eq!(conv3d::mma_unsupported(&spec), None);
            let kern = conv3d::conv3d_mma(&format!("conv_mma_{pi}_{ci}"), &spec, p).expect("generates");
            assert!(emit(&kern, Target::Sm80).contains("mma.sync.aligned.m16n8k16"));
            let rows = kern.header.contains("by rows of 8 output positions");
            let vec = kern.header.contains("by 16-byte rows of 8 output positions");
            if !spec.geom.output[2].is_multiple_of(8) {
                assert!(!rows && !vec && kern.header.contains("element by element"), "{}", kern.header);
            }
            // Cases 4 and 6 (stride 1, 3-wide taps with padding 1) by 16-byte vectors at every
            // point; case 5 (strided) element by element in rows.
            assert_eq!(vec, ci == 4 || ci == 6, "case {ci} {p:?}: {}", kern.header);
            by_rows += usize::from(rows);
            by_vec += usize::from(vec);
            let dims = conv3d::mma_launch_dims(&spec, p).expect("fits");
            let worst = run_kernel(case, &kern, dims, 400 + ci as u64);
            println!(
                "mma case {ci} x{:?} w{:?} {:?} {p:?}: max error / tolerance = {worst:.3}",
                case.x, case.w, case.dtypes
            );
        }
    }
    // The strided width-8 case is gathered by rows except where the threads do not divide
    // into BN/8 groups.
    assert!(by_rows >= points.len() / 2, "{by_rows} kernels gathered by rows");
    assert_eq!(by_vec, 2 * points.len());
    // K = 4·27 is not a multiple of 8; f32 has no tensor-core path: both say why.
    let odd = spec_of(&c([1, 4, 3, 5, 5], [3, 4, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::None));
    assert!(conv3d::mma_unsupported(&odd).is_some());
    let f32_spec = spec_of(&c([1, 8, 3, 5, 5], [3, 8, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::None));
    assert!(conv3d::mma_unsupported(&f32_spec).is_some());
    assert!(conv3d::conv3d_mma("x", &odd, gemm_mma::param_space()[0]).is_err());
}

/// `conv3d_mma_cl` (channels-last input, K tap-major, both operands by `cp.async`) at every
/// point against the direct convolution: causal 3×3×3 with several k slices crossing taps
/// (Cin 8, 16, 24: a slice of 32 k holds parts of up to four taps), strided with asymmetric
/// padding, a time conv, pointwise, tails in Cout and positions, two batch items, bias and
/// epilogues, bf16 and f16; what it cannot take is refused.
#[test]
fn conv3d_mma_cl_matches_a_direct_convolution_at_every_parameter_point() {
    use DType::{BF16, F16, F32};
    let causal = [[2, 0], [1, 1], [1, 1]];
    let c = |x, w, stride, pad, dtypes, bias, epi| Case { x, w, stride, pad, dtypes, bias, epi };
    let cases = [
        c([1, 8, 3, 5, 6], [12, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([2, 16, 2, 7, 9], [8, 16, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F16, F32), true, Epi::None),
        c([2, 16, 2, 4, 4], [20, 16, 1, 1, 1], [1; 3], [[0, 0]; 3], (BF16, BF16), false, Epi::GateResidual),
        c([1, 24, 5, 3, 3], [40, 24, 3, 1, 1], [2, 1, 1], [[2, 0], [0, 0], [0, 0]], (BF16, F32), true, Epi::None),
        c([1, 32, 3, 6, 8], [36, 32, 3, 3, 3], [1; 3], causal, (F16, F16), true, Epi::Silu),
    ];
    let space = conv3d::channels_last_param_space();
    assert!(space.iter().any(|p| p.stages > 2), "the deeper pipelines are candidates");
    for (pi, &p) in space.iter().enumerate() {
        for (ci, case) in cases.iter().enumerate() {
            let spec = spec_of(case);
            assert_eq!(conv3d::channels_last_unsupported(&spec), None);
            let kern = conv3d::conv3d_mma_cl(&format!("conv_mma_cl_{pi}_{ci}"), &spec, p).expect("generates");
            let ptx = emit(&kern, Target::Sm90a);
            assert!(ptx.contains("mma.sync.aligned.m16n8k16") && ptx.contains("cp.async.cg.shared.global"));
            // No gather through registers: every global load (bias, extras) is in the epilogue.
            let loop_end = ptx.rfind("mma.sync").expect("mma");
            assert!(!ptx[..loop_end].contains("ld.global"), "{}", kern.header);
            let dims = conv3d::mma_launch_dims(&spec, p).expect("fits");
            let worst = run_in(case, &kern, dims, 700 + ci as u64, true);
            println!(
                "mma_cl case {ci} x{:?} w{:?} {:?} {p:?}: max error / tolerance = {worst:.3}",
                case.x, case.w, case.dtypes
            );
        }
    }
    // Cin 4 is not a multiple of 8; f32 has no tensor-core path: both say why.
    let odd = spec_of(&c([1, 4, 3, 5, 5], [4, 4, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::None));
    assert!(conv3d::channels_last_unsupported(&odd).is_some());
    assert!(conv3d::conv3d_mma_cl("x", &odd, space[0]).is_err());
    let f32_spec = spec_of(&c([1, 8, 3, 5, 5], [3, 8, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::None));
    assert!(conv3d::channels_last_unsupported(&f32_spec).is_some());
}

/// `conv3d_wgmma` (sm_90a) at every point against the direct convolution: output widths of
/// 8 and 16 (causal, strided, a time pad, several k slices with a tail, two batch items and
/// two Cout tiles), bias and epilogues, bf16 and f16, in both orientations (with the positions
/// as M: Cout tiles of 96 with a tail, a tail of positions), gathered by 16-byte vectors where
/// the conv allows and element by element elsewhere; what it cannot take is refused; without
/// its `fence.proxy.async` the wgmma reads the gathered stores through the wrong proxy (the
/// simulator's hazard).
#[test]
fn conv3d_wgmma_matches_a_direct_convolution_at_every_parameter_point() {
    use vidrt_kernels::ptx::builder::Inst;
    use vidrt_kernels::ptx::kernels::conv3d_wgmma;
    use DType::{BF16, F16, F32};
    let causal = [[2, 0], [1, 1], [1, 1]];
    let c = |x, w, stride, pad, dtypes, bias, epi| Case { x, w, stride, pad, dtypes, bias, epi };
    let cases = [
        c([1, 8, 3, 6, 8], [16, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([2, 8, 2, 7, 16], [8, 8, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F16, F32), true, Epi::None),
        c(
            [1, 16, 2, 3, 16],
            [24, 16, 2, 3, 3],
            [1; 3],
            [[1, 0], [1, 1], [1, 1]],
            (BF16, F32),
            false,
            Epi::GateResidual,
        ),
        c([2, 16, 2, 4, 16], [72, 16, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::None),
        // 104 channels: two Cout tiles of 96 (the second 8 wide), 160 positions (a BM tail).
        c([1, 8, 2, 5, 16], [104, 8, 2, 3, 3], [1; 3], [[1, 0], [1, 1], [1, 1]], (BF16, BF16), true, Epi::Silu),
        // The VAE's time conv (3×1×1, no width shift).
        c([1, 8, 4, 2, 16], [16, 8, 3, 1, 1], [1; 3], [[2, 0], [0, 0], [0, 0]], (BF16, BF16), false, Epi::None),
    ];
    let space = conv3d_wgmma::wgmma_param_space();
    assert!(space.iter().any(|p| p.positions_m) && space.iter().any(|p| !p.positions_m));
    for (pi, p) in space.into_iter().enumerate() {
        for (ci, case) in cases.iter().enumerate() {
            let spec = spec_of(case);
            assert_eq!(conv3d_wgmma::wgmma_unsupported(&spec), None);
            let kern = conv3d_wgmma::conv3d_wgmma(&format!("conv_wgmma_{pi}_{ci}"), &spec, p).expect("generates");
            let text = emit(&kern, Target::Sm90a);
            assert!(text.contains(&format!("wgmma.mma_async.sync.aligned.m64n{}k16", p.tile.bn)));
            assert_eq!(text.contains("accumulators stored transposed"), p.positions_m);
            // Stride 1 (all but case 1) is gathered by 16-byte vectors.
            let vec = case.stride[2] == 1;
            assert_eq!(kern.header.contains("16-byte rows"), vec, "case {ci} {p:?}");
            assert!(vidrt_kernels::ptx::try_emit(&kern, Target::Sm80).is_err());
            let dims = conv3d_wgmma::wgmma_launch_dims(&spec, p).expect("fits");
            let worst = run_kernel(case, &kern, dims, 600 + ci as u64);
            println!(
                "wgmma case {ci} x{:?} w{:?} {:?} {p:?}: max error / tolerance = {worst:.3}",
                case.x, case.w, case.dtypes
            );
        }
    }
    let narrow = spec_of(&c([1, 8, 3, 5, 6], [12, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::None));
    assert!(conv3d_wgmma::wgmma_unsupported(&narrow).is_some_and(|w| w.contains("width 6")));
    let f32_spec = spec_of(&c([1, 8, 3, 5, 8], [3, 8, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::None));
    assert!(conv3d_wgmma::wgmma_unsupported(&f32_spec).is_some());
    let p = conv3d_wgmma::wgmma_param_space()[0];
    assert!(conv3d_wgmma::conv3d_wgmma("x", &narrow, p).is_err());
    let three = vidrt_kernels::ptx::kernels::gemm_wgmma::WgmmaParams { stages: 3, ..p.tile };
    let three = conv3d_wgmma::ConvWgmmaParams { tile: three, ..p };
    assert!(conv3d_wgmma::conv3d_wgmma("x", &spec_of(&cases[0]), three).is_err());

    let case = &cases[3];
    let mut unfenced = conv3d_wgmma::conv3d_wgmma("unfenced", &spec_of(case), p).expect("generates");
    unfenced.insts.retain(|i| !matches!(i, Inst::FenceProxyAsync));
    let dims = conv3d_wgmma::wgmma_launch_dims(&spec_of(case), p).expect("fits");
    let caught = std::panic::catch_unwind(|| run_kernel(case, &unfenced, dims, 7));
    let why = caught.err().and_then(|e| e.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(why.contains("fence.proxy.async"), "without the proxy fence: {why}");
}

/// `conv3d_wgmma`'s channels-last form (sm_90a; both operands by `cp.async` into the
/// swizzled stages, K tap-major, rings of 2 to 4) at every point against the direct
/// convolution: causal 3×3×3 with k slices crossing taps (Cin 8, 16, 24), output widths that
/// are not multiples of 8 (which the gather form refuses), strided with asymmetric padding, a time conv,
/// pointwise, Cout tiles of 96 with a tail, a tail of positions, two batch items, bias and
/// epilogues, bf16 and f16; no global load before the last wgmma (no gather through
/// registers); what it cannot take is refused; without its `fence.proxy.async` the wgmma
/// reads the copies through the wrong proxy (the simulator's hazard).
#[test]
fn conv3d_wgmma_cl_matches_a_direct_convolution_at_every_parameter_point() {
    use vidrt_kernels::ptx::builder::Inst;
    use vidrt_kernels::ptx::kernels::conv3d_wgmma;
    use DType::{BF16, F16, F32};
    let causal = [[2, 0], [1, 1], [1, 1]];
    let c = |x, w, stride, pad, dtypes, bias, epi| Case { x, w, stride, pad, dtypes, bias, epi };
    let cases = [
        c([1, 8, 3, 5, 6], [16, 8, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::Silu),
        c([2, 16, 2, 7, 9], [8, 16, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], (F16, F32), true, Epi::None),
        c([2, 16, 2, 4, 4], [20, 16, 1, 1, 1], [1; 3], [[0, 0]; 3], (BF16, BF16), false, Epi::GateResidual),
        c([1, 24, 5, 3, 3], [40, 24, 3, 1, 1], [2, 1, 1], [[2, 0], [0, 0], [0, 0]], (BF16, F32), true, Epi::None),
        // 104 channels: two Cout tiles of 96 (the second 8 wide), 150 positions (a BM tail).
        c([1, 8, 2, 5, 15], [104, 8, 2, 3, 3], [1; 3], [[1, 0], [1, 1], [1, 1]], (F16, F16), true, Epi::Silu),
    ];
    let space: Vec<_> = conv3d_wgmma::conv_wgmma_space().into_iter().filter(|p| p.channels_last).collect();
    for g in conv3d_wgmma::wgmma_param_space() {
        assert!(space.contains(&conv3d_wgmma::ConvWgmmaParams { channels_last: true, ..g }), "{g:?} in channels-last");
    }
    assert!(space.iter().any(|p| p.tile.stages == 3) && space.iter().any(|p| p.tile.stages == 4));
    for (pi, &p) in space.iter().enumerate() {
        for (ci, case) in cases.iter().enumerate() {
            let spec = spec_of(case);
            assert_eq!(conv3d_wgmma::wgmma_cl_unsupported(&spec), None);
            assert_eq!(conv3d_wgmma::conv_wgmma_unsupported(&spec), None);
            let kern = conv3d_wgmma::conv_wgmma_at(&format!("conv_wgmma_{pi}_{ci}"), &spec, p).expect("generates");
            assert!(kern.name.ends_with(vidrt_kernels::ptx::kernels::conv3d::CHANNELS_LAST_SUFFIX), "{}", kern.name);
            let text = emit(&kern, Target::Sm90a);
            assert!(text.contains(&format!("wgmma.mma_async.sync.aligned.m64n{}k16", p.tile.bn)));
            assert!(text.contains("cp.async.cg.shared.global") && kern.header.contains("channels-last"));
            assert!(kern.header.contains(&format!("stages={}", p.tile.stages)), "{}", kern.header);
            // The ring waits for all but the S-2 newest groups.
            assert!(text.contains(&format!("cp.async.wait_group {};", p.tile.stages - 2)), "{p:?}");
            let loop_end = text.rfind("wgmma.mma_async").expect("wgmma");
            assert!(!text[..loop_end].contains("ld.global"), "{}", kern.header);
            let dims = conv3d_wgmma::wgmma_launch_dims(&spec, p).expect("fits");
            let worst = run_in(case, &kern, dims, 800 + ci as u64, true);
            println!(
                "wgmma_cl case {ci} x{:?} w{:?} {:?} {p:?}: max error / tolerance = {worst:.3}",
                case.x, case.w, case.dtypes
            );
        }
    }
    // Width 6: the gather form refuses it, the family takes it in the channels-last form.
    let narrow = spec_of(&cases[0]);
    assert!(conv3d_wgmma::wgmma_unsupported(&narrow).is_some());
    assert!(conv3d_wgmma::conv3d_wgmma("x", &narrow, conv3d_wgmma::wgmma_param_space()[0]).is_err());
    assert!(conv3d_wgmma::conv_wgmma_heuristic(&narrow).channels_last);
    // Cin 4 is not a multiple of 8, nor is K = 108: neither form takes it; f32 has no
    // tensor-core path. Each says why.
    let odd = spec_of(&c([1, 4, 3, 5, 8], [8, 4, 3, 3, 3], [1; 3], causal, (BF16, BF16), true, Epi::None));
    assert!(conv3d_wgmma::wgmma_cl_unsupported(&odd).is_some_and(|w| w.contains("Cin")));
    assert!(conv3d_wgmma::conv3d_wgmma("x", &odd, space[0]).is_err());
    assert!(conv3d_wgmma::conv_wgmma_unsupported(&odd).is_some());
    let f32_spec = spec_of(&c([1, 8, 3, 5, 8], [8, 8, 3, 3, 3], [1; 3], causal, (F32, F32), true, Epi::None));
    assert!(conv3d_wgmma::conv_wgmma_unsupported(&f32_spec).is_some());

    let case = &cases[4];
    let p = space[0];
    let mut unfenced = conv3d_wgmma::conv3d_wgmma("unfenced", &spec_of(case), p).expect("generates");
    unfenced.insts.retain(|i| !matches!(i, Inst::FenceProxyAsync));
    let dims = conv3d_wgmma::wgmma_launch_dims(&spec_of(case), p).expect("fits");
    let caught = std::panic::catch_unwind(|| run_in(case, &unfenced, dims, 7, true));
    let why = caught.err().and_then(|e| e.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(why.contains("fence.proxy.async"), "without the proxy fence: {why}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..proptest::prelude::ProptestConfig::default() })]

    /// Random stride-1 convs with output widths that are multiples of 8 (same width as the
    /// input), on `conv3d_mma` and `conv3d_wgmma` at a random point each, against the direct
    /// convolution: gathered by 16-byte vectors exactly where the width taps shift by at most
    /// one column (|dw − pad| ≤ 1), else by 16-bit loads, with width shifts of up to 2, time
    /// and height pads, K tails, channel tails and two batch items.
    #[test]
    fn stride_1_convs_match_a_direct_convolution_on_both_gathers(
        (nb, cin, t, h, wd) in (1usize..=2, 1usize..=2, 1usize..=3, 1usize..=4, 1usize..=3),
        (kt, kh, kw) in (1usize..=3, 1usize..=3, 1usize..=3),
        (pw, ph, cout) in (0usize..=2, 0usize..=1, proptest::sample::select(vec![8usize, 24, 40, 104])),
        (f16, out32, bias, silu) in (proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY),
        (mma_point, wgmma_point, seed) in (0usize..64, 0usize..64, 0u64..1000),
    ) {
        use vidrt_kernels::ptx::kernels::conv3d_wgmma;
        let (cin, wd) = (8 * cin, 8 * wd);
        // The width keeps its size: pad_lo + pad_hi = kw − 1.
        let pw = pw.min(kw - 1);
        let ph = ph.min(kh - 1);
        let pad = [[kt - 1, 0], [ph, kh - 1 - ph], [pw, kw - 1 - pw]];
        let din = if f16 { DType::F16 } else { DType::BF16 };
        let dout = if out32 { DType::F32 } else { din };
        let epi = if silu { Epi::Silu } else { Epi::None };
        let case = Case { x: [nb, cin, t, h, wd], w: [cout, cin, kt, kh, kw], stride: [1; 3], pad, dtypes: (din, dout), bias, epi };
        let spec = spec_of(&case);
        let vec = pw <= 1 && kw <= pw + 2;
        let space = conv3d::mma_param_space();
        let p = space[mma_point % space.len()];
        let kern = conv3d::conv3d_mma("prop_mma", &spec, p).expect("generates");
        proptest::prop_assert_eq!(kern.header.contains("by 16-byte rows"), vec, "{}", kern.header);
        run_kernel(&case, &kern, conv3d::mma_launch_dims(&spec, p).expect("fits"), seed);
        let space = conv3d_wgmma::wgmma_param_space();
        let p = space[wgmma_point % space.len()];
        let kern = conv3d_wgmma::conv3d_wgmma("prop_wgmma", &spec, p).expect("generates");
        proptest::prop_assert_eq!(kern.header.contains("by 16-byte rows"), vec, "{}", kern.header);
        run_kernel(&case, &kern, conv3d_wgmma::wgmma_launch_dims(&spec, p).expect("fits"), seed + 1);
    }
}
