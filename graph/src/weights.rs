//! Weight files: safetensors, memory-mapped, single files and sharded folders
//! (`*.safetensors.index.json`). Tensors are converted to a host [`Tensor`] of their stored
//! dtype on demand (the backend converts to the graph's dtype), so a 14B checkpoint is never
//! read whole into memory.
//!
//! Every failure names the file or tensor: a truncated or corrupt file, a missing tensor, an
//! unsupported dtype.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, TensorInfo};
use safetensors::SafeTensors;
use vidrt_ir::{Shape, Tensor, TensorData};

/// An error reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a valid safetensors file (truncated, bad header, bad offsets).
    #[error("{path}: not a valid safetensors file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A sharded index names a file that is not there, or is malformed.
    #[error("{path}: bad shard index: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("no safetensors weights found in {0}")]
    NoWeights(PathBuf),
    #[error("tensor `{name}` is missing from {source_desc}")]
    Missing { name: String, source_desc: String },
    #[error("tensor `{name}` in {path} has dtype {dtype}, which vidrt does not load (F32, F16, BF16, I32, I64 are supported)")]
    UnsupportedDtype { name: String, path: PathBuf, dtype: String },
    #[error("tensor `{name}`: expected shape {expected}, the file has {got}")]
    Shape { name: String, expected: Shape, got: Shape },
}

/// One memory-mapped safetensors file with its parsed header.
pub struct SafeTensorsFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl SafeTensorsFile {
    /// Maps and validates `path` (header, offsets and total length).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| WeightError::Io { path: path.clone(), source })?;
        // SAFETY: the map is read-only; a file changed underneath while mapped is the same
        // hazard every mmap-based loader (safetensors, llama.cpp) accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| WeightError::Io { path: path.clone(), source })?;
        let (n, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| WeightError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        let tensors = meta.tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
        Ok(SafeTensorsFile { path, map, data_start: 8 + n, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<Shape> {
        self.tensors.get(name).map(|i| Shape::new(i.shape.clone()))
    }

    /// Reads `name` into a host tensor of its stored dtype.
    pub fn get(&self, name: &str) -> Result<Tensor, WeightError> {
        let info = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            source_desc: self.path.display().to_string(),
        })?;
        let (a, b) = info.data_offsets;
        let bytes = self.map.get(self.data_start + a..self.data_start + b).ok_or_else(|| WeightError::Corrupt {
            path: self.path.clone(),
            reason: format!("tensor `{name}` lies outside the file"),
        })?;
        let data = decode(bytes, info.dtype).ok_or_else(|| WeightError::UnsupportedDtype {
            name: name.to_string(),
            path: self.path.clone(),
            dtype: format!("{:?}", info.dtype),
        })?;
        Tensor::new(Shape::new(info.shape.clone()), data)
            .map_err(|e| WeightError::Corrupt { path: self.path.clone(), reason: format!("tensor `{name}`: {e}") })
    }

    /// Reads every tensor (for small files such as the golden cases).
    pub fn all(&self) -> Result<BTreeMap<String, Tensor>, WeightError> {
        self.names().into_iter().map(|n| Ok((n.to_string(), self.get(n)?))).collect()
    }
}

/// Little-endian bytes to typed elements (unaligned-safe).
fn decode(bytes: &[u8], dtype: StDtype) -> Option<TensorData> {
    fn le<T: bytemuck::Pod, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Some(match dtype {
        StDtype::F32 => TensorData::F32(le(bytes, f32::from_le_bytes)),
        StDtype::F16 => TensorData::F16(le(bytes, |a: [u8; 2]| half::f16::from_bits(u16::from_le_bytes(a)))),
        StDtype::BF16 => TensorData::BF16(le(bytes, |a: [u8; 2]| half::bf16::from_bits(u16::from_le_bytes(a)))),
        StDtype::I32 => TensorData::I32(le(bytes, i32::from_le_bytes)),
        StDtype::I64 => TensorData::I64(le(bytes, i64::from_le_bytes)),
        _ => return None,
    })
}

/// A set of weight files seen as one name space (a single file, or the shards of an index).
pub struct WeightStore {
    desc: String,
    files: Vec<SafeTensorsFile>,
    index: HashMap<String, usize>,
}

impl WeightStore {
    /// One file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let f = SafeTensorsFile::open(path)?;
        Ok(Self::from_files(f.path.display().to_string(), vec![f]))
    }

    fn from_files(desc: String, files: Vec<SafeTensorsFile>) -> Self {
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for n in f.tensors.keys() {
                index.insert(n.clone(), i);
            }
        }
        WeightStore { desc, files, index }
    }

    /// A model component folder: `*.safetensors.index.json` (sharded) if present, else every
    /// `*.safetensors` file in it.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, WeightError> {
        let dir = dir.as_ref();
        let rd = std::fs::read_dir(dir).map_err(|source| WeightError::Io { path: dir.to_path_buf(), source })?;
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        let name_of = |p: &Path| p.file_name().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if let Some(idx) = entries.iter().find(|p| name_of(p).ends_with(".safetensors.index.json")) {
            return Self::from_index(idx);
        }
        let files: Vec<SafeTensorsFile> = entries
            .iter()
            .filter(|p| name_of(p).ends_with(".safetensors"))
            .map(SafeTensorsFile::open)
            .collect::<Result<_, _>>()?;
        if files.is_empty() {
            return Err(WeightError::NoWeights(dir.to_path_buf()));
        }
        Ok(Self::from_files(dir.display().to_string(), files))
    }

    /// A sharded checkpoint through its index (`{"weight_map": {name: file}}`).
    pub fn from_index(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let bad = |reason: String| WeightError::Index { path: path.to_path_buf(), reason };
        let text =
            std::fs::read_to_string(path).map_err(|source| WeightError::Io { path: path.to_path_buf(), source })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map =
            v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = Vec::with_capacity(map.len());
        for (name, shard) in map {
            let shard = shard.as_str().ok_or_else(|| bad(format!("the shard of `{name}` is not a file name")))?;
            // Shards live beside the index: a path elsewhere is refused, not followed.
            let plain = Path::new(shard).file_name().and_then(|f| f.to_str()) == Some(shard);
            if !plain || shard == ".." {
                return Err(bad(format!("the shard `{shard}` of `{name}` is not a file name in the index's folder")));
            }
            shard_names.push(shard);
        }
        shard_names.sort_unstable();
        shard_names.dedup();
        let files: Vec<SafeTensorsFile> =
            shard_names.iter().map(|s| SafeTensorsFile::open(dir.join(s))).collect::<Result<_, _>>()?;
        let store = Self::from_files(path.display().to_string(), files);
        for (name, shard) in map {
            if !store.index.contains_key(name) {
                return Err(bad(format!(
                    "`{name}` is listed in {} but that shard does not hold it",
                    shard.as_str().unwrap_or("?")
                )));
            }
        }
        Ok(store)
    }

    /// What this store was loaded from.
    pub fn describe(&self) -> &str {
        &self.desc
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn shape(&self, name: &str) -> Option<Shape> {
        self.index.get(name).and_then(|&i| self.files[i].shape(name))
    }

    /// Reads `name` (stored dtype).
    pub fn get(&self, name: &str) -> Result<Tensor, WeightError> {
        match self.index.get(name) {
            Some(&i) => self.files[i].get(name),
            None => Err(WeightError::Missing { name: name.to_string(), source_desc: self.desc.clone() }),
        }
    }

    /// Reads `name` and checks its shape.
    pub fn get_shaped(&self, name: &str, expected: &Shape) -> Result<Tensor, WeightError> {
        let t = self.get(name)?;
        if t.shape() != expected {
            return Err(WeightError::Shape {
                name: name.to_string(),
                expected: expected.clone(),
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }
}
