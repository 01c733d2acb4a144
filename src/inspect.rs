//! `vidrt inspect`: what the compiler does to a model's graphs, with no weights. For the
//! text encoder, one DiT forward and the chunked VAE decode: node counts before and after
//! the passes, kernel launches, FLOPs, the minimal bytes moved, the planned peak activation
//! memory against the naive sum of all intermediates, and the weight bytes, for bf16 and f32
//! storage.
//!
//! Definitions:
//! - *kernel launches*: nodes other than graph inputs, weights and reshapes (views).
//! - *FLOPs*: `vidrt_ir::cost` (a multiply-add is 2; attention counts q·kᵀ, p·v and the
//!   softmax's 5 per score).
//! - *minimal bytes moved*: every node reads each input once and writes its output once.
//! - *planned peak*: the arena of `vidrt_ir::passes::plan_memory` (liveness, in place, views;
//!   graph inputs included, weights excluded); *naive*: the sum of every value's size.
//! - The VAE decodes one latent frame per chunk; its peak is the larger chunk graph's (first
//!   or steady, caches included as graph inputs and outputs) and its FLOPs and bytes the sum
//!   over all chunks.

use serde::Serialize;
use vidrt_graph::config::ModelConfig;
use vidrt_graph::umt5::{build_umt5, Umt5Options};
use vidrt_graph::wan_dit::{build_dit, DitOptions, DitShape};
use vidrt_graph::wan_vae::{build_decoder_chunk, ChunkKind, ChunkOptions};
use vidrt_ir::passes::{self, plan_memory};
use vidrt_ir::{cost, DType, Graph, Op};

use crate::error::{Error, Result};

/// One graph's figures at one point of the compile path.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GraphStats {
    pub nodes: usize,
    pub kernel_launches: usize,
    pub flops: u64,
    pub bytes_moved_f32: u64,
    pub bytes_moved_bf16: u64,
    /// Planned arena for one run.
    pub peak_f32: u64,
    pub peak_bf16: u64,
    /// Sum of every value's size (nothing freed or shared).
    pub naive_f32: u64,
    pub naive_bf16: u64,
}

impl GraphStats {
    fn add_runs(&mut self, o: &GraphStats, runs: u64) {
        self.nodes = self.nodes.max(o.nodes);
        self.kernel_launches += o.kernel_launches * runs as usize;
        self.flops += o.flops * runs;
        self.bytes_moved_f32 += o.bytes_moved_f32 * runs;
        self.bytes_moved_bf16 += o.bytes_moved_bf16 * runs;
        self.peak_f32 = self.peak_f32.max(o.peak_f32);
        self.peak_bf16 = self.peak_bf16.max(o.peak_bf16);
        self.naive_f32 = self.naive_f32.max(o.naive_f32);
        self.naive_bf16 = self.naive_bf16.max(o.naive_bf16);
    }
}

/// One component (text encoder, DiT forward, VAE decode).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Component {
    pub name: String,
    /// What one run covers (tokens, chunks).
    pub detail: String,
    /// How many graph runs the figures sum (VAE chunks); 1 otherwise.
    pub runs: usize,
    /// As built (no passes; the memory plan still applies).
    pub unfused: GraphStats,
    /// After the default pass pipeline.
    pub fused: GraphStats,
    pub weight_bytes_f32: u64,
    pub weight_bytes_bf16: u64,
    /// Fused node counts by op name, after the passes.
    pub fused_ops: Vec<(String, usize)>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    pub height: usize,
    pub width: usize,
    pub frames: usize,
    /// Latent frames, height, width.
    pub latent: [usize; 3],
    /// DiT tokens per forward.
    pub tokens: usize,
    pub components: Vec<Component>,
}

fn storage_bytes(g: &Graph, id: vidrt_ir::NodeId, storage: Option<DType>) -> u64 {
    passes::plan::node_bytes(g.node(id), storage)
}

/// Minimal bytes a graph moves with floats stored as `storage`.
fn bytes_moved(g: &Graph, storage: Option<DType>) -> u64 {
    g.ids()
        .filter(|&id| !g.node(id).op.is_leaf() && !matches!(g.node(id).op, Op::Reshape { .. }))
        .map(|id| {
            storage_bytes(g, id, storage) + g.node(id).inputs.iter().map(|&i| storage_bytes(g, i, storage)).sum::<u64>()
        })
        .sum()
}

/// Nodes that launch a kernel.
pub fn kernel_launches(g: &Graph) -> usize {
    g.nodes.iter().filter(|n| !matches!(n.op, Op::Input { .. } | Op::Weight { .. } | Op::Reshape { .. })).count()
}

fn stats(g: &Graph) -> GraphStats {
    let (p32, p16) = (plan_memory(g, None), plan_memory(g, Some(DType::BF16)));
    GraphStats {
        nodes: g.len(),
        kernel_launches: kernel_launches(g),
        flops: cost::graph_cost(g).flops,
        bytes_moved_f32: bytes_moved(g, None),
        bytes_moved_bf16: bytes_moved(g, Some(DType::BF16)),
        peak_f32: p32.arena_bytes,
        peak_bf16: p16.arena_bytes,
        naive_f32: p32.naive_bytes,
        naive_bf16: p16.naive_bytes,
    }
}

fn weight_bytes(g: &Graph, storage: Option<DType>) -> u64 {
    g.weights().iter().map(|&(_, id)| storage_bytes(g, id, storage)).sum()
}

fn pass_err(e: passes::PassError) -> Error {
    Error::Other(format!("passes: {e}"))
}

/// Builds the component from its graphs (each with how many times it runs).
fn component(name: &str, detail: String, graphs: &[(Graph, u64)]) -> Result<Component> {
    let (mut unfused, mut fused) = (GraphStats::default(), GraphStats::default());
    let mut fused_ops: Vec<(String, usize)> = Vec::new();
    let (mut w32, mut w16) = (0, 0);
    for (g, runs) in graphs {
        let (opt, _) = passes::pipeline(g).map_err(pass_err)?;
        unfused.add_runs(&stats(g), *runs);
        fused.add_runs(&stats(&opt), *runs);
        w32 = w32.max(weight_bytes(g, None));
        w16 = w16.max(weight_bytes(g, Some(DType::BF16)));
        for n in opt.nodes.iter().filter(|n| n.op.is_fused()) {
            match fused_ops.iter_mut().find(|(k, _)| k == n.op.name()) {
                Some((_, c)) => *c += *runs as usize,
                None => fused_ops.push((n.op.name().to_string(), *runs as usize)),
            }
        }
    }
    let runs = graphs.iter().map(|(_, r)| *r as usize).sum();
    Ok(Component {
        name: name.into(),
        detail,
        runs,
        unfused,
        fused,
        weight_bytes_f32: w32,
        weight_bytes_bf16: w16,
        fused_ops,
    })
}

/// The preset `model`, after checking that `height` and `width` are positive multiples of the
/// VAE's spatial factor times the DiT's patch size (as `Pipeline::resolve` asks).
pub fn preset_at(model: &str, height: usize, width: usize) -> Result<ModelConfig> {
    let cfg = ModelConfig::preset(model).map_err(|e| Error::Invalid(e.to_string()))?;
    let sf = cfg.vae.spatial_factor();
    let (mh, mw) = (sf * cfg.dit.patch_size[1], sf * cfg.dit.patch_size[2]);
    if height == 0 || width == 0 || !height.is_multiple_of(mh) || !width.is_multiple_of(mw) {
        return Err(Error::Invalid(format!(
            "height {height} and width {width} must be positive multiples of {mh} and {mw}"
        )));
    }
    Ok(cfg)
}

/// Inspects `model` (a preset: tiny, wan2.1-t2v-1.3b, wan2.1-t2v-14b) at a video size.
pub fn inspect(model: &str, height: usize, width: usize, frames: usize) -> Result<Report> {
    let cfg = preset_at(model, height, width)?;
    let sf = cfg.vae.spatial_factor();
    let lat_f = cfg.vae.encoded_frames(frames).map_err(|e| Error::Invalid(e.to_string()))?;
    let (lat_h, lat_w) = (height / sf, width / sf);
    let text_len = cfg.max_sequence_length;

    let te = build_umt5(&cfg.text, 1, text_len, &Umt5Options::default()).map_err(|e| Error::Other(e.to_string()))?;
    let shape = DitShape { batch: 1, frames: lat_f, height: lat_h, width: lat_w, text_len };
    let tokens = shape.tokens(&cfg.dit).map_err(|e| Error::Invalid(e.to_string()))?;
    let dit = build_dit(&cfg.dit, &shape, &DitOptions::default()).map_err(|e| Error::Other(e.to_string()))?;
    let opts = ChunkOptions::new(1, lat_h, lat_w);
    let vae_err = |e: vidrt_graph::wan_vae::VaeError| Error::Other(e.to_string());
    let first = build_decoder_chunk(&cfg.vae, ChunkKind::First, &opts).map_err(vae_err)?;
    let mut vae_graphs = vec![(first.graph, 1u64)];
    if lat_f > 1 {
        let steady = build_decoder_chunk(&cfg.vae, ChunkKind::Steady, &opts).map_err(vae_err)?;
        vae_graphs.push((steady.graph, (lat_f - 1) as u64));
    }
    let components = vec![
        component("text encoder (umT5)", format!("{text_len} tokens, batch 1"), &[(te, 1)])?,
        component("DiT forward", format!("{tokens} tokens, {text_len} text tokens, batch 1"), &[(dit, 1)])?,
        component("VAE decode", format!("{lat_f} chunks of one latent frame (first + steady)"), &vae_graphs)?,
    ];
    Ok(Report { model: cfg.name.clone(), height, width, frames, latent: [lat_f, lat_h, lat_w], tokens, components })
}

fn gib(b: u64) -> String {
    let g = b as f64 / (1u64 << 30) as f64;
    if g >= 0.1 {
        format!("{g:.2} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// The human-readable form.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{} at {}×{}×{} (W×H×F); latent {}×{}×{} (F×H×W); DiT tokens {}\n",
        r.model, r.width, r.height, r.frames, r.latent[0], r.latent[1], r.latent[2], r.tokens
    );
    for c in &r.components {
        s += &format!("\n{} — {}\n", c.name, c.detail);
        s += &format!("  {:<34} {:>16} {:>16}\n", "", "as built", "after passes");
        let row = |label: &str, a: String, b: String| format!("  {label:<34} {a:>16} {b:>16}\n");
        let (u, f) = (&c.unfused, &c.fused);
        s += &row("nodes (largest graph)", u.nodes.to_string(), f.nodes.to_string());
        s += &row("kernel launches", u.kernel_launches.to_string(), f.kernel_launches.to_string());
        s += &row("FLOPs", format!("{:.3e}", u.flops as f64), format!("{:.3e}", f.flops as f64));
        s += &row("min bytes moved, bf16", gib(u.bytes_moved_bf16), gib(f.bytes_moved_bf16));
        s += &row("min bytes moved, f32", gib(u.bytes_moved_f32), gib(f.bytes_moved_f32));
        s += &row("planned peak activations, bf16", gib(u.peak_bf16), gib(f.peak_bf16));
        s += &row("planned peak activations, f32", gib(u.peak_f32), gib(f.peak_f32));
        s += &row("naive sum of intermediates, bf16", gib(u.naive_bf16), gib(f.naive_bf16));
        s += &row("naive sum of intermediates, f32", gib(u.naive_f32), gib(f.naive_f32));
        s += &format!("  weights: {} bf16, {} f32\n", gib(c.weight_bytes_bf16), gib(c.weight_bytes_f32));
        if !c.fused_ops.is_empty() {
            let list: Vec<String> = c.fused_ops.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            s += &format!("  fused nodes: {}\n", list.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_model_inspects() {
        let r = inspect("tiny", 96, 128, 17).unwrap();
        assert_eq!(r.components.len(), 3);
        for c in &r.components {
            assert!(c.fused.nodes < c.unfused.nodes, "{}: {:?}", c.name, c);
            assert!(c.fused.kernel_launches < c.unfused.kernel_launches, "{}", c.name);
            assert!(c.fused.peak_bf16 <= c.fused.naive_bf16 && c.fused.peak_bf16 > 0, "{}", c.name);
            assert!(c.fused.peak_bf16 < c.fused.peak_f32, "{}", c.name);
            assert!(c.fused.bytes_moved_f32 < c.unfused.bytes_moved_f32, "{}", c.name);
        }
        assert!(inspect("nope", 96, 128, 17).is_err());
        assert!(inspect("tiny", 97, 128, 17).is_err());
        assert!(render(&r).contains("DiT forward"));
    }
}
