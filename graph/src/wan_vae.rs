//! The Wan2.1 3-D causal VAE (diffusers `AutoencoderKLWan`): configuration, block builders
//! and the per-chunk encoder and decoder graphs (SPEC-NOTES §3).
//!
//! diffusers never runs the VAE over a whole video: the decoder sees one latent frame at a
//! time and the encoder frame 0, then 4 frames at a time, while every causal convolution
//! keeps the last [`CACHE_T`] frames of its input in a feature cache. Here each chunk is one
//! graph whose caches are explicit inputs (`cache.<i>`) and outputs (`cache_out.<i>`), so a
//! driver loops over chunks carrying the caches and memory stays bounded by one chunk.
//!
//! Two graphs per direction suffice ([`ChunkKind`]): the first chunk (no history: causal zero
//! padding, the upsampler's 'Rep' rule, the downsampler's pass-through) and every later chunk.
//! The first chunk's cache outputs already have the steady-state shapes: a cache of one real
//! frame is stored with a zero frame in front, which a causal convolution treats exactly like
//! its own zero padding, and the upsampler's 'Rep' marker is stored as zeros (the next chunk
//! must see zero history). So the outputs of one chunk feed the next chunk unchanged.
//!
//! Weights use the diffusers names (`decoder.up_blocks.0.resnets.1.conv2.weight`, ...);
//! [`diffusers_name_from_original`] maps the original `Wan2.1_VAE.pth` names.

mod blocks;
mod model;
mod names;

use serde::Deserialize;
use vidrt_ir::{IrError, Shape};

pub use blocks::{
    attention_block, causal_conv3d, mid_block, resample, residual_block, vae_rms_norm, ChunkCtx, ConvSpec, ResampleMode,
};
pub use model::{build_decoder_chunk, build_encoder_chunk, ChunkGraph, ChunkOptions};
pub use names::{diffusers_name_from_original, diffusers_name_from_original_with};

/// Frames every cached causal convolution keeps from its input (diffusers `CACHE_T`).
pub const CACHE_T: usize = 2;
/// Latent frames per decoder chunk.
pub const DECODE_CHUNK_LATENTS: usize = 1;
/// Video frames per encoder chunk after the first one-frame chunk.
pub const ENCODE_CHUNK_FRAMES: usize = 4;
/// The most encoder stages (`dim_mult` entries) a config may have: each stage boundary halves
/// the frame size, so the spatial factor is `2^(stages − 1)`.
pub const MAX_STAGES: usize = 16;
/// `eps` of `WanRMS_norm` (clamps the L2 norm).
pub const RMS_EPS: f64 = 1e-12;

/// An error building VAE graphs.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The configuration is inconsistent.
    #[error("VAE config: {0}")]
    Config(String),
    /// A feature of `AutoencoderKLWan` that Wan2.1 does not use and vidrt does not build.
    #[error("VAE: unsupported: {0}")]
    Unsupported(String),
    /// A chunk or tensor shape does not fit the model.
    #[error("VAE: bad shape: {0}")]
    Shape(String),
}

/// `AutoencoderKLWan` constructor arguments (diffusers `config.json`; unknown keys are
/// ignored, missing ones take the diffusers defaults, which are the Wan2.1 VAE).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct WanVaeConfig {
    pub base_dim: usize,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Spatial scales (1, 0.5, ...) at which the encoder adds attention blocks after its
    /// residual blocks. diffusers' decoder ignores it (its up blocks have no attention).
    pub attn_scales: Vec<f64>,
    /// Per encoder stage boundary: whether the downsampler also halves time. The decoder uses
    /// the reverse.
    pub temperal_downsample: Vec<bool>,
    pub dropout: f64,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Wan2.2 residual up/down blocks; must be false.
    pub is_residual: bool,
    /// Wan2.2 patchification; must be null.
    pub patch_size: Option<usize>,
    pub scale_factor_temporal: usize,
    pub scale_factor_spatial: usize,
}

impl Default for WanVaeConfig {
    fn default() -> Self {
        Self::wan21()
    }
}

impl WanVaeConfig {
    /// The real Wan2.1 VAE (shared by the 1.3B and 14B models; SPEC-NOTES §0).
    pub fn wan21() -> Self {
        WanVaeConfig {
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: Vec::new(),
            temperal_downsample: vec![false, true, true],
            dropout: 0.0,
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632,
                -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382,
                1.1253, 2.8251, 1.9160,
            ],
            in_channels: 3,
            out_channels: 3,
            is_residual: false,
            patch_size: None,
            scale_factor_temporal: 4,
            scale_factor_spatial: 8,
        }
    }

    /// Parses a diffusers `config.json` value (or a case's `init_kwargs`) and validates it.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, VaeError> {
        let cfg: WanVaeConfig = serde_json::from_value(v.clone()).map_err(|e| VaeError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the configuration describes a Wan2.1-style VAE vidrt can build.
    pub fn validate(&self) -> Result<(), VaeError> {
        let bad = |m: String| Err(VaeError::Config(m));
        if self.is_residual {
            return Err(VaeError::Unsupported("is_residual=true (the Wan2.2 VAE)".into()));
        }
        if let Some(p) = self.patch_size {
            return Err(VaeError::Unsupported(format!("patch_size={p} (the Wan2.2 VAE)")));
        }
        if self.base_dim == 0 || self.z_dim == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return bad("base_dim, z_dim, in_channels and out_channels must be positive".into());
        }
        if self.dim_mult.len() < 2 || self.dim_mult.contains(&0) {
            return bad(format!("dim_mult {:?} needs at least two positive entries", self.dim_mult));
        }
        if self.dim_mult.len() > MAX_STAGES {
            return bad(format!("dim_mult has {} stages, at most {MAX_STAGES} are supported", self.dim_mult.len()));
        }
        if self.dim_mult.iter().any(|m| m.checked_mul(self.base_dim).and_then(|d| d.checked_mul(4)).is_none()) {
            return bad(format!("base_dim {} × dim_mult {:?} overflows", self.base_dim, self.dim_mult));
        }
        if self.num_res_blocks == 0 {
            return bad("num_res_blocks must be at least 1".into());
        }
        if self.temperal_downsample.len() != self.dim_mult.len() - 1 {
            return bad(format!(
                "temperal_downsample has {} entries, dim_mult {} needs {}",
                self.temperal_downsample.len(),
                self.dim_mult.len(),
                self.dim_mult.len() - 1
            ));
        }
        if let Some(d) = self.decoder_dims().iter().skip(1).take(self.dim_mult.len() - 1).find(|d| *d % 2 != 0) {
            return bad(format!("decoder width {d} must be even (the upsamplers halve it)"));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return bad(format!(
                "latents_mean and latents_std need z_dim = {} values, got {} and {}",
                self.z_dim,
                self.latents_mean.len(),
                self.latents_std.len()
            ));
        }
        if self.latents_std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return bad("latents_std values must be finite and non-zero".into());
        }
        Ok(())
    }

    /// Encoder widths `[base·1] + [base·m for m in dim_mult]`.
    pub fn encoder_dims(&self) -> Vec<usize> {
        std::iter::once(1).chain(self.dim_mult.iter().copied()).map(|m| self.base_dim.saturating_mul(m)).collect()
    }

    /// Decoder widths `[base·dim_mult[-1]] + [base·m for m in reversed(dim_mult)]`.
    pub fn decoder_dims(&self) -> Vec<usize> {
        let last = self.dim_mult.last().copied().unwrap_or(1);
        std::iter::once(last)
            .chain(self.dim_mult.iter().rev().copied())
            .map(|m| self.base_dim.saturating_mul(m))
            .collect()
    }

    /// The decoder's temporal upsampling flags (reverse of `temperal_downsample`).
    pub fn temperal_upsample(&self) -> Vec<bool> {
        self.temperal_downsample.iter().rev().copied().collect()
    }

    /// Temporal compression factor (2 per temporal downsampler).
    pub fn temporal_factor(&self) -> usize {
        let n = self.temperal_downsample.iter().filter(|t| **t).count();
        u32::try_from(n).ok().and_then(|n| 1usize.checked_shl(n)).unwrap_or(usize::MAX)
    }

    /// Spatial compression factor (2 per stage boundary).
    pub fn spatial_factor(&self) -> usize {
        let n = self.dim_mult.len().saturating_sub(1);
        u32::try_from(n).ok().and_then(|n| 1usize.checked_shl(n)).unwrap_or(usize::MAX)
    }

    /// Video frames decoded from `latent_frames` latents: `1 + f·(T − 1)`.
    pub fn decoded_frames(&self, latent_frames: usize) -> usize {
        if latent_frames == 0 {
            0
        } else {
            1 + self.temporal_factor() * (latent_frames - 1)
        }
    }

    /// Latent frames encoded from `frames` video frames (`1 + 4k` frames → `1 + 4k/f`).
    pub fn encoded_frames(&self, frames: usize) -> Result<usize, VaeError> {
        if frames % ENCODE_CHUNK_FRAMES != 1 {
            return Err(VaeError::Shape(format!("the encoder needs 1 + {ENCODE_CHUNK_FRAMES}k frames, got {frames}")));
        }
        // Both are powers of two: the factor divides the chunk length unless it exceeds it.
        let tf = self.temporal_factor();
        if tf > ENCODE_CHUNK_FRAMES {
            return Err(VaeError::Unsupported(format!(
                "temporal factor {tf}: the encoder runs {ENCODE_CHUNK_FRAMES}-frame chunks, which it must divide"
            )));
        }
        Ok(1 + (frames - 1) / tf)
    }
}

/// Which chunk a graph is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// The first chunk: no history (zero padding, upsample3d 'Rep', downsample3d pass-through).
    First,
    /// Every later chunk: history comes from the cache inputs.
    Steady,
}

/// One feature-cache slot: a history tensor that a chunk graph reads (`cache.<index>`,
/// steady chunks only) and writes (`cache_out.<index>`, every chunk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSlot {
    pub index: usize,
    /// The module that owns it (its diffusers path, e.g. `decoder.conv_in`).
    pub module: String,
    /// `[B, C, frames, H, W]`.
    pub shape: Shape,
}

impl CacheSlot {
    /// Graph input name of the cache a steady chunk reads.
    pub fn input_name(&self) -> String {
        format!("cache.{}", self.index)
    }

    /// Graph output name of the cache every chunk writes.
    pub fn output_name(&self) -> String {
        format!("cache_out.{}", self.index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_sizes_are_config_errors() {
        // Found by the `config` fuzz target: base_dim × dim_mult and the 2^stages factors
        // overflowed inside `validate`.
        let mut cfg = WanVaeConfig::wan21();
        cfg.base_dim = 1 << 62;
        assert!(matches!(cfg.validate(), Err(VaeError::Config(_))));
        let mut cfg = WanVaeConfig::wan21();
        cfg.dim_mult = vec![1; 70];
        cfg.temperal_downsample = vec![true; 69];
        assert!(matches!(cfg.validate(), Err(VaeError::Config(_))));
        assert_eq!(cfg.spatial_factor(), usize::MAX);
        assert_eq!(cfg.temporal_factor(), usize::MAX);
    }

    #[test]
    fn config_parses_with_defaults_and_ignores_unknown_keys() {
        let v = serde_json::json!({"_class_name": "AutoencoderKLWan", "base_dim": 8, "clip_output": true});
        let cfg = WanVaeConfig::from_json(&v).unwrap();
        assert_eq!(cfg.base_dim, 8);
        assert_eq!(cfg.z_dim, 16);
        assert_eq!(cfg.decoder_dims(), vec![32, 32, 32, 16, 8]);
        assert_eq!(cfg.encoder_dims(), vec![8, 8, 16, 32, 32]);
        assert_eq!(cfg.temperal_upsample(), vec![true, true, false]);
        assert_eq!(cfg.decoded_frames(21), 81);
        assert_eq!(cfg.encoded_frames(81).unwrap(), 21);
        assert!(cfg.encoded_frames(10).is_err());
    }

    #[test]
    fn config_validation_rejects_bad_values() {
        let mut c = WanVaeConfig::wan21();
        c.temperal_downsample = vec![true];
        assert!(matches!(c.validate(), Err(VaeError::Config(_))));
        let mut c = WanVaeConfig::wan21();
        c.is_residual = true;
        assert!(matches!(c.validate(), Err(VaeError::Unsupported(_))));
        let mut c = WanVaeConfig::wan21();
        c.latents_std[3] = 0.0;
        assert!(c.validate().is_err());
        assert!(WanVaeConfig::from_json(&serde_json::json!({"base_dim": "x"})).is_err());
        WanVaeConfig::wan21().validate().unwrap();
    }
}
