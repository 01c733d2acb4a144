//! Tiled GEMM with workgroup-memory tiles and per-thread register tiles, shared by two
//! families that differ only in how operands are addressed:
//! - `matmul_tiled_f32`: batched `C[b] = A[b]·B[b] (+ bias)`, A and B read through strides
//!   (transposes and broadcast batch axes are strides), C `[batch, M, N]` contiguous.
//! - `conv3d_igemm_f32`: conv3d as an implicit GEMM: M = Co, N = batch·To·Ho·Wo,
//!   K = Ci·kt·kh·kw; inputs are x then w (binding `a` = x, `b` = w); A is the weight `[Co, K]`, B is gathered from x on the fly
//!   (zero padding by bounds checks), so no im2col buffer is ever materialised.
//!
//! Each workgroup computes a `bm × bn` tile of C with `(bn/tn) × (bm/tm)` threads; each
//! thread holds a `tm × tn` accumulator in registers. K advances by `bk`: the A tile
//! (`bk × bm`) and B tile (`bk × bn`) are staged in workgroup memory.
//! Launch: `[ceil(N/bn), ceil(M/bm), batch]` workgroups; a conv's column tiles (N counts
//! every output position of every frame) fold into z past [`super::MAX_GROUPS_PER_DIM`]:
//! `[ceil(tiles/z), ceil(M/bm), z]`, tile `wg.z · nwg.x + wg.x` ([`conv_grid`]).
//! Meta (matmul): `[M, N, K, batch, a_sm, a_sk, b_sk, b_sn, nb, bdims[4], a_bstr[4], b_bstr[4]]`.
//! Meta (conv): `[M=Co, N, K, Ci, T, H, W, kt, kh, kw, To, Ho, Wo, st, sh, sw, pt, ph, pw]`.
//!
//! Fused epilogue ([`gemm_fused`]): an elementwise program from the compiler (bias already
//! added; e.g. gelu, gate and residual) applied in the store, so the product never goes to
//! memory. Slot 0 is the product; slot k reads input `e{k}` (after a, b and the bias)
//! through its broadcast strides over the output. Its meta, appended to the family's:
//! `[rank, out_dims[rank], strides_e1[rank], ..]` ([`epilogue_meta`]).
//! Tunables: [`GemmParams`]. Features: none (f32; fma accumulation).

use vidrt_ir::ElementwiseExpr;

use super::elementwise::{broadcast_offsets, expr_wgsl, strides_meta, to_u32, PRELUDE, ROUNDING};
use super::{bindings, Elem, Features, WgslError, WgslKernel};

/// Length of the matmul meta (the fused epilogue's meta starts there).
pub const MATMUL_META_LEN: usize = 21;
/// Length of the conv meta.
pub const CONV_META_LEN: usize = 19;

/// The launch grid of a conv's implicit GEMM with `tiles_n` column and `tiles_m` row tiles:
/// column tiles folded into z past the per-dimension limit (see the module docs).
pub fn conv_grid(tiles_n: usize, tiles_m: usize) -> [usize; 3] {
    let max = super::MAX_GROUPS_PER_DIM as usize;
    let z = tiles_n.div_ceil(max).max(1);
    [tiles_n.div_ceil(z), tiles_m, z]
}

/// Tile parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmParams {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

impl GemmParams {
    /// The default point (64×64 tile, 4×4 per thread, 256 threads, 16 KiB... 8 KiB shared).
    pub const DEFAULT: GemmParams = GemmParams { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };

    /// Parameter points the tests validate (and a tuner would search).
    pub const SPACE: [GemmParams; 6] = [
        GemmParams { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
        GemmParams { bm: 32, bn: 32, bk: 16, tm: 2, tn: 2 },
        GemmParams { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
        GemmParams { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
        GemmParams { bm: 16, bn: 16, bk: 16, tm: 1, tn: 1 },
        GemmParams { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
    ];

    /// The text form kept in the tuning database: `bm=64,bn=64,bk=16,tm=4,tn=4`.
    pub fn to_text(&self) -> String {
        format!("bm={},bn={},bk={},tm={},tn={}", self.bm, self.bn, self.bk, self.tm, self.tn)
    }

    /// Parses [`GemmParams::to_text`]; `None` for anything else.
    pub fn from_text(s: &str) -> Option<GemmParams> {
        let mut p = GemmParams { bm: 0, bn: 0, bk: 0, tm: 0, tn: 0 };
        let mut seen = 0;
        for part in s.split(',') {
            let (k, v) = part.split_once('=')?;
            let v: u32 = v.trim().parse().ok()?;
            match k.trim() {
                "bm" => p.bm = v,
                "bn" => p.bn = v,
                "bk" => p.bk = v,
                "tm" => p.tm = v,
                "tn" => p.tn = v,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 5 && p.check("parse").is_ok()).then_some(p)
    }

    /// Threads per workgroup.
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm.max(1)) * (self.bn / self.tn.max(1))
    }

    /// Workgroup memory in bytes.
    pub fn shared_bytes(&self) -> u64 {
        u64::from(self.bk) * u64::from(self.bm + self.bn) * 4
    }

    fn check(&self, kernel: &str) -> Result<(), WgslError> {
        let ok = self.tm > 0
            && self.tn > 0
            && self.bk > 0
            && self.bm.is_multiple_of(self.tm)
            && self.bn.is_multiple_of(self.tn)
            && (1..=256).contains(&self.threads());
        if ok {
            Ok(())
        } else {
            Err(WgslError::BadParams { kernel: kernel.to_string(), reason: format!("{self:?}") })
        }
    }
}

/// Which GEMM family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKind {
    /// Batched matmul through strides.
    MatMul { bias: bool },
    /// Conv3d implicit GEMM.
    Conv3d { bias: bool },
}

/// Generates the kernel for `kind` at parameter point `p`.
pub fn gemm(kind: GemmKind, p: GemmParams) -> Result<WgslKernel, WgslError> {
    gemm_fused(kind, p, None)
}

/// The kernel for `kind` at `p` with `epilogue` (if any) applied in the store: entry
/// `..._epi_f32`, inputs a, b, \[bias\], then one per epilogue slot after the first.
pub fn gemm_fused(kind: GemmKind, p: GemmParams, epilogue: Option<&ElementwiseExpr>) -> Result<WgslKernel, WgslError> {
    let epi = if epilogue.is_some() { "_epi" } else { "" };
    let (entry, bias, meta_len) = match kind {
        GemmKind::MatMul { bias } => {
            (format!("matmul_tiled{}{epi}_f32", if bias { "_bias" } else { "" }), bias, MATMUL_META_LEN)
        }
        GemmKind::Conv3d { bias } => {
            (format!("conv3d_igemm{}{epi}_f32", if bias { "_bias" } else { "" }), bias, CONV_META_LEN)
        }
    };
    p.check(&entry)?;
    let GemmParams { bm, bn, bk, tm, tn } = p;
    let (wx, wy) = (bn / tn, bm / tm);
    let nt = wx * wy;
    let mut names = vec!["a".to_string(), "b".to_string()];
    if bias {
        names.push("bias".into());
    }
    let extra = epilogue.map_or(0, |e| e.num_inputs().saturating_sub(1));
    names.extend((1..=extra).map(|k| format!("e{k}")));
    let ins: Vec<(&str, Elem)> = names.iter().map(|n| (n.as_str(), Elem::F32)).collect();
    let mut s = bindings(&ins, ("c", Elem::F32));
    if let Some(e) = epilogue {
        let body = expr_wgsl(e)?;
        s += PRELUDE;
        s += ROUNDING;
        s += &format!("fn epilogue(o: u32, x0: f32) -> f32 {{\n    let rank = pm[{meta_len}u];\n    var rem = o;\n");
        s += &broadcast_offsets(meta_len + 1, (1..=extra).map(|k| (k, k)));
        for k in 1..=extra {
            s += &format!("    let x{k} = e{k}[o{k}];\n");
        }
        s += &format!("    var r = 0.0;\n    {body}\n    return r;\n}}\n");
    }
    let fin = |o: &str, v: &str| if epilogue.is_some() { format!("epilogue({o}, {v})") } else { v.to_string() };
    s += &format!("var<workgroup> As: array<f32, {}>;\nvar<workgroup> Bs: array<f32, {}>;\n", bk * bm, bk * bn);
    let (prologue, load_a, load_b, store) = match kind {
        GemmKind::MatMul { .. } => (
            "    var aoff = 0u;
    var boff = 0u;
    var rem = wg.z;
    for (var ax = pm[8]; ax > 0u; ax = ax - 1u) {
        let d = pm[8u + ax];
        let idx = rem % d;
        rem = rem / d;
        aoff = aoff + idx * pm[12u + ax];
        boff = boff + idx * pm[16u + ax];
    }
    let a_sm = pm[4];
    let a_sk = pm[5];
    let b_sk = pm[6];
    let b_sn = pm[7];
    let coff = wg.z * m_all * n_all;
"
            .to_string(),
            "a[aoff + gm * a_sm + gk * a_sk]".to_string(),
            "b[boff + gk * b_sk + gn * b_sn]".to_string(),
            format!(
                "let o = coff + gm * n_all + gn;\n                c[o] = {};",
                fin("o", &format!("v{}", if bias { " + bias[gn]" } else { "" }))
            ),
        ),
        GemmKind::Conv3d { .. } => (
            "    let ci_n = pm[3];
    let t_in = pm[4];
    let h_in = pm[5];
    let w_in = pm[6];
    let kt = pm[7];
    let kh = pm[8];
    let kw = pm[9];
    let t_out = pm[10];
    let h_out = pm[11];
    let w_out = pm[12];
    let spatial = t_out * h_out * w_out;
    let kvol = kt * kh * kw;
"
            .to_string(),
            "b[gm * k_all + gk]".to_string(),
            "load_x(gk, gn, ci_n, t_in, h_in, w_in, kt, kh, kw, t_out, h_out, w_out)".to_string(),
            format!(
                "let nb = gn / spatial;\n                let o = (nb * m_all + gm) * spatial + gn % spatial;\n                \
                 c[o] = {};",
                fin("o", &format!("v{}", if bias { " + bias[gm]" } else { "" }))
            ),
        ),
    };
    if matches!(kind, GemmKind::Conv3d { .. }) {
        s += "fn load_x(gk: u32, gn: u32, ci_n: u32, t_in: u32, h_in: u32, w_in: u32, kt: u32, kh: u32, kw: u32,
        t_out: u32, h_out: u32, w_out: u32) -> f32 {
    let kvol = kt * kh * kw;
    let ci = gk / kvol;
    var r = gk % kvol;
    let dt = r / (kh * kw);
    r = r % (kh * kw);
    let dh = r / kw;
    let dw = r % kw;
    let spatial = t_out * h_out * w_out;
    let nb = gn / spatial;
    var sp = gn % spatial;
    let to = sp / (h_out * w_out);
    sp = sp % (h_out * w_out);
    let ho = sp / w_out;
    let wo = sp % w_out;
    let it = i32(to * pm[13] + dt) - i32(pm[16]);
    let ih = i32(ho * pm[14] + dh) - i32(pm[17]);
    let iw = i32(wo * pm[15] + dw) - i32(pm[18]);
    if (it < 0 || ih < 0 || iw < 0 || u32(it) >= t_in || u32(ih) >= h_in || u32(iw) >= w_in) { return 0.0; }
    return a[(((nb * ci_n + ci) * t_in + u32(it)) * h_in + u32(ih)) * w_in + u32(iw)];
}
";
    }
    s += &format!(
        "@compute @workgroup_size({wx}, {wy}, 1)
fn {entry}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let m_all = pm[0];
    let n_all = pm[1];
    let k_all = pm[2];
    let m0 = wg.y * {bm}u;
    let n0 = {n_tile} * {bn}u;
{prologue}    var acc: array<f32, {tmn}>;
    for (var k0 = 0u; k0 < k_all; k0 = k0 + {bk}u) {{
        for (var e = li; e < {abk}u; e = e + {nt}u) {{
            let mm = e / {bk}u;
            let kk = e % {bk}u;
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < m_all && gk < k_all) {{ v = {load_a}; }}
            As[kk * {bm}u + mm] = v;
        }}
        for (var e = li; e < {bbk}u; e = e + {nt}u) {{
            let kk = e / {bn}u;
            let nn = e % {bn}u;
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if (gn < n_all && gk < k_all) {{ v = {load_b}; }}
            Bs[kk * {bn}u + nn] = v;
        }}
        workgroupBarrier();
        for (var kk = 0u; kk < {bk}u; kk = kk + 1u) {{
            var ra: array<f32, {tm}>;
            var rb: array<f32, {tn}>;
            for (var i = 0u; i < {tm}u; i = i + 1u) {{ ra[i] = As[kk * {bm}u + lid.y + i * {wy}u]; }}
            for (var j = 0u; j < {tn}u; j = j + 1u) {{ rb[j] = Bs[kk * {bn}u + lid.x + j * {wx}u]; }}
            for (var i = 0u; i < {tm}u; i = i + 1u) {{
                for (var j = 0u; j < {tn}u; j = j + 1u) {{
                    acc[i * {tn}u + j] = fma(ra[i], rb[j], acc[i * {tn}u + j]);
                }}
            }}
        }}
        workgroupBarrier();
    }}
    for (var i = 0u; i < {tm}u; i = i + 1u) {{
        for (var j = 0u; j < {tn}u; j = j + 1u) {{
            let gm = m0 + lid.y + i * {wy}u;
            let gn = n0 + lid.x + j * {wx}u;
            if (gm < m_all && gn < n_all) {{
                let v = acc[i * {tn}u + j];
                {store}
            }}
        }}
    }}
}}
",
        tmn = tm * tn,
        abk = bm * bk,
        bbk = bn * bk,
        // A conv's column tiles continue in z past the 65535 workgroups of x (its z is free).
        n_tile = if matches!(kind, GemmKind::Conv3d { .. }) { "(wg.z * nwg.x + wg.x)" } else { "wg.x" },
    );
    Ok(WgslKernel {
        entry,
        source: s,
        workgroup: [wx, wy, 1],
        inputs: ins.iter().map(|x| x.1).collect(),
        output: Elem::F32,
        features: Features::NONE,
    })
}

/// Matmul meta. `batch_dims` (≤ 4 axes, outermost first) with each operand's batch strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul_meta(
    m: usize,
    n: usize,
    k: usize,
    a_strides: [usize; 2],
    b_strides: [usize; 2],
    batch_dims: &[usize],
    a_batch: &[usize],
    b_batch: &[usize],
) -> Result<Vec<u32>, WgslError> {
    if batch_dims.len() > 4 || a_batch.len() != batch_dims.len() || b_batch.len() != batch_dims.len() {
        return Err(WgslError::BadParams {
            kernel: "matmul_tiled_f32".into(),
            reason: "more than 4 batch axes".into(),
        });
    }
    let batch: usize = batch_dims.iter().product();
    let mut v = vec![m, n, k, batch, a_strides[0], a_strides[1], b_strides[0], b_strides[1], batch_dims.len()];
    let pad = |x: &[usize]| {
        let mut p = x.to_vec();
        p.resize(4, 0);
        p
    };
    v.extend(pad(batch_dims));
    v.extend(pad(a_batch));
    v.extend(pad(b_batch));
    to_u32(&v, "matmul_tiled_f32")
}

/// The fused epilogue's meta, appended to the family's: output dims and each extra input's
/// broadcast strides over them.
pub fn epilogue_meta(out_dims: &[usize], strides: &[Vec<usize>]) -> Result<Vec<u32>, WgslError> {
    strides_meta(out_dims, strides, "gemm epilogue")
}

/// Conv meta: x `[N, Ci, T, H, W]`, weight `[Co, Ci, kt, kh, kw]`, output spatial dims.
pub fn conv_meta(
    x: [usize; 5],
    w: [usize; 5],
    out_spatial: [usize; 3],
    stride: [usize; 3],
    pad_before: [usize; 3],
) -> Result<Vec<u32>, WgslError> {
    let [n, ci, t, h, wd] = x;
    let [co, _, kt, kh, kw] = w;
    let ngemm = n * out_spatial.iter().product::<usize>();
    let kall = ci * kt * kh * kw;
    let mut v = vec![co, ngemm, kall, ci, t, h, wd, kt, kh, kw];
    v.extend(out_spatial);
    v.extend(stride);
    v.extend(pad_before);
    to_u32(&v, "conv3d_igemm_f32")
}
