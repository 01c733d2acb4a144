//! ptxas check: every kernel of `ptx::catalog::all_kernels` (every family at every parameter
//! point) assembles for sm_80 and sm_90a with no spills and none of ptxas's wgmma
//! performance advisories (serialized wgmma, an injected `wgmma.wait_group`; [`problem`]) (the sm_90a-only `matmul_wgmma` and
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

#![allow(clippy::expect_used)] // test helpers: a failed expectation is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;

use vidrt_kernels::ptx::builder::{BinOp, CpCache, Inst, KernelBuilder, Operand, ParamTy, Reg, Space, Ty};
use vidrt_kernels::ptx::catalog::all_kernels;
use vidrt_kernels::ptx::emit::check_target;
use vidrt_kernels::ptx::{emit, Kernel, Target};

/// The families the emitter refuses for sm_80 (they use `wgmma`).
fn sm90a_only(name: &str) -> bool {
    name.starts_with("matmul_wgmma") || name.starts_with("attention_flash_wgmma") || name.starts_with("conv3d_wgmma")
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

/// ptxas with a scratch directory (removed on drop) for the modules it assembles.
struct Assembler {
    ptxas: PathBuf,
    dir: PathBuf,
}

/// One module's assembly: whether ptxas succeeded, its `-v` log (stdout and stderr) and the
/// cubin's path.
struct Assembled {
    ok: bool,
    log: String,
    cubin: PathBuf,
}

impl Assembler {
    /// ptxas (or a failure saying how to install it) and a fresh directory named by `tag`.
    fn new(tag: &str) -> Assembler {
        let dir = std::env::temp_dir().join(format!("vidrt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Assembler { ptxas: ptxas(), dir }
    }

    /// `ptxas -arch=<target> -v` on `k`'s text for `target`, one module per kernel so that
    /// failures stay attributable.
    fn assemble(&self, k: &Kernel, target: Target) -> Assembled {
        let src = self.dir.join(format!("{}_{}.ptx", k.name, target.name()));
        let cubin = self.dir.join(format!("{}_{}.cubin", k.name, target.name()));
        std::fs::write(&src, emit(k, target)).expect("write ptx");
        let out = Command::new(&self.ptxas)
            .arg(format!("-arch={}", target.name()))
            .arg("-v")
            .arg("-o")
            .arg(&cubin)
            .arg(&src)
            .output()
            .expect("run ptxas");
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Assembled { ok: out.status.success(), log, cubin }
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What is wrong with an assembly, or `None`: ptxas failed, the kernel spills, the log has
/// no spill report, or one of ptxas's performance advisories: wgmma serialized ("Potential
/// Performance Loss: wgmma.mma_async instructions are serialized due to ...", C7510–C7515:
/// the tensor cores would wait on every wgmma), a `wgmma.wait_group` injected by ptxas
/// (C7517: an accumulator touched while in flight, so the pipeline waits where the kernel
/// did not ask it to), any other "Performance Loss", or a warning about `setmaxnreg`.
fn problem(a: &Assembled) -> Option<&'static str> {
    let clean = "0 bytes spill stores, 0 bytes spill loads";
    if !a.ok {
        Some("ptxas failed")
    } else if a.log.lines().any(|l| l.contains("spill") && !l.contains(clean)) {
        Some("spills")
    } else if !a.log.contains(clean) {
        Some("no spill report in the ptxas log")
    } else if a.log.contains("Performance Loss: wgmma.mma_async instructions are serialized") {
        Some("ptxas serializes wgmma")
    } else if a.log.contains("wgmma.wait_group is injected") {
        Some("ptxas injects a wgmma.wait_group")
    } else if a.log.contains("Performance Loss") {
        Some("ptxas reports a performance loss")
    } else if a.log.contains("setmaxnreg") {
        // C7508 "'setmaxnreg' ignored; unable to determine register count at entry" and the
        // like: the kernel would run with its entry registers and no rebalancing.
        Some("ptxas warns about setmaxnreg")
    } else {
        None
    }
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

/// An assembler (`tag` names its scratch files) and nvdisasm beside its ptxas.
fn sass_tools(tag: &str) -> (Assembler, PathBuf) {
    let asm = Assembler::new(tag);
    let nvdisasm = find_nvdisasm(&asm.ptxas).unwrap_or_else(|| {
        panic!("nvdisasm not found beside {}: run scripts/install-ptxas.sh, which installs it", asm.ptxas.display())
    });
    (asm, nvdisasm)
}

/// The tensor-core kernels compile to tensor-core SASS: `HMMA` in every `mma` kernel,
/// `LDSM` (ldmatrix) in the GEMM, attention and conv, `LDGSTS` (cp.async) in the GEMM. Checked
/// with nvdisasm (PyPI nvidia-cuda-nvdisasm, installed by scripts/install-ptxas.sh) on the
/// sm_80 and sm_90a cubins.
#[test]
fn tensor_core_kernels_compile_to_tensor_core_sass() {
    let (asm, nvdisasm) = sass_tools("sass");
    let kernels = all_kernels().expect("the catalog generates");
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
        // The channels-last conv: its im2col by cp.async (LDGSTS), 128×128 at 3 stages.
        "conv3d_mma_cl_causal_bf16_6",
        "attention_flash_mma_bf16_d128_0",
        "matmul_wgmma_bf16_0",
        "matmul_wgmma_epilogue_1",
        // The 128-byte-swizzled 128×128×64 point (gemm_wgmma::param_space).
        "matmul_wgmma_epilogue_12",
        // TMA-fed: bulk tensor copies (UTMALDG) instead of LDGSTS.
        "matmul_wgmma_tma_epilogue_1",
        // With a producer warpgroup and setmaxnreg (128×256×64, 3 stages).
        "matmul_wgmma_tma_epilogue_6",
        "conv3d_wgmma_causal_bf16_1",
        // The positions as M, 128×192 (conv3d_wgmma::wgmma_param_space).
        "conv3d_wgmma_causal_bf16_6",
        // Its channels-last form: the im2col by cp.async (LDGSTS), 128×192.
        "conv3d_wgmma_cl_causal_bf16_6",
        "attention_flash_wgmma_bf16_d128_0",
        "attention_flash_wgmma_f16_d64_1",
        // The TMA attention with a producer warpgroup and setmaxnreg (128-key tiles, rings of 2).
        "attention_flash_wgmma_bf16_d128_8",
    ] {
        let Some(k) = kernels.iter().find(|k| k.name == family) else {
            failures.push(format!("{family}: not in the catalog"));
            continue;
        };
        let wgmma = sm90a_only(family);
        // wgmma reads shared memory itself: HGMMA, no LDSM.
        let mut want = if wgmma { vec!["HGMMA"] } else { vec!["HMMA", "LDSM"] };
        if k.params.contains(&vidrt_kernels::ptx::builder::ParamTy::TensorMap) {
            want.push("UTMALDG");
        } else if family.starts_with("matmul")
            || family.starts_with("conv3d_mma_cl")
            || family.starts_with("conv3d_wgmma_cl")
        {
            want.push("LDGSTS");
        }
        for target in Target::ALL {
            if wgmma && target != Target::Sm90a {
                continue;
            }
            let a = asm.assemble(k, target);
            assert!(a.ok, "{} ({}): {}", k.name, target.name(), a.log);
            let sass = Command::new(&nvdisasm).arg(&a.cubin).output().expect("run nvdisasm");
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
    println!("nvdisasm {}: {checked} cubins checked", nvdisasm.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_kernel_assembles_without_spills() {
    let asm = Assembler::new("ptxas");
    let kernels = all_kernels().expect("the catalog generates");
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut refused = 0;
    for target in Target::ALL {
        for k in &kernels {
            if let Err(e) = check_target(k, target) {
                // Only the sm_90a-only family is refused, and only for sm_80.
                if !(sm90a_only(&k.name) && target == Target::Sm80) {
                    failures.push(format!("{} ({}): {e}", k.name, target.name()));
                }
                refused += 1;
                continue;
            }
            let a = asm.assemble(k, target);
            let log = &a.log;
            if let Some(why) = problem(&a) {
                failures.push(format!("{} ({}): {why}:\n{log}", k.name, target.name()));
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
    let wgmma = kernels.iter().filter(|k| sm90a_only(&k.name)).count();
    assert!(kernels.iter().any(|k| k.name.starts_with("matmul_wgmma")), "no matmul_wgmma kernel in the catalog");
    assert!(kernels.iter().any(|k| k.name.starts_with("attention_flash_wgmma")), "no attention_flash_wgmma kernel");
    assert_eq!(refused, wgmma, "every wgmma kernel is refused for sm_80, nothing else");
    println!(
        "ptxas {}: {checked} kernel builds checked, {} failed, {refused} refused for sm_80",
        asm.ptxas.display(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Kernels with `setmaxnreg` start with the registers the simulator gives their blocks
/// ([`vidrt_kernels::ptx::sim::launch_registers`] of their `.maxntid`), by ptxas's own
/// report: the register pool the simulator pays `.inc`s from is the real one.
#[test]
fn setmaxnreg_kernels_get_the_registers_the_simulator_assumes() {
    let asm = Assembler::new("setmaxnreg");
    let kernels = all_kernels().expect("the catalog generates");
    let mut checked = 0;
    let mut failures = Vec::new();
    for k in kernels.iter().filter(|k| k.insts.iter().any(|i| matches!(i, Inst::SetMaxNReg { .. }))) {
        let a = asm.assemble(k, Target::Sm90a);
        let used =
            a.log.lines().find_map(|l| l.split("Used ").nth(1)?.split(" registers").next()?.trim().parse::<u32>().ok());
        let want = vidrt_kernels::ptx::sim::launch_registers(k.block.unwrap_or(1024));
        println!("{} (sm_90a, {} threads): ptxas {used:?} registers, simulator {want}", k.name, k.block.unwrap_or(0));
        if let Some(why) = problem(&a) {
            failures.push(format!("{}: {why}:\n{}", k.name, a.log));
        } else if used != Some(want) {
            failures.push(format!(
                "{}: ptxas gives {used:?} registers per thread, the simulator {want}:\n{}",
                k.name, a.log
            ));
        }
        checked += 1;
    }
    println!("{checked} setmaxnreg kernels checked");
    assert!(checked > 0, "no kernel of the catalog uses setmaxnreg");
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
    let asm = Assembler::new("ptxas-tc");
    let k = tensor_core_forms();
    for target in Target::ALL {
        let a = asm.assemble(&k, target);
        assert_eq!(problem(&a), None, "{} ({}):\n{}", k.name, target.name(), a.log);
    }
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
    store_sum(&mut b, all.iter().flatten(), (zero, tid, out));
    b.finish()
}

/// Stores the sum of `regs` (f32) to `out[tid]`, so that nothing the test kernel computed
/// is dead code to ptxas.
fn store_sum<'a>(b: &mut KernelBuilder, regs: impl Iterator<Item = &'a Reg>, (zero, tid, out): (Reg, Reg, Reg)) {
    let mut sum = zero;
    for r in regs {
        sum = b.bin(BinOp::Add, Ty::F32, sum, *r);
    }
    let o = b.mul_wide(tid, Operand::Int(4));
    let o = b.bin(BinOp::Add, Ty::U64, out, o);
    b.st(Space::Global, o, sum);
}

#[test]
fn every_wgmma_instruction_form_assembles_for_sm90a() {
    let asm = Assembler::new("ptxas-wgmma");
    let k = wgmma_forms();
    assert!(check_target(&k, Target::Sm80).is_err());
    let a = asm.assemble(&k, Target::Sm90a);
    assert_eq!(problem(&a), None, "{}", a.log);
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
    let asm = Assembler::new("ptxas-tma");
    let k = tma_forms();
    assert!(check_target(&k, Target::Sm80).is_err());
    let a = asm.assemble(&k, Target::Sm90a);
    assert_eq!(problem(&a), None, "{}", a.log);
}

/// A wgmma whose accumulator another instruction writes while it is in flight: between two
/// wgmma of one group (`between`; ptxas then serializes every wgmma of the kernel, C7511), or
/// after the commit and before the `wait_group` (ptxas injects a wait, C7517).
fn misused_wgmma(between: bool) -> Kernel {
    use vidrt_kernels::ptx::builder::{Cmp, Inst, Special};
    use vidrt_kernels::ptx::kernels::gemm_wgmma::descriptor;
    let mut b = KernelBuilder::new("misused_wgmma", "a wgmma accumulator written while in flight");
    b.block(128);
    let out = b.param(ParamTy::Ptr);
    b.shared(8 * 1024);
    let s = b.shared_base();
    let tid = b.special(Special::TidX);
    let da = descriptor(&mut b, s, 1024, 128);
    let sb = b.bin(BinOp::Add, Ty::U32, s, Operand::Int(2048));
    let db = descriptor(&mut b, sb, 4096, 128);
    let one = b.imm_u32(1);
    let p = b.setp(Cmp::Ne, one, Operand::Int(0));
    let zero = b.imm_f32(0.0);
    let acc: Vec<_> = (0..32).map(|_| b.mov(Ty::F32, zero)).collect();
    let x = b.imm_f32(1.0);
    b.wgmma_fence();
    b.wgmma(Ty::BF16, &acc, da, db, p);
    if between {
        b.push(Inst::Mov { dst: acc[0], src: Operand::Reg(x) });
        b.wgmma(Ty::BF16, &acc, da, db, p);
    }
    b.wgmma_commit();
    if !between {
        let bumped = b.bin(BinOp::Add, Ty::F32, acc[0], x);
        b.push(Inst::Mov { dst: acc[0], src: Operand::Reg(bumped) });
    }
    b.wgmma_wait(0);
    store_sum(&mut b, acc.iter(), (zero, tid, out));
    b.finish()
}

/// The performance checks are live: ptxas's advisories on both misuses of
/// [`misused_wgmma`] are reported by [`problem`].
#[test]
fn a_serialized_or_waited_wgmma_is_reported() {
    let asm = Assembler::new("ptxas-misused");
    for (between, code, why) in
        [(true, "C7511", "ptxas serializes wgmma"), (false, "C7517", "ptxas injects a wgmma.wait_group")]
    {
        let a = asm.assemble(&misused_wgmma(between), Target::Sm90a);
        assert!(a.log.contains(code), "{}", a.log);
        assert_eq!(problem(&a), Some(why), "{}", a.log);
    }
}

/// For each `wgmma.wait_group 1` in the SASS (`WARPGROUP.DEPBAR.LE gsb0, 0x1`): the `MUFU.EX2`
/// between it and the next `wait_group 0`, and those after that wait before the next `HGMMA`
/// (or the end).
fn ex2_around_waits(sass: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = sass.lines().collect();
    let wait = |l: &str, n: &str| l.contains("DEPBAR.LE gsb0") && l.contains(n);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if wait(lines[i], "0x1") {
            let mut j = i + 1;
            let mut before = 0;
            while j < lines.len() && !wait(lines[j], "0x0") {
                before += usize::from(lines[j].contains("MUFU.EX2"));
                j += 1;
            }
            let mut after = 0;
            let mut k = j + 1;
            while k < lines.len() && !lines[k].contains("HGMMA") && !lines[k].contains("EXIT") {
                after += usize::from(lines[k].contains("MUFU.EX2"));
                k += 1;
            }
            out.push((before, after));
            i = j;
        }
        i += 1;
    }
    out
}

/// The pipelined attention schedules (the cp.async 3-stage points and every TMA producer
/// point) keep the softmax of S_j between `wgmma.wait_group 1` and `wait_group 0` in the
/// SASS, so it runs while P·V_{j-1} does: every `ex2` of the loop comes before the wait for
/// P·V, none after it. Without the softmax anchor (`anchor_softmax` in the kernels) ptxas
/// hoists that wait above the exponentials (measured: 0 of 34 before it at the 3-stage
/// point, 3 of 66 at 128-key producer points).
#[test]
fn pipelined_attention_keeps_the_softmax_before_the_wait_for_pv() {
    use vidrt_kernels::ptx::kernels::attention::wgmma_param_space;
    let (asm, nvdisasm) = sass_tools("ex2");
    let kernels = all_kernels().expect("the catalog generates");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (i, p) in wgmma_param_space().into_iter().enumerate() {
        if p.stages != 3 && !p.producer {
            continue;
        }
        for dtype in ["bf16", "f16"] {
            let name = format!("attention_flash_wgmma_{dtype}_d128_{i}");
            let Some(k) = kernels.iter().find(|k| k.name == name) else {
                failures.push(format!("{name}: not in the catalog"));
                continue;
            };
            let a = asm.assemble(k, Target::Sm90a);
            assert!(a.ok, "{name}: {}", a.log);
            let sass = Command::new(&nvdisasm).arg(&a.cubin).output().expect("run nvdisasm");
            let text = String::from_utf8_lossy(&sass.stdout);
            let waits = ex2_around_waits(&text);
            println!("{name} {p:?}: ex2 before / after the wait for P·V: {waits:?}");
            if waits.is_empty() || waits.iter().any(|&(before, after)| before == 0 || after > 0) {
                failures.push(format!("{name}: ex2 before / after the wait for P·V {waits:?}"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} kernels checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
