//! ptxas check: every kernel of `ptx::catalog::all_kernels` (every family at every parameter
//! point) assembles for sm_80 and sm_90a with no spills, and so does a kernel using every form
//! of the tensor-core instructions (`cp.async` ca/cg with and without src-size, commit/wait,
//! `ldmatrix` x1/x2/x4 with and without `.trans`, `cvt.rn.{bf16,f16}x2.f32`, `mma.sync`
//! m16n8k16 bf16 and f16).
//!
//! ptxas is found through `VIDRT_PTXAS`, then `PATH`, then the pip package installed by
//! `scripts/install-ptxas.sh`. Without it the test prints SKIP (it does not pass silently:
//! the message says nothing was checked) unless `VIDRT_REQUIRE_PTXAS=1`, which makes a
//! missing ptxas a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use vidrt_kernels::ptx::builder::{BinOp, CpCache, KernelBuilder, Operand, ParamTy, Space, Ty};
use vidrt_kernels::ptx::catalog::all_kernels;
use vidrt_kernels::ptx::{emit, Kernel, Target};

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

fn find_in(dir: &Path, depth: usize) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for e in &entries {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "ptxas") && p.is_file() {
            return Some(p);
        }
    }
    entries.iter().filter(|e| e.path().is_dir()).find_map(|e| find_in(&e.path(), depth - 1))
}

#[test]
fn every_kernel_assembles_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        assert!(
            std::env::var("VIDRT_REQUIRE_PTXAS").as_deref() != Ok("1"),
            "VIDRT_REQUIRE_PTXAS=1 but no ptxas found (set VIDRT_PTXAS or run scripts/install-ptxas.sh)"
        );
        println!("SKIP: ptxas not found (set VIDRT_PTXAS or run scripts/install-ptxas.sh); NOTHING WAS CHECKED");
        return;
    };
    let kernels = all_kernels().expect("the catalog generates");
    let dir = std::env::temp_dir().join(format!("vidrt-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let mut checked = 0;
    for target in Target::ALL {
        // One module per kernel keeps failures attributable.
        for k in &kernels {
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
    println!("ptxas {}: {checked} kernel builds checked, {} failed", ptxas.display(), failures.len());
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
    let Some(ptxas) = find_ptxas() else {
        assert!(std::env::var("VIDRT_REQUIRE_PTXAS").as_deref() != Ok("1"), "VIDRT_REQUIRE_PTXAS=1 but no ptxas found");
        println!("SKIP: ptxas not found; NOTHING WAS CHECKED");
        return;
    };
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
