//! The flash-attention kernels (`attention_simt` for f32, `attention_mma` for bf16/f16) in the
//! simulator against an f64 host reference, at every parameter point, on shapes whose
//! sequence lengths are not multiples of the tiles, head dims in {4, 5, 6, 8, 16, 24, 32, 64},
//! Dv ≠ D, broadcast biases and key masks (including a batch whose keys are all masked: its
//! rows must be exactly zero, as in the CPU reference). A launch that returns `Ok` made no
//! out-of-bounds or misaligned access (the simulator checks every one).
//!
//! Tolerances (relative L2 error over the whole output):
//! - f32: 1e-5. Everything is f32 (scores, the log₂-domain shift, the running sums); the
//!   simulator's `ex2` is correctly rounded and the hardware's is within 2⁻²²·⁵, so the error
//!   is a few f32 ulps per term.
//! - bf16: 1e-2, f16: 3e-3. The reference uses the rounded inputs exactly; what remains is P
//!   rounded to the input type before P·V (relative 2⁻⁹ for bf16, 2⁻¹² for f16 per element,
//!   averaging down over the keys) and the output's own rounding to bf16/f16 (2⁻⁹ / 2⁻¹²),
//!   which bounds the L2 error at ≈ 2⁻⁹ ≈ 2e-3 (bf16) and ≈ 2.5e-4 (f16); the tolerances
//!   leave a margin of about 5× and 10×.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

use half::{bf16, f16};
use vidrt_ir::DType;
use vidrt_kernels::ptx::builder::Inst;
use vidrt_kernels::ptx::kernels::attention::{
    attention_mma, attention_simt, attention_wgmma, mma_launch_dims, mma_param_space, simt_launch_dims,
    simt_param_space, wgmma_launch_dims, wgmma_param_space, wgmma_unsupported, AttnSpec, MmaAttnParams, SimtParams,
    WgmmaAttnParams,
};
use vidrt_kernels::ptx::sim::{buffer_arg, launch, ArgValue, GlobalMem, LaunchDims, SimError};
use vidrt_kernels::ptx::{emit, Kernel, KernelError, Target};

/// Deterministic splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// One test problem.
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    d: usize,
    dv: usize,
    /// The bias shape, broadcast (right-aligned) to [B, H, Sq, Sk].
    bias: Option<Vec<usize>>,
    /// Keys kept per batch: `keep[b]` = how many of every 4 keys stay (0: all masked).
    mask: Option<Vec<usize>>,
}

/// Right-aligned broadcast strides of `dims` over `[B, H, Sq, Sk]`.
fn bias_strides(dims: &[usize]) -> [usize; 4] {
    let full: Vec<usize> = std::iter::repeat_n(1, 4 - dims.len()).chain(dims.iter().copied()).collect();
    let mut st = [0usize; 4];
    let mut s = 1;
    for i in (0..4).rev() {
        st[i] = if full[i] == 1 { 0 } else { s };
        s *= full[i];
    }
    st
}

fn cases() -> Vec<Case> {
    let c = |b, sq, sk, h, d, dv| Case { b, sq, sk, h, d, dv, bias: None, mask: None };
    vec![
        c(1, 5, 7, 1, 4, 4),
        Case { bias: Some(vec![2, 2, 17, 45]), ..c(2, 17, 45, 2, 8, 8) },
        Case { bias: Some(vec![1, 3, 1, 70]), mask: Some(vec![1]), ..c(1, 33, 70, 3, 16, 16) },
        // Dv ≠ D, a batch with every key masked, a rank-1 bias.
        Case { bias: Some(vec![40]), mask: Some(vec![3, 0]), ..c(2, 9, 40, 2, 24, 8) },
        Case { bias: Some(vec![1, 1, 20, 1]), ..c(1, 20, 33, 1, 32, 24) },
        Case { mask: Some(vec![2]), ..c(1, 19, 50, 1, 64, 64) },
        // Head dims that are not multiples of 8 (mma: plain loads) or 4 (SIMT: element loads),
        // an odd Dv (unpacked stores).
        Case { mask: Some(vec![3]), ..c(1, 18, 21, 2, 6, 5) },
        c(1, 3, 100, 1, 16, 12),
        // Several query tiles at every point; the real models' head dim.
        Case { bias: Some(vec![1, 2, 70, 1]), ..c(1, 70, 20, 2, 16, 16) },
        // Two 128-row query tiles (one with a tail) and no bias or mask: every mma point, at
        // head dims 16 and 128 (a key tail too).
        c(1, 150, 40, 1, 16, 16),
        c(1, 140, 70, 1, 128, 128),
        Case { mask: Some(vec![1]), ..c(1, 40, 45, 1, 128, 128) },
        // More key tiles than any K/V ring has buffers at every point (five 64-key tiles):
        // each ring wraps and refills.
        c(1, 20, 300, 1, 16, 16),
    ]
}

fn round(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

fn encode(dtype: DType, v: &[f32]) -> Vec<u8> {
    match dtype {
        DType::BF16 => v.iter().flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes()).collect(),
        DType::F16 => v.iter().flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes()).collect(),
        DType::F32 => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        DType::I64 => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
    }
}

fn decode(dtype: DType, b: &[u8]) -> Vec<f32> {
    match dtype {
        DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        _ => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// The inputs of a case (rounded to `dtype`) and the f64 reference output.
struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Option<Vec<f32>>,
    mask: Option<Vec<f32>>,
    want: Vec<f64>,
}

fn data(c: &Case, dtype: DType, scale: f64, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let mut gen =
        |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| round(dtype, rng.uniform(lo, hi))).collect() };
    let q = gen(c.b * c.sq * c.h * c.d, -2.0, 2.0);
    let k = gen(c.b * c.sk * c.h * c.d, -2.0, 2.0);
    let v = gen(c.b * c.sk * c.h * c.dv, -1.0, 1.0);
    let bias = c.bias.as_ref().map(|s| gen(s.iter().product(), -2.0, 2.0));
    let mask: Option<Vec<f32>> = c.mask.as_ref().map(|keep| {
        (0..c.b * c.sk).map(|i| if (i % c.sk) % 4 < keep[(i / c.sk) % keep.len()] { 1.0 } else { 0.0 }).collect()
    });
    let bst = c.bias.as_ref().map(|s| bias_strides(s));
    let mut want = vec![0f64; c.b * c.sq * c.h * c.dv];
    for bi in 0..c.b {
        for hi in 0..c.h {
            for i in 0..c.sq {
                let mut s: Vec<Option<f64>> = Vec::with_capacity(c.sk);
                for j in 0..c.sk {
                    if mask.as_ref().is_some_and(|m| m[bi * c.sk + j] == 0.0) {
                        s.push(None);
                        continue;
                    }
                    let dot: f64 = (0..c.d)
                        .map(|e| {
                            f64::from(q[((bi * c.sq + i) * c.h + hi) * c.d + e])
                                * f64::from(k[((bi * c.sk + j) * c.h + hi) * c.d + e])
                        })
                        .sum();
                    let mut x = dot * scale;
                    if let (Some(bv), Some(st)) = (&bias, bst) {
                        x += f64::from(bv[bi * st[0] + hi * st[1] + i * st[2] + j * st[3]]);
                    }
                    s.push(Some(x));
                }
                let mx = s.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
                if mx == f64::NEG_INFINITY {
                    continue; // every key masked: zeros
                }
                let p: Vec<f64> = s.iter().map(|x| x.map_or(0.0, |x| (x - mx).exp())).collect();
                let l: f64 = p.iter().sum();
                for e in 0..c.dv {
                    let o: f64 = (0..c.sk).map(|j| p[j] * f64::from(v[((bi * c.sk + j) * c.h + hi) * c.dv + e])).sum();
                    want[((bi * c.sq + i) * c.h + hi) * c.dv + e] = o / l;
                }
            }
        }
    }
    Data { q, k, v, bias, mask, want }
}

fn spec(c: &Case, scale: f64, mask: Option<DType>) -> AttnSpec {
    AttnSpec {
        batch: c.b,
        sq: c.sq,
        sk: c.sk,
        heads: c.h,
        d: c.d,
        dv: c.dv,
        scale,
        bias: c.bias.as_ref().map(|s| bias_strides(s)),
        mask: c.mask.as_ref().map(|_| mask.unwrap_or(DType::F32)),
    }
}

/// Runs `k` on the case's data; returns the output.
fn run(k: &Kernel, dims: (u32, u32), dt: &Data, dtype: DType, mask_dtype: DType, out_len: usize) -> Vec<f32> {
    try_run(k, dims, dt, (dtype, mask_dtype), out_len).unwrap_or_else(|e| panic!("{}: {e}", k.name))
}

fn try_run(
    k: &Kernel,
    (grid, block): (u32, u32),
    dt: &Data,
    (dtype, mask_dtype): (DType, DType),
    out_len: usize,
) -> Result<Vec<f32>, SimError> {
    let mut mem = GlobalMem::new();
    let mut bufs = vec![
        mem.alloc_with(encode(dtype, &dt.q)),
        mem.alloc_with(encode(dtype, &dt.k)),
        mem.alloc_with(encode(dtype, &dt.v)),
    ];
    if let Some(b) = &dt.bias {
        bufs.push(mem.alloc_with(encode(dtype, b)));
    }
    if let Some(m) = &dt.mask {
        bufs.push(mem.alloc_with(encode(mask_dtype, m)));
    }
    let out = mem.alloc(out_len * dtype.size_bytes());
    bufs.push(out);
    // Pointers, or the kernel's tensor maps of q, k, v (the TMA kernel) for those buffers.
    let args: Vec<ArgValue> =
        bufs.iter().enumerate().map(|(i, &a)| buffer_arg(k, i, a).expect("a buffer parameter")).collect();
    launch(k, LaunchDims { grid, block }, &args, &mut mem)?;
    Ok(decode(dtype, mem.read(out, out_len * dtype.size_bytes()).expect("output")))
}

/// Relative L2 error; also asserts that fully masked rows are exactly zero and nothing is NaN.
fn check(c: &Case, got: &[f32], dt: &Data, what: &str) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(&dt.want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g}");
        let bi = i / (c.sq * c.h * c.dv);
        if c.mask.as_ref().is_some_and(|keep| keep[bi % keep.len()] == 0) {
            assert_eq!(g, 0.0, "{what}: element {i} of a fully masked row");
        }
        num += (f64::from(g) - w).powi(2);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

/// The kernel, or `None` when the point's tiles do not fit shared memory for this head dim
/// (the only refusal allowed); counts the kernels returned.
fn fits(k: Result<Kernel, KernelError>, ran: &mut usize) -> Option<Kernel> {
    match k {
        Ok(k) => {
            *ran += 1;
            Some(k)
        }
        Err(KernelError::Unsupported(why)) if why.contains("shared memory") || why.contains("two m-tiles") => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn simt_matches_the_reference_at_every_point() {
    for (ci, c) in cases().iter().enumerate() {
        let scale = 1.0 / (c.d as f64).sqrt();
        let dt = data(c, DType::F32, scale, 100 + ci as u64);
        // Masks as f32, and once as i64.
        let mask_dtype = if ci == 6 { DType::I64 } else { DType::F32 };
        let mut ran = 0;
        for p in simt_param_space() {
            let s = spec(c, scale, Some(mask_dtype));
            let Some(k) = fits(attention_simt("att_simt", &s, DType::F32, p), &mut ran) else { continue };
            let got = run(&k, simt_launch_dims(&s, p), &dt, DType::F32, mask_dtype, dt.want.len());
            let what = format!("simt {c:?} {p:?}");
            let err = check(c, &got, &dt, &what);
            eprintln!("{what}: rel L2 {err:.2e}");
            assert!(err <= 1e-5, "{what}: rel L2 error {err:e}");
        }
        assert!(ran > 0, "no SIMT point fits {c:?}");
    }
}

fn mma_dtype(dtype: DType, tol: f64) {
    for (ci, c) in cases().iter().enumerate() {
        let scale = 1.0 / (c.d as f64).sqrt();
        let dt = data(c, dtype, scale, 200 + ci as u64);
        let mask_dtype = if ci == 2 { DType::I32 } else { dtype };
        let mut ran = 0;
        for p in mma_param_space() {
            let s = spec(c, scale, Some(mask_dtype));
            let Some(k) = fits(attention_mma("att_mma", &s, dtype, p), &mut ran) else { continue };
            let got = run(&k, mma_launch_dims(&s, p), &dt, dtype, mask_dtype, dt.want.len());
            let what = format!("mma {dtype} {c:?} {p:?}");
            let err = check(c, &got, &dt, &what);
            eprintln!("{what}: rel L2 {err:.2e}");
            assert!(err <= tol, "{what}: rel L2 error {err:e}");
        }
        assert!(ran > 0, "no mma point fits {c:?}");
    }
}

#[test]
fn mma_bf16_matches_the_reference_at_every_point() {
    mma_dtype(DType::BF16, 1e-2);
}

#[test]
fn mma_f16_matches_the_reference_at_every_point() {
    mma_dtype(DType::F16, 3e-3);
}

/// The sm_90a wgmma variant at every point, on every case whose head dims it takes (D and Dv
/// multiples of 8: 8, 16, 24, 32, 64, 128; Dv ≠ D; one and several query tiles; tails in Sq
/// and Sk; biases, masks, a fully masked batch); the others are refused as `Unsupported`
/// with the reason [`wgmma_unsupported`] gives (lowering then takes the mma kernel).
/// Tolerances as the mma variant's (the same roundings: P to the input type, the output).
fn wgmma_dtype(dtype: DType, tol: f64) {
    let mut covered = 0;
    for (ci, c) in cases().iter().enumerate() {
        let scale = 1.0 / (c.d as f64).sqrt();
        let dt = data(c, dtype, scale, 300 + ci as u64);
        let mask_dtype = if ci == 2 { DType::I32 } else { dtype };
        let s = spec(c, scale, Some(mask_dtype));
        if let Some(why) = wgmma_unsupported(&s, dtype) {
            assert!(!c.d.is_multiple_of(8) || !c.dv.is_multiple_of(8), "{c:?}: {why}");
            let e = attention_wgmma("att_wgmma", &s, dtype, wgmma_param_space()[0]);
            assert!(matches!(e, Err(KernelError::Unsupported(_))), "{c:?}: {e:?}");
            continue;
        }
        covered += 1;
        let mut ran = 0;
        for p in wgmma_param_space() {
            let Some(k) = fits(attention_wgmma("att_wgmma", &s, dtype, p), &mut ran) else { continue };
            let got = run(&k, wgmma_launch_dims(&s, p), &dt, dtype, mask_dtype, dt.want.len());
            let what = format!("wgmma {dtype} {c:?} {p:?}");
            let err = check(c, &got, &dt, &what);
            eprintln!("{what}: rel L2 {err:.2e}");
            assert!(err <= tol, "{what}: rel L2 error {err:e}");
        }
        assert_eq!(ran, wgmma_param_space().len(), "every wgmma point fits {c:?}");
    }
    assert!(covered >= 7, "only {covered} cases ran on the wgmma kernel");
}

#[test]
fn wgmma_bf16_matches_the_reference_at_every_point() {
    wgmma_dtype(DType::BF16, 1e-2);
}

#[test]
fn wgmma_f16_matches_the_reference_at_every_point() {
    wgmma_dtype(DType::F16, 3e-3);
}

/// The pipelined (3-stage) schedule's waits are what make it correct: waiting for one wgmma
/// group fewer (`wait_group 2` for 1) lets the softmax read S while its wgmma is in flight,
/// and without the `wait_group 0` before the rescale O is written while P·V accumulates into
/// it; the simulator reports both as reads or writes of a pending wgmma's registers, on a
/// case with five key tiles.
#[test]
fn wgmma_pipeline_without_its_waits_is_caught() {
    let c = cases().last().cloned().unwrap();
    let dtype = DType::BF16;
    let s = spec(&c, 0.25, None);
    let dt = data(&c, dtype, 0.25, 7);
    let pending = |r: Result<Vec<f32>, SimError>, what: &str| match r {
        Err(SimError::AsyncHazard { what: w, .. }) => assert!(w.contains("operand of a pending wgmma"), "{what}: {w}"),
        other => panic!("{what}: {:?}", other.map(|_| "ran")),
    };
    for p in wgmma_param_space().into_iter().filter(|p| p.stages == 3) {
        let k = attention_wgmma("att", &s, dtype, p).expect("generates");
        let dims = wgmma_launch_dims(&s, p);
        let got = try_run(&k, dims, &dt, (dtype, dtype), dt.want.len()).expect("the kernel as generated");
        assert!(check(&c, &got, &dt, "pipelined") <= 1e-2);
        let one = k.insts.iter().position(|i| matches!(i, Inst::WgmmaWait { n: 1 })).expect("a wait_group 1");
        assert_eq!(k.insts.iter().filter(|i| matches!(i, Inst::WgmmaWait { n: 1 })).count(), 1);
        let mut lax = k.clone();
        lax.insts[one] = Inst::WgmmaWait { n: 2 };
        pending(try_run(&lax, dims, &dt, (dtype, dtype), dt.want.len()), &format!("{p:?} with wait_group 2"));
        let zero = one + k.insts[one..].iter().position(|i| matches!(i, Inst::WgmmaWait { n: 0 })).unwrap();
        let mut early = k.clone();
        early.insts.remove(zero);
        let r = try_run(&early, dims, &dt, (dtype, dtype), dt.want.len());
        pending(r, &format!("{p:?} without the loop's wait_group 0"));
    }
}

/// The producer (TMA, warp-specialized) points on the case with five 64-key tiles, so both
/// rings wrap and both parities of every mbarrier are waited on: as generated they match the
/// reference; each synchronisation taken out is reported by the simulator. Without the
/// producer's waits on `empty` it refills stages still in use (a round's arrival before the
/// last round completed, or a copy into bytes a wgmma is reading); without the computing warps' arrivals
/// the producer waits forever; without the tail's wait on `full_v` the last P·V reads bytes
/// whose copy has not landed; without the producer's `setmaxnreg.dec` the computing
/// warpgroups' `.inc` can never be paid; on the ping-pong points, without the second
/// warpgroup's first turn hand-over neither warpgroup ever issues.
#[test]
fn wgmma_producer_points_wait_release_and_rebalance() {
    let c = cases().last().cloned().unwrap();
    let dtype = DType::BF16;
    let s = spec(&c, 0.25, None);
    let dt = data(&c, dtype, 0.25, 11);
    let mut ran = 0;
    for p in wgmma_param_space().into_iter().filter(|p| p.producer) {
        let k = attention_wgmma("att", &s, dtype, p).expect("generates");
        let dims = wgmma_launch_dims(&s, p);
        assert_eq!(dims.1, 128 * (p.wg + 1), "{p:?}");
        let text = emit(&k, Target::Sm90a);
        for want in ["cp.async.bulk.tensor.4d.shared::cluster.global", "mbarrier.try_wait.parity", "mbarrier.arrive"] {
            assert!(text.contains(want), "{p:?}: {want} missing");
        }
        assert!(!text.contains("cp.async.cg"), "{p:?}: every copy is a TMA copy");
        if p.wg == 2 {
            assert_eq!(text.matches("setmaxnreg.dec.sync.aligned.u32 40;").count(), 1, "{p:?}");
            assert_eq!(text.matches("setmaxnreg.inc.sync.aligned.u32 232;").count(), 1, "{p:?}");
            assert!(text.contains(".reqntid 384, 1, 1\n.minnctapersm 1"), "{p:?}");
        } else {
            assert!(!text.contains("setmaxnreg"), "{p:?}");
        }
        let run = |k: &Kernel| try_run(k, dims, &dt, (dtype, dtype), dt.want.len());
        let got = run(&k).unwrap_or_else(|e| panic!("{p:?} as generated: {e}"));
        let err = check(&c, &got, &dt, "producer");
        assert!(err <= 1e-2, "{p:?}: rel L2 error {err:e}");
        ran += 1;

        // The producer's waits on `empty`: every try_wait before the computing warpgroups'
        // first, on `q_full` (the only one with an immediate parity).
        let q_wait = k
            .insts
            .iter()
            .position(|i| matches!(i, Inst::MbarTryWait { parity: vidrt_kernels::ptx::builder::Operand::Int(0), .. }))
            .unwrap();
        let mut eager = k.clone();
        let waits: Vec<usize> = (0..q_wait).filter(|&i| matches!(k.insts[i], Inst::MbarTryWait { .. })).collect();
        assert_eq!(waits.len(), 4, "{p:?}: K and V waits before and in the loop");
        for &w in waits.iter().rev() {
            eager.insts.drain(w..w + 2); // the try_wait and its loop branch
        }
        match run(&eager) {
            Err(SimError::Fault { reason, .. }) => assert!(reason.contains("no pending arrivals"), "{p:?}: {reason}"),
            Err(SimError::AsyncHazard { what, .. }) => assert!(what.contains("pending"), "{p:?}: {what}"),
            other => panic!("{p:?} without the producer's wait on empty: {:?}", other.map(|_| "ran")),
        }
        let mut no_release = k.clone();
        no_release.insts.retain(|i| !matches!(i, Inst::MbarArrive { .. }));
        match run(&no_release) {
            Err(SimError::Deadlock { what, .. }) => assert!(what.contains("arrivals pending"), "{p:?}: {what}"),
            other => panic!("{p:?} without the consumers' arrivals: {:?}", other.map(|_| "ran")),
        }
        let mut blind = k.clone();
        let last = k.insts.iter().rposition(|i| matches!(i, Inst::MbarTryWait { .. })).unwrap();
        blind.insts.drain(last..last + 2);
        match run(&blind) {
            Err(SimError::AsyncHazard { what, .. }) => assert!(what.contains("wgmma"), "{p:?}: {what}"),
            other => panic!("{p:?} without the tail's wait on full_v: {:?}", other.map(|_| "ran")),
        }
        if p.pingpong {
            for want in ["bar.sync 1, 256;", "bar.sync 2, 256;", "bar.arrive 1, 256;", "bar.arrive 2, 256;"] {
                assert!(text.contains(want), "{p:?}: {want} missing");
            }
            // Without warpgroup 1's first arrival neither warpgroup ever gets a turn.
            let first = k.insts.iter().position(|i| matches!(i, Inst::BarNamed { wait: false, .. })).unwrap();
            let mut stuck = k.clone();
            stuck.insts.remove(first);
            match run(&stuck) {
                Err(SimError::Deadlock { what, .. }) => assert!(what.contains("named barrier 1"), "{p:?}: {what}"),
                other => panic!("{p:?} without the first turn: {:?}", other.map(|_| "ran")),
            }
        } else {
            assert!(!k.insts.iter().any(|i| matches!(i, Inst::BarNamed { .. })), "{p:?}");
        }
        if p.wg == 2 {
            let mut no_dec = k.clone();
            no_dec.insts.retain(|i| !matches!(i, Inst::SetMaxNReg { inc: false, .. }));
            match run(&no_dec) {
                Err(SimError::Deadlock { what, .. }) => assert!(what.contains("setmaxnreg.inc"), "{p:?}: {what}"),
                other => panic!("{p:?} without setmaxnreg.dec: {:?}", other.map(|_| "ran")),
            }
        }
    }
    assert!(ran >= 6, "only {ran} producer points");
}

#[test]
fn wgmma_kernel_uses_the_intended_instructions_and_refuses_sm80() {
    let c = Case { bias: Some(vec![40]), mask: Some(vec![1]), ..cases()[3].clone() };
    let s = spec(&c, 0.125, None);
    for p in wgmma_param_space() {
        let k = attention_wgmma("att", &s, DType::BF16, p).expect("generates");
        let text = emit(&k, Target::Sm90a);
        // The TMA stages hold whole 64-column panels: P·V's N is Dv rounded up to 64.
        let n = if p.producer { c.dv.div_ceil(64) * 64 } else { c.dv };
        let copy = if p.producer { "cp.async.bulk.tensor.4d" } else { "cp.async.cg.shared.global" };
        for want in [
            format!("wgmma.mma_async.sync.aligned.m64n{}k16.f32.bf16.bf16", p.bkv),
            // P·V: A from four registers, B MN-major (imm-trans-b 1).
            format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16"),
            "wgmma.fence.sync.aligned;".into(),
            "fence.proxy.async.shared::cta;".into(),
            copy.into(),
            "cvt.rn.bf16x2.f32".into(),
            "ex2.approx.ftz.f32".into(),
        ] {
            assert!(text.contains(&want), "{p:?}: {want} missing");
        }
        let rs = text.lines().find(|l| l.contains(&format!("m64n{n}k16")) && l.contains("}, {%r")).expect("register A");
        assert!(rs.trim_end().ends_with(", 1, 1, 1;"), "{rs}");
        assert!(!text.contains("ldmatrix"), "{p:?}: wgmma reads shared memory itself");
        assert!(vidrt_kernels::ptx::try_emit(&k, Target::Sm80).is_err(), "{p:?}: emitted for sm_80");
    }
    for bad in [
        WgmmaAttnParams { wg: 3, bkv: 64, stages: 2, producer: false, pingpong: false },
        WgmmaAttnParams { wg: 1, bkv: 24, stages: 2, producer: false, pingpong: false },
        WgmmaAttnParams { wg: 1, bkv: 256, stages: 2, producer: false, pingpong: false },
        WgmmaAttnParams { wg: 1, bkv: 64, stages: 4, producer: false, pingpong: false },
        WgmmaAttnParams { wg: 2, bkv: 64, stages: 1, producer: true, pingpong: false },
        WgmmaAttnParams { wg: 1, bkv: 64, stages: 2, producer: true, pingpong: true },
        WgmmaAttnParams { wg: 2, bkv: 64, stages: 3, producer: false, pingpong: true },
    ] {
        assert!(matches!(attention_wgmma("x", &s, DType::BF16, bad), Err(KernelError::Invalid(_))), "{bad:?}");
    }
    let p = wgmma_param_space()[0];
    assert!(matches!(attention_wgmma("x", &s, DType::F32, p), Err(KernelError::Unsupported(_))));
    let wide = AttnSpec { d: 512, dv: 512, ..s.clone() };
    assert!(wgmma_unsupported(&wide, DType::BF16).is_some());
    let big = AttnSpec { d: 1024, dv: 256, ..s };
    assert!(matches!(attention_wgmma("x", &big, DType::BF16, p), Err(KernelError::Unsupported(_))));
}

#[test]
fn kernels_use_the_intended_instructions() {
    let c = Case { bias: Some(vec![40]), mask: Some(vec![1]), ..cases()[3].clone() };
    let s = spec(&c, 0.125, None);
    // Two m-tiles per warp take no bias or mask: that point without them.
    let plain = AttnSpec { bias: None, mask: None, ..s.clone() };
    for p in mma_param_space() {
        let refused = matches!(attention_mma("att", &s, DType::BF16, p), Err(KernelError::Unsupported(_)));
        assert_eq!(refused, p.mt == 2, "{p:?}");
        let s = if p.mt == 2 { &plain } else { &s };
        let text = emit(&attention_mma("att", s, DType::BF16, p).expect("generates"), Target::Sm80);
        for want in [
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
            "cp.async.cg.shared.global",
            "cvt.rn.bf16x2.f32",
            "ex2.approx.ftz.f32",
        ] {
            assert!(text.contains(want), "{p:?}: {want} missing");
        }
    }
    // Unaligned head dims: no cp.async.
    let s6 = spec(&cases()[6], 0.5, None);
    let text = emit(&attention_mma("att", &s6, DType::F16, mma_param_space()[0]).expect("generates"), Target::Sm80);
    assert!(!text.contains("cp.async.cg") && text.contains("f32.f16.f16.f32"));
    let text = emit(&attention_simt("att", &s, DType::F32, simt_param_space()[0]).expect("generates"), Target::Sm80);
    assert!(text.contains("ld.shared.v4.f32") && text.contains("ex2.approx.ftz.f32"));
}

#[test]
fn bad_points_and_requests_are_typed_errors() {
    let s = spec(&cases()[1], 0.3, None);
    for p in [
        SimtParams { warps: 0, rows: 1, bk: 32 },
        SimtParams { warps: 4, rows: 0, bk: 32 },
        SimtParams { warps: 4, rows: 1, bk: 48 },
    ] {
        assert!(matches!(p.check(), Err(KernelError::Invalid(_))), "{p:?}");
        assert!(matches!(attention_simt("x", &s, DType::F32, p), Err(KernelError::Invalid(_))), "{p:?}");
    }
    for p in [
        MmaAttnParams { warps: 0, bkv: 32, stages: 2, mt: 1 },
        MmaAttnParams { warps: 4, bkv: 24, stages: 2, mt: 1 },
        MmaAttnParams { warps: 4, bkv: 32, stages: 3, mt: 1 },
        MmaAttnParams { warps: 4, bkv: 32, stages: 2, mt: 3 },
    ] {
        assert!(matches!(p.check(), Err(KernelError::Invalid(_))), "{p:?}");
        assert!(matches!(attention_mma("x", &s, DType::BF16, p), Err(KernelError::Invalid(_))), "{p:?}");
    }
    for p in simt_param_space() {
        p.check().expect("listed points are valid");
    }
    for p in mma_param_space() {
        p.check().expect("listed points are valid");
    }
    let mp = mma_param_space()[0];
    assert!(matches!(attention_mma("x", &s, DType::F32, mp), Err(KernelError::Unsupported(_))));
    assert!(matches!(attention_simt("x", &s, DType::BF16, simt_param_space()[0]), Err(KernelError::Unsupported(_))));
    // Tiles that do not fit the largest target's shared memory (227 KiB) for a large head dim.
    let big = AttnSpec { d: 1024, dv: 1024, ..s.clone() };
    assert!(matches!(attention_mma("x", &big, DType::BF16, mp), Err(KernelError::Unsupported(_))));
    let empty = AttnSpec { sk: 0, ..s };
    assert!(matches!(attention_mma("x", &empty, DType::BF16, mp), Err(KernelError::Invalid(_))));
}

#[test]
fn the_lowering_picks_the_variant_by_dtype() {
    use vidrt_ir::Op;
    use vidrt_kernels::ptx::lower::{lower, Arg, Lowered};
    let op = Op::Attention { scale: 0.25, bias: true, mask: true };
    let (q, k, v, bias, mask) = ([2usize, 9, 3, 16], [2usize, 40, 3, 16], [2usize, 40, 3, 8], [40usize], [2usize, 40]);
    let out = [2usize, 9, 3, 8];
    for (dtype, family) in [(DType::F32, "simt"), (DType::BF16, "mma"), (DType::F16, "mma")] {
        let ins: Vec<(&[usize], DType)> =
            vec![(&q, dtype), (&k, dtype), (&v, dtype), (&bias, dtype), (&mask, DType::I64)];
        let Lowered::Launches(l) = lower(&op, &ins, &out, dtype, "t").expect("lowers") else { panic!("not launches") };
        assert_eq!(l.len(), 1);
        let text = emit(&l[0].kernel, Target::Sm80);
        assert!(text.contains(&format!("attention_flash {family}")), "{dtype}: {}", l[0].kernel.header);
        let want: Vec<Arg> = (0..5).map(Arg::Input).chain([Arg::Output]).collect();
        assert_eq!(l[0].args, want);
        assert_eq!(l[0].kernel.params.len(), 6);
    }
    let ins: Vec<(&[usize], DType)> =
        vec![(&q, DType::I32), (&k, DType::I32), (&v, DType::I32), (&bias, DType::I32), (&mask, DType::I32)];
    assert!(matches!(lower(&op, &ins, &out, DType::I32, "t"), Err(KernelError::Unsupported(_))));
    // A bias of another dtype than q is refused, not misread.
    let ins: Vec<(&[usize], DType)> =
        vec![(&q, DType::BF16), (&k, DType::BF16), (&v, DType::BF16), (&bias, DType::F32), (&mask, DType::BF16)];
    assert!(matches!(lower(&op, &ins, &out, DType::BF16, "t"), Err(KernelError::Unsupported(_))));
}
