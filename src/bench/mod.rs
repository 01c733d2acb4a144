//! `vidrt bench`: kernel and model benchmarks against the device's measured roofline.
//!
//! - **Kernel suite**: one-op graphs at the real Wan2.1 shapes of the chosen model — the DiT
//!   GEMMs (`[1, S, D]·[N, D]ᵀ` with S the DiT token count, 32760 for 480×832×81 frames), self-
//!   and cross-attention (`[1, S, H, hd]`, BSHD), the q/k RMS norm and the fused layer norm +
//!   modulate (memory-bound examples), and every distinct 3×3×3 causal conv of a steady VAE
//!   decoder chunk (cache frames prepended, so no temporal padding).
//! - **Model suite**: the text encoder, one DiT forward (batch 1), one denoising step (the DiT
//!   batched for classifier-free guidance, batch 2) and one steady VAE decoder chunk, with
//!   seeded random weights ([`RandomWeights`]).
//! - **Peaks**, measured in the same run: a large streaming copy (`neg` over a long vector,
//!   GB/s) and a large square matmul (TFLOP/s). Every result is reported as a fraction of
//!   them, and of its roofline bound `min(peak_flops, intensity × peak_bw)`.
//!
//! Timing: `vidrt_runtime::tune::time_runs` — warm-up runs, then the median of `repeats`
//! runs, each with fresh inputs. Where the backend measures it (CUDA events around the
//! launches, wgpu timestamp queries around the compute pass) a time is the kernels' device
//! time alone, and the result says `timing: kernel` (compare with the PyTorch peer's
//! `--timing kernel`); elsewhere (the CPU) it is the wall time of one whole `Executable::run`
//! (inputs written, kernels run, outputs read back), `timing: wall`. The copy peak is
//! measured the same way as everything else, which keeps the fractions comparable.
//!
//! FLOPs come from `vidrt_ir::cost`; bytes are the minimal bytes moved (each node of the
//! compiled, fused graph reads each input once and writes its output once, as in
//! `vidrt inspect`).
//!
//! `scale` shrinks every problem for a quick run: DiT token counts are divided by it (rounded
//! up), the VAE latent height and width are each divided by it, the model suite divides the
//! latent frames, height and width (rounded to the patch) and the text length, the copy peak
//! is divided by `scale²` and the matmul peak's side by `scale`. Names carry the actual
//! shapes, so [`compare`] never matches problems of different sizes.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vidrt_ir::{cost, passes, DType, Graph, Op, Shape, Tensor};
use vidrt_runtime::tune::{time_runs, Timed, TimingSettings};
use vidrt_runtime::{Backend, RuntimeError, WeightSource};

use crate::error::{Error, Result};

/// The JSON schema version of [`BenchReport`].
pub const SCHEMA_VERSION: u32 = 1;

/// Which benchmarks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    Kernels,
    Models,
    All,
}

impl std::str::FromStr for Suite {
    type Err = Error;
    fn from_str(s: &str) -> Result<Suite> {
        match s.to_ascii_lowercase().as_str() {
            "kernels" | "kernel" => Ok(Suite::Kernels),
            "models" | "model" => Ok(Suite::Models),
            "all" => Ok(Suite::All),
            other => Err(Error::Invalid(format!("unknown bench suite `{other}` (expected kernels, models or all)"))),
        }
    }
}

/// The device a report was made on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchDevice {
    /// Backend name (`cpu`, `wgpu`, `cuda`, `torch-cuda`, ...).
    pub backend: String,
    /// Device, adapter or CPU model name.
    #[serde(default)]
    pub name: String,
    /// Compute capability, adapter type, or CPU architecture.
    #[serde(default)]
    pub arch: String,
    /// Driver name and version.
    #[serde(default)]
    pub driver: String,
    /// Worker threads (CPU backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl From<vidrt_runtime::tune::DeviceInfo> for BenchDevice {
    fn from(d: vidrt_runtime::tune::DeviceInfo) -> Self {
        BenchDevice { backend: d.backend, name: d.name, arch: d.arch, driver: d.driver, threads: None }
    }
}

/// The device description of a wgpu backend: its adapter name and tuning-key device info.
#[cfg(feature = "wgpu")]
pub fn wgpu_device(b: &vidrt_runtime::wgpu::WgpuBackend) -> BenchDevice {
    let info = b.device_info();
    BenchDevice { name: b.adapter_name(), ..BenchDevice::from(info) }
}

/// The host CPU: model name from `/proc/cpuinfo` (where there is one) and rayon's thread count.
pub fn cpu_device() -> BenchDevice {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    BenchDevice {
        backend: "cpu".into(),
        name,
        arch: std::env::consts::ARCH.to_string(),
        driver: format!("vidrt CpuBackend ({})", std::env::consts::OS),
        threads: Some(rayon::current_num_threads()),
    }
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub suite: Suite,
    /// Untimed runs before the timed ones.
    pub warmup: u32,
    /// Timed runs (the median is reported).
    pub repeats: u32,
    /// Model preset whose shapes are benchmarked (`wan2.1-t2v-1.3b`, `wan2.1-t2v-14b`, `tiny`).
    pub model: String,
    /// Divides the problem sizes (1 = the real shapes); see the module docs.
    pub scale: usize,
    /// Video height, width and frames; `None` for the model's defaults (480×832×81 for Wan).
    pub size: Option<(usize, usize, usize)>,
    /// Measure the copy and matmul peaks (the roofline).
    pub peaks: bool,
    /// Only benchmarks whose name contains this (peaks are always kept).
    pub filter: Option<String>,
    /// The device description for the report; `None` to derive it (the host CPU for `cpu`,
    /// else just the backend name). The caller fills it for GPU backends (`wgpu_device`).
    pub device: Option<BenchDevice>,
    /// Seed of the random weights and inputs.
    pub seed: u64,
    /// Storage dtype of the benchmarked graphs' float tensors: f32, or bf16/f16 through
    /// [`vidrt_ir::passes::reduce_precision_with`], outputs left 16-bit as well (the
    /// tensor-core kernels on CUDA). Names of a 16-bit run end in ` bf16`/` f16`, so
    /// [`compare`] never pairs different precisions.
    pub precision: DType,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let t = TimingSettings::default();
        BenchOptions {
            suite: Suite::All,
            warmup: t.warmup,
            repeats: t.repeats,
            model: "wan2.1-t2v-1.3b".into(),
            scale: 1,
            size: None,
            peaks: true,
            filter: None,
            device: None,
            seed: 0,
            precision: DType::F32,
        }
    }
}

impl BenchOptions {
    /// A run that finishes in seconds on a CPU or lavapipe: the tiny model, shapes divided by
    /// 16, one warm-up and three repeats.
    pub fn small() -> Self {
        BenchOptions { model: "tiny".into(), scale: 16, warmup: 1, repeats: 3, ..BenchOptions::default() }
    }
}

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Unique within a report; carries the shapes (what [`compare`] matches on).
    pub name: String,
    /// `kernel`, `model` or `peak`.
    pub kind: String,
    /// The op or component (`matmul`, `attention`, `conv3d`, `rms_norm`, `layer_norm_modulate`,
    /// `dit`, `text_encoder`, `vae_decode`, `copy`).
    pub op: String,
    /// Input shapes (graph inputs, in order; model graphs list only their activations).
    #[serde(default)]
    pub shapes: Vec<Vec<usize>>,
    #[serde(default)]
    pub dtype: String,
    /// Median time of one run, milliseconds: the kernels' device time where `timing` is
    /// `kernel`, else (`wall`) the wall time of a whole run with its transfers.
    pub time_ms: f64,
    /// `kernel` (CUDA events, wgpu timestamps) or `wall`; empty in reports from before it.
    #[serde(default)]
    pub timing: String,
    pub flops: u64,
    /// Minimal bytes moved.
    pub bytes: u64,
    pub tflops: f64,
    pub gbps: f64,
    /// FLOPs per byte.
    pub intensity: f64,
    /// `tflops / peak TFLOP/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frac_peak_flops: Option<f64>,
    /// `gbps / peak GB/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frac_peak_bw: Option<f64>,
    /// Roofline bound `min(peak_flops, intensity × peak_bw)`, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attainable_tflops: Option<f64>,
    /// `tflops / attainable_tflops` (for zero-FLOP problems: `gbps / peak GB/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frac_roofline: Option<f64>,
}

/// The device's measured peaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    pub copy_gbps: f64,
    pub matmul_tflops: f64,
    /// The benchmarks they came from.
    #[serde(default)]
    pub copy_name: String,
    #[serde(default)]
    pub matmul_name: String,
}

impl Peaks {
    /// The roofline bound at `intensity` FLOP/B, TFLOP/s.
    pub fn attainable(&self, intensity: f64) -> f64 {
        self.matmul_tflops.min(intensity * self.copy_gbps / 1e3)
    }

    /// The ridge point (FLOP/B) where the bandwidth and compute roofs meet.
    pub fn ridge(&self) -> f64 {
        if self.copy_gbps > 0.0 {
            self.matmul_tflops * 1e3 / self.copy_gbps
        } else {
            f64::INFINITY
        }
    }
}

/// A whole run: what, where, and the results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema: u32,
    /// What produced it (`vidrt 0.1.0`, `torch 2.5.1`).
    pub tool: String,
    pub device: BenchDevice,
    pub model: String,
    pub scale: usize,
    pub warmup: u32,
    pub repeats: u32,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub date_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peaks: Option<Peaks>,
    pub results: Vec<BenchResult>,
    /// The benchmarks that failed (to compile or to run), each with its error; the others
    /// still ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<BenchFailure>,
}

/// A benchmark that failed, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchFailure {
    pub name: String,
    pub error: String,
}

/// Seeded random weights of the declared shapes: uniform in ±1/√fan_in for matrices and
/// kernels, 1 ± 0.1 for vectors (norm scales, biases), zeros for integer tensors. Each tensor's
/// values depend only on the seed and its name.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomWeights {
    pub seed: u64,
}

impl WeightSource for RandomWeights {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError> {
        if !dtype.is_float() {
            return Ok(Tensor::full(shape.clone(), dtype, 0.0));
        }
        let (center, amp) = if shape.rank() <= 1 {
            (1.0, 0.1)
        } else {
            let fan_in: usize = shape.0[1..].iter().product();
            (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
        };
        let seed = fnv(name) ^ self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let v = uniform(shape.numel(), seed, center, amp);
        Tensor::from_f32(shape.clone(), v)
            .map_err(|e| RuntimeError::Weight { name: name.to_string(), reason: e.to_string() })
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `n` values in `center ± amp` (xorshift per 64 Ki-element chunk, in parallel).
fn uniform(n: usize, seed: u64, center: f32, amp: f32) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let mut v = vec![0f32; n];
    v.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
        let mut s = (seed ^ (i as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for x in c.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            *x = center + amp * (2.0 * u - 1.0 + 1e-3);
        }
    });
    v
}

/// Fresh inputs for `g`: floats in [-1, 1), integer inputs 1 (token ids, a key mask that
/// keeps every key).
fn fresh_inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    g.inputs()
        .into_iter()
        .enumerate()
        .map(|(k, (name, id))| {
            let node = g.node(id);
            let t = if node.dtype.is_float() {
                let v = uniform(node.shape.numel(), seed.wrapping_mul(1_000_003).wrapping_add(k as u64), 0.0, 1.0);
                Tensor::from_f32(node.shape.clone(), v)
                    .map(|t| if node.dtype == DType::F32 { t } else { t.cast(node.dtype) })
                    .unwrap_or_else(|_| Tensor::full(node.shape.clone(), node.dtype, 0.5))
            } else {
                Tensor::full(node.shape.clone(), node.dtype, 1.0)
            };
            (name.to_string(), t)
        })
        .collect()
}

mod cases;

use cases::all_cases;
pub use cases::{plan, Planned};

/// FLOPs and minimal bytes of `g` as compiled (after the default passes; the graph as
/// built if the passes fail).
fn graph_figures(g: &Graph) -> (u64, u64) {
    let opt = passes::pipeline(g).map(|(o, _)| o).unwrap_or_else(|_| g.clone());
    let flops = cost::graph_cost(&opt).flops;
    let bytes = opt
        .ids()
        .filter(|&id| !opt.node(id).op.is_leaf() && !matches!(opt.node(id).op, Op::Reshape { .. }))
        .map(|id| {
            let n = opt.node(id);
            n.bytes() as u64 + n.inputs.iter().map(|&i| opt.node(i).bytes() as u64).sum::<u64>()
        })
        .sum();
    (flops, bytes)
}

fn result_of(info: Planned, dtype: DType, t: Timed, flops: u64, bytes: u64) -> BenchResult {
    let time_us = t.us;
    let secs = time_us * 1e-6;
    let rate = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
    BenchResult {
        name: info.name,
        kind: info.kind,
        op: info.op,
        shapes: info.shapes,
        dtype: dtype.name().into(),
        time_ms: time_us / 1e3,
        timing: if t.kernel { "kernel" } else { "wall" }.into(),
        flops,
        bytes,
        tflops: rate(flops) / 1e12,
        gbps: rate(bytes) / 1e9,
        intensity: if bytes > 0 { flops as f64 / bytes as f64 } else { 0.0 },
        frac_peak_flops: None,
        frac_peak_bw: None,
        attainable_tflops: None,
        frac_roofline: None,
    }
}

/// Fills every result's fractions of `peaks`.
pub fn apply_peaks(results: &mut [BenchResult], peaks: &Peaks) {
    let ratio = |a: f64, b: f64| if b > 0.0 && b.is_finite() { Some(a / b) } else { None };
    for r in results {
        r.frac_peak_flops = ratio(r.tflops, peaks.matmul_tflops);
        r.frac_peak_bw = ratio(r.gbps, peaks.copy_gbps);
        let att = peaks.attainable(r.intensity);
        r.attainable_tflops = Some(att);
        r.frac_roofline = if r.flops == 0 { r.frac_peak_bw } else { ratio(r.tflops, att) };
    }
}

/// Runs the benchmarks of `opts` on `backend`. `progress(done, total, name)` is called before
/// each benchmark and once at the end (`done == total`). A benchmark that fails is recorded
/// in [`BenchReport::failures`] and the others still run.
pub fn run(
    backend: &dyn Backend,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<BenchReport> {
    run_with_checkpoints(backend, opts, progress, &mut |_| {})
}

/// [`run`], handing `checkpoint` the report so far after each benchmark (so that a caller
/// can save it: a run cut short, by a time limit or a device fault, keeps what it measured).
pub fn run_with_checkpoints(
    backend: &dyn Backend,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
    checkpoint: &mut dyn FnMut(&BenchReport),
) -> Result<BenchReport> {
    let cases = all_cases(opts)?;
    let total = cases.len();
    let settings = TimingSettings { warmup: opts.warmup, repeats: opts.repeats.max(1) };
    let weights = RandomWeights { seed: opts.seed };
    let mut results = Vec::with_capacity(total);
    let mut failures = Vec::new();
    // After a lost device (a sticky fault) nothing more can run: the rest are failures.
    let mut lost: Option<String> = None;
    for (done, c) in cases.into_iter().enumerate() {
        progress(done, total, &c.info.name);
        if let Some(at) = &lost {
            failures.push(BenchFailure {
                name: c.info.name.clone(),
                error: format!("not run: the device was lost at `{at}`"),
            });
            continue;
        }
        let g = &c.graph;
        let base = opts.seed.wrapping_mul(0x0001_0000_0001).wrapping_add(done as u64 * 1000);
        let timed = backend.compile(g, &weights).and_then(|mut exe| {
            time_runs(exe.as_mut(), &mut |seed| fresh_inputs(g, base.wrapping_add(seed)), settings)
        });
        match timed {
            Ok(t) => {
                let (flops, bytes) = graph_figures(g);
                results.push(result_of(c.info, opts.precision, t, flops, bytes));
            }
            Err(e) => {
                if matches!(e, RuntimeError::DeviceLost(_)) {
                    lost = Some(c.info.name.clone());
                }
                failures.push(BenchFailure { name: c.info.name.clone(), error: e.to_string() })
            }
        }
        if done + 1 < total {
            checkpoint(&assemble(backend, opts, settings, results.clone(), failures.clone()));
        }
    }
    progress(total, total, "done");
    let report = assemble(backend, opts, settings, results, failures);
    checkpoint(&report);
    Ok(report)
}

/// The report of `results` and `failures`: the peaks measured among them applied.
fn assemble(
    backend: &dyn Backend,
    opts: &BenchOptions,
    settings: TimingSettings,
    mut results: Vec<BenchResult>,
    failures: Vec<BenchFailure>,
) -> BenchReport {
    let find = |op: &str| results.iter().find(|r| r.kind == "peak" && r.op == op);
    let peaks = match (find("copy"), find("matmul")) {
        (Some(c), Some(m)) => Some(Peaks {
            copy_gbps: c.gbps,
            matmul_tflops: m.tflops,
            copy_name: c.name.clone(),
            matmul_name: m.name.clone(),
        }),
        _ => None,
    };
    if let Some(p) = &peaks {
        apply_peaks(&mut results, p);
    }
    let device = match &opts.device {
        Some(d) => d.clone(),
        None if backend.name() == "cpu" => cpu_device(),
        None => BenchDevice { backend: backend.name().to_string(), ..BenchDevice::default() },
    };
    BenchReport {
        schema: SCHEMA_VERSION,
        tool: format!("vidrt {}", env!("CARGO_PKG_VERSION")),
        device,
        model: opts.model.clone(),
        scale: opts.scale,
        warmup: settings.warmup,
        repeats: settings.repeats,
        date_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        peaks,
        results,
        failures,
    }
}

// ---------------------------------------------------------------------------------------
// Output.

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a half-written file.
mod report;

pub use report::{compare, read_json, to_json, to_markdown, to_svg, write_json, write_markdown, write_svg};

#[cfg(test)]
mod tests {
    use super::report::cell;
    use super::*;
    use vidrt_runtime::CpuBackend;

    /// The CPU backend, refusing to compile graphs with an attention node (as a lost device
    /// with `true`).
    struct NoAttention(CpuBackend, bool);

    impl Backend for NoAttention {
        fn name(&self) -> &'static str {
            "no-attention"
        }
        fn support(&self, op: &vidrt_ir::Op, dtype: DType) -> vidrt_runtime::Support {
            self.0.support(op, dtype)
        }
        fn compile(
            &self,
            graph: &vidrt_ir::Graph,
            weights: &dyn vidrt_runtime::WeightSource,
        ) -> Result<Box<dyn vidrt_runtime::Executable>, RuntimeError> {
            if graph.nodes.iter().any(|n| matches!(n.op, vidrt_ir::Op::Attention { .. })) {
                return Err(if self.1 {
                    RuntimeError::DeviceLost("lost at attention".into())
                } else {
                    RuntimeError::Device("no attention here".into())
                });
            }
            self.0.compile(graph, weights)
        }
    }

    /// A benchmark that fails is a failure of the report, with its error, and the others
    /// still run; every checkpoint holds all that finished before it, the last the whole
    /// report; the failures survive the JSON round trip and show in the markdown.
    #[test]
    fn a_failing_benchmark_is_recorded_and_the_rest_still_run() {
        let opts = BenchOptions::small();
        let all = run(&CpuBackend::new(), &opts, &mut |_, _, _| {}).expect("bench run");
        assert!(all.failures.is_empty());
        let mut seen = Vec::new();
        let r = run_with_checkpoints(&NoAttention(CpuBackend::new(), false), &opts, &mut |_, _, _| {}, &mut |p| {
            seen.push(p.results.len() + p.failures.len())
        })
        .expect("bench run");
        assert!(!r.failures.is_empty(), "no attention benchmark in the small suite");
        assert!(r.failures.iter().all(|f| f.error.contains("no attention here")), "{:?}", r.failures);
        assert_eq!(r.results.len() + r.failures.len(), all.results.len());
        assert!(r.results.iter().all(|b| b.op != "attention"));
        assert_eq!(seen, (1..=all.results.len()).collect::<Vec<_>>());
        let back: BenchReport = serde_json::from_str(&to_json(&r).expect("json")).expect("reads back");
        assert_eq!(back.failures, r.failures);
        assert!(to_markdown(&r).contains("benchmarks failed"));
        // After a lost device the rest are not run: failures naming where it was lost.
        let r = run(&NoAttention(CpuBackend::new(), true), &opts, &mut |_, _, _| {}).expect("bench run");
        let first = r.failures.first().expect("a failure");
        assert!(first.error.contains("lost at attention"), "{first:?}");
        assert!(r.failures[1..].iter().all(|f| f.error.contains(&format!("the device was lost at `{}`", first.name))));
        assert_eq!(r.results.len() + r.failures.len(), all.results.len());
        assert!(r.failures.len() > 1, "nothing after the first attention benchmark");
    }

    fn small_report() -> BenchReport {
        let opts = BenchOptions::small();
        let mut calls = 0;
        let r = run(&CpuBackend::new(), &opts, &mut |_, _, _| calls += 1).expect("bench run");
        assert_eq!(calls, r.results.len() + 1);
        r
    }

    #[test]
    fn bench_small_suite_end_to_end() {
        let r = small_report();
        let ops: std::collections::HashSet<&str> = r.results.iter().map(|b| b.op.as_str()).collect();
        for op in [
            "copy",
            "matmul",
            "attention",
            "conv3d",
            "rms_norm",
            "layer_norm_modulate",
            "dit",
            "text_encoder",
            "vae_decode",
        ] {
            assert!(ops.contains(op), "no {op} benchmark in {ops:?}");
        }
        let names: std::collections::HashSet<&str> = r.results.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names.len(), r.results.len(), "benchmark names must be unique");
        for b in &r.results {
            assert!(b.time_ms > 0.0, "{}: time {}", b.name, b.time_ms);
            assert!(b.tflops.is_finite() && b.gbps.is_finite() && b.intensity.is_finite(), "{b:?}");
            assert!(b.bytes > 0, "{}", b.name);
            assert!(b.frac_roofline.is_some_and(f64::is_finite), "{b:?}");
        }
        assert!(r.peaks.as_ref().is_some_and(|p| p.copy_gbps > 0.0 && p.matmul_tflops > 0.0));
        assert_eq!(r.device.backend, "cpu");

        // JSON round trip, through the files.
        let dir = std::env::temp_dir().join(format!("vidrt-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let jp = dir.join("r.json");
        write_json(&r, &jp).expect("write json");
        let back = read_json(&jp).expect("read json");
        assert_eq!(to_markdown(&back), to_markdown(&r));
        assert_eq!(back.results.len(), r.results.len());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        for (x, y) in back.results.iter().zip(&r.results) {
            assert_eq!(
                (&x.name, &x.kind, &x.op, &x.shapes, x.flops, x.bytes),
                (&y.name, &y.kind, &y.op, &y.shapes, y.flops, y.bytes)
            );
            assert!(close(x.time_ms, y.time_ms) && close(x.tflops, y.tflops) && close(x.gbps, y.gbps), "{x:?} {y:?}");
        }
        assert_eq!((&back.device, back.scale, &back.model), (&r.device, r.scale, &r.model));

        // Markdown: one row per benchmark.
        let md = to_markdown(&r);
        write_markdown(&r, &dir.join("r.md")).expect("write md");
        for b in &r.results {
            assert_eq!(
                md.lines().filter(|l| l.starts_with(&format!("| {} |", cell(&b.name)))).count(),
                1,
                "{}",
                b.name
            );
        }

        // SVG: one point per benchmark.
        let svg = to_svg(&r);
        write_svg(&r, &dir.join("r.svg")).expect("write svg");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"point\"").count(), r.results.len());
        assert_eq!(svg.matches("<circle").count(), svg.matches("</circle>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));

        // Compare with itself: every ratio 1.00.
        let c = compare(&r, &r);
        let rows: Vec<&str> = c.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| benchmark")).collect();
        assert_eq!(rows.len(), r.results.len());
        for row in rows {
            let cols: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cols[3], "1.00", "{row}");
        }
        assert!(!c.contains("Only in"));
        // `VIDRT_BENCH_DUMP=DIR` keeps the outputs for a look.
        if let Some(keep) = std::env::var_os("VIDRT_BENCH_DUMP") {
            let keep = std::path::PathBuf::from(keep);
            std::fs::create_dir_all(&keep).expect("dump dir");
            for f in ["r.json", "r.md", "r.svg"] {
                std::fs::copy(dir.join(f), keep.join(f)).expect("dump");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The small suite on a wgpu adapter (lavapipe in CI; without one this fails, and
    /// scripts/test.sh leaves it out where it could not install lavapipe outside CI).
    #[cfg(feature = "wgpu")]
    #[test]
    fn bench_small_suite_on_wgpu() {
        let b = vidrt_runtime::wgpu::WgpuBackend::without_tuning()
            .unwrap_or_else(|e| panic!("no wgpu adapter ({e}); run scripts/install-lavapipe.sh"));
        let opts = BenchOptions { device: Some(wgpu_device(&b)), ..BenchOptions::small() };
        let r = run(&b, &opts, &mut |_, _, _| {}).expect("bench on wgpu");
        assert!(r.device.name.contains(&b.adapter_name()));
        for x in &r.results {
            assert!(x.time_ms > 0.0 && x.tflops.is_finite(), "{x:?}");
        }
        if let Some(keep) = std::env::var_os("VIDRT_BENCH_DUMP") {
            write_markdown(&r, &std::path::PathBuf::from(keep).join("wgpu.md")).expect("dump");
        }
    }

    /// `--precision bf16`: every graph stores floats in bf16 (no f32 output cast to time),
    /// names say so, the results carry the dtype and count 2-byte elements.
    #[test]
    fn bench_in_bf16_converts_the_graphs_and_names_them() {
        let opts = BenchOptions {
            precision: DType::BF16,
            suite: Suite::Kernels,
            filter: Some("matmul M".into()),
            ..BenchOptions::small()
        };
        let cases = all_cases(&opts).expect("cases");
        assert!(cases.len() > 2);
        for c in &cases {
            assert!(c.info.name.ends_with(" bf16"), "{}", c.info.name);
            for (_, id) in &c.graph.outputs {
                assert_eq!(c.graph.node(*id).dtype, DType::BF16, "{}", c.info.name);
            }
        }
        let r = run(&vidrt_runtime::CpuBackend::new(), &opts, &mut |_, _, _| {}).expect("runs");
        let f32_opts = BenchOptions { precision: DType::F32, ..opts };
        let f32_bytes: Vec<u64> =
            all_cases(&f32_opts).expect("cases").iter().map(|c| graph_figures(&c.graph).1).collect();
        for (res, b32) in r.results.iter().zip(f32_bytes) {
            assert_eq!(res.dtype, "bf16");
            assert_eq!(2 * res.bytes, b32, "{}: bf16 bytes are half the f32 bytes", res.name);
        }
    }

    #[test]
    fn bench_plan_real_shapes() {
        let p = plan(&BenchOptions { peaks: false, suite: Suite::Kernels, ..BenchOptions::default() }).expect("plan");
        let names: Vec<&str> = p.iter().map(|c| c.name.as_str()).collect();
        for n in [
            "matmul M=32760 K=1536 N=1536",
            "matmul M=32760 K=1536 N=8960",
            "matmul M=32760 K=8960 N=1536",
            "attention H=12 D=128 S=32760",
            "conv3d 384->384 k3 T=3 60x104",
            "conv3d 96->96 k3 T=6 480x832",
            "conv3d 96->3 k3 T=6 480x832",
        ] {
            assert!(names.contains(&n), "{n} not in {names:?}");
        }
        // `VIDRT_BENCH_DUMP=DIR` writes the kernel plans (for checking the torch peer's list).
        if let Some(keep) = std::env::var_os("VIDRT_BENCH_DUMP") {
            let keep = std::path::PathBuf::from(keep);
            std::fs::create_dir_all(&keep).expect("dump dir");
            for (model, scale) in [("wan2.1-t2v-1.3b", 1), ("wan2.1-t2v-1.3b", 7), ("wan2.1-t2v-14b", 4), ("tiny", 16)]
            {
                let o = BenchOptions { suite: Suite::Kernels, model: model.into(), scale, ..BenchOptions::default() };
                let p = plan(&o).expect("plan");
                let text = serde_json::to_string_pretty(&p).expect("json");
                std::fs::write(keep.join(format!("plan-{model}-{scale}.json")), text).expect("write");
            }
        }
    }

    /// What `benches/peers/torch_peer.py --dry-run` writes (one result kept): the peer's JSON
    /// reads as a report and compares by name.
    #[test]
    fn bench_reads_peer_json() {
        let peer = r#"{"schema": 1, "tool": "torch-peer dry run (placeholder times: nothing was run)", "device": {"backend": "torch-dry-run", "name": "none", "arch": "", "driver": ""}, "model": "tiny", "scale": 16, "warmup": 2, "repeats": 7, "date_unix": 1796119704, "results": [{"name": "matmul M=15 K=64 N=64", "kind": "kernel", "op": "matmul", "shapes": [[1, 15, 64], [64, 64]], "dtype": "f32", "time_ms": 1.0, "flops": 122880, "bytes": 24064, "tflops": 0.00012288, "gbps": 0.024064, "intensity": 5.1063829787234045, "frac_peak_flops": 0.00045776367187499995, "frac_peak_bw": 0.00286865234375, "attainable_tflops": 0.04283544510638298, "frac_roofline": 0.0028686523437499996}], "peaks": {"copy_gbps": 8.388608, "matmul_tflops": 0.268435456, "copy_name": "peak copy n=1048576", "matmul_name": "peak matmul 512x512x512"}}"#;
        let dir = std::env::temp_dir().join(format!("vidrt-bench-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("peer.json");
        std::fs::write(&path, peer).expect("write");
        let p = read_json(&path).expect("peer report");
        assert_eq!(p.results.len(), 1);
        assert_eq!(p.peaks.as_ref().map(|k| k.copy_gbps), Some(8.388608));
        let mut ours = p.clone();
        ours.results[0].time_ms = 2.0;
        assert!(compare(&ours, &p).contains("| matmul M=15 K=64 N=64 | 2.00 | 1.00 | 2.00 |"));
        std::fs::write(&path, "{\"schema\": 9}").expect("write");
        assert!(read_json(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bench_compare_reports_missing() {
        let mk = |names: &[&str]| BenchReport {
            schema: SCHEMA_VERSION,
            tool: "t".into(),
            device: BenchDevice::default(),
            model: "m".into(),
            scale: 1,
            warmup: 0,
            repeats: 1,
            date_unix: 0,
            peaks: None,
            failures: Vec::new(),
            results: names
                .iter()
                .map(|n| {
                    result_of(
                        Planned { name: n.to_string(), kind: "kernel".into(), op: "x".into(), shapes: vec![] },
                        DType::F32,
                        Timed { us: 2000.0, kernel: false },
                        10,
                        10,
                    )
                })
                .collect(),
        };
        let c = compare(&mk(&["a", "b"]), &mk(&["b", "c"]));
        assert!(c.contains("| b | 2.00 | 2.00 | 1.00 |"), "{c}");
        assert!(c.contains("Only in A: a") && c.contains("Only in B: c"), "{c}");
        assert!("kernels".parse::<Suite>().is_ok() && "x".parse::<Suite>().is_err());
    }
}
