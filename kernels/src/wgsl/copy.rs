//! Strided copy: the data-movement kernel behind permute, slice, concat (one launch per
//! part) and nearest upsampling by integer factors (broadcast strides). 32-bit elements are
//! moved as raw words, so one kernel serves f32 and i32 tensors; f16 tensors have their own
//! (`copy_strided_f16`), and `copy_strided_f16_f32` widens f16 into f32 words.
//!
//! For linear `i < n`, decomposed over `dims`: `dst[dst_base + Σ idx·dst_stride] =
//! src[src_base + Σ idx·src_stride]`.
//! Launch: 1-D, [`LINEAR_WG`] threads per workgroup, `grid_for(ceil(n / LINEAR_WG))`.
//! Meta: `[n, rank, src_base, dst_base, dims[rank], src_strides[rank], dst_strides[rank]]`.
//! Tunables: none. Features: f16 for the f16 variants.

use super::elementwise::to_u32;
use super::{bindings, Elem, Features, WgslError, WgslKernel, LINEAR_INDEX, LINEAR_WG};

/// The strided copy of 32-bit words, `copy_strided_u32`.
pub fn strided() -> WgslKernel {
    build("copy_strided_u32", Elem::U32, Elem::U32, "src[so]")
}

/// A strided copy from `src` to `dst` elements: u32→u32, f16→f16, or f16→f32 (widening).
pub fn strided_typed(src: Elem, dst: Elem) -> Result<WgslKernel, WgslError> {
    let (entry, expr) = match (src, dst) {
        (Elem::U32, Elem::U32) => ("copy_strided_u32", "src[so]"),
        (Elem::F16, Elem::F16) => ("copy_strided_f16", "src[so]"),
        (Elem::F16, Elem::F32) => ("copy_strided_f16_f32", "f32(src[so])"),
        _ => {
            return Err(WgslError::BadParams {
                kernel: "copy_strided".into(),
                reason: format!("no copy from {src:?} to {dst:?}"),
            })
        }
    };
    Ok(build(entry, src, dst, expr))
}

fn build(entry: &str, src: Elem, dst: Elem, expr: &str) -> WgslKernel {
    let mut s = bindings(&[("src", src)], ("dst", dst));
    s += LINEAR_INDEX;
    s += &format!(
        "@compute @workgroup_size({LINEAR_WG})
fn {entry}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {{
    let i = linear_group(wg, nwg) * {LINEAR_WG}u + li;
    if (i >= pm[0]) {{ return; }}
    let rank = pm[1];
    var rem = i;
    var so = pm[2];
    var d_o = pm[3];
    for (var a = rank; a > 0u; a = a - 1u) {{
        let ax = a - 1u;
        let d = pm[4u + ax];
        let idx = rem % d;
        rem = rem / d;
        so = so + idx * pm[4u + rank + ax];
        d_o = d_o + idx * pm[4u + 2u * rank + ax];
    }}
    dst[d_o] = {expr};
}}
"
    );
    WgslKernel {
        entry: entry.to_string(),
        source: s,
        workgroup: [LINEAR_WG, 1, 1],
        inputs: vec![src],
        output: dst,
        features: Features { f16: src == Elem::F16, ..Features::NONE },
    }
}

/// The meta buffer for [`strided`].
pub fn meta(
    dims: &[usize],
    src_base: usize,
    src_strides: &[usize],
    dst_base: usize,
    dst_strides: &[usize],
) -> Result<Vec<u32>, WgslError> {
    if src_strides.len() != dims.len() || dst_strides.len() != dims.len() {
        return Err(WgslError::BadParams { kernel: "copy_strided_u32".into(), reason: "stride rank mismatch".into() });
    }
    let n: usize = dims.iter().product();
    let mut v = vec![n, dims.len(), src_base, dst_base];
    v.extend_from_slice(dims);
    v.extend_from_slice(src_strides);
    v.extend_from_slice(dst_strides);
    to_u32(&v, "copy_strided_u32")
}
