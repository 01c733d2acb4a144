//! The VAE driver: runs the Wan2.1 VAE chunk by chunk as diffusers does (SPEC-NOTES §3.4),
//! carrying the feature caches from one chunk graph to the next, so memory stays bounded by
//! one chunk. Each chunk kind (first, steady) is compiled once per input size and reused.
//!
//! ```no_run
//! # fn demo(backend: &dyn vidrt::runtime::Backend, weights: &dyn vidrt::runtime::WeightSource,
//! #         z: &vidrt::ir::Tensor) -> vidrt::Result<()> {
//! use vidrt::graph::wan_vae::WanVaeConfig;
//! let mut dec = vidrt::vae::VaeDecoder::new(WanVaeConfig::wan21(), backend, weights)?;
//! let video = dec.decode(z, &mut |done, total| eprintln!("decoded {done}/{total}"))?;
//! # let _ = video; Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vidrt_graph::wan_vae::{
    build_decoder_chunk, build_encoder_chunk, ChunkGraph, ChunkKind, ChunkOptions, VaeError, WanVaeConfig,
    ENCODE_CHUNK_FRAMES,
};
use vidrt_ir::{DType, Tensor};
use vidrt_runtime::{Backend, Executable, RunOptions, WeightSource};

use crate::error::{Error, Result};

/// A VAE graph error as the facade's error.
fn vae_err(e: VaeError) -> Error {
    match e {
        VaeError::Ir(e) => Error::Ir(e),
        VaeError::Shape(m) => Error::Invalid(m),
        other => Error::Other(other.to_string()),
    }
}

/// What decoding produced.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// `[B, out_channels, 1 + f·(T − 1), 8h, 8w]`, before the clamp to [−1, 1].
    pub video_unclamped: Tensor,
    /// Module activations with all chunks joined on time (names as in
    /// [`ChunkGraph::activations`]); empty unless enabled.
    pub activations: BTreeMap<String, Tensor>,
}

impl Decoded {
    /// The video clamped to [−1, 1], as diffusers returns it.
    pub fn video(&self) -> Tensor {
        clamp(&self.video_unclamped, -1.0, 1.0)
    }
}

/// What encoding produced.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// `quant_conv` output `[B, 2·z_dim, T_lat, h, w]` = [mean ; logvar] on channels.
    pub moments: Tensor,
    /// Posterior mean (channels `[0, z_dim)`).
    pub mean: Tensor,
    /// Posterior log-variance (channels `[z_dim, 2·z_dim)`), clamped to [−30, 20].
    pub logvar: Tensor,
    /// Module activations joined on time; empty unless enabled.
    pub activations: BTreeMap<String, Tensor>,
}

/// A chunk graph compiled for one input size.
struct Compiled {
    info: ChunkGraph,
    exe: Box<dyn Executable>,
}

/// Both chunk kinds for one (batch, height, width); the steady one is compiled on first use.
struct Plan {
    opts: ChunkOptions,
    first: Compiled,
    steady: Option<Compiled>,
}

/// Which direction a [`Runner`] builds.
#[derive(Clone, Copy)]
enum Direction {
    Decode,
    Encode,
}

/// What one chunk run returns.
struct ChunkOutput {
    /// The frame output (`out` or `moments`).
    out: Tensor,
    /// The caches for the next chunk, in slot order.
    caches: Vec<Tensor>,
    /// Activations, in module order.
    acts: Vec<(String, Tensor)>,
}

/// Shared machinery of the decoder and encoder: compile per kind, run a chunk with caches.
struct Runner<'a> {
    cfg: WanVaeConfig,
    backend: &'a dyn Backend,
    weights: &'a dyn WeightSource,
    activations: bool,
    dir: Direction,
    plan: Option<Plan>,
    /// Stops a run between nodes when set (Ctrl-C).
    cancel: Option<Arc<AtomicBool>>,
}

impl<'a> Runner<'a> {
    fn new(cfg: WanVaeConfig, backend: &'a dyn Backend, weights: &'a dyn WeightSource, dir: Direction) -> Result<Self> {
        cfg.validate().map_err(vae_err)?;
        Ok(Runner { cfg, backend, weights, activations: false, dir, plan: None, cancel: None })
    }

    fn compile(&self, kind: ChunkKind, opts: &ChunkOptions) -> Result<Compiled> {
        let info = match self.dir {
            Direction::Decode => build_decoder_chunk(&self.cfg, kind, opts),
            Direction::Encode => build_encoder_chunk(&self.cfg, kind, opts),
        }
        .map_err(vae_err)?;
        let exe = self.backend.compile(&info.graph, self.weights)?;
        Ok(Compiled { info, exe })
    }

    /// Makes sure the plan fits (batch, height, width).
    fn prepare(&mut self, batch: usize, height: usize, width: usize) -> Result<()> {
        let opts = ChunkOptions { activations: self.activations, ..ChunkOptions::new(batch, height, width) };
        if self.plan.as_ref().is_some_and(|p| p.opts == opts) {
            return Ok(());
        }
        self.plan = None;
        let first = self.compile(ChunkKind::First, &opts)?;
        self.plan = Some(Plan { opts, first, steady: None });
        Ok(())
    }

    /// Runs chunk `kind` on `input`, consuming the previous caches and returning the new
    /// ones (slot order), the frame output and the activations.
    fn run_chunk(&mut self, kind: ChunkKind, input: Tensor, caches: Vec<Tensor>) -> Result<ChunkOutput> {
        let plan = self.plan.as_ref().ok_or_else(|| Error::Other("VAE: chunk run before prepare".into()))?;
        if kind == ChunkKind::Steady && plan.steady.is_none() {
            let steady = self.compile(ChunkKind::Steady, &plan.opts)?;
            if steady.info.slots != plan.first.info.slots {
                return Err(Error::Other("VAE: the chunk graphs disagree on their cache slots".into()));
            }
            if let Some(p) = self.plan.as_mut() {
                p.steady = Some(steady);
            }
        }
        let plan = self.plan.as_mut().ok_or_else(|| Error::Other("VAE: chunk run before prepare".into()))?;
        let c = match kind {
            ChunkKind::First => &mut plan.first,
            ChunkKind::Steady => plan.steady.as_mut().ok_or_else(|| Error::Other("VAE: no steady chunk".into()))?,
        };
        let mut names: Vec<String> = vec![c.info.input.clone()];
        let mut tensors = vec![input];
        if kind == ChunkKind::Steady {
            if caches.len() != c.info.slots.len() {
                return Err(Error::Other(format!("VAE: {} caches for {} slots", caches.len(), c.info.slots.len())));
            }
            names.extend(c.info.slots.iter().map(|s| s.input_name()));
            tensors.extend(caches);
        } else {
            drop(caches);
        }
        let inputs: Vec<(&str, Tensor)> = names.iter().map(String::as_str).zip(tensors).collect();
        let opts = RunOptions { check_outputs: true, cancel: self.cancel.clone(), ..RunOptions::default() };
        let outputs = c.exe.run_with(&inputs, &opts)?;
        drop(inputs);
        let mut by_name: HashMap<String, Tensor> = outputs.into_iter().collect();
        let mut take = |name: &str| {
            by_name.remove(name).ok_or_else(|| Error::Other(format!("VAE: chunk graph produced no `{name}`")))
        };
        let out = take(&c.info.output)?;
        let new_caches = c.info.slots.iter().map(|s| take(&s.output_name())).collect::<Result<Vec<_>>>()?;
        let acts = c
            .info
            .activations
            .iter()
            .map(|a| Ok((a.clone(), take(&ChunkGraph::activation_output(a))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ChunkOutput { out, caches: new_caches, acts })
    }
}

/// Collects per-chunk tensors and joins them on time.
#[derive(Default)]
struct Joiner {
    out: Vec<Tensor>,
    acts: BTreeMap<String, Vec<Tensor>>,
}

impl Joiner {
    fn push(&mut self, out: Tensor, acts: Vec<(String, Tensor)>) {
        self.out.push(out);
        for (k, v) in acts {
            self.acts.entry(k).or_default().push(v);
        }
    }

    fn finish(self) -> Result<(Tensor, BTreeMap<String, Tensor>)> {
        let out = concat_time(&self.out)?;
        let acts = self.acts.into_iter().map(|(k, v)| Ok((k, concat_time(&v)?))).collect::<Result<_>>()?;
        Ok((out, acts))
    }
}

/// Checks a `[B, C, T, H, W]` tensor and returns its extents.
fn video_dims(t: &Tensor, what: &str, channels: usize) -> Result<[usize; 5]> {
    match *t.dims() {
        [b, c, f, h, w] if c == channels && b * f * h * w > 0 && t.dtype().is_float() => Ok([b, c, f, h, w]),
        _ => Err(Error::Invalid(format!(
            "{what} must be a non-empty float [B, {channels}, T, H, W] tensor, got {}{}",
            t.dtype(),
            t.shape()
        ))),
    }
}

/// The Wan2.1 VAE decoder, run one latent frame at a time.
pub struct VaeDecoder<'a> {
    runner: Runner<'a>,
}

impl<'a> VaeDecoder<'a> {
    /// Stops decoding (between graph nodes) with [`vidrt_runtime::RuntimeError::Cancelled`]
    /// once `flag` is set.
    pub fn with_cancel(mut self, flag: Option<Arc<AtomicBool>>) -> Self {
        self.runner.cancel = flag;
        self
    }

    /// A decoder for `cfg` with weights (diffusers names) from `weights`, compiled lazily on
    /// `backend` for each latent size it sees.
    pub fn new(cfg: WanVaeConfig, backend: &'a dyn Backend, weights: &'a dyn WeightSource) -> Result<Self> {
        Ok(VaeDecoder { runner: Runner::new(cfg, backend, weights, Direction::Decode)? })
    }

    /// Also return every module activation (for tests; costs memory).
    pub fn with_activations(mut self, on: bool) -> Self {
        self.runner.activations = on;
        self
    }

    /// The model configuration.
    pub fn config(&self) -> &WanVaeConfig {
        &self.runner.cfg
    }

    /// Decodes latents `z` `[B, z_dim, T, h, w]` (already de-normalised, see
    /// [`denormalize_latents`]) to a video `[B, 3, 1 + 4(T − 1), 8h, 8w]` in [−1, 1].
    /// `progress(done, total)` is called after each latent frame.
    pub fn decode(&mut self, z: &Tensor, progress: &mut dyn FnMut(usize, usize)) -> Result<Tensor> {
        Ok(self.decode_full(z, progress)?.video())
    }

    /// Decodes without the clamp, with activations when enabled.
    pub fn decode_full(&mut self, z: &Tensor, progress: &mut dyn FnMut(usize, usize)) -> Result<Decoded> {
        let [b, _, t, h, w] = video_dims(z, "latents z", self.runner.cfg.z_dim)?;
        self.runner.prepare(b, h, w)?;
        let z = z.cast(DType::F32);
        let mut caches = Vec::new();
        let mut joiner = Joiner::default();
        for i in 0..t {
            let kind = if i == 0 { ChunkKind::First } else { ChunkKind::Steady };
            let chunk = slice_time(&z, i, i + 1)?;
            let r = self.runner.run_chunk(kind, chunk, caches)?;
            caches = r.caches;
            joiner.push(r.out.cast(DType::F32), r.acts);
            progress(i + 1, t);
        }
        let (video_unclamped, activations) = joiner.finish()?;
        Ok(Decoded { video_unclamped, activations })
    }
}

/// The Wan2.1 VAE encoder, run on frame 0 and then 4 frames at a time.
pub struct VaeEncoder<'a> {
    runner: Runner<'a>,
}

impl<'a> VaeEncoder<'a> {
    /// An encoder for `cfg` with weights (diffusers names) from `weights`, compiled lazily on
    /// `backend` for each video size it sees.
    pub fn new(cfg: WanVaeConfig, backend: &'a dyn Backend, weights: &'a dyn WeightSource) -> Result<Self> {
        Ok(VaeEncoder { runner: Runner::new(cfg, backend, weights, Direction::Encode)? })
    }

    /// Also return every module activation (for tests; costs memory).
    pub fn with_activations(mut self, on: bool) -> Self {
        self.runner.activations = on;
        self
    }

    /// The model configuration.
    pub fn config(&self) -> &WanVaeConfig {
        &self.runner.cfg
    }

    /// Encodes a video `[B, 3, 1 + 4k, H, W]` in [−1, 1] to the posterior moments.
    /// `progress(done, total)` is called after each chunk.
    pub fn encode(&mut self, video: &Tensor, progress: &mut dyn FnMut(usize, usize)) -> Result<Encoded> {
        let cfg = &self.runner.cfg;
        let [b, _, f, h, w] = video_dims(video, "video", cfg.in_channels)?;
        let z = cfg.z_dim;
        cfg.encoded_frames(f).map_err(vae_err)?;
        self.runner.prepare(b, h, w)?;
        let video = video.cast(DType::F32);
        let chunks = 1 + (f - 1) / ENCODE_CHUNK_FRAMES;
        let mut caches = Vec::new();
        let mut joiner = Joiner::default();
        for i in 0..chunks {
            let (kind, range) = if i == 0 {
                (ChunkKind::First, 0..1)
            } else {
                (ChunkKind::Steady, 1 + ENCODE_CHUNK_FRAMES * (i - 1)..1 + ENCODE_CHUNK_FRAMES * i)
            };
            let chunk = slice_time(&video, range.start, range.end)?;
            let r = self.runner.run_chunk(kind, chunk, caches)?;
            caches = r.caches;
            joiner.push(r.out.cast(DType::F32), r.acts);
            progress(i + 1, chunks);
        }
        let (moments, activations) = joiner.finish()?;
        let mean = slice_axis(&moments, 1, 0, z)?;
        let logvar = clamp(&slice_axis(&moments, 1, z, 2 * z)?, -30.0, 20.0);
        Ok(Encoded { moments, mean, logvar, activations })
    }
}

/// The pipeline's de-normalisation before decoding (SPEC-NOTES §3.7), in f32 as diffusers:
/// `z_c = latents_c / (1 / std_c) + mean_c`.
pub fn denormalize_latents(cfg: &WanVaeConfig, latents: &Tensor) -> Result<Tensor> {
    let [b, c, t, h, w] = video_dims(latents, "latents", cfg.z_dim)?;
    let mut v = latents.to_f32_vec();
    let plane = t * h * w;
    for (i, x) in v.iter_mut().enumerate() {
        let ch = (i / plane) % c;
        let inv_std = 1.0f32 / (cfg.latents_std[ch] as f32);
        *x = *x / inv_std + cfg.latents_mean[ch] as f32;
    }
    Tensor::from_f32([b, c, t, h, w], v).map_err(|e| Error::Other(e.to_string()))
}

/// Elementwise clamp (NaN stays NaN).
pub fn clamp(t: &Tensor, lo: f32, hi: f32) -> Tensor {
    let v: Vec<f32> = t.to_f32_vec().into_iter().map(|x| x.clamp(lo, hi)).collect();
    Tensor::from_f32(t.shape().clone(), v).unwrap_or_else(|_| t.clone())
}

/// Frames `start..end` of a `[B, C, T, H, W]` tensor.
fn slice_time(t: &Tensor, start: usize, end: usize) -> Result<Tensor> {
    slice_axis(t, 2, start, end)
}

/// `start..end` of `axis` (f32 result).
fn slice_axis(t: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
    let dims = t.dims();
    if axis >= dims.len() || start > end || end > dims[axis] {
        return Err(Error::Invalid(format!("slice {start}..{end} of axis {axis} is outside {}", t.shape())));
    }
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let len = dims[axis];
    let src = t.to_f32_vec();
    let mut out = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        out.extend_from_slice(&src[(o * len + start) * inner..(o * len + end) * inner]);
    }
    let mut shape = dims.to_vec();
    shape[axis] = end - start;
    Tensor::from_f32(shape, out).map_err(|e| Error::Other(e.to_string()))
}

/// Joins `[B, C, T_i, H, W]` tensors on time (f32 result).
fn concat_time(parts: &[Tensor]) -> Result<Tensor> {
    let first = parts.first().ok_or_else(|| Error::Invalid("nothing to concatenate".into()))?;
    let d0 = first.dims();
    if d0.len() != 5 {
        return Err(Error::Invalid(format!("expected [B, C, T, H, W] chunks, got {}", first.shape())));
    }
    let mut total = 0;
    for p in parts {
        let d = p.dims();
        if d.len() != 5 || d[..2] != d0[..2] || d[3..] != d0[3..] {
            return Err(Error::Invalid(format!("chunk {} does not match {}", p.shape(), first.shape())));
        }
        total += d[2];
    }
    let outer = d0[0] * d0[1];
    let plane = d0[3] * d0[4];
    let data: Vec<Vec<f32>> = parts.iter().map(Tensor::to_f32_vec).collect();
    let mut out = Vec::with_capacity(outer * total * plane);
    for o in 0..outer {
        for (p, v) in parts.iter().zip(&data) {
            let n = p.dims()[2] * plane;
            out.extend_from_slice(&v[o * n..(o + 1) * n]);
        }
    }
    Tensor::from_f32([d0[0], d0[1], total, d0[3], d0[4]], out).map_err(|e| Error::Other(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use vidrt_runtime::CpuBackend;

    /// Deterministic pseudo-random values in [-1, 1) (xorshift).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A tiny Wan-structured VAE with random weights for every parameter the chunk graphs use.
    fn tiny() -> (WanVaeConfig, HashMap<String, Tensor>) {
        let mut cfg = WanVaeConfig::wan21();
        cfg.base_dim = 4;
        cfg.z_dim = 4;
        cfg.latents_mean.truncate(4);
        cfg.latents_std.truncate(4);
        let mut w = HashMap::new();
        for kind in [ChunkKind::First, ChunkKind::Steady] {
            let dec = build_decoder_chunk(&cfg, kind, &ChunkOptions::new(1, 2, 3)).unwrap();
            let enc = build_encoder_chunk(&cfg, kind, &ChunkOptions::new(1, 16, 24)).unwrap();
            for g in [&dec.graph, &enc.graph] {
                for (name, id) in g.weights() {
                    let shape = g.shape(id).clone();
                    let fan_in: usize = shape.dims().iter().skip(1).product();
                    // Norm scales in [0.5, 1.5), other parameters N(0, 1/fan_in)-sized.
                    let (scale, offset) =
                        if name.ends_with("gamma") { (0.5, 1.0) } else { (1.0 / (fan_in.max(1) as f32).sqrt(), 0.0) };
                    let v = noise(shape.numel(), w.len() as u64 + 1).into_iter().map(|x| x * scale + offset).collect();
                    w.insert(name.to_string(), Tensor::from_f32(shape, v).unwrap());
                }
            }
        }
        (cfg, w)
    }

    /// Causality: decoding the first latents gives the first frames of a longer decode, and
    /// encoding the first frames gives the first latents; frame counts follow §3.5.
    #[test]
    fn chunked_decode_and_encode_are_causal() {
        let (cfg, w) = tiny();
        let cpu = CpuBackend::new();
        let z = Tensor::from_f32([1, 4, 3, 2, 3], noise(4 * 3 * 6, 7)).unwrap();
        let mut dec = VaeDecoder::new(cfg.clone(), &cpu, &w).unwrap();
        let mut calls = Vec::new();
        let full = dec.decode_full(&z, &mut |d, t| calls.push((d, t))).unwrap().video_unclamped;
        assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
        assert_eq!(full.dims(), &[1, 3, 9, 16, 24]);
        for t in [1, 2] {
            let part = dec.decode_full(&slice_time(&z, 0, t).unwrap(), &mut |_, _| {}).unwrap().video_unclamped;
            assert_eq!(part, slice_time(&full, 0, cfg.decoded_frames(t)).unwrap(), "{t} latent frames");
        }
        let clamped = dec.decode(&z, &mut |_, _| {}).unwrap();
        assert!(clamped.as_f32().unwrap().iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(clamped, clamp(&full, -1.0, 1.0));

        let video = Tensor::from_f32([1, 3, 9, 16, 24], noise(3 * 9 * 16 * 24, 11)).unwrap();
        let mut enc = VaeEncoder::new(cfg, &cpu, &w).unwrap();
        let all = enc.encode(&video, &mut |_, _| {}).unwrap();
        assert_eq!(all.moments.dims(), &[1, 8, 3, 2, 3]);
        let head = enc.encode(&slice_time(&video, 0, 5).unwrap(), &mut |_, _| {}).unwrap();
        assert_eq!(head.moments, slice_time(&all.moments, 0, 2).unwrap());
        assert_eq!(all.mean, slice_axis(&all.moments, 1, 0, 4).unwrap());
        assert!(enc.encode(&slice_time(&video, 0, 4).unwrap(), &mut |_, _| {}).is_err());
    }

    #[test]
    fn slice_and_concat_round_trip() {
        let v: Vec<f32> = (0..2 * 3 * 5 * 2 * 2).map(|x| x as f32).collect();
        let t = Tensor::from_f32([2, 3, 5, 2, 2], v).unwrap();
        let parts = [slice_time(&t, 0, 1).unwrap(), slice_time(&t, 1, 3).unwrap(), slice_time(&t, 3, 5).unwrap()];
        assert_eq!(concat_time(&parts).unwrap(), t);
        assert!(slice_time(&t, 4, 6).is_err());
        let c = slice_axis(&t, 1, 1, 2).unwrap();
        assert_eq!(c.dims(), &[2, 1, 5, 2, 2]);
        assert_eq!(c.as_f32().unwrap()[0], 20.0);
    }

    #[test]
    fn denormalize_divides_by_the_reciprocal() {
        let cfg = WanVaeConfig::wan21();
        let t = Tensor::from_f32([1, 16, 1, 1, 1], vec![1.0; 16]).unwrap();
        let z = denormalize_latents(&cfg, &t).unwrap();
        let got = z.as_f32().unwrap();
        assert_eq!(got[0], 1.0f32 / (1.0f32 / 2.8184f32) + (-0.7571f32));
        assert!(denormalize_latents(&cfg, &Tensor::from_f32([1, 3, 1, 1, 1], vec![0.0; 3]).unwrap()).is_err());
    }
}
