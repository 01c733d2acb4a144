//! Kernel autotuning: keys, the per-device tuning database, and the timing loop.
//!
//! - [`TuneKey`]: what a tuned winner is valid for — kernel family, dtypes, the problem's
//!   shape bucketed ([`bucket`]), alignment facts, backend, device, compute capability or
//!   adapter, driver version, and a hash over the text of every candidate kernel, so an
//!   edited kernel (or an edited candidate set) is never served a stale winner.
//! - [`TuneDb`]: one JSON file per device under the user's cache directory
//!   ([`default_db_path`]), written through a temporary file and a rename. A missing file is
//!   an empty database; a corrupt one is a warning (kept in [`TuneDb::warnings`]) and an
//!   empty database, never a failure.
//! - [`Entry`]: the winner and every candidate's time (a candidate that failed to compile or
//!   run is kept with no time: infinitely slow), the date and the settings used.
//! - [`time_candidate`]: warm-up, repeats, median, fresh inputs for every repeat.
//!
//! - [`Tuning`]: a backend's choice for each tunable node (forced point, database winner,
//!   heuristic), shared by the tunable backends: wgpu (WGSL families), and CUDA and the PTX
//!   simulator ([`ptx`]: the PTX families `matmul_wgmma_*`, `matmul_mma_*`, `matmul_simt_*`,
//!   `conv3d_wgmma_*`, `conv3d_mma_*`, `conv3d_simt_*`, `attention_wgmma_*`, `attention_mma_*`,
//!   `attention_simt_*`).
//! - [`Tunable`]: what the tuner (`vidrt tune`) needs of a backend.
//!
//! Backends look winners up at compile time and check them against the device's limits
//! before use: a winner that cannot run here is ignored (heuristic instead), never unwrapped.

pub mod ptx;
mod timing;
mod tuning;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vidrt_ir::Graph;

use crate::backend::Backend;

pub use timing::{time_candidate, time_runs, Timed, TimingSettings};
#[cfg(feature = "wgpu")]
pub(crate) use tuning::Choice;
pub use tuning::Tuning;
pub use vidrt_kernels::ptx::tune::bucket;

/// The file format version; a file of another version is ignored with a warning.
pub const DB_VERSION: u32 = 1;

/// A tunable problem of a graph: its key, the candidates' parameter texts (the points of the
/// family's space that are valid for this shape on this device), and a node that poses it.
#[derive(Clone, Debug)]
pub struct Problem {
    pub key: TuneKey,
    pub candidates: Vec<String>,
    pub node: usize,
    /// The candidate an untuned compile takes (the lowering's heuristic), where the backend
    /// can tell (the PTX backends; `None` on wgpu).
    pub heuristic: Option<String>,
}

/// A backend the tuner can tune: it lists a graph's problems, and compiles with one family
/// forced to a point. A candidate that fails to compile, load or run is kept with no time.
pub trait Tunable: Backend {
    /// What the tuning keys record of this device.
    fn device_info(&self) -> DeviceInfo;

    /// The tuning database this backend reads, if any.
    fn tune_db(&self) -> Option<&TuneDb>;

    /// A description of the device for the tuner's log.
    fn describe(&self) -> String;

    /// The distinct tunable problems of `graph`, in graph order.
    fn problems(&self, graph: &Graph) -> Vec<Problem>;

    /// The same device, compiling every node of kernel family `family` at point `params`
    /// (an invalid point fails to compile).
    fn forcing(&self, family: &str, params: &str) -> Box<dyn Backend>;

    /// What a candidate's time measures, when it is not the device's speed (the simulator).
    fn timing_note(&self) -> Option<&'static str> {
        None
    }
}

/// The largest power of two (up to 16) dividing every one of `dims`: the vector width the
/// problem allows, an alignment fact a winner may depend on.
pub fn alignment(dims: &[usize]) -> u32 {
    let mut a = 16usize;
    while a > 1 && dims.iter().any(|d| d % a != 0) {
        a /= 2;
    }
    a as u32
}

/// The device a database belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Backend name (`wgpu`, `cuda`).
    pub backend: String,
    /// Adapter or device name.
    pub name: String,
    /// Compute capability (CUDA) or the adapter's API/device type (wgpu).
    pub arch: String,
    /// Driver name and version.
    pub driver: String,
}

impl DeviceInfo {
    /// A file-name-safe slug of backend, device and driver.
    pub fn slug(&self) -> String {
        let raw = format!("{}-{}-{}", self.backend, self.name, self.driver);
        let mut s: String =
            raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        while s.contains("--") {
            s = s.replace("--", "-");
        }
        s.trim_matches('-').chars().take(96).collect()
    }
}

/// What a tuned winner is valid for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TuneKey {
    /// Kernel family, e.g. `matmul_tiled_f32`.
    pub family: String,
    /// Input and output dtypes, e.g. `f32,f32->f32`.
    pub dtypes: String,
    /// The problem's dimensions, bucketed (family-specific meaning, e.g. `[batch, M, N, K]`).
    pub shape: Vec<usize>,
    /// Alignment of the exact dimensions ([`alignment`]).
    pub align: u32,
    /// Other layout facts (transposes, bias, head dims, kernel sizes), family-specific.
    pub layout: String,
    pub device: DeviceInfo,
    /// Hash of every candidate kernel's generated text.
    pub kernel_hash: u64,
}

impl TuneKey {
    /// The key as one string (the database's map key).
    pub fn id(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        format!(
            "{}|{}|{}|a{}|{}|{}|{}|{}|{}|{:016x}",
            self.family,
            self.dtypes,
            dims.join("x"),
            self.align,
            self.layout,
            self.device.backend,
            self.device.name,
            self.device.arch,
            self.device.driver,
            self.kernel_hash
        )
    }
}

/// One candidate's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The parameter point, in the family's text form (e.g. `bm=64,bn=64,bk=16,tm=4,tn=4`).
    pub params: String,
    /// Median time in microseconds; `None` when it failed (infinitely slow).
    pub time_us: Option<f64>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A tuned problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: TuneKey,
    /// The winner's parameters (the fastest candidate that ran).
    pub winner: String,
    pub candidates: Vec<Candidate>,
    /// Seconds since the Unix epoch when it was tuned.
    pub date_unix: u64,
    pub settings: TimingSettings,
}

impl Entry {
    /// An entry from timed candidates; `None` when every candidate failed.
    pub fn from_candidates(key: TuneKey, candidates: Vec<Candidate>, settings: TimingSettings) -> Option<Entry> {
        let winner = candidates
            .iter()
            .filter_map(|c| c.time_us.map(|t| (t, &c.params)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p.clone())?;
        let date_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Some(Entry { key, winner, candidates, date_unix, settings })
    }
}

#[derive(Serialize, Deserialize)]
struct DbFile {
    version: u32,
    device: DeviceInfo,
    entries: Vec<Entry>,
}

/// The tuning database of one device.
#[derive(Clone, Debug, Default)]
pub struct TuneDb {
    /// Where it is saved; `None` for an in-memory database (`--no-tune-cache`).
    pub path: Option<PathBuf>,
    pub device: DeviceInfo,
    entries: BTreeMap<String, Entry>,
    /// Problems found while opening (a corrupt or foreign file), for the caller to print.
    pub warnings: Vec<String>,
}

/// Where `device`'s database lives: `$VIDRT_CACHE_DIR/tune/`, else the XDG cache directory
/// (`$XDG_CACHE_HOME` or `~/.cache`) under `vidrt/tune/`, named by the device's slug. `None`
/// when no cache directory can be found.
pub fn default_db_path(device: &DeviceInfo) -> Option<PathBuf> {
    let base = if let Some(d) = std::env::var_os("VIDRT_CACHE_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("vidrt")
    } else {
        PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?).join(".cache").join("vidrt")
    };
    Some(base.join("tune").join(format!("{}.json", device.slug())))
}

impl TuneDb {
    /// An empty database that is never saved.
    pub fn in_memory(device: DeviceInfo) -> TuneDb {
        TuneDb { path: None, device, entries: BTreeMap::new(), warnings: Vec::new() }
    }

    /// Opens the database at `path` for `device`. Never fails: a missing file is empty, and
    /// a file that cannot be read or parsed, has another version or belongs to another
    /// device is ignored with a warning (it is replaced at the next save).
    pub fn open(path: &Path, device: DeviceInfo) -> TuneDb {
        let mut db = TuneDb { path: Some(path.to_path_buf()), device, entries: BTreeMap::new(), warnings: Vec::new() };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return db,
            Err(e) => {
                db.warnings.push(format!("tuning database {}: {e}; using the heuristics", path.display()));
                return db;
            }
        };
        match serde_json::from_str::<DbFile>(&text) {
            Ok(f) if f.version != DB_VERSION => db.warnings.push(format!(
                "tuning database {}: version {} (this build reads {DB_VERSION}); ignored",
                path.display(),
                f.version
            )),
            Ok(f) if f.device != db.device => db.warnings.push(format!(
                "tuning database {}: made for another device ({} {}); ignored",
                path.display(),
                f.device.name,
                f.device.driver
            )),
            Ok(f) => {
                for e in f.entries {
                    db.entries.insert(e.key.id(), e);
                }
            }
            Err(e) => db
                .warnings
                .push(format!("tuning database {} is corrupt ({e}); ignored, using the heuristics", path.display())),
        }
        db
    }

    /// The entry for `key`, if tuned with exactly this key (kernel hash included).
    pub fn get(&self, key: &TuneKey) -> Option<&Entry> {
        self.entries.get(&key.id())
    }

    pub fn insert(&mut self, e: Entry) {
        self.entries.insert(e.key.id(), e);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Writes the database (temporary file in the same folder, then rename: a reader never
    /// sees a half-written file). An in-memory database is not written.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = DbFile {
            version: DB_VERSION,
            device: self.device.clone(),
            entries: self.entries.values().cloned().collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// FNV-1a over `texts`, in order (the candidate set's checksum).
pub fn hash_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in texts {
        for b in t.as_bytes().iter().chain([0xffu8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceInfo {
        DeviceInfo {
            backend: "wgpu".into(),
            name: "llvmpipe".into(),
            arch: "Vulkan Cpu".into(),
            driver: "Mesa 22".into(),
        }
    }

    fn key(hash: u64) -> TuneKey {
        TuneKey {
            family: "matmul_tiled_f32".into(),
            dtypes: "f32,f32->f32".into(),
            shape: vec![1, bucket(100), 64, 32],
            align: alignment(&[100, 64, 32]),
            layout: "nn".into(),
            device: dev(),
            kernel_hash: hash,
        }
    }

    fn entry(hash: u64) -> Entry {
        let c = vec![
            Candidate { params: "a".into(), time_us: Some(5.0), error: None },
            Candidate { params: "b".into(), time_us: None, error: Some("no".into()) },
            Candidate { params: "c".into(), time_us: Some(3.0), error: None },
        ];
        Entry::from_candidates(key(hash), c, TimingSettings::default()).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vidrt-tune-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("db.json")
    }

    #[test]
    fn buckets_and_alignment() {
        assert_eq!(bucket(37), 37);
        assert_eq!(bucket(65), 128);
        assert_eq!(bucket(32760), 32768);
        assert_eq!(alignment(&[1536, 8960]), 16);
        assert_eq!(alignment(&[12, 8]), 4);
        assert_eq!(alignment(&[37]), 1);
    }

    #[test]
    fn winner_is_the_fastest_that_ran() {
        assert_eq!(entry(1).winner, "c");
        let none = vec![Candidate { params: "x".into(), time_us: None, error: Some("e".into()) }];
        assert!(Entry::from_candidates(key(1), none, TimingSettings::default()).is_none());
    }

    #[test]
    fn round_trip_and_stale_hash_misses() {
        let p = tmp("rt");
        let mut db = TuneDb::open(&p, dev());
        assert!(db.is_empty() && db.warnings.is_empty());
        db.insert(entry(7));
        db.save().unwrap();
        let back = TuneDb::open(&p, dev());
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        assert_eq!(back.get(&key(7)).map(|e| e.winner.as_str()), Some("c"));
        assert_eq!(back.get(&key(7)).map(|e| e.candidates.len()), Some(3));
        // An edited kernel hashes differently: never served the old winner.
        assert!(back.get(&key(8)).is_none());
        // No temporary file is left beside it.
        let files: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn corrupt_or_foreign_files_are_warnings() {
        let p = tmp("bad");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{\"version\": 1, \"entr").unwrap();
        let db = TuneDb::open(&p, dev());
        assert!(db.is_empty());
        assert_eq!(db.warnings.len(), 1, "{:?}", db.warnings);
        assert!(db.warnings[0].contains("corrupt"), "{:?}", db.warnings);
        // The next save replaces it with a good file.
        let mut db = db;
        db.insert(entry(1));
        db.save().unwrap();
        assert_eq!(TuneDb::open(&p, dev()).len(), 1);
        // Another device's file is not used.
        let other = DeviceInfo { name: "other".into(), ..dev() };
        let o = TuneDb::open(&p, other);
        assert!(o.is_empty() && o.warnings[0].contains("another device"), "{:?}", o.warnings);
    }

    #[test]
    fn slug_is_file_safe() {
        let s = dev().slug();
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{s}");
        assert_eq!(s, "wgpu-llvmpipe-mesa-22");
    }
}
