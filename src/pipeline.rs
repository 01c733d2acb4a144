//! The text-to-video pipeline: diffusers' `WanPipeline` on vidrt's graphs and backends.
//!
//! ```no_run
//! use vidrt::pipeline::{GenerateParams, NoProgress, Pipeline};
//! let pipe = Pipeline::tiny()?; // the built-in tiny model on the CPU backend
//! let params = GenerateParams { seed: 42, ..GenerateParams::new("a red fox running in the snow") };
//! let out = pipe.generate(&params, &mut NoProgress)?;
//! let video = vidrt::video::Video::from_tensor(&out.video, vidrt::video::WAN_FPS)?;
//! vidrt::video::write(&video, std::path::Path::new("fox.mp4"))?;
//! # Ok::<(), vidrt::Error>(())
//! ```
//!
//! The three networks run one after another and each is compiled only for its stage and
//! released after it (text encoder → DiT sampling loop → VAE decode), so the peak memory is
//! that of the largest component, not of all three.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vidrt_graph::config::ModelConfig;
use vidrt_graph::scheduler::{new_scheduler, Scheduler, SchedulerKind};
use vidrt_graph::umt5::{build_umt5, Umt5Options, EMBED_WEIGHT, EMBED_WEIGHT_ALIAS};
use vidrt_graph::wan_dit::{self, build_dit, DitError, DitOptions, DitShape, WanDitConfig};
use vidrt_graph::wan_vae::{self, build_decoder_chunk, ChunkKind, ChunkOptions};
use vidrt_graph::WeightStore;
use vidrt_ir::{Graph, Tensor};
use vidrt_runtime::{Backend, CpuBackend, Executable, RunOptions, WeightSource};

use crate::error::{Error, Result};
use crate::text::{TextEncoder, Tokenizer};
use crate::vae::{denormalize_latents, VaeDecoder};
use crate::weights::{gaussian_noise, MappedWeights, SeededWeights};

/// A stage of generation, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Encoding the prompt and the negative prompt (total: 1).
    TextEncoding,
    /// The sampling loop (total: the number of steps).
    Denoising,
    /// VAE decoding (total: the number of latent frames).
    Decoding,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::TextEncoding => "text encoder",
            Stage::Denoising => "denoising",
            Stage::Decoding => "VAE decode",
        }
    }
}

/// Receives progress: `begin` once per stage, `advance` with the count done so far.
pub trait Progress {
    fn begin(&mut self, stage: Stage, total: usize);
    fn advance(&mut self, stage: Stage, done: usize);
    fn end(&mut self, stage: Stage);
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: Stage, _: usize) {}
    fn advance(&mut self, _: Stage, _: usize) {}
    fn end(&mut self, _: Stage) {}
}

/// The arguments of `WanPipeline.__call__`. `None` takes the model's default, which for the
/// Wan2.1 models is diffusers' (480×832, 81 frames, 50 steps, guidance 5.0, flow shift from
/// the scheduler config).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub prompt: String,
    /// diffusers' default is no negative prompt, which it encodes as "".
    pub negative_prompt: String,
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// Rounded down to 4k + 1 as diffusers does.
    pub num_frames: Option<usize>,
    pub num_inference_steps: Option<usize>,
    /// Classifier-free guidance runs when this is above 1.
    pub guidance_scale: Option<f64>,
    /// The scheduler's flow shift (3.0 for 480p, 5.0 for 720p).
    pub shift: Option<f64>,
    /// Seeds the initial noise (vidrt's own generator: the same seed gives other noise than
    /// torch's).
    pub seed: u64,
    pub scheduler: SchedulerKind,
    /// Initial latents to use instead of seeded noise (`[1, z_dim, T, H/8, W/8]`).
    pub latents: Option<Tensor>,
}

impl GenerateParams {
    pub fn new(prompt: impl Into<String>) -> Self {
        GenerateParams {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            height: None,
            width: None,
            num_frames: None,
            num_inference_steps: None,
            guidance_scale: None,
            shift: None,
            seed: 0,
            scheduler: SchedulerKind::UniPc,
            latents: None,
        }
    }
}

/// The arguments after defaults and checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub height: usize,
    pub width: usize,
    pub num_frames: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub shift: f64,
    /// `[1, z_dim, T, H/8, W/8]`.
    pub latent_shape: [usize; 5],
}

/// What a generation produced.
pub struct Generated {
    /// The decoded video `[1, 3, F, H, W]` in [−1, 1].
    pub video: Tensor,
    /// The final latents (before de-normalisation).
    pub latents: Tensor,
    pub resolved: Resolved,
}

/// Where a model's weights come from.
enum ModelWeights {
    /// The built-in tiny model's seeded weights.
    Seeded(SeededWeights),
    /// A diffusers-layout folder (each component served under its diffusers names).
    Folder(Box<FolderWeights>),
}

/// A folder's three weight stores.
struct FolderWeights {
    dit: MappedWeights,
    vae: MappedWeights,
    text: MappedWeights,
}

/// A loaded model: configuration, tokenizer and weights.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    weights: ModelWeights,
    pub source: String,
}

fn find_weights(dir: &Path) -> Result<WeightStore> {
    Ok(WeightStore::from_dir(dir)?)
}

impl Model {
    /// The built-in tiny model: Wan2.1's architecture at toy sizes with seeded weights and
    /// the built-in byte tokenizer. It makes noise-like videos; it exists to run the whole
    /// pipeline anywhere in seconds.
    pub fn tiny() -> Result<Self> {
        let config = ModelConfig::tiny().map_err(|e| Error::Other(e.to_string()))?;
        Ok(Model {
            config,
            tokenizer: Tokenizer::builtin_tiny(),
            weights: ModelWeights::Seeded(SeededWeights { seed: 0x5eed }),
            source: "built-in tiny model".into(),
        })
    }

    /// Loads a diffusers-layout folder: `transformer/`, `vae/`, `text_encoder/` (config.json +
    /// one or more safetensors, sharded with an index or not), `tokenizer/tokenizer.json` and
    /// optionally `scheduler/`. Transformer and VAE weights may use the original Wan
    /// checkpoint names. Every tensor is checked against the graphs here, before any
    /// compute: a missing, extra or mis-shaped tensor is an error naming it.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_dir(dir).map_err(|e| Error::Case { path: e.path, reason: e.reason })?;
        let tok_path = dir.join("tokenizer").join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        let dit = MappedWeights::new(find_weights(&dir.join("transformer"))?, wan_dit::diffusers_name_from_original);
        let vae = MappedWeights::new(find_weights(&dir.join("vae"))?, wan_vae::diffusers_name_from_original);
        let text = MappedWeights::new(find_weights(&dir.join("text_encoder"))?, |_| None);
        let model = Model {
            config,
            tokenizer,
            weights: ModelWeights::Folder(Box::new(FolderWeights { dit, vae, text })),
            source: dir.display().to_string(),
        };
        model.check_weights()?;
        Ok(model)
    }

    /// The graphs of the three components at a small shape (weights do not depend on it).
    fn component_graphs(&self) -> Result<[(&'static str, Vec<Graph>); 3]> {
        let c = &self.config;
        let pt = c.dit.patch_size;
        let shape = DitShape { batch: 1, frames: pt[0], height: pt[1], width: pt[2], text_len: 1 };
        let dit = build_dit(&c.dit, &shape, &DitOptions::default()).map_err(dit_error)?;
        let text = build_umt5(&c.text, 1, 1, &Umt5Options::default()).map_err(|e| Error::Invalid(e.to_string()))?;
        let s = c.vae.spatial_factor();
        let opts = ChunkOptions::new(1, s, s);
        let vae_err = |e: wan_vae::VaeError| Error::Invalid(e.to_string());
        let mut vae = Vec::new();
        for kind in [ChunkKind::First, ChunkKind::Steady] {
            vae.push(build_decoder_chunk(&c.vae, kind, &opts).map_err(vae_err)?.graph);
        }
        Ok([("transformer", vec![dit]), ("vae", vae), ("text_encoder", vec![text])])
    }

    /// Checks a folder's tensors against the graphs: every weight present with its shape and
    /// a float dtype, and no tensor left over (the VAE encoder's and tied copies excepted).
    pub fn check_weights(&self) -> Result<()> {
        let ModelWeights::Folder(f) = &self.weights else { return Ok(()) };
        let (dit, vae, text) = (&f.dit, &f.vae, &f.text);
        for (component, graphs) in self.component_graphs()? {
            let store = match component {
                "transformer" => dit,
                "vae" => vae,
                _ => text,
            };
            let mut used: Vec<String> = Vec::new();
            for g in &graphs {
                for (name, id) in g.weights() {
                    let stored = store.stored_name(name);
                    let mut stored = stored.to_string();
                    if component == "text_encoder" && name == EMBED_WEIGHT && !store.store().contains(&stored) {
                        stored = EMBED_WEIGHT_ALIAS.to_string();
                    }
                    let Some(shape) = store.store().shape(&stored) else {
                        return Err(Error::Case {
                            path: PathBuf::from(store.store().describe()),
                            reason: format!("{component}: missing tensor `{name}`"),
                        });
                    };
                    if &shape != g.shape(id) {
                        return Err(Error::Case {
                            path: PathBuf::from(store.store().describe()),
                            reason: format!(
                                "{component}: tensor `{stored}` has shape {shape}, the model needs {}",
                                g.shape(id)
                            ),
                        });
                    }
                    let dtype = store.store().dtype(&stored).map_err(|e| Error::Case {
                        path: PathBuf::from(store.store().describe()),
                        reason: format!("{component}: {e}"),
                    })?;
                    if !dtype.is_float() {
                        return Err(Error::Case {
                            path: PathBuf::from(store.store().describe()),
                            reason: format!(
                                "{component}: tensor `{stored}` is stored as {dtype}, the model needs a float dtype \
                                 (F32, F16 or BF16)"
                            ),
                        });
                    }
                    used.push(name.to_string());
                }
            }
            let used_refs: Vec<&str> = used.iter().map(String::as_str).collect();
            let extra = store.unused(&used_refs, |n| {
                (component == "vae" && is_vae_encoder_tensor(n))
                    || (component == "text_encoder" && (n == EMBED_WEIGHT || n == EMBED_WEIGHT_ALIAS))
            });
            if let Some(first) = extra.first() {
                return Err(Error::Case {
                    path: PathBuf::from(store.store().describe()),
                    reason: format!(
                        "{component}: {} tensor(s) the model does not use, first `{first}` (wrong model or config?)",
                        extra.len()
                    ),
                });
            }
        }
        Ok(())
    }

    fn dit_weights(&self) -> &dyn WeightSource {
        match &self.weights {
            ModelWeights::Seeded(s) => s,
            ModelWeights::Folder(f) => &f.dit,
        }
    }

    fn vae_weights(&self) -> &dyn WeightSource {
        match &self.weights {
            ModelWeights::Seeded(s) => s,
            ModelWeights::Folder(f) => &f.vae,
        }
    }

    fn text_weights(&self) -> &dyn WeightSource {
        match &self.weights {
            ModelWeights::Seeded(s) => s,
            ModelWeights::Folder(f) => &f.text,
        }
    }

    /// Applies the model's defaults and diffusers' checks to `p`.
    pub fn resolve(&self, p: &GenerateParams) -> Result<Resolved> {
        let c = &self.config;
        let d = &c.defaults;
        let height = p.height.unwrap_or(d.height);
        let width = p.width.unwrap_or(d.width);
        let mut num_frames = p.num_frames.unwrap_or(d.num_frames);
        let steps = p.num_inference_steps.unwrap_or(d.num_inference_steps);
        let guidance = p.guidance_scale.unwrap_or(d.guidance_scale);
        let shift = p.shift.unwrap_or(c.flow_shift);
        let (ft, fs) = (c.vae.temporal_factor(), c.vae.spatial_factor());
        let (ph, pw) = (c.dit.patch_size[1], c.dit.patch_size[2]);
        if height == 0 || width == 0 || !height.is_multiple_of(fs * ph) || !width.is_multiple_of(fs * pw) {
            return Err(Error::Invalid(format!(
                "height and width must be positive multiples of {} and {}, got {height}x{width}",
                fs * ph,
                fs * pw
            )));
        }
        if num_frames == 0 {
            return Err(Error::Invalid("num_frames must be at least 1".into()));
        }
        if !(num_frames - 1).is_multiple_of(ft) {
            // diffusers: "num_frames - 1 has to be divisible by 4. Rounding to the nearest number."
            num_frames = (num_frames - 1) / ft * ft + 1;
        }
        if steps == 0 {
            return Err(Error::Invalid("num_inference_steps must be at least 1".into()));
        }
        if !guidance.is_finite() {
            return Err(Error::Invalid(format!("guidance_scale must be finite, got {guidance}")));
        }
        if !(shift.is_finite() && shift > 0.0) {
            return Err(Error::Invalid(format!("shift must be finite and positive, got {shift}")));
        }
        let latent_frames = (num_frames - 1) / ft + 1;
        let latent_shape = [1, c.vae.z_dim, latent_frames, height / fs, width / fs];
        if !latent_frames.is_multiple_of(c.dit.patch_size[0]) {
            return Err(Error::Invalid(format!(
                "{latent_frames} latent frames do not divide by the temporal patch size {}",
                c.dit.patch_size[0]
            )));
        }
        Ok(Resolved {
            height,
            width,
            num_frames,
            num_inference_steps: steps,
            guidance_scale: guidance,
            shift,
            latent_shape,
        })
    }
}

fn is_vae_encoder_tensor(name: &str) -> bool {
    name.starts_with("encoder.") || name.starts_with("quant_conv.") || name.starts_with("conv1.")
}

fn dit_error(e: DitError) -> Error {
    match e {
        DitError::Ir(e) => Error::Ir(e),
        other => Error::Invalid(other.to_string()),
    }
}

/// The DiT compiled for one latent shape and text length, with classifier-free guidance's
/// conditional and unconditional passes batched into one run.
pub struct DitRunner {
    exe: Box<dyn Executable>,
    batch: usize,
    latent: [usize; 5],
    cancel: Option<Arc<AtomicBool>>,
}

impl DitRunner {
    /// Compiles the DiT for `batch` sequences of latents `latent` (batch 1 in it) and
    /// `text_len` text rows.
    pub fn new(
        cfg: &WanDitConfig,
        weights: &dyn WeightSource,
        backend: &dyn Backend,
        batch: usize,
        latent: [usize; 5],
        text_len: usize,
    ) -> Result<Self> {
        let shape = DitShape { batch, frames: latent[2], height: latent[3], width: latent[4], text_len };
        let g = build_dit(cfg, &shape, &DitOptions::default()).map_err(dit_error)?;
        let exe = backend.compile(&g, weights)?;
        Ok(DitRunner { exe, batch, latent, cancel: None })
    }

    /// One DiT pass: the same latents for every batch row, timestep `t`, text `context`
    /// `[batch, L, text_dim]`. Returns the velocity prediction, `batch` rows.
    pub fn predict(&mut self, latents: &[f32], t: f32, context: &Tensor) -> Result<Vec<f32>> {
        let [_, c, f, h, w] = self.latent;
        let mut x = Vec::with_capacity(latents.len() * self.batch);
        for _ in 0..self.batch {
            x.extend_from_slice(latents);
        }
        let x = Tensor::from_f32([self.batch, c, f, h, w], x).map_err(|e| Error::Invalid(e.to_string()))?;
        let ts = Tensor::from_f32([self.batch], vec![t; self.batch]).map_err(|e| Error::Invalid(e.to_string()))?;
        let opts = RunOptions { check_outputs: true, cancel: self.cancel.clone(), ..RunOptions::default() };
        let inputs = [("hidden_states", x), ("timestep", ts), ("encoder_hidden_states", context.clone())];
        let out = self.exe.run_with(&inputs, &opts)?;
        let (_, y) = out
            .into_iter()
            .find(|(n, _)| n == "output")
            .ok_or_else(|| Error::Other("the DiT graph has no `output`".into()))?;
        Ok(y.to_f32_vec())
    }
}

/// What one sampling step computed (for tests and tracing).
pub struct StepRecord<'a> {
    pub index: usize,
    pub timestep: f32,
    pub cond: &'a [f32],
    pub uncond: Option<&'a [f32]>,
    pub guided: &'a [f32],
    /// The latents after the step.
    pub latents: &'a [f32],
}

/// The sampling loop (SPEC-NOTES §2): per step, the DiT on the conditional and (with
/// guidance > 1) unconditional text, `guided = uncond + g·(cond − uncond)`, a scheduler step.
/// `context` is `[1, L, D]` (no guidance) or `[2, L, D]` (cond row 0, uncond row 1), matching
/// the runner's batch.
pub fn denoise(
    dit: &mut DitRunner,
    scheduler: &mut dyn Scheduler,
    latents: Vec<f32>,
    context: &Tensor,
    guidance_scale: f64,
    on_step: &mut dyn FnMut(StepRecord<'_>),
) -> Result<Vec<f32>> {
    let mut x = latents;
    let n = x.len();
    let g = guidance_scale as f32;
    for i in 0..scheduler.num_steps() {
        let t = scheduler.model_timestep(i);
        let pred = dit.predict(&x, t, context)?;
        let (cond, uncond) = if dit.batch == 2 { (&pred[..n], Some(&pred[n..2 * n])) } else { (&pred[..n], None) };
        let guided: Vec<f32> = match uncond {
            Some(u) => u.iter().zip(cond).map(|(&u, &c)| u + g * (c - u)).collect(),
            None => cond.to_vec(),
        };
        if let Some(k) = guided.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!("the DiT produced a non-finite value at step {i} (element {k})")));
        }
        x = scheduler.step(&guided, &x).map_err(|e| Error::Other(format!("scheduler: {e}")))?;
        on_step(StepRecord { index: i, timestep: t, cond, uncond, guided: &guided, latents: &x });
    }
    Ok(x)
}

/// Text-to-video generation on one backend.
pub struct Pipeline {
    pub model: Model,
    backend: Box<dyn Backend>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Pipeline {
    /// The built-in tiny model on the CPU backend.
    pub fn tiny() -> Result<Self> {
        Ok(Pipeline::new(Model::tiny()?, Box::new(CpuBackend::new())))
    }

    /// `model` on `backend`.
    pub fn new(model: Model, backend: Box<dyn Backend>) -> Self {
        Pipeline { model, backend, cancel: None }
    }

    /// Once `flag` is set (e.g. by a Ctrl-C handler), generation stops at the next graph node
    /// with [`Error::is_cancelled`] true; nothing has been written by then.
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Runtime(vidrt_runtime::RuntimeError::Cancelled)),
            _ => Ok(()),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Encodes `prompts` to `[n, max_sequence_length, d_model]` prompt embeddings.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        let m = &self.model;
        let mut te =
            TextEncoder::new(self.backend.as_ref(), m.text_weights(), m.config.text.clone(), Umt5Options::default())?;
        te.encode_prompts(&m.tokenizer, prompts, m.config.max_sequence_length)
    }

    /// Generates a video (see [`GenerateParams`]).
    pub fn generate(&self, params: &GenerateParams, progress: &mut dyn Progress) -> Result<Generated> {
        let m = &self.model;
        let r = m.resolve(params)?;
        let cfg_on = r.guidance_scale > 1.0;

        progress.begin(Stage::TextEncoding, 1);
        let prompts: Vec<&str> =
            if cfg_on { vec![&params.prompt, &params.negative_prompt] } else { vec![&params.prompt] };
        let context = self.encode_prompts(&prompts)?;
        self.check_cancel()?;
        progress.advance(Stage::TextEncoding, 1);
        progress.end(Stage::TextEncoding);

        let latents = match &params.latents {
            Some(t) if t.dims() == r.latent_shape => t.to_f32_vec(),
            Some(t) => {
                return Err(Error::Invalid(format!(
                    "initial latents have shape {}, this call needs {:?}",
                    t.shape(),
                    r.latent_shape
                )))
            }
            None => gaussian_noise(&r.latent_shape, params.seed).to_f32_vec(),
        };
        let mut scheduler = new_scheduler(params.scheduler, r.num_inference_steps, r.shift)
            .map_err(|e| Error::Invalid(format!("scheduler: {e}")))?;
        let batch = if cfg_on { 2 } else { 1 };
        let latents = {
            let mut dit = DitRunner::new(
                &m.config.dit,
                m.dit_weights(),
                self.backend.as_ref(),
                batch,
                r.latent_shape,
                m.config.max_sequence_length,
            )?;
            dit.cancel = self.cancel.clone();
            progress.begin(Stage::Denoising, r.num_inference_steps);
            let out = denoise(&mut dit, scheduler.as_mut(), latents, &context, r.guidance_scale, &mut |s| {
                progress.advance(Stage::Denoising, s.index + 1)
            })?;
            progress.end(Stage::Denoising);
            out
        };
        let latents = Tensor::from_f32(r.latent_shape, latents).map_err(|e| Error::Invalid(e.to_string()))?;

        let z = denormalize_latents(&m.config.vae, &latents)?;
        self.check_cancel()?;
        let mut vae = VaeDecoder::new(m.config.vae.clone(), self.backend.as_ref(), m.vae_weights())?
            .with_cancel(self.cancel.clone());
        progress.begin(Stage::Decoding, r.latent_shape[2]);
        let video = vae.decode(&z, &mut |done, _| progress.advance(Stage::Decoding, done))?;
        progress.end(Stage::Decoding);
        if let Some(i) = video.first_non_finite() {
            return Err(Error::Invalid(format!("the decoded video has a non-finite value at element {i}")));
        }
        Ok(Generated { video, latents, resolved: r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_stops_generation() {
        let mut pipe = Pipeline::tiny().expect("tiny");
        let flag = Arc::new(AtomicBool::new(true));
        pipe.set_cancel(flag);
        let mut p = GenerateParams::new("x");
        (p.height, p.width, p.num_frames, p.num_inference_steps) = (Some(32), Some(32), Some(5), Some(2));
        let e = pipe.generate(&p, &mut NoProgress).err().expect("cancelled");
        assert!(e.is_cancelled(), "{e}");

        // Set in the middle of sampling: stops inside the next DiT run.
        struct CancelAt(Arc<AtomicBool>, usize);
        impl Progress for CancelAt {
            fn begin(&mut self, _: Stage, _: usize) {}
            fn advance(&mut self, stage: Stage, done: usize) {
                if stage == Stage::Denoising {
                    self.1 = done;
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            fn end(&mut self, _: Stage) {}
        }
        let flag = Arc::new(AtomicBool::new(false));
        pipe.set_cancel(flag.clone());
        let mut progress = CancelAt(flag, 0);
        let e = pipe.generate(&p, &mut progress).err().expect("cancelled");
        assert!(e.is_cancelled(), "{e}");
        assert_eq!(progress.1, 1, "stopped during the second step");
    }

    #[test]
    fn resolve_follows_diffusers() {
        let m = Model::tiny().expect("tiny");
        let mut p = GenerateParams::new("x");
        p.num_frames = Some(10);
        let r = m.resolve(&p).expect("resolves");
        assert_eq!(r.num_frames, 9, "rounded down to 4k+1");
        assert_eq!(r.latent_shape, [1, 16, 3, 12, 16]);
        p.height = Some(100);
        assert!(matches!(m.resolve(&p), Err(Error::Invalid(_))));
        p.height = Some(96);
        p.num_inference_steps = Some(0);
        assert!(m.resolve(&p).is_err());
    }

    #[test]
    fn tiny_generation_is_deterministic_and_finite() {
        let pipe = Pipeline::tiny().expect("tiny");
        let mut p = GenerateParams::new("a red fox");
        (p.height, p.width, p.num_frames, p.num_inference_steps) = (Some(32), Some(32), Some(5), Some(2));
        let a = pipe.generate(&p, &mut NoProgress).expect("generates");
        assert_eq!(a.video.dims(), &[1, 3, 5, 32, 32]);
        assert!(a.video.first_non_finite().is_none());
        let v = a.video.to_f32_vec();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        let spread = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(spread > 0.0, "not a constant video");
        let b = pipe.generate(&p, &mut NoProgress).expect("generates");
        assert_eq!(a.video.to_f32_vec(), b.video.to_f32_vec(), "same seed, same video");
        p.seed = 1;
        let c = pipe.generate(&p, &mut NoProgress).expect("generates");
        assert_ne!(a.latents.to_f32_vec(), c.latents.to_f32_vec(), "another seed, other latents");
    }
}
