//! Bytes → the model config readers. The input is up to four documents separated by lines
//! `---`: `transformer/config.json`, `vae/config.json`, `text_encoder/config.json` and
//! `scheduler/scheduler_config.json` (a missing one is a missing file). They are written into
//! a diffusers-layout folder and read with `ModelConfig::from_dir`; each is also fed to its
//! in-memory parser. A config that is accepted must then build its graphs at a tiny shape
//! (layer counts clamped to 1 so one input stays fast; widths are kept: graph building allocates
//! no tensors, so huge widths only test the overflow checks). Errors are fine; a panic is a
//! bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vidrt_graph::config::ModelConfig;
use vidrt_graph::scheduler::{FlowEuler, Scheduler, UniPcFlow};
use vidrt_graph::umt5::{build_umt5, Umt5Config, Umt5Options};
use vidrt_graph::wan_dit::{build_dit, DitOptions, DitShape, WanDitConfig};
use vidrt_graph::wan_vae::{build_decoder_chunk, build_encoder_chunk, ChunkKind, ChunkOptions, WanVaeConfig};

const FILES: [&str; 4] =
    ["transformer/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"];

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = vidrt_fuzz::scratch_dir("config").join("model");
        for f in FILES {
            if let Some(p) = d.join(f).parent() {
                std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("fuzz harness: mkdir {}: {e}", p.display()));
            }
        }
        d
    })
}

/// Splits at lines `---` (at most 4 parts).
fn split(data: &[u8]) -> Vec<&[u8]> {
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

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let parts = split(data);
    let d = dir();
    for (i, f) in FILES.iter().enumerate() {
        let p = d.join(f);
        match parts.get(i) {
            Some(bytes) => std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("fuzz harness: {}: {e}", p.display())),
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
        build_graphs(&m, if data.len() % 2 == 0 { ChunkKind::First } else { ChunkKind::Steady });
    }
});
