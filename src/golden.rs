//! Golden reference cases (`../shared/golden` layout): `case.json` plus safetensors files.
//! Everything (configs, shapes, tolerances) is read from the case, never hard-coded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use serde::Deserialize;
use vidrt_graph::SafeTensorsFile;
use vidrt_ir::Tensor;

use crate::error::{Error, Result};

/// One tensor to compare, with its tolerances (both must hold).
#[derive(Clone, Debug, Deserialize)]
pub struct Check {
    pub file: String,
    pub tensor: String,
    pub rel_l2: f64,
    pub max_abs: f64,
    #[serde(default)]
    pub note: Option<String>,
}

/// A tensor reference inside a case.
#[derive(Clone, Debug, Deserialize)]
pub struct TensorRef {
    pub file: String,
    pub tensor: String,
}

/// A golden case folder.
pub struct Case {
    pub dir: PathBuf,
    /// `case.json`'s `case` field: ops, dit, vae, text_encoder, scheduler, pipeline.
    pub kind: String,
    pub json: serde_json::Value,
    pub checks: Vec<Check>,
    pub inputs: Vec<TensorRef>,
    files: Mutex<HashMap<String, Arc<SafeTensorsFile>>>,
}

impl Case {
    /// Reads `dir/case.json`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Case> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join("case.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Self::from_json(dir, &text)
    }

    /// A case from the text of its `case.json`; `dir` is the folder its safetensors files
    /// are resolved against (nothing is read from it here).
    pub fn from_json(dir: impl AsRef<Path>, text: &str) -> Result<Case> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join("case.json");
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Case { path: path.clone(), reason: e.to_string() })?;
        let field = |k: &str| json.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let kind = field("case")
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Case { path: path.clone(), reason: "no `case` field".into() })?;
        let checks: Vec<Check> = serde_json::from_value(field("checks"))
            .map_err(|e| Error::Case { path: path.clone(), reason: format!("checks: {e}") })?;
        let inputs: Vec<TensorRef> = if json.get("inputs").is_some() {
            serde_json::from_value(field("inputs"))
                .map_err(|e| Error::Case { path: path.clone(), reason: format!("inputs: {e}") })?
        } else {
            Vec::new()
        };
        Ok(Case { dir, kind, json, checks, inputs, files: Mutex::new(HashMap::new()) })
    }

    /// `config` (or null).
    pub fn config(&self) -> &serde_json::Value {
        self.json.get("config").unwrap_or(&serde_json::Value::Null)
    }

    /// A safetensors file of the case (relative paths resolve against the case folder).
    pub fn file(&self, name: &str) -> Result<Arc<SafeTensorsFile>> {
        let mut files = self.files.lock().map_err(|_| Error::Other("golden file cache poisoned".into()))?;
        if let Some(f) = files.get(name) {
            return Ok(f.clone());
        }
        let f = Arc::new(SafeTensorsFile::open(self.dir.join(name))?);
        files.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// A tensor of the case.
    pub fn tensor(&self, file: &str, name: &str) -> Result<Tensor> {
        Ok(self.file(file)?.get(name)?)
    }

    /// An error about this case.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Case { path: self.dir.clone(), reason: reason.into() }
    }
}

/// How far an output is from its reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub rel_l2: f64,
    pub max_abs: f64,
    /// Some output element is NaN or infinite.
    pub non_finite: bool,
}

/// Compares flattened tensors in f64. Errors when the element counts differ.
pub fn compare(out: &Tensor, reference: &Tensor) -> Result<Comparison> {
    if out.shape() != reference.shape() {
        return Err(Error::Invalid(format!(
            "output has shape {} but the reference has {}",
            out.shape(),
            reference.shape()
        )));
    }
    let (a, b) = (out.to_f64_vec(), reference.to_f64_vec());
    let (mut num, mut den, mut max_abs, mut non_finite) = (0.0f64, 0.0f64, 0.0f64, false);
    for (x, y) in a.iter().zip(&b) {
        if !x.is_finite() {
            non_finite = true;
        }
        let d = x - y;
        num += d * d;
        den += y * y;
        max_abs = max_abs.max(d.abs());
    }
    let rel_l2 = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    Ok(Comparison { rel_l2, max_abs, non_finite })
}

impl Check {
    pub fn passes(&self, c: &Comparison) -> bool {
        !c.non_finite && c.rel_l2 <= self.rel_l2 && c.max_abs <= self.max_abs
    }
}

/// Writes produced tensors as one safetensors file named `<file-stem>/<tensor>`, through a
/// temporary file and a rename so a failed write leaves nothing half-written.
pub fn write_outputs(path: &Path, outputs: &crate::eval::Outputs) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    use vidrt_ir::TensorData;
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for ((file, name), t) in outputs {
        let stem = file.trim_end_matches(".safetensors");
        let (dt, bytes): (Dtype, Vec<u8>) = match t.data() {
            TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            _ => (Dtype::F32, t.to_f32_vec().iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        bufs.push((format!("{stem}/{name}"), dt, t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, dt, shape, b)| TensorView::new(*dt, shape.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Other(format!("serialising outputs: {e}")))?;
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| Error::Other(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The golden folder: `$VIDRT_GOLDEN`, else `../shared/golden` or `shared/golden` next to the
/// workspace.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIDRT_GOLDEN") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared/golden"), root.join("shared/golden")].into_iter().find(|p| p.join("manifest.json").exists())
}

/// A check that misses its case's tolerance for a reason outside vidrt's control, with the
/// reason and a hard bound it must stay under. Tests print these as deviations, never as
/// passes, so both a regression and a fix show; `vidrt eval` reports them as FAIL.
#[derive(Clone, Copy, Debug)]
pub struct KnownDeviation {
    pub case: &'static str,
    pub file: &'static str,
    pub tensor: &'static str,
    pub max_rel_l2: f64,
    pub max_abs: f64,
    pub reason: &'static str,
}

/// Every known deviation from the golden data (the same on every f32 backend).
pub const KNOWN_DEVIATIONS: &[KnownDeviation] = &[KnownDeviation {
    case: "ops",
    file: "timestep_embedding.safetensors",
    tensor: "out",
    max_rel_l2: 2e-6,
    max_abs: 5e-5,
    reason: "torch's CPU exp (MKL VML) returns 1 ulp above the correctly rounded exp(e_12); at t≈1000 \
             that ulp moves the sin/cos argument by ~2.5e-5: rel L2 1.55e-6 against the case's 1e-6",
}];

impl KnownDeviation {
    /// The deviation recorded for `check` of case `case`, if any.
    pub fn find(case: &str, check: &Check) -> Option<&'static KnownDeviation> {
        KNOWN_DEVIATIONS.iter().find(|k| k.case == case && k.file == check.file && k.tensor == check.tensor)
    }

    /// Whether a comparison stays within this deviation's hard bound.
    pub fn holds(&self, c: &Comparison) -> bool {
        !c.non_finite && c.rel_l2 <= self.max_rel_l2 && c.max_abs <= self.max_abs
    }
}
