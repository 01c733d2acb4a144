//! The op set. High-level ops with hand-tuned kernels (DESIGN.md, Ops), not a minimal
//! primitive set. Every op has shape/dtype inference (`infer.rs`), a cost (`cost.rs`), a text
//! form (`text.rs`) and a CPU reference (`vidrt-runtime`).

use serde::{Deserialize, Serialize};

use crate::expr::ElementwiseExpr;
use crate::{DType, Shape};

/// Elementwise unary functions. Parametrised variants carry their scalars.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Square,
    Tanh,
    Sigmoid,
    /// x·sigmoid(x)
    Silu,
    /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))): torch `gelu(approximate="tanh")` and
    /// transformers' `gelu_new`.
    GeluTanh,
    /// Exact GELU, 0.5x(1 + erf(x/√2)).
    GeluErf,
    Sin,
    Cos,
    /// x + c
    AddScalar(f64),
    /// x · c
    MulScalar(f64),
    /// min(max(x, lo), hi)
    Clamp(f64, f64),
}

impl UnaryOp {
    /// Every unary op with representative parameters (tables, harness, property tests).
    pub const ALL: [UnaryOp; 18] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Square,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::GeluTanh,
        UnaryOp::GeluErf,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::AddScalar(1.0),
        UnaryOp::MulScalar(0.5),
        UnaryOp::Clamp(-1.0, 1.0),
    ];

    pub fn name(&self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Square => "square",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::GeluErf => "gelu_erf",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::AddScalar(_) => "add_scalar",
            UnaryOp::MulScalar(_) => "mul_scalar",
            UnaryOp::Clamp(_, _) => "clamp",
        }
    }

    /// Approximate flops per element (for the cost model).
    pub fn flops_per_elem(&self) -> u64 {
        match self {
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::AddScalar(_) | UnaryOp::MulScalar(_) => 1,
            UnaryOp::Square | UnaryOp::Clamp(_, _) => 2,
            UnaryOp::Recip | UnaryOp::Sqrt | UnaryOp::Rsqrt => 4,
            UnaryOp::Exp | UnaryOp::Log | UnaryOp::Sin | UnaryOp::Cos | UnaryOp::Tanh => 8,
            UnaryOp::Sigmoid | UnaryOp::Silu => 10,
            UnaryOp::GeluTanh | UnaryOp::GeluErf => 14,
        }
    }
}

/// Elementwise binary functions with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];

    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
        }
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(&self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// How an RMS-style norm computes its denominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RmsStyle {
    /// `x · rsqrt(mean(x²) + eps)` (T5 / DiT q,k norms).
    MeanSquare,
    /// `x / max(‖x‖₂, eps) · sqrt(C)` (the Wan VAE's `WanRMS_norm`).
    L2Clamp,
}

/// Which half of a rotary table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrigPart {
    Cos,
    Sin,
}

/// An IR operation with its static parameters. Inputs are the node's input list; the
/// order for each op is documented on its variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A graph input, fed at run time by name. No inputs; shape and dtype are declared.
    Input { name: String },
    /// A parameter, bound from a weight source by name when the graph is compiled.
    Weight { name: String },
    /// A tensor of the node's shape and dtype filled with `value`.
    Constant { value: f64 },
    /// Wan's 3-axis rotary table, `[S, hd]` f32 with S = `grid[0]·grid[1]·grid[2]` and
    /// hd = `dims[0]+dims[1]+dims[2]`; each pair's value is repeated twice (interleaved).
    /// Computed in f64 and rounded to f32, positions 0.. on each axis.
    RopeTable { grid: [usize; 3], dims: [usize; 3], theta: f64, part: TrigPart },
    /// umT5 relative-position bucket ids, i64 `[q_len, k_len]`, bucket of (key − query).
    RelPositionBucket { q_len: usize, k_len: usize, num_buckets: usize, max_distance: usize },
    /// Inputs: x.
    Unary(UnaryOp),
    /// Inputs: a, b (broadcast).
    Binary(BinaryOp),
    /// Inputs: x. Converts to `to`.
    Cast { to: DType },
    /// Inputs: a `[.., M, K]` (`[.., K, M]` when trans_a), b `[.., K, N]` (`[.., N, K]` when
    /// trans_b), then bias `[N]` if `bias`. Batch axes broadcast.
    MatMul { trans_a: bool, trans_b: bool, bias: bool },
    /// Scaled dot-product attention in BSHD layout. Inputs: q `[B, Sq, H, D]`,
    /// k `[B, Sk, H, D]`, v `[B, Sk, H, Dv]`, then an additive bias broadcastable to
    /// `[B, H, Sq, Sk]` if `bias`, then a key mask `[B, Sk]` (non-zero keeps) if `mask`.
    /// Output `[B, Sq, H, Dv]`. softmax(q·kᵀ·scale + bias) · v.
    Attention { scale: f64, bias: bool, mask: bool },
    /// 3-D convolution (cross-correlation). Inputs: x `[N, Ci, T, H, W]`,
    /// w `[Co, Ci, kt, kh, kw]`, then bias `[Co]` if `bias`. `pad[axis] = [before, after]`
    /// zero padding for (T, H, W): causal padding is `[2·pt, 0]` on T.
    Conv3d { stride: [usize; 3], pad: [[usize; 2]; 3], bias: bool },
    /// RMS norm over `axis`. Inputs: x, then a weight with `x.shape[axis]` elements if
    /// `weight`.
    RmsNorm { axis: usize, eps: f64, style: RmsStyle, weight: bool },
    /// Layer norm over the last axis (biased variance). Inputs: x, then weight and bias
    /// `[D]` if `affine`.
    LayerNorm { eps: f64, affine: bool },
    /// `x·(1 + scale) + shift`. Inputs: x, scale, shift (both broadcast to x).
    Modulate,
    /// Interleaved (GPT-J) rotary embedding. Inputs: x `[.., S, H, hd]`, cos `[S, hd]`,
    /// sin `[S, hd]`.
    Rope,
    /// Softmax along `axis`. Inputs: x.
    Softmax { axis: usize },
    /// Inputs: x.
    Reduce { op: ReduceOp, axes: Vec<usize>, keepdim: bool },
    /// Inputs: x. Same element count.
    Reshape { shape: Shape },
    /// Inputs: x. `out.shape[i] = x.shape[perm[i]]`.
    Permute { perm: Vec<usize> },
    /// Inputs: x. Keeps `start..end` of `axis`.
    Slice { axis: usize, start: usize, end: usize },
    /// Inputs: one or more tensors equal except on `axis`.
    Concat { axis: usize },
    /// Nearest-exact upsampling of the last two axes by integer factors. Inputs: x.
    Upsample { factors: [usize; 2] },
    /// Embedding lookup. Inputs: table `[V, D]`, ids (integer) of any shape → `ids.shape + [D]`.
    Gather,
    /// Sinusoidal timestep embedding. Inputs: t `[B]` → f32 `[B, dim]`.
    /// `freq_j = exp(−ln(max_period)·j/(half − shift))`, out = [sin, cos] or [cos, sin].
    TimestepEmbedding { dim: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64, max_period: f64 },
    // ---- fused ops (made by `passes::fuse`; each has an unfused composition as reference) ----
    /// FUSED (new, from the fusion pass): a chain of elementwise ops as one kernel. Inputs:
    /// one per slot of `expr` (`expr.num_inputs()`), each broadcast (numpy rules) to the
    /// output shape, which is the broadcast of all inputs. Output dtype: the expression's
    /// result dtype. Reference: the unary/binary/cast nodes its steps name, in order.
    Fused { expr: ElementwiseExpr },
    /// FUSED (new): matmul with an elementwise epilogue. Inputs: a, b, bias if `bias` (as
    /// [`Op::MatMul`]), then the epilogue's extra inputs. Epilogue slot 0 is the matmul result
    /// (bias added); slot k ≥ 1 is extra input k−1, broadcast to the matmul's output shape
    /// (e.g. `gate·acc + residual`, `gelu_tanh(acc)`). Output: the matmul's shape, the
    /// epilogue's dtype. Reference: MatMul then the epilogue's ops.
    MatMulEpilogue { trans_a: bool, trans_b: bool, bias: bool, epilogue: ElementwiseExpr },
    /// FUSED (new): conv3d with an elementwise epilogue. Inputs: x, w, bias if `bias` (as
    /// [`Op::Conv3d`]), then the epilogue's extra inputs; slots as in [`Op::MatMulEpilogue`].
    Conv3dEpilogue { stride: [usize; 3], pad: [[usize; 2]; 3], bias: bool, epilogue: ElementwiseExpr },
    /// FUSED (new): `modulate(layer_norm(x, no affine, eps), scale, shift)`. Inputs: x,
    /// scale, shift (both broadcast to x). Output like x.
    LayerNormModulate { eps: f64 },
    /// FUSED (new): RMS norm across heads, then the interleaved rotary embedding per head:
    /// `rope(reshape(rms_norm(x, w, last axis, mean-square, eps), [.., S, heads, C/heads]),
    /// cos, sin)`. Inputs: x `[.., S, C]`, weight `[C]`, cos `[S, C/heads]`, sin
    /// `[S, C/heads]` (f32). Output `[.., S, heads, C/heads]`.
    RmsNormRope { eps: f64, heads: usize },
    /// FUSED (new): RMS norm with an elementwise epilogue (the VAE's norm → silu). Inputs: x,
    /// weight if `weight` (as [`Op::RmsNorm`]), then the epilogue's extra inputs; epilogue
    /// slot 0 is the normalised value, slots k ≥ 1 extra input k−1 broadcast to x's shape.
    RmsNormEpilogue { axis: usize, eps: f64, style: RmsStyle, weight: bool, epilogue: ElementwiseExpr },
}

/// How many inputs an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exact(usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exact(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

impl Op {
    /// The op's name in the text form and in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Constant { .. } => "constant",
            Op::RopeTable { .. } => "rope_table",
            Op::RelPositionBucket { .. } => "rel_position_bucket",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Cast { .. } => "cast",
            Op::MatMul { .. } => "matmul",
            Op::Attention { .. } => "attention",
            Op::Conv3d { .. } => "conv3d",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Modulate => "modulate",
            Op::Rope => "rope",
            Op::Softmax { .. } => "softmax",
            Op::Reduce { .. } => "reduce",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Upsample { .. } => "upsample",
            Op::Gather => "gather",
            Op::TimestepEmbedding { .. } => "timestep_embedding",
            Op::Fused { .. } => "fused",
            Op::MatMulEpilogue { .. } => "matmul_epilogue",
            Op::Conv3dEpilogue { .. } => "conv3d_epilogue",
            Op::LayerNormModulate { .. } => "layer_norm_modulate",
            Op::RmsNormRope { .. } => "rms_norm_rope",
            Op::RmsNormEpilogue { .. } => "rms_norm_epilogue",
        }
    }

    pub fn arity(&self) -> Arity {
        let opt = |b: bool| usize::from(b);
        match self {
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Constant { .. }
            | Op::RopeTable { .. }
            | Op::RelPositionBucket { .. } => Arity::Exact(0),
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Slice { .. }
            | Op::Upsample { .. }
            | Op::TimestepEmbedding { .. } => Arity::Exact(1),
            Op::Binary(_) | Op::Gather => Arity::Exact(2),
            Op::MatMul { bias, .. } => Arity::Exact(2 + opt(*bias)),
            Op::Attention { bias, mask, .. } => Arity::Exact(3 + opt(*bias) + opt(*mask)),
            Op::Conv3d { bias, .. } => Arity::Exact(2 + opt(*bias)),
            Op::RmsNorm { weight, .. } => Arity::Exact(1 + opt(*weight)),
            Op::LayerNorm { affine, .. } => Arity::Exact(1 + 2 * opt(*affine)),
            Op::Modulate | Op::Rope => Arity::Exact(3),
            Op::Concat { .. } => Arity::AtLeast(1),
            Op::Fused { expr } => Arity::Exact(expr.num_inputs()),
            Op::MatMulEpilogue { bias, epilogue, .. } | Op::Conv3dEpilogue { bias, epilogue, .. } => {
                Arity::Exact(2 + opt(*bias) + epilogue.num_inputs().saturating_sub(1))
            }
            Op::LayerNormModulate { .. } => Arity::Exact(3),
            Op::RmsNormRope { .. } => Arity::Exact(4),
            Op::RmsNormEpilogue { weight, epilogue, .. } => {
                Arity::Exact(1 + opt(*weight) + epilogue.num_inputs().saturating_sub(1))
            }
        }
    }

    /// Leaf ops take no inputs and have a declared (not inferred) shape and dtype.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. })
    }

    /// Ops that only move data (no arithmetic): reshape, permute, slice, concat.
    pub fn is_view(&self) -> bool {
        matches!(self, Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. })
    }

    /// Elementwise ops (one output element from the same-index input elements).
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Modulate | Op::Fused { .. })
    }

    /// Ops made by the fusion pass (each has an unfused composition as its reference).
    pub fn is_fused(&self) -> bool {
        matches!(
            self,
            Op::Fused { .. }
                | Op::MatMulEpilogue { .. }
                | Op::Conv3dEpilogue { .. }
                | Op::LayerNormModulate { .. }
                | Op::RmsNormRope { .. }
                | Op::RmsNormEpilogue { .. }
        )
    }
}

/// umT5 bidirectional relative-position bucket of `rel = key_pos − query_pos`
/// (transformers' `_relative_position_bucket`, the logarithm in f32).
pub fn t5_relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> i64 {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if rel > 0 { half } else { 0 };
    let n = rel.unsigned_abs() as i64;
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln();
        let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket
}
