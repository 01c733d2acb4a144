//! The VAE's building blocks (SPEC-NOTES §3.1) for one chunk of frames, with the feature
//! cache of §3.4 as explicit graph inputs and outputs. Video tensors are `[B, C, T, H, W]`.
//! Parameter names are `<prefix>.<diffusers name>`, so the same builders serve the whole
//! model (`decoder.up_blocks.0.upsamplers.0`) and the op tests (`upsample3d.param`).

use vidrt_ir::{DType, Graph, NodeId, RmsStyle, Shape};

use super::{CacheSlot, ChunkKind, VaeError, CACHE_T, RMS_EPS};

type Result<T, E = VaeError> = std::result::Result<T, E>;

/// `prefix.name`, or `name` for an empty prefix.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The five extents of a video tensor.
fn dims5(g: &Graph, x: NodeId, what: &str) -> Result<[usize; 5]> {
    match *g.shape(x).dims() {
        [n, c, t, h, w] if n * c * t * h * w > 0 => Ok([n, c, t, h, w]),
        _ => Err(VaeError::Shape(format!("{what}: expected a non-empty [B, C, T, H, W] tensor, got {}", g.shape(x)))),
    }
}

/// Fails unless `x` has `c` channels.
fn expect_channels(g: &Graph, x: NodeId, c: usize, what: &str) -> Result<()> {
    let got = g.shape(x).dims().get(1).copied();
    if got == Some(c) {
        Ok(())
    } else {
        Err(VaeError::Shape(format!("{what}: expected {c} channels, got a tensor of shape {}", g.shape(x))))
    }
}

/// The graph of one chunk being built, and the cache slots declared so far (in the order
/// the modules run, which is the same for every chunk kind).
pub struct ChunkCtx<'g> {
    pub g: &'g mut Graph,
    pub kind: ChunkKind,
    slots: Vec<CacheSlot>,
}

impl<'g> ChunkCtx<'g> {
    /// Starts building chunk `kind` into `g`.
    pub fn new(g: &'g mut Graph, kind: ChunkKind) -> Self {
        ChunkCtx { g, kind, slots: Vec::new() }
    }

    /// The cache slots declared so far.
    pub fn slots(&self) -> &[CacheSlot] {
        &self.slots
    }

    /// Ends the chunk, returning its cache slots.
    pub fn into_slots(self) -> Vec<CacheSlot> {
        self.slots
    }

    /// Declares the next slot; for a steady chunk also its graph input.
    fn open_slot(&mut self, module: &str, shape: [usize; 5], dtype: DType) -> Result<(CacheSlot, Option<NodeId>)> {
        let slot = CacheSlot { index: self.slots.len(), module: module.to_string(), shape: Shape::from(shape) };
        let input = match self.kind {
            ChunkKind::First => None,
            ChunkKind::Steady => Some(self.g.input(&slot.input_name(), shape, dtype)?),
        };
        Ok((slot, input))
    }

    /// Marks `value` as the slot's cache output and records the slot.
    fn close_slot(&mut self, slot: CacheSlot, value: NodeId) -> Result<()> {
        if self.g.shape(value) != &slot.shape {
            return Err(VaeError::Shape(format!(
                "{}: cache output {} does not match its slot {}",
                slot.module,
                self.g.shape(value),
                slot.shape
            )));
        }
        self.g.set_output(slot.output_name(), value)?;
        self.slots.push(slot);
        Ok(())
    }
}

/// A `WanCausalConv3d`: `padding` is diffusers' (pt, ph, pw); H and W are zero-padded on both
/// sides, T by `2·pt` in front only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl ConvSpec {
    /// 3×3×3, padding 1, stride 1 (the residual blocks, `conv_in`, `conv_out`).
    pub fn k3(cin: usize, cout: usize) -> Self {
        ConvSpec { cin, cout, kernel: [3; 3], stride: [1; 3], padding: [1; 3] }
    }

    /// 1×1×1 (shortcuts, `quant_conv`, `post_quant_conv`).
    pub fn k1(cin: usize, cout: usize) -> Self {
        ConvSpec { cin, cout, kernel: [1; 3], stride: [1; 3], padding: [0; 3] }
    }
}

/// A causal 3-D convolution with weights `<prefix>.weight` `[Co, Ci, kt, kh, kw]` and
/// `<prefix>.bias`. With temporal padding it is cached: the first chunk pads with zeros, a
/// steady chunk prepends its `CACHE_T`-frame cache; both write the last `CACHE_T` frames of
/// the (zero- or cache-extended) input as the next cache.
pub fn causal_conv3d(cx: &mut ChunkCtx<'_>, x: NodeId, prefix: &str, spec: ConvSpec) -> Result<NodeId> {
    let [n, c, t, h, w] = dims5(cx.g, x, prefix)?;
    expect_channels(cx.g, x, spec.cin, prefix)?;
    let dtype = cx.g.dtype(x);
    let [kt, kh, kw] = spec.kernel;
    let [pt, ph, pw] = spec.padding;
    let weight = cx.g.weight(&join(prefix, "weight"), [spec.cout, spec.cin, kt, kh, kw], dtype)?;
    let bias = cx.g.weight(&join(prefix, "bias"), [spec.cout], dtype)?;
    let spatial = [[ph, ph], [pw, pw]];
    let y = if pt == 0 {
        cx.g.conv3d(x, weight, Some(bias), spec.stride, [[0, 0], spatial[0], spatial[1]])?
    } else {
        if 2 * pt != CACHE_T {
            return Err(VaeError::Unsupported(format!(
                "{prefix}: temporal padding {pt}: the feature cache keeps {CACHE_T} frames, which must be 2·pt"
            )));
        }
        let (slot, cache) = cx.open_slot(prefix, [n, c, CACHE_T, h, w], dtype)?;
        let (y, keep) = match cache {
            None => {
                let y = cx.g.conv3d(x, weight, Some(bias), spec.stride, [[2 * pt, 0], spatial[0], spatial[1]])?;
                let keep = if t >= CACHE_T {
                    cx.g.slice(x, 2, t - CACHE_T, t)?
                } else {
                    let zeros = cx.g.constant(0.0, [n, c, CACHE_T - t, h, w], dtype)?;
                    cx.g.concat(&[zeros, x], 2)?
                };
                (y, keep)
            }
            Some(cache) => {
                let full = cx.g.concat(&[cache, x], 2)?;
                let y = cx.g.conv3d(full, weight, Some(bias), spec.stride, [[0, 0], spatial[0], spatial[1]])?;
                (y, cx.g.slice(full, 2, t, t + CACHE_T)?)
            }
        };
        cx.close_slot(slot, keep)?;
        y
    };
    Ok(cx.g.named(y, prefix))
}

/// `WanRMS_norm` over channels (axis 1): `x / max(‖x‖₂, 1e-12) · √C · gamma`. The parameter
/// `gamma` is `[C,1,1,1]` for video (`images = false`) and `[C,1,1]` for per-frame images;
/// `None` builds it without a scale (for tests).
pub fn vae_rms_norm(g: &mut Graph, x: NodeId, gamma: Option<&str>, images: bool) -> Result<NodeId> {
    let c = g
        .shape(x)
        .dims()
        .get(1)
        .copied()
        .ok_or_else(|| VaeError::Shape(format!("RMS norm needs a channel axis, got {}", g.shape(x))))?;
    let dtype = g.dtype(x);
    let w = match gamma {
        Some(name) => {
            let shape: Vec<usize> = if images { vec![c, 1, 1] } else { vec![c, 1, 1, 1] };
            Some(g.weight(name, shape, dtype)?)
        }
        None => None,
    };
    Ok(g.rms_norm(x, w, 1, RMS_EPS, RmsStyle::L2Clamp)?)
}

/// `WanResidualBlock(cin → cout)`: `conv2(silu(norm2(conv1(silu(norm1(x)))))) + shortcut(x)`,
/// the shortcut a 1×1×1 conv when the widths differ.
pub fn residual_block(cx: &mut ChunkCtx<'_>, x: NodeId, prefix: &str, cin: usize, cout: usize) -> Result<NodeId> {
    expect_channels(cx.g, x, cin, prefix)?;
    let shortcut =
        if cin != cout { causal_conv3d(cx, x, &join(prefix, "conv_shortcut"), ConvSpec::k1(cin, cout))? } else { x };
    let y = vae_rms_norm(cx.g, x, Some(&join(prefix, "norm1.gamma")), false)?;
    let y = cx.g.silu(y)?;
    let y = causal_conv3d(cx, y, &join(prefix, "conv1"), ConvSpec::k3(cin, cout))?;
    let y = vae_rms_norm(cx.g, y, Some(&join(prefix, "norm2.gamma")), false)?;
    let y = cx.g.silu(y)?;
    let y = causal_conv3d(cx, y, &join(prefix, "conv2"), ConvSpec::k3(cout, cout))?;
    let out = cx.g.add_(y, shortcut)?;
    Ok(cx.g.named(out, prefix))
}

/// `WanAttentionBlock`: per frame, RMS norm (images) → 1×1 `to_qkv` → single-head attention
/// over the H·W positions (head dim C, scale 1/√C) → 1×1 `proj` → + x.
pub fn attention_block(g: &mut Graph, x: NodeId, prefix: &str) -> Result<NodeId> {
    let [n, c, t, h, w] = dims5(g, x, prefix)?;
    let dtype = g.dtype(x);
    let y = vae_rms_norm(g, x, Some(&join(prefix, "norm.gamma")), true)?;
    let y = g.permute(y, &[0, 2, 3, 4, 1])?;
    let y = g.reshape(y, [n * t, h * w, c])?;
    let wqkv = g.weight(&join(prefix, "to_qkv.weight"), [3 * c, c, 1, 1], dtype)?;
    let wqkv = g.reshape(wqkv, [3 * c, c])?;
    let bqkv = g.weight(&join(prefix, "to_qkv.bias"), [3 * c], dtype)?;
    let qkv = g.linear(y, wqkv, Some(bqkv))?;
    let mut heads = [qkv; 3];
    for (i, part) in heads.iter_mut().enumerate() {
        let s = g.slice(qkv, 2, i * c, (i + 1) * c)?;
        *part = g.reshape(s, [n * t, h * w, 1, c])?;
    }
    let [q, k, v] = heads;
    let a = g.attention(q, k, v, 1.0 / (c as f64).sqrt(), None, None)?;
    let a = g.reshape(a, [n * t, h * w, c])?;
    let wp = g.weight(&join(prefix, "proj.weight"), [c, c, 1, 1], dtype)?;
    let wp = g.reshape(wp, [c, c])?;
    let bp = g.weight(&join(prefix, "proj.bias"), [c], dtype)?;
    let o = g.linear(a, wp, Some(bp))?;
    let o = g.reshape(o, [n, t, h, w, c])?;
    let o = g.permute(o, &[0, 4, 1, 2, 3])?;
    let out = g.add_(o, x)?;
    Ok(g.named(out, prefix))
}

/// `WanMidBlock(dim)`: `resnets.0`, then `num_layers` × (`attentions.i`, `resnets.i+1`).
pub fn mid_block(cx: &mut ChunkCtx<'_>, x: NodeId, prefix: &str, dim: usize, num_layers: usize) -> Result<NodeId> {
    let mut x = residual_block(cx, x, &join(prefix, "resnets.0"), dim, dim)?;
    for i in 0..num_layers {
        x = attention_block(cx.g, x, &join(prefix, &format!("attentions.{i}")))?;
        x = residual_block(cx, x, &join(prefix, &format!("resnets.{}", i + 1)), dim, dim)?;
    }
    Ok(cx.g.named(x, prefix))
}

/// The modes of `WanResample`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResampleMode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

impl ResampleMode {
    /// diffusers' mode string.
    pub fn name(self) -> &'static str {
        match self {
            ResampleMode::Upsample2d => "upsample2d",
            ResampleMode::Upsample3d => "upsample3d",
            ResampleMode::Downsample2d => "downsample2d",
            ResampleMode::Downsample3d => "downsample3d",
        }
    }

    /// The mode called `name` (diffusers' string).
    pub fn from_name(name: &str) -> Option<Self> {
        [ResampleMode::Upsample2d, ResampleMode::Upsample3d, ResampleMode::Downsample2d, ResampleMode::Downsample3d]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Output channels for `dim` input channels (upsamplers halve the width).
    pub fn out_dim(self, dim: usize) -> usize {
        match self {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => dim / 2,
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => dim,
        }
    }
}

/// `WanResample(dim, mode)` on one chunk, with diffusers' chunk rules (SPEC-NOTES §3.4):
/// * upsample3d: the first chunk skips the time conv (one frame stays one frame) and leaves a
///   zero cache ('Rep': the next chunk sees no history); later chunks run the causal
///   `time_conv` (dim → 2·dim) and interleave its halves into 2·T frames. Then per frame a
///   2× nearest-exact upsample and `resample.1` (Conv2d 3×3, padding 1, dim → dim/2).
/// * upsample2d: the spatial step only.
/// * downsample2d: per frame zero pad (right 1, bottom 1) and `resample.1` (3×3, stride 2).
/// * downsample3d: the spatial step, then on the first chunk nothing more (its last frame is
///   cached); later chunks run `time_conv` (kernel 3, stride 2, no padding) over
///   `cat(cached frame, chunk)`.
pub fn resample(cx: &mut ChunkCtx<'_>, x: NodeId, prefix: &str, dim: usize, mode: ResampleMode) -> Result<NodeId> {
    expect_channels(cx.g, x, dim, prefix)?;
    let dtype = cx.g.dtype(x);
    let mut x = x;
    if mode == ResampleMode::Upsample3d {
        let [n, c, t, h, w] = dims5(cx.g, x, prefix)?;
        let tc = join(prefix, "time_conv");
        let spec = ConvSpec { cin: dim, cout: 2 * dim, kernel: [3, 1, 1], stride: [1; 3], padding: [1, 0, 0] };
        match cx.kind {
            ChunkKind::First => {
                let (slot, _) = cx.open_slot(&tc, [n, c, CACHE_T, h, w], dtype)?;
                let zeros = cx.g.constant(0.0, [n, c, CACHE_T, h, w], dtype)?;
                cx.close_slot(slot, zeros)?;
            }
            ChunkKind::Steady => {
                let y = causal_conv3d(cx, x, &tc, spec)?;
                let y = cx.g.reshape(y, [n, 2, dim, t, h, w])?;
                let y = cx.g.permute(y, &[0, 2, 3, 1, 4, 5])?;
                x = cx.g.reshape(y, [n, dim, 2 * t, h, w])?;
            }
        }
    }
    let cout = mode.out_dim(dim);
    let wname = join(prefix, "resample.1.weight");
    let w = cx.g.weight(&wname, [cout, dim, 3, 3], dtype)?;
    let w = cx.g.reshape(w, [cout, dim, 1, 3, 3])?;
    let b = cx.g.weight(&join(prefix, "resample.1.bias"), [cout], dtype)?;
    x = match mode {
        ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
            let u = cx.g.upsample(x, [2, 2])?;
            cx.g.conv3d(u, w, Some(b), [1, 1, 1], [[0, 0], [1, 1], [1, 1]])?
        }
        ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
            cx.g.conv3d(x, w, Some(b), [1, 2, 2], [[0, 0], [0, 1], [0, 1]])?
        }
    };
    if mode == ResampleMode::Downsample3d {
        let [n, c, t, h, w] = dims5(cx.g, x, prefix)?;
        let tc = join(prefix, "time_conv");
        let (slot, cache) = cx.open_slot(&tc, [n, c, 1, h, w], dtype)?;
        let keep = cx.g.slice(x, 2, t - 1, t)?;
        if let Some(cache) = cache {
            let tw = cx.g.weight(&join(&tc, "weight"), [dim, dim, 3, 1, 1], dtype)?;
            let tb = cx.g.weight(&join(&tc, "bias"), [dim], dtype)?;
            let full = cx.g.concat(&[cache, x], 2)?;
            x = cx.g.conv3d(full, tw, Some(tb), [2, 1, 1], [[0, 0], [0, 0], [0, 0]])?;
            cx.g.named(x, &tc);
        }
        cx.close_slot(slot, keep)?;
    }
    Ok(cx.g.named(x, prefix))
}
