//! Small position-wise kernels: interleaved rotary embedding, embedding gather, sinusoidal
//! timestep embedding. One thread per output element.
//!
//! Launch: 1-D, [`LINEAR_WG`] threads per workgroup, `grid_for(ceil(n / LINEAR_WG))`.
//! Meta:
//! - `rope_interleaved_f32`: `[n, S, H, hd]`; inputs x `[.., S, H, hd]`, cos, sin `[S, hd]`.
//! - `gather_rows_f32`: `[n, V, D]`; inputs table `[V, D]` (32-bit words), ids (i32). An id
//!   outside `0..V` writes NaN (the runtime's output check names the node).
//! - `embed_timestep_f32`: `[n, dim, half, flip, freq_bits[half]]`; input t `[B]`. Angles are
//!   reduced to [-π, π] before `sin`/`cos` (timesteps reach 1000).
//!
//! Tunables: none. Features: none.

use super::elementwise::{to_u32, PRELUDE};
use super::{bindings, Elem, Features, WgslKernel, LINEAR_INDEX, LINEAR_WG};

fn header(entry: &str) -> String {
    format!(
        "@compute @workgroup_size({LINEAR_WG})
fn {entry}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {{
    let i = linear_group(wg, nwg) * {LINEAR_WG}u + li;
    if (i >= pm[0]) {{ return; }}
"
    )
}

fn kernel(entry: &str, ins: &[(&str, Elem)], out: Elem, body: &str, prelude: &str) -> WgslKernel {
    let mut s = bindings(ins, ("out", out));
    s += LINEAR_INDEX;
    s += prelude;
    s += &header(entry);
    s += body;
    s += "}\n";
    WgslKernel {
        entry: entry.to_string(),
        source: s,
        workgroup: [LINEAR_WG, 1, 1],
        inputs: ins.iter().map(|x| x.1).collect(),
        output: out,
        features: Features::NONE,
    }
}

/// Interleaved (GPT-J) rotary embedding.
pub fn rope() -> WgslKernel {
    kernel(
        "rope_interleaved_f32",
        &[("x", Elem::F32), ("ct", Elem::F32), ("st", Elem::F32)],
        Elem::F32,
        "    let s = pm[1];
    let h = pm[2];
    let hd = pm[3];
    let p = i % hd;
    let tok = (i / hd / h) % s;
    let t = tok * hd + p;
    if ((p & 1u) == 0u) {
        out[i] = x[i] * ct[t] - x[i + 1u] * st[t];
    } else {
        out[i] = x[i - 1u] * st[t] + x[i] * ct[t];
    }
",
        "",
    )
}

/// Rope meta.
pub fn rope_meta(n: usize, s: usize, h: usize, hd: usize) -> Result<Vec<u32>, super::WgslError> {
    to_u32(&[n, s, h, hd], "rope_interleaved_f32")
}

/// Embedding gather (rows of 32-bit words) from a window of the table: rows
/// `row0..row0 + rows` of a `[v, d]` table are bound; an output element whose id falls in
/// them is written, others are left to the launches of the other windows (an id outside
/// `0..v` is written as NaN by the window at row 0). Meta: `[n, v, d, row0, rows]`; one
/// window of all rows is the plain gather.
pub fn gather() -> WgslKernel {
    kernel(
        "gather_rows_f32",
        &[("table", Elem::F32), ("ids", Elem::I32)],
        Elem::F32,
        "    let v = pm[1];
    let d = pm[2];
    let row0 = pm[3];
    let id = ids[i / d];
    if (id < 0 || u32(id) >= v) {
        if (row0 == 0u) { out[i] = bitcast<f32>(0x7fc00000u); }
    } else if (u32(id) >= row0 && u32(id) - row0 < pm[4]) {
        out[i] = table[(u32(id) - row0) * d + i % d];
    }
",
        "",
    )
}

/// Gather meta for the window of `rows` table rows from `row0` (see [`gather`]).
pub fn gather_meta(n: usize, v: usize, d: usize, row0: usize, rows: usize) -> Result<Vec<u32>, super::WgslError> {
    to_u32(&[n, v, d, row0, rows], "gather_rows_f32")
}

/// Sinusoidal timestep embedding; frequencies come in the meta buffer (computed on the
/// host exactly as the reference does).
pub fn timestep() -> WgslKernel {
    kernel(
        "embed_timestep_f32",
        &[("t", Elem::F32)],
        Elem::F32,
        "    let dim = pm[1];
    let half = pm[2];
    let flip = pm[3] != 0u;
    let b = i / dim;
    let j = i % dim;
    if (j >= 2u * half) { out[i] = 0.0; return; }
    let first = j < half;
    let jj = select(j - half, j, first);
    let a = t[b] * bitcast<f32>(pm[4u + jj]);
    let use_cos = first == flip;
    out[i] = select(vd_sin(a), vd_cos(a), use_cos);
",
        PRELUDE,
    )
}

/// Timestep meta.
pub fn timestep_meta(n: usize, dim: usize, flip: bool, freqs: &[f32]) -> Result<Vec<u32>, super::WgslError> {
    let mut v = to_u32(&[n, dim, freqs.len(), usize::from(flip)], "embed_timestep_f32")?;
    v.extend(freqs.iter().map(|f| f.to_bits()));
    Ok(v)
}
