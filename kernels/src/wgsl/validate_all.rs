//! Every generated shader at every parameter point validates with naga.

use vidrt_ir::{BinaryOp, UnaryOp};

use super::attention::{attention, AttnParams};
use super::elementwise::{binary_expr, binary_expr_int, elementwise, unary_expr};
use super::gemm::{gemm, GemmKind, GemmParams};
use super::lane::{lane, LaneOp};
use super::{copy, misc, validate, Elem, WgslKernel};

fn every_kernel() -> Vec<WgslKernel> {
    let mut v = Vec::new();
    for u in UnaryOp::ALL {
        v.push(elementwise(u.name(), &[Elem::F32], Elem::F32, &unary_expr(u, "x0")).expect("unary"));
    }
    for b in BinaryOp::ALL {
        v.push(elementwise(b.name(), &[Elem::F32, Elem::F32], Elem::F32, &binary_expr(b, "x0", "x1")).expect("bin"));
        if let Some(e) = binary_expr_int(b, "x0", "x1") {
            v.push(elementwise(b.name(), &[Elem::I32, Elem::I32], Elem::I32, &e).expect("int"));
        }
    }
    v.push(elementwise("modulate", &[Elem::F32; 3], Elem::F32, "x0 * (1.0 + x1) + x2").expect("modulate"));
    v.push(elementwise("cast", &[Elem::I32], Elem::F32, "f32(x0)").expect("cast"));
    v.push(elementwise("cast", &[Elem::F32], Elem::I32, "i32(x0)").expect("cast"));
    v.push(copy::strided());
    for text in [
        "in(0);in(1);mul(0,1);in(2);add(3,2)",
        "in(0);silu(0);cast[bf16](1);cast[f32](2);square(3)",
        "in(0);exp(0);cast[f16](1)",
    ] {
        let e = vidrt_ir::ElementwiseExpr::parse(text).expect("expr");
        v.push(super::elementwise::fused(&e).expect("fused"));
    }
    v.push(super::elementwise::round_to("bf16").expect("round"));
    v.push(super::elementwise::round_to("f16").expect("round"));
    for wg in [32, 64, 128, 256, 512, 1024] {
        for op in LaneOp::ALL {
            v.push(lane(op, wg, false).expect("lane"));
            v.push(lane(op, wg, true).expect("lane sg"));
        }
    }
    v.extend([misc::rope(), misc::gather(), misc::timestep()]);
    for p in GemmParams::SPACE {
        for bias in [false, true] {
            v.push(gemm(GemmKind::MatMul { bias }, p).expect("matmul"));
            v.push(gemm(GemmKind::Conv3d { bias }, p).expect("conv"));
        }
    }
    // Fused epilogues (gelu; gate and residual; a cast) on both GEMM families.
    for text in ["in(0);gelu_tanh(0)", "in(0);in(1);mul(0,1);in(2);add(2,3)", "in(0);in(1);add(0,1);cast[bf16](2)"] {
        let e = vidrt_ir::ElementwiseExpr::parse(text).expect("expr");
        for bias in [false, true] {
            v.push(super::gemm::gemm_fused(GemmKind::MatMul { bias }, GemmParams::DEFAULT, Some(&e)).expect("mm epi"));
            v.push(super::gemm::gemm_fused(GemmKind::Conv3d { bias }, GemmParams::DEFAULT, Some(&e)).expect("cv epi"));
        }
    }
    // The whole tuning space of attention, at the head dims the models use.
    for (d, dv) in [(8, 8), (16, 16), (64, 64), (128, 128), (32, 16)] {
        for bias in [false, true] {
            for mask in [None, Some(Elem::F32), Some(Elem::I32)] {
                for p in AttnParams::space(d, dv, bias, mask) {
                    v.push(attention(p).expect("attention"));
                }
            }
        }
    }
    v
}

#[test]
fn every_generated_shader_validates() {
    let all = every_kernel();
    assert!(all.len() > 200, "{} kernels", all.len());
    let mut bad = Vec::new();
    for k in &all {
        match validate(k) {
            Ok(info) => {
                // Entry-point naming: `<family>_<variant>_<dtype>`.
                assert!(k.entry.matches('_').count() >= 2, "{}", k.entry);
                if k.source.contains("var<workgroup>") {
                    assert!(info.workgroup_bytes > 0, "{}", k.entry);
                }
            }
            Err(e) => bad.push(e.to_string()),
        }
    }
    assert!(bad.is_empty(), "{} invalid:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn workgroup_memory_is_measured() {
    let p = GemmParams::DEFAULT;
    let k = gemm(GemmKind::MatMul { bias: false }, p).expect("matmul");
    assert_eq!(validate(&k).expect("valid").workgroup_bytes, p.shared_bytes());
    let a = AttnParams { bq: 64, bk: 32, d: 64, dv: 64, bias: false, mask: None };
    assert_eq!(validate(&attention(a).expect("attn")).expect("valid").workgroup_bytes, a.shared_bytes());
}

#[test]
fn bad_parameters_are_errors() {
    assert!(lane(LaneOp::Sum, 100, false).is_err());
    assert!(lane(LaneOp::Sum, 100, true).is_err());
    assert!(gemm(GemmKind::MatMul { bias: false }, GemmParams { bm: 64, bn: 64, bk: 8, tm: 3, tn: 4 }).is_err());
    assert!(gemm(GemmKind::MatMul { bias: false }, GemmParams { bm: 256, bn: 256, bk: 8, tm: 1, tn: 1 }).is_err());
}

#[test]
fn parameter_text_round_trips() {
    for p in GemmParams::SPACE {
        assert_eq!(GemmParams::from_text(&p.to_text()), Some(p));
    }
    assert_eq!(GemmParams::from_text("bm=64,bn=64,bk=16,tm=3,tn=4"), None, "an invalid point is not parsed");
    assert_eq!(GemmParams::from_text("bm=64"), None);
    assert_eq!(GemmParams::from_text("garbage"), None);
    let base = AttnParams { bq: 64, bk: 32, d: 64, dv: 64, bias: true, mask: None };
    for p in AttnParams::space(64, 64, true, None) {
        assert_eq!(base.with_text(&p.to_text()), Some(p));
    }
    assert_eq!(base.with_text("bq=0,bk=4"), None);
    assert_eq!(base.with_text("bq=4"), None);
}

#[test]
fn subgroup_kernels_declare_and_need_the_feature() {
    for op in LaneOp::ALL {
        let k = lane(op, 256, true).expect("lane sg");
        assert!(k.features.subgroups && k.entry.contains("_sg_"), "{}", k.entry);
        assert!(k.source.contains("subgroup"), "{}: no subgroup operation in the text", k.entry);
        let plain = lane(op, 256, false).expect("lane");
        assert!(!plain.features.subgroups && !plain.source.contains("subgroup"), "{}", plain.entry);
        // Validated without the capability, the subgroup text is rejected: the flag matters.
        let mut without = k.clone();
        without.features = super::Features::NONE;
        assert!(validate(&without).is_err(), "{} validated without the subgroup capability", k.entry);
    }
}

/// Every kernel with f32 bindings, retyped to f16 storage (all f32 inputs, and the output
/// where it is f32), validates with the f16 capability.
#[test]
fn every_kernel_retyped_to_f16_storage_validates() {
    let mut bad = Vec::new();
    let mut n = 0;
    for k in every_kernel() {
        let ins: Vec<bool> = k.inputs.iter().map(|&e| e == Elem::F32).collect();
        let out = k.output == Elem::F32;
        if !out && !ins.iter().any(|&x| x) {
            continue;
        }
        match super::f16::retype(&k, &ins, out) {
            Ok(r) => {
                n += 1;
                if let Err(e) = validate(&r) {
                    bad.push(e.to_string());
                }
            }
            Err(e) => bad.push(e.to_string()),
        }
    }
    for (s, d) in [(Elem::F16, Elem::F16), (Elem::F16, Elem::F32)] {
        n += 1;
        if let Err(e) = validate(&copy::strided_typed(s, d).expect("copy")) {
            bad.push(e.to_string());
        }
    }
    assert!(n > 200, "{n} kernels");
    assert!(bad.is_empty(), "{} invalid:\n{}", bad.len(), bad.join("\n"));
}
