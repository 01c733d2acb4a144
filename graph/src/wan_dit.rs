//! The Wan2.1 DiT (diffusers `WanTransformer3DModel`, text-to-video) as an IR graph.
//!
//! Op order and maths follow `SPEC-NOTES.md` §1: patch-embedding conv, 3-axis RoPE table,
//! condition embedder (sinusoid → time_embedder → time_proj; text_embedder with tanh-GELU),
//! `num_layers` blocks (norm1 + modulation → self-attention with q/k RMS norm across heads
//! then RoPE → gated residual; affine norm2 → cross-attention → residual; norm3 + modulation
//! → tanh-GELU FFN → gated residual), then the output head (norm_out + scale_shift_table +
//! temb, proj_out, unpatchify). Weight names are the diffusers parameter names; see
//! [`names`] for the original Wan checkpoint names.
//!
//! Layouts: activations are `[B, S, D]` token-major; attention runs in BSHD layout, so head
//! splits and merges are free reshapes and each attention is one `Attention` op (the CPU
//! kernel is tiled with an online softmax, so 32k-token sequences never build a score
//! matrix).

pub mod names;

use serde::{Deserialize, Serialize};
use vidrt_ir::{DType, Graph, IrError, NodeId, RmsStyle, TrigPart};

pub use names::{diffusers_name_from_original, original_name_from_diffusers};

/// RoPE base frequency (`WanRotaryPosEmbed` default).
pub const ROPE_THETA: f64 = 10000.0;

/// The only query/key norm diffusers' `WanAttention` implements.
pub const QK_NORM_ACROSS_HEADS: &str = "rms_norm_across_heads";

/// An error building the DiT graph: an unsupported or inconsistent config, a latent shape
/// the config cannot take, or an IR error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DitError {
    /// The IR rejected a node.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The config asks for something this implementation does not do (e.g. I2V).
    #[error("unsupported Wan DiT config: {0}")]
    Unsupported(String),
    /// A config value is out of range.
    #[error("invalid Wan DiT config: `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// The config could not be parsed.
    #[error("cannot parse the Wan DiT config: {0}")]
    Parse(String),
    /// The latent or text shape does not fit the config.
    #[error("invalid DiT input shape: {0}")]
    Shape(String),
}

fn default_patch_size() -> [usize; 3] {
    [1, 2, 2]
}

/// `WanTransformer3DModel`'s constructor arguments (diffusers `config.json`). Unknown keys are
/// ignored; missing keys take diffusers' defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WanDitConfig {
    /// (pt, ph, pw): the patch-embedding kernel and stride.
    #[serde(default = "default_patch_size")]
    pub patch_size: [usize; 3],
    /// Attention heads H.
    pub num_attention_heads: usize,
    /// Head dim hd (D = H·hd).
    pub attention_head_dim: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// `None` or 0 means `in_channels` (diffusers: `out_channels or in_channels`).
    pub out_channels: Option<usize>,
    /// Width of the text encoder states.
    pub text_dim: usize,
    /// Width of the sinusoidal timestep embedding.
    pub freq_dim: usize,
    /// Hidden width of the feed-forward network.
    pub ffn_dim: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Whether `norm2` (the affine LayerNorm before cross-attention) exists.
    pub cross_attn_norm: bool,
    /// Only [`QK_NORM_ACROSS_HEADS`] (or `None`, which diffusers treats the same) is accepted.
    pub qk_norm: Option<String>,
    /// Epsilon of every LayerNorm and RMSNorm.
    pub eps: f64,
    /// I2V only; must be `None`.
    pub image_dim: Option<usize>,
    /// I2V only; must be `None`.
    pub added_kv_proj_dim: Option<usize>,
    /// Rotary positions per axis.
    pub rope_max_seq_len: usize,
    /// FLF2V only; must be `None`.
    pub pos_embed_seq_len: Option<usize>,
}

impl Default for WanDitConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        WanDitConfig {
            patch_size: default_patch_size(),
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some(QK_NORM_ACROSS_HEADS.to_string()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            pos_embed_seq_len: None,
        }
    }
}

impl WanDitConfig {
    /// Wan2.1-T2V-1.3B: 12 heads × 128, 30 layers, ffn 8960.
    pub fn wan21_t2v_1_3b() -> Self {
        WanDitConfig { num_attention_heads: 12, ffn_dim: 8960, num_layers: 30, ..Self::default() }
    }

    /// Wan2.1-T2V-14B: 40 heads × 128, 40 layers, ffn 13824.
    pub fn wan21_t2v_14b() -> Self {
        WanDitConfig { num_attention_heads: 40, ffn_dim: 13824, num_layers: 40, ..Self::default() }
    }

    /// Parses a diffusers `config.json` object (or a case's `init_kwargs`) and validates it.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, DitError> {
        let cfg: WanDitConfig = serde_json::from_value(v.clone()).map_err(|e| DitError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, DitError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| DitError::Parse(e.to_string()))?;
        Self::from_json(&v)
    }

    /// Model width D = heads × head_dim.
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Output latent channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels.filter(|&c| c > 0).unwrap_or(self.in_channels)
    }

    /// Head-dim split of the rotary embedding over (frames, rows, columns):
    /// `h = w = 2·⌊hd/6⌋`, `t = hd − h − w`.
    pub fn rope_dims(&self) -> [usize; 3] {
        let hw = 2 * (self.attention_head_dim / 6);
        [self.attention_head_dim.saturating_sub(2 * hw), hw, hw]
    }

    /// Features per token of `proj_out`: pt·ph·pw·C_out.
    pub fn patch_features(&self) -> usize {
        self.patch_size.iter().product::<usize>() * self.out_channels()
    }

    /// Rejects configs this implementation does not run or that are out of range.
    pub fn validate(&self) -> Result<(), DitError> {
        let invalid = |field: &'static str, reason: String| Err(DitError::InvalidConfig { field, reason });
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() || self.pos_embed_seq_len.is_some() {
            return Err(DitError::Unsupported(format!(
                "image conditioning (image_dim {:?}, added_kv_proj_dim {:?}, pos_embed_seq_len {:?}): only \
                 text-to-video is supported, I2V/FLF2V models are not",
                self.image_dim, self.added_kv_proj_dim, self.pos_embed_seq_len
            )));
        }
        if let Some(q) = &self.qk_norm {
            if q != QK_NORM_ACROSS_HEADS {
                return Err(DitError::Unsupported(format!(
                    "qk_norm `{q}`: only `{QK_NORM_ACROSS_HEADS}` is implemented"
                )));
            }
        }
        for (field, v) in [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("in_channels", self.in_channels),
            ("text_dim", self.text_dim),
            ("freq_dim", self.freq_dim),
            ("ffn_dim", self.ffn_dim),
            ("rope_max_seq_len", self.rope_max_seq_len),
        ] {
            if v == 0 {
                return invalid(field, "must be positive".into());
            }
        }
        if self.patch_size.contains(&0) {
            return invalid("patch_size", format!("{:?} must be positive", self.patch_size));
        }
        let hd = self.attention_head_dim;
        if hd % 2 == 1 || hd < 6 {
            return invalid(
                "attention_head_dim",
                format!(
                    "{hd} cannot be split into the 3 rotary axes (h = w = 2·⌊hd/6⌋, t = hd − h − w must all be \
                     even and positive: hd must be even and ≥ 6)"
                ),
            );
        }
        if self.freq_dim % 2 == 1 {
            return invalid("freq_dim", format!("{} must be even (cos and sin halves)", self.freq_dim));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return invalid("eps", format!("{} must be finite and ≥ 0", self.eps));
        }
        // Every width product the graph forms must fit a usize (a config is untrusted input).
        let dim = self.num_attention_heads.checked_mul(hd);
        if dim.and_then(|d| d.checked_mul(6)).is_none() || dim.and_then(|d| self.ffn_dim.checked_mul(d)).is_none() {
            return invalid("num_attention_heads", "model width overflows".into());
        }
        let features =
            self.patch_size.iter().try_fold(self.in_channels.max(self.out_channels()), |a, &p| a.checked_mul(p));
        if features.is_none() {
            return invalid("patch_size", format!("{:?} × channels overflows", self.patch_size));
        }
        Ok(())
    }
}

/// Latent and text sizes of one DiT call (latent sizes before patching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DitShape {
    /// Batch B.
    pub batch: usize,
    /// Latent frames F.
    pub frames: usize,
    /// Latent height H_l.
    pub height: usize,
    /// Latent width W_l.
    pub width: usize,
    /// Text tokens L (512 for Wan).
    pub text_len: usize,
}

impl DitShape {
    /// Token grid (F', H', W') after patching, checked against the config.
    pub fn grid(&self, cfg: &WanDitConfig) -> Result<[usize; 3], DitError> {
        let sizes = [("frames", self.frames), ("height", self.height), ("width", self.width)];
        let mut grid = [0usize; 3];
        for (ax, (what, n)) in sizes.into_iter().enumerate() {
            let p = cfg.patch_size[ax];
            if n == 0 || p == 0 || n % p != 0 {
                return Err(DitError::Shape(format!(
                    "latent {what} {n} is not a positive multiple of the patch size {p}"
                )));
            }
            grid[ax] = n / p;
            if grid[ax] > cfg.rope_max_seq_len {
                return Err(DitError::Shape(format!(
                    "{} patches along latent {what} exceed rope_max_seq_len {}",
                    grid[ax], cfg.rope_max_seq_len
                )));
            }
        }
        if self.batch == 0 || self.text_len == 0 {
            return Err(DitError::Shape(format!(
                "batch ({}) and text length ({}) must be positive",
                self.batch, self.text_len
            )));
        }
        Ok(grid)
    }

    /// Video tokens S = F'·H'·W'.
    pub fn tokens(&self, cfg: &WanDitConfig) -> Result<usize, DitError> {
        let g = self.grid(cfg)?;
        g.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| DitError::Shape("token count overflows".into()))
    }
}

/// What [`build_dit`] adds beyond the `output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DitOptions {
    /// Also output the intermediates of the golden `activations.safetensors`, under its
    /// names: `rope_cos`, `rope_sin` (`[1, S, 1, hd]`), `patch_embedding_out`,
    /// `timestep_sinusoid`, `temb`, `timestep_proj` (`[B, 6D]`), `text_embed`, block 0's
    /// internals (`block0.attn1.{to_q,to_k,to_v,norm_q,norm_k}_out`,
    /// `block0.{attn1,attn2,ffn}_{in,out}`), `block{i}_out` for every block, `head_in` and
    /// `head_out` (proj_out before unpatchify).
    pub activations: bool,
}

/// Builds the DiT graph.
///
/// Inputs: `hidden_states` f32 `[B, C_in, F, H_l, W_l]`, `timestep` f32 `[B]`,
/// `encoder_hidden_states` f32 `[B, L, text_dim]`. Output `output` f32 `[B, C_out, F, H_l, W_l]`
/// (the flow-matching velocity). Weights are declared f32 under their diffusers names.
pub fn build_dit(cfg: &WanDitConfig, shape: &DitShape, opts: &DitOptions) -> Result<Graph, DitError> {
    cfg.validate()?;
    let grid = shape.grid(cfg)?;
    let mut b = Builder { g: Graph::new(), cfg, acts: opts.activations };
    b.build(shape, grid)?;
    Ok(b.g)
}

const F32: DType = DType::F32;

/// Per-block modulation slices, each `[B, 1, D]`.
struct Modulation {
    shift_msa: NodeId,
    scale_msa: NodeId,
    gate_msa: NodeId,
    c_shift_msa: NodeId,
    c_scale_msa: NodeId,
    c_gate_msa: NodeId,
}

struct Builder<'a> {
    g: Graph,
    cfg: &'a WanDitConfig,
    acts: bool,
}

impl Builder<'_> {
    /// Marks `id` as the activation output `name` when activations are requested.
    fn act(&mut self, name: &str, id: NodeId) -> Result<(), DitError> {
        if self.acts {
            self.g.set_output(name, id)?;
        }
        Ok(())
    }

    /// `Linear(inp → out)` with bias, parameters `<scope>.<name>.{weight,bias}`.
    fn linear(&mut self, x: NodeId, name: &str, inp: usize, out: usize) -> Result<NodeId, DitError> {
        let w = self.g.param(&format!("{name}.weight"), [out, inp], F32)?;
        let bias = self.g.param(&format!("{name}.bias"), [out], F32)?;
        let y = self.g.linear(x, w, Some(bias))?;
        Ok(self.g.named(y, name))
    }

    fn build(&mut self, shape: &DitShape, grid: [usize; 3]) -> Result<(), DitError> {
        let cfg = self.cfg;
        let (bsz, d) = (shape.batch, cfg.dim());
        let s = grid[0] * grid[1] * grid[2];
        let (heads, hd) = (cfg.num_attention_heads, cfg.attention_head_dim);
        let g = &mut self.g;

        let x_in = g.input("hidden_states", [bsz, cfg.in_channels, shape.frames, shape.height, shape.width], F32)?;
        let t_in = g.input("timestep", [bsz], F32)?;
        let ctx_in = g.input("encoder_hidden_states", [bsz, shape.text_len, cfg.text_dim], F32)?;

        // 1.2 Rotary tables [S, hd] (computed in f64, rounded to f32).
        let dims = cfg.rope_dims();
        let cos = g.rope_table(grid, dims, ROPE_THETA, TrigPart::Cos)?;
        let cos = g.named(cos, "rope.cos");
        let sin = g.rope_table(grid, dims, ROPE_THETA, TrigPart::Sin)?;
        let sin = g.named(sin, "rope.sin");
        if self.acts {
            for (name, t) in [("rope_cos", cos), ("rope_sin", sin)] {
                let v = self.g.reshape(t, [1, s, 1, hd])?;
                self.g.set_output(name, v)?;
            }
        }

        // 1.1 Patch embedding: Conv3d with kernel = stride = patch, then tokens [B, S, D].
        let g = &mut self.g;
        let [pt, ph, pw] = cfg.patch_size;
        let pe_w = g.weight("patch_embedding.weight", [d, cfg.in_channels, pt, ph, pw], F32)?;
        let pe_b = g.weight("patch_embedding.bias", [d], F32)?;
        let pe = g.conv3d(x_in, pe_w, Some(pe_b), cfg.patch_size, [[0, 0]; 3])?;
        let pe = g.named(pe, "patch_embedding");
        let tok = g.reshape(pe, [bsz, d, s])?;
        let mut x = g.permute(tok, &[0, 2, 1])?;
        self.act("patch_embedding_out", pe)?;

        // 1.3 Condition embedder.
        let g = &mut self.g;
        g.push_scope("condition_embedder");
        let sinusoid = g.timestep_embedding(t_in, cfg.freq_dim, true, 0.0)?;
        let sinusoid = g.named(sinusoid, "timesteps_proj");
        let h = self.linear(sinusoid, "time_embedder.linear_1", cfg.freq_dim, d)?;
        let h = self.g.silu(h)?;
        let temb = self.linear(h, "time_embedder.linear_2", d, d)?;
        let h = self.g.silu(temb)?;
        let tproj = self.linear(h, "time_proj", d, 6 * d)?;
        let h = self.linear(ctx_in, "text_embedder.linear_1", cfg.text_dim, d)?;
        let h = self.g.gelu_tanh(h)?;
        let ctx = self.linear(h, "text_embedder.linear_2", d, d)?;
        self.g.pop_scope();
        self.act("timestep_sinusoid", sinusoid)?;
        self.act("temb", temb)?;
        self.act("timestep_proj", tproj)?;
        self.act("text_embed", ctx)?;
        let tproj6 = self.g.reshape(tproj, [bsz, 6, d])?;

        // 1.4 Blocks.
        for i in 0..cfg.num_layers {
            x = self.block(i, x, ctx, tproj6, (cos, sin), [bsz, s, heads, hd])?;
            self.act(&format!("block{i}_out"), x)?;
        }

        // 1.5 Head: shift, scale = scale_shift_table [1,2,D] + temb [B,1,D].
        let g = &mut self.g;
        let sst = g.weight("scale_shift_table", [1, 2, d], F32)?;
        let temb3 = g.reshape(temb, [bsz, 1, d])?;
        let m = g.add_(sst, temb3)?;
        let shift = g.slice(m, 1, 0, 1)?;
        let scale = g.slice(m, 1, 1, 2)?;
        let n = g.layer_norm(x, None, cfg.eps)?;
        let n = g.named(n, "norm_out");
        let head_in = g.modulate(n, scale, shift)?;
        let p = cfg.patch_features();
        let head_out = self.linear(head_in, "proj_out", d, p)?;
        self.act("head_in", head_in)?;
        self.act("head_out", head_out)?;

        // Unpatchify: feature ((i·ph + j)·pw + k)·C_out + c of token (f,h,w) goes to
        // out[b, c, f·pt+i, h·ph+j, w·pw+k].
        let g = &mut self.g;
        let c_out = cfg.out_channels();
        let y = g.reshape(head_out, vec![bsz, grid[0], grid[1], grid[2], pt, ph, pw, c_out])?;
        let y = g.permute(y, &[0, 7, 1, 4, 2, 5, 3, 6])?;
        let y = g.reshape(y, [bsz, c_out, shape.frames, shape.height, shape.width])?;
        let y = g.named(y, "output");
        g.set_output("output", y)?;
        Ok(())
    }

    /// One `WanTransformerBlock` (`blocks.{i}`), SPEC-NOTES §1.4.
    fn block(
        &mut self,
        i: usize,
        x: NodeId,
        ctx: NodeId,
        tproj6: NodeId,
        rope: (NodeId, NodeId),
        bshd: [usize; 4],
    ) -> Result<NodeId, DitError> {
        let cfg = self.cfg;
        let d = cfg.dim();
        let record = i == 0;
        self.g.push_scope(format!("blocks.{i}"));
        let m = self.modulation(tproj6)?;

        // 1. Self-attention with a gated residual.
        let n1 = self.g.layer_norm(x, None, cfg.eps)?;
        let n1 = self.g.named(n1, "norm1");
        let n1 = self.g.modulate(n1, m.scale_msa, m.shift_msa)?;
        let a1 = self.attention("attn1", n1, None, Some(rope), bshd, record.then_some(i))?;
        let gated = self.g.mul(a1, m.gate_msa)?;
        let x = self.g.add_(x, gated)?;

        // 2. Cross-attention (affine norm2 when cross_attn_norm), plain residual.
        let n2 = if cfg.cross_attn_norm {
            let w = self.g.param("norm2.weight", [d], F32)?;
            let b = self.g.param("norm2.bias", [d], F32)?;
            let n2 = self.g.layer_norm(x, Some((w, b)), cfg.eps)?;
            self.g.named(n2, "norm2")
        } else {
            x
        };
        let a2 = self.attention("attn2", n2, Some(ctx), None, bshd, None)?;
        let x = self.g.add_(x, a2)?;

        // 3. Feed-forward with a gated residual.
        let n3 = self.g.layer_norm(x, None, cfg.eps)?;
        let n3 = self.g.named(n3, "norm3");
        let n3 = self.g.modulate(n3, m.c_scale_msa, m.c_shift_msa)?;
        let h = self.linear(n3, "ffn.net.0.proj", d, cfg.ffn_dim)?;
        let h = self.g.gelu_tanh(h)?;
        let ff = self.linear(h, "ffn.net.2", cfg.ffn_dim, d)?;
        let gated = self.g.mul(ff, m.c_gate_msa)?;
        let out = self.g.add_(x, gated)?;
        let out = self.g.named(out, "");
        self.g.pop_scope();

        if record {
            let p = format!("block{i}");
            self.act(&format!("{p}.attn1_in"), n1)?;
            self.act(&format!("{p}.attn1_out"), a1)?;
            self.act(&format!("{p}.attn2_in"), n2)?;
            self.act(&format!("{p}.attn2_out"), a2)?;
            self.act(&format!("{p}.ffn_in"), n3)?;
            self.act(&format!("{p}.ffn_out"), ff)?;
        }
        Ok(out)
    }

    /// `scale_shift_table [1,6,D] + timestep_proj [B,6,D]`, split on the 6-axis.
    fn modulation(&mut self, tproj6: NodeId) -> Result<Modulation, DitError> {
        let d = self.cfg.dim();
        let sst = self.g.param("scale_shift_table", [1, 6, d], F32)?;
        let m = self.g.add_(sst, tproj6)?;
        let mut parts = [m; 6];
        for (k, p) in parts.iter_mut().enumerate() {
            *p = self.g.slice(m, 1, k, k + 1)?;
        }
        let [shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa] = parts;
        Ok(Modulation { shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa })
    }

    /// `WanAttention` (`attn1` self, `attn2` cross): q/k/v projections, RMS norm of q and k
    /// across heads, RoPE (self-attention only), SDPA, `to_out.0`. `record` names block
    /// `i`'s projection outputs as activations.
    fn attention(
        &mut self,
        name: &str,
        y: NodeId,
        ctx: Option<NodeId>,
        rope: Option<(NodeId, NodeId)>,
        [bsz, s, heads, hd]: [usize; 4],
        record: Option<usize>,
    ) -> Result<NodeId, DitError> {
        let cfg = self.cfg;
        let d = cfg.dim();
        let src = ctx.unwrap_or(y);
        let sk = match ctx {
            Some(c) => self.g.shape(c).dims()[1],
            None => s,
        };
        self.g.push_scope(name);
        let q = self.linear(y, "to_q", d, d)?;
        let k = self.linear(src, "to_k", d, d)?;
        let v = self.linear(src, "to_v", d, d)?;
        let wq = self.g.param("norm_q.weight", [d], F32)?;
        let qn = self.g.rms_norm(q, Some(wq), 2, cfg.eps, RmsStyle::MeanSquare)?;
        let qn = self.g.named(qn, "norm_q");
        let wk = self.g.param("norm_k.weight", [d], F32)?;
        let kn = self.g.rms_norm(k, Some(wk), 2, cfg.eps, RmsStyle::MeanSquare)?;
        let kn = self.g.named(kn, "norm_k");
        let mut q4 = self.g.reshape(qn, [bsz, s, heads, hd])?;
        let mut k4 = self.g.reshape(kn, [bsz, sk, heads, hd])?;
        let v4 = self.g.reshape(v, [bsz, sk, heads, hd])?;
        if let Some((cos, sin)) = rope {
            q4 = self.g.rope(q4, cos, sin)?;
            k4 = self.g.rope(k4, cos, sin)?;
        }
        let o = self.g.attention(q4, k4, v4, 1.0 / (hd as f64).sqrt(), None, None)?;
        let o = self.g.named(o, "sdpa");
        let o = self.g.reshape(o, [bsz, s, d])?;
        let out = self.linear(o, "to_out.0", d, d)?;
        self.g.pop_scope();
        if let Some(i) = record {
            for (what, id) in [("to_q", q), ("to_k", k), ("to_v", v), ("norm_q", qn), ("norm_k", kn)] {
                self.act(&format!("block{i}.{name}.{what}_out"), id)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
