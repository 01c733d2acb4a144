//! The bodies of the fuzz targets, callable from ordinary tests.
//!
//! Each function takes one input as bytes and feeds it to a parser that reads user files:
//!
//! - [`weights`]: the safetensors loader (`SafeTensorsFile`, `WeightStore`);
//! - [`ir_text`](crate::fuzzing::ir_text): the IR text parser, with the verifier and the print/parse round trip;
//! - [`config`](crate::fuzzing::config): the diffusers model config readers, then graph building at a tiny shape;
//! - [`golden_case`](crate::fuzzing::golden_case): a golden case's `case.json`.
//!
//! A typed error from the code under test is fine (most inputs are invalid). A body returns
//! `Err` when it finds a bug that is not a panic (a graph that parses but does not verify, a
//! failed round trip) or when the harness itself cannot run (its scratch folder cannot be
//! written); a panic inside the code under test is a bug too. The cargo-fuzz targets in
//! `fuzz/fuzz_targets/` panic on `Err` so libFuzzer records the input; `tests/fuzz_corpus.rs`
//! runs every seed of `fuzz/corpus/<target>/` and a bounded, seeded set of mutations of them
//! through these bodies under `catch_unwind`.
//!
//! Files an input is written to live in a scratch folder private to the process
//! ([`scratch_dir`](crate::fuzzing::scratch_dir), under `/dev/shm` where there is one), created on first use and reused;
//! [`remove_scratch`](crate::fuzzing::remove_scratch) deletes it after a run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vidrt_graph::config::ModelConfig;
use vidrt_graph::scheduler::{FlowEuler, Scheduler, UniPcFlow};
use vidrt_graph::umt5::{build_umt5, Umt5Config, Umt5Options};
use vidrt_graph::wan_dit::{build_dit, DitOptions, DitShape, WanDitConfig};
use vidrt_graph::wan_vae::{build_decoder_chunk, build_encoder_chunk, ChunkKind, ChunkOptions, WanVaeConfig};
use vidrt_graph::{SafeTensorsFile, WeightStore};
use vidrt_ir::{text, verify};

use crate::eval::{CheckResult, Report};
use crate::golden::{Case, Comparison, KnownDeviation};

/// A fuzz target: its name (the folder of its seeds under `fuzz/corpus/`), the largest input
/// it looks at (longer inputs return at once) and its body.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub name: &'static str,
    pub max_len: usize,
    pub body: fn(&[u8]) -> Result<(), String>,
}

/// Every target, in the order of `fuzz/Cargo.toml`.
pub const TARGETS: [Target; 4] = [
    Target { name: "weights", max_len: WEIGHTS_MAX_LEN, body: weights },
    Target { name: "ir_text", max_len: IR_TEXT_MAX_LEN, body: ir_text },
    Target { name: "config", max_len: CONFIG_MAX_LEN, body: config },
    Target { name: "golden_case", max_len: GOLDEN_CASE_MAX_LEN, body: golden_case },
];

const WEIGHTS_MAX_LEN: usize = 1 << 20;
const IR_TEXT_MAX_LEN: usize = 10 * 1024;
const CONFIG_MAX_LEN: usize = 4096;
const GOLDEN_CASE_MAX_LEN: usize = 64 * 1024;

fn scratch_path(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    base.join(format!("vidrt-fuzz-{target}-{}", std::process::id()))
}

/// The scratch folder of `target` in this process (`/dev/shm` when there is one, so the
/// per-input file writes stay in memory), created if missing.
pub fn scratch_dir(target: &str) -> Result<PathBuf, String> {
    let dir = scratch_path(target);
    std::fs::create_dir_all(&dir).map_err(|e| format!("fuzz harness: cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Deletes the scratch folder of `target` in this process. Call it after the last input of
/// that target: the folders the bodies set up once are not made again.
pub fn remove_scratch(target: &str) {
    let _ = std::fs::remove_dir_all(scratch_path(target));
}

/// A folder set up once per process by `init`; the error of a failed set-up is kept.
fn once_dir(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    init: fn() -> Result<PathBuf, String>,
) -> Result<&'static Path, String> {
    match cell.get_or_init(init) {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(e.clone()),
    }
}

fn write(p: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(p, bytes).map_err(|e| format!("fuzz harness: writing {}: {e}", p.display()))
}

/// Bytes → the safetensors weight loader: `SafeTensorsFile::open` and
/// `WeightStore::from_file`, then every listed tensor read and converted to f32.
pub fn weights(data: &[u8]) -> Result<(), String> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if data.len() > WEIGHTS_MAX_LEN {
        return Ok(());
    }
    let dir = once_dir(&P, || scratch_dir("weights"))?;
    let p = dir.join("model.safetensors");
    // The loader only takes paths (it memory-maps the file): write the input there.
    write(&p, data)?;
    if let Ok(f) = SafeTensorsFile::open(&p) {
        for name in f.names() {
            let shape = f.shape(name);
            if let Ok(t) = f.get(name) {
                if Some(t.shape()) != shape.as_ref() {
                    return Err(format!("`{name}`: get() returned shape {} but shape() says {shape:?}", t.shape()));
                }
                let v = t.to_f32_vec();
                if v.len() != t.shape().numel() {
                    return Err(format!("`{name}`: {} f32 values for shape {}", v.len(), t.shape()));
                }
            }
        }
        let _ = f.all();
        let _ = f.get("\u{0}missing");
    }
    if let Ok(store) = WeightStore::from_file(&p) {
        for name in store.names() {
            if let (Some(shape), Ok(t)) = (store.shape(name), store.get(name)) {
                let _ = store.get_shaped(name, &shape);
                let _ = t.to_f32_vec();
            }
        }
    }
    Ok(())
}

/// UTF-8 text → `vidrt_ir::text::parse`. A graph that parses must verify, and printing it and
/// parsing the print must give the same graph (and the same text again).
pub fn ir_text(data: &[u8]) -> Result<(), String> {
    // Parsing is linear but inference per node is not free: keep each input quick.
    if data.len() > IR_TEXT_MAX_LEN {
        return Ok(());
    }
    let Ok(src) = std::str::from_utf8(data) else { return Ok(()) };
    let Ok(g) = text::parse(src) else { return Ok(()) };
    if let Err(e) = verify(&g) {
        return Err(format!("parse accepted a graph that does not verify: {e}\n--- input ---\n{src}"));
    }
    let printed = text::print(&g);
    let back = text::parse(&printed)
        .map_err(|e| format!("round trip: the printed graph does not parse: {e}\n--- printed ---\n{printed}"))?;
    let reprinted = text::print(&back);
    if printed != reprinted {
        return Err(format!(
            "round trip: print(parse(print(g))) != print(g)\n--- printed ---\n{printed}\n--- reprinted ---\n{reprinted}"
        ));
    }
    if back.outputs != g.outputs {
        return Err(format!("round trip: outputs differ\n--- printed ---\n{printed}"));
    }
    // Compared through `Debug`: exact for every f64 (as `{:?}` is), and NaN equals NaN there.
    let (a, b) = (format!("{:?}", g.nodes), format!("{:?}", back.nodes));
    if a != b {
        return Err(format!(
            "round trip: nodes differ\n--- printed ---\n{printed}\n--- before ---\n{a}\n--- after ---\n{b}"
        ));
    }
    Ok(())
}

const CONFIG_FILES: [&str; 4] =
    ["transformer/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"];

/// Splits at lines `---` (at most 4 parts).
fn split_documents(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\n---\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

fn build_graphs(m: &ModelConfig, kind: ChunkKind) {
    // DiT: at most 1 block, one patch per axis, one text token.
    let mut dit = m.dit.clone();
    dit.num_layers = dit.num_layers.min(1);
    let [pt, ph, pw] = dit.patch_size;
    let shape = DitShape { batch: 1, frames: pt, height: ph, width: pw, text_len: 1 };
    let _ = build_dit(&dit, &shape, &DitOptions { activations: true });
    // VAE: one residual block per stage, at most 4 stages, the smallest frame it takes; the
    // first or the steady chunk (the input decides).
    let mut vae = m.vae.clone();
    vae.num_res_blocks = vae.num_res_blocks.min(1);
    if vae.dim_mult.len() <= 4 {
        let s = vae.spatial_factor();
        let _ = build_decoder_chunk(&vae, kind, &ChunkOptions::new(1, 1, 1));
        let _ = build_encoder_chunk(&vae, kind, &ChunkOptions::new(1, s, s));
    }
    // umT5: at most 1 layer, 2 tokens.
    let mut text = m.text.clone();
    text.num_layers = text.num_layers.min(1);
    let _ = build_umt5(&text, 1, 2, &Umt5Options { activations: true, ..Umt5Options::default() });
    // Schedulers: a 3-step schedule with the config's shift and training length, stepped once.
    let steps: [Box<dyn Scheduler>; 2] = match (
        UniPcFlow::with_train_timesteps(3, m.flow_shift, m.num_train_timesteps),
        FlowEuler::with_train_timesteps(3, m.flow_shift, m.num_train_timesteps),
    ) {
        (Ok(a), Ok(b)) => [Box::new(a), Box::new(b)],
        _ => return,
    };
    for mut s in steps {
        let x = [0.5f32, -1.0];
        let _ = s.model_timestep(0);
        let _ = s.step(&[0.1, 0.2], &x);
    }
}

/// Bytes → the model config readers. The input is up to four documents separated by lines
/// `---`: `transformer/config.json`, `vae/config.json`, `text_encoder/config.json` and
/// `scheduler/scheduler_config.json` (a missing one is a missing file). They are written into
/// a diffusers-layout folder and read with `ModelConfig::from_dir`; each is also fed to its
/// in-memory parser. A config that is accepted must then build its graphs at a tiny shape
/// (layer counts clamped to 1 so one input stays fast; widths are kept: graph building
/// allocates no tensors, so huge widths only test the overflow checks).
pub fn config(data: &[u8]) -> Result<(), String> {
    static D: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if data.len() > CONFIG_MAX_LEN {
        return Ok(());
    }
    let d = once_dir(&D, || {
        let d = scratch_dir("config")?.join("model");
        for f in CONFIG_FILES {
            if let Some(p) = d.join(f).parent() {
                std::fs::create_dir_all(p).map_err(|e| format!("fuzz harness: mkdir {}: {e}", p.display()))?;
            }
        }
        Ok(d)
    })?;
    let parts = split_documents(data);
    for (i, f) in CONFIG_FILES.iter().enumerate() {
        let p = d.join(f);
        match parts.get(i) {
            Some(bytes) => write(&p, bytes)?,
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    // The in-memory readers, one per document.
    if let Some(t) = parts.first().and_then(|b| std::str::from_utf8(b).ok()) {
        let _ = WanDitConfig::from_json_str(t);
    }
    if let Some(v) = parts.get(1).and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) {
        let _ = WanVaeConfig::from_json(&v);
    }
    if let Some(t) = parts.get(2).and_then(|b| std::str::from_utf8(b).ok()) {
        if let Ok(c) = Umt5Config::from_json(t) {
            let _ = c.validate();
            let _ = c.feed_forward();
        }
    }
    if let Ok(m) = ModelConfig::from_dir(d) {
        build_graphs(&m, if data.len().is_multiple_of(2) { ChunkKind::First } else { ChunkKind::Steady });
    }
    Ok(())
}

fn golden_dir() -> Result<PathBuf, String> {
    let d = scratch_dir("golden_case")?;
    // `out` f32 [2] and `ids` i64 [1].
    let header = r#"{"out":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"ids":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for x in [1.0f32, -2.0] {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.extend_from_slice(&7i64.to_le_bytes());
    write(&d.join("t.safetensors"), &bytes)?;
    Ok(d)
}

fn plain(name: &str) -> bool {
    !name.is_empty() && name != ".." && Path::new(name).file_name().and_then(|f| f.to_str()) == Some(name)
}

/// Bytes → a golden case's `case.json` (`Case::from_json`, the parser behind `Case::load`).
/// An accepted case then has its checks triaged, its config read the way `vidrt eval` reads
/// it for the component it names, and the tensors its checks and inputs name looked up in a
/// scratch case folder holding one small safetensors file `t.safetensors` (only plain file
/// names are looked up, so no input reaches outside that folder).
pub fn golden_case(data: &[u8]) -> Result<(), String> {
    static D: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if data.len() > GOLDEN_CASE_MAX_LEN {
        return Ok(());
    }
    let dir = once_dir(&D, golden_dir)?;
    let Ok(text) = std::str::from_utf8(data) else { return Ok(()) };
    let Ok(case) = Case::from_json(dir, text) else { return Ok(()) };
    let _ = case.error("fuzz");
    let comparisons = [
        Comparison { rel_l2: 0.0, max_abs: 0.0, non_finite: false },
        Comparison { rel_l2: 1e-3, max_abs: 1.0, non_finite: false },
        Comparison { rel_l2: f64::NAN, max_abs: f64::INFINITY, non_finite: true },
    ];
    let mut results = Vec::new();
    for (i, check) in case.checks.iter().enumerate() {
        let c = comparisons[i % comparisons.len()];
        let _ = check.passes(&c);
        if let Some(k) = KnownDeviation::find(&case.kind, check) {
            let _ = k.holds(&c);
        }
        if plain(&check.file) {
            if let Ok(t) = case.tensor(&check.file, &check.tensor) {
                let _ = crate::golden::compare(&t, &t);
            }
        }
        let outcome = if i % 4 == 3 { Err("not produced".to_string()) } else { Ok(c) };
        results.push(CheckResult { check: check.clone(), outcome });
    }
    let report = Report { case: case.kind.clone(), results };
    let _ = report.passed();
    let _ = report.triage();
    for r in &case.inputs {
        if plain(&r.file) {
            let _ = case.tensor(&r.file, &r.tensor);
        }
    }
    // The component configs, as `vidrt eval` reads them.
    let config = case.config();
    match case.kind.as_str() {
        "dit" => {
            if let Some(k) = config.get("init_kwargs") {
                let _ = WanDitConfig::from_json(k);
            }
        }
        "vae" => {
            if let Some(k) = config.get("init_kwargs") {
                let _ = WanVaeConfig::from_json(k);
            }
        }
        "text_encoder" => {
            if let Some(c) = config.get("UMT5Config").cloned() {
                if let Ok(c) = Umt5Config::from_value(c) {
                    let _ = c.validate();
                }
            }
        }
        _ => {}
    }
    Ok(())
}
