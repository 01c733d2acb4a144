//! How the wgpu backend picks tunable parameters: a forced point (the tuner timing one
//! candidate), else the tuning database's winner for the problem's key, else the
//! deterministic heuristic. Tunable families: `matmul_tiled_f32`, `conv3d_igemm_f32`
//! ([`GemmParams::SPACE`]) and `attention_flash_f32` ([`AttnParams::space`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use vidrt_kernels::wgsl::attention::{self, AttnParams};
use vidrt_kernels::wgsl::gemm::{self, GemmKind, GemmParams};

use crate::tune::{alignment, bucket, hash_texts, DeviceInfo, TuneDb, TuneKey};

/// The tuning state of one backend.
#[derive(Debug, Default)]
pub struct Tuning {
    pub device: DeviceInfo,
    /// The database consulted at compile time (`None`: heuristics only).
    pub db: Option<TuneDb>,
    /// A parameter text used for every tunable node whose family matches (tuner runs).
    pub force: Option<(String, String)>,
    /// Candidate-set hashes per family variant (kernel texts are generated once).
    hashes: Mutex<HashMap<String, u64>>,
    /// Nodes compiled with a database winner, and winners found but invalid here.
    hits: AtomicUsize,
    rejected: AtomicUsize,
}

/// What to use for one tunable node.
pub(crate) enum Choice {
    /// The tuner's point: an invalid one is an error (the candidate failed).
    Forced(String),
    /// The database's winner: an invalid one is ignored.
    Tuned(String),
    Heuristic,
}

impl Tuning {
    pub fn new(device: DeviceInfo, db: Option<TuneDb>) -> Self {
        Tuning {
            device,
            db,
            force: None,
            hashes: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        }
    }

    /// Records whether a database winner was used (`true`) or was invalid on this adapter.
    pub(crate) fn record(&self, used: bool) {
        let c = if used { &self.hits } else { &self.rejected };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (nodes compiled with a database winner, winners ignored as invalid here) so far.
    pub fn hits(&self) -> (usize, usize) {
        (self.hits.load(Ordering::Relaxed), self.rejected.load(Ordering::Relaxed))
    }

    pub(crate) fn choose(&self, key: &TuneKey) -> Choice {
        if let Some((family, text)) = &self.force {
            if *family == key.family {
                return Choice::Forced(text.clone());
            }
        }
        match self.db.as_ref().and_then(|db| db.get(key)) {
            Some(e) => Choice::Tuned(e.winner.clone()),
            None => Choice::Heuristic,
        }
    }

    fn hash(&self, variant: &str, texts: impl FnOnce() -> Vec<String>) -> u64 {
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

    /// The key and candidate texts of a GEMM problem (`[batch, M, N, K]`) whose operands are
    /// stored as `storage` (e.g. `f16,f16`; the kernels accumulate in f32).
    pub fn gemm_key(&self, kind: GemmKind, dims: [usize; 4], layout: &str, storage: &str) -> (TuneKey, Vec<String>) {
        let family = match kind {
            GemmKind::MatMul { .. } => "matmul_tiled_f32",
            GemmKind::Conv3d { .. } => "conv3d_igemm_f32",
        };
        let variant = format!("{kind:?}");
        let kernel_hash = self.hash(&variant, || {
            GemmParams::SPACE.iter().filter_map(|p| gemm::gemm(kind, *p).ok()).map(|k| k.source).collect()
        });
        let key = TuneKey {
            family: family.into(),
            dtypes: format!("{storage}->f32"),
            shape: dims.iter().map(|&d| bucket(d)).collect(),
            align: alignment(&dims[1..]),
            layout: format!("{layout},{variant}"),
            device: self.device.clone(),
            kernel_hash,
        };
        (key, GemmParams::SPACE.iter().map(GemmParams::to_text).collect())
    }

    /// The key and candidate texts of an attention problem (`[B·H, Sq, Sk]`; head dims,
    /// bias and mask in `base`; q, k, v stored as `storage`).
    pub fn attention_key(&self, base: &AttnParams, dims: [usize; 3], storage: &str) -> (TuneKey, Vec<String>) {
        let space = AttnParams::space(base.d, base.dv, base.bias, base.mask);
        let variant = format!("attn d{} dv{} bias{} mask{:?}", base.d, base.dv, base.bias, base.mask);
        let kernel_hash = self
            .hash(&variant, || space.iter().filter_map(|p| attention::attention(*p).ok()).map(|k| k.source).collect());
        let key = TuneKey {
            family: "attention_flash_f32".into(),
            dtypes: format!("{storage}->f32"),
            shape: dims.iter().map(|&d| bucket(d)).collect(),
            align: alignment(&[base.d as usize, base.dv as usize]),
            layout: variant,
            device: self.device.clone(),
            kernel_hash,
        };
        (key, space.iter().map(AttnParams::to_text).collect())
    }
}
