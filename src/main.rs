//! The `vidrt` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vidrt::eval::run_case;
use vidrt::golden::Case;
use vidrt::ir::DType;
use vidrt::runtime::{Backend, CpuBackend};

#[derive(Parser)]
#[command(name = "vidrt", version, about = "Wan2.1 text-to-video with no framework underneath")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Ignore the tuning database: GPU backends use their heuristics, and `tune` keeps its
    /// results in memory only.
    #[arg(long, global = true)]
    no_tune_cache: bool,
    /// The tuning database file (default: one per device under the user's cache directory,
    /// `$VIDRT_CACHE_DIR/tune/` or `~/.cache/vidrt/tune/`).
    #[arg(long, global = true)]
    tune_db: Option<PathBuf>,
}

/// The tuning-database flags, set once in `main` (read by the tunable backends).
#[derive(Default)]
struct TuneCfg {
    no_cache: bool,
    db: Option<PathBuf>,
}

static TUNE_CFG: std::sync::OnceLock<TuneCfg> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Cmd {
    /// Run every op case of the cross-backend harness on a backend against the CPU
    /// reference compositions and print the op × backend × dtype support table.
    Ops {
        /// Backend to test.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Only cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Generate a video from a prompt (diffusers' WanPipeline arguments and defaults).
    Generate(GenerateArgs),
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
    /// Time every candidate kernel of every distinct tunable problem (kernel family × shape)
    /// in the graphs of a generation at this size, and store the winners in the device's
    /// tuning database. Resumable: problems already tuned are skipped.
    ///
    /// Backends: wgpu and cuda (when built with their features) and ptx-sim. ptx-sim runs the
    /// CUDA backend's PTX kernels in the CPU simulator: its times are the simulator's CPU wall
    /// time, which exercises the tuning plumbing and says nothing about GPU speed.
    Tune {
        /// tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b.
        #[arg(long, default_value = "tiny")]
        model: String,
        #[arg(long, default_value_t = 96)]
        height: usize,
        #[arg(long, default_value_t = 128)]
        width: usize,
        #[arg(long, default_value_t = 17)]
        frames: usize,
        /// Backend to tune: wgpu, cuda or ptx-sim (CPU simulator; times are not GPU speed).
        #[arg(long, default_value = "wgpu")]
        backend: String,
        /// Timed runs per candidate (the median is kept).
        #[arg(long, default_value_t = 7)]
        repeats: u32,
        /// Untimed runs per candidate first.
        #[arg(long, default_value_t = 2)]
        warmup: u32,
        /// Only these components (repeatable): text, dit, vae. Default: all.
        #[arg(long = "component")]
        components: Vec<String>,
        /// Tune the DiT for guidance off (batch 1) instead of classifier-free guidance (batch 2).
        #[arg(long)]
        no_cfg: bool,
        /// Storage dtype of the tuned graphs, as `generate --precision` runs them: f32, bf16 or
        /// f16 (on CUDA, bf16/f16 are the tensor-core families; on wgpu, f16 the f16-storage keys).
        #[arg(long, default_value = "f32")]
        precision: String,
    },
    /// Benchmark kernels at the real Wan2.1 shapes and whole model parts, against the
    /// device's measured copy and matmul peaks (roofline); JSON, markdown and an SVG plot.
    Bench(BenchArgs),
    /// Show what the compiler does to a model's graphs (no weights needed): nodes before and
    /// after the passes, kernel launches, FLOPs, minimal bytes moved, planned peak activation
    /// memory against the naive sum, weight bytes; bf16 and f32.
    Inspect {
        /// tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b.
        #[arg(long, default_value = "wan2.1-t2v-1.3b")]
        model: String,
        #[arg(long, default_value_t = 480)]
        height: usize,
        #[arg(long, default_value_t = 832)]
        width: usize,
        #[arg(long, default_value_t = 81)]
        frames: usize,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Backend to run on.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// kernels, models or all.
    #[arg(long, default_value = "all")]
    suite: String,
    /// Model preset whose shapes are benchmarked.
    #[arg(long, default_value = "wan2.1-t2v-1.3b")]
    model: String,
    /// Divide the problem sizes by this (1 = the real shapes).
    #[arg(long, default_value_t = 1)]
    scale: usize,
    #[arg(long, default_value_t = 7)]
    repeats: u32,
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Only benchmarks whose name contains this (the peaks always run).
    #[arg(long)]
    filter: Option<String>,
    /// Write the report as JSON (comparable across GPUs and with the PyTorch peer).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report as a markdown table.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write a roofline plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Compare two JSON reports (e.g. two GPUs, or vidrt and benches/peers/torch_peer.py)
    /// instead of running anything.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Storage dtype of the benchmarked graphs: f32, bf16 or f16 (on CUDA, bf16/f16 run
    /// the tensor-core kernels). Names of a 16-bit run end in ` bf16`/` f16`.
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// `--precision`: f32, bf16 or f16.
fn parse_precision(s: &str) -> Result<DType> {
    match s.parse::<DType>() {
        Ok(d) if d.is_float() => Ok(d),
        _ => bail!("unknown --precision `{s}` (f32, bf16 or f16)"),
    }
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    use vidrt::bench;
    if let Some(files) = &a.compare {
        let [x, y] = files.as_slice() else { bail!("--compare takes two JSON files") };
        let rx = bench::read_json(x).with_context(|| format!("reading {}", x.display()))?;
        let ry = bench::read_json(y).with_context(|| format!("reading {}", y.display()))?;
        print!("{}", bench::compare(&rx, &ry));
        return Ok(ExitCode::SUCCESS);
    }
    let suite: bench::Suite = a.suite.parse().map_err(|e| anyhow::anyhow!("--suite: {e}"))?;
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
    let mut opts = bench::BenchOptions {
        suite,
        model: a.model.clone(),
        scale: a.scale.max(1),
        repeats: a.repeats.max(1),
        warmup: a.warmup,
        filter: a.filter.clone(),
        precision: parse_precision(&a.precision)?,
        ..bench::BenchOptions::default()
    };
    let b: Box<dyn Backend> = match a.backend.as_str() {
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let w = wgpu_backend()?;
            opts.device = Some(bench::wgpu_device(&w));
            Box::new(w)
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            let c = cuda_backend()?;
            opts.device = Some(bench::BenchDevice {
                backend: "cuda".into(),
                name: c.device_name().unwrap_or_default(),
                arch: c.target().into(),
                ..bench::BenchDevice::default()
            });
            Box::new(c)
        }
        name => backend(name)?,
    };
    let planned = bench::plan(&opts).context("planning the benchmarks")?;
    let bar = indicatif::ProgressBar::new(planned.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>6} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("bench");
    let logs_to_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The JSON is saved after every benchmark: a run cut short keeps what it measured.
    let mut save_error = None;
    let report = bench::run_with_checkpoints(
        b.as_ref(),
        &opts,
        &mut |done, total, what| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
            // The bar is hidden where stderr is no terminal (a log file): a line per benchmark
            // there, so a run that hangs or is killed says where it was.
            if !logs_to_terminal {
                eprintln!("bench: {done}/{total} {what}");
            }
        },
        &mut |partial| {
            if let (Some(p), None) = (&a.json, &save_error) {
                save_error = bench::write_json(partial, p).err().map(|e| format!("writing {}: {e}", p.display()));
            }
        },
    )
    .context("benchmarking")?;
    bar.finish_and_clear();
    if let Some(e) = save_error {
        bail!(e);
    }
    print!("{}", bench::to_markdown(&report));
    if let Some(p) = &a.json {
        bench::write_json(&report, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.markdown {
        bench::write_markdown(&report, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        bench::write_svg(&report, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if !report.failures.is_empty() {
        for f in &report.failures {
            eprintln!("vidrt bench: `{}` failed: {}", f.name, f.error);
        }
        eprintln!("vidrt bench: {} of {} benchmarks failed", report.failures.len(), planned.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // the subcommand's flags
fn tune(
    model: &str,
    (height, width, frames): (usize, usize, usize),
    backend_name: &str,
    (repeats, warmup): (u32, u32),
    components: &[String],
    cfg_batch: bool,
    precision: DType,
) -> Result<ExitCode> {
    for c in components {
        if !["text", "dit", "vae"].contains(&c.as_str()) {
            bail!("unknown component `{c}` (expected text, dit or vae)");
        }
    }
    let mut graphs =
        vidrt::tune::pipeline_graphs(model, height, width, frames, cfg_batch).context("building the graphs")?;
    if !components.is_empty() {
        graphs.retain(|(name, _)| components.iter().any(|c| vidrt::tune::component_of(name) == c));
    }
    // The graphs as the backends compile them: at the run's precision, after the passes (so
    // fused nodes pose their own problems, under the keys compile looks up).
    let graphs = graphs
        .into_iter()
        .map(|(name, g)| vidrt::tune::as_compiled(&g, precision).map(|g| (name, g)))
        .collect::<vidrt::Result<Vec<_>>>()
        .context("preparing the graphs")?;
    let b: Box<dyn vidrt::runtime::tune::Tunable> = match backend_name {
        #[cfg(feature = "wgpu")]
        "wgpu" => Box::new(wgpu_backend()?),
        #[cfg(feature = "cuda")]
        "cuda" => Box::new(cuda_backend()?),
        "ptx-sim" => Box::new(sim_backend()),
        "cpu" => bail!("the CPU backend has no tunable kernels (its GEMM comes from matrixmultiply)"),
        other => {
            let mut have = vec!["ptx-sim"];
            if cfg!(feature = "wgpu") {
                have.push("wgpu");
            }
            if cfg!(feature = "cuda") {
                have.push("cuda");
            }
            bail!(
                "cannot tune backend `{other}` in this build (tunable: {}; GPU backends need `--features wgpu` or `--features cuda`)",
                have.join(", ")
            )
        }
    };
    let settings = vidrt::runtime::tune::TimingSettings { warmup, repeats: repeats.max(1) };
    let mut db = match b.tune_db() {
        Some(db) => db.clone(),
        None => vidrt::runtime::tune::TuneDb::in_memory(b.device_info()),
    };
    eprintln!(
        "tuning {model} at {width}x{height}x{frames} on {} into {}",
        b.describe(),
        db.path.as_ref().map_or("memory (--no-tune-cache)".to_string(), |p| p.display().to_string())
    );
    if let Some(note) = b.timing_note() {
        eprintln!("note: {note}");
    }
    let mut bar = TuneBar { bar: None };
    let sum = vidrt::tune::tune_backend(b.as_ref(), &mut db, &graphs, settings, &mut bar).context("tuning")?;
    for l in &sum.lines {
        println!("{l}");
    }
    println!(
        "tuned {} problem(s), {} already in the database, {} failed; {} entries in the database",
        sum.tuned,
        sum.cached,
        sum.failed,
        db.len()
    );
    Ok(if sum.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The tuning progress bar (with ETA).
struct TuneBar {
    bar: Option<indicatif::ProgressBar>,
}

impl vidrt::tune::TuneProgress for TuneBar {
    fn begin(&mut self, total: usize) {
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>6} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.bar = Some(indicatif::ProgressBar::new(total as u64).with_style(style).with_prefix("tune"));
    }

    fn problem(&mut self, done: usize, what: &str) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(what.to_string());
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_with_message("done");
        }
    }
}

fn inspect(model: &str, height: usize, width: usize, frames: usize, json: bool) -> Result<ExitCode> {
    let report = vidrt::inspect::inspect(model, height, width, frames).context("inspecting")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{}", vidrt::inspect::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// What the video shows.
    #[arg(long, default_value = "a red fox running through fresh snow, cinematic lighting")]
    prompt: String,
    /// What it should not show (diffusers' default: none).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Output files; the extension picks the format: .mp4 (H.264), .gif, .png (one file per
    /// frame: NAME_0000.png, ...), .y4m. Repeat for several formats from one generation.
    #[arg(long, short, default_value = "out/vidrt.mp4")]
    out: Vec<PathBuf>,
    /// A diffusers-layout model folder (transformer/, vae/, text_encoder/, tokenizer/,
    /// scheduler/). Default: the built-in tiny model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampling steps (model default: 50 for Wan2.1, 10 for the tiny model).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (default 5.0; 1 or less turns guidance off).
    #[arg(long)]
    guidance: Option<f64>,
    /// Flow shift of the sampler (default: the model's scheduler config, 3.0 for Wan2.1 480p;
    /// use 5.0 for 720p).
    #[arg(long)]
    shift: Option<f64>,
    /// Height in pixels, a multiple of 16 (model default: 480; tiny: 96).
    #[arg(long)]
    height: Option<usize>,
    /// Width in pixels, a multiple of 16 (model default: 832; tiny: 128).
    #[arg(long)]
    width: Option<usize>,
    /// Frames, 4k + 1 (1, 5, 9, ..., 81; others are refused; model default: 81; tiny: 17).
    #[arg(long)]
    frames: Option<usize>,
    /// Sampler: unipc (Wan's default) or euler.
    #[arg(long, default_value = "unipc")]
    scheduler: String,
    /// Frames per second of the output file.
    #[arg(long, default_value_t = vidrt::video::WAN_FPS)]
    fps: u32,
    /// Backend to run on.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Refuse, before any compute, a graph whose planned memory exceeds this (bytes, or with a
    /// K/M/G suffix): on the CPU the activation arena (default: the memory the OS reports
    /// available), on a GPU the arena plus the resident weights (CUDA default: the device's free
    /// memory).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    /// Debug mode: check every intermediate of every graph for NaN/inf (not only the
    /// outputs) and name the first node that produced one. Slow.
    #[arg(long)]
    check_intermediates: bool,
    /// Storage dtype of every graph's float tensors: f32, or bf16/f16 (mixed precision: each
    /// op still computes in f32; on CUDA the tensor-core kernels run). The video stays the
    /// same format.
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// `123`, `64K`, `512M`, `2G` (binary units) as bytes.
fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("`{s}`: unknown unit `{c}` (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("`{s}` is not a byte count"))?;
    n.checked_mul(mul).ok_or_else(|| format!("`{s}` is too large"))
}

/// One indicatif bar per stage.
struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl vidrt::pipeline::Progress for Bars {
    fn begin(&mut self, stage: vidrt::pipeline::Stage, total: usize) {
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>13} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = indicatif::ProgressBar::new(total as u64).with_style(style).with_prefix(stage.name());
        bar.tick();
        self.bar = Some(bar);
    }

    fn advance(&mut self, _: vidrt::pipeline::Stage, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    fn end(&mut self, _: vidrt::pipeline::Stage) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

fn generate(a: GenerateArgs) -> Result<ExitCode> {
    use vidrt::pipeline::{GenerateParams, Model, Pipeline};
    // Check every output path before any compute, so a typo costs nothing.
    for path in &a.out {
        vidrt::video::Format::from_path(path)?;
    }
    let precision = parse_precision(&a.precision)?;
    let model = match &a.model {
        Some(dir) if !dir.is_dir() => bail!(
            "--model {}: no such folder; give a diffusers-layout model folder (transformer/, vae/, \
             text_encoder/, tokenizer/, scheduler/), or leave --model out for the built-in tiny model",
            dir.display()
        ),
        Some(dir) => Model::load(dir).with_context(|| format!("loading model {}", dir.display()))?,
        None => Model::tiny()?,
    };
    // The library rounds frame counts down as diffusers does; the command line refuses them, so
    // a typo never silently makes another video than asked for.
    if let Some(f) = a.frames {
        let t = model.config.vae.temporal_factor().max(1);
        if f == 0 || !(f - 1).is_multiple_of(t) {
            let below = f.saturating_sub(1) / t * t + 1;
            bail!(
                "--frames must be {t}k + 1 (1, {}, {}, ...), got {f}; the nearest are {below} and {}",
                t + 1,
                2 * t + 1,
                below + t
            );
        }
    }
    if a.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    let b: Box<dyn Backend> = match (a.backend.as_str(), a.memory_limit) {
        ("cpu", limit) => {
            let limit = limit.or_else(vidrt::runtime::cpu::available_memory);
            Box::new(match limit {
                Some(l) => CpuBackend::new().with_memory_limit(l),
                None => CpuBackend::new(),
            })
        }
        #[cfg(feature = "cuda")]
        ("cuda", limit) => {
            let c = cuda_backend()?;
            let limit = match limit {
                Some(l) => l,
                None => c.free_memory().context("reading the GPU's free memory")?,
            };
            Box::new(vidrt::runtime::MemoryLimited { inner: Box::new(c), limit })
        }
        // Other devices report no free memory: only an explicit --memory-limit applies.
        (name, Some(limit)) => Box::new(vidrt::runtime::MemoryLimited { inner: backend(name)?, limit }),
        (name, None) => backend(name)?,
    };
    let b: Box<dyn Backend> = if precision == DType::F32 {
        b
    } else {
        Box::new(vidrt::runtime::ReducedPrecision { inner: b, dtype: precision })
    };
    let b: Box<dyn Backend> = if a.check_intermediates { Box::new(vidrt::runtime::CheckEveryNode(b)) } else { b };
    let mut pipe = Pipeline::new(model, b);
    // Ctrl-C stops the run at the next graph node; nothing has been written by then.
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    pipe.set_cancel(cancel);
    let params = GenerateParams {
        prompt: a.prompt,
        negative_prompt: a.negative_prompt,
        height: a.height,
        width: a.width,
        num_frames: a.frames,
        num_inference_steps: a.steps,
        guidance_scale: a.guidance,
        shift: a.shift,
        seed: a.seed,
        scheduler: a.scheduler.parse().map_err(|e| anyhow::anyhow!("--scheduler: {e}"))?,
        latents: None,
    };
    let r = pipe.model.resolve(&params)?;
    eprintln!(
        "{} on {}: {}x{}, {} frames, {} steps, guidance {}, shift {}, seed {}",
        pipe.model.source,
        pipe.backend().name(),
        r.width,
        r.height,
        r.num_frames,
        r.num_inference_steps,
        r.guidance_scale,
        r.shift,
        params.seed
    );
    let started = std::time::Instant::now();
    let out = match pipe.generate(&params, &mut Bars { bar: None }) {
        Ok(out) => out,
        Err(e) if e.is_cancelled() => {
            eprintln!("cancelled; no file was written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("generating")),
    };
    let video = vidrt::video::Video::from_tensor(&out.video, a.fps)?;
    for path in &a.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let files = vidrt::video::write(&video, path).with_context(|| format!("writing {}", path.display()))?;
        match files.as_slice() {
            [one] => eprintln!("wrote {}", one.display()),
            many => {
                eprintln!("wrote {} frames {} .. {}", many.len(), many[0].display(), many[many.len() - 1].display())
            }
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn ops(backend_name: &str, filter: Option<&str>) -> Result<ExitCode> {
    use vidrt::harness;
    let b = backend(backend_name)?;
    let reference = CpuBackend::new();
    let cases: Vec<_> =
        harness::all_cases().into_iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))).collect();
    let results = harness::run_all(&cases, b.as_ref(), &reference);
    for r in &results {
        println!("{r}");
    }
    println!("{}", harness::support_table(&[b.as_ref()]));
    println!("{}", harness::summary(&results));
    Ok(if results.iter().any(|r| r.failed()) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

#[cfg(feature = "wgpu")]
fn wgpu_backend() -> Result<vidrt::runtime::wgpu::WgpuBackend> {
    use vidrt::runtime::wgpu::WgpuBackend;
    let plain = WgpuBackend::without_tuning().context("opening the wgpu backend")?;
    Ok(match tune_db_for(&plain.device_info()) {
        Some(db) => plain.with_db(db),
        None => plain,
    })
}

/// The tuning database a backend on device `dev` reads: `None` with `--no-tune-cache`, else
/// `--tune-db` or the default path; its warnings are printed.
fn tune_db_for(dev: &vidrt::runtime::tune::DeviceInfo) -> Option<Option<vidrt::runtime::tune::TuneDb>> {
    use vidrt::runtime::tune::TuneDb;
    let t = TUNE_CFG.get_or_init(TuneCfg::default);
    if t.no_cache {
        return None;
    }
    let path = t.db.clone().or_else(|| vidrt::runtime::tune::default_db_path(dev));
    let db = path.map(|p| TuneDb::open(&p, dev.clone()));
    for w in db.iter().flat_map(|d| &d.warnings) {
        eprintln!("warning: {w}");
    }
    Some(db)
}

#[cfg(feature = "cuda")]
fn cuda_backend() -> Result<vidrt::runtime::cuda::CudaBackend> {
    let plain = vidrt::runtime::cuda::CudaBackend::without_tuning().context("opening the CUDA backend")?;
    Ok(match tune_db_for(&plain.device_info()) {
        Some(db) => plain.with_db(db),
        None => plain,
    })
}

/// The PTX simulator with the tuning database the flags say.
fn sim_backend() -> vidrt::runtime::SimBackend {
    let plain = vidrt::runtime::SimBackend::without_tuning();
    match tune_db_for(&plain.device_info()) {
        Some(db) => plain.with_db(db),
        None => plain,
    }
}

fn backend(name: &str) -> Result<Box<dyn Backend>> {
    match name {
        "cpu" => Ok(Box::new(CpuBackend::new())),
        // The CUDA backend's PTX kernels run in the CPU simulator: slow, exact to the kernels'
        // arithmetic, for checking them without a GPU.
        "ptx-sim" => Ok(Box::new(sim_backend())),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Box::new(wgpu_backend()?)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Box::new(cuda_backend()?)),
        other => {
            let mut have = vec!["cpu", "ptx-sim"];
            if cfg!(feature = "wgpu") {
                have.push("wgpu");
            }
            if cfg!(feature = "cuda") {
                have.push("cuda");
            }
            bail!(
                "unknown backend `{other}` (this build has: {}; GPU backends need `--features wgpu` or `--features cuda`)",
                have.join(", ")
            )
        }
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
    let _ = TUNE_CFG.set(TuneCfg { no_cache: cli.no_tune_cache, db: cli.tune_db.clone() });
    let r = match cli.cmd {
        Cmd::Eval { case, backend, out } => eval(case, &backend, out),
        Cmd::Generate(a) => generate(a),
        Cmd::Ops { backend, filter } => ops(&backend, filter.as_deref()),
        Cmd::Inspect { model, height, width, frames, json } => inspect(&model, height, width, frames, json),
        Cmd::Bench(a) => bench(a),
        Cmd::Tune { model, height, width, frames, backend, repeats, warmup, components, no_cfg, precision } => {
            parse_precision(&precision).and_then(|p| {
                tune(&model, (height, width, frames), &backend, (repeats, warmup), &components, !no_cfg, p)
            })
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
