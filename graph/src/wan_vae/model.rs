//! The per-chunk encoder and decoder graphs (SPEC-NOTES §3.2–3.4).
//!
//! Decoder chunk: input `z` `[B, z_dim, 1, h, w]` (one latent frame), `post_quant_conv` →
//! `decoder.*` → output `out` (unclamped video frames: 1 for the first chunk, the temporal
//! factor for later ones). Encoder chunk: input `video` `[B, C, T, H, W]` (T = 1 first, then
//! [`ENCODE_CHUNK_FRAMES`]) → `encoder.*` → `quant_conv` → output `moments`. The 1×1×1
//! `post_quant_conv` / `quant_conv` act per frame, so applying them chunk by chunk equals
//! diffusers' whole-tensor call.

use vidrt_ir::{DType, Graph, NodeId, Shape};

use super::blocks::{attention_block, causal_conv3d, mid_block, resample, residual_block, vae_rms_norm};
use super::{CacheSlot, ChunkCtx, ChunkKind, ConvSpec, ResampleMode, VaeError, WanVaeConfig};
use super::{DECODE_CHUNK_LATENTS, ENCODE_CHUNK_FRAMES};

type Result<T, E = VaeError> = std::result::Result<T, E>;

/// What a chunk graph is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    pub batch: usize,
    /// Latent height and width (decoder) or video height and width (encoder).
    pub height: usize,
    pub width: usize,
    /// Also output every module activation as `act.<name>` (see [`ChunkGraph::activations`]).
    pub activations: bool,
    /// Activation and weight dtype.
    pub dtype: DType,
}

impl ChunkOptions {
    /// f32, no activations.
    pub fn new(batch: usize, height: usize, width: usize) -> Self {
        ChunkOptions { batch, height, width, activations: false, dtype: DType::F32 }
    }
}

/// One chunk graph and what a driver needs to run it.
#[derive(Clone, Debug)]
pub struct ChunkGraph {
    pub graph: Graph,
    pub kind: ChunkKind,
    /// The frame input (`z` or `video`) and its shape.
    pub input: String,
    pub input_shape: Shape,
    /// The frame output (`out` or `moments`) and its shape.
    pub output: String,
    pub output_shape: Shape,
    /// Cache slots, in module order. A steady chunk reads `cache.<i>` and every chunk writes
    /// `cache_out.<i>`, both of the slot's shape, so one chunk's outputs feed the next.
    pub slots: Vec<CacheSlot>,
    /// Activation names, in module order (`post_quant_conv_out`, `decoder.conv_in_out`,
    /// `decoder.mid_block_out`, `decoder.up_blocks.<i>_out`; `encoder.conv_in_out`,
    /// `encoder.down_blocks.<i>_out`, `encoder.mid_block_out`, `encoder.out`,
    /// `quant_conv_out`), each a graph output [`ChunkGraph::activation_output`]. Empty unless
    /// asked for.
    pub activations: Vec<String>,
}

impl ChunkGraph {
    /// The graph output that holds activation `name`.
    pub fn activation_output(name: &str) -> String {
        format!("act.{name}")
    }
}

/// Records an activation output when asked for.
fn record(g: &mut Graph, acts: &mut Vec<String>, on: bool, name: &str, x: NodeId) -> Result<()> {
    if on {
        g.set_output(ChunkGraph::activation_output(name), x)?;
        acts.push(name.to_string());
    }
    Ok(())
}

fn check_opts(opts: &ChunkOptions) -> Result<()> {
    if opts.batch == 0 || opts.height == 0 || opts.width == 0 {
        return Err(VaeError::Shape(format!(
            "batch, height and width must be positive, got {}×{}×{}",
            opts.batch, opts.height, opts.width
        )));
    }
    if !opts.dtype.is_float() {
        return Err(VaeError::Config(format!("the VAE computes in floating point, not {}", opts.dtype)));
    }
    Ok(())
}

/// The decoder graph for one latent frame (`post_quant_conv` included). diffusers' up blocks
/// have no attention, so `attn_scales` does not affect the decoder.
pub fn build_decoder_chunk(cfg: &WanVaeConfig, kind: ChunkKind, opts: &ChunkOptions) -> Result<ChunkGraph> {
    cfg.validate()?;
    check_opts(opts)?;
    let on = opts.activations;
    let mut acts = Vec::new();
    let mut g = Graph::new();
    let input_shape = Shape::from([opts.batch, cfg.z_dim, DECODE_CHUNK_LATENTS, opts.height, opts.width]);
    let z = g.input("z", input_shape.clone(), opts.dtype)?;
    let mut cx = ChunkCtx::new(&mut g, kind);
    let x = causal_conv3d(&mut cx, z, "post_quant_conv", ConvSpec::k1(cfg.z_dim, cfg.z_dim))?;
    record(cx.g, &mut acts, on, "post_quant_conv_out", x)?;
    let dims = cfg.decoder_dims();
    let x = causal_conv3d(&mut cx, x, "decoder.conv_in", ConvSpec::k3(cfg.z_dim, dims[0]))?;
    record(cx.g, &mut acts, on, "decoder.conv_in_out", x)?;
    let mut x = mid_block(&mut cx, x, "decoder.mid_block", dims[0], 1)?;
    record(cx.g, &mut acts, on, "decoder.mid_block_out", x)?;
    let up = cfg.temperal_upsample();
    let stages = cfg.dim_mult.len();
    for i in 0..stages {
        let mut cur = if i > 0 { dims[i] / 2 } else { dims[i] };
        let out_dim = dims[i + 1];
        for r in 0..=cfg.num_res_blocks {
            x = residual_block(&mut cx, x, &format!("decoder.up_blocks.{i}.resnets.{r}"), cur, out_dim)?;
            cur = out_dim;
        }
        if i + 1 != stages {
            let mode = if up[i] { ResampleMode::Upsample3d } else { ResampleMode::Upsample2d };
            x = resample(&mut cx, x, &format!("decoder.up_blocks.{i}.upsamplers.0"), out_dim, mode)?;
        }
        record(cx.g, &mut acts, on, &format!("decoder.up_blocks.{i}_out"), x)?;
    }
    let last = dims[stages];
    let x = vae_rms_norm(cx.g, x, Some("decoder.norm_out.gamma"), false)?;
    let x = cx.g.silu(x)?;
    let x = causal_conv3d(&mut cx, x, "decoder.conv_out", ConvSpec::k3(last, cfg.out_channels))?;
    let slots = cx.into_slots();
    g.set_output("out", x)?;
    vidrt_ir::verify(&g)?;
    let output_shape = g.shape(x).clone();
    Ok(ChunkGraph {
        graph: g,
        kind,
        input: "z".into(),
        input_shape,
        output: "out".into(),
        output_shape,
        slots,
        activations: acts,
    })
}

/// The encoder graph for one chunk of frames (1 for the first chunk, then
/// [`ENCODE_CHUNK_FRAMES`]), `quant_conv` included.
pub fn build_encoder_chunk(cfg: &WanVaeConfig, kind: ChunkKind, opts: &ChunkOptions) -> Result<ChunkGraph> {
    cfg.validate()?;
    check_opts(opts)?;
    // Fails when the temporal factor does not divide the chunk length.
    cfg.encoded_frames(1 + ENCODE_CHUNK_FRAMES)?;
    let on = opts.activations;
    let mut acts = Vec::new();
    let mut g = Graph::new();
    let frames = match kind {
        ChunkKind::First => 1,
        ChunkKind::Steady => ENCODE_CHUNK_FRAMES,
    };
    let input_shape = Shape::from([opts.batch, cfg.in_channels, frames, opts.height, opts.width]);
    let video = g.input("video", input_shape.clone(), opts.dtype)?;
    let mut cx = ChunkCtx::new(&mut g, kind);
    let dims = cfg.encoder_dims();
    let mut x = causal_conv3d(&mut cx, video, "encoder.conv_in", ConvSpec::k3(cfg.in_channels, dims[0]))?;
    record(cx.g, &mut acts, on, "encoder.conv_in_out", x)?;
    let stages = cfg.dim_mult.len();
    let mut scale = 1.0f64;
    let mut k = 0usize;
    for i in 0..stages {
        let mut cur = dims[i];
        let out_dim = dims[i + 1];
        for _ in 0..cfg.num_res_blocks {
            let name = format!("encoder.down_blocks.{k}");
            x = residual_block(&mut cx, x, &name, cur, out_dim)?;
            record(cx.g, &mut acts, on, &format!("{name}_out"), x)?;
            k += 1;
            if cfg.attn_scales.contains(&scale) {
                let name = format!("encoder.down_blocks.{k}");
                x = attention_block(cx.g, x, &name)?;
                record(cx.g, &mut acts, on, &format!("{name}_out"), x)?;
                k += 1;
            }
            cur = out_dim;
        }
        if i + 1 != stages {
            let mode = if cfg.temperal_downsample[i] { ResampleMode::Downsample3d } else { ResampleMode::Downsample2d };
            let name = format!("encoder.down_blocks.{k}");
            x = resample(&mut cx, x, &name, out_dim, mode)?;
            record(cx.g, &mut acts, on, &format!("{name}_out"), x)?;
            k += 1;
            scale /= 2.0;
        }
    }
    let last = dims[stages];
    let x = mid_block(&mut cx, x, "encoder.mid_block", last, 1)?;
    record(cx.g, &mut acts, on, "encoder.mid_block_out", x)?;
    let x = vae_rms_norm(cx.g, x, Some("encoder.norm_out.gamma"), false)?;
    let x = cx.g.silu(x)?;
    let x = causal_conv3d(&mut cx, x, "encoder.conv_out", ConvSpec::k3(last, 2 * cfg.z_dim))?;
    record(cx.g, &mut acts, on, "encoder.out", x)?;
    let m = causal_conv3d(&mut cx, x, "quant_conv", ConvSpec::k1(2 * cfg.z_dim, 2 * cfg.z_dim))?;
    record(cx.g, &mut acts, on, "quant_conv_out", m)?;
    let slots = cx.into_slots();
    g.set_output("moments", m)?;
    vidrt_ir::verify(&g)?;
    let output_shape = g.shape(m).clone();
    Ok(ChunkGraph {
        graph: g,
        kind,
        input: "video".into(),
        input_shape,
        output: "moments".into(),
        output_shape,
        slots,
        activations: acts,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn weights(g: &Graph) -> BTreeSet<String> {
        g.weights().into_iter().map(|(n, _)| n.to_string()).collect()
    }

    /// The real Wan2.1 decoder at 480×832 (latent 60×104): both chunk graphs build and
    /// verify without weights, their cache slots agree, and frame counts follow §3.5.
    #[test]
    fn wan21_decoder_chunks_build_at_480p() {
        let cfg = WanVaeConfig::wan21();
        let opts = ChunkOptions::new(1, 60, 104);
        let first = build_decoder_chunk(&cfg, ChunkKind::First, &opts).unwrap();
        let steady = build_decoder_chunk(&cfg, ChunkKind::Steady, &opts).unwrap();
        assert_eq!(first.output_shape.dims(), &[1, 3, 1, 480, 832]);
        assert_eq!(steady.output_shape.dims(), &[1, 3, 4, 480, 832]);
        assert_eq!(first.slots, steady.slots);
        // conv_in, 2 mid resnets × 2 convs, 12 up resnets × 2 convs, 2 time convs, conv_out.
        assert_eq!(steady.slots.len(), 1 + 4 + 24 + 2 + 1);
        assert!(first.graph.inputs().len() == 1 && steady.graph.inputs().len() == 1 + steady.slots.len());
        for s in &steady.slots {
            assert_eq!(first.graph.shape(first.graph.output(&s.output_name()).unwrap()), &s.shape);
            assert_eq!(steady.graph.shape(steady.graph.output(&s.output_name()).unwrap()), &s.shape);
        }
        let last = steady.slots.last().unwrap();
        assert_eq!(last.module, "decoder.conv_out");
        assert_eq!(last.shape.dims(), &[1, 96, 2, 480, 832]);
        // The first chunk never runs the temporal upsamplers' convs.
        let (wf, ws) = (weights(&first.graph), weights(&steady.graph));
        let missing: Vec<&String> = ws.difference(&wf).collect();
        assert_eq!(missing.len(), 4, "{missing:?}");
        assert!(missing.iter().all(|n| n.contains(".upsamplers.0.time_conv.")));
        assert!(wf.is_subset(&ws));
    }

    #[test]
    fn wan21_encoder_chunks_build_at_480p() {
        let cfg = WanVaeConfig::wan21();
        let opts = ChunkOptions::new(1, 480, 832);
        let first = build_encoder_chunk(&cfg, ChunkKind::First, &opts).unwrap();
        let steady = build_encoder_chunk(&cfg, ChunkKind::Steady, &opts).unwrap();
        assert_eq!(first.output_shape.dims(), &[1, 32, 1, 60, 104]);
        assert_eq!(steady.output_shape.dims(), &[1, 32, 1, 60, 104]);
        assert_eq!(steady.input_shape.dims(), &[1, 3, 4, 480, 832]);
        assert_eq!(first.slots, steady.slots);
    }

    #[test]
    fn activations_are_outputs_in_module_order() {
        let mut cfg = WanVaeConfig::wan21();
        cfg.base_dim = 4;
        let opts = ChunkOptions { activations: true, ..ChunkOptions::new(1, 2, 3) };
        let dec = build_decoder_chunk(&cfg, ChunkKind::Steady, &opts).unwrap();
        assert_eq!(dec.activations.len(), 3 + 4);
        assert_eq!(dec.activations[3], "decoder.up_blocks.0_out");
        for a in &dec.activations {
            dec.graph.output(&ChunkGraph::activation_output(a)).unwrap();
        }
        let enc = build_encoder_chunk(&cfg, ChunkKind::First, &ChunkOptions { height: 16, width: 24, ..opts }).unwrap();
        assert_eq!(enc.activations.len(), 1 + 11 + 3);
        assert_eq!(enc.activations[11], "encoder.down_blocks.10_out");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let cfg = WanVaeConfig::wan21();
        assert!(matches!(
            build_decoder_chunk(&cfg, ChunkKind::First, &ChunkOptions::new(0, 4, 4)),
            Err(VaeError::Shape(_))
        ));
        let mut three = cfg.clone();
        three.temperal_downsample = vec![true, true, true];
        assert!(build_encoder_chunk(&three, ChunkKind::Steady, &ChunkOptions::new(1, 16, 16)).is_err());
    }
}
