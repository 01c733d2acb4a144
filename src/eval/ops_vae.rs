//! Golden `ops` sub-cases that exercise the VAE's blocks: `vae_resample` (nearest-exact 2×
//! upsampling and every `WanResample` mode run chunk by chunk with one shared feature
//! cache), `vae_attention_block` and `vae_rms_norm`. Each is built with the VAE's own block
//! builders (`vidrt_graph::wan_vae`), so these checks test the VAE's code. Sub-cases are
//! discovered from the tensor names (`<sub>.x`, `<sub>.chunk<k>.x`, `<sub>.param.*`, ...).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vidrt_graph::wan_vae::{attention_block, resample, vae_rms_norm, ChunkCtx, ChunkKind, ResampleMode, VaeError};
use vidrt_graph::SafeTensorsFile;
use vidrt_ir::{DType, Graph, Tensor};
use vidrt_runtime::{Backend, NoWeights, WeightSource};

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;

const RESAMPLE: &str = "vae_resample.safetensors";
const ATTENTION: &str = "vae_attention_block.safetensors";
const RMS_NORM: &str = "vae_rms_norm.safetensors";

fn graph_err(e: VaeError) -> Error {
    match e {
        VaeError::Ir(e) => Error::Ir(e),
        other => Error::Other(other.to_string()),
    }
}

/// Adds the outputs of `vae_resample` and `vae_attention_block` to `out` (`vae_rms_norm` is
/// [`run_rms_norm`], which `ops.rs` calls in its file loop).
pub fn run(case: &Case, backend: &dyn Backend, out: &mut Outputs) -> Result<()> {
    if has_file(case, RESAMPLE) {
        resample_file(case, backend, out)?;
    }
    if has_file(case, ATTENTION) {
        attention_file(case, backend, out)?;
    }
    Ok(())
}

/// Adds the outputs of `vae_rms_norm.safetensors` (sub-cases `<sub>.x`, optional
/// `<sub>.gamma`, → `<sub>.out`; 4-D inputs are the attention block's per-frame images).
pub fn run_rms_norm(case: &Case, backend: &dyn Backend, out: &mut Outputs) -> Result<()> {
    if !has_file(case, RMS_NORM) {
        return Ok(());
    }
    let file = case.file(RMS_NORM)?;
    let tensors = file.all()?;
    for sub in subcases(&file) {
        let Some(x) = tensors.get(&format!("{sub}.x")) else { continue };
        let gamma_name = format!("{sub}.gamma");
        let gamma = tensors.contains_key(&gamma_name).then_some(gamma_name.as_str());
        let mut g = Graph::new();
        let xi = g.input("x", x.shape().clone(), DType::F32)?;
        let y = vae_rms_norm(&mut g, xi, gamma, x.dims().len() == 4).map_err(graph_err)?;
        g.set_output("out", y)?;
        let weights: HashMap<String, Tensor> =
            gamma.and_then(|n| tensors.get(n).map(|t| (n.to_string(), t.clone()))).into_iter().collect();
        let mut exe = backend.compile(&g, &weights)?;
        let y = single_output(exe.run(&[("x", x.clone())])?)?;
        put(out, RMS_NORM, &format!("{sub}.out"), y);
    }
    Ok(())
}

/// Whether the case lists `file` (or it lies in the case folder).
fn has_file(case: &Case, file: &str) -> bool {
    case.json.get("files").and_then(|f| f.get(file)).is_some() || case.dir.join(file).exists()
}

/// Sub-case names: the part of each tensor name before the first dot, sorted.
fn subcases(file: &SafeTensorsFile) -> BTreeSet<String> {
    file.names().into_iter().filter_map(|n| n.split_once('.').map(|(s, _)| s.to_string())).collect()
}

/// The only output of a run.
fn single_output(outs: Vec<(String, Tensor)>) -> Result<Tensor> {
    outs.into_iter().next().map(|(_, t)| t).ok_or_else(|| Error::Other("graph produced no output".into()))
}

/// The tensors whose names start with `prefix.` (weights keep their full names).
fn params(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    tensors.iter().filter(|(k, _)| k.starts_with(&p)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The `WanResample` mode a sub-case runs: the longest mode name its name starts with
/// (`upsample3d_2f` runs `upsample3d`).
fn mode_of(sub: &str) -> Option<ResampleMode> {
    ["upsample2d", "upsample3d", "downsample2d", "downsample3d"]
        .into_iter()
        .filter(|m| sub.starts_with(m))
        .max_by_key(|m| m.len())
        .and_then(ResampleMode::from_name)
}

fn resample_file(case: &Case, backend: &dyn Backend, out: &mut Outputs) -> Result<()> {
    let file = case.file(RESAMPLE)?;
    let tensors = file.all()?;
    for sub in subcases(&file) {
        if tensors.contains_key(&format!("{sub}.chunk0.x")) {
            let mode = mode_of(&sub)
                .ok_or_else(|| case.error(format!("{RESAMPLE}: no resample mode in sub-case name `{sub}`")))?;
            resample_chunks(&sub, mode, &tensors, backend, out)?;
        } else if let (Some(x), Some(reference)) =
            (tensors.get(&format!("{sub}.x")), tensors.get(&format!("{sub}.out")))
        {
            // Nearest-exact upsampling by the factors the reference's shape shows.
            let (xd, od) = (x.dims(), reference.dims());
            let r = xd.len();
            if r < 2 || od.len() != r || od[r - 2] % xd[r - 2] != 0 || od[r - 1] % xd[r - 1] != 0 {
                return Err(case.error(format!("{RESAMPLE}: `{sub}` shapes {} → {}", x.shape(), reference.shape())));
            }
            let mut g = Graph::new();
            let xi = g.input("x", x.shape().clone(), DType::F32)?;
            let y = g.upsample(xi, [od[r - 2] / xd[r - 2], od[r - 1] / xd[r - 1]])?;
            g.set_output("out", y)?;
            let mut exe = backend.compile(&g, &NoWeights)?;
            put(out, RESAMPLE, &format!("{sub}.out"), single_output(exe.run(&[("x", x.clone())])?)?);
        }
    }
    Ok(())
}

/// Runs `<sub>.chunk0.x`, `<sub>.chunk1.x`, ... through one `WanResample` with one feature
/// cache (the first chunk is [`ChunkKind::First`], the rest steady).
fn resample_chunks(
    sub: &str,
    mode: ResampleMode,
    tensors: &BTreeMap<String, Tensor>,
    backend: &dyn Backend,
    out: &mut Outputs,
) -> Result<()> {
    let prefix = format!("{sub}.param");
    let weights = params(tensors, &prefix);
    let mut caches: Vec<Tensor> = Vec::new();
    let mut k = 0;
    while let Some(x) = tensors.get(&format!("{sub}.chunk{k}.x")) {
        let kind = if k == 0 { ChunkKind::First } else { ChunkKind::Steady };
        let dim = x.dims().get(1).copied().ok_or_else(|| Error::Invalid(format!("{sub}: bad input {}", x.shape())))?;
        let mut g = Graph::new();
        let xi = g.input("x", x.shape().clone(), DType::F32)?;
        let mut cx = ChunkCtx::new(&mut g, kind);
        let y = resample(&mut cx, xi, &prefix, dim, mode).map_err(graph_err)?;
        let slots = cx.into_slots();
        g.set_output("out", y)?;
        let mut exe = backend.compile(&g, &weights as &dyn WeightSource)?;
        let mut names = vec!["x".to_string()];
        let mut values = vec![x.clone()];
        if kind == ChunkKind::Steady {
            if caches.len() != slots.len() {
                return Err(Error::Other(format!("{sub}: {} caches for {} slots", caches.len(), slots.len())));
            }
            names.extend(slots.iter().map(|s| s.input_name()));
            values.append(&mut caches);
        }
        let named: Vec<(&str, Tensor)> = names.iter().map(String::as_str).zip(values).collect();
        let mut outs: HashMap<String, Tensor> = exe.run(&named)?.into_iter().collect();
        let y = outs.remove("out").ok_or_else(|| Error::Other(format!("{sub}: no output")))?;
        caches = slots
            .iter()
            .map(|s| outs.remove(&s.output_name()).ok_or_else(|| Error::Other(format!("{sub}: no cache output"))))
            .collect::<Result<_>>()?;
        put(out, RESAMPLE, &format!("{sub}.chunk{k}.out"), y);
        k += 1;
    }
    Ok(())
}

fn attention_file(case: &Case, backend: &dyn Backend, out: &mut Outputs) -> Result<()> {
    let file = case.file(ATTENTION)?;
    let tensors = file.all()?;
    // Either one unnamed case (`x`, `param.*`) or sub-cases (`<sub>.x`, `<sub>.param.*`).
    let mut cases: Vec<String> = Vec::new();
    if tensors.contains_key("x") {
        cases.push(String::new());
    }
    cases.extend(subcases(&file).into_iter().filter(|s| tensors.contains_key(&format!("{s}.x"))));
    for sub in cases {
        let at = |n: &str| if sub.is_empty() { n.to_string() } else { format!("{sub}.{n}") };
        let x = tensors.get(&at("x")).ok_or_else(|| case.error(format!("{ATTENTION}: no `{}`", at("x"))))?;
        let prefix = at("param");
        let mut g = Graph::new();
        let xi = g.input("x", x.shape().clone(), DType::F32)?;
        let y = attention_block(&mut g, xi, &prefix).map_err(graph_err)?;
        g.set_output("out", y)?;
        let weights = params(&tensors, &prefix);
        let mut exe = backend.compile(&g, &weights)?;
        put(out, ATTENTION, &at("out"), single_output(exe.run(&[("x", x.clone())])?)?);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::golden::{compare, default_dir};
    use vidrt_runtime::CpuBackend;

    /// Every check of the three VAE-block files passes on the CPU backend.
    #[test]
    fn golden_vae_block_ops() {
        let dir = default_dir().expect("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
        let case = Case::load(dir.join("ops")).unwrap();
        let mut out = Outputs::new();
        run(&case, &CpuBackend::new(), &mut out).unwrap();
        run_rms_norm(&case, &CpuBackend::new(), &mut out).unwrap();
        let mine = [RESAMPLE, ATTENTION, RMS_NORM];
        let checks: Vec<_> = case.checks.iter().filter(|c| mine.contains(&c.file.as_str())).collect();
        assert!(checks.len() >= 3);
        for c in checks {
            let got =
                out.get(&(c.file.clone(), c.tensor.clone())).unwrap_or_else(|| panic!("{} not produced", c.tensor));
            let cmp = compare(got, &case.tensor(&c.file, &c.tensor).unwrap()).unwrap();
            eprintln!("{}:{} rel_l2 {:.3e} max_abs {:.3e}", c.file, c.tensor, cmp.rel_l2, cmp.max_abs);
            assert!(c.passes(&cmp), "{}:{} {cmp:?}", c.file, c.tensor);
        }
    }
}
