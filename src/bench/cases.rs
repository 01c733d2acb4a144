//! The benchmarks of a run: the peak, kernel and model cases at the model's shapes (see
//! the parent module), each a graph with its name and shapes.

use vidrt_graph::config::ModelConfig;
use vidrt_graph::umt5::{build_umt5, Umt5Options};
use vidrt_graph::wan_dit::{build_dit, DitOptions, DitShape};
use vidrt_graph::wan_vae::{build_decoder_chunk, ChunkKind, ChunkOptions};
use vidrt_ir::{RmsStyle, UnaryOp};

use super::*;

/// A benchmark before it runs: its name and shapes (see [`plan`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub name: String,
    pub kind: String,
    pub op: String,
    pub shapes: Vec<Vec<usize>>,
}

pub(super) struct Case {
    pub(super) info: Planned,
    pub(super) graph: Graph,
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

/// The sizes a run uses, from the model and the options.
struct Sizes {
    cfg: ModelConfig,
    /// DiT tokens for the kernel suite.
    tokens: usize,
    /// VAE latent height and width for the kernel suite.
    vae_hw: [usize; 2],
    /// Latent frames, height, width for the model suite.
    lat: [usize; 3],
    text_len: usize,
}

fn sizes(opts: &BenchOptions) -> Result<Sizes> {
    if opts.scale == 0 {
        return Err(Error::Invalid("bench scale must be at least 1".into()));
    }
    let cfg = ModelConfig::preset(&opts.model).map_err(|e| Error::Invalid(e.to_string()))?;
    let (h, w, f) = opts.size.unwrap_or((cfg.defaults.height, cfg.defaults.width, cfg.defaults.num_frames));
    let sf = cfg.vae.spatial_factor();
    let p = cfg.dit.patch_size;
    if h == 0 || w == 0 || !h.is_multiple_of(sf * p[1]) || !w.is_multiple_of(sf * p[2]) {
        return Err(Error::Invalid(format!(
            "height {h} and width {w} must be positive multiples of {} and {}",
            sf * p[1],
            sf * p[2]
        )));
    }
    let lat_f = cfg.vae.encoded_frames(f).map_err(|e| Error::Invalid(e.to_string()))?;
    let (lat_h, lat_w) = (h / sf, w / sf);
    let full_tokens = (lat_f / p[0].max(1)) * (lat_h / p[1].max(1)) * (lat_w / p[2].max(1));
    let s = opts.scale;
    let to_patch = |n: usize, p: usize| ((n / s) / p * p).max(p);
    Ok(Sizes {
        tokens: full_tokens.div_ceil(s).max(1),
        vae_hw: [lat_h.div_ceil(s).max(1), lat_w.div_ceil(s).max(1)],
        lat: [to_patch(lat_f, p[0].max(1)), to_patch(lat_h, p[1].max(1)), to_patch(lat_w, p[2].max(1))],
        text_len: cfg.max_sequence_length.div_ceil(s).max(1),
        cfg,
    })
}

fn input_shapes(g: &Graph) -> Vec<Vec<usize>> {
    g.inputs().into_iter().map(|(_, id)| g.shape(id).0.clone()).collect()
}

fn case(kind: &str, op: &str, name: String, graph: Graph) -> Case {
    let shapes = input_shapes(&graph);
    Case { info: Planned { name, kind: kind.into(), op: op.into(), shapes }, graph }
}

fn matmul_graph(m: usize, k: usize, n: usize) -> Result<Graph> {
    let mut g = Graph::new();
    let x = g.input("x", [1, m, k], DType::F32)?;
    let w = g.input("w", [n, k], DType::F32)?;
    let y = g.linear(x, w, None)?;
    g.set_output("out", y)?;
    Ok(g)
}

fn attention_graph(heads: usize, hd: usize, sq: usize, sk: usize) -> Result<Graph> {
    let mut g = Graph::new();
    let q = g.input("q", [1, sq, heads, hd], DType::F32)?;
    let k = g.input("k", [1, sk, heads, hd], DType::F32)?;
    let v = g.input("v", [1, sk, heads, hd], DType::F32)?;
    let y = g.attention(q, k, v, 1.0 / (hd as f64).sqrt(), None, None)?;
    g.set_output("out", y)?;
    Ok(g)
}

fn peak_cases(opts: &BenchOptions) -> Result<Vec<Case>> {
    let s = opts.scale;
    let n = ((64usize << 20) / (s * s)).max(1 << 20);
    let mut g = Graph::new();
    let x = g.input("x", [n], DType::F32)?;
    let y = g.unary(UnaryOp::Neg, x)?;
    g.set_output("out", y)?;
    let copy = case("peak", "copy", format!("peak copy n={n}"), g);
    let side = ((8192 / s) / 64 * 64).max(256);
    let mm = case("peak", "matmul", format!("peak matmul {side}x{side}x{side}"), matmul_graph(side, side, side)?);
    Ok(vec![copy, mm])
}

fn kernel_cases(sz: &Sizes) -> Result<Vec<Case>> {
    let d = &sz.cfg.dit;
    let (heads, hd, ffn) = (d.num_attention_heads, d.attention_head_dim, d.ffn_dim);
    let dim = heads * hd;
    let s = sz.tokens;
    let mut out = Vec::new();
    for (m, k, n) in [(s, dim, dim), (s, dim, ffn), (s, ffn, dim)] {
        out.push(case("kernel", "matmul", format!("matmul M={m} K={k} N={n}"), matmul_graph(m, k, n)?));
    }
    out.push(case(
        "kernel",
        "attention",
        format!("attention H={heads} D={hd} S={s}"),
        attention_graph(heads, hd, s, s)?,
    ));
    let tl = sz.cfg.max_sequence_length;
    out.push(case(
        "kernel",
        "attention",
        format!("attention H={heads} D={hd} S={s} Sk={tl}"),
        attention_graph(heads, hd, s, tl)?,
    ));
    {
        let mut g = Graph::new();
        let x = g.input("x", [1, s, dim], DType::F32)?;
        let w = g.input("weight", [dim], DType::F32)?;
        let y = g.rms_norm(x, Some(w), 2, d.eps, RmsStyle::MeanSquare)?;
        g.set_output("out", y)?;
        out.push(case("kernel", "rms_norm", format!("rms_norm S={s} D={dim}"), g));
    }
    {
        let mut g = Graph::new();
        let x = g.input("x", [1, s, dim], DType::F32)?;
        let sc = g.input("scale", [1, 1, dim], DType::F32)?;
        let sh = g.input("shift", [1, 1, dim], DType::F32)?;
        let y = g.layer_norm(x, None, d.eps)?;
        let y = g.modulate(y, sc, sh)?;
        g.set_output("out", y)?;
        out.push(case("kernel", "layer_norm_modulate", format!("layer_norm+modulate S={s} D={dim}"), g));
    }
    // Every distinct 3×3×3 conv of a steady decoder chunk.
    let chunk = build_decoder_chunk(&sz.cfg.vae, ChunkKind::Steady, &ChunkOptions::new(1, sz.vae_hw[0], sz.vae_hw[1]))
        .map_err(other)?;
    let vg = &chunk.graph;
    let mut seen = std::collections::HashSet::new();
    for n in &vg.nodes {
        let Op::Conv3d { stride, pad, bias } = &n.op else { continue };
        let (Some(&xi), Some(&wi)) = (n.inputs.first(), n.inputs.get(1)) else { continue };
        let (xs, ws) = (vg.shape(xi).0.clone(), vg.shape(wi).0.clone());
        if ws.len() != 5
            || ws[2..] != [3, 3, 3]
            || xs.len() != 5
            || !seen.insert((xs.clone(), ws.clone(), *pad, *stride))
        {
            continue;
        }
        let mut g = Graph::new();
        let x = g.input("x", xs.clone(), DType::F32)?;
        let w = g.input("w", ws.clone(), DType::F32)?;
        let b = if *bias { Some(g.input("b", [ws[0]], DType::F32)?) } else { None };
        let y = g.conv3d(x, w, b, *stride, *pad)?;
        g.set_output("out", y)?;
        let name = format!("conv3d {}->{} k3 T={} {}x{}", ws[1], ws[0], xs[2], xs[3], xs[4]);
        out.push(case("kernel", "conv3d", name, g));
    }
    Ok(out)
}

fn model_cases(sz: &Sizes) -> Result<Vec<Case>> {
    let cfg = &sz.cfg;
    let [lf, lh, lw] = sz.lat;
    let tl = sz.text_len;
    let mut out = Vec::new();
    let te = build_umt5(&cfg.text, 1, tl, &Umt5Options::default()).map_err(other)?;
    out.push(case("model", "text_encoder", format!("text encoder B=1 L={tl}"), te));
    let tokens =
        (lf / cfg.dit.patch_size[0].max(1)) * (lh / cfg.dit.patch_size[1].max(1)) * (lw / cfg.dit.patch_size[2].max(1));
    for (batch, what) in [(1, "DiT forward"), (2, "denoise step (DiT, CFG batch)")] {
        let shape = DitShape { batch, frames: lf, height: lh, width: lw, text_len: tl };
        let g = build_dit(&cfg.dit, &shape, &DitOptions::default()).map_err(other)?;
        out.push(case("model", "dit", format!("{what} B={batch} latent={lf}x{lh}x{lw} S={tokens}"), g));
    }
    let chunk = build_decoder_chunk(&cfg.vae, ChunkKind::Steady, &ChunkOptions::new(1, lh, lw)).map_err(other)?;
    out.push(case("model", "vae_decode", format!("VAE decode chunk (steady) latent=1x{lh}x{lw}"), chunk.graph));
    Ok(out)
}

pub(super) fn all_cases(opts: &BenchOptions) -> Result<Vec<Case>> {
    let sz = sizes(opts)?;
    let mut cases = if opts.peaks { peak_cases(opts)? } else { Vec::new() };
    let mut rest = Vec::new();
    if matches!(opts.suite, Suite::Kernels | Suite::All) {
        rest.extend(kernel_cases(&sz)?);
    }
    if matches!(opts.suite, Suite::Models | Suite::All) {
        rest.extend(model_cases(&sz)?);
    }
    if let Some(f) = &opts.filter {
        rest.retain(|c| c.info.name.contains(f.as_str()));
    }
    cases.extend(rest);
    if opts.precision != DType::F32 {
        for c in &mut cases {
            c.graph = passes::reduce_precision_with(&c.graph, opts.precision, false)
                .map_err(|e| Error::Other(format!("bench `{}` in {}: {e}", c.info.name, opts.precision)))?;
            c.info.name = format!("{} {}", c.info.name, opts.precision.name());
        }
    }
    Ok(cases)
}

/// The benchmarks `opts` would run, without running them (builds the graphs only).
pub fn plan(opts: &BenchOptions) -> Result<Vec<Planned>> {
    Ok(all_cases(opts)?.into_iter().map(|c| c.info).collect())
}
