//! Writes the PTX of named catalog kernels for one target, for a look at their SASS
//! (`scripts/sass-loop.sh`): `cargo run --release -p vidrt-kernels --example dump_ptx --
//! OUT_DIR sm_80|sm_90a NAME...` (names as in `vidrt_kernels::ptx::catalog::all_kernels`), or
//! `--all` for every catalog kernel that emits for the target (to compare the texts of two
//! versions by hash).

use std::process::ExitCode;

use vidrt_kernels::ptx::{catalog, try_emit, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, target, names @ ..] = &args[..] else {
        eprintln!("usage: dump_ptx OUT_DIR sm_80|sm_90a NAME...|--all");
        return ExitCode::FAILURE;
    };
    let target = match target.as_str() {
        "sm_80" => Target::Sm80,
        "sm_90a" => Target::Sm90a,
        other => {
            eprintln!("dump_ptx: unknown target {other} (sm_80 or sm_90a)");
            return ExitCode::FAILURE;
        }
    };
    let kernels = match catalog::all_kernels() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dump_ptx: the catalog does not generate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    if names == ["--all"] {
        for k in &kernels {
            // Kernels for the other target only (sm_90a's wgmma) do not emit: not an error.
            let Ok(text) = try_emit(k, target) else { continue };
            let path = std::path::Path::new(dir).join(format!("{}.ptx", k.name));
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("dump_ptx: writing {}: {e}", path.display());
                failed = true;
            }
        }
    }
    for name in names.iter().filter(|n| *n != "--all") {
        let Some(k) = kernels.iter().find(|k| &k.name == name) else {
            eprintln!("dump_ptx: no catalog kernel named {name}");
            failed = true;
            continue;
        };
        let path = std::path::Path::new(dir).join(format!("{name}.ptx"));
        let written = try_emit(k, target)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display())));
        if let Err(e) = written {
            eprintln!("dump_ptx: {name}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
