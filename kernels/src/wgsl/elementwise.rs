//! Elementwise kernels with numpy broadcasting: one thread per output element; every input
//! is read through its own broadcast strides. The expression is generated from the IR (a
//! unary function, a binary function, modulate, a cast, or a fused chain over `x0..xn`).
//!
//! Launch: 1-D, [`LINEAR_WG`] threads per workgroup, `grid_for(ceil(n / LINEAR_WG))`.
//! Meta: `[n, rank, dims[rank], strides_in0[rank], strides_in1[rank], ..]` (element strides,
//! 0 on broadcast axes). Tunables: none (the workgroup size is fixed at 256).
//! Features: none (f32 or i32 arithmetic).

use vidrt_ir::{BinaryOp, DType, ElementwiseExpr, ExprStep, UnaryOp};

use super::{bindings, f32_lit, Elem, Features, WgslError, WgslKernel, LINEAR_INDEX, LINEAR_WG};

/// Helper functions the generated expressions may call.
pub const PRELUDE: &str = r#"
fn vd_erf(x: f32) -> f32 {
    // Abramowitz & Stegun 7.1.26 refined: max abs error ~1.2e-7 (Numerical Recipes erfc).
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}
fn vd_tanh(x: f32) -> f32 {
    if (abs(x) < 0.55) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333333 + x2 * (0.13333333 + x2 * (-0.05396825 + x2 * (0.02186949
            + x2 * (-0.00886324 + x2 * 0.00359212))))));
    }
    let t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}
fn vd_pow(a: f32, b: f32) -> f32 {
    if (a >= 0.0) { return pow(a, b); }
    if (b != floor(b)) { return bitcast<f32>(0x7fc00000u); }
    let r = pow(-a, b);
    let odd = abs(b) < 16777216.0 && (i32(abs(b)) & 1) == 1;
    return select(r, -r, odd);
}
fn vd_ipow(a: i32, b: i32) -> i32 {
    var r = 1;
    for (var i = 0; i < b; i = i + 1) {
        let p = f32(r) * f32(a);
        if (p > 2147483647.0) { return 2147483647; }
        if (p < -2147483648.0) { return -2147483647 - 1; }
        r = r * a;
        if (r == 0 || r == 1) { break; }
    }
    return r;
}
fn vd_max(a: f32, b: f32) -> f32 {
    if (a != a) { return b; }
    if (b != b) { return a; }
    return max(a, b);
}
fn vd_min(a: f32, b: f32) -> f32 {
    if (a != a) { return b; }
    if (b != b) { return a; }
    return min(a, b);
}
fn vd_sin(a: f32) -> f32 {
    // Cody-Waite reduction to [-pi, pi] (6.28125 has 8 significant bits: k*P1 is exact).
    let k = round(a * 0.15915494309189535);
    let r = (a - k * 6.28125) - k * 0.0019353071795864769;
    return sin(r);
}
fn vd_cos(a: f32) -> f32 {
    let k = round(a * 0.15915494309189535);
    let r = (a - k * 6.28125) - k * 0.0019353071795864769;
    return cos(r);
}
"#;

/// The WGSL expression of `op` applied to the f32 expression `x`.
pub fn unary_expr(op: UnaryOp, x: &str) -> String {
    match op {
        UnaryOp::Neg => format!("(-({x}))"),
        UnaryOp::Abs => format!("abs({x})"),
        UnaryOp::Exp => format!("exp({x})"),
        UnaryOp::Log => format!("log({x})"),
        UnaryOp::Sqrt => format!("sqrt({x})"),
        UnaryOp::Rsqrt => format!("(1.0 / sqrt({x}))"),
        UnaryOp::Recip => format!("(1.0 / ({x}))"),
        UnaryOp::Square => format!("(({x}) * ({x}))"),
        UnaryOp::Tanh => format!("vd_tanh({x})"),
        UnaryOp::Sigmoid => format!("(1.0 / (1.0 + exp(-({x}))))"),
        UnaryOp::Silu => format!("(({x}) / (1.0 + exp(-({x}))))"),
        UnaryOp::GeluTanh => {
            format!("(0.5 * ({x}) * (1.0 + vd_tanh(0.7978846 * (({x}) + 0.044715 * ({x}) * ({x}) * ({x})))))")
        }
        UnaryOp::GeluErf => format!("(0.5 * ({x}) * (1.0 + vd_erf(({x}) * 0.70710678)))"),
        UnaryOp::Sin => format!("vd_sin({x})"),
        UnaryOp::Cos => format!("vd_cos({x})"),
        UnaryOp::AddScalar(c) => format!("(({x}) + {})", f32_lit(c)),
        UnaryOp::MulScalar(c) => format!("(({x}) * {})", f32_lit(c)),
        UnaryOp::Clamp(lo, hi) => format!("vd_min(vd_max({x}, {}), {})", f32_lit(lo), f32_lit(hi)),
    }
}

/// The WGSL expression of `op` on two f32 expressions.
pub fn binary_expr(op: BinaryOp, a: &str, b: &str) -> String {
    match op {
        BinaryOp::Add => format!("(({a}) + ({b}))"),
        BinaryOp::Sub => format!("(({a}) - ({b}))"),
        BinaryOp::Mul => format!("(({a}) * ({b}))"),
        BinaryOp::Div => format!("(({a}) / ({b}))"),
        BinaryOp::Max => format!("vd_max({a}, {b})"),
        BinaryOp::Min => format!("vd_min({a}, {b})"),
        BinaryOp::Pow => format!("vd_pow({a}, {b})"),
    }
}

/// The WGSL expression of `op` on two i32 expressions (wrapping; division by zero gives
/// WGSL's defined result, the dividend; pow saturates, a negative exponent counts as 0).
/// Always `Some` (kept optional for ops a future integer path may lack).
pub fn binary_expr_int(op: BinaryOp, a: &str, b: &str) -> Option<String> {
    Some(match op {
        BinaryOp::Add => format!("(({a}) + ({b}))"),
        BinaryOp::Sub => format!("(({a}) - ({b}))"),
        BinaryOp::Mul => format!("(({a}) * ({b}))"),
        BinaryOp::Div => format!("(({a}) / ({b}))"),
        BinaryOp::Max => format!("max({a}, {b})"),
        BinaryOp::Min => format!("min({a}, {b})"),
        BinaryOp::Pow => format!("vd_ipow({a}, {b})"),
    })
}

/// An elementwise kernel computing `expr` (over `x0..xn` of the given element types) into
/// an `output` tensor. `variant` names it: the entry is `elementwise_<variant>_<dtype>`.
pub fn elementwise(variant: &str, inputs: &[Elem], output: Elem, expr: &str) -> Result<WgslKernel, WgslError> {
    let entry = format!("elementwise_{variant}_{}", output.wgsl());
    if inputs.is_empty() || !variant.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(WgslError::BadParams { kernel: entry, reason: "needs an input and a plain variant name".into() });
    }
    let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
    let decl: Vec<(&str, Elem)> = names.iter().map(String::as_str).zip(inputs.iter().copied()).collect();
    let mut s = String::new();
    s += &bindings(&decl, ("out", output));
    s += LINEAR_INDEX;
    s += PRELUDE;
    s += &format!(
        "@compute @workgroup_size({LINEAR_WG})\nfn {entry}(@builtin(workgroup_id) wg: vec3<u32>, \
         @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{\n"
    );
    s += &format!("    let i = linear_group(wg, nwg) * {LINEAR_WG}u + li;\n");
    s += "    if (i >= pm[0]) { return; }\n    let rank = pm[1];\n    var rem = i;\n";
    s += &broadcast_offsets(2, (0..inputs.len()).map(|k| (k, k + 1)));
    for k in 0..inputs.len() {
        s += &format!("    let x{k} = in{k}[o{k}];\n");
    }
    s += &format!("    out[i] = {expr};\n}}\n");
    s += ROUNDING;
    Ok(WgslKernel {
        entry,
        source: s,
        workgroup: [LINEAR_WG, 1, 1],
        inputs: inputs.to_vec(),
        output,
        features: Features::NONE,
    })
}

/// The f32 WGSL of a fused elementwise program: a block of `let` statements and the name of
/// the result. Slot `k` reads `x{k}`; casts to f16/bf16 round in place.
pub fn expr_wgsl(e: &ElementwiseExpr) -> Result<String, WgslError> {
    e.check().map_err(|reason| WgslError::BadParams { kernel: "elementwise_fused".into(), reason })?;
    let mut body = String::from("{\n");
    for (i, st) in e.steps.iter().enumerate() {
        let v = match *st {
            ExprStep::Input(k) => format!("x{k}"),
            ExprStep::Unary(u, a) => unary_expr(u, &format!("s{a}")),
            ExprStep::Binary(b, a, c) => binary_expr(b, &format!("s{a}"), &format!("s{c}")),
            ExprStep::Cast(DType::BF16, a) => format!("vd_round_bf16(s{a})"),
            ExprStep::Cast(DType::F16, a) => format!("vd_round_f16(s{a})"),
            ExprStep::Cast(_, a) => format!("s{a}"),
        };
        body += &format!("        let s{i} = {v};\n");
    }
    body += &format!("        r = s{};\n    }}", e.steps.len() - 1);
    Ok(body)
}

/// An elementwise kernel running a fused program: `elementwise_fused_f32`. Its inputs are
/// the program's slots (f32); `ROUNDING` supplies the cast helpers.
pub fn fused(e: &ElementwiseExpr) -> Result<WgslKernel, WgslError> {
    let body = expr_wgsl(e)?;
    let n = e.num_inputs();
    let mut k = elementwise("fused", &vec![Elem::F32; n], Elem::F32, "r")?;
    k.source = k.source.replace("    out[i] = r;\n", &format!("    var r = 0.0;\n    {body}\n    out[i] = r;\n"));
    Ok(k)
}

/// WGSL (inside a function with `rank` and `var rem`, the linear output index, in scope)
/// that decomposes `rem` over the output dims at `pm[dims_at + ax]` and sums each slot's
/// broadcast offset: for every `(k, block)`, `o{k}` reads its strides at
/// `pm[dims_at + block·rank + ax]`. The layout [`strides_meta`] writes.
pub(crate) fn broadcast_offsets(dims_at: usize, slots: impl Iterator<Item = (usize, usize)> + Clone) -> String {
    let mut s = String::new();
    for (k, _) in slots.clone() {
        s += &format!("    var o{k} = 0u;\n");
    }
    s += &format!(
        "    for (var a = rank; a > 0u; a = a - 1u) {{\n        let ax = a - 1u;\n        let d = pm[{dims_at}u + ax];\n"
    );
    s += "        let idx = rem % d;\n        rem = rem / d;\n";
    for (k, block) in slots {
        s += &format!("        o{k} = o{k} + idx * pm[{dims_at}u + {block}u * rank + ax];\n");
    }
    s += "    }\n";
    s
}

/// `[rank, out_dims[rank], strides_0[rank], ..]`: the meta [`broadcast_offsets`] reads.
pub(crate) fn strides_meta(out_dims: &[usize], strides: &[Vec<usize>], kernel: &str) -> Result<Vec<u32>, WgslError> {
    let mut v = vec![out_dims.len()];
    v.extend_from_slice(out_dims);
    for st in strides {
        if st.len() != out_dims.len() {
            return Err(WgslError::BadParams { kernel: kernel.into(), reason: "stride rank mismatch".into() });
        }
        v.extend_from_slice(st);
    }
    to_u32(&v, kernel)
}

/// The meta buffer for [`elementwise`]: `[n]`, then output dims and each input's broadcast
/// strides (`strides_meta`).
pub fn meta(out_dims: &[usize], in_strides: &[Vec<usize>]) -> Result<Vec<u32>, WgslError> {
    let n: usize = out_dims.iter().product();
    let mut v = to_u32(&[n], "elementwise")?;
    v.extend(strides_meta(out_dims, in_strides, "elementwise")?);
    Ok(v)
}

/// Converts sizes to u32, failing on overflow (the runtime splits or refuses such work).
pub fn to_u32(v: &[usize], kernel: &str) -> Result<Vec<u32>, WgslError> {
    v.iter()
        .map(|&x| {
            u32::try_from(x).map_err(|_| WgslError::BadParams {
                kernel: kernel.to_string(),
                reason: format!("size {x} does not fit in 32 bits"),
            })
        })
        .collect()
}

/// WGSL functions rounding an f32 to the nearest bf16 / f16 value (ties to even), kept in
/// f32: how f16/bf16 storage is emulated in 32-bit words.
pub const ROUNDING: &str = r#"
fn vd_round_bf16(x: f32) -> f32 {
    if (x != x) { return x; }
    let b = bitcast<u32>(x);
    return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}
fn vd_round_f16(x: f32) -> f32 {
    if (x != x) { return x; }
    let a = abs(x);
    var r: f32;
    if (a < 6.103515625e-05) {
        r = round(a * 16777216.0) / 16777216.0;
    } else {
        let b = bitcast<u32>(a);
        r = bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
    }
    if (r > 65504.0) { r = bitcast<f32>(0x7f800000u); }
    return select(r, -r, x < 0.0);
}
"#;

/// A kernel rounding f32 words to `dtype` (`"bf16"` or `"f16"`): `elementwise_round_<dtype>`.
pub fn round_to(dtype: &str) -> Result<WgslKernel, WgslError> {
    if dtype != "bf16" && dtype != "f16" {
        return Err(WgslError::BadParams { kernel: "elementwise_round".into(), reason: dtype.to_string() });
    }
    let mut k = elementwise("round", &[Elem::F32], Elem::F32, &format!("vd_round_{dtype}(x0)"))?;
    k.entry = format!("elementwise_round_{dtype}");
    k.source = k.source.replace("elementwise_round_f32", &k.entry);
    Ok(k)
}
