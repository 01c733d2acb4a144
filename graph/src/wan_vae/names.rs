//! Parameter names of the original Wan2.1 VAE checkpoint (`Wan2.1_VAE.pth`, and the
//! repackaged safetensors that keep its names) mapped to diffusers' (SPEC-NOTES §3.8, as
//! diffusers' `convert_vae` does it).
//!
//! The original encoder and decoder hold flat `downsamples.*` / `upsamples.*` lists; diffusers
//! keeps the encoder's flat list (`down_blocks.<k>`) and groups the decoder's into
//! `up_blocks.<i>.resnets.<r>` and `up_blocks.<i>.upsamplers.0`. Residual blocks rename
//! `residual.{0,2,3,6}` to `norm1, conv1, norm2, conv2` and `shortcut` to `conv_shortcut`;
//! `middle.{0,1,2}` become `mid_block.{resnets.0, attentions.0, resnets.1}`, `head.{0,2}`
//! become `norm_out, conv_out`, `conv1` becomes `conv_in`, and the top-level `conv1` / `conv2`
//! become `quant_conv` / `post_quant_conv`.

use super::WanVaeConfig;

/// What sits at one index of an original flat block list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flat {
    Res,
    Attn,
    Resample {
        temporal: bool,
    },
    /// Decoder residual block `r` of up block `i`.
    UpRes(usize, usize),
    /// Decoder attention (diffusers' up blocks have none).
    UpAttn,
    /// Upsampler of up block `i`.
    Up(usize, bool),
}

fn encoder_layout(cfg: &WanVaeConfig) -> Vec<Flat> {
    let mut v = Vec::new();
    let mut scale = 1.0f64;
    let stages = cfg.dim_mult.len();
    for i in 0..stages {
        for _ in 0..cfg.num_res_blocks {
            v.push(Flat::Res);
            if cfg.attn_scales.contains(&scale) {
                v.push(Flat::Attn);
            }
        }
        if i + 1 != stages {
            v.push(Flat::Resample { temporal: cfg.temperal_downsample.get(i).copied().unwrap_or(false) });
            scale /= 2.0;
        }
    }
    v
}

fn decoder_layout(cfg: &WanVaeConfig) -> Vec<Flat> {
    let mut v = Vec::new();
    let stages = cfg.dim_mult.len();
    let up = cfg.temperal_upsample();
    let mut scale = 1.0 / f64::powi(2.0, stages as i32 - 2);
    for i in 0..stages {
        for r in 0..=cfg.num_res_blocks {
            v.push(Flat::UpRes(i, r));
            if cfg.attn_scales.contains(&scale) {
                v.push(Flat::UpAttn);
            }
        }
        if i + 1 != stages {
            v.push(Flat::Up(i, up.get(i).copied().unwrap_or(false)));
            scale *= 2.0;
        }
    }
    v
}

/// `residual.{0,2,3,6}` / `shortcut` → diffusers' residual-block names.
fn resnet_part(rest: &str) -> Option<&'static str> {
    Some(match rest {
        "residual.0.gamma" => "norm1.gamma",
        "residual.2.weight" => "conv1.weight",
        "residual.2.bias" => "conv1.bias",
        "residual.3.gamma" => "norm2.gamma",
        "residual.6.weight" => "conv2.weight",
        "residual.6.bias" => "conv2.bias",
        "shortcut.weight" => "conv_shortcut.weight",
        "shortcut.bias" => "conv_shortcut.bias",
        _ => return None,
    })
}

fn attention_part(rest: &str) -> Option<&str> {
    matches!(rest, "norm.gamma" | "to_qkv.weight" | "to_qkv.bias" | "proj.weight" | "proj.bias").then_some(rest)
}

fn resample_part(rest: &str, temporal: bool) -> Option<&str> {
    match rest {
        "resample.1.weight" | "resample.1.bias" => Some(rest),
        "time_conv.weight" | "time_conv.bias" if temporal => Some(rest),
        _ => None,
    }
}

/// `<index>.<rest>` → (index, rest).
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// The diffusers name of an original Wan2.1 VAE parameter for the model `cfg`, or `None`
/// when the name is not a parameter of that model.
pub fn diffusers_name_from_original_with(cfg: &WanVaeConfig, name: &str) -> Option<String> {
    let top = |rest: &str, to: &str| matches!(rest, "weight" | "bias").then(|| format!("{to}.{rest}"));
    if let Some(rest) = name.strip_prefix("conv1.") {
        return top(rest, "quant_conv");
    }
    if let Some(rest) = name.strip_prefix("conv2.") {
        return top(rest, "post_quant_conv");
    }
    let (side, rest) = name.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if let Some(r) = rest.strip_prefix("conv1.") {
        return top(r, &format!("{side}.conv_in"));
    }
    if let Some(r) = rest.strip_prefix("middle.") {
        let (i, r) = split_index(r)?;
        return match i {
            0 | 2 => Some(format!("{side}.mid_block.resnets.{}.{}", i / 2, resnet_part(r)?)),
            1 => Some(format!("{side}.mid_block.attentions.0.{}", attention_part(r)?)),
            _ => None,
        };
    }
    if let Some(r) = rest.strip_prefix("head.") {
        return match r {
            "0.gamma" => Some(format!("{side}.norm_out.gamma")),
            "2.weight" | "2.bias" => Some(format!("{side}.conv_out.{}", &r[2..])),
            _ => None,
        };
    }
    if side == "encoder" {
        let (k, r) = split_index(rest.strip_prefix("downsamples.")?)?;
        let part = match *encoder_layout(cfg).get(k)? {
            Flat::Res => resnet_part(r)?,
            Flat::Attn => attention_part(r)?,
            Flat::Resample { temporal } => resample_part(r, temporal)?,
            _ => return None,
        };
        return Some(format!("encoder.down_blocks.{k}.{part}"));
    }
    let (k, r) = split_index(rest.strip_prefix("upsamples.")?)?;
    match *decoder_layout(cfg).get(k)? {
        Flat::UpRes(i, j) => Some(format!("decoder.up_blocks.{i}.resnets.{j}.{}", resnet_part(r)?)),
        Flat::Up(i, temporal) => Some(format!("decoder.up_blocks.{i}.upsamplers.0.{}", resample_part(r, temporal)?)),
        _ => None,
    }
}

/// [`diffusers_name_from_original_with`] for the real Wan2.1 VAE ([`WanVaeConfig::wan21`]),
/// the layout of `Wan2.1_VAE.pth`.
pub fn diffusers_name_from_original(name: &str) -> Option<String> {
    diffusers_name_from_original_with(&WanVaeConfig::wan21(), name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::wan_vae::{build_decoder_chunk, build_encoder_chunk, ChunkKind, ChunkOptions};

    /// Every parameter name of the original `WanVAE_` module tree (wan/modules/vae.py),
    /// enumerated from that code's structure: Encoder3d / Decoder3d with `conv1`, flat
    /// `downsamples` / `upsamples`, `middle`, `head`, and the top-level `conv1` / `conv2`.
    fn original_names(cfg: &WanVaeConfig) -> Vec<String> {
        let mut v = Vec::new();
        let conv = |v: &mut Vec<String>, p: String| {
            v.push(format!("{p}.weight"));
            v.push(format!("{p}.bias"));
        };
        let res = |v: &mut Vec<String>, p: String, cin: usize, cout: usize| {
            v.push(format!("{p}.residual.0.gamma"));
            conv(v, format!("{p}.residual.2"));
            v.push(format!("{p}.residual.3.gamma"));
            conv(v, format!("{p}.residual.6"));
            if cin != cout {
                conv(v, format!("{p}.shortcut"));
            }
        };
        let attn = |v: &mut Vec<String>, p: String| {
            v.push(format!("{p}.norm.gamma"));
            conv(v, format!("{p}.to_qkv"));
            conv(v, format!("{p}.proj"));
        };
        let middle_and_head = |v: &mut Vec<String>, side: &str, d: usize| {
            res(v, format!("{side}.middle.0"), d, d);
            attn(v, format!("{side}.middle.1"));
            res(v, format!("{side}.middle.2"), d, d);
            v.push(format!("{side}.head.0.gamma"));
            conv(v, format!("{side}.head.2"));
        };
        // Encoder3d.
        let dims: Vec<usize> = [1].iter().chain(&cfg.dim_mult).map(|m| cfg.base_dim * m).collect();
        conv(&mut v, "encoder.conv1".into());
        let mut k = 0;
        for i in 0..cfg.dim_mult.len() {
            let (mut cin, cout) = (dims[i], dims[i + 1]);
            for _ in 0..cfg.num_res_blocks {
                res(&mut v, format!("encoder.downsamples.{k}"), cin, cout);
                k += 1;
                cin = cout;
            }
            if i + 1 != cfg.dim_mult.len() {
                conv(&mut v, format!("encoder.downsamples.{k}.resample.1"));
                if cfg.temperal_downsample[i] {
                    conv(&mut v, format!("encoder.downsamples.{k}.time_conv"));
                }
                k += 1;
            }
        }
        middle_and_head(&mut v, "encoder", dims[cfg.dim_mult.len()]);
        // Decoder3d.
        let last = cfg.dim_mult[cfg.dim_mult.len() - 1];
        let dims: Vec<usize> = [last].iter().chain(cfg.dim_mult.iter().rev()).map(|m| cfg.base_dim * m).collect();
        conv(&mut v, "decoder.conv1".into());
        middle_and_head(&mut v, "decoder", dims[0]);
        let mut k = 0;
        for i in 0..cfg.dim_mult.len() {
            let (mut cin, cout) = (if i > 0 { dims[i] / 2 } else { dims[i] }, dims[i + 1]);
            for _ in 0..=cfg.num_res_blocks {
                res(&mut v, format!("decoder.upsamples.{k}"), cin, cout);
                k += 1;
                cin = cout;
            }
            if i + 1 != cfg.dim_mult.len() {
                conv(&mut v, format!("decoder.upsamples.{k}.resample.1"));
                if cfg.temperal_downsample[cfg.dim_mult.len() - 2 - i] {
                    conv(&mut v, format!("decoder.upsamples.{k}.time_conv"));
                }
                k += 1;
            }
        }
        conv(&mut v, "conv1".into());
        conv(&mut v, "conv2".into());
        v
    }

    fn graph_weights(cfg: &WanVaeConfig) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for kind in [ChunkKind::First, ChunkKind::Steady] {
            let dec = build_decoder_chunk(cfg, kind, &ChunkOptions::new(1, 2, 2)).unwrap();
            let enc = build_encoder_chunk(cfg, kind, &ChunkOptions::new(1, 16, 16)).unwrap();
            for g in [&dec.graph, &enc.graph] {
                set.extend(g.weights().into_iter().map(|(n, _)| n.to_string()));
            }
        }
        set
    }

    #[test]
    fn original_names_cover_every_graph_weight() {
        let cfg = WanVaeConfig::wan21();
        let orig = original_names(&cfg);
        let mapped: Vec<String> = orig
            .iter()
            .map(|n| diffusers_name_from_original(n).unwrap_or_else(|| panic!("`{n}` has no diffusers name")))
            .collect();
        let set: BTreeSet<String> = mapped.iter().cloned().collect();
        assert_eq!(set.len(), mapped.len(), "two original names map to one diffusers name");
        assert_eq!(set, graph_weights(&cfg));
        // Spot checks against diffusers' conversion script.
        let m = |n: &str| diffusers_name_from_original(n);
        assert_eq!(
            m("decoder.upsamples.4.shortcut.weight").as_deref(),
            Some("decoder.up_blocks.1.resnets.0.conv_shortcut.weight")
        );
        assert_eq!(
            m("decoder.upsamples.11.resample.1.bias").as_deref(),
            Some("decoder.up_blocks.2.upsamplers.0.resample.1.bias")
        );
        assert_eq!(
            m("decoder.upsamples.7.time_conv.weight").as_deref(),
            Some("decoder.up_blocks.1.upsamplers.0.time_conv.weight")
        );
        assert_eq!(m("encoder.middle.2.residual.6.bias").as_deref(), Some("encoder.mid_block.resnets.1.conv2.bias"));
        assert_eq!(m("conv2.weight").as_deref(), Some("post_quant_conv.weight"));
        assert_eq!(m("decoder.upsamples.11.time_conv.weight"), None);
        assert_eq!(m("decoder.upsamples.15.residual.0.gamma"), None);
        assert_eq!(m("encoder.downsamples.2.residual.0.gamma"), None);
        assert_eq!(m("model.conv1.weight"), None);
    }

    #[test]
    fn mapping_follows_other_configs() {
        let mut cfg = WanVaeConfig::wan21();
        cfg.base_dim = 4;
        cfg.dim_mult = vec![1, 2, 2];
        cfg.num_res_blocks = 1;
        cfg.temperal_downsample = vec![true, false];
        let orig = original_names(&cfg);
        let set: BTreeSet<String> = orig.iter().map(|n| diffusers_name_from_original_with(&cfg, n).unwrap()).collect();
        assert_eq!(set.len(), orig.len());
        assert_eq!(set, graph_weights(&cfg));
    }
}
