//! Lane kernels: softmax, RMS norms, layer norm and reductions along one axis of a tensor
//! viewed as `[outer, len, inner]` (element `k` of lane `l` is at
//! `(l / inner)·len·inner + l % inner + k·inner`). One workgroup per lane, f32 accumulation.
//! Each thread folds a strided slice of the lane; the workgroup then combines the threads'
//! partials either with a tree in workgroup memory (`log2(wg)` barriers), or, in the
//! subgroup variant, with `subgroupAdd`/`Max`/`Min` inside each subgroup and one partial
//! per subgroup in workgroup memory (one barrier, whatever the subgroup size).
//!
//! Launch: `grid_for(lanes)` workgroups of `wg` threads.
//! Meta: `[lanes, len, inner, eps_bits]`. Outputs: same layout as the input (norms,
//! softmax) or one value per lane (reductions).
//! Tunables: `wg` (a power of two, 32..=1024). Features: subgroups (optional; entry
//! `..._sg_f32`).

use super::{bindings, Elem, Features, WgslError, WgslKernel, LINEAR_INDEX};

/// Which lane computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaneOp {
    Softmax,
    /// `x · rsqrt(mean(x²) + eps) [· w]`.
    RmsMeanSquare {
        weight: bool,
    },
    /// `x / max(‖x‖₂, eps) · sqrt(len) [· w]`.
    RmsL2Clamp {
        weight: bool,
    },
    /// `(x − mean) / sqrt(var + eps) [· w + b]`.
    LayerNorm {
        affine: bool,
    },
    Sum,
    Mean,
    Max,
    Min,
}

impl LaneOp {
    fn variant(self) -> &'static str {
        match self {
            LaneOp::Softmax => "softmax",
            LaneOp::RmsMeanSquare { weight: false } => "rms",
            LaneOp::RmsMeanSquare { weight: true } => "rms_w",
            LaneOp::RmsL2Clamp { weight: false } => "rms_l2",
            LaneOp::RmsL2Clamp { weight: true } => "rms_l2_w",
            LaneOp::LayerNorm { affine: false } => "layer",
            LaneOp::LayerNorm { affine: true } => "layer_affine",
            LaneOp::Sum => "sum",
            LaneOp::Mean => "mean",
            LaneOp::Max => "max",
            LaneOp::Min => "min",
        }
    }

    /// Every lane op (for tests and tables).
    pub const ALL: [LaneOp; 11] = [
        LaneOp::Softmax,
        LaneOp::RmsMeanSquare { weight: false },
        LaneOp::RmsMeanSquare { weight: true },
        LaneOp::RmsL2Clamp { weight: false },
        LaneOp::RmsL2Clamp { weight: true },
        LaneOp::LayerNorm { affine: false },
        LaneOp::LayerNorm { affine: true },
        LaneOp::Sum,
        LaneOp::Mean,
        LaneOp::Max,
        LaneOp::Min,
    ];

    /// The number of extra inputs after x (weights).
    pub fn extra_inputs(self) -> usize {
        match self {
            LaneOp::RmsMeanSquare { weight: true } | LaneOp::RmsL2Clamp { weight: true } => 1,
            LaneOp::LayerNorm { affine: true } => 2,
            _ => 0,
        }
    }
}

/// A lane kernel with `wg` threads per workgroup: entry `norm_<variant>_f32` (or
/// `softmax_lane_f32`, `reduce_<op>_f32`); with `subgroups`, the subgroup variant
/// (`..._sg_f32`, needs [`Features::subgroups`]).
pub fn lane(op: LaneOp, wg: u32, subgroups: bool) -> Result<WgslKernel, WgslError> {
    let sg = if subgroups { "_sg" } else { "" };
    let entry = match op {
        LaneOp::Softmax => format!("softmax_lane{sg}_f32"),
        LaneOp::Sum | LaneOp::Mean | LaneOp::Max | LaneOp::Min => format!("reduce_{}{sg}_f32", op.variant()),
        _ => format!("norm_{}{sg}_f32", op.variant()),
    };
    if !wg.is_power_of_two() || !(32..=1024).contains(&wg) {
        return Err(WgslError::BadParams { kernel: entry, reason: format!("workgroup size {wg}") });
    }
    let mut ins = vec![("x", Elem::F32)];
    match op.extra_inputs() {
        1 => ins.push(("w", Elem::F32)),
        2 => ins.extend([("w", Elem::F32), ("b", Elem::F32)]),
        _ => {}
    }
    let mut s = bindings(&ins, ("out", Elem::F32));
    s += LINEAR_INDEX;
    if subgroups {
        // One partial per subgroup: sized for subgroups of one invocation, since not every
        // driver's minimum subgroup size is WebGPU's 4.
        s += &format!("var<workgroup> red: array<f32, {wg}>;\n");
        for (name, sub, comb) in [
            ("sum", "subgroupAdd", "r + red[i]"),
            ("max", "subgroupMax", "max(r, red[i])"),
            ("min", "subgroupMin", "min(r, red[i])"),
        ] {
            s += &format!(
                "fn wg_{name}(v: f32, sg: vec3<u32>) -> f32 {{
    let p = {sub}(v);
    if (sg.y == 0u) {{ red[sg.x] = p; }}
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < sg.z; i = i + 1u) {{ r = {comb}; }}
    workgroupBarrier();
    return r;
}}
"
            );
        }
    } else {
        s += &format!("var<workgroup> red: array<f32, {wg}>;\n");
        // Tree reductions; every thread of the group calls them (the lane is uniform).
        for (name, comb) in [
            ("sum", "red[li] + red[li + s]"),
            ("max", "max(red[li], red[li + s])"),
            ("min", "min(red[li], red[li + s])"),
        ] {
            s += &format!(
                "fn wg_{name}(v: f32, li: u32) -> f32 {{
    red[li] = v;
    workgroupBarrier();
    for (var s = {half}u; s > 0u; s = s >> 1u) {{
        if (li < s) {{ red[li] = {comb}; }}
        workgroupBarrier();
    }}
    let r = red[0];
    workgroupBarrier();
    return r;
}}
",
                half = wg / 2
            );
        }
    }
    // What the reductions take besides the value: the thread index, or (subgroup id,
    // invocation id within it, number of subgroups).
    let (sg_args, who) = if subgroups {
        (
            ",\n        @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) sinv: u32, \
             @builtin(num_subgroups) nsg: u32",
            "sgi",
        )
    } else {
        ("", "li")
    };
    s += &format!(
        "@compute @workgroup_size({wg})
fn {entry}(@builtin(workgroup_id) wgid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32{sg_args}) {{
    let lane = linear_group(wgid, nwg);
    if (lane >= pm[0]) {{ return; }}
    let len = pm[1];
    let inner = pm[2];
    let eps = bitcast<f32>(pm[3]);
    let base = (lane / inner) * len * inner + lane % inner;
"
    );
    if subgroups {
        s += "    let sgi = vec3<u32>(sid, sinv, nsg);\n";
    }
    let each = |body: &str| {
        format!("    for (var k = li; k < len; k = k + {wg}u) {{\n        let v = x[base + k * inner];\n{body}    }}\n")
    };
    let big = "3.4028235e38";
    match op {
        LaneOp::Softmax => {
            s += &format!("    var m = -{big};\n");
            s += &each("        m = max(m, v);\n");
            s += &format!("    m = wg_max(m, {who});\n    var acc = 0.0;\n");
            s += &each("        acc = acc + exp(v - m);\n");
            s += &format!("    let inv = 1.0 / wg_sum(acc, {who});\n");
            s += &each("        out[base + k * inner] = exp(v - m) * inv;\n");
        }
        LaneOp::RmsMeanSquare { weight } | LaneOp::RmsL2Clamp { weight } => {
            s += "    var acc = 0.0;\n";
            s += &each("        acc = acc + v * v;\n");
            s += &format!("    let ss = wg_sum(acc, {who});\n");
            if matches!(op, LaneOp::RmsMeanSquare { .. }) {
                s += "    let f = 1.0 / sqrt(ss / f32(len) + eps);\n";
            } else {
                s += "    let f = sqrt(f32(len)) / max(sqrt(ss), eps);\n";
            }
            let w = if weight { " * w[k]" } else { "" };
            s += &each(&format!("        out[base + k * inner] = v * f{w};\n"));
        }
        LaneOp::LayerNorm { affine } => {
            s += "    var acc = 0.0;\n";
            s += &each("        acc = acc + v;\n");
            s += &format!("    let mean = wg_sum(acc, {who}) / f32(len);\n    var acc2 = 0.0;\n");
            s += &each("        acc2 = acc2 + (v - mean) * (v - mean);\n");
            s += &format!("    let r = 1.0 / sqrt(wg_sum(acc2, {who}) / f32(len) + eps);\n");
            let wb = if affine { " * w[k] + b[k]" } else { "" };
            s += &each(&format!("        out[base + k * inner] = (v - mean) * r{wb};\n"));
        }
        LaneOp::Sum | LaneOp::Mean => {
            s += "    var acc = 0.0;\n";
            s += &each("        acc = acc + v;\n");
            s += &format!("    var r = wg_sum(acc, {who});\n");
            if op == LaneOp::Mean {
                s += "    r = r / f32(max(len, 1u));\n";
            }
            s += "    if (li == 0u) { out[lane] = r; }\n";
        }
        LaneOp::Max | LaneOp::Min => {
            let (init, f) = if op == LaneOp::Max { (format!("-{big}"), "max") } else { (big.to_string(), "min") };
            s += &format!("    var acc = {init};\n");
            s += &each(&format!("        acc = {f}(acc, v);\n"));
            s += &format!("    let r = wg_{f}(acc, {who});\n    if (li == 0u) {{ out[lane] = r; }}\n");
        }
    }
    s += "}\n";
    Ok(WgslKernel {
        entry,
        source: s,
        workgroup: [wg, 1, 1],
        inputs: ins.iter().map(|x| x.1).collect(),
        output: Elem::F32,
        features: Features { subgroups, ..Features::NONE },
    })
}

/// The meta buffer for [`lane`].
pub fn meta(lanes: usize, len: usize, inner: usize, eps: f64) -> Result<Vec<u32>, WgslError> {
    let mut v = super::elementwise::to_u32(&[lanes, len, inner.max(1)], "lane")?;
    v.push((eps as f32).to_bits());
    Ok(v)
}
