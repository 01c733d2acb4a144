//! Bytes → a golden case's `case.json` (`vidrt::golden::Case::from_json`, the parser behind
//! `Case::load`). An accepted case then has its checks triaged, its config read the way
//! `vidrt eval` reads it for the component it names, and the tensors its checks and inputs
//! name looked up in a scratch case folder holding one small safetensors file `t.safetensors`
//! (only plain file names are looked up, so no input reaches outside that folder). Errors are
//! fine; a panic is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vidrt::eval::{CheckResult, Report};
use vidrt::golden::{Case, Comparison, KnownDeviation};
use vidrt_graph::umt5::Umt5Config;
use vidrt_graph::wan_dit::WanDitConfig;
use vidrt_graph::wan_vae::WanVaeConfig;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = vidrt_fuzz::scratch_dir("golden_case");
        // `out` f32 [2] and `ids` i64 [1].
        let header = r#"{"out":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"ids":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        for x in [1.0f32, -2.0] {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bytes.extend_from_slice(&7i64.to_le_bytes());
        std::fs::write(d.join("t.safetensors"), bytes).unwrap_or_else(|e| panic!("fuzz harness: {e}"));
        d
    })
}

fn plain(name: &str) -> bool {
    !name.is_empty() && name != ".." && Path::new(name).file_name().and_then(|f| f.to_str()) == Some(name)
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(case) = Case::from_json(dir(), text) else { return };
    let _ = case.error("fuzz");
    let comparisons = [
        Comparison { rel_l2: 0.0, max_abs: 0.0, non_finite: false },
        Comparison { rel_l2: 1e-3, max_abs: 1.0, non_finite: false },
        Comparison { rel_l2: f64::NAN, max_abs: f64::INFINITY, non_finite: true },
    ];
    let mut results = Vec::new();
    for (i, check) in case.checks.iter().enumerate() {
        let c = comparisons[i % comparisons.len()];
        let _ = check.passes(&c);
        if let Some(k) = KnownDeviation::find(&case.kind, check) {
            let _ = k.holds(&c);
        }
        if plain(&check.file) {
            if let Ok(t) = case.tensor(&check.file, &check.tensor) {
                let _ = vidrt::golden::compare(&t, &t);
            }
        }
        let outcome = if i % 4 == 3 { Err("not produced".to_string()) } else { Ok(c) };
        results.push(CheckResult { check: check.clone(), outcome });
    }
    let report = Report { case: case.kind.clone(), results };
    let _ = report.passed();
    let _ = report.triage();
    for r in &case.inputs {
        if plain(&r.file) {
            let _ = case.tensor(&r.file, &r.tensor);
        }
    }
    // The component configs, as `vidrt eval` reads them.
    let config = case.config();
    match case.kind.as_str() {
        "dit" => {
            if let Some(k) = config.get("init_kwargs") {
                let _ = WanDitConfig::from_json(k);
            }
        }
        "vae" => {
            if let Some(k) = config.get("init_kwargs") {
                let _ = WanVaeConfig::from_json(k);
            }
        }
        "text_encoder" => {
            if let Some(c) = config.get("UMT5Config").cloned() {
                if let Ok(c) = Umt5Config::from_value(c) {
                    let _ = c.validate();
                }
            }
        }
        _ => {}
    }
});
