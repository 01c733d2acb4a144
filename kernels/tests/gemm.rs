//! The matmul family in the simulator against an f64 host product: `matmul_simt` at every
//! parameter point over transposes, broadcast batches, bias, fused epilogues (gate·acc +
//! residual, gelu-tanh) and f32/bf16/f16 inputs and outputs, including K that is not a multiple
//! of 8; and `matmul_mma` with batch, bias, epilogue and 16-bit outputs at every point, and at
//! every pipeline stage count on K tails, M/N tails, fewer K slices than stages and K long
//! enough to wrap the stage ring; a wrong `cp.async.wait_group` count is caught; and the
//! sm_90a `matmul_wgmma` at every point on the same kinds of cases (its missing
//! `fence.proxy.async` or `wgmma.wait_group` is caught).
//!
//! Tolerance per element: the f32-accumulation bound K·2⁻²⁴·Σ|a·b| (scaled by the epilogue's
//! gain), plus, ahead of an epilogue, one rounding of the intermediate to the input dtype (the unfused matmul's
//! output, which the epilogue reads) and one rounding of the result to the output dtype.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

mod common;

use common::{decode, encode, round, unit, Rng};

use vidrt_ir::{BinaryOp, DType, UnaryOp};
use vidrt_kernels::ptx::builder::Inst;
use vidrt_kernels::ptx::kernels::common::contiguous;
use vidrt_kernels::ptx::kernels::elementwise::{broadcast_strides, EwInput, Expr};
use vidrt_kernels::ptx::kernels::gemm::{self, GemmEpilogue, GemmSpec};
use vidrt_kernels::ptx::kernels::gemm_mma::{self, MmaParams};
use vidrt_kernels::ptx::kernels::gemm_wgmma::{self, WgmmaParams};
use vidrt_kernels::ptx::kernels::gemm_wgmma_tma;
use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims, SimError};
use vidrt_kernels::ptx::{emit, try_emit, Kernel, KernelError, Target};

/// The epilogues the tests use, with their host form and gain (a bound on |∂out/∂acc|).
#[derive(Clone, Copy, Debug)]
enum Epi {
    None,
    /// `acc · gate[n] + residual[b, m, n]` (gate f32 `[N]`, residual f32, dense).
    GateResidual,
    /// `gelu_tanh(acc)`.
    Gelu,
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

struct Case {
    spec: GemmSpec,
    epi: Epi,
}

/// Dims of A and B as stored, for `spec` (batch axes: the spec's where the stride is non-zero,
/// else 1).
fn stored_dims(spec: &GemmSpec) -> (Vec<usize>, Vec<usize>) {
    let lead = |strides: &[usize]| -> Vec<usize> {
        spec.batch.iter().zip(strides).map(|(&d, &s)| if s == 0 { 1 } else { d }).collect()
    };
    let mut a = lead(&spec.a_batch);
    a.extend(if spec.trans_a { [spec.k, spec.m] } else { [spec.m, spec.k] });
    let mut b = lead(&spec.b_batch);
    b.extend(if spec.trans_b { [spec.n, spec.k] } else { [spec.k, spec.n] });
    (a, b)
}

/// A spec whose batch strides are those of dense operands broadcast over `batch`
/// (`a_lead`/`b_lead`: the operands' own batch dims, 1 where broadcast).
#[allow(clippy::too_many_arguments)]
fn spec(
    (m, n, k): (usize, usize, usize),
    batch: &[usize],
    (a_lead, b_lead): (&[usize], &[usize]),
    (trans_a, trans_b): (bool, bool),
    (in_dtype, out_dtype): (DType, DType),
    bias: bool,
    epi: Epi,
) -> Case {
    let strides = |lead: &[usize], mat: usize| -> Vec<usize> {
        let mut dims = lead.to_vec();
        dims.push(mat);
        let st = contiguous(&dims);
        lead.iter().zip(st).map(|(&d, s)| if d == 1 { 0 } else { s }).collect()
    };
    let mut out = batch.to_vec();
    out.extend([m, n]);
    let epilogue = match epi {
        Epi::None => None,
        Epi::GateResidual => Some(GemmEpilogue {
            expr: Expr::Binary(
                BinaryOp::Add,
                Box::new(Expr::Binary(BinaryOp::Mul, Box::new(Expr::Input(0)), Box::new(Expr::Input(1)))),
                Box::new(Expr::Input(2)),
            ),
            extra: vec![
                EwInput { dtype: DType::F32, strides: broadcast_strides(&[n], &out) },
                EwInput { dtype: DType::F32, strides: contiguous(&out) },
            ],
        }),
        Epi::Gelu => {
            Some(GemmEpilogue { expr: Expr::Unary(UnaryOp::GeluTanh, Box::new(Expr::Input(0))), extra: vec![] })
        }
    };
    Case {
        spec: GemmSpec {
            m,
            n,
            k,
            batch: batch.to_vec(),
            a_batch: strides(a_lead, m * k),
            b_batch: strides(b_lead, n * k),
            trans_a,
            trans_b,
            in_dtype,
            out_dtype,
            bias,
            epilogue,
        },
        epi,
    }
}

/// Runs `kern` on seeded inputs for `case` and checks every output element; returns the
/// largest error relative to its tolerance.
fn check(case: &Case, kern: &Kernel, dims: (u32, u32), seed: u64) -> f64 {
    try_check(case, kern, dims, seed).unwrap_or_else(|e| panic!("{}: {e}", kern.name))
}

/// [`check`], with the simulator's error returned instead of a panic.
fn try_check(case: &Case, kern: &Kernel, dims: (u32, u32), seed: u64) -> Result<f64, SimError> {
    try_check_with(case, kern, dims, seed, None)
}

/// [`try_check`]; with `tma`, A and B are passed as `matmul_wgmma_tma`'s tensor maps at that
/// point (vidrt's simulator encoding) instead of pointers.
fn try_check_with(
    case: &Case,
    kern: &Kernel,
    (grid, block): (u32, u32),
    seed: u64,
    tma: Option<WgmmaParams>,
) -> Result<f64, SimError> {
    let s = &case.spec;
    let (ad, bd) = stored_dims(s);
    let mut rng = Rng(seed);
    let mut gen = |n: usize, dt: DType| -> Vec<f32> { (0..n).map(|_| round(dt, rng.uniform())).collect() };
    let a = gen(ad.iter().product(), s.in_dtype);
    let b = gen(bd.iter().product(), s.in_dtype);
    let bias = gen(s.n, s.in_dtype);
    let out_n: usize = s.out_dims().iter().product();
    let gate = gen(s.n, DType::F32).into_iter().map(|x| 2.0 * x).collect::<Vec<f32>>();
    let resid = gen(out_n, DType::F32);

    let mut mem = GlobalMem::new();
    let (pa, pb) = (mem.alloc_with(encode(s.in_dtype, &a)), mem.alloc_with(encode(s.in_dtype, &b)));
    let mut args = match tma {
        None => vec![ArgValue::Ptr(pa), ArgValue::Ptr(pb)],
        Some(p) => {
            gemm_wgmma_tma::tensor_maps(s, p, (pa, pb)).iter().map(|d| ArgValue::TensorMap(d.encode_sim())).collect()
        }
    };
    if s.bias {
        args.push(ArgValue::Ptr(mem.alloc_with(encode(s.in_dtype, &bias))));
    }
    if let Epi::GateResidual = case.epi {
        args.push(ArgValue::Ptr(mem.alloc_with(encode(DType::F32, &gate))));
        args.push(ArgValue::Ptr(mem.alloc_with(encode(DType::F32, &resid))));
    }
    let osz = s.out_dtype.size_bytes();
    let out = mem.alloc(out_n * osz);
    args.push(ArgValue::Ptr(out));
    launch(kern, LaunchDims { grid, block }, &args, &mut mem)?;
    let got = decode(s.out_dtype, mem.read(out, out_n * osz).expect("in bounds"));

    let (ast, bst) = (contiguous(&ad), contiguous(&bd));
    let mut worst = 0f64;
    let mut bidx = vec![0usize; s.batch.len()];
    for bi in 0..s.batch_count() {
        let mut rem = bi;
        for (ax, &d) in s.batch.iter().enumerate().rev() {
            bidx[ax] = rem % d;
            rem /= d;
        }
        let off = |strides: &[usize]| bidx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let (ao, bo) = (off(&s.a_batch), off(&s.b_batch));
        let nb = ad.len() - 2;
        for i in 0..s.m {
            for j in 0..s.n {
                let (mut acc, mut mag) = (0f64, 0f64);
                for kk in 0..s.k {
                    let av = if s.trans_a { a[ao + kk * ast[nb] + i] } else { a[ao + i * ast[nb] + kk] };
                    let bv = if s.trans_b { b[bo + j * bst[nb] + kk] } else { b[bo + kk * bst[nb] + j] };
                    let p = f64::from(av) * f64::from(bv);
                    acc += p;
                    mag += p.abs();
                }
                if s.bias {
                    acc += f64::from(bias[j]);
                    mag += f64::from(bias[j]).abs();
                }
                let oi = (bi * s.m + i) * s.n + j;
                let (want, gain) = match case.epi {
                    Epi::None => (acc, 1.0),
                    Epi::GateResidual => {
                        let mid = f64::from(round(s.in_dtype, acc as f32));
                        (mid * f64::from(gate[j]) + f64::from(resid[oi]), f64::from(gate[j]).abs().max(1.0))
                    }
                    Epi::Gelu => (gelu(f64::from(round(s.in_dtype, acc as f32))), 1.2),
                };
                let tol = gain * (s.k as f64 + 2.0) * 2f64.powi(-24) * mag
                    // The intermediate is rounded to the input dtype only ahead of an epilogue.
                    + if matches!(case.epi, Epi::None) { 0.0 } else { gain * unit(s.in_dtype) * acc.abs() }
                    + unit(s.out_dtype) * want.abs()
                    + 2e-6 * (want.abs() + 1e-3);
                let g = f64::from(got[oi]);
                assert!(
                    (g - want).abs() <= tol,
                    "{}: out[{bi}][{i}][{j}] = {g}, want {want} (tolerance {tol:e})\n{}",
                    kern.name,
                    kern.header
                );
                worst = worst.max((g - want).abs() / tol);
            }
        }
    }
    Ok(worst)
}

fn simt_cases() -> Vec<Case> {
    use DType::{BF16, F16, F32};
    vec![
        spec((37, 29, 40), &[], (&[], &[]), (false, false), (F32, F32), false, Epi::None),
        spec((70, 67, 19), &[], (&[], &[]), (true, true), (F32, F32), false, Epi::None),
        spec((5, 9, 33), &[2, 3], (&[2, 1], &[1, 3]), (false, true), (F32, F32), true, Epi::None),
        spec((33, 40, 24), &[2], (&[2], &[1]), (true, false), (BF16, BF16), true, Epi::GateResidual),
        spec((17, 130, 7), &[], (&[], &[]), (false, true), (F16, F32), false, Epi::Gelu),
        spec((1, 1, 1), &[], (&[], &[]), (false, false), (F32, F16), true, Epi::None),
    ]
}

#[test]
fn matmul_simt_matches_the_host_at_every_parameter_point() {
    for (pi, p) in gemm::simt_param_space().into_iter().enumerate() {
        for (ci, case) in simt_cases().iter().enumerate() {
            let kern = gemm::gemm_simt(&format!("simt_{pi}_{ci}"), &case.spec, p).expect("generates");
            let dims = gemm::simt_launch_dims(&case.spec, p).expect("fits");
            let worst = check(case, &kern, dims, 100 + ci as u64);
            println!("{} {p:?}: max error / tolerance = {worst:.3}", case.spec.describe());
        }
    }
}

#[test]
fn matmul_mma_with_batch_bias_and_epilogue_matches_the_host() {
    use DType::{BF16, F16};
    let cases = [
        spec((33, 40, 24), &[2], (&[2], &[1]), (false, true), (BF16, BF16), true, Epi::GateResidual),
        spec((130, 72, 96), &[], (&[], &[]), (false, true), (F16, F16), true, Epi::None),
        spec((20, 24, 16), &[3], (&[3], &[3]), (false, true), (BF16, DType::F32), false, Epi::Gelu),
    ];
    for (pi, p) in gemm_mma::param_space().into_iter().enumerate() {
        for (ci, case) in cases.iter().enumerate() {
            assert_eq!(gemm_mma::mma_unsupported(&case.spec), None);
            let kern = gemm_mma::gemm_mma_spec(&format!("mma_{pi}_{ci}"), &case.spec, p).expect("generates");
            assert!(emit(&kern, Target::Sm80).contains("mma.sync.aligned.m16n8k16"));
            let (tiles, block) = gemm_mma::launch_dims(case.spec.m, case.spec.n, p);
            let grid = tiles * case.spec.batch_count() as u32;
            let worst = check(case, &kern, (grid, block), 200 + ci as u64);
            println!("{} {p:?}: max error / tolerance = {worst:.3}", case.spec.describe());
        }
    }
}

#[test]
fn matmul_specs_the_tensor_cores_cannot_take_say_why() {
    use DType::{BF16, F32};
    let k_odd = spec((8, 8, 12), &[], (&[], &[]), (false, true), (BF16, BF16), false, Epi::None);
    let b_kn = spec((8, 8, 16), &[], (&[], &[]), (false, false), (BF16, BF16), false, Epi::None);
    let f32_in = spec((8, 8, 16), &[], (&[], &[]), (false, true), (F32, F32), false, Epi::None);
    for c in [k_odd, b_kn, f32_in] {
        assert!(gemm_mma::mma_unsupported(&c.spec).is_some());
        let p = MmaParams { bm: 32, bn: 32, bk: 32, warps_m: 1, warps_n: 1, stages: 2 };
        assert!(gemm_mma::gemm_mma_spec("x", &c.spec, p).is_err());
        // The SIMT kernel takes all of them.
        let sp = gemm::simt_param_space()[0];
        let kern = gemm::gemm_simt("simt", &c.spec, sp).expect("generates");
        check(&c, &kern, gemm::simt_launch_dims(&c.spec, sp).expect("fits"), 7);
    }
    let mut bad = spec((8, 8, 16), &[], (&[], &[]), (false, true), (F32, F32), false, Epi::None);
    // A bad parameter point on a valid spec, then a valid point on a bad spec.
    let bad_p = gemm::SimtParams { bm: 48, bn: 32, bk: 16, tm: 4, tn: 4 };
    assert!(gemm::gemm_simt("x", &bad.spec, gemm::simt_param_space()[0]).is_ok());
    assert!(gemm::gemm_simt("x", &bad.spec, bad_p).is_err());
    bad.spec.m = 0;
    assert!(gemm::gemm_simt("x", &bad.spec, gemm::simt_param_space()[0]).is_err());
}

/// `(grid, block)` of `matmul_mma` for `case` at `p`.
fn mma_dims(case: &Case, p: MmaParams) -> (u32, u32) {
    let (tiles, block) = gemm_mma::launch_dims(case.spec.m, case.spec.n, p);
    (tiles * case.spec.batch_count() as u32, block)
}

/// Every stage count (2, 3, 4) at two tile shapes, on: K with a partial last slice and M/N
/// tails; K of one partial slice (fewer slices than the S-1 the prologue issues); K of two
/// slices (fewer than S-1 at 4 stages); K of 7 slices with a tail (the stage ring wraps more
/// than once); batch, bias, the two epilogues and a 16-bit output.
#[test]
fn matmul_mma_every_stage_count_matches_the_host() {
    use DType::{BF16, F16, F32};
    let cases = [
        spec((37, 29, 40), &[], (&[], &[]), (false, true), (BF16, F32), false, Epi::None),
        spec((20, 70, 24), &[2], (&[2], &[1]), (false, true), (F16, F16), true, Epi::Gelu),
        spec((65, 33, 64), &[], (&[], &[]), (false, true), (BF16, BF16), true, Epi::GateResidual),
        spec((33, 40, 216), &[2], (&[2], &[2]), (false, true), (F16, F32), true, Epi::None),
    ];
    let mut seen = Vec::new();
    for (bm, bn, warps_m, warps_n) in [(32, 32, 1, 1), (64, 64, 2, 2)] {
        for stages in 2..=4 {
            let p = MmaParams { bm, bn, bk: 32, warps_m, warps_n, stages };
            for (ci, case) in cases.iter().enumerate() {
                let kern = gemm_mma::gemm_mma_spec(&format!("mma_s{stages}_{ci}"), &case.spec, p).expect("generates");
                let text = emit(&kern, Target::Sm80);
                assert!(text.contains(&format!("cp.async.wait_group {};", stages - 2)), "{p:?}");
                // One commit group per prologue slice and one per k-step.
                assert_eq!(text.matches("cp.async.commit_group;").count(), stages as usize, "{p:?}");
                let worst = check(case, &kern, mma_dims(case, p), 300 + ci as u64);
                println!("{} {p:?}: max error / tolerance = {worst:.3}", case.spec.describe());
            }
            seen.push(stages);
        }
    }
    assert_eq!(seen, [2, 3, 4, 2, 3, 4]);
    // The space holds every stage count too.
    let mut space: Vec<u32> = gemm_mma::param_space().iter().map(|p| p.stages).collect();
    space.sort_unstable();
    space.dedup();
    assert_eq!(space, [2, 3, 4]);
}

/// Waiting for one group too few (`wait_group S-1`) lets the first k-step read a stage whose
/// copies are still pending: the simulator reports the hazard at every stage count, and the
/// same kernel with the right count (`S-2`) passes.
#[test]
fn matmul_mma_with_a_wrong_wait_count_is_caught() {
    use DType::{BF16, F32};
    let case = spec((37, 29, 104), &[], (&[], &[]), (false, true), (BF16, F32), true, Epi::None);
    for stages in 2..=4 {
        let p = MmaParams { bm: 32, bn: 32, bk: 32, warps_m: 1, warps_n: 1, stages };
        let right = gemm_mma::gemm_mma_spec_waiting("right", &case.spec, p, stages - 2).expect("generates");
        assert_eq!(right, gemm_mma::gemm_mma_spec("right", &case.spec, p).expect("generates"));
        check(&case, &right, mma_dims(&case, p), 5);
        let wrong = gemm_mma::gemm_mma_spec_waiting("wrong", &case.spec, p, stages - 1).expect("generates");
        match try_check(&case, &wrong, mma_dims(&case, p), 5) {
            Err(SimError::AsyncHazard { what, .. }) => assert!(what.contains("ldmatrix"), "{what}"),
            other => panic!("{stages} stages, wait_group {}: {other:?}", stages - 1),
        }
    }
}

/// Stage counts outside 2..=4 are invalid; a point whose stages exceed 48 KiB uses dynamic
/// shared memory, and one past every target's maximum (227 KiB) is unsupported, with the byte
/// count named.
#[test]
fn matmul_mma_rejects_bad_stage_counts_and_oversized_pipelines() {
    use DType::{BF16, F32};
    let case = spec((64, 64, 64), &[], (&[], &[]), (false, true), (BF16, F32), false, Epi::None);
    for stages in [0, 1, 5] {
        let p = MmaParams { bm: 32, bn: 32, bk: 32, warps_m: 1, warps_n: 1, stages };
        assert!(matches!(gemm_mma::gemm_mma_spec("x", &case.spec, p), Err(KernelError::Invalid(_))), "{stages}");
    }
    // Past 48 KiB the pipeline is in dynamic shared memory; past the largest target's 227 KiB
    // it is refused.
    let big = MmaParams { bm: 128, bn: 64, bk: 32, warps_m: 4, warps_n: 2, stages: 4 };
    assert_eq!(big.shared_bytes(), 61_440);
    let k = gemm_mma::gemm_mma_spec("x", &case.spec, big).expect("61440 bytes of dynamic shared memory");
    assert_eq!((k.shared_bytes, k.dynamic_shared), (0, 61_440));
    let huge = MmaParams { bm: 256, bn: 256, bk: 64, warps_m: 4, warps_n: 4, stages: 4 };
    assert_eq!(huge.shared_bytes(), 294_912);
    match gemm_mma::gemm_mma_spec("x", &case.spec, huge) {
        Err(KernelError::Unsupported(why)) => assert!(why.contains("294912"), "{why}"),
        other => panic!("{other:?}"),
    }
    let fits = MmaParams { stages: 3, ..big };
    let k = gemm_mma::gemm_mma_spec("x", &case.spec, fits).expect("46080 bytes fit");
    assert_eq!((k.shared_bytes, k.dynamic_shared), (46_080, 0));
}

/// The wgmma cases: M, N and K tails (K a multiple of 8, not of BK); batch with a broadcast
/// B, bias and gate·acc + residual to bf16; M past 128 with a 16-bit output; gelu; K long
/// enough to wrap every stage ring.
fn wgmma_cases() -> Vec<Case> {
    use DType::{BF16, F16, F32};
    vec![
        spec((37, 29, 40), &[], (&[], &[]), (false, true), (BF16, F32), false, Epi::None),
        spec((33, 40, 24), &[2], (&[2], &[1]), (false, true), (BF16, BF16), true, Epi::GateResidual),
        spec((130, 72, 96), &[], (&[], &[]), (false, true), (F16, F16), true, Epi::None),
        spec((20, 24, 16), &[3], (&[3], &[3]), (false, true), (BF16, F32), false, Epi::Gelu),
        spec((65, 200, 264), &[], (&[], &[]), (false, true), (F16, F32), true, Epi::None),
    ]
}

/// (grid, block) of `matmul_wgmma_tma` at `p`, as the lowering launches it (a block per
/// `p.tiles` tiles).
fn tma_dims(case: &Case, p: WgmmaParams) -> (u32, u32) {
    gemm_wgmma_tma::launch_grid(&case.spec, p).expect("grid")
}

fn wgmma_dims(case: &Case, p: WgmmaParams) -> (u32, u32) {
    let (tiles, block) = gemm_wgmma::launch_dims(case.spec.m, case.spec.n, p);
    (tiles * case.spec.batch_count() as u32, block)
}

#[test]
fn matmul_wgmma_matches_the_host_at_every_parameter_point() {
    for (pi, p) in gemm_wgmma::param_space().into_iter().enumerate() {
        for (ci, case) in wgmma_cases().iter().enumerate() {
            assert_eq!(gemm_wgmma::wgmma_unsupported(&case.spec), None);
            let kern = gemm_wgmma::gemm_wgmma_spec(&format!("wgmma_{pi}_{ci}"), &case.spec, p).expect("generates");
            let text = emit(&kern, Target::Sm90a);
            assert!(text.contains(&format!("wgmma.mma_async.sync.aligned.m64n{}k16.f32", p.bn)), "{p:?}");
            assert_eq!(text.matches("\twgmma.mma_async").count(), (p.bk / 16) as usize, "{p:?}");
            // Swizzled points: 1024-byte aligned shared memory and mode-1 descriptors.
            let align = if p.swizzle { 1024 } else { 16 };
            assert_eq!(kern.shared_align, align, "{p:?}");
            assert!(text.contains(&format!(".shared .align {align} .b8 wgmma_{pi}_{ci}_smem")), "{p:?}");
            assert!(try_emit(&kern, Target::Sm80).is_err());
            let worst = check(case, &kern, wgmma_dims(case, p), 400 + ci as u64);
            println!("{} {p:?}: max error / tolerance = {worst:.3}", case.spec.describe());
        }
    }
}

/// The kernel without its `fence.proxy.async` (the landed cp.async data is not made visible
/// to wgmma's async proxy), without its `wgmma.wait_group` (the epilogue reads pending
/// accumulators, or the next step overwrites a stage a pending wgmma reads), or without its
/// `wgmma.fence` (the zeroed accumulators are not ordered before the first wgmma): the
/// simulator reports the hazard.
#[test]
fn matmul_wgmma_without_its_fences_or_waits_is_caught() {
    let case = &wgmma_cases()[0];
    for p in [gemm_wgmma::SMALL, gemm_wgmma::LARGE] {
        let kern = gemm_wgmma::gemm_wgmma_spec("wgmma", &case.spec, p).expect("generates");
        check(case, &kern, wgmma_dims(case, p), 9);
        for (drop, needle) in [
            ("fence.proxy.async", "fence.proxy.async"),
            ("wgmma.wait_group", "pending"),
            ("wgmma.fence", "wgmma.fence"),
        ] {
            let mut bad = kern.clone();
            bad.insts.retain(|i| match i {
                Inst::FenceProxyAsync => drop != "fence.proxy.async",
                Inst::WgmmaWait { .. } => drop != "wgmma.wait_group",
                Inst::WgmmaFence => drop != "wgmma.fence",
                _ => true,
            });
            assert!(bad.insts.len() < kern.insts.len());
            match try_check(case, &bad, wgmma_dims(case, p), 9) {
                Err(SimError::AsyncHazard { what, .. }) => assert!(what.contains(needle), "{drop}: {what}"),
                other => panic!("{p:?} without {drop}: {other:?}"),
            }
        }
    }
}

/// What the wgmma kernel cannot take is refused with the reason (the lowering then falls
/// back), bad points are invalid, a point past 227 KiB is unsupported with its bytes, and
/// the points past 48 KiB use dynamic shared memory.
#[test]
fn matmul_wgmma_refuses_what_it_cannot_take() {
    use DType::{BF16, F32};
    let k_odd = spec((8, 8, 12), &[], (&[], &[]), (false, true), (BF16, BF16), false, Epi::None);
    let b_kn = spec((8, 8, 16), &[], (&[], &[]), (false, false), (BF16, BF16), false, Epi::None);
    let f32_in = spec((8, 8, 16), &[], (&[], &[]), (false, true), (F32, F32), false, Epi::None);
    for c in [k_odd, b_kn, f32_in] {
        assert!(gemm_wgmma::wgmma_unsupported(&c.spec).is_some());
        assert!(matches!(
            gemm_wgmma::gemm_wgmma_spec("x", &c.spec, gemm_wgmma::SMALL),
            Err(KernelError::Unsupported(_))
        ));
    }
    let case = spec((64, 64, 64), &[], (&[], &[]), (false, true), (BF16, F32), false, Epi::None);
    for bad in [
        WgmmaParams { bm: 32, ..gemm_wgmma::SMALL },
        WgmmaParams { bn: 12, ..gemm_wgmma::SMALL },
        WgmmaParams { bn: 264, ..gemm_wgmma::SMALL },
        WgmmaParams { bk: 24, ..gemm_wgmma::SMALL },
        WgmmaParams { stages: 1, ..gemm_wgmma::SMALL },
        WgmmaParams { stages: 5, ..gemm_wgmma::SMALL },
        WgmmaParams { swizzle: true, ..gemm_wgmma::LARGE },
    ] {
        assert!(matches!(gemm_wgmma::gemm_wgmma_spec("x", &case.spec, bad), Err(KernelError::Invalid(_))), "{bad:?}");
    }
    let big = WgmmaParams { bm: 128, bn: 256, bk: 128, stages: 3, swizzle: false, producer: false, tiles: 1 };
    assert_eq!(big.shared_bytes(), 294_912);
    match gemm_wgmma::gemm_wgmma_spec("x", &case.spec, big) {
        Err(KernelError::Unsupported(why)) => assert!(why.contains("294912"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Past 48 KiB a point's shared memory is dynamic, up to sm_90a's 227 KiB.
    let mut dynamic = 0;
    for p in gemm_wgmma::param_space() {
        let k = gemm_wgmma::gemm_wgmma_spec("x", &case.spec, p).expect("generates");
        assert_eq!(k.shared_total(), p.shared_bytes(), "{p:?}");
        assert!(p.shared_bytes() <= Target::Sm90a.max_shared(), "{p:?}");
        dynamic += usize::from(k.dynamic_shared > 0);
    }
    assert_eq!(dynamic, 6);
}

/// A swizzled point with its shared memory declared only 16-byte aligned: the simulator
/// places the block's shared memory at address 16, the 128-byte swizzle (applied by wgmma on
/// address bits) no longer matches what the copies wrote, and the product is wrong or faults.
/// The declared `.align 1024` is what makes the swizzled kernel correct.
#[test]
fn matmul_wgmma_swizzle_needs_its_declared_alignment() {
    let case = &wgmma_cases()[0];
    for p in gemm_wgmma::param_space().into_iter().filter(|p| p.swizzle) {
        let kern = gemm_wgmma::gemm_wgmma_spec("wgmma_sw", &case.spec, p).expect("generates");
        check(case, &kern, wgmma_dims(case, p), 5);
        let mut bad = kern.clone();
        bad.shared_align = 16;
        let r = std::panic::catch_unwind(|| try_check(case, &bad, wgmma_dims(case, p), 5));
        assert!(!matches!(r, Ok(Ok(_))), "{p:?}: an unaligned swizzled kernel passed");
    }
}

/// `matmul_wgmma_tma` at every point on the wgmma cases (M/N tails, K tails, batches with
/// bias and gate·acc + residual, gelu, 16-bit outputs, K long enough to wrap every stage ring
/// and refill each stage several times) against the host.
#[test]
fn matmul_wgmma_tma_matches_the_host_at_every_parameter_point() {
    for (pi, p) in gemm_wgmma_tma::param_space().into_iter().enumerate() {
        for (ci, case) in wgmma_cases().iter().enumerate() {
            assert_eq!(gemm_wgmma_tma::tma_unsupported(&case.spec), None);
            let kern =
                gemm_wgmma_tma::gemm_wgmma_tma_spec(&format!("tma_{pi}_{ci}"), &case.spec, p).expect("generates");
            let text = emit(&kern, Target::Sm90a);
            assert!(text.contains("cp.async.bulk.tensor.2d"), "{p:?}");
            assert!(!text.contains("cp.async.cg"), "{p:?}: no per-thread copies");
            assert_eq!(kern.shared_total(), gemm_wgmma_tma::shared_bytes(p), "{p:?}");
            assert!(try_emit(&kern, Target::Sm80).is_err());
            let worst = try_check_with(case, &kern, tma_dims(case, p), 500 + ci as u64, Some(p))
                .unwrap_or_else(|e| panic!("{p:?} {}: {e}", case.spec.describe()));
            println!("{} {p:?}: max error / tolerance = {worst:.3}", case.spec.describe());
        }
    }
}

/// The TMA kernel without its wait on `full` reads a stage before its copies landed (a
/// hazard); without the producer's wait on `empty` it refills a stage... which the
/// simulator's landing order cannot distinguish, so that one is not claimed; without the
/// consumers' arrivals on `empty` the producer waits forever (a deadlock); with the main
/// loop waiting for one wgmma group fewer, a refill overwrites a pending wgmma's operands (a
/// hazard); without the fences after the mbarrier inits the copies complete on mbarriers the
/// async proxy may not see (a fault); with the expect_tx short by a chunk the phase completes
/// early (a fault).
#[test]
fn matmul_wgmma_tma_without_its_waits_or_arrivals_is_caught() {
    let case = &wgmma_cases()[4];
    let p = gemm_wgmma_tma::small();
    let kern = gemm_wgmma_tma::gemm_wgmma_tma_spec("tma", &case.spec, p).expect("generates");
    try_check_with(case, &kern, tma_dims(case, p), 3, Some(p)).expect("the kernel as generated");
    // The first try_wait is the wait on `full` of the main loop (no wait comes before it).
    let first_wait = kern.insts.iter().position(|i| matches!(i, Inst::MbarTryWait { .. })).unwrap();
    let mut no_full_wait = kern.clone();
    no_full_wait.insts.remove(first_wait);
    no_full_wait.insts.remove(first_wait); // its loop branch
    match try_check_with(case, &no_full_wait, tma_dims(case, p), 3, Some(p)) {
        Err(SimError::AsyncHazard { what, .. }) => assert!(what.contains("cp.async.bulk.tensor"), "{what}"),
        other => panic!("without the full wait: {other:?}"),
    }
    let mut no_release = kern.clone();
    no_release.insts.retain(|i| !matches!(i, Inst::MbarArrive { .. }));
    match try_check_with(case, &no_release, tma_dims(case, p), 3, Some(p)) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("arrivals pending"), "{what}"),
        other => panic!("without the empty arrivals: {other:?}"),
    }
    // The main loop's `wgmma.wait_group 1` completes the previous slice before its stage is
    // released; waiting for one group fewer lets the refill overwrite what a pending wgmma
    // reads.
    let mut lax = kern.clone();
    let waits = lax.insts.iter_mut().filter_map(|i| match i {
        Inst::WgmmaWait { n } if *n == 1 => Some(n),
        _ => None,
    });
    let mut n_waits = 0;
    for n in waits {
        *n = 2;
        n_waits += 1;
    }
    assert_eq!(n_waits, 1, "one wait_group 1 in the main loop");
    match try_check_with(case, &lax, tma_dims(case, p), 3, Some(p)) {
        Err(SimError::AsyncHazard { what, .. }) => {
            assert!(what.contains("cp.async.bulk.tensor") && what.contains("wgmma"), "{what}")
        }
        other => panic!("with wait_group 2: {other:?}"),
    }
    // Without its fences after the inits the async proxy may not see them (either fence
    // alone publishes them).
    let mut unfenced = kern.clone();
    unfenced.insts.retain(|i| !matches!(i, Inst::FenceMbarrierInit | Inst::FenceProxyAsync));
    match try_check_with(case, &unfenced, tma_dims(case, p), 3, Some(p)) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("not made visible to the async"), "{reason}"),
        other => panic!("without the init fences: {other:?}"),
    }
    let mut short = kern.clone();
    for i in &mut short.insts {
        if let Inst::MbarArriveExpectTx { tx, .. } = i {
            *tx -= 16;
        }
    }
    match try_check_with(case, &short, tma_dims(case, p), 3, Some(p)) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("more than its expect_tx"), "{reason}"),
        other => panic!("with a short expect_tx: {other:?}"),
    }
}

/// A producer point of `matmul_wgmma_tma` (warpgroup 0 only copies, two computing
/// warpgroups; `setmaxnreg` 40 / 232): K of 10 slices wraps its 4-stage ring twice, so the
/// producer waits on each stage's `empty` at both parities; every generated point passes.
/// Mutants: without the producer's wait on `empty` it refills a stage whose `full` phase
/// the computing warpgroups have not consumed, arriving on it a second time (a fault); without the computing threads' arrivals the
/// producer waits forever (a deadlock); without the producer's `setmaxnreg.dec`, or with an
/// `.inc` to 240 (2·128·72 registers from a pool of 128·128), the `.inc` can never be paid (a
/// deadlock); with the producer warpgroup keeping its registers and computing warpgroups
/// asking for none above the launch's 168, it runs.
#[test]
fn matmul_wgmma_tma_producer_warpgroup_waits_and_rebalances() {
    use DType::{BF16, F32};
    let case = spec((130, 72, 64 * 9 + 8), &[], (&[], &[]), (false, true), (BF16, F32), true, Epi::None);
    let p = gemm_wgmma_tma::param_space().into_iter().find(|p| p.producer && p.bm == 128 && p.stages == 4).unwrap();
    let kern = gemm_wgmma_tma::gemm_wgmma_tma_spec("producer", &case.spec, p).expect("generates");
    assert_eq!(kern.block, Some(384));
    let text = emit(&kern, Target::Sm90a);
    assert_eq!(text.matches("setmaxnreg.dec.sync.aligned.u32 40;").count(), 1, "{text}");
    assert_eq!(text.matches("setmaxnreg.inc.sync.aligned.u32 232;").count(), 1, "{text}");
    assert_eq!(vidrt_kernels::ptx::sim::launch_registers(384), 168);
    let dims = tma_dims(&case, p);
    assert_eq!(dims.1, 384);
    let worst = try_check_with(&case, &kern, dims, 7, Some(p)).expect("the kernel as generated");
    println!("{p:?}: max error / tolerance = {worst:.3}");
    let run = |k: &Kernel| try_check_with(&case, k, dims, 7, Some(p));
    // Emitted with exact launch bounds (`.reqntid`, `.minnctapersm 1`); another block size is
    // refused, as the driver refuses it.
    assert!(text.contains(".reqntid 384, 1, 1\n.minnctapersm 1"), "{text}");
    assert_eq!(kern.registers_at_entry(), Some(168));
    match try_check_with(&case, &kern, (dims.0, 256), 7, Some(p)) {
        Err(SimError::BadLaunch(why, _)) => assert!(why.contains(".reqntid"), "{why}"),
        other => panic!("a 256-thread launch: {other:?}"),
    }

    // The producer's only wait on `empty` is the first try_wait after its setmaxnreg.dec.
    let dec = kern.insts.iter().position(|i| matches!(i, Inst::SetMaxNReg { inc: false, .. })).unwrap();
    let wait = dec + kern.insts[dec..].iter().position(|i| matches!(i, Inst::MbarTryWait { .. })).unwrap();
    let mut eager = kern.clone();
    eager.insts.drain(wait..wait + 2); // the try_wait and its loop branch
    match run(&eager) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("no pending arrivals"), "{reason}"),
        other => panic!("without the producer's wait on empty: {other:?}"),
    }
    let mut no_release = kern.clone();
    no_release.insts.retain(|i| !matches!(i, Inst::MbarArrive { .. }));
    match run(&no_release) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("arrivals pending"), "{what}"),
        other => panic!("without the computing threads' arrivals: {other:?}"),
    }
    let mut no_dec = kern.clone();
    no_dec.insts.remove(dec);
    match run(&no_dec) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("setmaxnreg.inc"), "{what}"),
        other => panic!("without the producer's setmaxnreg.dec: {other:?}"),
    }
    let mut greedy = kern.clone();
    for i in &mut greedy.insts {
        if let Inst::SetMaxNReg { inc: true, count } = i {
            *count = 240;
        }
    }
    match run(&greedy) {
        Err(SimError::Deadlock { what, .. }) => {
            // The first computing warpgroup takes 128·72 of the 128·128 the producer freed.
            assert!(what.contains("setmaxnreg.inc") && what.contains("7168 registers free"), "{what}")
        }
        other => panic!("with setmaxnreg.inc 240: {other:?}"),
    }
    let mut modest = kern.clone();
    for i in &mut modest.insts {
        if let Inst::SetMaxNReg { count, .. } = i {
            *count = 168;
        }
    }
    run(&modest).expect("setmaxnreg to the launch's own count");
    let mut odd = kern.clone();
    for i in &mut odd.insts {
        if let Inst::SetMaxNReg { inc: false, count } = i {
            *count = 44;
        }
    }
    match run(&odd) {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("multiple of 8"), "{reason}"),
        other => panic!("with setmaxnreg.dec 44: {other:?}"),
    }
}

/// A persistent producer point (two tiles per block): one block computes both row tiles of
/// M = 130, its ring running on from the first tile's ten slices into the second's; without
/// the release of each tile's last slice (after the tile's `wait_group 0`) the producer waits
/// forever for that stage (a deadlock).
#[test]
fn persistent_matmul_wgmma_tma_releases_every_tiles_last_slice() {
    use DType::{BF16, F32};
    let case = spec((130, 72, 64 * 9 + 8), &[], (&[], &[]), (false, true), (BF16, F32), true, Epi::None);
    let p = gemm_wgmma_tma::param_space().into_iter().find(|p| p.tiles == 2 && p.bn == 128).unwrap();
    let kern = gemm_wgmma_tma::gemm_wgmma_tma_spec("persistent", &case.spec, p).expect("generates");
    let dims = tma_dims(&case, p);
    assert_eq!(dims.0, 1, "one block for both tiles");
    let worst = try_check_with(&case, &kern, dims, 8, Some(p)).expect("the kernel as generated");
    println!("{p:?}: max error / tolerance = {worst:.3}");
    // The last arrival in the text is the release after the tile's loop.
    let last = kern.insts.iter().rposition(|i| matches!(i, Inst::MbarArrive { .. })).unwrap();
    let mut unreleased = kern.clone();
    unreleased.insts.remove(last);
    match try_check_with(&case, &unreleased, dims, 8, Some(p)) {
        Err(SimError::Deadlock { what, .. }) => assert!(what.contains("arrivals pending"), "{what}"),
        other => panic!("without the last slice's release: {other:?}"),
    }
    // A grid of one block per tile (as without persistence) computes the same.
    let per_tile = gemm_wgmma_tma::launch_grid(&case.spec, WgmmaParams { tiles: 1, ..p }).unwrap();
    assert_eq!(per_tile.0, 2);
    try_check_with(&case, &kern, per_tile, 8, Some(p)).expect("a block per tile");
}

/// What the TMA kernel cannot take is refused (batch strides not multiples of K, the
/// wgmma kernel's own limits), an unswizzled point is invalid.
#[test]
fn matmul_wgmma_tma_refuses_what_it_cannot_take() {
    use DType::{BF16, F32};
    let mut odd_batch = spec((8, 8, 16), &[2], (&[2], &[1]), (false, true), (BF16, F32), false, Epi::None);
    odd_batch.spec.a_batch = vec![8];
    assert_eq!(gemm_wgmma::wgmma_unsupported(&odd_batch.spec), None);
    let k_odd = spec((8, 8, 12), &[], (&[], &[]), (false, true), (BF16, BF16), false, Epi::None);
    for c in [odd_batch, k_odd] {
        assert!(gemm_wgmma_tma::tma_unsupported(&c.spec).is_some(), "{}", c.spec.describe());
        assert!(matches!(
            gemm_wgmma_tma::gemm_wgmma_tma_spec("x", &c.spec, gemm_wgmma_tma::small()),
            Err(KernelError::Unsupported(_))
        ));
    }
    let case = spec((64, 64, 64), &[], (&[], &[]), (false, true), (BF16, F32), false, Epi::None);
    assert!(matches!(
        gemm_wgmma_tma::gemm_wgmma_tma_spec("x", &case.spec, gemm_wgmma::SMALL),
        Err(KernelError::Invalid(_))
    ));
}
