//! Every kernel family at every point of its parameter space, on representative shapes and
//! dtypes: what the ptxas test assembles (each for every target that has its instructions:
//! `matmul_wgmma`, `conv3d_wgmma` and `attention_flash_wgmma` for sm_90a only, see [`super::emit::check_target`]). The tunable families' points are the same spaces the
//! tuner enumerates (`ptx::tune`), so every tuning candidate is covered here.

use vidrt_ir::{BinaryOp, DType, ReduceOp, RmsStyle, UnaryOp};

use super::kernels::common::contiguous;
use super::kernels::conv3d;
use super::kernels::conv3d_wgmma;
use super::kernels::copy::{self, Walk};
use super::kernels::elementwise::{self, broadcast_strides, EwInput, Expr};
use super::kernels::embed;
use super::kernels::gemm::{self, GemmEpilogue, GemmSpec};
use super::kernels::gemm_mma;
use super::kernels::gemm_wgmma;
use super::kernels::gemm_wgmma_tma;
use super::kernels::rowwise::{self, RowLayout, RowOp};
use super::{Kernel, KernelError};

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Every (family, parameter point, representative shape/dtype) kernel.
pub fn all_kernels() -> Result<Vec<Kernel>, KernelError> {
    let mut out = Vec::new();
    // Elementwise: one expression using every unary function, a broadcast binary, modulate.
    let mut every_unary = Expr::Input(0);
    for u in UnaryOp::ALL {
        every_unary = Expr::Unary(u, Box::new(every_unary));
    }
    let dims = [4, 8, 64];
    for dtype in FLOATS {
        for (i, p) in elementwise::param_space(dtype).into_iter().enumerate() {
            let dense = EwInput { dtype, strides: contiguous(&dims) };
            out.push(elementwise::elementwise(
                &format!("ew_unary_all_{}_{i}", dtype.name()),
                &every_unary,
                std::slice::from_ref(&dense),
                &dims,
                dtype,
                p,
            )?);
            let pow = Expr::Binary(BinaryOp::Pow, Box::new(Expr::Input(0)), Box::new(Expr::Input(1)));
            let m = Expr::Modulate(Box::new(pow), Box::new(Expr::Input(1)), Box::new(Expr::Input(2)));
            let ins = vec![dense.clone(), dense.clone(), dense.clone()];
            out.push(elementwise::elementwise(
                &format!("ew_modulate_{}_{i}", dtype.name()),
                &m,
                &ins,
                &dims,
                dtype,
                p,
            )?);
            if p.vec == 1 {
                let b = EwInput { dtype, strides: broadcast_strides(&[8, 1], &dims) };
                let e = Expr::Binary(BinaryOp::Div, Box::new(Expr::Input(0)), Box::new(Expr::Input(1)));
                out.push(elementwise::elementwise(
                    &format!("ew_div_bcast_{}_{i}", dtype.name()),
                    &e,
                    &[dense, b],
                    &dims,
                    dtype,
                    p,
                )?);
            }
        }
    }
    // Row kernels: every op, on the last axis and on a middle axis.
    let x = [3, 40, 5];
    let ops = [
        RowOp::Reduce(ReduceOp::Sum),
        RowOp::Reduce(ReduceOp::Mean),
        RowOp::Reduce(ReduceOp::Max),
        RowOp::Reduce(ReduceOp::Min),
        RowOp::Softmax,
        RowOp::Rms { eps: 1e-6, style: RmsStyle::MeanSquare, weight: true },
        RowOp::Rms { eps: 1e-12, style: RmsStyle::L2Clamp, weight: false },
        RowOp::LayerNorm { eps: 1e-6, affine: true },
        RowOp::LayerNorm { eps: 1e-6, affine: false },
    ];
    for dtype in FLOATS {
        for p in rowwise::param_space() {
            for (j, op) in ops.iter().enumerate() {
                for axis in [1, 2] {
                    let l = RowLayout::over_axes(&x, &[axis]);
                    let name = format!("row{j}_{}_a{axis}_b{}", dtype.name(), p.block);
                    out.push(rowwise::row_kernel(&name, op, &l, dtype, dtype, p, None)?);
                }
            }
        }
    }
    // Copies and embeddings.
    // The tiled transpose (the channels-last conv's layout change), one per element width.
    for dtype in [DType::BF16, DType::F32, DType::I64] {
        out.push(copy::transpose(&format!("transpose_{}", dtype.name()), 2, 40, 70, dtype)?);
    }
    for p in copy::param_space() {
        let b = p.block;
        for dtype in [DType::F32, DType::BF16, DType::I64] {
            let d = dtype.name();
            let src = Walk { base: 0, strides: vec![1, 15, 3] };
            let dst = Walk { base: 0, strides: contiguous(&[3, 5, 2]) };
            out.push(copy::strided_copy(&format!("copy_permute_{d}_{b}"), &[3, 5, 2], &src, &dst, dtype, dtype, p)?);
            out.push(copy::fill(&format!("fill_{d}_{b}"), 100, dtype, 0.375, p)?);
            out.push(copy::upsample(&format!("upsample_{d}_{b}"), &[2, 3, 4, 5], [2, 2], dtype, p)?);
        }
        let src = Walk { base: 0, strides: vec![1] };
        out.push(copy::strided_copy(&format!("copy_cast_{b}"), &[10], &src, &src, DType::BF16, DType::F32, p)?);
        out.push(copy::strided_copy(&format!("copy_cast2_{b}"), &[10], &src, &src, DType::F32, DType::F16, p)?);
        out.push(copy::gather(&format!("gather_{b}"), 50, 16, 7, DType::BF16, DType::I64, p)?);
        out.push(copy::gather(&format!("gather32_{b}"), 50, 16, 7, DType::F32, DType::I32, p)?);
        out.push(embed::rope_table(&format!("rope_table_{b}"), [3, 4, 5], [8, 4, 4], 10000.0, true, p)?);
        for (src, dst) in [(DType::I64, DType::BF16), (DType::F32, DType::I32), (DType::I32, DType::I64)] {
            let w = Walk { base: 0, strides: vec![1] };
            let name = format!("copy_cast_{}_{}_{b}", src.name(), dst.name());
            out.push(copy::strided_copy(&name, &[10], &w, &w, src, dst, p)?);
        }
        for dtype in FLOATS {
            out.push(embed::rope(&format!("rope_{}_{b}", dtype.name()), &[1, 6, 2, 8], dtype, dtype, p)?);
        }
        out.push(embed::timestep(
            &format!("timestep_{b}"),
            &embed::TimestepSpec { batch: 3, dim: 32, flip_sin_to_cos: true, shift: 0.0, max_period: 10000.0 },
            DType::F32,
            p,
        )?);
    }
    // Tensor-core GEMM: an odd shape (tails on M and N, a partial K slice) per dtype and point.
    for (i, p) in gemm_mma::param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            out.push(gemm_mma::gemm_mma(&format!("matmul_mma_{}_{i}", dtype.name()), 37, 29, 40, dtype, p)?);
        }
        // Batched, with bias and a gate·acc + residual epilogue, bf16 out (the DiT's FFN out).
        out.push(gemm_mma::gemm_mma_spec(
            &format!("matmul_mma_epilogue_{i}"),
            &gemm_epilogue_spec(DType::BF16, true),
            p,
        )?);
    }
    // sm_90a wgmma GEMM (emitted for sm_90a only): the same shapes per dtype and point.
    for (i, p) in gemm_wgmma::param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            out.push(gemm_wgmma::gemm_wgmma(&format!("matmul_wgmma_{}_{i}", dtype.name()), 37, 29, 40, dtype, p)?);
        }
        out.push(gemm_wgmma::gemm_wgmma_spec(
            &format!("matmul_wgmma_epilogue_{i}"),
            &gemm_epilogue_spec(DType::BF16, true),
            p,
        )?);
    }
    // sm_90a TMA-fed wgmma GEMM (emitted for sm_90a only): the same shapes per dtype and point.
    for (i, p) in gemm_wgmma_tma::param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            let s = GemmSpec::plain(37, 29, 40, true, dtype, DType::F32);
            out.push(gemm_wgmma_tma::gemm_wgmma_tma_spec(&format!("matmul_wgmma_tma_{}_{i}", dtype.name()), &s, p)?);
        }
        out.push(gemm_wgmma_tma::gemm_wgmma_tma_spec(
            &format!("matmul_wgmma_tma_epilogue_{i}"),
            &gemm_epilogue_spec(DType::BF16, true),
            p,
        )?);
    }
    // SIMT GEMM: every point, every transpose, f32 and bf16, and the epilogue form.
    for (i, p) in gemm::simt_param_space().into_iter().enumerate() {
        for dtype in FLOATS {
            for (ta, tb) in [(false, false), (true, true)] {
                let mut s = GemmSpec::plain(37, 29, 19, tb, dtype, dtype);
                s.trans_a = ta;
                out.push(gemm::gemm_simt(&format!("matmul_simt_{}_{ta}_{tb}_{i}", dtype.name()), &s, p)?);
            }
        }
        out.push(gemm::gemm_simt(&format!("matmul_simt_epilogue_{i}"), &gemm_epilogue_spec(DType::F32, false), p)?);
    }
    // Implicit-GEMM conv3d: the VAE's causal 3×3×3, a stride-2 spatial downsample, and a
    // pointwise conv, per dtype and point.
    for (i, p) in conv3d::param_space().into_iter().enumerate() {
        for dtype in FLOATS {
            let d = dtype.name();
            let dt = (dtype, dtype);
            let causal = [[2, 0], [1, 1], [1, 1]];
            let c = conv3d::ConvSpec::new(&[1, 12, 3, 9, 10], &[16, 12, 3, 3, 3], [1; 3], causal, dt, true, None)?;
            out.push(conv3d::conv3d_simt(&format!("conv3d_causal_{d}_{i}"), &c, p)?);
            let down = [[0, 0], [0, 1], [0, 1]];
            let c = conv3d::ConvSpec::new(&[1, 12, 2, 9, 10], &[12, 12, 1, 3, 3], [1, 2, 2], down, dt, true, None)?;
            out.push(conv3d::conv3d_simt(&format!("conv3d_down_{d}_{i}"), &c, p)?);
            let c =
                conv3d::ConvSpec::new(&[2, 12, 2, 9, 10], &[20, 12, 1, 1, 1], [1; 3], [[0, 0]; 3], dt, false, None)?;
            out.push(conv3d::conv3d_simt(&format!("conv3d_pointwise_{d}_{i}"), &c, p)?);
        }
    }
    for (i, p) in conv3d::mma_param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            let d = dtype.name();
            let causal = [[2, 0], [1, 1], [1, 1]];
            let c = conv3d::ConvSpec::new(
                &[1, 16, 3, 9, 10],
                &[24, 16, 3, 3, 3],
                [1; 3],
                causal,
                (dtype, dtype),
                true,
                None,
            )?;
            out.push(conv3d::conv3d_mma(&format!("conv3d_mma_causal_{d}_{i}"), &c, p)?);
            let down = [[0, 0], [0, 1], [0, 1]];
            let c = conv3d::ConvSpec::new(
                &[1, 16, 2, 9, 10],
                &[16, 16, 1, 3, 3],
                [1, 2, 2],
                down,
                (dtype, dtype),
                true,
                None,
            )?;
            out.push(conv3d::conv3d_mma(&format!("conv3d_mma_down_{d}_{i}"), &c, p)?);
            // Output widths of 16 and 8: the im2col gathered by rows of 8 positions.
            let x = [1, 16, 3, 9, 16];
            let c = conv3d::ConvSpec::new(&x, &[24, 16, 3, 3, 3], [1; 3], causal, (dtype, dtype), true, None)?;
            out.push(conv3d::conv3d_mma(&format!("conv3d_mma_rows_{d}_{i}"), &c, p)?);
            let x = [1, 16, 2, 9, 16];
            let c = conv3d::ConvSpec::new(&x, &[16, 16, 1, 3, 3], [1, 2, 2], down, (dtype, dtype), true, None)?;
            out.push(conv3d::conv3d_mma(&format!("conv3d_mma_rows_down_{d}_{i}"), &c, p)?);
        }
    }
    // The channels-last conv (both operands by cp.async): the VAE's causal 3×3×3 (Cin 16: a
    // 32-k slice spans two taps) and a strided 2-D conv to width 8 with the silu epilogue.
    let silu = GemmEpilogue { expr: Expr::Unary(UnaryOp::Silu, Box::new(Expr::Input(0))), extra: vec![] };
    for (i, p) in conv3d::channels_last_param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            let d = dtype.name();
            let causal = [[2, 0], [1, 1], [1, 1]];
            let x = [1, 16, 3, 9, 16];
            let c = conv3d::ConvSpec::new(&x, &[24, 16, 3, 3, 3], [1; 3], causal, (dtype, dtype), true, None)?;
            out.push(conv3d::conv3d_mma_cl(&format!("conv3d_mma_cl_causal_{d}_{i}"), &c, p)?);
            let (x, down) = ([1, 16, 2, 9, 16], [[0, 0], [0, 1], [0, 1]]);
            let epi = Some(silu.clone());
            let c = conv3d::ConvSpec::new(&x, &[16, 16, 1, 3, 3], [1, 2, 2], down, (dtype, dtype), true, epi)?;
            out.push(conv3d::conv3d_mma_cl(&format!("conv3d_mma_cl_down_{d}_{i}"), &c, p)?);
        }
    }
    // sm_90a wgmma conv (emitted for sm_90a only): the VAE's causal 3×3×3 at width 16 and a
    // strided 2-D conv to width 8, with the silu epilogue on one.
    for (i, p) in conv3d_wgmma::wgmma_param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            let d = dtype.name();
            let causal = [[2, 0], [1, 1], [1, 1]];
            let x = [1, 16, 3, 9, 16];
            let c = conv3d::ConvSpec::new(&x, &[24, 16, 3, 3, 3], [1; 3], causal, (dtype, dtype), true, None)?;
            out.push(conv3d_wgmma::conv3d_wgmma(&format!("conv3d_wgmma_causal_{d}_{i}"), &c, p)?);
            let x = [1, 16, 2, 9, 16];
            let down = [[0, 0], [0, 1], [0, 1]];
            let c = conv3d::ConvSpec::new(&x, &[16, 16, 1, 3, 3], [1, 2, 2], down, (dtype, dtype), true, None)?;
            out.push(conv3d_wgmma::conv3d_wgmma(&format!("conv3d_wgmma_down_{d}_{i}"), &c, p)?);
        }
    }
    // Its channels-last form at the same tiles and convs (width 10 on the strided one: the
    // form needs no multiple of 8 there).
    let cl = conv3d_wgmma::conv_wgmma_space().into_iter().filter(|p| p.channels_last);
    for (i, p) in cl.enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            let d = dtype.name();
            let causal = [[2, 0], [1, 1], [1, 1]];
            let x = [1, 16, 3, 9, 16];
            let c = conv3d::ConvSpec::new(&x, &[24, 16, 3, 3, 3], [1; 3], causal, (dtype, dtype), true, None)?;
            out.push(conv3d_wgmma::conv3d_wgmma(&format!("conv3d_wgmma_cl_causal_{d}_{i}"), &c, p)?);
            let (x, down) = ([1, 16, 2, 9, 20], [[0, 0], [0, 1], [0, 1]]);
            let epi = Some(silu.clone());
            let c = conv3d::ConvSpec::new(&x, &[16, 16, 1, 3, 3], [1, 2, 2], down, (dtype, dtype), true, epi)?;
            out.push(conv3d_wgmma::conv3d_wgmma(&format!("conv3d_wgmma_cl_down_{d}_{i}"), &c, p)?);
        }
    }
    attention_kernels(&mut out)?;
    Ok(out)
}

/// `[2, 37, 29]` = `[2, 37, 40] · [29, 40]ᵀ + bias`, then `acc · gate[29] + residual`.
fn gemm_epilogue_spec(dtype: DType, trans_b: bool) -> GemmSpec {
    let out = [2, 37, 29];
    let gate = Expr::Binary(BinaryOp::Mul, Box::new(Expr::Input(0)), Box::new(Expr::Input(1)));
    GemmSpec {
        batch: vec![2],
        a_batch: vec![37 * 40],
        b_batch: vec![0],
        bias: true,
        epilogue: Some(GemmEpilogue {
            expr: Expr::Binary(BinaryOp::Add, Box::new(gate), Box::new(Expr::Input(2))),
            extra: vec![
                EwInput { dtype, strides: broadcast_strides(&[29], &out) },
                EwInput { dtype, strides: contiguous(&out) },
            ],
        }),
        ..GemmSpec::plain(37, 29, 40, trans_b, dtype, dtype)
    }
}

/// Flash attention at every point of both variants: odd sequence lengths, the models' head
/// dims (128 for Wan2.1, 64 with a relative-position bias and a key mask for umT5) where the
/// point's tiles fit, and an unaligned small head dim.
fn attention_kernels(out: &mut Vec<Kernel>) -> Result<(), KernelError> {
    use super::kernels::attention::{self, AttnSpec};
    let spec = |d: usize, dv: usize, bias: bool, mask: Option<DType>| AttnSpec {
        batch: 2,
        sq: 77,
        sk: 300,
        heads: 3,
        d,
        dv,
        scale: 1.0 / (d as f64).sqrt(),
        bias: bias.then_some([0, 77 * 300, 300, 1]),
        mask,
    };
    // Shapes whose tiles may not fit a point's shared memory are skipped for that point; the
    // first two fit every point.
    let shapes = |dtype: DType| {
        [
            ("d64", spec(64, 64, true, Some(dtype)), true),
            ("d6", spec(6, 5, false, None), true),
            ("d128", spec(128, 128, false, None), false),
        ]
    };
    for (i, p) in attention::simt_param_space().into_iter().enumerate() {
        for (tag, s, must) in shapes(DType::F32) {
            match attention::attention_simt(&format!("attention_flash_simt_f32_{tag}_{i}"), &s, DType::F32, p) {
                Ok(k) => out.push(k),
                Err(KernelError::Unsupported(_)) if !must => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (i, p) in attention::mma_param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            for (tag, s, must) in shapes(dtype) {
                // Two m-tiles per warp take no bias or mask (d64 has both).
                let must = must && !(p.mt == 2 && (s.bias.is_some() || s.mask.is_some()));
                let name = format!("attention_flash_mma_{}_{tag}_{i}", dtype.name());
                match attention::attention_mma(&name, &s, dtype, p) {
                    Ok(k) => out.push(k),
                    Err(KernelError::Unsupported(_)) if !must => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // sm_90a wgmma attention (emitted for sm_90a only): head dims 64 (bias, mask), 128 and
    // the smallest it takes, 8 (it refuses head dims that are not multiples of 8); every
    // point fits every shape.
    let wgmma_shapes = |dtype: DType| {
        [
            ("d64", spec(64, 64, true, Some(dtype))),
            ("d8", spec(8, 8, false, None)),
            ("d128", spec(128, 128, false, None)),
        ]
    };
    for (i, p) in attention::wgmma_param_space().into_iter().enumerate() {
        for dtype in [DType::BF16, DType::F16] {
            for (tag, s) in wgmma_shapes(dtype) {
                let name = format!("attention_flash_wgmma_{}_{tag}_{i}", dtype.name());
                out.push(attention::attention_wgmma(&name, &s, dtype, p)?);
            }
        }
    }
    Ok(())
}
