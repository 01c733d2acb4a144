//! Golden evaluation of the `pipeline` case: the whole tiny WanPipeline from token ids and
//! initial latents to frames. The component weights and configs come from the folders the
//! case's `config.weights` points at (each beside its own `case.json`), the call arguments
//! and scheduler from `config`; every shape from the files.

use std::path::{Path, PathBuf};

use vidrt_graph::scheduler::{new_scheduler, SchedulerKind};
use vidrt_graph::umt5::{Umt5Config, Umt5Options};
use vidrt_graph::wan_dit::WanDitConfig;
use vidrt_graph::wan_vae::WanVaeConfig;
use vidrt_graph::WeightStore;
use vidrt_ir::Tensor;
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;
use crate::pipeline::{denoise, DitRunner};
use crate::text::TextEncoder;
use crate::vae::{denormalize_latents, VaeDecoder};
use crate::video::Video;
use crate::weights::StoreWeights;

const IO: &str = "io.safetensors";

/// The weights file of `component` and the `config` of the case.json beside it.
fn component(case: &Case, name: &str) -> Result<(PathBuf, serde_json::Value)> {
    let rel = case.config()["weights"][name]
        .as_str()
        .ok_or_else(|| case.error(format!("config.weights has no `{name}` path")))?;
    let weights = case.dir.join(rel);
    let dir = weights.parent().map(Path::to_path_buf).unwrap_or_else(|| case.dir.clone());
    let sibling = Case::load(&dir)?;
    Ok((weights, sibling.config().clone()))
}

fn tensor(v: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_f32(dims.to_vec(), v).map_err(|e| Error::Other(e.to_string()))
}

/// `"UniPCMultistepScheduler(..., flow_shift=3.0)"` → (UniPc, 3.0).
fn parse_scheduler(case: &Case) -> Result<(SchedulerKind, f64)> {
    let s = case.config()["scheduler"].as_str().ok_or_else(|| case.error("config has no `scheduler` string"))?;
    let kind = if s.starts_with("UniPC") {
        SchedulerKind::UniPc
    } else if s.starts_with("FlowMatchEuler") {
        SchedulerKind::Euler
    } else {
        return Err(case.error(format!("unknown scheduler `{s}`")));
    };
    let key = if kind == SchedulerKind::UniPc { "flow_shift=" } else { "shift=" };
    let shift = s
        .split(key)
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| case.error(format!("no `{key}` in `{s}`")))?;
    Ok((kind, shift))
}

pub fn run(case: &Case, backend: &dyn Backend) -> Result<Outputs> {
    let cfg = case.config();
    let mut out = Outputs::new();

    // Text encoder: prompt and negative prompt ids → zero-padded embeddings.
    let (text_w, text_cfg) = component(case, "text_encoder")?;
    let text_cfg = Umt5Config::from_value(text_cfg["UMT5Config"].clone()).map_err(|e| case.error(e.to_string()))?;
    let text_store = WeightStore::from_file(&text_w)?;
    let text_src = StoreWeights::new(&text_store);
    let mut te = TextEncoder::new(backend, &text_src, text_cfg, Umt5Options::default())?;
    let ids = case.tensor(IO, "prompt_input_ids")?;
    let max_len = cfg["call"]["max_sequence_length"].as_u64().map_or(ids.dims()[1], |n| n as usize);
    let prompt_embeds = te.prompt_embeds(&ids, &case.tensor(IO, "prompt_attention_mask")?, max_len)?;
    let negative = te.prompt_embeds(
        &case.tensor(IO, "negative_input_ids")?,
        &case.tensor(IO, "negative_attention_mask")?,
        max_len,
    )?;
    drop(te);
    put(&mut out, IO, "prompt_embeds", prompt_embeds.clone());
    put(&mut out, IO, "negative_prompt_embeds", negative.clone());

    // DiT loop with classifier-free guidance (both passes batched: cond row 0, uncond row 1).
    let (dit_w, dit_cfg) = component(case, "transformer")?;
    let dit_cfg = WanDitConfig::from_json(&dit_cfg["init_kwargs"]).map_err(|e| case.error(e.to_string()))?;
    let init = case.tensor(IO, "init_latents")?;
    let latent: [usize; 5] =
        init.dims().try_into().map_err(|_| case.error(format!("init_latents must be 5-D, got {}", init.shape())))?;
    if latent[0] != 1 {
        return Err(case.error("init_latents must have batch 1"));
    }
    let guidance = cfg["call"]["guidance_scale"].as_f64().ok_or_else(|| case.error("no call.guidance_scale"))?;
    let steps = cfg["num_inference_steps"].as_u64().ok_or_else(|| case.error("no num_inference_steps"))? as usize;
    let (kind, shift) = parse_scheduler(case)?;
    let mut scheduler = new_scheduler(kind, steps, shift).map_err(|e| case.error(e.to_string()))?;
    put(&mut out, IO, "timesteps", {
        let t: Vec<i64> = scheduler.timesteps().iter().map(|&t| t as i64).collect();
        Tensor::from_i64([t.len()], t).map_err(|e| Error::Other(e.to_string()))?
    });
    put(&mut out, IO, "sigmas", {
        let s: Vec<f32> = scheduler.sigmas().iter().map(|&s| s as f32).collect();
        tensor(s.clone(), &[s.len()])?
    });

    let text_len = prompt_embeds.dims()[1];
    let cfg_on = guidance > 1.0;
    let context = if cfg_on {
        let mut v = prompt_embeds.to_f32_vec();
        v.extend(negative.to_f32_vec());
        tensor(v, &[2, text_len, prompt_embeds.dims()[2]])?
    } else {
        prompt_embeds.clone()
    };
    let dit_store = WeightStore::from_file(&dit_w)?;
    let mut dit = DitRunner::new(
        &dit_cfg,
        &StoreWeights::new(&dit_store),
        backend,
        if cfg_on { 2 } else { 1 },
        latent,
        text_len,
    )?;
    let (mut conds, mut unconds, mut guideds, mut per_step) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let final_latents = denoise(&mut dit, scheduler.as_mut(), init.to_f32_vec(), &context, guidance, &mut |s| {
        conds.extend_from_slice(s.cond);
        if let Some(u) = s.uncond {
            unconds.extend_from_slice(u);
        }
        guideds.extend_from_slice(s.guided);
        per_step.extend_from_slice(s.latents);
    })?;
    drop(dit);
    let stacked = |v: Vec<f32>| -> Result<Tensor> {
        let mut dims = vec![steps];
        dims.extend_from_slice(&latent);
        tensor(v, &dims)
    };
    put(&mut out, IO, "noise_pred_cond", stacked(conds)?);
    if cfg_on {
        put(&mut out, IO, "noise_pred_uncond", stacked(unconds)?);
    }
    put(&mut out, IO, "noise_pred_guided", stacked(guideds)?);
    put(&mut out, IO, "latents_per_step", stacked(per_step)?);
    let final_latents = tensor(final_latents, &latent)?;
    put(&mut out, IO, "final_latents", final_latents.clone());

    // VAE: de-normalise, decode chunk by chunk, clamp; frames as diffusers' "np" output.
    let (vae_w, vae_cfg) = component(case, "vae")?;
    let vae_cfg = WanVaeConfig::from_json(&vae_cfg["init_kwargs"]).map_err(|e| case.error(e.to_string()))?;
    let z = denormalize_latents(&vae_cfg, &final_latents)?;
    put(&mut out, IO, "vae_input_latents", z.clone());
    let vae_store = WeightStore::from_file(&vae_w)?;
    let vae_src = StoreWeights::new(&vae_store);
    let mut vae = VaeDecoder::new(vae_cfg, backend, &vae_src)?;
    let video = vae.decode(&z, &mut |_, _| {})?;
    put(&mut out, IO, "frames", Video::frames_tensor(&video)?);
    put(&mut out, IO, "video", video);
    Ok(out)
}
