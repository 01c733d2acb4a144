//! Tensor-core instructions in the simulator: `ldmatrix` fragment distribution (with and
//! without `.trans`, x1/x2/x4), `mma.sync.m16n8k16` fragment layouts for bf16 and f16 (every
//! element's position), `cp.async` zero-fill and wait-group semantics (a missing wait is
//! caught), `cvt.rn.bf16x2.f32`, and the `matmul_mma` GEMM against a host reference on odd
//! and multi-tile shapes at every parameter point (the large tiles in dynamic shared memory,
//! refused on a device with too little).
//!
//! The fragment layouts the host side uses here are written out from the PTX ISA
//! ("Matrix Fragments for mma.m16n8k16 with floating point type", and `ldmatrix`), independent
//! of the simulator's code.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a test failure

use half::{bf16, f16};
use vidrt_ir::DType;
use vidrt_kernels::ptx::builder::STATIC_SHARED_MAX;
use vidrt_kernels::ptx::builder::{BinOp, Cmp, CpCache, KernelBuilder, Operand, ParamTy, Space, Special, Ty};
use vidrt_kernels::ptx::kernels::gemm_mma::{self, MmaParams};
use vidrt_kernels::ptx::sim::{launch, launch_with, ArgValue, DeviceLimits, GlobalMem, LaunchDims, SimError};
use vidrt_kernels::ptx::{emit, KernelError, Target};

fn u32s(mem: &GlobalMem, addr: u64, n: usize) -> Vec<u32> {
    let b = mem.read(addr, 4 * n).expect("in bounds");
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f32s(mem: &GlobalMem, addr: u64, n: usize) -> Vec<f32> {
    u32s(mem, addr, n).into_iter().map(f32::from_bits).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn imm(v: u32) -> Operand {
    Operand::Int(i64::from(v))
}

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

    /// ±(1 + u)·2^e with u uniform in [0, 1) and e in −3..=2: never zero, with a spread of
    /// exponents so that f32 accumulation has something to round.
    fn nonzero(&mut self) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        let e = (self.next() % 6) as i32 - 3;
        let mag = (1.0 + u) * 2f32.powi(e);
        if self.next() & 1 == 0 {
            mag
        } else {
            -mag
        }
    }
}

// ---------------------------------------------------------------------------------------
// ldmatrix

/// The b16 value the ldmatrix test stores at row `r`, column `c` of matrix `i`.
fn ldm_val(i: usize, r: usize, c: usize) -> u16 {
    (i * 64 + r * 8 + c) as u16
}

/// Lane `t` writes row `t % 8` of matrix `t / 8` at shared offset `(t%8 · 4 + t/8) · 32` (rows of
/// different matrices interleaved, 32 bytes apart), then the warp runs `ldmatrix.x{n}` with
/// each lane addressing that same row; lanes past `8n` pass an out-of-bounds address, which
/// the instruction must ignore. Every lane stores its `n` result registers.
fn ldmatrix_kernel(n: usize, trans: bool) -> vidrt_kernels::ptx::Kernel {
    let mut b = KernelBuilder::new("ldm", "test");
    let out = b.param(ParamTy::Ptr);
    b.shared(32 * 32);
    let t = b.special(Special::TidX);
    let r = b.bin(BinOp::And, Ty::U32, t, imm(7));
    let i = b.bin(BinOp::Shr, Ty::U32, t, imm(3));
    let slot = b.fma(Ty::U32, r, imm(4), i);
    let base = b.shared_base();
    let off = b.fma(Ty::U32, slot, imm(32), base);
    // Word w of the row = val(c = 2w) | val(2w + 1) << 16 = (8t + 2w)·65537 + 65536.
    let t8 = b.bin(BinOp::Mul, Ty::U32, t, imm(8));
    let words: Vec<_> = (0..4)
        .map(|w| {
            let e = b.bin(BinOp::Add, Ty::U32, t8, imm(2 * w));
            b.fma(Ty::U32, e, imm(65537), imm(65536))
        })
        .collect();
    b.st_vec(Space::Shared, off, words);
    b.bar_sync();
    let used = b.setp(Cmp::Lt, t, imm(8 * n as u32));
    let addr = b.selp(Ty::U32, off, imm(0x00FF_FFF0), used);
    let frag = b.ldmatrix(n, trans, addr);
    let o = b.mul_wide(t, imm(4 * n as u32));
    let o = b.bin(BinOp::Add, Ty::U64, out, o);
    b.st_vec(Space::Global, o, frag);
    b.finish()
}

#[test]
fn ldmatrix_distributes_fragments_as_the_ptx_isa_documents() {
    for n in [1usize, 2, 4] {
        for trans in [false, true] {
            let k = ldmatrix_kernel(n, trans);
            let text = emit(&k, Target::Sm80);
            let op = format!("ldmatrix.sync.aligned.m8n8.x{n}{}.shared.b16", if trans { ".trans" } else { "" });
            assert!(text.contains(&op), "{op} not in:\n{text}");
            let mut mem = GlobalMem::new();
            let out = mem.alloc(32 * 4 * n);
            launch(&k, LaunchDims { grid: 1, block: 32 }, &[ArgValue::Ptr(out)], &mut mem).expect("runs");
            let got = u32s(&mem, out, 32 * n);
            for t in 0..32 {
                for i in 0..n {
                    // Thread t holds row t/4, columns 2(t%4), 2(t%4)+1 (of the transpose with .trans).
                    let (row, col) = (t / 4, 2 * (t % 4));
                    let (lo, hi) = if trans {
                        (ldm_val(i, col, row), ldm_val(i, col + 1, row))
                    } else {
                        (ldm_val(i, row, col), ldm_val(i, row, col + 1))
                    };
                    let want = u32::from(lo) | (u32::from(hi) << 16);
                    assert_eq!(got[t * n + i], want, "x{n} trans={trans} lane {t} matrix {i}");
                }
            }
        }
    }
}

#[test]
fn ldmatrix_needs_the_whole_warp_and_aligned_rows() {
    // 16 threads: not a full warp.
    let k = ldmatrix_kernel(4, false);
    let mut mem = GlobalMem::new();
    let out = mem.alloc(32 * 16);
    let err = launch(&k, LaunchDims { grid: 1, block: 16 }, &[ArgValue::Ptr(out)], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::Divergence { .. }), "{err}");
    // A row address that is 8- but not 16-byte aligned.
    let mut b = KernelBuilder::new("ldm_mis", "test");
    b.shared(1024);
    let t = b.special(Special::TidX);
    let a = b.fma(Ty::U32, t, imm(16), imm(8));
    let _ = b.ldmatrix(1, false, a);
    let k = b.finish();
    let err = launch(&k, LaunchDims { grid: 1, block: 32 }, &[], &mut mem).unwrap_err();
    assert!(matches!(err, SimError::Misaligned { bytes: 16, .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// mma.sync m16n8k16

/// (row, col) of A element `a_e` (e = 0..8) held by `lane`: PTX ISA, m16n8k16 .f16/.bf16 A.
fn a_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    let row = if e < 2 || (4..6).contains(&e) { g } else { g + 8 };
    let col = if e < 4 { q * 2 + (e & 1) } else { q * 2 + (e & 1) + 8 };
    (row, col)
}

/// (row, col) of B element `b_e` (e = 0..4) held by `lane`.
fn b_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    let row = if e < 2 { q * 2 + (e & 1) } else { q * 2 + (e & 1) + 8 };
    (row, g)
}

/// (row, col) of C/D element `c_e` (e = 0..4) held by `lane`.
fn c_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    let row = if e < 2 { g } else { g + 8 };
    (row, q * 2 + (e & 1))
}

fn b16_bits(ab: Ty, x: f32) -> u32 {
    match ab {
        Ty::F16 => u32::from(f16::from_f32(x).to_bits()),
        _ => u32::from(bf16::from_f32(x).to_bits()),
    }
}

/// Runs one warp-wide mma with A (16×16), B (16×8), C (16×8) distributed per the ISA's layout
/// on the host; returns D gathered back per the same layout.
fn run_mma(ab: Ty, a: &[[f32; 16]; 16], bm: &[[f32; 8]; 16], c: &[[f32; 8]; 16]) -> [[f32; 8]; 16] {
    let mut frag = vec![0u32; 32 * 10];
    for lane in 0..32 {
        let f = &mut frag[lane * 10..lane * 10 + 10];
        for e in 0..8 {
            let (r, k) = a_pos(lane, e);
            f[e / 2] |= b16_bits(ab, a[r][k]) << (16 * (e % 2));
        }
        for e in 0..4 {
            let (k, n) = b_pos(lane, e);
            f[4 + e / 2] |= b16_bits(ab, bm[k][n]) << (16 * (e % 2));
        }
        for e in 0..4 {
            let (r, n) = c_pos(lane, e);
            f[6 + e] = c[r][n].to_bits();
        }
    }
    let mut b = KernelBuilder::new("mma1", "test");
    let fp = b.param(ParamTy::Ptr);
    let op = b.param(ParamTy::Ptr);
    let t = b.special(Special::TidX);
    let base = b.mul_wide(t, imm(40));
    let base = b.bin(BinOp::Add, Ty::U64, fp, base);
    let regs: Vec<_> = (0..10)
        .map(|i| {
            let a = b.bin(BinOp::Add, Ty::U64, base, imm(4 * i));
            b.ld(Space::Global, Ty::U32, a)
        })
        .collect();
    let cf: Vec<_> = regs[6..].iter().map(|&r| b.bitcast(Ty::F32, r)).collect();
    let d = b.mma(ab, [regs[0], regs[1], regs[2], regs[3]], [regs[4], regs[5]], [cf[0], cf[1], cf[2], cf[3]]);
    let o = b.mul_wide(t, imm(16));
    let o = b.bin(BinOp::Add, Ty::U64, op, o);
    b.st_vec(Space::Global, o, d.to_vec());
    let k = b.finish();
    let text = emit(&k, Target::Sm80);
    let want = format!("mma.sync.aligned.m16n8k16.row.col.f32.{0}.{0}.f32", ab.suffix());
    assert!(text.contains(&want), "{want} not in:\n{text}");
    let mut mem = GlobalMem::new();
    let fa = mem.alloc_with(u32_bytes(&frag));
    let out = mem.alloc(32 * 16);
    launch(&k, LaunchDims { grid: 1, block: 32 }, &[ArgValue::Ptr(fa), ArgValue::Ptr(out)], &mut mem).expect("runs");
    let got = f32s(&mem, out, 128);
    let mut dm = [[f32::NAN; 8]; 16];
    for lane in 0..32 {
        for e in 0..4 {
            let (r, n) = c_pos(lane, e);
            dm[r][n] = got[lane * 4 + e];
        }
    }
    dm
}

#[test]
fn mma_fragment_layouts_place_every_element() {
    for ab in [Ty::BF16, Ty::F16] {
        let zero8 = [[0f32; 8]; 16];
        // A(m, k) = 16m + k (distinct integers, exact in bf16 and f16); B selects column n + 8h
        // of A into D column n: D(m, n) = A(m, n + 8h). Two passes see all 16 columns of A.
        let mut a = [[0f32; 16]; 16];
        for (m, row) in a.iter_mut().enumerate() {
            for (k, x) in row.iter_mut().enumerate() {
                *x = (16 * m + k) as f32;
            }
        }
        for h in 0..2 {
            let mut sel = [[0f32; 8]; 16];
            for n in 0..8 {
                sel[n + 8 * h][n] = 1.0;
            }
            let d = run_mma(ab, &a, &sel, &zero8);
            for m in 0..16 {
                for n in 0..8 {
                    assert_eq!(d[m][n], a[m][n + 8 * h], "{ab:?} A position ({m}, {})", n + 8 * h);
                }
            }
        }
        // A = identity: D = B, every element of B (B(k, n) = 8k + n + 1).
        let mut id = [[0f32; 16]; 16];
        for (i, row) in id.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        let mut bm = [[0f32; 8]; 16];
        for (k, row) in bm.iter_mut().enumerate() {
            for (n, x) in row.iter_mut().enumerate() {
                *x = (8 * k + n + 1) as f32;
            }
        }
        let d = run_mma(ab, &id, &bm, &zero8);
        assert_eq!(d, bm, "{ab:?} B positions");
        // A = 0: D = C, every element of C.
        let mut c = [[0f32; 8]; 16];
        for (m, row) in c.iter_mut().enumerate() {
            for (n, x) in row.iter_mut().enumerate() {
                *x = 0.5 + (8 * m + n) as f32;
            }
        }
        let d = run_mma(ab, &[[0f32; 16]; 16], &bm, &c);
        assert_eq!(d, c, "{ab:?} C/D positions");
        // Dense random product + C against an f64 host reference.
        let mut rng = Rng(7 + ab.bytes() as u64);
        let round = |x: f32| match ab {
            Ty::F16 => f16::from_f32(x).to_f32(),
            _ => bf16::from_f32(x).to_f32(),
        };
        let mut a = [[0f32; 16]; 16];
        a.iter_mut().flatten().for_each(|x| *x = round(rng.nonzero()));
        let mut bm = [[0f32; 8]; 16];
        bm.iter_mut().flatten().for_each(|x| *x = round(rng.nonzero()));
        let mut c = [[0f32; 8]; 16];
        c.iter_mut().flatten().for_each(|x| *x = rng.nonzero());
        let d = run_mma(ab, &a, &bm, &c);
        for m in 0..16 {
            for n in 0..8 {
                let want: f64 =
                    f64::from(c[m][n]) + (0..16).map(|k| f64::from(a[m][k]) * f64::from(bm[k][n])).sum::<f64>();
                let scale: f64 =
                    f64::from(c[m][n].abs()) + (0..16).map(|k| f64::from((a[m][k] * bm[k][n]).abs())).sum::<f64>();
                assert!(
                    (f64::from(d[m][n]) - want).abs() <= 17.0 * f64::from(f32::EPSILON) * scale,
                    "{ab:?} D({m},{n})"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// cp.async

#[test]
fn cp_async_zero_fills_past_src_size() {
    // One thread: four copies of different sizes and src-sizes into a 48-byte shared buffer
    // (prefilled with 0xFF by the simulator), wait, and copy the buffer out.
    let mut b = KernelBuilder::new("cpa", "test");
    let src = b.param(ParamTy::Ptr);
    let out = b.param(ParamTy::Ptr);
    b.shared(48);
    let s = b.shared_base();
    let copies: [(CpCache, u32, u32, Option<u32>); 5] = [
        (CpCache::Cg, 0, 16, Some(6)),
        (CpCache::Ca, 16, 8, Some(0)),
        (CpCache::Ca, 24, 4, None),
        (CpCache::Ca, 28, 4, Some(3)),
        (CpCache::Ca, 32, 16, Some(16)),
    ];
    for (cache, off, size, n) in copies {
        let d = b.bin(BinOp::Add, Ty::U32, s, imm(off));
        let g = b.bin(BinOp::Add, Ty::U64, src, imm(off));
        // The src-size once as an immediate, once from a register.
        let n = n.map(|n| if off == 0 { Operand::Reg(b.imm_u32(n)) } else { imm(n) });
        b.cp_async(cache, d, g, size, n);
    }
    b.cp_async_wait_all();
    for w in 0..12 {
        let a = b.bin(BinOp::Add, Ty::U32, s, imm(4 * w));
        let v = b.ld(Space::Shared, Ty::U32, a);
        let o = b.bin(BinOp::Add, Ty::U64, out, imm(4 * w));
        b.st(Space::Global, o, v);
    }
    let k = b.finish();
    let text = emit(&k, Target::Sm80);
    assert!(text.contains("cp.async.cg.shared.global [%r"), "{text}");
    assert!(text.contains("], 16, %r"), "register src-size: {text}");
    assert!(text.contains("], 8, 0;"), "{text}");
    assert!(text.contains("cp.async.wait_all;"), "{text}");
    let mut mem = GlobalMem::new();
    let data: Vec<u8> = (1..=48).collect();
    let g = mem.alloc_with(data.clone());
    let o = mem.alloc(48);
    launch(&k, LaunchDims { grid: 1, block: 1 }, &[ArgValue::Ptr(g), ArgValue::Ptr(o)], &mut mem).expect("runs");
    let got = mem.read(o, 48).expect("in bounds").to_vec();
    let mut want = vec![0u8; 48];
    want[..6].copy_from_slice(&data[..6]);
    want[24..28].copy_from_slice(&data[24..28]);
    want[28..31].copy_from_slice(&data[28..31]);
    want[32..48].copy_from_slice(&data[32..48]);
    assert_eq!(got, want);
}

/// 32 threads: each copies 16 bytes of `src` into shared (group 0) and 16 more (group 1), then
/// `wait` (None: no wait at all), `bar.sync`, and each thread reads the neighbour's word from
/// group `read_group` (another thread's copy, so the barrier matters too).
fn cp_async_pipeline(wait: Option<u32>, read_group: u32) -> vidrt_kernels::ptx::Kernel {
    let mut b = KernelBuilder::new("cpa_wait", "test");
    let src = b.param(ParamTy::Ptr);
    let out = b.param(ParamTy::Ptr);
    b.shared(2 * 512);
    let t = b.special(Special::TidX);
    let s = b.shared_base();
    for grp in 0..2u32 {
        let d = b.fma(Ty::U32, t, imm(16), s);
        let d = b.bin(BinOp::Add, Ty::U32, d, imm(512 * grp));
        let g = b.mul_wide(t, imm(16));
        let g = b.bin(BinOp::Add, Ty::U64, src, g);
        let g = b.bin(BinOp::Add, Ty::U64, g, imm(512 * grp));
        b.cp_async(CpCache::Cg, d, g, 16, None);
        b.cp_async_commit();
    }
    if let Some(n) = wait {
        b.cp_async_wait(n);
    }
    b.bar_sync();
    let nb = b.bin(BinOp::Add, Ty::U32, t, imm(1));
    let nb = b.bin(BinOp::And, Ty::U32, nb, imm(31));
    let a = b.fma(Ty::U32, nb, imm(16), s);
    let a = b.bin(BinOp::Add, Ty::U32, a, imm(512 * read_group));
    let v = b.ld(Space::Shared, Ty::U32, a);
    let o = b.mul_wide(t, imm(4));
    let o = b.bin(BinOp::Add, Ty::U64, out, o);
    b.st(Space::Global, o, v);
    b.finish()
}

fn run_pipeline(wait: Option<u32>, read_group: u32) -> Result<Vec<u32>, SimError> {
    let k = cp_async_pipeline(wait, read_group);
    let mut mem = GlobalMem::new();
    let words: Vec<u32> = (0..256).map(|i| 1000 + i).collect();
    let g = mem.alloc_with(u32_bytes(&words));
    let o = mem.alloc(4 * 32);
    launch(&k, LaunchDims { grid: 1, block: 32 }, &[ArgValue::Ptr(g), ArgValue::Ptr(o)], &mut mem)?;
    Ok(u32s(&mem, o, 32))
}

#[test]
fn cp_async_data_lands_only_at_the_covering_wait() {
    let want = |grp: u32| (0..32).map(|t| 1000 + 128 * grp + 4 * ((t + 1) % 32)).collect::<Vec<u32>>();
    // wait_group 0: both groups landed.
    assert_eq!(run_pipeline(Some(0), 0).expect("runs"), want(0));
    assert_eq!(run_pipeline(Some(0), 1).expect("runs"), want(1));
    // wait_group 1: the older group landed, the newer may still be in flight.
    assert_eq!(run_pipeline(Some(1), 0).expect("runs"), want(0));
    let err = run_pipeline(Some(1), 1).unwrap_err();
    assert!(matches!(err, SimError::AsyncHazard { .. }), "{err}");
    // wait_group 2 waits for nothing; no wait at all: a missing wait is caught.
    for wait in [Some(2), None] {
        let err = run_pipeline(wait, 0).unwrap_err();
        assert!(matches!(err, SimError::AsyncHazard { .. }), "{err}");
        assert!(err.to_string().contains("cp.async"), "{err}");
    }
    let text = emit(&cp_async_pipeline(Some(1), 0), Target::Sm90a);
    assert!(text.contains("cp.async.commit_group;") && text.contains("cp.async.wait_group 1;"), "{text}");
}

#[test]
fn cp_async_checks_sizes_and_alignment() {
    let run = |cache: CpCache, off: u32, size: u32, n: Option<u32>| {
        let mut b = KernelBuilder::new("cpa_bad", "test");
        let src = b.param(ParamTy::Ptr);
        b.shared(64);
        let s = b.shared_base();
        let d = b.bin(BinOp::Add, Ty::U32, s, imm(off));
        b.cp_async(cache, d, src, size, n.map(imm));
        b.cp_async_wait_all();
        let k = b.finish();
        let mut mem = GlobalMem::new();
        let g = mem.alloc(8);
        launch(&k, LaunchDims { grid: 1, block: 1 }, &[ArgValue::Ptr(g)], &mut mem)
    };
    assert!(matches!(run(CpCache::Cg, 0, 8, None), Err(SimError::Fault { .. })), "cg takes 16 bytes only");
    assert!(matches!(run(CpCache::Ca, 0, 8, Some(9)), Err(SimError::Fault { .. })), "src-size > cp-size");
    assert!(matches!(run(CpCache::Ca, 4, 8, None), Err(SimError::Misaligned { .. })), "dst alignment");
    assert!(matches!(run(CpCache::Ca, 0, 16, None), Err(SimError::OutOfBounds { .. })), "src past the buffer");
    run(CpCache::Ca, 0, 16, Some(8)).expect("reading only the 8 valid bytes is in bounds");
}

#[test]
fn cvt_pack_rounds_and_orders_halves() {
    for ty in [Ty::BF16, Ty::F16] {
        let mut b = KernelBuilder::new("pack", "test");
        let o = b.param(ParamTy::Ptr);
        let lo = b.imm_f32(1.0 + 1.0 / 512.0 + 1.0 / 4096.0); // inexact in both bf16 and f16
        let hi = b.imm_f32(-2.25);
        let p = b.cvt_pack(ty, lo, hi);
        b.st(Space::Global, o, p);
        let k = b.finish();
        assert!(emit(&k, Target::Sm80).contains(&format!("cvt.rn.{}x2.f32", ty.suffix())));
        let mut mem = GlobalMem::new();
        let out = mem.alloc(4);
        launch(&k, LaunchDims { grid: 1, block: 1 }, &[ArgValue::Ptr(out)], &mut mem).expect("runs");
        let got = u32s(&mem, out, 1)[0];
        let want = b16_bits(ty, 1.0 + 1.0 / 512.0 + 1.0 / 4096.0) | (b16_bits(ty, -2.25) << 16);
        assert_eq!(got, want, "{ty:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The GEMM

/// Runs `matmul_mma` on random non-zero inputs and checks every element against an f64 host
/// product of the (rounded) inputs: |err| ≤ K·2⁻²⁴·Σ|a·b| (the bound for f32 accumulation in
/// any order). Returns the largest relative error seen.
fn check_gemm(m: usize, n: usize, k: usize, dtype: DType, p: MmaParams, seed: u64) -> f64 {
    let kern = gemm_mma::gemm_mma("gemm", m, n, k, dtype, p).expect("generates");
    let mut rng = Rng(seed);
    let bits = |x: f32| match dtype {
        DType::F16 => f16::from_f32(x).to_bits(),
        _ => bf16::from_f32(x).to_bits(),
    };
    let round = |x: f32| match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => bf16::from_f32(x).to_f32(),
    };
    let a: Vec<f32> = (0..m * k).map(|_| round(rng.nonzero())).collect();
    let bt: Vec<f32> = (0..n * k).map(|_| round(rng.nonzero())).collect(); // [N, K]
    let enc = |v: &[f32]| v.iter().flat_map(|&x| bits(x).to_le_bytes()).collect::<Vec<u8>>();
    let mut mem = GlobalMem::new();
    let pa = mem.alloc_with(enc(&a));
    let pb = mem.alloc_with(enc(&bt));
    let pc = mem.alloc(4 * m * n);
    let (grid, block) = gemm_mma::launch_dims(m, n, p);
    launch(&kern, LaunchDims { grid, block }, &[ArgValue::Ptr(pa), ArgValue::Ptr(pb), ArgValue::Ptr(pc)], &mut mem)
        .unwrap_or_else(|e| panic!("{m}x{n}x{k} {dtype} {p:?}: {e}"));
    let got = f32s(&mem, pc, m * n);
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut scale) = (0f64, 0f64);
            for kk in 0..k {
                let pr = f64::from(a[i * k + kk]) * f64::from(bt[j * k + kk]);
                want += pr;
                scale += pr.abs();
            }
            let g = f64::from(got[i * n + j]);
            let tol = k as f64 * 2f64.powi(-24) * scale;
            assert!(
                (g - want).abs() <= tol,
                "{m}x{n}x{k} {dtype} {p:?}: C({i},{j}) = {g}, want {want} (tolerance {tol:e})"
            );
            worst = worst.max((g - want).abs() / scale);
        }
    }
    worst
}

#[test]
fn gemm_mma_matches_the_host_on_odd_and_multi_tile_shapes() {
    for p in gemm_mma::param_space() {
        for dtype in [DType::BF16, DType::F16] {
            for (seed, (m, n, k)) in [(37, 29, 40), (130, 72, 96), (16, 8, 8)].into_iter().enumerate() {
                let worst = check_gemm(m, n, k, dtype, p, 11 + seed as u64);
                println!("{m}x{n}x{k} {dtype} {p:?}: max |err| / sum|a*b| = {worst:.2e}");
                assert!(worst < 1e-6, "{m}x{n}x{k} {dtype} {p:?}: {worst:e}");
            }
        }
    }
}

/// The points past 48 KiB (dynamic shared memory, 128×128 to 256×128 tiles) on a shape with
/// several tiles and a tail on every axis for each of them: M = 260 (3 tiles of 128, 2 of
/// 256), N = 264, K = 136 (4¼ slices of 32, 2⅛ of 64).
#[test]
fn gemm_mma_large_tiles_match_the_host_on_multi_tile_shapes() {
    let large: Vec<MmaParams> =
        gemm_mma::param_space().into_iter().filter(|p| p.shared_bytes() > STATIC_SHARED_MAX).collect();
    assert_eq!(large.len(), 6);
    for (i, p) in large.into_iter().enumerate() {
        let dtype = if i % 2 == 0 { DType::BF16 } else { DType::F16 };
        let worst = check_gemm(260, 264, 136, dtype, p, 31 + i as u64);
        println!("260x264x136 {dtype} {p:?}: max |err| / sum|a*b| = {worst:.2e}");
        assert!(worst < 1e-6, "{p:?}: {worst:e}");
    }
}

/// Every point's kernel holds its pipeline in static shared memory up to 48 KiB and in dynamic
/// shared memory past it (declared `.extern`); a device with less shared memory per block than
/// a point needs refuses the launch as a typed error (the 216 KiB point on an sm_80 device).
#[test]
fn gemm_mma_shared_memory_is_static_or_dynamic_by_size() {
    for p in gemm_mma::param_space() {
        let k = gemm_mma::gemm_mma("g", 37, 29, 40, DType::BF16, p).unwrap();
        let dynamic = p.shared_bytes() > STATIC_SHARED_MAX;
        assert_eq!(k.shared_total(), p.shared_bytes(), "{p:?}");
        assert_eq!(k.dynamic_shared, if dynamic { p.shared_bytes() } else { 0 }, "{p:?}");
        assert_eq!(emit(&k, Target::Sm90a).contains(".extern .shared .align 16 .b8 g_smem[];"), dynamic, "{p:?}");
    }
    let p = MmaParams { bm: 128, bn: 256, bk: 64, warps_m: 2, warps_n: 4, stages: 4 };
    assert!(gemm_mma::param_space().contains(&p));
    assert_eq!(p.shared_bytes(), 221_184);
    let k = gemm_mma::gemm_mma("g", 16, 8, 8, DType::BF16, p).unwrap();
    let mut mem = GlobalMem::new();
    let args = [ArgValue::Ptr(mem.alloc(256)), ArgValue::Ptr(mem.alloc(128)), ArgValue::Ptr(mem.alloc(512))];
    let (grid, block) = gemm_mma::launch_dims(16, 8, p);
    let dims = LaunchDims { grid, block };
    let err = launch_with(&k, dims, &args, &mut mem, DeviceLimits::of(Target::Sm80)).unwrap_err();
    assert!(matches!(&err, SimError::BadLaunch(why, name) if name == "g" && why.contains("221184")), "{err}");
    // Larger than any target: refused when generated.
    let huge = MmaParams { bm: 256, bn: 256, bk: 64, warps_m: 4, warps_n: 2, stages: 4 };
    assert!(matches!(gemm_mma::gemm_mma("g", 16, 8, 8, DType::BF16, huge), Err(KernelError::Unsupported(_))));
}

#[test]
fn gemm_mma_emits_tensor_core_instructions_and_rejects_bad_requests() {
    let p = gemm_mma::param_space()[0];
    let k = gemm_mma::gemm_mma("g", 37, 29, 40, DType::BF16, p).expect("generates");
    let text = emit(&k, Target::Sm90a);
    for needle in [
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
        "cp.async.cg.shared.global",
        "cp.async.wait_group 0;",
        ".version 8.0",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    assert!(matches!(gemm_mma::gemm_mma("g", 8, 8, 36, DType::BF16, p), Err(KernelError::Unsupported(_))));
    assert!(matches!(gemm_mma::gemm_mma("g", 8, 8, 32, DType::F32, p), Err(KernelError::Unsupported(_))));
    assert!(matches!(gemm_mma::gemm_mma("g", 0, 8, 32, DType::BF16, p), Err(KernelError::Invalid(_))));
    let bad = MmaParams { bm: 48, bn: 32, bk: 32, warps_m: 2, warps_n: 1, stages: 2 };
    assert!(matches!(gemm_mma::gemm_mma("g", 8, 8, 32, DType::BF16, bad), Err(KernelError::Invalid(_))));
}
