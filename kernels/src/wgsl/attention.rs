//! Flash-style attention in BSHD layout: the score matrix is never materialised. A
//! workgroup owns `bq` query rows of one (batch, head), one row per thread (q and the
//! `dv`-wide accumulator in registers); keys and values stream through workgroup memory in
//! tiles of `bk`, with an online softmax rescaled once per tile.
//!
//! Inputs: q `[B, Sq, H, D]`, k `[B, Sk, H, D]`, v `[B, Sk, H, Dv]`, then an additive bias
//! (read through 4 broadcast strides over `[B, H, Sq, Sk]`) if `bias`, then a key mask
//! `[B, Sk]` (non-zero keeps; f32 or i32) if `mask`. A row whose keys are all masked is 0.
//! Launch: `[ceil(Sq/bq), B·H, 1]` workgroups of `bq` threads.
//! Meta: `[B, Sq, Sk, H, scale_bits, bias_str[4]]`.
//! Tunables: [`AttnParams`] (`bq`, `bk`); `d`, `dv` are generation-time constants.
//! Features: none (f32).

use super::elementwise::to_u32;
use super::{bindings, Elem, Features, WgslError, WgslKernel};

/// Generation parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnParams {
    /// Query rows (threads) per workgroup.
    pub bq: u32,
    /// Keys per tile.
    pub bk: u32,
    /// Head dim of q and k.
    pub d: u32,
    /// Head dim of v.
    pub dv: u32,
    pub bias: bool,
    /// `Some(elem)` when there is a mask, of that element type.
    pub mask: Option<Elem>,
}

impl AttnParams {
    /// Workgroup memory in bytes.
    pub fn shared_bytes(&self) -> u64 {
        u64::from(self.bk) * u64::from(self.d + self.dv) * 4
    }

    /// The tunable points (`bq`, `bk`) for a problem's fixed facts (head dims, bias, mask).
    pub fn space(d: u32, dv: u32, bias: bool, mask: Option<Elem>) -> Vec<AttnParams> {
        let mut v = Vec::new();
        for bq in [32, 64, 128] {
            for bk in [8, 16, 32, 64] {
                v.push(AttnParams { bq, bk, d, dv, bias, mask });
            }
        }
        v
    }

    /// The tunables' text form kept in the tuning database: `bq=64,bk=32`.
    pub fn to_text(&self) -> String {
        format!("bq={},bk={}", self.bq, self.bk)
    }

    /// This problem's facts with the tunables of `s` ([`AttnParams::to_text`]).
    pub fn with_text(&self, s: &str) -> Option<AttnParams> {
        let (mut bq, mut bk) = (None, None);
        for part in s.split(',') {
            let (k, v) = part.split_once('=')?;
            let v: u32 = v.trim().parse().ok()?;
            match k.trim() {
                "bq" => bq = Some(v),
                "bk" => bk = Some(v),
                _ => return None,
            }
        }
        let (bq, bk) = (bq?, bk?);
        ((1..=256).contains(&bq) && bk > 0).then_some(AttnParams { bq, bk, ..*self })
    }
}

/// Generates the attention kernel for `p`.
pub fn attention(p: AttnParams) -> Result<WgslKernel, WgslError> {
    let AttnParams { bq, bk, d, dv, bias, mask } = p;
    let entry = format!(
        "attention_flash{}{}_f32",
        if bias { "_bias" } else { "" },
        match mask {
            Some(Elem::I32) => "_maski",
            Some(_) => "_mask",
            None => "",
        }
    );
    if !(1..=256).contains(&bq) || bk == 0 || d == 0 || dv == 0 || d > 512 || dv > 512 || mask == Some(Elem::U32) {
        return Err(WgslError::BadParams { kernel: entry, reason: format!("{p:?}") });
    }
    let mut ins = vec![("q", Elem::F32), ("k", Elem::F32), ("v", Elem::F32)];
    if bias {
        ins.push(("bias", Elem::F32));
    }
    if let Some(e) = mask {
        ins.push(("mask", e));
    }
    let mut s = bindings(&ins, ("out", Elem::F32));
    s += &format!("var<workgroup> Ks: array<f32, {}>;\nvar<workgroup> Vs: array<f32, {}>;\n", bk * d, bk * dv);
    let bias_term =
        if bias { "        s = s + bias[bb * pm[5] + hh * pm[6] + qi * pm[7] + (k0 + j) * pm[8]];\n" } else { "" };
    let mask_term = match mask {
        Some(Elem::I32) => "        if (mask[bb * sk + k0 + j] == 0) { keep = false; }\n",
        Some(_) => "        if (mask[bb * sk + k0 + j] == 0.0) { keep = false; }\n",
        None => "",
    };
    s += &format!(
        "@compute @workgroup_size({bq})
fn {entry}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let sq = pm[1];
    let sk = pm[2];
    let nh = pm[3];
    let scale = bitcast<f32>(pm[4]);
    let bb = wg.y / nh;
    let hh = wg.y % nh;
    let qi = wg.x * {bq}u + li;
    let valid = qi < sq;
    var qv: array<f32, {d}>;
    var acc: array<f32, {dv}>;
    var sc: array<f32, {bk}>;
    if (valid) {{
        let qo = ((bb * sq + qi) * nh + hh) * {d}u;
        for (var c = 0u; c < {d}u; c = c + 1u) {{ qv[c] = q[qo + c]; }}
    }}
    var m = -3.4028235e38;
    var l = 0.0;
    for (var k0 = 0u; k0 < sk; k0 = k0 + {bk}u) {{
        for (var e = li; e < {bkd}u; e = e + {bq}u) {{
            let j = e / {d}u;
            var x = 0.0;
            if (k0 + j < sk) {{ x = k[((bb * sk + k0 + j) * nh + hh) * {d}u + e % {d}u]; }}
            Ks[e] = x;
        }}
        for (var e = li; e < {bkdv}u; e = e + {bq}u) {{
            let j = e / {dv}u;
            var x = 0.0;
            if (k0 + j < sk) {{ x = v[((bb * sk + k0 + j) * nh + hh) * {dv}u + e % {dv}u]; }}
            Vs[e] = x;
        }}
        workgroupBarrier();
        if (valid) {{
            let kn = min({bk}u, sk - k0);
            var tmax = -3.4028235e38;
            var any = false;
            for (var j = 0u; j < kn; j = j + 1u) {{
                var s = 0.0;
                for (var c = 0u; c < {d}u; c = c + 1u) {{ s = fma(qv[c], Ks[j * {d}u + c], s); }}
                s = s * scale;
{bias_term}                var keep = true;
{mask_term}                if (keep) {{
                    sc[j] = s;
                    tmax = max(tmax, s);
                    any = true;
                }} else {{
                    sc[j] = -3.4028235e38;
                }}
            }}
            if (any) {{
                let mn = max(m, tmax);
                let corr = exp(m - mn);
                l = l * corr;
                for (var c = 0u; c < {dv}u; c = c + 1u) {{ acc[c] = acc[c] * corr; }}
                for (var j = 0u; j < kn; j = j + 1u) {{
                    if (sc[j] > -3.4028235e38) {{
                        let pj = exp(sc[j] - mn);
                        l = l + pj;
                        for (var c = 0u; c < {dv}u; c = c + 1u) {{ acc[c] = fma(pj, Vs[j * {dv}u + c], acc[c]); }}
                    }}
                }}
                m = mn;
            }}
        }}
        workgroupBarrier();
    }}
    if (valid) {{
        let oo = ((bb * sq + qi) * nh + hh) * {dv}u;
        var inv = 0.0;
        if (l > 0.0) {{ inv = 1.0 / l; }}
        for (var c = 0u; c < {dv}u; c = c + 1u) {{ out[oo + c] = acc[c] * inv; }}
    }}
}}
",
        bkd = bk * d,
        bkdv = bk * dv,
    );
    Ok(WgslKernel {
        entry,
        source: s,
        workgroup: [bq, 1, 1],
        inputs: ins.iter().map(|x| x.1).collect(),
        output: Elem::F32,
        features: Features::NONE,
    })
}

/// Attention meta.
pub fn meta(
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    scale: f64,
    bias_strides: [usize; 4],
) -> Result<Vec<u32>, WgslError> {
    let mut v = to_u32(&[b, sq, sk, h], "attention_flash_f32")?;
    v.push((scale as f32).to_bits());
    v.extend(to_u32(&bias_strides, "attention_flash_f32")?);
    Ok(v)
}
