//! The tuning spaces of the PTX families: through the lowering's tuning hook, every point of
//! every tunable family (matmul wgmma (sm_90a only)/mma/simt, conv3d mma/simt, attention wgmma (sm_90a
//! only)/mma/simt) either
//! generates a kernel whose PTX text is well formed and within the shared-memory limits of
//! the target it is lowered for (static ≤ 48 KiB, static + dynamic ≤ the target's opt-in
//! maximum: 163 KiB on sm_80, 227 KiB on sm_90a), or returns a typed error; never a panic.
//! Random small shapes, on both targets.

use std::cell::RefCell;

use proptest::prelude::*;
use vidrt_ir::{DType, Op};
use vidrt_kernels::ptx::builder::STATIC_SHARED_MAX;
use vidrt_kernels::ptx::lower::{lower_with, Arg, Lowered};
use vidrt_kernels::ptx::tune::{Chooser, Pick, TuneProblem};
use vidrt_kernels::ptx::{try_emit, KernelError, Target};

/// Forces one point (by its index in the family's space) on `target` and records the problem
/// it saw.
struct Force {
    index: usize,
    target: Target,
    seen: RefCell<Option<(String, Vec<String>)>>,
}

impl Chooser for Force {
    fn pick(&self, p: &TuneProblem<'_>) -> Pick {
        *self.seen.borrow_mut() = Some((p.family.clone(), p.space.clone()));
        match p.space.get(self.index) {
            Some(t) => Pick::Forced(t.clone()),
            None => Pick::Heuristic,
        }
    }

    fn target(&self) -> Target {
        self.target
    }
}

/// Lowers the node for `target` at every point of its family's space; returns (family, points
/// that generated, points that were typed errors).
fn every_point_on(
    target: Target,
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
) -> (String, usize, usize) {
    let mut ok = 0;
    let mut err = 0;
    let mut family = String::new();
    let mut index = 0;
    loop {
        let f = Force { index, target, seen: RefCell::new(None) };
        let r = lower_with(op, ins, out, dtype, "t", &f);
        let Some((fam, space)) = f.seen.into_inner() else {
            // Not a tunable node for this dtype/shape: a typed error before any choice.
            assert!(r.is_err(), "{op:?} lowered without asking the chooser");
            return (family, ok, err + 1);
        };
        family = fam;
        if index >= space.len() {
            return (family, ok, err);
        }
        match r {
            Ok(Lowered::Launches(ls)) => {
                for l in &ls {
                    let k = &l.kernel;
                    let what = format!("{} on {}", space[index], target.name());
                    assert!(k.shared_bytes <= STATIC_SHARED_MAX, "{what}: {} static bytes", k.shared_bytes);
                    assert!(k.shared_total() <= target.max_shared(), "{what}: {} bytes", k.shared_total());
                    assert!(k.shared_bytes == 0 || k.dynamic_shared == 0, "{what}: static and dynamic");
                    let text = try_emit(k, target).unwrap_or_else(|e| panic!("{what}: the lowering picked {e}"));
                    assert!(text.contains(".entry") && text.contains(&k.name), "{what}");
                    assert_eq!(text.contains(".extern .shared"), k.dynamic_shared > 0, "{what}");
                    assert!(l.block > 0 && l.grid > 0);
                }
                ok += 1;
            }
            Ok(other) => panic!("{op:?} lowered as {other:?}"),
            Err(KernelError::Unsupported(_) | KernelError::Invalid(_)) => err += 1,
        }
        index += 1;
    }
}

fn float() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::BF16), Just(DType::F16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn matmul_points_generate_or_fail_typed(
        m in 1usize..80, n in 1usize..80, k8 in 1usize..12, odd_k in any::<bool>(),
        trans_b in any::<bool>(), bias in any::<bool>(), dtype in float(),
    ) {
        let k = if odd_k { k8 * 8 + 3 } else { k8 * 8 };
        let a = [m, k];
        let b = if trans_b { [n, k] } else { [k, n] };
        let bias_d = [n];
        let mut ins: Vec<(&[usize], DType)> = vec![(&a, dtype), (&b, dtype)];
        if bias {
            ins.push((&bias_d, dtype));
        }
        let op = Op::MatMul { trans_a: false, trans_b, bias };
        let (family, ok, _) = every_point_on(Target::Sm80, &op, &ins, &[m, n], dtype);
        prop_assert!(family.starts_with("matmul_") && !family.starts_with("matmul_wgmma"), "{family}");
        prop_assert!(ok > 0, "no point of {family} generates for {m}x{n}x{k}");
        // On sm_90a the K-major 16-bit products take the wgmma family, the rest what sm_80 takes.
        let (hopper, ok, _) = every_point_on(Target::Sm90a, &op, &ins, &[m, n], dtype);
        let wgmma = dtype != DType::F32 && trans_b && !odd_k;
        prop_assert_eq!(hopper.starts_with("matmul_wgmma_"), wgmma, "{}", hopper);
        if !wgmma {
            prop_assert_eq!(&hopper, &family);
        }
        prop_assert!(ok > 0, "no point of {hopper} generates for {m}x{n}x{k}");
    }

    #[test]
    fn conv3d_points_generate_or_fail_typed(
        cin in 1usize..20, cout in 1usize..40, t in 1usize..4, h in 3usize..12, w in 3usize..20,
        kt in 1usize..3, k3 in any::<bool>(), stride2 in any::<bool>(), dtype in float(),
    ) {
        let kh = if k3 { 3 } else { 1 };
        let x = [1, cin, t, h, w];
        let wt = [cout, cin, kt, kh, kh];
        let p = kh / 2;
        let op = Op::Conv3d {
            stride: [1, if stride2 { 2 } else { 1 }, if stride2 { 2 } else { 1 }],
            pad: [[kt - 1, 0], [p, p], [p, p]],
            bias: false,
        };
        let s = if stride2 { 2 } else { 1 };
        let out = [1, cout, t, (h + 2 * p - kh) / s + 1, (w + 2 * p - kh) / s + 1];
        let ins = [(&x[..], dtype), (&wt[..], dtype)];
        let (family, ok, _) = every_point_on(Target::Sm80, &op, &ins, &out, dtype);
        prop_assert!(family.starts_with("conv3d_") && !family.starts_with("conv3d_wgmma"), "{family}");
        prop_assert!(ok > 0, "no point of {family} generates for {x:?} * {wt:?}");
        // On sm_90a a 16-bit conv takes the wgmma family where one of its forms does (every
        // point of that form generates): the gather with K and the output width multiples of
        // 8, channels-last with Cin a multiple of 8; the rest what sm_80 takes.
        let (hopper, ok, _) = every_point_on(Target::Sm90a, &op, &ins, &out, dtype);
        let gather = dtype != DType::F32 && (cin * kt * kh * kh) % 8 == 0 && out[4] % 8 == 0;
        let cl = dtype != DType::F32 && cin % 8 == 0;
        prop_assert_eq!(hopper.starts_with("conv3d_wgmma_"), gather || cl, "{}", hopper);
        if gather || cl {
            let space = vidrt_kernels::ptx::kernels::conv3d_wgmma::conv_wgmma_space();
            let forms = space.iter().filter(|p| (p.channels_last && cl) || (!p.channels_last && gather)).count();
            prop_assert_eq!(ok, forms);
        } else {
            prop_assert_eq!(&hopper, &family);
        }
        prop_assert!(ok > 0, "no point of {hopper} generates for {x:?} * {wt:?}");
    }

    #[test]
    fn attention_points_generate_or_fail_typed(
        sq in 1usize..40, sk in 1usize..70, h in 1usize..3, d in prop_oneof![Just(6usize), Just(16), Just(64), Just(128)],
        dtype in float(),
    ) {
        let q = [1, sq, h, d];
        let kv = [1, sk, h, d];
        let op = Op::Attention { scale: 0.25, bias: false, mask: false };
        let ins = [(&q[..], dtype), (&kv[..], dtype), (&kv[..], dtype)];
        let (family, ok, _) = every_point_on(Target::Sm80, &op, &ins, &q, dtype);
        prop_assert!(family.starts_with("attention_") && !family.starts_with("attention_wgmma"), "{family}");
        prop_assert!(ok > 0, "no point of {family} generates for d={d}");
        // On sm_90a 16-bit attention with head dims in whole 16-byte chunks takes the wgmma
        // family (every point generates), the rest what sm_80 takes.
        let (hopper, ok, _) = every_point_on(Target::Sm90a, &op, &ins, &q, dtype);
        let wgmma = dtype != DType::F32 && d % 8 == 0;
        prop_assert_eq!(hopper.starts_with("attention_wgmma_"), wgmma, "{}", hopper);
        if wgmma {
            prop_assert_eq!(ok, vidrt_kernels::ptx::kernels::attention::wgmma_param_space().len());
        } else {
            prop_assert_eq!(&hopper, &family);
        }
        prop_assert!(ok > 0, "no point of {hopper} generates for d={d}");
    }
}

/// An integer matmul is refused before any point is chosen (a typed error, no choice asked).
#[test]
fn integer_matmul_is_typed_error() {
    let a = [4, 8];
    for target in Target::ALL {
        let (_, ok, err) = every_point_on(
            target,
            &Op::MatMul { trans_a: false, trans_b: false, bias: false },
            &[(&a, DType::I32), (&a, DType::I32)],
            &[4, 8],
            DType::I32,
        );
        assert_eq!((ok, err), (0, 1), "{}", target.name());
    }
}

/// The points past 48 KiB are dynamic shared memory where the target allows them: on a
/// 256×256×128 bf16 product every `matmul_mma` point generates for sm_90a, the 216 KiB one
/// (`bm=128,bn=256,bk=64,..,stages=4`) is refused for sm_80 as `Unsupported`, and the
/// 162 KiB one (CUTLASS's sm_80 default tile) fits both. (On sm_90a the lowering takes
/// `matmul_wgmma_tma` for this product, so there the `matmul_mma` points are generated directly
/// and held to the sm_90a limit.)
#[test]
fn dynamic_shared_points_follow_the_target() {
    let a = [256, 128];
    let ins: Vec<(&[usize], DType)> = vec![(&a, DType::BF16), (&a, DType::BF16)];
    let op = Op::MatMul { trans_a: false, trans_b: true, bias: false };
    let out = [256, 256];
    let space = vidrt_kernels::ptx::kernels::gemm_mma::param_space();
    let mut dynamic = [0, 0];
    for (ti, target) in Target::ALL.into_iter().enumerate() {
        for (index, p) in space.iter().enumerate() {
            let f = Force { index, target, seen: RefCell::new(None) };
            let lowered = lower_with(&op, &ins, &out, DType::BF16, "t", &f);
            let r = if target == Target::Sm90a {
                let family = f.seen.into_inner().map(|(fam, _)| fam);
                assert_eq!(family.as_deref(), Some("matmul_wgmma_tma_bf16"));
                let spec =
                    vidrt_kernels::ptx::kernels::gemm::GemmSpec::plain(256, 256, 128, true, DType::BF16, DType::BF16);
                vidrt_kernels::ptx::kernels::gemm_mma::gemm_mma_spec("t", &spec, *p)
                    .and_then(|k| vidrt_kernels::ptx::tune::within_shared_limit(k, target.max_shared()))
                    .map(|kernel| {
                        Lowered::Launches(vec![vidrt_kernels::ptx::lower::Launch {
                            kernel,
                            grid: 1,
                            block: 1,
                            args: vec![],
                        }])
                    })
            } else {
                lowered
            };
            let fits = p.shared_bytes() <= target.max_shared();
            match r {
                Ok(Lowered::Launches(ls)) => {
                    assert!(fits, "{p:?} generated on {}", target.name());
                    let k = &ls[0].kernel;
                    assert_eq!(k.shared_total(), p.shared_bytes(), "{p:?}");
                    assert_eq!(k.dynamic_shared > 0, p.shared_bytes() > STATIC_SHARED_MAX, "{p:?}");
                    dynamic[ti] += usize::from(k.dynamic_shared > 0);
                }
                Err(KernelError::Unsupported(why)) => {
                    assert!(!fits && why.contains("shared memory"), "{p:?} on {}: {why}", target.name())
                }
                other => panic!("{p:?} on {}: {other:?}", target.name()),
            }
        }
    }
    // sm_80: 60, 80, 90, 90 and 162 KiB; sm_90a: also 216 KiB.
    assert_eq!(dynamic, [5, 6]);
}

/// The heuristic lowering of bf16 attention (head dim 64, bias and key mask): `attention_wgmma`
/// on sm_90a (its first point: FlashAttention-3's pipelined schedule, two warpgroups of 64
/// query rows), `attention_mma` on sm_80 and on sm_90a
/// with wgmma off, and on sm_90a for a head dim that is not a multiple of 8.
#[test]
fn sm90a_lowers_16_bit_attention_to_wgmma() {
    use vidrt_kernels::ptx::lower::lower;
    use vidrt_kernels::ptx::tune::HeuristicsFor;
    let op = Op::Attention { scale: 0.125, bias: true, mask: true };
    let kernel = |l: Lowered| match l {
        Lowered::Launches(mut ls) if ls.len() == 1 => ls.remove(0),
        other => panic!("{other:?}"),
    };
    let (q, bias, mask) = ([2usize, 77, 3, 64], [2usize, 3, 77, 77], [2usize, 77]);
    let ins: Vec<(&[usize], DType)> =
        vec![(&q, DType::BF16), (&q, DType::BF16), (&q, DType::BF16), (&bias, DType::BF16), (&mask, DType::I64)];
    let hopper = kernel(lower_with(&op, &ins, &q, DType::BF16, "t", &HeuristicsFor(Target::Sm90a)).unwrap());
    assert!(hopper.kernel.name.ends_with("_wgmma"), "{}", hopper.kernel.name);
    assert!(hopper.kernel.header.contains("attention_flash wgmma"), "{}", hopper.kernel.header);
    // The pipelined point: two warpgroups, 128 query rows per block, three K/V stages.
    assert!(hopper.kernel.header.contains("wg=2 (BQ=128) BKV=64 stages=3"), "{}", hopper.kernel.header);
    assert_eq!(hopper.block, 256);
    // 2 batches × 3 heads × ceil(77/128) query tiles.
    assert_eq!(hopper.grid, 2 * 3);
    assert!(try_emit(&hopper.kernel, Target::Sm90a).unwrap().contains("wgmma.mma_async"));
    assert!(try_emit(&hopper.kernel, Target::Sm80).is_err());
    let ampere = kernel(lower(&op, &ins, &q, DType::BF16, "t").unwrap());
    assert!(ampere.kernel.header.contains("attention_flash mma"), "{}", ampere.kernel.header);
    let off = kernel(lower_with(&op, &ins, &q, DType::BF16, "t", &NoWgmma).unwrap());
    assert_eq!(off, ampere);
    // Head dim 6: refused by the wgmma kernel (not whole 16-byte chunks), so mma.sync.
    let q6 = [2usize, 77, 3, 6];
    let ins6: Vec<(&[usize], DType)> =
        vec![(&q6, DType::BF16), (&q6, DType::BF16), (&q6, DType::BF16), (&bias, DType::BF16), (&mask, DType::I64)];
    let odd = kernel(lower_with(&op, &ins6, &q6, DType::BF16, "t", &HeuristicsFor(Target::Sm90a)).unwrap());
    assert!(odd.kernel.header.contains("attention_flash mma"), "{}", odd.kernel.header);
    // Head dim 128: the heuristic takes the pipelined first point, in dynamic shared memory
    // (128 KiB), not the single-stage point that would fit 48 KiB static.
    let q128 = [1usize, 300, 2, 128];
    let bias128 = [1usize, 2, 300, 300];
    let mask128 = [1usize, 300];
    let ins128: Vec<(&[usize], DType)> = vec![
        (&q128, DType::BF16),
        (&q128, DType::BF16),
        (&q128, DType::BF16),
        (&bias128, DType::BF16),
        (&mask128, DType::I64),
    ];
    let d128 = kernel(lower_with(&op, &ins128, &q128, DType::BF16, "t", &HeuristicsFor(Target::Sm90a)).unwrap());
    assert!(d128.kernel.header.contains("wg=2 (BQ=128) BKV=64 stages=3"), "{}", d128.kernel.header);
    assert!(d128.kernel.dynamic_shared > 48 * 1024, "{}", d128.kernel.dynamic_shared);
}

/// The heuristic lowering of a bf16 linear layer: the TMA-fed `matmul_wgmma_tma` on sm_90a
/// (its A and B parameters tensor maps), `matmul_mma` on
/// sm_80 (unchanged), and the sm_90a kernel is refused for sm_80.
#[test]
fn sm90a_lowers_16_bit_matmuls_to_wgmma() {
    use vidrt_kernels::ptx::lower::lower;
    use vidrt_kernels::ptx::tune::HeuristicsFor;
    let (a, w, bias) = ([2, 77, 64], [96, 64], [96]);
    let ins: Vec<(&[usize], DType)> = vec![(&a, DType::BF16), (&w, DType::BF16), (&bias, DType::BF16)];
    let op = Op::MatMul { trans_a: false, trans_b: true, bias: true };
    let kernel = |l: Lowered| match l {
        Lowered::Launches(mut ls) if ls.len() == 1 => ls.remove(0),
        other => panic!("{other:?}"),
    };
    let hopper = kernel(lower_with(&op, &ins, &[2, 77, 96], DType::BF16, "t", &HeuristicsFor(Target::Sm90a)).unwrap());
    assert!(hopper.kernel.name.ends_with("_wgmma_tma"), "{}", hopper.kernel.name);
    use vidrt_kernels::ptx::builder::ParamTy;
    assert_eq!(&hopper.kernel.params[..2], &[ParamTy::TensorMap, ParamTy::TensorMap]);
    assert_eq!(hopper.kernel.tensor_maps.len(), 2);
    assert!(try_emit(&hopper.kernel, Target::Sm90a).unwrap().contains("cp.async.bulk.tensor.2d"));
    assert_eq!(hopper.block, 128);
    // 2 batches × ceil(77/64) × ceil(96/64) tiles of the small point.
    assert_eq!(hopper.grid, 2 * 2 * 2);
    assert!(try_emit(&hopper.kernel, Target::Sm90a).unwrap().contains("wgmma.mma_async"));
    assert!(try_emit(&hopper.kernel, Target::Sm80).is_err());
    let ampere = kernel(lower(&op, &ins, &[2, 77, 96], DType::BF16, "t").unwrap());
    assert!(ampere.kernel.name.ends_with("_mma"), "{}", ampere.kernel.name);
    let same = kernel(lower_with(&op, &ins, &[2, 77, 96], DType::BF16, "t", &HeuristicsFor(Target::Sm80)).unwrap());
    assert_eq!(same, ampere);
    // A chooser that keeps wgmma off (the CUDA backend's default) lowers to mma.sync on Hopper.
    let off = kernel(lower_with(&op, &ins, &[2, 77, 96], DType::BF16, "t", &NoWgmma).unwrap());
    assert!(off.kernel.name.ends_with("_mma"), "{}", off.kernel.name);
    assert!(try_emit(&off.kernel, Target::Sm90a).is_ok());
}

/// Kernels lowered for different nodes differ only by name, and their canonical forms have
/// the same text (one module, one JIT compile, for every layer of a model): a tensor-core
/// matmul with tensor maps, an attention, a timestep embedding with a constant table; the
/// canonical form of each still runs (its entry is `CANONICAL_ENTRY`, its table renamed).
#[test]
fn kernels_of_different_nodes_share_one_canonical_text() {
    use vidrt_kernels::ptx::builder::CANONICAL_ENTRY;
    use vidrt_kernels::ptx::emit;
    use vidrt_kernels::ptx::tune::HeuristicsFor;
    let (a, w, q) = ([2usize, 77, 64], [96usize, 64], [1usize, 40, 2, 64]);
    let t = [3usize];
    type Case<'a> = (Op, Vec<(&'a [usize], DType)>, Vec<usize>);
    let cases: Vec<Case<'_>> = vec![
        (
            Op::MatMul { trans_a: false, trans_b: true, bias: false },
            vec![(&a, DType::BF16), (&w, DType::BF16)],
            vec![2, 77, 96],
        ),
        (
            Op::Attention { scale: 0.125, bias: false, mask: false },
            vec![(&q, DType::BF16), (&q, DType::BF16), (&q, DType::BF16)],
            q.to_vec(),
        ),
        (
            Op::TimestepEmbedding { dim: 32, flip_sin_to_cos: true, downscale_freq_shift: 0.0, max_period: 10000.0 },
            vec![(&t, DType::F32)],
            vec![3, 32],
        ),
    ];
    let mut tables = 0;
    for (op, ins, out) in &cases {
        let dtype = ins[0].1;
        let one = |name: &str| match lower_with(op, ins, out, dtype, name, &HeuristicsFor(Target::Sm90a)).unwrap() {
            Lowered::Launches(ls) => ls,
            other => panic!("{other:?}"),
        };
        let (x, y) = (one("n7"), one("n12"));
        assert_eq!(x.len(), y.len());
        for (kx, ky) in x.iter().zip(&y) {
            let (tx, ty) = (emit(&kx.kernel, Target::Sm90a), emit(&ky.kernel, Target::Sm90a));
            assert_ne!(tx, ty, "{op:?}: the node names are in the text");
            let (cx, cy) = (kx.kernel.canonical(), ky.kernel.canonical());
            let text = emit(&cx, Target::Sm90a);
            assert_eq!(text, emit(&cy, Target::Sm90a), "{op:?}");
            assert!(text.contains(&format!(".entry {CANONICAL_ENTRY}(")), "{op:?}");
            assert!(!text.contains("n7") && !text.contains("n12"), "{op:?}: {text}");
            assert_eq!(cx.insts, kx.kernel.insts);
            assert!(cx.consts.iter().all(|c| c.name.starts_with(CANONICAL_ENTRY)), "{op:?}");
            tables += cx.consts.len();
        }
    }
    assert!(tables > 0, "no case had a constant table");
}

/// The simulator refuses a grid past CUDA's 2³¹ − 1 blocks in x, as the driver does (the
/// lowering refuses to produce one; with 32-bit element indexing no kernel reaches it yet).
#[test]
fn grids_past_cuda_limit_are_refused() {
    use vidrt_kernels::ptx::lower::MAX_GRID_X;
    use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims, SimError};
    use vidrt_kernels::ptx::tune::HeuristicsFor;
    let op = Op::Constant { value: 1.0 };
    let Lowered::Launches(ls) = lower_with(&op, &[], &[1000], DType::F32, "t", &HeuristicsFor(Target::Sm90a)).unwrap()
    else {
        panic!("a fill is one launch")
    };
    let mut mem = GlobalMem::new();
    let out = mem.alloc(4000);
    let dims = |grid| LaunchDims { grid, block: ls[0].block };
    assert!(launch(&ls[0].kernel, dims(ls[0].grid), &[ArgValue::Ptr(out)], &mut mem).is_ok());
    let r = launch(&ls[0].kernel, dims(MAX_GRID_X + 1), &[ArgValue::Ptr(out)], &mut mem);
    assert!(matches!(r, Err(SimError::BadLaunch(..))), "{r:?}");
}

/// The heuristic lowering of a bf16 causal 3×3×3 conv at output width 16: the input and
/// weight transposed into scratch, then on sm_90a the channels-last form of `conv3d_wgmma`
/// (weights as A at 32 channels, positions as A at 96; also at width 10, which its gather
/// form refuses), on sm_80 and on sm_90a with wgmma off `conv3d_mma_cl` (128×128 at 3 stages
/// at 96 channels); with Cin not a multiple of 8, the gathers in place: `conv3d_wgmma`'s on
/// sm_90a, `conv3d_mma`'s on sm_80.
#[test]
fn sm90a_lowers_16_bit_convs_to_wgmma() {
    use vidrt_kernels::ptx::lower::lower;
    use vidrt_kernels::ptx::tune::HeuristicsFor;
    let op = Op::Conv3d { stride: [1; 3], pad: [[2, 0], [1, 1], [1, 1]], bias: false };
    let kernel = |l: Lowered| match l {
        Lowered::Launches(mut ls) if ls.len() == 1 => ls.remove(0),
        other => panic!("{other:?}"),
    };
    let hopper_chooser = HeuristicsFor(Target::Sm90a);
    let (x, w, out) = ([1usize, 16, 3, 10, 16], [32usize, 16, 3, 3, 3], [1usize, 32, 3, 10, 16]);
    let ins: Vec<(&[usize], DType)> = vec![(&x, DType::BF16), (&w, DType::BF16)];
    // Channels-last: x [1, 16, positions] and w [cout, 16, 27] transposed into scratch 0 and
    // 1, then the conv (`family` in its header) reading them.
    let channels_last = |l: Lowered, (positions, cout): (usize, usize), family: &str| match l {
        Lowered::Launches(mut ls) if ls.len() == 3 => {
            let conv = ls.remove(2);
            assert!(ls[0].kernel.header.contains("transpose") && ls[1].kernel.header.contains("transpose"));
            assert_eq!(ls[0].args, [Arg::Input(0), Arg::Scratch { slot: 0, bytes: 16 * positions * 2 }]);
            assert_eq!(ls[1].args, [Arg::Input(1), Arg::Scratch { slot: 1, bytes: cout * 16 * 27 * 2 }]);
            assert_eq!(&conv.args[..2], [ls[0].args[1], ls[1].args[1]]);
            assert!(conv.kernel.header.starts_with(family), "{}", conv.kernel.header);
            assert!(conv.kernel.header.contains("channels-last"), "{}", conv.kernel.header);
            conv
        }
        other => panic!("{other:?}"),
    };
    let hopper = channels_last(
        lower_with(&op, &ins, &out, DType::BF16, "t", &hopper_chooser).unwrap(),
        (480, 32),
        "conv3d_wgmma ",
    );
    assert!(hopper.kernel.name.ends_with("_wgmma_cl"), "{}", hopper.kernel.name);
    // The small point (64×64): ceil(32/64) × ceil(480/64) tiles, one warpgroup.
    assert_eq!((hopper.grid, hopper.block), (8, 128));
    assert!(try_emit(&hopper.kernel, Target::Sm90a).unwrap().contains("wgmma.mma_async"));
    assert!(try_emit(&hopper.kernel, Target::Sm80).is_err());
    let ampere = channels_last(lower(&op, &ins, &out, DType::BF16, "t").unwrap(), (480, 32), "conv3d_mma_cl ");
    let no_wgmma = lower_with(&op, &ins, &out, DType::BF16, "t", &NoWgmma).unwrap();
    assert_eq!(channels_last(no_wgmma, (480, 32), "conv3d_mma_cl "), ampere);
    let (x10, out10) = ([1usize, 16, 3, 10, 10], [1usize, 32, 3, 10, 10]);
    let ins10: Vec<(&[usize], DType)> = vec![(&x10, DType::BF16), (&w, DType::BF16)];
    // 96 channels (the VAE decoder's full-resolution stage): the positions as M, 64×96,
    // ceil(480/64) tiles of one warpgroup.
    let w96 = [96usize, 16, 3, 3, 3];
    let out96 = [1usize, 96, 3, 10, 16];
    let ins96: Vec<(&[usize], DType)> = vec![(&x, DType::BF16), (&w96, DType::BF16)];
    let c96 = lower_with(&op, &ins96, &out96, DType::BF16, "t", &hopper_chooser).unwrap();
    let c96 = channels_last(c96, (480, 96), "conv3d_wgmma ");
    assert!(c96.kernel.header.contains("M=480 (positions) N=96 (Cout)"), "{}", c96.kernel.header);
    assert_eq!((c96.grid, c96.block), (8, 128));
    assert!(try_emit(&c96.kernel, Target::Sm90a).unwrap().contains("m64n96k16"));
    // On sm_80, conv3d_mma_cl at 128×128, 3 stages (8 warps): ceil(96/128) × ceil(480/128)
    // tiles.
    let a96 = channels_last(lower(&op, &ins96, &out96, DType::BF16, "t").unwrap(), (480, 96), "conv3d_mma_cl ");
    assert!(a96.kernel.header.contains("BM=128 BN=128 BK=32 warps 4x2 stages=3"), "{}", a96.kernel.header);
    assert_eq!((a96.grid, a96.block), (4, 256));
    let narrow = lower_with(&op, &ins10, &out10, DType::BF16, "t", &hopper_chooser).unwrap();
    channels_last(narrow, (300, 32), "conv3d_wgmma ");
    // Cin 4 by 2×3×3: K = 72 is a multiple of 8 but a pixel's channels are not: the gathers.
    let op2 = Op::Conv3d { stride: [1; 3], pad: [[1, 0], [1, 1], [1, 1]], bias: false };
    let (x4, w4) = ([1usize, 4, 3, 10, 16], [32usize, 4, 2, 3, 3]);
    let ins4: Vec<(&[usize], DType)> = vec![(&x4, DType::BF16), (&w4, DType::BF16)];
    let gather = kernel(lower(&op2, &ins4, &out, DType::BF16, "t").unwrap());
    assert!(gather.kernel.header.starts_with("conv3d_mma "), "{}", gather.kernel.header);
    assert!(gather.kernel.header.contains("gathered"), "{}", gather.kernel.header);
    let gather = kernel(lower_with(&op2, &ins4, &out, DType::BF16, "t", &hopper_chooser).unwrap());
    assert!(gather.kernel.header.starts_with("conv3d_wgmma "), "{}", gather.kernel.header);
    assert!(gather.kernel.header.contains("gathered through registers"), "{}", gather.kernel.header);
}

/// sm_90a heuristics with the wgmma families off (the CUDA backend's default).
struct NoWgmma;

impl Chooser for NoWgmma {
    fn pick(&self, _: &TuneProblem<'_>) -> Pick {
        Pick::Heuristic
    }
    fn target(&self) -> Target {
        Target::Sm90a
    }
    fn wgmma(&self) -> bool {
        false
    }
}

/// The heuristic lowering of 16-bit attention on sm_80: the two-m-tile point (128 query rows
/// of 4 warps, Q read from shared memory) for long sequences at head dim 128 with no bias or
/// mask (the DiT's), a one-m-tile point with a mask or for short sequences.
#[test]
fn long_unmasked_attention_lowers_to_two_m_tiles_per_warp() {
    use vidrt_kernels::ptx::lower::lower;
    let kernel = |l: Lowered| match l {
        Lowered::Launches(mut ls) if ls.len() == 1 => ls.remove(0),
        other => panic!("{other:?}"),
    };
    let at = |sq: usize, mask: bool| {
        let (q, kv, m) = ([1usize, sq, 2, 128], [1usize, 300, 2, 128], [1usize, 300]);
        let op = Op::Attention { scale: 0.125, bias: false, mask };
        let mut ins: Vec<(&[usize], DType)> = vec![(&q, DType::BF16), (&kv, DType::BF16), (&kv, DType::BF16)];
        if mask {
            ins.push((&m, DType::BF16));
        }
        kernel(lower(&op, &ins, &q, DType::BF16, "t").unwrap())
    };
    let long = at(1000, false);
    assert!(long.kernel.header.contains("mt=2"), "{}", long.kernel.header);
    // ceil(1000 / 128) query tiles for each of the 2 heads, 4 warps.
    assert_eq!((long.grid, long.block), (16, 128));
    for other in [at(1000, true), at(100, false)] {
        assert!(!other.kernel.header.contains("mt=2"), "{}", other.kernel.header);
    }
}
