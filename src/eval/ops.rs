//! Golden evaluation of the `ops` case: every standalone-kernel file is run through a small
//! IR graph per sub-case, compiled on the backend under test with the case's parameters as
//! weights. Sub-cases are found from the tensor names of each file (`<prefix>.<leaf>`), and
//! every shape is read from the files, so other sizes run unchanged. The VAE-block files
//! (`vae_resample`, `vae_attention_block`, `vae_rms_norm`) are done by [`super::ops_vae`]
//! with the VAE's own block builders.
//!
//! The constants below are those of the Wan2.1 DiT modules the files exercise (SPEC-NOTES §1).

use std::collections::{BTreeSet, HashMap};

use vidrt_ir::{DType, Graph, NodeId, RmsStyle, Shape, Tensor, TrigPart, UnaryOp};
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;

/// eps of the DiT's q/k RMS norms and of its LayerNorms.
const DIT_NORM_EPS: f64 = 1e-6;
/// RoPE base of every axis.
const ROPE_THETA: f64 = 10000.0;

/// Runs every op file the case's checks name.
pub fn run(case: &Case, backend: &dyn Backend) -> Result<Outputs> {
    let mut out = Outputs::new();
    let files: BTreeSet<&str> = case.checks.iter().map(|c| c.file.as_str()).collect();
    for file in files {
        let f = OpFile { case, file, backend };
        match file.trim_end_matches(".safetensors") {
            "sdpa" => f.sdpa(&mut out)?,
            "rms_norm_across_heads" => f.rms_norm_across_heads(&mut out)?,
            "layernorm_modulation" => f.layernorm_modulation(&mut out)?,
            "causal_conv3d" => f.causal_conv3d(&mut out)?,
            // Built with the VAE's own norm builder, so the check tests the VAE's code.
            "vae_rms_norm" => super::ops_vae::run_rms_norm(case, backend, &mut out)?,
            "rope" => f.rope(&mut out)?,
            "timestep_embedding" => f.timestep_embedding(&mut out)?,
            "activations" => f.activations(&mut out)?,
            // The VAE-block files are ops_vae's; an unknown file's checks report "not produced".
            _ => {}
        }
    }
    super::ops_vae::run(case, backend, &mut out)?;
    Ok(out)
}

/// `prefix.leaf`, or `leaf` at the top level.
fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

/// Splits a tensor name into (prefix, leaf) at its last dot.
fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// One op file of the case.
struct OpFile<'a> {
    case: &'a Case,
    file: &'a str,
    backend: &'a dyn Backend,
}

impl OpFile<'_> {
    fn names(&self) -> Result<Vec<String>> {
        Ok(self.case.file(self.file)?.names().into_iter().map(str::to_string).collect())
    }

    /// The sub-case prefixes that have every one of `leaves`, sorted.
    fn prefixes_with(&self, leaves: &[&str]) -> Result<Vec<String>> {
        let names = self.names()?;
        let mut set: BTreeSet<String> = BTreeSet::new();
        for n in &names {
            let (prefix, leaf) = split(n);
            if leaf == leaves[0] && leaves.iter().all(|l| names.iter().any(|m| *m == join(prefix, l))) {
                set.insert(prefix.to_string());
            }
        }
        Ok(set.into_iter().collect())
    }

    fn has(&self, name: &str) -> Result<bool> {
        Ok(self.case.file(self.file)?.contains(name))
    }

    fn shape(&self, name: &str) -> Result<Shape> {
        self.case.file(self.file)?.shape(name).ok_or_else(|| self.err(format!("no tensor `{name}`")))
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.case.tensor(self.file, name)
    }

    fn err(&self, reason: impl std::fmt::Display) -> Error {
        self.case.error(format!("{}: {reason}", self.file))
    }

    fn graph(&self) -> OpGraph {
        OpGraph::default()
    }

    /// Compiles and runs `og` on the backend; puts every output under its name.
    fn finish(&self, og: OpGraph, out: &mut Outputs) -> Result<()> {
        let mut exe = self.backend.compile(&og.g, &og.weights)?;
        let feeds: Vec<(&str, Tensor)> = og.feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        for (name, t) in exe.run(&feeds)? {
            put(out, self.file, &name, t);
        }
        Ok(())
    }

    /// `softmax(q·kᵀ/√d)·v` on `[B, H, S, D]` tensors (the attention op is BSHD).
    fn sdpa(&self, out: &mut Outputs) -> Result<()> {
        for p in self.prefixes_with(&["q", "k", "v"])? {
            let mut og = self.graph();
            let bshd = |og: &mut OpGraph, leaf: &str| -> Result<NodeId> {
                let x = og.input(&join(&p, leaf), self.tensor(&join(&p, leaf))?)?;
                Ok(og.g.permute(x, &[0, 2, 1, 3])?)
            };
            let (q, k, v) = (bshd(&mut og, "q")?, bshd(&mut og, "k")?, bshd(&mut og, "v")?);
            let d = og.g.shape(q).last();
            if d == 0 {
                return Err(self.err(format!("{p}: zero head dim")));
            }
            let o = og.g.attention(q, k, v, 1.0 / (d as f64).sqrt(), None, None)?;
            let o = og.g.permute(o, &[0, 2, 1, 3])?;
            og.g.set_output(join(&p, "out"), o)?;
            self.finish(og, out)?;
        }
        Ok(())
    }

    /// `x·rsqrt(mean(x²) + eps)·weight` over the whole last axis (heads·head_dim).
    fn rms_norm_across_heads(&self, out: &mut Outputs) -> Result<()> {
        for p in self.prefixes_with(&["x", "weight"])? {
            let mut og = self.graph();
            let x = og.input(&join(&p, "x"), self.tensor(&join(&p, "x"))?)?;
            let w = og.weight(&join(&p, "weight"), self.tensor(&join(&p, "weight"))?)?;
            let axis = og.g.shape(x).rank().saturating_sub(1);
            let y = og.g.rms_norm(x, Some(w), axis, DIT_NORM_EPS, RmsStyle::MeanSquare)?;
            og.g.set_output(join(&p, "out"), y)?;
            self.finish(og, out)?;
        }
        Ok(())
    }

    /// LayerNorm without affine (`norm`), its modulation `norm·(1+scale)+shift` (`out`) and
    /// the affine LayerNorm (`affine_out`), each when the file has its operands.
    fn layernorm_modulation(&self, out: &mut Outputs) -> Result<()> {
        for p in self.prefixes_with(&["x"])? {
            let mut og = self.graph();
            let x = og.input(&join(&p, "x"), self.tensor(&join(&p, "x"))?)?;
            let norm = og.g.layer_norm(x, None, DIT_NORM_EPS)?;
            og.g.set_output(join(&p, "norm"), norm)?;
            if self.has(&join(&p, "scale"))? && self.has(&join(&p, "shift"))? {
                let scale = og.input(&join(&p, "scale"), self.tensor(&join(&p, "scale"))?)?;
                let shift = og.input(&join(&p, "shift"), self.tensor(&join(&p, "shift"))?)?;
                let m = og.g.modulate(norm, scale, shift)?;
                og.g.set_output(join(&p, "out"), m)?;
            }
            if self.has(&join(&p, "affine_weight"))? && self.has(&join(&p, "affine_bias"))? {
                let w = og.weight(&join(&p, "affine_weight"), self.tensor(&join(&p, "affine_weight"))?)?;
                let b = og.weight(&join(&p, "affine_bias"), self.tensor(&join(&p, "affine_bias"))?)?;
                let a = og.g.layer_norm(x, Some((w, b)), DIT_NORM_EPS)?;
                og.g.set_output(join(&p, "affine_out"), a)?;
            }
            self.finish(og, out)?;
        }
        Ok(())
    }

    /// `WanCausalConv3d` on the shared input `x` for every `<k>.weight`, and on
    /// `cat(<k>.cache*, <k>.chunk)` for every cache tensor. Stride and padding are not in the
    /// file: they are the smallest that turn the input shape into the reference's.
    fn causal_conv3d(&self, out: &mut Outputs) -> Result<()> {
        let x_shape = self.shape("x")?;
        for p in self.prefixes_with(&["weight"])? {
            let w_name = join(&p, "weight");
            let w_shape = self.shape(&w_name)?;
            if x_shape.rank() != 5 || w_shape.rank() != 5 {
                return Err(self.err(format!("{p}: conv3d needs 5-D x and weight, got {x_shape} and {w_shape}")));
            }
            let kernel = [w_shape.0[2], w_shape.0[3], w_shape.0[4]];
            let b_name = join(&p, "bias");
            let bias = if self.has(&b_name)? { Some(self.tensor(&b_name)?) } else { None };
            let weight = self.tensor(&w_name)?;
            let out_name = join(&p, "out");
            if !self.has(&out_name)? {
                continue;
            }
            let geometry = conv_geometry(&x_shape.0[2..], &kernel, &self.shape(&out_name)?.0[2..])
                .ok_or_else(|| self.err(format!("{p}: no stride/padding maps {x_shape} to `{out_name}`")))?;
            let (stride, pad) = geometry;

            let mut og = self.graph();
            let x = og.input("x", self.tensor("x")?)?;
            let w = og.weight(&w_name, weight.clone())?;
            let b = bias.clone().map(|t| og.weight(&b_name, t)).transpose()?;
            let y = og.g.conv3d(x, w, b, stride, causal_pad(pad))?;
            og.g.set_output(out_name, y)?;
            self.finish(og, out)?;

            // Chunked runs: the cache frames replace part of the causal front padding.
            let chunk_name = join(&p, "chunk");
            if !self.has(&chunk_name)? {
                continue;
            }
            for name in self.names()? {
                let (prefix, leaf) = split(&name);
                let Some(tag) = leaf.strip_prefix("cache") else { continue };
                let target = join(&p, &format!("out_cache{tag}"));
                if prefix != p || !self.has(&target)? {
                    continue;
                }
                let mut og = self.graph();
                let chunk = og.input(&chunk_name, self.tensor(&chunk_name)?)?;
                let w = og.weight(&w_name, weight.clone())?;
                let b = bias.clone().map(|t| og.weight(&b_name, t)).transpose()?;
                let front = 2 * pad[0];
                let (xin, front) = if front > 0 {
                    let cache = og.input(&name, self.tensor(&name)?)?;
                    let cached = og.g.shape(cache).0.get(2).copied().unwrap_or(0);
                    let joined = og.g.concat(&[cache, chunk], 2)?;
                    if cached <= front {
                        (joined, front - cached)
                    } else {
                        // More history than padding: F.pad with a negative amount crops it.
                        let t = og.g.shape(joined).0[2];
                        (og.g.slice(joined, 2, cached - front, t)?, 0)
                    }
                } else {
                    (chunk, 0)
                };
                let pads = [[front, 0], [pad[1], pad[1]], [pad[2], pad[2]]];
                let y = og.g.conv3d(xin, w, b, stride, pads)?;
                og.g.set_output(target, y)?;
                self.finish(og, out)?;
            }
        }
        Ok(())
    }

    /// Wan's 3-axis rotary tables for `<p>.grid` and the rotation of `<p>.q` `[B, S, H, hd]`.
    fn rope(&self, out: &mut Outputs) -> Result<()> {
        for p in self.prefixes_with(&["q", "grid"])? {
            let grid = self.tensor(&join(&p, "grid"))?.to_i64_vec();
            let grid: [usize; 3] = match grid.as_slice() {
                &[f, h, w] if f > 0 && h > 0 && w > 0 => [f as usize, h as usize, w as usize],
                other => return Err(self.err(format!("{p}: grid {other:?} is not three positive sizes"))),
            };
            let mut og = self.graph();
            let q = og.input(&join(&p, "q"), self.tensor(&join(&p, "q"))?)?;
            let hd = og.g.shape(q).last();
            let side = 2 * (hd / 6);
            let dims = [hd.saturating_sub(2 * side), side, side];
            let s = grid.iter().product::<usize>();
            let cos = og.g.rope_table(grid, dims, ROPE_THETA, TrigPart::Cos)?;
            let sin = og.g.rope_table(grid, dims, ROPE_THETA, TrigPart::Sin)?;
            let y = og.g.rope(q, cos, sin)?;
            og.g.set_output(join(&p, "out"), y)?;
            for (leaf, table) in [("freqs_cos", cos), ("freqs_sin", sin)] {
                let t = og.g.reshape(table, [1, s, 1, hd])?;
                og.g.set_output(join(&p, leaf), t)?;
            }
            self.finish(og, out)?;
        }
        Ok(())
    }

    /// The DiT's sinusoidal embedding (`flip_sin_to_cos`, no shift): `<p>.timesteps` →
    /// `<p>.out`, the width read from the reference.
    fn timestep_embedding(&self, out: &mut Outputs) -> Result<()> {
        for p in self.prefixes_with(&["timesteps", "out"])? {
            let dim = self.shape(&join(&p, "out"))?.last();
            let mut og = self.graph();
            let t = og.input(&join(&p, "timesteps"), self.tensor(&join(&p, "timesteps"))?)?;
            let e = og.g.timestep_embedding(t, dim, true, 0.0)?;
            og.g.set_output(join(&p, "out"), e)?;
            self.finish(og, out)?;
        }
        Ok(())
    }

    /// Elementwise activations of `<p>.x`, one output per known activation name.
    fn activations(&self, out: &mut Outputs) -> Result<()> {
        let names = self.names()?;
        for p in self.prefixes_with(&["x"])? {
            let mut og = self.graph();
            let x = og.input(&join(&p, "x"), self.tensor(&join(&p, "x"))?)?;
            for name in &names {
                let (prefix, leaf) = split(name);
                let op = match leaf {
                    // torch gelu(approximate="tanh") and transformers' NewGELU: the same formula.
                    "gelu_tanh" | "gelu_new" => UnaryOp::GeluTanh,
                    "gelu_erf" | "gelu" => UnaryOp::GeluErf,
                    "silu" => UnaryOp::Silu,
                    _ => continue,
                };
                if prefix == p {
                    let y = og.g.unary(op, x)?;
                    og.g.set_output(name.clone(), y)?;
                }
            }
            if !og.g.outputs.is_empty() {
                self.finish(og, out)?;
            }
        }
        Ok(())
    }
}

/// A graph under construction with its feeds and weights.
#[derive(Default)]
struct OpGraph {
    g: Graph,
    weights: HashMap<String, Tensor>,
    feeds: Vec<(String, Tensor)>,
}

impl OpGraph {
    /// A graph input fed with `t` (integer tensors are fed as f32).
    fn input(&mut self, name: &str, t: Tensor) -> Result<NodeId> {
        let t = if t.dtype().is_float() { t } else { t.cast(DType::F32) };
        let id = self.g.input(name, t.shape().clone(), t.dtype())?;
        self.feeds.push((name.to_string(), t));
        Ok(id)
    }

    /// A weight bound to `t` (integer tensors as f32).
    fn weight(&mut self, name: &str, t: Tensor) -> Result<NodeId> {
        let t = if t.dtype().is_float() { t } else { t.cast(DType::F32) };
        let id = self.g.weight(name, t.shape().clone(), t.dtype())?;
        self.weights.insert(name.to_string(), t);
        Ok(id)
    }
}

/// `WanCausalConv3d` padding `[2·pt, 0]` on time, `[p, p]` on height and width.
fn causal_pad(pad: [usize; 3]) -> [[usize; 2]; 3] {
    [[2 * pad[0], 0], [pad[1], pad[1]], [pad[2], pad[2]]]
}

/// Per axis (T, H, W), the smallest stride and then the smallest padding (each side; the
/// time axis pads `2·p` in front) that give `output` from `input` with `kernel`.
fn conv_geometry(input: &[usize], kernel: &[usize; 3], output: &[usize]) -> Option<([usize; 3], [usize; 3])> {
    if input.len() != 3 || output.len() != 3 {
        return None;
    }
    let mut stride = [1; 3];
    let mut pad = [0; 3];
    for ax in 0..3 {
        let (n, k, o) = (input[ax], kernel[ax], output[ax]);
        let found = (1..=k.max(1)).find_map(|s| {
            (0..=k)
                .find(|&p| {
                    let padded = n + 2 * p;
                    padded >= k && (padded - k) / s + 1 == o
                })
                .map(|p| (s, p))
        })?;
        (stride[ax], pad[ax]) = found;
    }
    Some((stride, pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_geometry_matches_wan_convs() {
        // k333 padding 1, (3,1,1) padding (1,0,0), (3,1,1) stride (2,1,1), 1x1x1.
        assert_eq!(conv_geometry(&[5, 6, 7], &[3, 3, 3], &[5, 6, 7]), Some(([1, 1, 1], [1, 1, 1])));
        assert_eq!(conv_geometry(&[5, 6, 7], &[3, 1, 1], &[5, 6, 7]), Some(([1, 1, 1], [1, 0, 0])));
        assert_eq!(conv_geometry(&[5, 6, 7], &[3, 1, 1], &[2, 6, 7]), Some(([2, 1, 1], [0, 0, 0])));
        assert_eq!(conv_geometry(&[5, 6, 7], &[1, 1, 1], &[5, 6, 7]), Some(([1, 1, 1], [0, 0, 0])));
        assert_eq!(conv_geometry(&[5, 6, 7], &[3, 3, 3], &[20, 6, 7]), None);
    }

    #[test]
    fn names_split_at_the_last_dot() {
        assert_eq!(split("c_cross.q"), ("c_cross", "q"));
        assert_eq!(split("x"), ("", "x"));
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("hd32", "out"), "hd32.out");
    }
}
