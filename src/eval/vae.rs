//! Golden evaluation of the `vae` case: the chunked decode of `decode.safetensors:z` and the
//! chunked encode of `encode.safetensors:video` through [`crate::vae`], with every module
//! activation the case's activation files hold (chunks joined on time).

use vidrt_graph::wan_vae::WanVaeConfig;
use vidrt_graph::WeightStore;
use vidrt_runtime::Backend;

use super::{put, Outputs};
use crate::error::{Error, Result};
use crate::golden::Case;
use crate::vae::{VaeDecoder, VaeEncoder};
use crate::weights::StoreWeights;

const DECODE: &str = "decode.safetensors";
const DECODE_ACTS: &str = "decode_activations.safetensors";
const ENCODE: &str = "encode.safetensors";
const ENCODE_ACTS: &str = "encode_activations.safetensors";

/// The driver's activation name for a golden activation tensor name: `dec.X` → `decoder.X`,
/// `enc.X` → `encoder.X`, top-level names unchanged.
fn activation_name(golden: &str) -> String {
    if let Some(rest) = golden.strip_prefix("dec.") {
        format!("decoder.{rest}")
    } else if let Some(rest) = golden.strip_prefix("enc.") {
        format!("encoder.{rest}")
    } else {
        golden.to_string()
    }
}

pub fn run(case: &Case, backend: &dyn Backend) -> Result<Outputs> {
    let kwargs = case.config().get("init_kwargs").ok_or_else(|| case.error("config has no `init_kwargs`"))?;
    let cfg = WanVaeConfig::from_json(kwargs).map_err(|e| case.error(e.to_string()))?;
    let store = WeightStore::from_file(case.dir.join("weights.safetensors"))?;
    let weights = StoreWeights::new(&store);
    let mut out = Outputs::new();

    let z = case.tensor(DECODE, "z")?;
    let mut dec = VaeDecoder::new(cfg.clone(), backend, &weights)?.with_activations(true);
    let decoded = dec.decode_full(&z, &mut |_, _| {})?;
    put(&mut out, DECODE, "video", decoded.video());
    put(&mut out, DECODE, "video_unclamped", decoded.video_unclamped.clone());
    for name in case.file(DECODE_ACTS)?.names() {
        let t = if name == "dec.out_unclamped" {
            Some(decoded.video_unclamped.clone())
        } else {
            decoded.activations.get(&activation_name(name)).cloned()
        };
        if let Some(t) = t {
            put(&mut out, DECODE_ACTS, name, t);
        }
    }
    drop(decoded);

    let video = case.tensor(ENCODE, "video")?;
    let mut enc = VaeEncoder::new(cfg, backend, &weights)?.with_activations(true);
    let encoded = enc.encode(&video, &mut |_, _| {})?;
    for name in case.file(ENCODE_ACTS)?.names() {
        if let Some(t) = encoded.activations.get(&activation_name(name)) {
            put(&mut out, ENCODE_ACTS, name, t.clone());
        }
    }
    put(&mut out, ENCODE, "moments", encoded.moments);
    put(&mut out, ENCODE, "posterior_mean", encoded.mean);
    put(&mut out, ENCODE, "posterior_logvar", encoded.logvar);
    if out.is_empty() {
        return Err(Error::Other("vae: nothing produced".into()));
    }
    Ok(out)
}
