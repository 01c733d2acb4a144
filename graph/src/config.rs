//! Whole-model configurations: the three networks, the sampler's flow shift and the call
//! defaults, for the built-in tiny model, Wan2.1-T2V-1.3B, Wan2.1-T2V-14B, or read from a
//! diffusers-layout model folder.

use std::path::{Path, PathBuf};

use crate::umt5::Umt5Config;
use crate::wan_dit::WanDitConfig;
use crate::wan_vae::WanVaeConfig;

/// An error reading or checking a model configuration; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub reason: String,
}

/// Generation arguments a model suggests when the caller gives none.
#[derive(Clone, Debug, PartialEq)]
pub struct CallDefaults {
    pub height: usize,
    pub width: usize,
    pub num_frames: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
}

impl CallDefaults {
    /// `WanPipeline.__call__`'s defaults: 480×832, 81 frames, 50 steps, guidance 5.0.
    pub fn wan_pipeline() -> Self {
        CallDefaults { height: 480, width: 832, num_frames: 81, num_inference_steps: 50, guidance_scale: 5.0 }
    }
}

/// Everything that describes one text-to-video model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub dit: WanDitConfig,
    pub vae: WanVaeConfig,
    pub text: Umt5Config,
    /// The scheduler's `flow_shift` (UniPC) or `shift` (Euler): 3.0 for Wan2.1 at 480p.
    pub flow_shift: f64,
    pub num_train_timesteps: usize,
    /// The text length the text encoder runs at and the DiT attends over (512 for Wan).
    pub max_sequence_length: usize,
    pub defaults: CallDefaults,
}

/// The tiny DiT: 2 heads × 32, 2 layers (the golden `dit` case's configuration).
const TINY_DIT: &str = r#"{"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32,
  "in_channels": 16, "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 128, "num_layers": 2,
  "cross_attn_norm": true, "qk_norm": "rms_norm_across_heads", "eps": 1e-06, "rope_max_seq_len": 1024}"#;

/// The tiny VAE: base_dim 8, the real Wan2.1 structure (the golden `vae` case's configuration).
const TINY_VAE: &str = r#"{"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
  "attn_scales": [], "temperal_downsample": [false, true, true], "dropout": 0.0}"#;

/// The tiny umT5: vocab 512, d_model 32, 2 layers of 4 heads (the golden `text_encoder` case).
const TINY_TEXT: &str = r#"{"vocab_size": 512, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
  "num_heads": 4, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
  "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-06}"#;

fn builtin(what: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError { path: PathBuf::from(format!("<built-in {what}>")), reason: e.to_string() }
}

impl ModelConfig {
    /// The built-in tiny model: the architecture of Wan2.1 at toy sizes (the golden cases'
    /// configurations), small enough to generate a clip in seconds on two cores. Its
    /// defaults are 96×128, 17 frames, 10 steps.
    pub fn tiny() -> Result<Self, ConfigError> {
        let json = |s: &str, what: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| builtin(what, e));
        Ok(ModelConfig {
            name: "vidrt-tiny".into(),
            dit: WanDitConfig::from_json(&json(TINY_DIT, "dit")?).map_err(|e| builtin("dit", e))?,
            vae: WanVaeConfig::from_json(&json(TINY_VAE, "vae")?).map_err(|e| builtin("vae", e))?,
            text: Umt5Config::from_json(TINY_TEXT).map_err(|e| builtin("text encoder", e))?,
            flow_shift: 3.0,
            num_train_timesteps: 1000,
            max_sequence_length: 512,
            defaults: CallDefaults {
                height: 96,
                width: 128,
                num_frames: 17,
                num_inference_steps: 10,
                guidance_scale: 5.0,
            },
        })
    }

    /// Wan2.1-T2V-1.3B (SPEC-NOTES §0).
    pub fn wan21_t2v_1_3b() -> Self {
        ModelConfig {
            name: "Wan2.1-T2V-1.3B".into(),
            dit: WanDitConfig::wan21_t2v_1_3b(),
            vae: WanVaeConfig::wan21(),
            text: Umt5Config::umt5_xxl(),
            flow_shift: 3.0,
            num_train_timesteps: 1000,
            max_sequence_length: 512,
            defaults: CallDefaults::wan_pipeline(),
        }
    }

    /// Wan2.1-T2V-14B (SPEC-NOTES §0).
    pub fn wan21_t2v_14b() -> Self {
        ModelConfig { name: "Wan2.1-T2V-14B".into(), dit: WanDitConfig::wan21_t2v_14b(), ..Self::wan21_t2v_1_3b() }
    }

    /// A preset by name: `tiny`, `wan2.1-t2v-1.3b`, `wan2.1-t2v-14b` (case-insensitive).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name.to_ascii_lowercase().as_str() {
            "tiny" | "vidrt-tiny" => Self::tiny(),
            "wan2.1-t2v-1.3b" | "1.3b" => Ok(Self::wan21_t2v_1_3b()),
            "wan2.1-t2v-14b" | "14b" => Ok(Self::wan21_t2v_14b()),
            other => Err(ConfigError {
                path: PathBuf::from(other),
                reason: "unknown preset (expected tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b)".into(),
            }),
        }
    }

    /// Reads a diffusers-layout folder: `transformer/config.json`, `vae/config.json`,
    /// `text_encoder/config.json` and `scheduler/scheduler_config.json` (optional; flow shift
    /// 3.0 when absent).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let dir = dir.as_ref();
        let read = |rel: &str| -> Result<(PathBuf, serde_json::Value), ConfigError> {
            let path = dir.join(rel);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError { path: path.clone(), reason: e.to_string() })?;
            let v =
                serde_json::from_str(&text).map_err(|e| ConfigError { path: path.clone(), reason: e.to_string() })?;
            Ok((path, v))
        };
        let (p, v) = read("transformer/config.json")?;
        let dit = WanDitConfig::from_json(&v).map_err(|e| ConfigError { path: p, reason: e.to_string() })?;
        let (p, v) = read("vae/config.json")?;
        let vae = WanVaeConfig::from_json(&v).map_err(|e| ConfigError { path: p, reason: e.to_string() })?;
        let (p, v) = read("text_encoder/config.json")?;
        let text = Umt5Config::from_value(v).map_err(|e| ConfigError { path: p, reason: e.to_string() })?;
        let (mut flow_shift, mut num_train_timesteps) = (3.0, 1000);
        if dir.join("scheduler/scheduler_config.json").exists() {
            let (p, v) = read("scheduler/scheduler_config.json")?;
            if let Some(s) = v.get("flow_shift").or_else(|| v.get("shift")).and_then(serde_json::Value::as_f64) {
                flow_shift = s;
            }
            if let Some(n) = v.get("num_train_timesteps").and_then(serde_json::Value::as_u64) {
                num_train_timesteps = n as usize;
            }
            if !(flow_shift.is_finite() && flow_shift > 0.0) || num_train_timesteps == 0 {
                return Err(ConfigError {
                    path: p,
                    reason: "flow_shift and num_train_timesteps must be positive".into(),
                });
            }
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string();
        Ok(ModelConfig {
            name,
            dit,
            vae,
            text,
            flow_shift,
            num_train_timesteps,
            max_sequence_length: 512,
            defaults: CallDefaults::wan_pipeline(),
        })
    }

    /// The tiny model's configurations as diffusers-layout `config.json` texts, keyed by
    /// folder (`transformer`, `vae`, `text_encoder`): for writing a tiny model folder.
    pub fn tiny_config_texts() -> [(&'static str, &'static str); 3] {
        [("transformer", TINY_DIT), ("vae", TINY_VAE), ("text_encoder", TINY_TEXT)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_agree() {
        let tiny = ModelConfig::tiny().expect("tiny");
        assert_eq!(tiny.dit.dim(), 64);
        assert_eq!(tiny.dit.text_dim, tiny.text.d_model, "DiT text_dim matches the encoder");
        assert_eq!(tiny.dit.in_channels, tiny.vae.z_dim);
        for m in [ModelConfig::wan21_t2v_1_3b(), ModelConfig::wan21_t2v_14b()] {
            assert_eq!(m.dit.text_dim, m.text.d_model);
            assert_eq!(m.dit.in_channels, m.vae.z_dim);
        }
        assert_eq!(ModelConfig::preset("14B").expect("14b").dit.dim(), 5120);
        assert!(ModelConfig::preset("nope").is_err());
    }

    #[test]
    fn folder_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("vidrt-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (sub, text) in ModelConfig::tiny_config_texts() {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
            std::fs::write(dir.join(sub).join("config.json"), text).expect("write");
        }
        let m = ModelConfig::from_dir(&dir).expect("reads back");
        assert_eq!(m.dit, ModelConfig::tiny().expect("tiny").dit);
        std::fs::write(dir.join("vae/config.json"), "{\"base_dim\": ").expect("write");
        let e = ModelConfig::from_dir(&dir).expect_err("truncated json");
        assert!(e.path.ends_with("vae/config.json"), "{e}");
        std::fs::remove_file(dir.join("transformer/config.json")).expect("rm");
        let e = ModelConfig::from_dir(&dir).expect_err("missing");
        assert!(e.path.ends_with("transformer/config.json"), "{e}");
    }
}
