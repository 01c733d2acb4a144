//! The umT5 text encoder (transformers' `UMT5EncoderModel`, Wan2.1's umT5-XXL) as an IR graph.
//!
//! Op order follows SPEC-NOTES §4.1: token embedding (no scaling), then per layer a pre-norm
//! self-attention with T5 RMS norm (no mean subtraction, weight only), no `1/sqrt(d_kv)`
//! scaling, the layer's **own** relative-position bias and the key padding mask, and a
//! pre-norm (gated) feed-forward; a final T5 RMS norm. Weight names are the transformers
//! names (`shared.weight`, `encoder.block.{i}.layer.0.SelfAttention.q.weight`, ...).

use serde::{Deserialize, Serialize};
use vidrt_ir::{BinaryOp, DType, Graph, IrError, NodeId, RmsStyle, UnaryOp};

/// The embedding table's name in the graph (transformers' `shared.weight`).
pub const EMBED_WEIGHT: &str = "shared.weight";
/// The same tied table under its other transformers name; a weight source may serve either.
pub const EMBED_WEIGHT_ALIAS: &str = "encoder.embed_tokens.weight";

/// An error building the umT5 graph.
#[derive(Debug, thiserror::Error)]
pub enum Umt5Error {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// `feed_forward_proj` names an activation or form this graph does not build.
    #[error("umT5 feed_forward_proj `{0}` is not supported (expected `[gated-]ACT` with ACT one of gelu_new, gelu, gelu_pytorch_tanh, silu, swish, relu)")]
    UnsupportedFeedForward(String),
    /// A size in the config is zero or inconsistent.
    #[error("umT5 config: {0}")]
    InvalidConfig(String),
    /// The config JSON does not parse.
    #[error("umT5 config JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `UMT5Config` (transformers), the fields the encoder uses. Missing keys take
/// transformers' defaults; unknown keys are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Size of one attention head.
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    /// `"gated-gelu"` for umT5 (gated FFN with `gelu_new`), or `[gated-]ACT`.
    pub feed_forward_proj: String,
    pub layer_norm_epsilon: f64,
}

impl Default for Umt5Config {
    /// transformers' `UMT5Config()` defaults.
    fn default() -> Self {
        Umt5Config {
            vocab_size: 250112,
            d_model: 512,
            d_kv: 64,
            d_ff: 1024,
            num_layers: 8,
            num_heads: 6,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            feed_forward_proj: "gated-gelu".into(),
            layer_norm_epsilon: 1e-6,
        }
    }
}

/// The feed-forward activation (transformers' `dense_act_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact (erf) GELU (`gelu`).
    GeluErf,
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
}

impl Umt5Config {
    /// Wan2.1's text encoder, the umT5-XXL encoder (SPEC-NOTES §0).
    pub fn umt5_xxl() -> Self {
        Umt5Config {
            vocab_size: 256384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            feed_forward_proj: "gated-gelu".into(),
            layer_norm_epsilon: 1e-6,
        }
    }

    /// Parses a transformers `config.json` (or a case's `UMT5Config` object).
    pub fn from_json(text: &str) -> Result<Self, Umt5Error> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parses an already-decoded JSON object.
    pub fn from_value(value: serde_json::Value) -> Result<Self, Umt5Error> {
        Ok(serde_json::from_value(value)?)
    }

    /// Whether the FFN is gated and its activation, as transformers derives them from
    /// `feed_forward_proj` (`"gated-gelu"` means `gelu_new`).
    pub fn feed_forward(&self) -> Result<(bool, FfnActivation), Umt5Error> {
        let unsupported = || Umt5Error::UnsupportedFeedForward(self.feed_forward_proj.clone());
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => return Err(unsupported()),
        };
        let act = match act {
            "gelu" if gated => FfnActivation::GeluTanh,
            "gelu" => FfnActivation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => FfnActivation::GeluTanh,
            "silu" | "swish" => FfnActivation::Silu,
            "relu" => FfnActivation::Relu,
            _ => return Err(unsupported()),
        };
        Ok((gated, act))
    }

    /// Checks sizes and the feed-forward form.
    pub fn validate(&self) -> Result<(), Umt5Error> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Umt5Error::InvalidConfig(format!("{name} must be positive")));
        }
        if self.num_heads.checked_mul(self.d_kv).is_none() {
            return Err(Umt5Error::InvalidConfig(format!(
                "num_heads {} × d_kv {} overflows",
                self.num_heads, self.d_kv
            )));
        }
        let nb = self.relative_attention_num_buckets;
        if nb < 4 || nb % 2 == 1 {
            return Err(Umt5Error::InvalidConfig(format!("relative_attention_num_buckets {nb} must be even and ≥ 4")));
        }
        if self.relative_attention_max_distance <= nb / 4 {
            return Err(Umt5Error::InvalidConfig(format!(
                "relative_attention_max_distance {} must exceed num_buckets/4 = {}",
                self.relative_attention_max_distance,
                nb / 4
            )));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(Umt5Error::InvalidConfig(format!("layer_norm_epsilon {}", self.layer_norm_epsilon)));
        }
        self.feed_forward().map(|_| ())
    }
}

/// The bucket of `rel = key_pos − query_pos` under this config: the function the graph's
/// `RelPositionBucket` op computes (bidirectional, SPEC-NOTES §4.2).
pub fn relative_bucket(cfg: &Umt5Config, rel: i64) -> i64 {
    vidrt_ir::op::t5_relative_bucket(rel, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance)
}

/// Options for [`build_umt5`].
#[derive(Clone, Debug, PartialEq)]
pub struct Umt5Options {
    /// Also output the intermediates under the golden names: `embed_out` (token embedding)
    /// and `block{i}_out` (hidden state after block i, before the final norm).
    pub activations: bool,
    /// Float dtype of the weights and activations. `last_hidden_state` is always f32.
    pub dtype: DType,
}

impl Default for Umt5Options {
    fn default() -> Self {
        Umt5Options { activations: false, dtype: DType::F32 }
    }
}

/// Builds the encoder for `batch` sequences of `seq_len` tokens.
///
/// Inputs: `input_ids` i64 `[B, L]`, `attention_mask` i64 `[B, L]` (0 masks a key).
/// Output: `last_hidden_state` f32 `[B, L, d_model]`, plus the activations of
/// [`Umt5Options::activations`].
pub fn build_umt5(cfg: &Umt5Config, batch: usize, seq_len: usize, opts: &Umt5Options) -> Result<Graph, Umt5Error> {
    cfg.validate()?;
    if batch == 0 || seq_len == 0 {
        return Err(Umt5Error::InvalidConfig(format!("batch {batch} and seq_len {seq_len} must be positive")));
    }
    if !opts.dtype.is_float() {
        return Err(Umt5Error::InvalidConfig(format!("compute dtype {} is not a float type", opts.dtype)));
    }
    let (gated, act) = cfg.feed_forward()?;
    let dt = opts.dtype;
    let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
    let eps = cfg.layer_norm_epsilon;
    let mut g = Graph::new();

    let ids = g.input("input_ids", [batch, seq_len], DType::I64)?;
    let mask = g.input("attention_mask", [batch, seq_len], DType::I64)?;
    let table = g.weight(EMBED_WEIGHT, [cfg.vocab_size, d], dt)?;
    let mut h = g.gather(table, ids)?;
    g.named(h, "encoder.embed_tokens");
    if opts.activations {
        g.set_output("embed_out", h)?;
    }
    // Bucket ids are the same for every layer; each layer gathers its own bias table.
    let buckets = g.add(
        vidrt_ir::Op::RelPositionBucket {
            q_len: seq_len,
            k_len: seq_len,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        },
        &[],
    )?;
    g.named(buckets, "encoder.relative_position_bucket");

    for i in 0..cfg.num_layers {
        g.push_scope(format!("encoder.block.{i}"));
        let a = self_attention(&mut g, cfg, dt, h, mask, buckets, [batch, seq_len, inner], eps)?;
        h = g.add_(h, a)?;
        g.named(h, "layer.0");
        let f = feed_forward(&mut g, cfg, dt, h, gated, act, eps)?;
        h = g.add_(h, f)?;
        g.named(h, "layer.1");
        g.pop_scope();
        if opts.activations {
            g.set_output(format!("block{i}_out"), h)?;
        }
    }

    let w = g.weight("encoder.final_layer_norm.weight", [d], dt)?;
    let mut out = g.rms_norm(h, Some(w), 2, eps, RmsStyle::MeanSquare)?;
    g.named(out, "encoder.final_layer_norm");
    if dt != DType::F32 {
        out = g.cast(out, DType::F32)?;
    }
    g.set_output("last_hidden_state", out)?;
    Ok(g)
}

/// `layer.0`: T5 RMS norm, q/k/v without bias, unscaled attention with the layer's relative
/// bias and the key mask, output projection. Returns the residual branch.
#[allow(clippy::too_many_arguments)]
fn self_attention(
    g: &mut Graph,
    cfg: &Umt5Config,
    dt: DType,
    h: NodeId,
    mask: NodeId,
    buckets: NodeId,
    [b, l, inner]: [usize; 3],
    eps: f64,
) -> Result<NodeId, Umt5Error> {
    let (d, heads, dk) = (cfg.d_model, cfg.num_heads, cfg.d_kv);
    g.push_scope("layer.0");
    let w = g.param("layer_norm.weight", [d], dt)?;
    let n = g.rms_norm(h, Some(w), 2, eps, RmsStyle::MeanSquare)?;
    g.named(n, "layer_norm");
    g.push_scope("SelfAttention");
    let proj = |g: &mut Graph, name: &str| -> Result<NodeId, IrError> {
        let w = g.param(&format!("{name}.weight"), [inner, d], dt)?;
        let y = g.linear(n, w, None)?;
        g.named(y, name);
        g.reshape(y, [b, l, heads, dk])
    };
    let q = proj(g, "q")?;
    let k = proj(g, "k")?;
    let v = proj(g, "v")?;
    let table = g.param("relative_attention_bias.weight", [cfg.relative_attention_num_buckets, heads], dt)?;
    let bias = g.gather(table, buckets)?; // [Lq, Lk, H]
    let bias = g.permute(bias, &[2, 0, 1])?; // [H, Lq, Lk], broadcast over the batch
    g.named(bias, "position_bias");
    let a = g.attention(q, k, v, 1.0, Some(bias), Some(mask))?;
    g.named(a, "attention");
    let a = g.reshape(a, [b, l, inner])?;
    let wo = g.param("o.weight", [d, inner], dt)?;
    let o = g.linear(a, wo, None)?;
    g.named(o, "o");
    g.pop_scope();
    g.pop_scope();
    Ok(o)
}

/// `layer.1`: T5 RMS norm, then `wo(act(wi_0·n) ⊙ wi_1·n)` (gated) or `wo(act(wi·n))`, no
/// biases. Returns the residual branch.
fn feed_forward(
    g: &mut Graph,
    cfg: &Umt5Config,
    dt: DType,
    h: NodeId,
    gated: bool,
    act: FfnActivation,
    eps: f64,
) -> Result<NodeId, Umt5Error> {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    g.push_scope("layer.1");
    let w = g.param("layer_norm.weight", [d], dt)?;
    let n = g.rms_norm(h, Some(w), 2, eps, RmsStyle::MeanSquare)?;
    g.named(n, "layer_norm");
    g.push_scope("DenseReluDense");
    let first = if gated { "wi_0" } else { "wi" };
    let w0 = g.param(&format!("{first}.weight"), [ff, d], dt)?;
    let x0 = g.linear(n, w0, None)?;
    g.named(x0, first);
    let mut f = match act {
        FfnActivation::GeluTanh => g.unary(UnaryOp::GeluTanh, x0)?,
        FfnActivation::GeluErf => g.unary(UnaryOp::GeluErf, x0)?,
        FfnActivation::Silu => g.unary(UnaryOp::Silu, x0)?,
        FfnActivation::Relu => {
            let zero = g.constant(0.0, [1], dt)?;
            g.binary(BinaryOp::Max, x0, zero)?
        }
    };
    if gated {
        let w1 = g.param("wi_1.weight", [ff, d], dt)?;
        let x1 = g.linear(n, w1, None)?;
        g.named(x1, "wi_1");
        f = g.mul(f, x1)?;
    }
    let wo = g.param("wo.weight", [d, ff], dt)?;
    let y = g.linear(f, wo, None)?;
    g.named(y, "wo");
    g.pop_scope();
    g.pop_scope();
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_head_width_is_a_config_error() {
        let cfg = Umt5Config::from_json(r#"{"num_heads": 4611686018427387904, "d_kv": 64}"#).unwrap();
        assert!(matches!(cfg.validate(), Err(Umt5Error::InvalidConfig(_))));
        assert!(build_umt5(&cfg, 1, 2, &Umt5Options::default()).is_err());
    }

    #[test]
    fn umt5_xxl_builds_verifies_and_counts_parameters() {
        let cfg = Umt5Config::umt5_xxl();
        let g = build_umt5(&cfg, 1, 512, &Umt5Options::default()).unwrap();
        vidrt_ir::verify(&g).unwrap();
        let out = g.output("last_hidden_state").unwrap();
        assert_eq!(g.shape(out).dims(), &[1, 512, 4096]);
        assert_eq!(g.dtype(out), DType::F32);
        let params: u64 = g.weights().iter().map(|(_, id)| g.shape(*id).numel() as u64).sum();
        // Derived by hand: embedding 256384·4096; per layer q,k,v,o 4·4096·(64·64),
        // relative bias 32·64, two norms 2·4096, FFN wi_0, wi_1, wo 3·4096·10240;
        // 24 layers; final norm 4096.
        let per_layer: u64 = 4 * 4096 * 4096 + 32 * 64 + 2 * 4096 + 3 * 4096 * 10240;
        let expect: u64 = 256384 * 4096 + 24 * per_layer + 4096;
        assert_eq!(expect, 5_680_910_336);
        assert_eq!(params, expect);
        // One relative-bias table per layer.
        let rel = g.weights().iter().filter(|(n, _)| n.ends_with("relative_attention_bias.weight")).count();
        assert_eq!(rel, 24);
    }

    #[test]
    fn umt5_config_parses_case_json_and_ignores_unknown_keys() {
        let cfg = Umt5Config::from_json(
            r#"{"vocab_size": 512, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
                "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-06, "dropout_rate": 0.0}"#,
        )
        .unwrap();
        assert_eq!((cfg.d_model, cfg.num_heads, cfg.num_layers), (32, 4, 2));
        assert_eq!(cfg.feed_forward().unwrap(), (true, FfnActivation::GeluTanh));
        let g = build_umt5(&cfg, 2, 7, &Umt5Options { activations: true, dtype: DType::F32 }).unwrap();
        let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["embed_out", "block0_out", "block1_out", "last_hidden_state"]);
    }

    #[test]
    fn umt5_rejects_bad_configs() {
        let cfg = Umt5Config { feed_forward_proj: "gated-tanhish".into(), ..Umt5Config::default() };
        assert!(matches!(build_umt5(&cfg, 1, 4, &Umt5Options::default()), Err(Umt5Error::UnsupportedFeedForward(_))));
        let cfg = Umt5Config { feed_forward_proj: "a-b-c".into(), ..Umt5Config::default() };
        assert!(matches!(cfg.validate(), Err(Umt5Error::UnsupportedFeedForward(_))));
        let cfg = Umt5Config { num_heads: 0, ..Umt5Config::default() };
        assert!(matches!(cfg.validate(), Err(Umt5Error::InvalidConfig(_))));
        assert!(Umt5Config::from_json("{\"d_model\": -1}").is_err());
        assert!(build_umt5(&Umt5Config::default(), 0, 4, &Umt5Options::default()).is_err());
    }

    #[test]
    fn umt5_relative_bucket_known_values() {
        let cfg = Umt5Config::umt5_xxl();
        // Exact buckets for |rel| < 8, direction offset 16 for keys after the query,
        // logarithmic above, capped at bucket 15 (+16) from distance 128 on.
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (7, 23),
            (-8, 8),
            (-16, 10),
            (16, 26),
            (-32, 12),
            (-64, 14),
            (-127, 15),
            (-128, 15),
        ];
        for (rel, want) in cases {
            assert_eq!(relative_bucket(&cfg, rel), want, "rel {rel}");
        }
        assert_eq!(relative_bucket(&cfg, 10_000), 31);
    }
}
