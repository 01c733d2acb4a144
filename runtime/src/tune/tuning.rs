//! How a backend picks tunable parameters, shared by every tunable backend: a forced point
//! (the tuner timing one candidate), else the tuning database's winner for the problem's key,
//! else the deterministic heuristic. The backends build the keys (`wgpu/tuning.rs` for the
//! WGSL families, [`super::ptx`] for the PTX families of CUDA and the simulator).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{hash_texts, DeviceInfo, TuneDb, TuneKey};

/// The tuning state of one backend.
#[derive(Debug, Default)]
pub struct Tuning {
    pub device: DeviceInfo,
    /// The database consulted at compile time (`None`: heuristics only).
    pub db: Option<TuneDb>,
    /// A parameter text used for every tunable node whose family matches (tuner runs).
    pub force: Option<(String, String)>,
    /// The PTX target the backend emits for (CUDA: sm_90a on Hopper); `None`: sm_80 (the
    /// simulator). PTX candidate hashes are taken over the text as emitted for it.
    pub ptx_target: Option<vidrt_kernels::ptx::Target>,
    /// The most shared memory one block may use on the device (CUDA: its opt-in maximum);
    /// `None`: the PTX target's ([`vidrt_kernels::ptx::Target::max_shared`]). PTX points
    /// needing more are not candidates.
    pub max_shared: Option<u32>,
    /// Whether 16-bit matmuls and attention take `matmul_wgmma` / `attention_wgmma` on an
    /// sm_90a target (off unless asked).
    pub wgmma: bool,
    /// Candidate-set hashes per family variant (kernel texts are generated once).
    hashes: Mutex<HashMap<String, u64>>,
    /// Nodes compiled with a database winner, and winners found but invalid here.
    hits: AtomicUsize,
    rejected: AtomicUsize,
}

/// What to use for one tunable node: the tuner's forced point (an invalid one is an error),
/// the database's winner (an invalid one is ignored) or the heuristic. The PTX lowering's
/// own type, shared by every backend.
pub(crate) use vidrt_kernels::ptx::tune::Pick as Choice;

impl Tuning {
    pub fn new(device: DeviceInfo, db: Option<TuneDb>) -> Self {
        Tuning {
            device,
            db,
            force: None,
            ptx_target: None,
            max_shared: None,
            wgmma: false,
            hashes: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        }
    }

    /// Tuning on `device` that compiles every node of `family` at `params` (no database).
    pub fn forcing(device: DeviceInfo, family: &str, params: &str) -> Self {
        let mut t = Tuning::new(device, None);
        t.force = Some((family.to_string(), params.to_string()));
        t
    }

    /// The same, for a backend that emits PTX for `target`.
    pub fn with_ptx_target(mut self, target: vidrt_kernels::ptx::Target) -> Self {
        self.ptx_target = Some(target);
        self
    }

    /// The same, lowering 16-bit matmuls and attention to the wgmma families on sm_90a where
    /// `on`.
    pub fn with_wgmma(mut self, on: bool) -> Self {
        self.wgmma = on;
        self
    }

    /// The same, on a device whose blocks may use at most `bytes` of shared memory.
    pub fn with_max_shared(mut self, bytes: u32) -> Self {
        self.max_shared = Some(bytes);
        self
    }

    /// Records whether a database winner was used (`true`) or was invalid on this device.
    pub(crate) fn record(&self, used: bool) {
        let c = if used { &self.hits } else { &self.rejected };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (nodes compiled with a database winner, winners ignored as invalid here) so far.
    pub fn hits(&self) -> (usize, usize) {
        (self.hits.load(Ordering::Relaxed), self.rejected.load(Ordering::Relaxed))
    }

    /// Warnings from opening the database (corrupt, foreign, unreadable).
    pub fn warnings(&self) -> Vec<String> {
        self.db.as_ref().map(|d| d.warnings.clone()).unwrap_or_default()
    }

    /// The forced point for `family`, if this is a tuner's backend forcing it.
    pub(crate) fn forced(&self, family: &str) -> Option<String> {
        self.force.as_ref().filter(|(f, _)| f == family).map(|(_, t)| t.clone())
    }

    pub(crate) fn choose(&self, key: &TuneKey) -> Choice {
        if let Some(t) = self.forced(&key.family) {
            return Choice::Forced(t);
        }
        match self.db.as_ref().and_then(|db| db.get(key)) {
            Some(e) => Choice::Tuned(e.winner.clone()),
            None => Choice::Heuristic,
        }
    }

    /// The candidate-set hash of `variant`, from `texts` (every candidate's kernel text) the
    /// first time it is asked for.
    pub(crate) fn hash(&self, variant: &str, texts: impl FnOnce() -> Vec<String>) -> u64 {
        if let Some(h) = self.hashes.lock().ok().and_then(|m| m.get(variant).copied()) {
            return h;
        }
        let t = texts();
        let h = hash_texts(t.iter().map(String::as_str));
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(variant.to_string(), h);
        }
        h
    }
}
