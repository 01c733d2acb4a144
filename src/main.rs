//! The `vidrt` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vidrt::eval::run_case;
use vidrt::golden::Case;
use vidrt::runtime::{Backend, CpuBackend};

#[derive(Parser)]
#[command(name = "vidrt", version, about = "Wan2.1 text-to-video with no framework underneath")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a golden case folder (case.json + safetensors) and compare every check.
    Eval {
        /// The case folder, e.g. ../shared/golden/dit
        #[arg(long)]
        case: PathBuf,
        /// Backend to run on.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Write everything produced to this safetensors file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn backend(name: &str) -> Result<Box<dyn Backend>> {
    match name {
        "cpu" => Ok(Box::new(CpuBackend::new())),
        other => bail!("unknown backend `{other}` (this build has: cpu)"),
    }
}

fn eval(case: PathBuf, backend_name: &str, out: Option<PathBuf>) -> Result<ExitCode> {
    let b = backend(backend_name)?;
    let c = Case::load(&case).with_context(|| format!("loading case {}", case.display()))?;
    let (report, outputs) = run_case(&c, b.as_ref()).with_context(|| format!("running case {}", case.display()))?;
    for r in &report.results {
        let status = if r.passed() { "ok  " } else { "FAIL" };
        match &r.outcome {
            Ok(cmp) => println!(
                "{status} {}:{}  rel_l2 {:.3e} (≤ {:.0e})  max_abs {:.3e} (≤ {:.0e}){}",
                r.check.file,
                r.check.tensor,
                cmp.rel_l2,
                r.check.rel_l2,
                cmp.max_abs,
                r.check.max_abs,
                if cmp.non_finite { "  non-finite values" } else { "" }
            ),
            Err(why) => println!("{status} {}:{}  {why}", r.check.file, r.check.tensor),
        }
    }
    if let Some(path) = out {
        vidrt::golden::write_outputs(&path, &outputs).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = report.failures().len();
    println!(
        "{}: {} checks, {} passed, {} failed",
        report.case,
        report.results.len(),
        report.results.len() - failed,
        failed
    );
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Eval { case, backend, out } => eval(case, &backend, out),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
