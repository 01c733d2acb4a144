//! Plain unfused compositions of the fused ops from primitive ops, in f32. Each follows the
//! op's documented maths (`vidrt_ir::Op`) step by step, with no shortcut a fused kernel
//! would take; the harness runs them on the reference backend.

use vidrt_ir::{BinaryOp, DType, Graph, NodeId, ReduceOp, Result, RmsStyle, Shape, UnaryOp};

/// A rank-0 f32 constant.
pub fn scalar(g: &mut Graph, v: f64) -> Result<NodeId> {
    g.constant(v, Shape::scalar(), DType::F32)
}

fn un(g: &mut Graph, op: UnaryOp, x: NodeId) -> Result<NodeId> {
    g.unary(op, x)
}

fn dims(g: &Graph, x: NodeId) -> Vec<usize> {
    g.shape(x).dims().to_vec()
}

/// Swaps the last two axes.
fn transpose(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let r = g.shape(x).rank();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    g.permute(x, &perm)
}

/// `op(a)·op(b) (+ bias)` as a broadcast product and a sum:
/// `reduce_sum(a[.., M, K, 1] · b[.., 1, K, N], K)`.
pub fn matmul(
    g: &mut Graph,
    a: NodeId,
    b: NodeId,
    trans_a: bool,
    trans_b: bool,
    bias: Option<NodeId>,
) -> Result<NodeId> {
    let a = if trans_a { transpose(g, a)? } else { a };
    let b = if trans_b { transpose(g, b)? } else { b };
    let mut ad = dims(g, a);
    ad.push(1);
    let mut bd = dims(g, b);
    let br = bd.len();
    bd.insert(br - 2, 1);
    let a3 = g.reshape(a, ad)?;
    let b3 = g.reshape(b, bd)?;
    let prod = g.mul(a3, b3)?;
    let r = g.shape(prod).rank();
    let y = g.reduce(ReduceOp::Sum, prod, &[r - 2], false)?;
    match bias {
        Some(bias) => g.add_(y, bias),
        None => Ok(y),
    }
}

/// `exp(x − max) / Σ exp(x − max)` along `axis`.
pub fn softmax(g: &mut Graph, x: NodeId, axis: usize) -> Result<NodeId> {
    let m = g.reduce(ReduceOp::Max, x, &[axis], true)?;
    let d = g.sub(x, m)?;
    let e = un(g, UnaryOp::Exp, d)?;
    let s = g.reduce(ReduceOp::Sum, e, &[axis], true)?;
    g.div(e, s)
}

/// Attention in BSHD as matmul, scale, bias, key mask, softmax, matmul. The mask `[B, Sk]`
/// (non-zero keeps) becomes an additive `(mask ≠ 0 ? 0 : −1e30)` for masks of 0 and 1.
pub fn attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    scale: f64,
    bias: Option<NodeId>,
    mask: Option<NodeId>,
) -> Result<NodeId> {
    let qh = g.permute(q, &[0, 2, 1, 3])?; // [B, H, Sq, D]
    let kt = g.permute(k, &[0, 2, 3, 1])?; // [B, H, D, Sk]
    let vh = g.permute(v, &[0, 2, 1, 3])?; // [B, H, Sk, Dv]
    let s = g.matmul(qh, kt, false, false)?;
    let mut s = un(g, UnaryOp::MulScalar(scale), s)?;
    if let Some(b) = bias {
        s = g.add_(s, b)?;
    }
    if let Some(m) = mask {
        let md = dims(g, m);
        let m = if g.dtype(m) == DType::F32 { m } else { g.cast(m, DType::F32)? };
        let off = un(g, UnaryOp::AddScalar(-1.0), m)?;
        let neg = un(g, UnaryOp::MulScalar(1e30), off)?;
        let neg = g.reshape(neg, [md[0], 1, 1, md[1]])?;
        s = g.add_(s, neg)?;
    }
    let p = softmax(g, s, 3)?;
    let o = g.matmul(p, vh, false, false)?; // [B, H, Sq, Dv]
    g.permute(o, &[0, 2, 1, 3])
}

/// Every `stride`-th entry of `axis` starting at `start`, `count` of them, through a slice,
/// a reshape that splits the axis into `[count, stride]`, and a slice of the first column.
/// The axis must hold at least `start + stride·count` entries.
fn strided(g: &mut Graph, x: NodeId, axis: usize, start: usize, stride: usize, count: usize) -> Result<NodeId> {
    let s = g.slice(x, axis, start, start + stride * count)?;
    if stride == 1 {
        return Ok(s);
    }
    let d = dims(g, s);
    let split: Vec<usize> = [&d[..axis], &[count, stride], &d[axis + 1..]].concat();
    let r = g.reshape(s, split)?;
    let c = g.slice(r, axis + 1, 0, 1)?;
    let mut back = d;
    back[axis] = count;
    g.reshape(c, back)
}

/// Zero padding of `axis` by concatenating zero constants before and after.
fn pad_axis(g: &mut Graph, x: NodeId, axis: usize, before: usize, after: usize) -> Result<NodeId> {
    let d = dims(g, x);
    let mut parts = Vec::new();
    let zeros = |g: &mut Graph, n: usize| {
        let mut s = d.clone();
        s[axis] = n;
        g.constant(0.0, s, DType::F32)
    };
    if before > 0 {
        parts.push(zeros(g, before)?);
    }
    parts.push(x);
    if after > 0 {
        parts.push(zeros(g, after)?);
    }
    if parts.len() == 1 {
        return Ok(x);
    }
    g.concat(&parts, axis)
}

/// Conv3d as explicit zero padding (concat with constants), one strided slice per kernel
/// tap, the taps concatenated into columns `[N, Ci·taps, P]`, and a matmul with the weight
/// viewed as `[Co, Ci·taps]`, plus the bias.
pub fn conv3d(
    g: &mut Graph,
    x: NodeId,
    w: NodeId,
    bias: Option<NodeId>,
    stride: [usize; 3],
    pad: [[usize; 2]; 3],
) -> Result<NodeId> {
    let (xd, wd) = (dims(g, x), dims(g, w));
    let (n, ci, co) = (xd[0], xd[1], wd[0]);
    let k = [wd[2], wd[3], wd[4]];
    let mut out = [0usize; 3];
    let mut xp = x;
    for ax in 0..3 {
        let padded = xd[2 + ax] + pad[ax][0] + pad[ax][1];
        out[ax] = (padded - k[ax]) / stride[ax] + 1;
        // Extra zeros past the end so every tap's strided slice fits.
        let extra = (k[ax] - 1 + stride[ax] * out[ax]).saturating_sub(padded);
        xp = pad_axis(g, xp, 2 + ax, pad[ax][0], pad[ax][1] + extra)?;
    }
    let p = out[0] * out[1] * out[2];
    let mut taps = Vec::new();
    for dt in 0..k[0] {
        let xt = strided(g, xp, 2, dt, stride[0], out[0])?;
        for dh in 0..k[1] {
            let xh = strided(g, xt, 3, dh, stride[1], out[1])?;
            for dw in 0..k[2] {
                let xw = strided(g, xh, 4, dw, stride[2], out[2])?;
                taps.push(g.reshape(xw, [n, ci, 1, p])?);
            }
        }
    }
    let nt = taps.len();
    let cols = g.concat(&taps, 2)?; // [N, Ci, taps, P]
    let cols = g.reshape(cols, [n, ci * nt, p])?;
    let w2 = g.reshape(w, [co, ci * nt])?;
    let mut y = g.matmul(w2, cols, false, false)?; // [N, Co, P]
    if let Some(b) = bias {
        let b = g.reshape(b, [co, 1])?;
        y = g.add_(y, b)?;
    }
    g.reshape(y, [n, co, out[0], out[1], out[2]])
}

/// RMS norm over `axis`: `x·rsqrt(mean(x²) + eps)` or `x / max(‖x‖₂, eps)·√C`, times the
/// weight viewed as `[C, 1, ..]` against `axis`.
pub fn rms_norm(
    g: &mut Graph,
    x: NodeId,
    weight: Option<NodeId>,
    axis: usize,
    eps: f64,
    style: RmsStyle,
) -> Result<NodeId> {
    let xd = dims(g, x);
    let sq = un(g, UnaryOp::Square, x)?;
    let mut y = match style {
        RmsStyle::MeanSquare => {
            let ms = g.reduce(ReduceOp::Mean, sq, &[axis], true)?;
            let ms = un(g, UnaryOp::AddScalar(eps), ms)?;
            let r = un(g, UnaryOp::Rsqrt, ms)?;
            g.mul(x, r)?
        }
        RmsStyle::L2Clamp => {
            let ss = g.reduce(ReduceOp::Sum, sq, &[axis], true)?;
            let norm = un(g, UnaryOp::Sqrt, ss)?;
            let e = scalar(g, eps)?;
            let den = g.binary(BinaryOp::Max, norm, e)?;
            let y = g.div(x, den)?;
            un(g, UnaryOp::MulScalar((xd[axis] as f64).sqrt()), y)?
        }
    };
    if let Some(w) = weight {
        let mut wd = vec![xd[axis]];
        wd.extend(std::iter::repeat_n(1, xd.len() - 1 - axis));
        let w = g.reshape(w, wd)?;
        y = g.mul(y, w)?;
    }
    Ok(y)
}

/// `(x − mean)·rsqrt(var + eps)` over the last axis (biased variance), then `·w + b`.
pub fn layer_norm(g: &mut Graph, x: NodeId, affine: Option<(NodeId, NodeId)>, eps: f64) -> Result<NodeId> {
    let last = g.shape(x).rank() - 1;
    let mu = g.reduce(ReduceOp::Mean, x, &[last], true)?;
    let xc = g.sub(x, mu)?;
    let sq = un(g, UnaryOp::Square, xc)?;
    let var = g.reduce(ReduceOp::Mean, sq, &[last], true)?;
    let ve = un(g, UnaryOp::AddScalar(eps), var)?;
    let r = un(g, UnaryOp::Rsqrt, ve)?;
    let y = g.mul(xc, r)?;
    match affine {
        Some((w, b)) => {
            let yw = g.mul(y, w)?;
            g.add_(yw, b)
        }
        None => Ok(y),
    }
}

/// `x·(1 + scale) + shift`.
pub fn modulate(g: &mut Graph, x: NodeId, scale: NodeId, shift: NodeId) -> Result<NodeId> {
    let s1 = un(g, UnaryOp::AddScalar(1.0), scale)?;
    let xs = g.mul(x, s1)?;
    g.add_(xs, shift)
}

/// Interleaved rotary embedding through pairs: x viewed as `[.., S, H, hd/2, 2]`, tables
/// as `[S, 1, hd/2, 2]`; `(a·c₀ − b·s₀, a·s₁ + b·c₁)` for each pair `(a, b)`.
pub fn rope(g: &mut Graph, x: NodeId, cos: NodeId, sin: NodeId) -> Result<NodeId> {
    let xd = dims(g, x);
    let r = xd.len();
    let (s, hd) = (xd[r - 3], xd[r - 1]);
    let mut pd = xd.clone();
    pd[r - 1] = hd / 2;
    pd.push(2);
    let xp = g.reshape(x, pd)?;
    let a = g.slice(xp, r, 0, 1)?;
    let b = g.slice(xp, r, 1, 2)?;
    let mut half = |t: NodeId, i: usize| -> Result<NodeId> {
        let t = g.reshape(t, [s, 1, hd / 2, 2])?;
        g.slice(t, 3, i, i + 1)
    };
    let (c0, c1, s0, s1) = (half(cos, 0)?, half(cos, 1)?, half(sin, 0)?, half(sin, 1)?);
    let ac = g.mul(a, c0)?;
    let bs = g.mul(b, s0)?;
    let even = g.sub(ac, bs)?;
    let as_ = g.mul(a, s1)?;
    let bc = g.mul(b, c1)?;
    let odd = g.add_(as_, bc)?;
    let y = g.concat(&[even, odd], r)?;
    g.reshape(y, xd)
}

/// Nearest-exact upsampling by integer factors: x as `[.., H, 1, W, 1]` times ones
/// `[f₀, 1, f₁]`, viewed as `[.., H·f₀, W·f₁]`.
pub fn upsample(g: &mut Graph, x: NodeId, factors: [usize; 2]) -> Result<NodeId> {
    let xd = dims(g, x);
    let r = xd.len();
    let (h, w) = (xd[r - 2], xd[r - 1]);
    let spread: Vec<usize> = [&xd[..r - 2], &[h, 1, w, 1]].concat();
    let xs = g.reshape(x, spread)?;
    let ones = g.constant(1.0, [factors[0], 1, factors[1]], DType::F32)?;
    let y = g.mul(xs, ones)?;
    let out: Vec<usize> = [&xd[..r - 2], &[h * factors[0], w * factors[1]]].concat();
    g.reshape(y, out)
}

/// `1 / (1 + exp(−x))`.
pub fn sigmoid(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let n = un(g, UnaryOp::Neg, x)?;
    let e = un(g, UnaryOp::Exp, n)?;
    let d = un(g, UnaryOp::AddScalar(1.0), e)?;
    un(g, UnaryOp::Recip, d)
}

/// `1 − 2 / (exp(2x) + 1)`.
pub fn tanh(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let x2 = un(g, UnaryOp::MulScalar(2.0), x)?;
    let e = un(g, UnaryOp::Exp, x2)?;
    let d = un(g, UnaryOp::AddScalar(1.0), e)?;
    let r = un(g, UnaryOp::Recip, d)?;
    let m = un(g, UnaryOp::MulScalar(-2.0), r)?;
    un(g, UnaryOp::AddScalar(1.0), m)
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, tanh itself composed.
pub fn gelu_tanh(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let x2 = un(g, UnaryOp::Square, x)?;
    let x3 = g.mul(x2, x)?;
    let c = un(g, UnaryOp::MulScalar(0.044715), x3)?;
    let inner = g.add_(x, c)?;
    let inner = un(g, UnaryOp::MulScalar((2.0 / std::f64::consts::PI).sqrt()), inner)?;
    let t = tanh(g, inner)?;
    let t1 = un(g, UnaryOp::AddScalar(1.0), t)?;
    let y = g.mul(x, t1)?;
    un(g, UnaryOp::MulScalar(0.5), y)
}

/// A composition of a unary function from other primitives, or `None` for the ones that
/// are primitives themselves (exp, log, sqrt, sin, cos, erf-GELU: host references).
pub fn unary(g: &mut Graph, op: UnaryOp, x: NodeId) -> Option<Result<NodeId>> {
    let r = (|| -> Result<Option<NodeId>> {
        Ok(Some(match op {
            UnaryOp::Exp | UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Sin | UnaryOp::Cos | UnaryOp::GeluErf => {
                return Ok(None)
            }
            UnaryOp::Neg => un(g, UnaryOp::MulScalar(-1.0), x)?,
            UnaryOp::Abs => {
                let n = un(g, UnaryOp::Neg, x)?;
                g.binary(BinaryOp::Max, x, n)?
            }
            UnaryOp::Rsqrt => {
                let s = un(g, UnaryOp::Sqrt, x)?;
                un(g, UnaryOp::Recip, s)?
            }
            UnaryOp::Recip => {
                let one = scalar(g, 1.0)?;
                g.div(one, x)?
            }
            UnaryOp::Square => g.mul(x, x)?,
            UnaryOp::Tanh => tanh(g, x)?,
            UnaryOp::Sigmoid => sigmoid(g, x)?,
            UnaryOp::Silu => {
                let s = sigmoid(g, x)?;
                g.mul(x, s)?
            }
            UnaryOp::GeluTanh => gelu_tanh(g, x)?,
            UnaryOp::AddScalar(c) => {
                let c = scalar(g, c)?;
                g.add_(x, c)?
            }
            UnaryOp::MulScalar(c) => {
                let c = scalar(g, c)?;
                g.mul(x, c)?
            }
            UnaryOp::Clamp(lo, hi) => {
                let lo = scalar(g, lo)?;
                let hi = scalar(g, hi)?;
                let m = g.binary(BinaryOp::Max, x, lo)?;
                g.binary(BinaryOp::Min, m, hi)?
            }
        }))
    })();
    r.transpose()
}

/// An elementwise expression (`Op::Fused` body or an epilogue) as its primitive nodes:
/// one unary, binary or cast node per step, slot k read from `slots[k]`. Casts inside the
/// expression become f32 → dtype → f32 round trips, so the composition stays in f32.
pub fn expr(g: &mut Graph, e: &vidrt_ir::ElementwiseExpr, slots: &[NodeId]) -> Result<NodeId> {
    use vidrt_ir::ExprStep;
    let mut vals: Vec<NodeId> = Vec::with_capacity(e.steps.len());
    for s in &e.steps {
        let v = match *s {
            ExprStep::Input(k) => slots[k],
            ExprStep::Unary(u, a) => un(g, u, vals[a])?,
            ExprStep::Binary(b, x, y) => g.binary(b, vals[x], vals[y])?,
            ExprStep::Cast(d, a) => {
                let c = g.cast(vals[a], d)?;
                g.cast(c, DType::F32)?
            }
        };
        vals.push(v);
    }
    vals.last().copied().ok_or_else(|| vidrt_ir::IrError::Invalid {
        node: 0,
        op: "fused",
        name: String::new(),
        reason: "empty expression".into(),
    })
}
