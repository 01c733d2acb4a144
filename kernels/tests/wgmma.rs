//! The sm_90a warpgroup instructions in the simulator: one `wgmma.mma_async` m64nNk16 on
//! known matrices against a host product, for bf16 and f16, several N, `scale-d` true and
//! false, both operands K-major in shared memory through descriptors in the no-swizzle
//! (core-matrix) mode with different LBO/SBO arrangements and in the 128-byte swizzle mode;
//! A from registers (the m64nNk16 A fragment) and B MN-major (imm-trans-b 1, no swizzle);
//! the hazards the simulator reports (missing `fence.proxy.async`, missing `wgmma.fence`,
//! touching an accumulator or writing an operand's shared bytes (`st.shared`, `cp.async`)
//! before `wgmma.wait_group`, a
//! warpgroup that is not all at the same instruction); and the emitter's refusal of these
//! instructions for sm_80.
//!
//! The host side writes the layouts out from the PTX ISA independently of the simulator's
//! code: the accumulator fragment of m64nNk16 ("Register Fragments", Figure "WGMMA .m64nNk16
//! register fragment layout for accumulator matrix D": thread t = 32·w + l holds in d[i]
//! element (16w + l/4 + 8·((i/2)%2), 8·(i/4) + 2·(l%4) + i%2)), the no-swizzle K-major
//! layout as 8×16-byte core matrices whose K neighbours are LBO apart and whose M/N
//! neighbours are SBO apart, the MN-major one as the ISA's canonical
//! `((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))` (core matrices of 8 k-rows of 8 consecutive N
//! elements), the register A fragment (Figure "WGMMA .m64nNk16 register fragment layout for
//! matrix A": warp w holds rows 16w..16w+16 as `mma.m16n8k16` holds its A), and the 128-byte swizzle as 128-byte rows whose 16-byte chunk j
//! of row r sits at chunk j XOR (r % 8) within each 1024-byte group of 8 rows.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

mod common;

use common::{round, Rng};

use half::{bf16, f16};
use vidrt_ir::DType;
use vidrt_kernels::ptx::builder::{
    BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, ParamTy, Reg, Space, Special, Ty, WgmmaA,
};
use vidrt_kernels::ptx::sim::{launch, ArgValue, GlobalMem, LaunchDims, SimError};
use vidrt_kernels::ptx::{emit, try_emit, Target};

fn imm(v: u32) -> Operand {
    Operand::Int(i64::from(v))
}

/// The (row, col) of accumulator register `i` of warpgroup thread `t` (from the ISA figure).
fn d_pos(t: usize, i: usize) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    (16 * w + l / 4 + 8 * ((i / 2) % 2), 8 * (i / 4) + 2 * (l % 4) + i % 2)
}

/// How an operand (R rows × 16 k) sits in shared memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// No swizzle: core matrix (row block i, k block j) at `base + i·sbo + j·lbo`.
    Interleave { base: usize, lbo: usize, sbo: usize },
    /// No swizzle, MN-major (read with imm-trans-b 1): the ISA's canonical
    /// `((T,1,m),(8,k)) : ((1,T,SBO),(1T,LBO))`, T = 8: a core matrix holds 8 k-rows of 16
    /// bytes, each 8 consecutive rows (N) of the operand; MN blocks `sbo` apart, K blocks `lbo`.
    InterleaveMn { base: usize, lbo: usize, sbo: usize },
    /// 128-byte swizzle of a tile 64 k wide, 8-row groups `sbo` apart from `base` (1024-byte
    /// aligned); the wgmma reads k columns `16·kstep .. 16·kstep + 16`.
    Swizzle128 { base: usize, sbo: usize, kstep: usize },
    /// 128-byte swizzle, MN-major (imm-trans-b 1): what a 128-byte-swizzled TMA copy writes
    /// of a row-major `[k, n]` tile in panels 64 n wide (a V tile of flash attention): k-row
    /// kk of panel n / 64 at `base + (n / 64)·lbo + 128·kk`, its 16-byte chunk j at chunk
    /// j XOR (kk % 8); the wgmma reads k-rows `16·kstep .. 16·kstep + 16`.
    Swizzle128Mn { base: usize, lbo: usize, kstep: usize },
}

impl Layout {
    /// The byte offset of element (r, k), k in 0..16 of the operand the wgmma reads.
    fn offset(self, r: usize, k: usize) -> usize {
        match self {
            Layout::Interleave { base, lbo, sbo } => base + (r / 8) * sbo + (k / 8) * lbo + (r % 8) * 16 + (k % 8) * 2,
            Layout::InterleaveMn { base, lbo, sbo } => {
                base + (r / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (r % 8) * 2
            }
            Layout::Swizzle128 { base, sbo, kstep } => {
                let kk = 16 * kstep + k;
                base + (r / 8) * sbo + (r % 8) * 128 + (((kk / 8) ^ (r % 8)) * 16) + (kk % 8) * 2
            }
            Layout::Swizzle128Mn { base, lbo, kstep } => {
                let kk = 16 * kstep + k;
                base + (r / 64) * lbo + kk * 128 + ((((r % 64) / 8) ^ (kk % 8)) * 16) + (r % 8) * 2
            }
        }
    }

    /// The matrix descriptor (ISA bit layout: start 0–13, LBO 16–29, SBO 32–45, swizzle 62–63).
    fn descriptor(self) -> u64 {
        let enc = |x: usize| ((x as u64) & 0x3FFFF) >> 4;
        match self {
            Layout::Interleave { base, lbo, sbo } | Layout::InterleaveMn { base, lbo, sbo } => {
                enc(base) | (enc(lbo) << 16) | (enc(sbo) << 32)
            }
            // The k step moves the start 32 bytes per 16 k inside the swizzled rows (LBO unused:
            // 1, as CUTLASS sets it).
            Layout::Swizzle128 { base, sbo, kstep } => {
                enc(base + 32 * kstep) | (1 << 16) | (enc(sbo) << 32) | (1u64 << 62)
            }
            // MN-major: 16 k-rows are two 1024-byte atoms (SBO 1024 between 8-row groups),
            // LBO between the 64-wide panels (CUTLASS's `make_gmma_desc` for Major::MN B128).
            Layout::Swizzle128Mn { base, lbo, kstep } => {
                enc(base + 2048 * kstep) | (enc(lbo) << 16) | (enc(1024) << 32) | (1u64 << 62)
            }
        }
    }
}

fn bits(dtype: DType, x: f32) -> u16 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_bits(),
        _ => bf16::from_f32(x).to_bits(),
    }
}

/// The operand forms of the test's `wgmma.mma_async`.
#[derive(Clone, Copy, Debug, Default)]
struct Form {
    /// A from four b32 registers per thread (loaded from the `afrag` parameter) instead of
    /// the A descriptor.
    a_regs: bool,
    /// B read MN-major (imm-trans-b 1).
    trans_b: bool,
}

/// The (row, k) of the low half of A fragment register `j` of warpgroup thread `t` (ISA
/// figure "WGMMA .m64nNk16 register fragment layout for matrix A": warp w's rows
/// 16w..16w+16, lane l = 4g + q holding (g, 2q..2q+1), (g+8, 2q..), (g, 2q+8..), (g+8, 2q+8..)
/// in a0a1, a2a3, a4a5, a6a7); the high half is (row, k + 1).
fn a_pos(t: usize, j: usize) -> (usize, usize) {
    let (w, l) = (t / 32, t % 32);
    (16 * w + l / 4 + 8 * (j % 2), 2 * (l % 4) + 8 * (j / 2))
}

/// What a test kernel leaves out or adds (each a bug the simulator must catch).
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    no_proxy_fence: bool,
    no_wgmma_fence: bool,
    /// Reads an accumulator register between the issue and the wait.
    read_accumulator_early: bool,
    /// Stores into the A operand's first bytes between the issue and the wait.
    store_operand_early: bool,
    /// Issues a `cp.async` into the B operand's first bytes between the issue and the wait.
    copy_operand_early: bool,
    /// Threads 64..127 branch around the `wgmma.mma_async`.
    skip_half: bool,
    /// Rewrites an A fragment register after the `wgmma.fence` (register A only).
    write_a_after_fence: bool,
    /// Reads an A fragment register between the issue and the wait (register A only).
    read_a_early: bool,
}

/// One warpgroup: copies the shared image (`image` bytes, a multiple of 2048) from global,
/// `fence.proxy.async`, `bar.sync`, loads C (thread t's `n/2` values at `c[t·n/2..]`),
/// `wgmma.fence`, one `wgmma.mma_async` with the given descriptors (A from registers, thread
/// t's four at `afrag[4t..]`, when `form.a_regs`), commit, wait 0, and stores D the same way
/// to `out`. Parameters: image, c, afrag, out.
fn single_wgmma(
    ab: Ty,
    n: u32,
    image: usize,
    (a_desc, b_desc): (u64, u64),
    scale_d: bool,
    (form, f): (Form, Faults),
) -> Kernel {
    let mut b = KernelBuilder::new("wgmma_one", "one wgmma.mma_async");
    b.block(128);
    let img = b.param(ParamTy::Ptr);
    let c = b.param(ParamTy::Ptr);
    let afrag = b.param(ParamTy::Ptr);
    let out = b.param(ParamTy::Ptr);
    // 1024-byte aligned: the swizzled layouts' 8-row atoms start at 1024-byte boundaries.
    let smem = b.shared_aligned(image as u32, 1024);
    let tid = b.special(Special::TidX);
    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(smem));
    for i in 0..(image / 16 / 128) as u32 {
        let chunk = b.bin(BinOp::Add, Ty::U32, tid, imm(128 * i));
        let g = b.addr(img, chunk, 16);
        let v = b.ld_vec(Space::Global, Ty::U32, g, 4);
        let s = b.fma(Ty::U32, chunk, imm(16), base);
        b.st_vec(Space::Shared, s, v);
    }
    if !f.no_proxy_fence {
        b.fence_proxy_async();
    }
    b.bar_sync();
    let half = n / 2;
    let c0 = b.bin(BinOp::Mul, Ty::U32, tid, imm(half));
    let acc: Vec<Reg> = (0..half)
        .map(|i| {
            let idx = b.bin(BinOp::Add, Ty::U32, c0, imm(i));
            let ad = b.addr(c, idx, 4);
            b.ld(Space::Global, Ty::F32, ad)
        })
        .collect();
    // The layouts' offsets are from the image's start: add its shared address (>> 4) to both
    // descriptors' start fields.
    let at = b.bin(BinOp::Shr, Ty::U32, base, imm(4));
    let at = b.cvt(Ty::U64, at);
    let da = b.bin(BinOp::Add, Ty::U64, at, Operand::Int(a_desc as i64));
    let db = b.bin(BinOp::Add, Ty::U64, at, Operand::Int(b_desc as i64));
    let fa: [Reg; 4] = [0u32, 1, 2, 3].map(|j| {
        let i = b.fma(Ty::U32, tid, imm(4), imm(j));
        let ad = b.addr(afrag, i, 4);
        b.ld(Space::Global, Ty::U32, ad)
    });
    let flag = b.imm_u32(u32::from(scale_d));
    let p = b.setp(Cmp::Ne, flag, imm(0));
    if !f.no_wgmma_fence {
        b.wgmma_fence();
    }
    if f.write_a_after_fence {
        b.push(Inst::Bin { op: BinOp::Xor, dst: fa[1], a: Operand::Reg(fa[1]), b: imm(1) });
    }
    let skip = b.label();
    if f.skip_half {
        let hi = b.setp(Cmp::Ge, tid, imm(64));
        b.bra_if(skip, hi, false);
    }
    if form.a_regs {
        b.wgmma_rs(ab, &acc, fa, db, p, form.trans_b);
    } else {
        b.push(Inst::Wgmma {
            ab,
            n,
            d: acc.clone(),
            a: WgmmaA::Desc(da),
            b_desc: db,
            scale_d: p,
            trans_b: form.trans_b,
        });
    }
    b.place(skip);
    if f.read_accumulator_early {
        b.bin(BinOp::Add, Ty::F32, acc[0], acc[0]);
    }
    if f.read_a_early {
        b.bin(BinOp::Add, Ty::U32, fa[2], imm(0));
    }
    if f.store_operand_early {
        let z = b.imm_u32(0);
        b.st(Space::Shared, base, z);
    }
    if f.copy_operand_early {
        let at = b.bin(BinOp::Add, Ty::U32, base, imm(2048));
        b.cp_async(vidrt_kernels::ptx::builder::CpCache::Cg, at, img, 16, None);
        b.cp_async_wait_all();
    }
    b.wgmma_commit();
    b.wgmma_wait(0);
    for (i, &r) in acc.iter().enumerate() {
        let idx = b.bin(BinOp::Add, Ty::U32, c0, imm(i as u32));
        let ad = b.addr(out, idx, 4);
        b.st(Space::Global, ad, r);
    }
    b.finish()
}

struct Run {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    got: Result<Vec<f32>, SimError>,
}

/// Fills A (64×16) and B (n×16) with seeded values placed by `la`/`lb` in an image of
/// `image` bytes (the rest NaN; with `form.a_regs` A goes into the fragment buffer instead
/// and `la` is unused), C with seeded values, and runs [`single_wgmma`].
#[allow(clippy::too_many_arguments)]
fn run(
    dtype: DType,
    n: u32,
    (la, lb): (Layout, Layout),
    image: usize,
    scale_d: bool,
    (form, f): (Form, Faults),
    seed: u64,
) -> Run {
    let ab = if dtype == DType::F16 { Ty::F16 } else { Ty::BF16 };
    let n = n as usize;
    let mut rng = Rng(seed);
    let a: Vec<f32> = (0..64 * 16).map(|_| round(dtype, rng.uniform())).collect();
    let bm: Vec<f32> = (0..n * 16).map(|_| round(dtype, rng.uniform())).collect();
    let cm: Vec<f32> = (0..64 * n).map(|_| rng.uniform()).collect();
    let mut img = vec![0xFFu8; image];
    let mut put = |off: usize, v: f32| {
        assert!(img[off] == 0xFF && img[off + 1] == 0xFF, "layouts overlap at {off}");
        img[off..off + 2].copy_from_slice(&bits(dtype, v).to_le_bytes());
    };
    if !form.a_regs {
        for r in 0..64 {
            for k in 0..16 {
                put(la.offset(r, k), a[r * 16 + k]);
            }
        }
    }
    let mut frag = vec![0u32; 128 * 4];
    for t in 0..128 {
        for j in 0..4 {
            let (row, k) = a_pos(t, j);
            let lo = u32::from(bits(dtype, a[row * 16 + k]));
            let hi = u32::from(bits(dtype, a[row * 16 + k + 1]));
            frag[4 * t + j] = lo | (hi << 16);
        }
    }
    for r in 0..n {
        for k in 0..16 {
            put(lb.offset(r, k), bm[r * 16 + k]);
        }
    }
    let half = n / 2;
    let mut cbuf = vec![0f32; 128 * half];
    for t in 0..128 {
        for i in 0..half {
            let (row, col) = d_pos(t, i);
            cbuf[t * half + i] = cm[row * n + col];
        }
    }
    let k = single_wgmma(ab, n as u32, image, (la.descriptor(), lb.descriptor()), scale_d, (form, f));
    let mut mem = GlobalMem::new();
    let pimg = mem.alloc_with(img);
    let pc = mem.alloc_with(cbuf.iter().flat_map(|x| x.to_le_bytes()).collect());
    let pf = mem.alloc_with(frag.iter().flat_map(|x| x.to_le_bytes()).collect());
    let out = mem.alloc(128 * half * 4);
    let args = [ArgValue::Ptr(pimg), ArgValue::Ptr(pc), ArgValue::Ptr(pf), ArgValue::Ptr(out)];
    let got = launch(&k, LaunchDims { grid: 1, block: 128 }, &args, &mut mem).map(|()| {
        let raw = mem.read(out, 128 * half * 4).expect("in bounds");
        raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    });
    Run { a, b: bm, c: cm, got }
}

/// Checks every thread's every accumulator register against the host product.
fn check(r: &Run, n: usize, scale_d: bool, what: &str) {
    let got = r.got.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
    let half = n / 2;
    for t in 0..128 {
        for i in 0..half {
            let (row, col) = d_pos(t, i);
            let mut want = if scale_d { f64::from(r.c[row * n + col]) } else { 0.0 };
            let mut mag = want.abs();
            for k in 0..16 {
                let p = f64::from(r.a[row * 16 + k]) * f64::from(r.b[col * 16 + k]);
                want += p;
                mag += p.abs();
            }
            let g = f64::from(got[t * half + i]);
            let tol = 18.0 * 2f64.powi(-24) * mag + 1e-30;
            assert!((g - want).abs() <= tol, "{what}: thread {t} d[{i}] = D({row}, {col}) = {g}, want {want}");
        }
    }
}

/// No swizzle, three arrangements of the core matrices: K neighbours after all row blocks
/// (LBO large, SBO 128), row blocks after both K blocks (LBO 128, SBO 256), and row blocks
/// with a gap between them (SBO 384: the gap is NaN and must not be read); every N kind.
#[test]
fn one_wgmma_no_swizzle_matches_the_host_product() {
    for dtype in [DType::BF16, DType::F16] {
        for n in [8u32, 64, 256] {
            let nb = n as usize / 8;
            // A: 64 rows = 8 row blocks; B after A at 2048 (or at 3072 past the padded A).
            let arrangements = [
                (
                    Layout::Interleave { base: 0, lbo: 8 * 128, sbo: 128 },
                    Layout::Interleave { base: 2048, lbo: nb * 128, sbo: 128 },
                ),
                (
                    Layout::Interleave { base: 0, lbo: 128, sbo: 256 },
                    Layout::Interleave { base: 2048, lbo: 128, sbo: 256 },
                ),
                (
                    Layout::Interleave { base: 0, lbo: 128, sbo: 384 },
                    Layout::Interleave { base: 3072, lbo: 128, sbo: 384 },
                ),
            ];
            for (j, &(la, lb)) in arrangements.iter().enumerate() {
                let image = (3072 + nb * 384).div_ceil(2048) * 2048;
                for scale_d in [true, false] {
                    let what = format!("{dtype} n={n} arrangement {j} scale_d={scale_d}");
                    let r = run(dtype, n, (la, lb), image, scale_d, (Form::default(), Faults::default()), 7 + j as u64);
                    check(&r, n as usize, scale_d, &what);
                }
            }
        }
    }
}

/// 128-byte swizzle: A (64 rows) and B (n rows) as 64-k-wide swizzled tiles (8 rows per
/// 1024 bytes), read at k steps 0 and 2 (the descriptor's start 64 bytes into the rows).
#[test]
fn one_wgmma_128_byte_swizzle_matches_the_host_product() {
    for dtype in [DType::BF16, DType::F16] {
        for n in [16u32, 128] {
            for kstep in [0, 2] {
                let la = Layout::Swizzle128 { base: 0, sbo: 1024, kstep };
                let lb = Layout::Swizzle128 { base: 8 * 1024, sbo: 1024, kstep };
                let image = 8 * 1024 + n as usize / 8 * 1024;
                let what = format!("{dtype} n={n} kstep {kstep}");
                let r = run(dtype, n, (la, lb), image, true, (Form::default(), Faults::default()), 40 + kstep as u64);
                check(&r, n as usize, true, &what);
            }
        }
    }
}

fn hazard(f: Faults) -> SimError {
    hazard_in(Form::default(), f)
}

fn hazard_in(form: Form, f: Faults) -> SimError {
    let la = Layout::Interleave { base: 0, lbo: 1024, sbo: 128 };
    let lb = Layout::Interleave { base: 2048, lbo: 1024, sbo: 128 };
    let r = run(DType::BF16, 64, (la, lb), 4096, true, (form, f), 3);
    match r.got {
        Err(e) => e,
        Ok(_) => panic!("{f:?}: the simulator accepted the kernel"),
    }
}

#[test]
fn wgmma_hazards_are_caught() {
    let ok = {
        let la = Layout::Interleave { base: 0, lbo: 1024, sbo: 128 };
        let lb = Layout::Interleave { base: 2048, lbo: 1024, sbo: 128 };
        run(DType::BF16, 64, (la, lb), 4096, true, (Form::default(), Faults::default()), 3)
    };
    check(&ok, 64, true, "the kernel without faults");
    let cases: [(Faults, &str); 5] = [
        (Faults { no_proxy_fence: true, ..Faults::default() }, "fence.proxy.async"),
        (Faults { no_wgmma_fence: true, ..Faults::default() }, "wgmma.fence"),
        (Faults { read_accumulator_early: true, ..Faults::default() }, "operand of a pending wgmma"),
        (Faults { store_operand_early: true, ..Faults::default() }, "st.shared"),
        (Faults { copy_operand_early: true, ..Faults::default() }, "cp.async of 16 bytes"),
    ];
    for (f, needle) in cases {
        match hazard(f) {
            SimError::AsyncHazard { what, .. } => assert!(what.contains(needle), "{f:?}: {what}"),
            other => panic!("{f:?}: {other:?}"),
        }
    }
    match hazard(Faults { skip_half: true, ..Faults::default() }) {
        SimError::Divergence { what, .. } => assert!(what.contains("warpgroup 0"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// A from registers (the ISA's m64nNk16 A fragment) with B K-major and MN-major, and a
/// descriptor A with an MN-major B (no swizzle), against the host product: bf16 and f16,
/// N = 8, 64, 256, two MN-major arrangements (K blocks after all N blocks, and N blocks
/// after both K blocks with a NaN gap between them that must not be read).
#[test]
fn register_a_and_mn_major_b_match_the_host_product() {
    let la = Layout::Interleave { base: 0, lbo: 8 * 128, sbo: 128 };
    for dtype in [DType::BF16, DType::F16] {
        for n in [8u32, 64, 256] {
            let nb = n as usize / 8;
            let bs = [
                Layout::Interleave { base: 2048, lbo: nb * 128, sbo: 128 },
                Layout::InterleaveMn { base: 2048, lbo: 128, sbo: 256 },
                Layout::InterleaveMn { base: 2048, lbo: nb * 128, sbo: 128 },
                Layout::InterleaveMn { base: 2048, lbo: 128, sbo: 384 },
            ];
            let image = (2048 + nb * 384).div_ceil(2048) * 2048;
            for (j, &lb) in bs.iter().enumerate() {
                let trans_b = matches!(lb, Layout::InterleaveMn { .. });
                for a_regs in [true, false] {
                    if !a_regs && !trans_b {
                        continue; // the descriptor K-major form: the tests above
                    }
                    for scale_d in [true, false] {
                        let form = Form { a_regs, trans_b };
                        let what = format!("{dtype} n={n} {form:?} B {lb:?} scale_d={scale_d}");
                        let r = run(dtype, n, (la, lb), image, scale_d, (form, Faults::default()), 60 + j as u64);
                        check(&r, n as usize, scale_d, &what);
                    }
                }
            }
        }
    }
    // The MN-major layout is not the K-major one read differently: the same image read
    // K-major gives another product.
    let lb = Layout::InterleaveMn { base: 2048, lbo: 128, sbo: 256 };
    let form = Form { a_regs: true, trans_b: true };
    let r = run(DType::BF16, 64, (la, lb), 4096, true, (form, Faults::default()), 9);
    let wrong = run(DType::BF16, 64, (la, lb), 4096, true, (Form { trans_b: false, ..form }, Faults::default()), 9);
    check(&r, 64, true, "MN-major");
    assert_ne!(r.got.as_ref().unwrap(), wrong.got.as_ref().unwrap());
}

/// B MN-major with the 128-byte swizzle (the V tiles of the TMA attention kernel) against the
/// host product: register and descriptor A, bf16 and f16, N = 64, 128, 256 (one to four
/// 64-wide panels LBO apart) at both k-steps of a 32-row tile (the rest of the image is NaN,
/// so a wrong chunk or panel shows); a start address off the 1024-byte pattern is refused.
#[test]
fn swizzled_mn_major_b_matches_the_host_product() {
    let la = Layout::Interleave { base: 0, lbo: 8 * 128, sbo: 128 };
    for dtype in [DType::BF16, DType::F16] {
        for n in [64u32, 128, 256] {
            for kstep in [0, 1] {
                let lb = Layout::Swizzle128Mn { base: 2048, lbo: 32 * 128, kstep };
                let image = 2048 + 4 * 32 * 128;
                for a_regs in [true, false] {
                    let form = Form { a_regs, trans_b: true };
                    let what = format!("{dtype} n={n} {form:?} B {lb:?}");
                    let r = run(
                        dtype,
                        n,
                        (la, lb),
                        image,
                        true,
                        (form, Faults::default()),
                        80 + u64::from(n) + kstep as u64,
                    );
                    check(&r, n as usize, true, &what);
                }
            }
        }
    }
    let form = Form { a_regs: true, trans_b: true };
    let image = 2048 + 4 * 32 * 128;
    // Off the pattern: a start 128 bytes into an atom.
    let off = Layout::Swizzle128Mn { base: 2048 + 128, lbo: 32 * 128, kstep: 0 };
    let e = run(DType::BF16, 64, (la, off), image + 2048, true, (form, Faults::default()), 7);
    match e.got {
        Err(SimError::Fault { reason, .. }) => assert!(reason.contains("1024-byte boundary"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// The register-A hazards: an A fragment register written after `wgmma.fence`, or read
/// between the issue and the wait.
#[test]
fn register_a_hazards_are_caught() {
    let form = Form { a_regs: true, trans_b: false };
    let cases: [(Faults, &str); 2] = [
        (Faults { write_a_after_fence: true, ..Faults::default() }, "A fragment register"),
        (Faults { read_a_early: true, ..Faults::default() }, "operand of a pending wgmma"),
    ];
    for (f, needle) in cases {
        match hazard_in(form, f) {
            SimError::AsyncHazard { what, .. } => assert!(what.contains(needle), "{f:?}: {what}"),
            other => panic!("{f:?}: {other:?}"),
        }
    }
}

/// A block that is not a whole warpgroup cannot run a warpgroup-collective instruction.
#[test]
fn a_partial_warpgroup_diverges() {
    let k = single_wgmma(Ty::BF16, 8, 2048, (0, 0), true, (Form::default(), Faults::default()));
    let mut mem = GlobalMem::new();
    let img = mem.alloc_with(vec![0; 2048]);
    let c = mem.alloc_with(vec![0; 128 * 4 * 4]);
    let fr = mem.alloc_with(vec![0; 128 * 4 * 4]);
    let out = mem.alloc(128 * 4 * 4);
    // 96 threads copy only part of the image, which does not matter before the first wgmma.
    let e = launch(
        &k,
        LaunchDims { grid: 1, block: 96 },
        &[ArgValue::Ptr(img), ArgValue::Ptr(c), ArgValue::Ptr(fr), ArgValue::Ptr(out)],
        &mut mem,
    );
    assert!(matches!(e, Err(SimError::Divergence { .. })), "{e:?}");
}

#[test]
fn wgmma_text_is_emitted_for_sm90a_and_refused_for_sm80() {
    let k = single_wgmma(Ty::BF16, 64, 4096, (0, 0), true, (Form::default(), Faults::default()));
    let text = try_emit(&k, Target::Sm90a).expect("sm_90a has wgmma");
    for want in [
        "fence.proxy.async.shared::cta;",
        "wgmma.fence.sync.aligned;",
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%f",
        "wgmma.commit_group.sync.aligned;",
        "wgmma.wait_group.sync.aligned 0;",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    assert_eq!(text, emit(&k, Target::Sm90a));
    // Register A (no imm-trans-a) and an MN-major B (imm-trans-b 1).
    let rs = single_wgmma(Ty::F16, 16, 4096, (0, 0), true, (Form { a_regs: true, trans_b: true }, Faults::default()));
    let text = try_emit(&rs, Target::Sm90a).expect("sm_90a has wgmma");
    let line = text.lines().find(|l| l.contains("wgmma.mma_async.sync")).expect("one wgmma");
    assert!(line.contains("m64n16k16.f32.f16.f16 {%f") && line.contains("}, {%r"), "{line}");
    assert!(line.trim_end().ends_with(", 1, 1, 1;"), "{line}");
    let e = try_emit(&k, Target::Sm80).expect_err("sm_80 has no wgmma");
    assert_eq!(e.inst, "fence.proxy.async");
    assert!(e.to_string().contains("sm_90a") && e.to_string().contains("sm_80"), "{e}");
}
