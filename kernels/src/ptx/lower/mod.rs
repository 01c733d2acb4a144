//! Lowering of IR ops to PTX kernel launches, shared by the CUDA backend and the simulator
//! backend. The match over [`Op`] has no catch-all: a new op fails to compile here until it
//! gets a kernel or an explicit "unsupported".
//!
//! Tunable nodes (matmul, conv3d, attention, fused or not) take their parameter point from a
//! [`Chooser`] ([`lower_with`]; see [`super::tune`]): forced, a tuning database's winner, or
//! the deterministic heuristic ([`lower`] uses the heuristics alone).
//!
//! The tunable products (matmul, conv3d, attention) lower in `products`; the rest here.

use vidrt_ir::{DType, Op};

use super::kernels::common::contiguous;
use super::kernels::conv3d::{self, ConvSpec};
use super::kernels::conv3d_wgmma;
use super::kernels::copy::{self, CopyParams, Walk};
use super::kernels::elementwise::{self, broadcast_strides, EwInput, EwParams, Expr};
use super::kernels::embed;
use super::kernels::gemm::{self, GemmEpilogue, GemmSpec, SimtParams};
use super::kernels::gemm_mma;
use super::kernels::gemm_wgmma;
use super::kernels::gemm_wgmma_tma;
use super::kernels::rowwise::{self, Post, RowLayout, RowOp, RowParams};
use super::tune::{bucket, within_shared_limit, Chooser, Heuristics, Pick, Point, TuneProblem};
use super::{Kernel, KernelError, Target};

mod products;
use products::{attention, conv, gemm, gemm_spec, product_epilogue};

/// A kernel argument in a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The node's input `i`.
    Input(usize),
    /// The node's output.
    Output,
    /// Scratch buffer `slot` of the node, at least `bytes` long: allocated before the node's
    /// first launch, live across its launches (one writes it, a later one reads it) and free
    /// after the last ([`scratch_bytes`]).
    Scratch { slot: usize, bytes: usize },
}

/// The bytes of each scratch slot the launches use (the largest any of them asks for; a slot
/// no launch names is 0).
pub fn scratch_bytes(launches: &[Launch]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for a in launches.iter().flat_map(|l| &l.args) {
        if let Arg::Scratch { slot, bytes } = *a {
            if out.len() <= slot {
                out.resize(slot + 1, 0);
            }
            out[slot] = out[slot].max(bytes);
        }
    }
    out
}

/// One kernel launch (1-D geometry).
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub kernel: Kernel,
    pub grid: u32,
    pub block: u32,
    pub args: Vec<Arg>,
}

/// How a node runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Lowered {
    /// A graph input or weight: bound from the host.
    Leaf,
    /// The output is input 0's bytes unchanged (reshape).
    Alias,
    /// These launches, in order, write the output.
    Launches(Vec<Launch>),
}

/// Why an op has no kernel on this dtype, or `None` when it has one (before shapes are known).
pub fn unsupported_reason(op: &Op, dtype: DType) -> Option<String> {
    let float = |what: &str| (!dtype.is_float()).then(|| format!("{what} kernels compute in floating point"));
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => None,
        Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } => None,
        Op::Cast { .. } => None,
        Op::Unary(_) | Op::Binary(_) | Op::Modulate => float("elementwise"),
        Op::RmsNorm { .. } | Op::LayerNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. } => float("row"),
        Op::Rope => float("rope"),
        Op::Upsample { .. } | Op::Gather => float("copy"),
        Op::TimestepEmbedding { .. } => (dtype != DType::F32).then(|| "timestep embedding writes f32".to_string()),
        Op::RopeTable { .. } => (dtype != DType::F32).then(|| "rope_table writes f32".to_string()),
        Op::RelPositionBucket { .. } => (dtype != DType::I64).then(|| "rel_position_bucket writes i64".to_string()),
        Op::MatMul { .. } | Op::MatMulEpilogue { .. } => float("matmul"),
        Op::Conv3dEpilogue { .. } => float("conv3d"),
        Op::Fused { .. } => float("fused elementwise"),
        Op::LayerNormModulate { .. } => float("row"),
        Op::RmsNormRope { .. } => float("row"),
        Op::RmsNormEpilogue { .. } => float("row"),
        Op::Attention { .. } => float("attention"),
        Op::Conv3d { .. } => float("conv3d"),
    }
}

fn cdiv(a: usize, b: u32) -> Result<u32, KernelError> {
    u32::try_from(a.div_ceil(b as usize)).map_err(|_| KernelError::Unsupported(format!("grid of {a} threads")))
}

/// The default elementwise parameter point: 256 threads, the widest vector the layout allows.
fn ew_params(inputs: &[EwInput], out_dims: &[usize], dtype: DType) -> EwParams {
    let dense = contiguous(out_dims);
    let numel: usize = out_dims.iter().product();
    let all_dense =
        inputs.iter().all(|i| i.strides.iter().zip(&dense).zip(out_dims).all(|((s, d), n)| *n == 1 || s == d));
    let max = 16 / dtype.size_bytes() as u32;
    let mut vec = 1;
    if all_dense {
        for v in [max, max / 2, 2] {
            if v > 1
                && numel.is_multiple_of(v as usize)
                && inputs.iter().all(|i| i.dtype.size_bytes() == dtype.size_bytes())
            {
                vec = v;
                break;
            }
        }
    }
    EwParams { block: 256, vec }
}

fn row_params(len: usize) -> RowParams {
    let block = (len.next_power_of_two() as u32).clamp(32, 256);
    RowParams { block }
}

const COPY: CopyParams = CopyParams { block: 256 };

fn ew(name: &str, expr: Expr, ins: &[(&[usize], DType)], out: &[usize], dtype: DType) -> Result<Lowered, KernelError> {
    let inputs: Vec<EwInput> =
        ins.iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, out) }).collect();
    let p = ew_params(&inputs, out, dtype);
    let k = elementwise::elementwise(name, &expr, &inputs, out, dtype, p)?;
    let numel: usize = out.iter().product();
    let args = (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect();
    Ok(one(k, cdiv(numel.div_ceil(p.vec as usize), p.block)?, p.block, args, numel))
}

fn one(kernel: Kernel, grid: u32, block: u32, args: Vec<Arg>, work: usize) -> Lowered {
    if work == 0 {
        Lowered::Launches(Vec::new())
    } else {
        Lowered::Launches(vec![Launch { kernel, grid, block, args }])
    }
}

fn row(
    name: &str,
    op: RowOp,
    layout: RowLayout,
    (in_dtype, out_dtype): (DType, DType),
    args: Vec<Arg>,
    post: Option<&Post>,
) -> Result<Lowered, KernelError> {
    let p = row_params(layout.len());
    let k = rowwise::row_kernel(name, &op, &layout, in_dtype, out_dtype, p, post)?;
    let rows = layout.rows();
    let grid = u32::try_from(rows).map_err(|_| KernelError::Unsupported(format!("{rows} rows")))?;
    Ok(one(k, grid, p.block, args, rows))
}

/// Lowers one node with the heuristics' parameter points ([`lower_with`] and [`Heuristics`]).
pub fn lower(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
) -> Result<Lowered, KernelError> {
    lower_with(op, ins, out, dtype, tag, &Heuristics)
}

/// Lowers one node. `ins` are the inputs' (dims, dtype); `tag` makes kernel names unique
/// (e.g. the node index); `chooser` picks the parameter point of a tunable node.
pub fn lower_with(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
    chooser: &dyn Chooser,
) -> Result<Lowered, KernelError> {
    let lowered = lower_op(op, ins, out, dtype, tag, chooser)?;
    if let Lowered::Launches(ls) = &lowered {
        if let Some(l) = ls.iter().find(|l| l.grid > MAX_GRID_X) {
            return Err(KernelError::Unsupported(format!(
                "`{}` needs a grid of {} blocks; CUDA allows at most {MAX_GRID_X} (2^31 - 1) in x",
                l.kernel.name, l.grid
            )));
        }
    }
    Ok(lowered)
}

/// The most blocks a 1-D CUDA grid may have (`gridDim.x` ≤ 2³¹ − 1).
pub const MAX_GRID_X: u32 = i32::MAX as u32;

fn lower_op(
    op: &Op,
    ins: &[(&[usize], DType)],
    out: &[usize],
    dtype: DType,
    tag: &str,
    chooser: &dyn Chooser,
) -> Result<Lowered, KernelError> {
    if let Some(r) = unsupported_reason(op, dtype) {
        return Err(KernelError::Unsupported(r));
    }
    let numel: usize = out.iter().product();
    let d0 = || ins.first().map(|i| i.1).ok_or_else(|| KernelError::Invalid("missing input".into()));
    let same_in = |what: &str| -> Result<(), KernelError> {
        match ins.iter().find(|i| i.1 != dtype) {
            Some(i) => Err(KernelError::Unsupported(format!("{what} with a {} input and a {dtype} output", i.1))),
            None => Ok(()),
        }
    };
    let n = |family: &str| format!("{family}_{}_{tag}", dtype.name());
    let inp = |i: usize| Box::new(Expr::Input(i));
    match op {
        Op::Input { .. } | Op::Weight { .. } => Ok(Lowered::Leaf),
        Op::Constant { value } => Ok(one(
            copy::fill(&n("fill"), numel, dtype, *value, COPY)?,
            cdiv(numel, 256)?,
            256,
            vec![Arg::Output],
            numel,
        )),
        Op::Reshape { .. } => Ok(Lowered::Alias),
        Op::Unary(u) => ew(&n(&format!("ew_{}", u.name())), Expr::Unary(*u, inp(0)), ins, out, dtype),
        Op::Binary(bop) => ew(&n(&format!("ew_{}", bop.name())), Expr::Binary(*bop, inp(0), inp(1)), ins, out, dtype),
        Op::Fused { expr } => ew(&n("ew_fused"), Expr::from_ir(expr)?, ins, out, dtype),
        Op::Modulate => ew(&n("ew_modulate"), Expr::Modulate(inp(0), inp(1), inp(2)), ins, out, dtype),
        Op::Cast { .. } => {
            let src = d0()?;
            let dims = ins[0].0;
            let k = copy::strided_copy(
                &n("copy_cast"),
                dims,
                &Walk { base: 0, strides: contiguous(dims) },
                &Walk { base: 0, strides: contiguous(dims) },
                src,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Permute { perm } => {
            same_in("permute")?;
            let in_st = contiguous(ins[0].0);
            let src = Walk { base: 0, strides: perm.iter().map(|&p| in_st.get(p).copied().unwrap_or(0)).collect() };
            let k = copy::strided_copy(
                &n("copy_permute"),
                out,
                &src,
                &Walk { base: 0, strides: contiguous(out) },
                dtype,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Slice { axis, start, .. } => {
            same_in("slice")?;
            let in_st = contiguous(ins[0].0);
            let base = start * in_st.get(*axis).copied().unwrap_or(0);
            let k = copy::strided_copy(
                &n("copy_slice"),
                out,
                &Walk { base, strides: in_st },
                &Walk { base: 0, strides: contiguous(out) },
                dtype,
                dtype,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Concat { axis } => {
            same_in("concat")?;
            let out_st = contiguous(out);
            let mut at = 0;
            let mut launches = Vec::new();
            for (i, (dims, _)) in ins.iter().enumerate() {
                let cnt: usize = dims.iter().product();
                let base = at * out_st.get(*axis).copied().unwrap_or(0);
                at += dims.get(*axis).copied().unwrap_or(0);
                if cnt == 0 {
                    continue;
                }
                let k = copy::strided_copy(
                    &format!("{}_{i}", n("copy_concat")),
                    dims,
                    &Walk { base: 0, strides: contiguous(dims) },
                    &Walk { base, strides: out_st.clone() },
                    dtype,
                    dtype,
                    COPY,
                )?;
                launches.push(Launch {
                    kernel: k,
                    grid: cdiv(cnt, 256)?,
                    block: 256,
                    args: vec![Arg::Input(i), Arg::Output],
                });
            }
            Ok(Lowered::Launches(launches))
        }
        Op::Upsample { factors } => {
            same_in("upsample")?;
            let k = copy::upsample(&n("upsample_nearest"), ins[0].0, *factors, dtype, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Gather => {
            let (table, ids) = (ins[0], ins.get(1).ok_or_else(|| KernelError::Invalid("gather needs ids".into()))?);
            if table.1 != dtype || table.0.len() != 2 {
                return Err(KernelError::Unsupported("gather needs a [V, D] table of the output dtype".into()));
            }
            let n_ids: usize = ids.0.iter().product();
            let k = copy::gather(&n("gather_rows"), table.0[0], table.0[1], n_ids, dtype, ids.1, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Input(1), Arg::Output], numel))
        }
        Op::Rope => {
            if ins[0].1 != dtype || ins.len() != 3 || ins[1].1 != ins[2].1 {
                return Err(KernelError::Unsupported(
                    "rope needs x of the output dtype and tables of one dtype".into(),
                ));
            }
            let k = embed::rope(&n("rope_interleaved"), ins[0].0, dtype, ins[1].1, COPY)?;
            Ok(one(
                k,
                cdiv(numel / 2, 256)?,
                256,
                vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output],
                numel,
            ))
        }
        Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period } => {
            let t = ins[0];
            let k = embed::timestep(
                &n("timestep_sinusoid"),
                &embed::TimestepSpec {
                    batch: t.0.iter().product(),
                    dim: *dim,
                    flip_sin_to_cos: *flip_sin_to_cos,
                    shift: *downscale_freq_shift,
                    max_period: *max_period,
                },
                t.1,
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Input(0), Arg::Output], numel))
        }
        Op::Softmax { axis } => {
            same_in("softmax")?;
            let layout = RowLayout::over_axes(ins[0].0, &[*axis]);
            row(&n("softmax_row"), RowOp::Softmax, layout, (dtype, dtype), vec![Arg::Input(0), Arg::Output], None)
        }
        Op::RmsNorm { axis, eps, style, weight } => {
            same_in("rms_norm")?;
            let layout = RowLayout::over_axes(ins[0].0, &[*axis]);
            let args = if *weight {
                vec![Arg::Input(0), Arg::Input(1), Arg::Output]
            } else {
                vec![Arg::Input(0), Arg::Output]
            };
            row(
                &n("norm_rms"),
                RowOp::Rms { eps: *eps, style: *style, weight: *weight },
                layout,
                (dtype, dtype),
                args,
                None,
            )
        }
        Op::LayerNorm { eps, affine } => {
            same_in("layer_norm")?;
            let r = ins[0].0.len();
            let layout = RowLayout::over_axes(ins[0].0, &[r.saturating_sub(1)]);
            let args = if *affine {
                vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output]
            } else {
                vec![Arg::Input(0), Arg::Output]
            };
            row(&n("norm_layer"), RowOp::LayerNorm { eps: *eps, affine: *affine }, layout, (dtype, dtype), args, None)
        }
        Op::LayerNormModulate { eps } => {
            same_in("layer_norm_modulate")?;
            let x = ins[0].0;
            let layout = RowLayout::over_axes(x, &[x.len().saturating_sub(1)]);
            let post = Post {
                expr: Expr::Modulate(inp(0), inp(1), inp(2)),
                extra: ins[1..].iter().map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, x) }).collect(),
                x_dims: x.to_vec(),
            };
            let args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output];
            let op = RowOp::LayerNorm { eps: *eps, affine: false };
            row(&n("norm_layer_modulate"), op, layout, (dtype, dtype), args, Some(&post))
        }
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => {
            let x = ins[0].0;
            let x_dtype = ins[0].1;
            let first_extra = 1 + usize::from(*weight);
            if ins[..first_extra].iter().any(|i| i.1 != x_dtype) {
                return Err(KernelError::Unsupported("rms_norm weight of another dtype than x".into()));
            }
            let layout = RowLayout::over_axes(x, &[*axis]);
            let post = Post {
                expr: Expr::from_ir(epilogue)?,
                extra: ins[first_extra..]
                    .iter()
                    .map(|(d, t)| EwInput { dtype: *t, strides: broadcast_strides(d, x) })
                    .collect(),
                x_dims: x.to_vec(),
            };
            let args = (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect();
            let op = RowOp::Rms { eps: *eps, style: *style, weight: *weight };
            row(&n("norm_rms_epilogue"), op, layout, (x_dtype, dtype), args, Some(&post))
        }
        Op::Reduce { op: rop, axes, .. } => {
            same_in("reduce")?;
            let layout = RowLayout::over_axes(ins[0].0, axes);
            if layout.is_empty() {
                return Err(KernelError::Unsupported("reduction over an empty axis".into()));
            }
            row(
                &n(&format!("reduce_{}", rop.name())),
                RowOp::Reduce(*rop),
                layout,
                (dtype, dtype),
                vec![Arg::Input(0), Arg::Output],
                None,
            )
        }
        Op::RopeTable { grid, dims, theta, part } => {
            let cos = *part == vidrt_ir::TrigPart::Cos;
            let k = embed::rope_table(&n("rope_table"), *grid, *dims, *theta, cos, COPY)?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Output], numel))
        }
        Op::MatMul { trans_a, trans_b, bias } => {
            let spec = gemm_spec(ins, out, (*trans_a, *trans_b, *bias), dtype, None)?;
            gemm(&n("matmul"), &spec, chooser)
        }
        Op::MatMulEpilogue { trans_a, trans_b, bias, epilogue } => {
            let epi = product_epilogue(epilogue, &ins[(2 + usize::from(*bias)).min(ins.len())..], out)?;
            let spec = gemm_spec(ins, out, (*trans_a, *trans_b, *bias), dtype, Some(epi))?;
            gemm(&n("matmul_epilogue"), &spec, chooser)
        }
        Op::Conv3d { stride, pad, bias } => conv(&n("conv3d"), ins, (*stride, *pad, *bias), dtype, None, chooser),
        Op::Conv3dEpilogue { stride, pad, bias, epilogue } => {
            let epi = product_epilogue(epilogue, &ins[(2 + usize::from(*bias)).min(ins.len())..], out)?;
            conv(&n("conv3d_epilogue"), ins, (*stride, *pad, *bias), dtype, Some(epi), chooser)
        }
        Op::Attention { scale, bias, mask } => {
            if numel == 0 {
                return Ok(Lowered::Launches(Vec::new()));
            }
            let (k, grid, block) = attention(&n("attention_flash"), ins, (*scale, *bias, *mask), dtype, chooser)?;
            Ok(one(k, grid, block, (0..ins.len()).map(Arg::Input).chain([Arg::Output]).collect(), numel))
        }
        Op::RelPositionBucket { q_len, k_len, num_buckets, max_distance } => {
            let k = embed::rel_position_bucket(
                &n("rel_position_bucket"),
                (*q_len, *k_len),
                (*num_buckets, *max_distance),
                COPY,
            )?;
            Ok(one(k, cdiv(numel, 256)?, 256, vec![Arg::Output], numel))
        }
        Op::RmsNormRope { eps, .. } => {
            // Two launches: the RMS norm across heads into the output, then the rotary
            // embedding in place (each thread reads its pair before writing it back).
            let (x, table_dtype) = match ins {
                [x, w, c, s] if x.1 == dtype && w.1 == dtype && c.1 == s.1 => (x, c.1),
                _ => {
                    return Err(KernelError::Unsupported(
                        "rms_norm_rope needs x and weight of the output dtype and tables of one dtype".into(),
                    ))
                }
            };
            let layout = RowLayout::over_axes(x.0, &[x.0.len().saturating_sub(1)]);
            let op = RowOp::Rms { eps: *eps, style: vidrt_ir::RmsStyle::MeanSquare, weight: true };
            let norm = match row(
                &n("norm_rms_heads"),
                op,
                layout,
                (dtype, dtype),
                vec![Arg::Input(0), Arg::Input(1), Arg::Output],
                None,
            )? {
                Lowered::Launches(l) => l,
                other => {
                    return Err(KernelError::Invalid(format!("the rms norm of rms_norm_rope lowered as {other:?}")))
                }
            };
            let k = embed::rope(&n("rope_interleaved_inplace"), out, dtype, table_dtype, COPY)?;
            let mut launches = norm;
            if numel > 0 {
                launches.push(Launch {
                    kernel: k,
                    grid: cdiv(numel / 2, 256)?,
                    block: 256,
                    args: vec![Arg::Output, Arg::Input(2), Arg::Input(3), Arg::Output],
                });
            }
            Ok(Lowered::Launches(launches))
        }
    }
}
