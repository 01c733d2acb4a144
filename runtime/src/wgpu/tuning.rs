//! The keys of the wgpu backend's tunable problems (the choice itself, forced point, database
//! winner or heuristic, is [`crate::tune::Tuning`]'s). Tunable families: `matmul_tiled_f32`,
//! `conv3d_igemm_f32` ([`GemmParams::SPACE`]) and `attention_flash_f32` ([`AttnParams::space`]).

use vidrt_kernels::wgsl::attention::{self, AttnParams};
use vidrt_kernels::wgsl::f16::retype;
use vidrt_kernels::wgsl::gemm::{self, GemmKind, GemmParams};
use vidrt_kernels::wgsl::{Elem, WgslKernel};

use crate::tune::{alignment, bucket, TuneKey, Tuning};

/// The text a candidate runs as under operand storage `storage`: with f16 storage, retyped
/// (every f32 binding f16), so that an edit of the retyping re-tunes the f16 keys too.
fn as_stored(k: WgslKernel, storage: &str) -> String {
    if !storage.contains("f16") {
        return k.source;
    }
    let ins: Vec<bool> = k.inputs.iter().map(|&e| e == Elem::F32).collect();
    match retype(&k, &ins, k.output == Elem::F32) {
        Ok(r) => r.source,
        Err(_) => k.source,
    }
}

/// The wgpu families' keys.
impl Tuning {
    /// The key and candidate texts of a GEMM problem (`[batch, M, N, K]`) whose operands are
    /// stored as `storage` (e.g. `f16,f16`; the kernels accumulate in f32).
    pub fn gemm_key(&self, kind: GemmKind, dims: [usize; 4], layout: &str, storage: &str) -> (TuneKey, Vec<String>) {
        let family = match kind {
            GemmKind::MatMul { .. } => "matmul_tiled_f32",
            GemmKind::Conv3d { .. } => "conv3d_igemm_f32",
        };
        let variant = format!("{kind:?}");
        let kernel_hash = self.hash(&format!("{variant} {storage}"), || {
            GemmParams::SPACE.iter().filter_map(|p| gemm::gemm(kind, *p).ok()).map(|k| as_stored(k, storage)).collect()
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
        let kernel_hash = self.hash(&format!("{variant} {storage}"), || {
            space.iter().filter_map(|p| attention::attention(*p).ok()).map(|k| as_stored(k, storage)).collect()
        });
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
