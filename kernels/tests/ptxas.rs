//! ptxas check: every kernel of `ptx::catalog::all_kernels` (every family at every parameter
//! point) assembles for sm_80 and sm_90a with no spills (the sm_90a-only `matmul_wgmma` and
//! `attention_flash_wgmma` for sm_90a alone: the emitter refuses them for sm_80, and that is
//! checked too), and so does a
//! kernel using every form of the tensor-core instructions (`cp.async` ca/cg with and without
//! src-size, commit/wait, `ldmatrix` x1/x2/x4 with and without `.trans`,
//! `cvt.rn.{bf16,f16}x2.f32`, `mma.sync` m16n8k16 bf16 and f16), and one with the sm_90a
//! forms (`fence.proxy.async`, `wgmma.fence`/`commit_group`/`wait_group`, `wgmma.mma_async`
//! bf16 and f16 at N = 8, 64, 256, A from a descriptor or registers, B K- or MN-major).
//!
//! ptxas is found through `VIDRT_PTXAS`, then `PATH`, then the pip package installed by
//! `scripts/install-ptxas.sh`. Without it these tests fail (a check that did not run is never
//! a pass); `scripts/test.sh` leaves this whole test binary out of the run, so it counts as
//! skipped, only where it could not install ptxas outside CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use vidrt_kernels::ptx::builder::{BinOp, CpCache, KernelBuilder, Operand, ParamTy, Space, Ty};
use vidrt_kernels::ptx::catalog::all_kernels;
use vidrt_kernels::ptx::emit::check_target;
use vidrt_kernels::ptx::{emit, Kernel, Target};

/// The families the emitter refuses for sm_80 (they use `wgmma`).
fn sm90a_only(name: &str) -> bool {
    name.starts_with("matmul_wgmma") || name.starts_with("attention_flash_wgmma")
}

fn find_ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VIDRT_PTXAS") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("ptxas");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(|| Path::new(&home).join(".cache"), PathBuf::from);
    let tools = std::env::var_os("VIDRT_TOOLS_DIR").map_or_else(|| cache.join("vidrt/tools"), PathBuf::from);
    find_in(&tools.join("cuda-nvcc-venv"), 8)
}

/// ptxas, or a failure saying how to install it.
fn ptxas() -> PathBuf {
    find_ptxas().unwrap_or_else(|| {
        panic!("ptxas not found: set VIDRT_PTXAS or run scripts/install-ptxas.sh (scripts/test.sh does)")
    })
}

fn find_in(dir: &Path, depth: usize) -> Option<PathBuf> {
    find_named(dir, "ptxas", depth)
}

fn find_named(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for e in &entries {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) && p.is_file() {
            return Some(p);
        }
    }
    entries.iter().filter(|e| e.path().is_dir()).find_map(|e| find_named(&e.path(), name, depth - 1))
}

/// nvdisasm beside ptxas (the pip packages share a `bin/`), or through `VIDRT_NVDISASM`.
fn find_nvdisasm(ptxas: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VIDRT_NVDISASM") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let beside = ptxas.with_file_name("nvdisasm");
    if beside.is_file() {
        return Some(beside);
    }
    // The pip layout: <venv>/lib/pythonX/site-packages/nvidia/<cu>/bin/ptxas.
    ptxas.ancestors().nth(6).and_then(|venv| find_named(venv, "nvdisasm", 8))
}

/// The tensor-core kernels compile to tensor-core SASS: `HMMA` in every `mma` kernel,
/// `LDSM` (ldmatrix) in the GEMM, attention and conv, `LDGSTS` (cp.async) in the GEMM. Checked
/// with nvdisasm (PyPI nvidia-cuda-nvdisasm, installed by scripts/install-ptxas.sh) on the
/// sm_80 and sm_90a cubins.
#[test]
fn tensor_core_kernels_compile_to_tensor_core_sass() {
    let ptxas = ptxas();
    let nvdisasm = find_nvdisasm(&ptxas).unwrap_or_else(|| {
        panic!("nvdisasm not found beside {}: run scripts/install-ptxas.sh, which installs it", ptxas.display())
    });
    let kernels = all_kernels().expect("the catalog generates");
    let dir = std::env::temp_dir().join(format!("vidrt-sass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut checked = 0;
    let mut failures = Vec::new();
    // matmul_mma points 0 and 1 have 2 stages, 4 has 3 and 5 has 4; 10 is the 128×256×64 tile
    // in dynamic shared memory (gemm_mma::param_space); attention point 4 is dynamic at d128.
    for family in [
        "matmul_mma_bf16_0",
        "matmul_mma_epilogue_1",
        "matmul_mma_epilogue_4",
        "matmul_mma_f16_5",
        "matmul_mma_epilogue_10",
        "attention_flash_mma_f16_d128_4",
        "conv3d_mma_causal_bf16_1",
        "attention_flash_mma_bf16_d128_0",
        "matmul_wgmma_bf16_0",
        "matmul_wgmma_epilogue_1",
        // The 128-byte-swizzled 128×128×64 point (gemm_wgmma::param_space).
        "matmul_wgmma_epilogue_12",
        // TMA-fed: bulk tensor copies (UTMALDG) instead of LDGSTS.
        "matmul_wgmma_tma_epilogue_1",
        "attention_flash_wgmma_bf16_d128_0",
        "attention_flash_wgmma_f16_d64_1",
    ] {
        let Some(k) = kernels.iter().find(|k| k.name == family) else {
            failures.push(format!("{family}: not in the catalog"));
            continue;
        };
        let wgmma = sm90a_only(family);
        // wgmma reads shared memory itself: HGMMA, no LDSM.
        let mut want = if wgmma { vec!["HGMMA"] } else { vec!["HMMA", "LDSM"] };
        if family.starts_with("matmul_wgmma_tma") {
            want.push("UTMALDG");
        } else if family.starts_with("matmul") {
            want.push("LDGSTS");
        }
        for target in Target::ALL {
            if wgmma && target != Target::Sm90a {
                continue;
            }
            let src = dir.join(format!("{}_{}.ptx", k.name, target.name()));
            let bin = dir.join(format!("{}_{}.cubin", k.name, target.name()));
            std::fs::write(&src, emit(k, target)).expect("write ptx");
            let out = Command::new(&ptxas)
                .arg(format!("-arch={}", target.name()))
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .output()
                .expect("run ptxas");
            assert!(out.status.success(), "{} ({}): {}", k.name, target.name(), String::from_utf8_lossy(&out.stderr));
            let sass = Command::new(&nvdisasm).arg(&bin).output().expect("run nvdisasm");
            let text = String::from_utf8_lossy(&sass.stdout);
            let missing: Vec<&str> = want.iter().copied().filter(|w| !text.contains(w)).collect();
            let found: Vec<&str> = want.iter().copied().filter(|w| text.contains(w)).collect();
            println!(
                "{} ({}): {} SASS lines, found {found:?} of {want:?}",
                k.name,
                target.name(),
                text.lines().count()
            );
            if !sass.status.success() || !missing.is_empty() {
                failures.push(format!("{} ({}): SASS lacks {missing:?}", k.name, target.name()));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("nvdisasm {}: {checked} cubins checked", nvdisasm.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_kernel_assembles_without_spills() {
    let ptxas = ptxas();
    let kernels = all_kernels().expect("the catalog generates");
    let dir = std::env::temp_dir().join(format!("vidrt-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut refused = 0;
    for target in Target::ALL {
        // One module per kernel keeps failures attributable.
        for k in &kernels {
            if let Err(e) = check_target(k, target) {
                // Only the sm_90a-only family is refused, and only for sm_80.
                if !(sm90a_only(&k.name) && target == Target::Sm80) {
                    failures.push(format!("{} ({}): {e}", k.name, target.name()));
                }
                refused += 1;
                continue;
            }
            let text = emit(k, target);
            let src = dir.join(format!("{}_{}.ptx", k.name, target.name()));
            std::fs::write(&src, &text).expect("write ptx");
            let out = Command::new(&ptxas)
                .arg(format!("-arch={}", target.name()))
                .arg("-v")
                .arg("-o")
                .arg(dir.join("out.cubin"))
                .arg(&src)
                .output()
                .expect("run ptxas");
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                failures.push(format!("{} ({}): ptxas failed:\n{log}", k.name, target.name()));
            } else if log
                .lines()
                .any(|l| l.contains("spill") && !l.contains("0 bytes spill stores, 0 bytes spill loads"))
            {
                failures.push(format!("{} ({}): spills:\n{log}", k.name, target.name()));
            } else if !log.contains("0 bytes spill stores, 0 bytes spill loads") {
                failures.push(format!("{} ({}): no spill report in the ptxas log:\n{log}", k.name, target.name()));
            }
            // Register use of the compute-bound families, for the record.
            if ["matmul", "attention", "conv"].iter().any(|f| k.name.starts_with(f)) {
                if let Some(l) = log.lines().find(|l| l.contains("Used") && l.contains("registers")) {
                    println!("{} ({}): {}", k.name, target.name(), l.trim());
                }
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let wgmma = kernels.iter().filter(|k| sm90a_only(&k.name)).count();
    assert!(kernels.iter().any(|k| k.name.starts_with("matmul_wgmma")), "no matmul_wgmma kernel in the catalog");
    assert!(kernels.iter().any(|k| k.name.starts_with("attention_flash_wgmma")), "no attention_flash_wgmma kernel");
    assert_eq!(refused, wgmma, "every wgmma kernel is refused for sm_80, nothing else");
    println!(
        "ptxas {}: {checked} kernel builds checked, {} failed, {refused} refused for sm_80",
        ptxas.display(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every form of the tensor-core instructions in one kernel.
fn tensor_core_forms() -> Kernel {
    let mut b = KernelBuilder::new("tensor_core_forms", "every form of cp.async, ldmatrix, cvt x2 and mma");
    let src = b.param(ParamTy::Ptr);
    let out = b.param(ParamTy::Ptr);
    b.shared(1024);
    let s = b.shared_base();
    let n = b.imm_u32(6);
    b.cp_async(CpCache::Cg, s, src, 16, Some(Operand::Reg(n)));
    let s16 = b.bin(BinOp::Add, Ty::U32, s, Operand::Int(16));
    b.cp_async(CpCache::Ca, s16, src, 8, Some(Operand::Int(0)));
    b.cp_async(CpCache::Ca, s16, src, 4, None);
    b.cp_async_commit();
    b.cp_async_wait(1);
    b.cp_async_wait_all();
    b.bar_sync();
    let mut f = Vec::new();
    for (n, trans) in [(1, false), (1, true), (2, false), (2, true), (4, false), (4, true)] {
        f.extend(b.ldmatrix(n, trans, s));
    }
    let x = b.imm_f32(1.5);
    let y = b.imm_f32(-3.0);
    let p = b.cvt_pack(Ty::BF16, x, y);
    let q = b.cvt_pack(Ty::F16, x, y);
    let d = b.mma(Ty::F16, [f[0], f[1], f[2], p], [q, f[5]], [x, y, x, y]);
    let d = b.mma(Ty::BF16, [f[6], f[7], f[8], f[9]], [f[10], f[11]], d);
    b.st_vec(Space::Global, out, d.to_vec());
    b.finish()
}

#[test]
fn every_tensor_core_instruction_form_assembles() {
    let ptxas = ptxas();
    let k = tensor_core_forms();
    let dir = std::env::temp_dir().join(format!("vidrt-ptxas-tc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for target in Target::ALL {
        let src = dir.join(format!("{}_{}.ptx", k.name, target.name()));
        std::fs::write(&src, emit(&k, target)).expect("write ptx");
        let out = Command::new(&ptxas)
            .arg(format!("-arch={}", target.name()))
            .arg("-v")
            .arg("-o")
            .arg(dir.join("out.cubin"))
            .arg(&src)
            .output()
            .expect("run ptxas");
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{} ({}): ptxas failed:\n{log}", k.name, target.name());
        assert!(log.contains("0 bytes spill stores, 0 bytes spill loads"), "{}: {log}", target.name());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every sm_90a form: `fence.proxy.async`, the wgmma fence/commit/wait and `wgmma.mma_async`
/// bf16 and f16 at N = 8, 64 and 256, with descriptors computed at run time; A from registers
/// with B K-major and MN-major (`imm-trans-b` 1), and a descriptor A with an MN-major B.
fn wgmma_forms() -> Kernel {
    use vidrt_kernels::ptx::builder::{Cmp, Special};
    use vidrt_kernels::ptx::kernels::gemm_wgmma::descriptor;
    let mut b = KernelBuilder::new("wgmma_forms", "every form of fence.proxy.async and wgmma");
    b.block(128);
    let out = b.param(ParamTy::Ptr);
    b.shared(16 * 1024);
    let s = b.shared_base();
    let tid = b.special(Special::TidX);
    let a = b.bin(BinOp::Add, Ty::U32, s, tid);
    let z = b.imm_u32(0);
    b.st(Space::Shared, a, z);
    b.fence_proxy_async();
    b.bar_sync();
    let da = descriptor(&mut b, s, 1024, 128);
    let sb = b.bin(BinOp::Add, Ty::U32, s, Operand::Int(2048));
    let db = descriptor(&mut b, sb, 4096, 128);
    let one = b.imm_u32(1);
    let p = b.setp(Cmp::Ne, one, Operand::Int(0));
    let zero = b.imm_f32(0.0);
    let mut all = Vec::new();
    for (ty, n) in [(Ty::BF16, 8), (Ty::F16, 64), (Ty::BF16, 256)] {
        let acc: Vec<_> = (0..n / 2).map(|_| b.mov(Ty::F32, zero)).collect();
        b.wgmma_fence();
        b.wgmma(ty, &acc, da, db, p);
        b.wgmma_commit();
        all.push(acc);
    }
    // A from registers (B K-major and MN-major), and a descriptor A with an MN-major B.
    let fa = [0, 1, 2, 3].map(|_| b.cvt_pack(Ty::BF16, zero, zero));
    for (n, trans_b, regs) in [(16u32, false, true), (32, true, true), (16, true, false)] {
        let acc: Vec<_> = (0..n / 2).map(|_| b.mov(Ty::F32, zero)).collect();
        b.wgmma_fence();
        if regs {
            b.wgmma_rs(Ty::BF16, &acc, fa, db, p, trans_b);
        } else {
            b.push(vidrt_kernels::ptx::builder::Inst::Wgmma {
                ab: Ty::F16,
                n,
                d: acc.clone(),
                a: vidrt_kernels::ptx::builder::WgmmaA::Desc(da),
                b_desc: db,
                scale_d: p,
                trans_b,
            });
        }
        b.wgmma_commit();
        all.push(acc);
    }
    b.wgmma_wait(1);
    b.wgmma_wait(0);
    let mut sum = zero;
    for r in all.iter().flatten() {
        sum = b.bin(BinOp::Add, Ty::F32, sum, *r);
    }
    let o = b.mul_wide(tid, Operand::Int(4));
    let o = b.bin(BinOp::Add, Ty::U64, out, o);
    b.st(Space::Global, o, sum);
    b.finish()
}

#[test]
fn every_wgmma_instruction_form_assembles_for_sm90a() {
    let ptxas = ptxas();
    let k = wgmma_forms();
    assert!(check_target(&k, Target::Sm80).is_err());
    let dir = std::env::temp_dir().join(format!("vidrt-ptxas-wgmma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("wgmma_forms.ptx");
    std::fs::write(&src, emit(&k, Target::Sm90a)).expect("write ptx");
    let out = Command::new(&ptxas)
        .arg("-arch=sm_90a")
        .arg("-v")
        .arg("-o")
        .arg(dir.join("out.cubin"))
        .arg(&src)
        .output()
        .expect("run ptxas");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "ptxas failed:\n{log}");
    assert!(log.contains("0 bytes spill stores, 0 bytes spill loads"), "{log}");
}

/// Every mbarrier and TMA form: a tensor-map parameter, `mbarrier.init`,
/// `fence.mbarrier_init`, `arrive.expect_tx`, 1-D and 2-D `cp.async.bulk.tensor` tile loads,
/// the `try_wait.parity` loop and a plain `arrive`.
fn tma_forms() -> Kernel {
    use vidrt_kernels::ptx::builder::{Cmp, Special};
    let mut b = KernelBuilder::new("tma_forms", "every form of mbarrier and cp.async.bulk.tensor");
    b.block(128);
    let map2 = b.param(ParamTy::TensorMap);
    let map1 = b.param(ParamTy::TensorMap);
    let out = b.param(ParamTy::Ptr);
    let dst = b.shared_aligned(8192, 1024);
    let bar = b.shared(16);
    let s = b.shared_base();
    let d = b.bin(BinOp::Add, Ty::U32, s, Operand::Int(i64::from(dst)));
    let d1 = b.bin(BinOp::Add, Ty::U32, d, Operand::Int(4096));
    let full = b.bin(BinOp::Add, Ty::U32, s, Operand::Int(i64::from(bar)));
    let empty = b.bin(BinOp::Add, Ty::U32, full, Operand::Int(8));
    let tid = b.special(Special::TidX);
    let first = b.setp(Cmp::Eq, tid, Operand::Int(0));
    let skip = b.label();
    b.bra_if(skip, first, true);
    b.mbar_init(full, 1);
    b.mbar_init(empty, 128);
    b.fence_mbarrier_init();
    b.place(skip);
    b.bar_sync();
    let issue = b.label();
    b.bra_if(issue, first, true);
    b.mbar_arrive_expect_tx(full, 8192);
    let c0 = b.imm_u32(0);
    let c1 = b.bin(BinOp::Mul, Ty::U32, tid, Operand::Int(64));
    b.tma_load(d, map2, &[c0, c1], full);
    b.tma_load(d1, map1, &[c1], full);
    b.place(issue);
    b.mbar_wait(full, Operand::Int(0));
    let a = b.fma(Ty::U32, tid, Operand::Int(4), d);
    let v = b.ld(Space::Shared, Ty::U32, a);
    b.mbar_arrive(empty);
    b.mbar_wait(empty, Operand::Int(0));
    let o = b.mul_wide(tid, Operand::Int(4));
    let o = b.bin(BinOp::Add, Ty::U64, out, o);
    b.st(Space::Global, o, v);
    b.finish()
}

#[test]
fn every_tma_instruction_form_assembles_for_sm90a() {
    let ptxas = ptxas();
    let k = tma_forms();
    assert!(check_target(&k, Target::Sm80).is_err());
    let dir = std::env::temp_dir().join(format!("vidrt-ptxas-tma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("tma_forms.ptx");
    std::fs::write(&src, emit(&k, Target::Sm90a)).expect("write ptx");
    let out = Command::new(&ptxas)
        .arg("-arch=sm_90a")
        .arg("-v")
        .arg("-o")
        .arg(dir.join("out.cubin"))
        .arg(&src)
        .output()
        .expect("run ptxas");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "ptxas failed:\n{log}");
    assert!(log.contains("0 bytes spill stores, 0 bytes spill loads"), "{log}");
}
