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
use vidrt_ir::{DType, Shape, Tensor, TensorData};

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
            .map_err(|e| WeightError::Corrupt { path: path.clone(), reason: diagnose(&map, &e) })?;
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

    /// The stored dtype of `name`, read from the header alone: missing, or a dtype vidrt
    /// does not load, is an error naming the tensor and the file.
    pub fn dtype(&self, name: &str) -> Result<DType, WeightError> {
        let info = self.info(name)?;
        vidrt_dtype(info.dtype).ok_or_else(|| WeightError::UnsupportedDtype {
            name: name.to_string(),
            path: self.path.clone(),
            dtype: format!("{:?}", info.dtype),
        })
    }

    /// The header entry of `name`, or an error naming the tensor and the file.
    fn info(&self, name: &str) -> Result<&TensorInfo, WeightError> {
        self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            source_desc: self.path.display().to_string(),
        })
    }

    /// Reads `name` into a host tensor of its stored dtype.
    pub fn get(&self, name: &str) -> Result<Tensor, WeightError> {
        let dtype = self.dtype(name)?;
        let info = self.info(name)?;
        let (a, b) = info.data_offsets;
        let bytes = self.map.get(self.data_start + a..self.data_start + b).ok_or_else(|| WeightError::Corrupt {
            path: self.path.clone(),
            reason: format!("tensor `{name}` lies outside the file"),
        })?;
        let data = decode(bytes, dtype);
        Tensor::new(Shape::new(info.shape.clone()), data)
            .map_err(|e| WeightError::Corrupt { path: self.path.clone(), reason: format!("tensor `{name}`: {e}") })
    }

    /// Reads every tensor (for small files such as the golden cases).
    pub fn all(&self) -> Result<BTreeMap<String, Tensor>, WeightError> {
        self.names().into_iter().map(|n| Ok((n.to_string(), self.get(n)?))).collect()
    }
}

/// The safetensors crate's own header limit (its `MAX_HEADER_SIZE`).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Why a file the safetensors crate refused is invalid, naming the tensor at fault where
/// there is one (the crate's messages often do not: "file not fully covered", "invalid shape,
/// data type, or offset for tensor"). Only reads the header: nothing is allocated for the
/// sizes a header declares. Falls back to the crate's message.
fn diagnose(file: &[u8], err: &safetensors::SafeTensorError) -> String {
    let fallback = err.to_string();
    let len = file.len() as u64;
    let Some(head) = file.get(..8) else {
        return format!("truncated: {len} bytes, shorter than the 8-byte header length");
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    let n = u64::from_le_bytes(a);
    if n > MAX_HEADER_BYTES {
        return format!("the header length field says {n} bytes, more than the {MAX_HEADER_BYTES} allowed");
    }
    if n > len - 8 {
        return format!(
            "truncated: the header length field says {n} bytes but only {} follow it ({fallback})",
            len - 8
        );
    }
    // n ≤ len - 8 here, so the slice exists and n fits usize.
    let Some(header) = file.get(8..8 + n as usize) else { return fallback };
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice::<serde_json::Value>(header) else {
        return format!("corrupt header: {fallback}");
    };
    let data_len = len - 8 - n;
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let dtype_text = info.get("dtype").map(|d| d.to_string()).unwrap_or_else(|| "none".into());
        let Some(dtype) = info.get("dtype").and_then(|d| serde_json::from_value::<StDtype>(d.clone()).ok()) else {
            return format!("tensor `{name}`: unknown dtype {dtype_text}");
        };
        let shape: Option<Vec<u64>> =
            info.get("shape").and_then(|s| s.as_array()).and_then(|s| s.iter().map(|d| d.as_u64()).collect());
        let Some(shape) = shape else {
            return format!("tensor `{name}`: `shape` is not a list of sizes");
        };
        let offsets: Option<Vec<u64>> =
            info.get("data_offsets").and_then(|s| s.as_array()).and_then(|s| s.iter().map(|d| d.as_u64()).collect());
        let Some(&[start, end]) = offsets.as_deref() else {
            return format!("tensor `{name}`: `data_offsets` is not a pair of offsets");
        };
        let bits = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|numel| numel.checked_mul(dtype.bitsize() as u64));
        let Some(bits) = bits else {
            return format!("tensor `{name}`: shape {shape:?} of {dtype:?} declares more bytes than can exist");
        };
        if end < start {
            return format!("tensor `{name}`: data_offsets [{start}, {end}] end before they start");
        }
        if end > data_len {
            return format!(
                "tensor `{name}`: data_offsets [{start}, {end}] lie outside the file's {data_len} data bytes \
                 (truncated, or offsets out of range)"
            );
        }
        if bits % 8 != 0 || end - start != bits / 8 {
            return format!(
                "tensor `{name}`: shape {shape:?} of {dtype:?} needs {} bytes but data_offsets [{start}, {end}] \
                 hold {}",
                bits.div_ceil(8),
                end - start
            );
        }
        spans.push((start, end, name));
    }
    spans.sort_unstable();
    let mut covered = 0u64;
    let mut last = "";
    for &(start, end, name) in &spans {
        if start < covered {
            return format!("tensors `{last}` and `{name}` overlap (`{name}` starts at {start}, before {covered})");
        }
        if start > covered {
            return format!("unused bytes {covered}..{start} before tensor `{name}` (bad offsets)");
        }
        (covered, last) = (end, name);
    }
    if covered != data_len {
        return format!("{} bytes after the last tensor's data (bad offsets or a corrupt file)", data_len - covered);
    }
    fallback
}

/// Little-endian bytes to typed elements (unaligned-safe).
/// The dtype vidrt loads a stored safetensors dtype as (`None`: not loaded).
fn vidrt_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        _ => return None,
    })
}

/// Little-endian `bytes` as a tensor's data of `dtype`.
fn decode(bytes: &[u8], dtype: DType) -> TensorData {
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
    match dtype {
        DType::F32 => TensorData::F32(le(bytes, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(le(bytes, |a: [u8; 2]| half::f16::from_bits(u16::from_le_bytes(a)))),
        DType::BF16 => TensorData::BF16(le(bytes, |a: [u8; 2]| half::bf16::from_bits(u16::from_le_bytes(a)))),
        DType::I32 => TensorData::I32(le(bytes, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(le(bytes, i64::from_le_bytes)),
    }
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
        let files: Vec<SafeTensorsFile> = shard_names
            .iter()
            .map(|s| match SafeTensorsFile::open(dir.join(s)) {
                Err(WeightError::Io { path: shard, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                    // Name a tensor the missing shard should hold.
                    let held = map.iter().find(|(_, f)| f.as_str() == Some(*s)).map_or("", |(n, _)| n.as_str());
                    Err(bad(format!("the shard {} (which holds `{held}`) is missing: {source}", shard.display())))
                }
                other => other,
            })
            .collect::<Result<_, _>>()?;
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

    /// The stored dtype of `name` (from the header; see [`SafeTensorsFile::dtype`]).
    pub fn dtype(&self, name: &str) -> Result<DType, WeightError> {
        match self.index.get(name) {
            Some(&i) => self.files[i].dtype(name),
            None => Err(WeightError::Missing { name: name.to_string(), source_desc: self.desc.clone() }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder for this test.
    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vidrt-weights-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A safetensors file from its header text and data bytes.
    fn file(d: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The error of opening `p`, which must name the file.
    fn open_err(p: &Path) -> String {
        let e = match SafeTensorsFile::open(p) {
            Ok(_) => panic!("{} opened but should not have", p.display()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&p.display().to_string()), "the error names the file: {e}");
        e
    }

    const GOOD: &str = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;

    #[test]
    fn a_good_file_reads() {
        let d = dir("good");
        let p = file(&d, "m.safetensors", GOOD, &[0; 12]);
        let f = SafeTensorsFile::open(&p).unwrap();
        assert_eq!(f.names(), ["a", "b"]);
        assert_eq!(f.get("b").unwrap().shape().dims(), &[1]);
    }

    #[test]
    fn truncated_files_are_refused() {
        let d = dir("truncated");
        let e = open_err(&file(&d, "short.safetensors", GOOD, &[0; 10]));
        assert!(e.contains("tensor `b`") && e.contains("outside"), "{e}");
        let p = d.join("tiny.safetensors");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let e = open_err(&p);
        assert!(e.contains("truncated") && e.contains("3 bytes"), "{e}");
        // The header itself cut short.
        let p = d.join("header.safetensors");
        let mut bytes = (GOOD.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&GOOD.as_bytes()[..20]);
        std::fs::write(&p, bytes).unwrap();
        let e = open_err(&p);
        assert!(e.contains("truncated") && e.contains(&format!("says {} bytes", GOOD.len())), "{e}");
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let d = dir("corrupt");
        let e = open_err(&file(&d, "json.safetensors", "{\"a\": {\"dtype\": \"F32\", ", &[]));
        assert!(e.contains("corrupt header"), "{e}");
        let mut bytes = 4u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'{', b'}']);
        let p = d.join("utf8.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let e = open_err(&p);
        assert!(e.contains("UTF-8"), "{e}");
        // A header length field of 2^62: refused without reading or allocating that much.
        let mut bytes = (1u64 << 62).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let p = d.join("huge-header.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let e = open_err(&p);
        assert!(e.contains(&(1u64 << 62).to_string()) && e.contains("allowed"), "{e}");
    }

    #[test]
    fn bad_offsets_name_the_tensor() {
        let d = dir("offsets");
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let e = open_err(&file(&d, "overlap.safetensors", h, &[0; 8]));
        assert!(e.contains("`a`") && e.contains("`b`") && e.contains("overlap"), "{e}");
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4000,4004]}}"#;
        let e = open_err(&file(&d, "range.safetensors", h, &[0; 12]));
        assert!(e.contains("tensor `b`") && e.contains("[4000, 4004]") && e.contains("outside"), "{e}");
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let e = open_err(&file(&d, "size.safetensors", h, &[0; 8]));
        assert!(e.contains("tensor `a`") && e.contains("needs 12 bytes"), "{e}");
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#;
        let e = open_err(&file(&d, "reversed.safetensors", h, &[0; 8]));
        assert!(e.contains("tensor `a`") && e.contains("before they start"), "{e}");
    }

    #[test]
    fn huge_declared_sizes_are_refused_without_allocating() {
        let d = dir("huge");
        // 2^40 f32 elements (4 TiB) claimed by a 16-byte data section: an error, quickly.
        let h = format!(r#"{{"big":{{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,{}]}}}}"#, 1u64 << 42);
        let e = open_err(&file(&d, "big.safetensors", &h, &[0; 16]));
        assert!(e.contains("tensor `big`") && e.contains("outside"), "{e}");
        // A shape whose element count overflows.
        let h = r#"{"big":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#;
        let e = open_err(&file(&d, "overflow.safetensors", h, &[0; 16]));
        assert!(e.contains("tensor `big`") && e.contains("more bytes than can exist"), "{e}");
    }

    #[test]
    fn dtypes_vidrt_does_not_load_name_the_tensor() {
        let d = dir("dtype");
        let h = r#"{"q":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}"#;
        let e = open_err(&file(&d, "unknown.safetensors", h, &[0; 8]));
        assert!(e.contains("tensor `q`") && e.contains("unknown dtype \"Q4_K\""), "{e}");
        // A dtype safetensors knows but vidrt does not load: the file opens, the read fails.
        let h = r#"{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
        let p = file(&d, "f64.safetensors", h, &[0; 8]);
        let store = WeightStore::from_file(&p).unwrap();
        let e = store.dtype("x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`x`") && e.contains("F64") && e.contains("f64.safetensors"), "{e}");
        let e = store.get("x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("`x`") && e.contains("F64") && e.contains("f64.safetensors") && e.contains("supported"),
            "{e}"
        );
    }

    #[test]
    fn wrong_shapes_and_missing_tensors_are_named() {
        let d = dir("shape");
        let store = WeightStore::from_file(file(&d, "m.safetensors", GOOD, &[0; 12])).unwrap();
        let e = store.get_shaped("a", &Shape::new(vec![3])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`a`") && e.contains("[3]") && e.contains("[2]"), "{e}");
        let e = store.get("c").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`c`") && e.contains("missing") && e.contains("m.safetensors"), "{e}");
    }

    #[test]
    fn a_sharded_index_naming_a_missing_shard_is_refused() {
        let d = dir("index");
        file(&d, "model-00001-of-00002.safetensors", GOOD, &[0; 12]);
        let index = d.join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let e = WeightStore::from_dir(&d).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("model.safetensors.index.json") && e.contains("model-00002-of-00002.safetensors"), "{e}");
        assert!(e.contains("`c`") && e.contains("is missing"), "{e}");
        // A shard that exists but does not hold what the index says.
        std::fs::write(
            &index,
            r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","z":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let e = WeightStore::from_dir(&d).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("model.safetensors.index.json") && e.contains("`z`") && e.contains("does not hold"), "{e}");
        // A shard outside the index's folder is not followed.
        std::fs::write(&index, r#"{"weight_map":{"a":"../../etc/passwd"}}"#).unwrap();
        let e = WeightStore::from_dir(&d).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("bad shard index") && e.contains("not a file name"), "{e}");
        std::fs::write(&index, "{\"weight_map\": 3}").unwrap();
        let e = WeightStore::from_dir(&d).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no `weight_map` object"), "{e}");
    }
}
