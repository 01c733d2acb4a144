//! Shape and dtype inference: one rule per op. Returns a plain reason on failure; the graph
//! wraps it with the node's id, op and name.

use crate::op::{Op, UnaryOp};
use crate::{DType, Shape};

/// What an op's inputs look like.
pub type InputInfo<'a> = (&'a Shape, DType);

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn float(name: &str, d: DType) -> Result<(), String> {
    ensure(d.is_float(), || format!("{name} must be a float tensor, got {d}"))
}

fn same_dtype(a: DType, b: DType, what: &str) -> Result<(), String> {
    ensure(a == b, || format!("{what}: dtypes differ ({a} vs {b})"))
}

/// Infers the output shape and dtype of `op` applied to `inputs`. Leaf ops return
/// `declared`, which they require.
pub fn infer(op: &Op, inputs: &[InputInfo<'_>], declared: Option<(&Shape, DType)>) -> Result<(Shape, DType), String> {
    if !op.arity().accepts(inputs.len()) {
        return Err(format!("expects {} inputs, got {}", op.arity(), inputs.len()));
    }
    let s = |i: usize| inputs[i].0;
    let d = |i: usize| inputs[i].1;
    match op {
        Op::Input { name } | Op::Weight { name } => {
            ensure(!name.is_empty(), || "a leaf needs a non-empty name".into())?;
            let (sh, dt) = declared.ok_or("a leaf needs a declared shape and dtype")?;
            ensure(sh.checked_numel().is_some(), || format!("shape {sh} overflows"))?;
            Ok((sh.clone(), dt))
        }
        Op::Constant { value } => {
            let (sh, dt) = declared.ok_or("a constant needs a declared shape and dtype")?;
            ensure(sh.checked_numel().is_some(), || format!("shape {sh} overflows"))?;
            ensure(value.is_finite() || dt.is_float(), || "integer constants must be finite".into())?;
            Ok((sh.clone(), dt))
        }
        Op::RopeTable { grid, dims, theta, .. } => {
            ensure(dims.iter().all(|&x| x % 2 == 0 && x > 0), || {
                format!("axis dims {dims:?} must be even and positive")
            })?;
            ensure(grid.iter().all(|&x| x > 0), || format!("grid {grid:?} must be positive"))?;
            ensure(*theta > 0.0, || "theta must be positive".into())?;
            let rows = grid.iter().try_fold(1usize, |a, &g| a.checked_mul(g));
            let cols = dims.iter().try_fold(0usize, |a, &d| a.checked_add(d));
            match (rows, cols) {
                (Some(rows), Some(cols)) => Ok((Shape::from([rows, cols]), DType::F32)),
                _ => Err(format!("rope table of grid {grid:?} and dims {dims:?} overflows")),
            }
        }
        Op::RelPositionBucket { q_len, k_len, num_buckets, max_distance } => {
            ensure(*num_buckets >= 4 && num_buckets % 2 == 0, || "num_buckets must be even and ≥ 4".into())?;
            ensure(*max_distance > num_buckets / 4, || "max_distance must exceed num_buckets/4".into())?;
            Ok((Shape::from([*q_len, *k_len]), DType::I64))
        }
        Op::Unary(u) => {
            float("x", d(0))?;
            if let UnaryOp::Clamp(lo, hi) = u {
                ensure(lo <= hi, || format!("clamp bounds {lo} > {hi}"))?;
            }
            Ok((s(0).clone(), d(0)))
        }
        Op::Binary(_) => {
            same_dtype(d(0), d(1), "binary op")?;
            let out =
                Shape::broadcast(s(0), s(1)).ok_or_else(|| format!("shapes {} and {} do not broadcast", s(0), s(1)))?;
            Ok((out, d(0)))
        }
        Op::Cast { to } => Ok((s(0).clone(), *to)),
        Op::MatMul { trans_a, trans_b, bias } => {
            let (a, b) = (s(0), s(1));
            float("a", d(0))?;
            same_dtype(d(0), d(1), "matmul")?;
            ensure(a.rank() >= 2 && b.rank() >= 2, || format!("matmul needs rank ≥ 2 operands, got {a} and {b}"))?;
            let (ar, br) = (a.rank(), b.rank());
            let (m, ka) = if *trans_a { (a.0[ar - 1], a.0[ar - 2]) } else { (a.0[ar - 2], a.0[ar - 1]) };
            let (kb, n) = if *trans_b { (b.0[br - 1], b.0[br - 2]) } else { (b.0[br - 2], b.0[br - 1]) };
            ensure(ka == kb, || format!("inner dimensions differ: a {a} (K={ka}) and b {b} (K={kb})"))?;
            let batch = Shape::broadcast(&Shape::from(&a.0[..ar - 2]), &Shape::from(&b.0[..br - 2]))
                .ok_or_else(|| format!("batch axes of {a} and {b} do not broadcast"))?;
            if *bias {
                ensure(s(2).0 == [n], || format!("bias must be [{n}], got {}", s(2)))?;
                same_dtype(d(0), d(2), "matmul bias")?;
            }
            let mut out = batch.0;
            out.extend([m, n]);
            Ok((Shape(out), d(0)))
        }
        Op::Attention { scale, bias, mask } => {
            let (q, k, v) = (s(0), s(1), s(2));
            ensure(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, || {
                format!("attention needs q, k, v of rank 4 [B,S,H,D], got {q}, {k}, {v}")
            })?;
            float("q", d(0))?;
            same_dtype(d(0), d(1), "attention k")?;
            same_dtype(d(0), d(2), "attention v")?;
            let (b, sq, h, dh) = (q.0[0], q.0[1], q.0[2], q.0[3]);
            let sk = k.0[1];
            ensure(k.0[0] == b && k.0[2] == h && k.0[3] == dh, || format!("k {k} does not match q {q}"))?;
            ensure(v.0[0] == b && v.0[1] == sk && v.0[2] == h, || format!("v {v} does not match k {k}"))?;
            ensure(sk > 0, || "attention over zero keys".into())?;
            ensure(scale.is_finite(), || "scale must be finite".into())?;
            let mut next = 3;
            if *bias {
                let target = Shape::from([b, h, sq, sk]);
                ensure(s(next).broadcasts_to(&target), || format!("bias {} does not broadcast to {target}", s(next)))?;
                same_dtype(d(0), d(next), "attention bias")?;
                next += 1;
            }
            if *mask {
                ensure(s(next).0 == [b, sk], || format!("key mask must be [{b},{sk}], got {}", s(next)))?;
            }
            Ok((Shape::from([b, sq, h, v.0[3]]), d(0)))
        }
        Op::Conv3d { stride, pad, bias } => {
            let (x, w) = (s(0), s(1));
            float("x", d(0))?;
            same_dtype(d(0), d(1), "conv3d weight")?;
            ensure(x.rank() == 5 && w.rank() == 5, || {
                format!("conv3d needs x [N,C,T,H,W] and w [Co,Ci,kt,kh,kw], got {x} and {w}")
            })?;
            ensure(x.0[1] == w.0[1], || format!("input channels differ: x {x}, w {w}"))?;
            ensure(stride.iter().all(|&v| v > 0), || "stride must be positive".into())?;
            let mut out = vec![x.0[0], w.0[0]];
            for ax in 0..3 {
                let padded = x.0[2 + ax]
                    .checked_add(pad[ax][0])
                    .and_then(|v| v.checked_add(pad[ax][1]))
                    .ok_or_else(|| format!("axis {ax}: padding {:?} overflows", pad[ax]))?;
                let k = w.0[2 + ax];
                ensure(k > 0 && padded >= k, || {
                    format!("axis {ax}: padded extent {padded} is smaller than kernel {k}")
                })?;
                out.push((padded - k) / stride[ax] + 1);
            }
            if *bias {
                ensure(s(2).0 == [w.0[0]], || format!("bias must be [{}], got {}", w.0[0], s(2)))?;
                same_dtype(d(0), d(2), "conv3d bias")?;
            }
            Ok((Shape(out), d(0)))
        }
        Op::RmsNorm { axis, eps, weight, .. } => {
            float("x", d(0))?;
            ensure(*axis < s(0).rank(), || format!("axis {axis} out of range for {}", s(0)))?;
            ensure(*eps >= 0.0, || "eps must be ≥ 0".into())?;
            if *weight {
                let c = s(0).0[*axis];
                ensure(s(1).numel() == c, || format!("weight {} must have {c} elements", s(1)))?;
                same_dtype(d(0), d(1), "rms_norm weight")?;
            }
            Ok((s(0).clone(), d(0)))
        }
        Op::LayerNorm { eps, affine } => {
            float("x", d(0))?;
            ensure(s(0).rank() >= 1, || "layer_norm needs rank ≥ 1".into())?;
            ensure(*eps >= 0.0, || "eps must be ≥ 0".into())?;
            if *affine {
                let dd = s(0).last();
                for i in 1..3 {
                    ensure(s(i).0 == [dd], || format!("affine parameter {} must be [{dd}]", s(i)))?;
                    same_dtype(d(0), d(i), "layer_norm affine")?;
                }
            }
            Ok((s(0).clone(), d(0)))
        }
        Op::Modulate => {
            float("x", d(0))?;
            for (i, what) in [(1, "scale"), (2, "shift")] {
                ensure(s(i).broadcasts_to(s(0)), || format!("{what} {} does not broadcast to {}", s(i), s(0)))?;
                same_dtype(d(0), d(i), what)?;
            }
            Ok((s(0).clone(), d(0)))
        }
        Op::Rope => {
            let x = s(0);
            float("x", d(0))?;
            ensure(x.rank() >= 3, || format!("rope needs x [.., S, H, hd], got {x}"))?;
            let (sl, hd) = (x.0[x.rank() - 3], x.0[x.rank() - 1]);
            ensure(hd % 2 == 0, || format!("head dim {hd} must be even"))?;
            for i in 1..3 {
                ensure(s(i).0 == [sl, hd], || format!("table {} must be [{sl},{hd}]", s(i)))?;
                ensure(d(i) == DType::F32, || "rope tables must be f32".into())?;
            }
            Ok((x.clone(), d(0)))
        }
        Op::Softmax { axis } => {
            float("x", d(0))?;
            ensure(*axis < s(0).rank(), || format!("axis {axis} out of range for {}", s(0)))?;
            Ok((s(0).clone(), d(0)))
        }
        Op::Reduce { axes, keepdim, .. } => {
            let x = s(0);
            float("x", d(0))?;
            ensure(!axes.is_empty(), || "reduce needs at least one axis".into())?;
            ensure(axes.windows(2).all(|w| w[0] < w[1]), || format!("axes {axes:?} must be strictly increasing"))?;
            ensure(axes.iter().all(|&a| a < x.rank()), || format!("axes {axes:?} out of range for {x}"))?;
            let mut out = Vec::new();
            for (i, &dim) in x.0.iter().enumerate() {
                if axes.contains(&i) {
                    if *keepdim {
                        out.push(1);
                    }
                } else {
                    out.push(dim);
                }
            }
            Ok((Shape(out), d(0)))
        }
        Op::Reshape { shape } => {
            ensure(shape.checked_numel() == Some(s(0).numel()), || format!("cannot reshape {} to {shape}", s(0)))?;
            Ok((shape.clone(), d(0)))
        }
        Op::Permute { perm } => {
            let x = s(0);
            let mut seen = vec![false; x.rank()];
            ensure(perm.len() == x.rank(), || format!("perm {perm:?} has the wrong length for {x}"))?;
            for &p in perm {
                ensure(p < x.rank() && !seen[p], || format!("{perm:?} is not a permutation"))?;
                seen[p] = true;
            }
            Ok((Shape(perm.iter().map(|&p| x.0[p]).collect()), d(0)))
        }
        Op::Slice { axis, start, end } => {
            let x = s(0);
            ensure(*axis < x.rank(), || format!("axis {axis} out of range for {x}"))?;
            ensure(start <= end && *end <= x.0[*axis], || {
                format!("slice {start}..{end} out of range for axis {axis} of {x}")
            })?;
            let mut out = x.clone();
            out.0[*axis] = end - start;
            Ok((out, d(0)))
        }
        Op::Concat { axis } => {
            let first = s(0);
            ensure(*axis < first.rank(), || format!("axis {axis} out of range for {first}"))?;
            let mut total = 0usize;
            for (i, (sh, dt)) in inputs.iter().enumerate() {
                same_dtype(d(0), *dt, "concat")?;
                let ok = sh.rank() == first.rank()
                    && sh.0.iter().zip(&first.0).enumerate().all(|(ax, (a, b))| ax == *axis || a == b);
                ensure(ok, || format!("input {i} {sh} does not match {first} outside axis {axis}"))?;
                total = total.checked_add(sh.0[*axis]).ok_or_else(|| format!("concat along axis {axis} overflows"))?;
            }
            let mut out = first.clone();
            out.0[*axis] = total;
            Ok((out, d(0)))
        }
        Op::Upsample { factors } => {
            let x = s(0);
            float("x", d(0))?;
            ensure(x.rank() >= 2, || format!("upsample needs rank ≥ 2, got {x}"))?;
            ensure(factors.iter().all(|&f| f > 0), || "factors must be positive".into())?;
            let mut out = x.clone();
            let r = x.rank();
            for (ax, f) in [(r - 2, factors[0]), (r - 1, factors[1])] {
                out.0[ax] =
                    out.0[ax].checked_mul(f).ok_or_else(|| format!("upsampling {x} by {factors:?} overflows"))?;
            }
            Ok((out, d(0)))
        }
        Op::Gather => {
            let (table, ids) = (s(0), s(1));
            ensure(table.rank() == 2, || format!("table must be [V, D], got {table}"))?;
            ensure(d(1).is_int(), || format!("ids must be integers, got {}", d(1)))?;
            let mut out = ids.0.clone();
            out.push(table.0[1]);
            Ok((Shape(out), d(0)))
        }
        Op::TimestepEmbedding { dim, downscale_freq_shift, max_period, .. } => {
            ensure(s(0).rank() == 1, || format!("timesteps must be [B], got {}", s(0)))?;
            ensure(*dim >= 2 && dim % 2 == 0, || format!("dim {dim} must be even"))?;
            ensure((*dim as f64) / 2.0 - downscale_freq_shift > 0.0, || "downscale_freq_shift too large".into())?;
            ensure(*max_period > 0.0, || "max_period must be positive".into())?;
            Ok((Shape::from([s(0).0[0], *dim]), DType::F32))
        }
        Op::Fused { expr } => {
            let dts: Vec<DType> = inputs.iter().map(|i| i.1).collect();
            let steps = expr.step_dtypes(&dts)?;
            let mut out = Shape::from(Vec::<usize>::new());
            for (k, (sh, _)) in inputs.iter().enumerate() {
                out = Shape::broadcast(&out, sh)
                    .ok_or_else(|| format!("input {k} {sh} does not broadcast with the others ({out})"))?;
            }
            Ok((out, steps.last().copied().unwrap_or(DType::F32)))
        }
        Op::MatMulEpilogue { trans_a, trans_b, bias, epilogue } => {
            let base = Op::MatMul { trans_a: *trans_a, trans_b: *trans_b, bias: *bias };
            epilogue_infer(&base, 2 + usize::from(*bias), epilogue, inputs)
        }
        Op::Conv3dEpilogue { stride, pad, bias, epilogue } => {
            let base = Op::Conv3d { stride: *stride, pad: *pad, bias: *bias };
            epilogue_infer(&base, 2 + usize::from(*bias), epilogue, inputs)
        }
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => {
            let base = Op::RmsNorm { axis: *axis, eps: *eps, style: *style, weight: *weight };
            epilogue_infer(&base, 1 + usize::from(*weight), epilogue, inputs)
        }
        Op::LayerNormModulate { eps } => {
            let (sh, dt) = infer(&Op::LayerNorm { eps: *eps, affine: false }, &inputs[..1], None)?;
            infer(&Op::Modulate, &[(&sh, dt), inputs[1], inputs[2]], None)
        }
        Op::RmsNormRope { eps, heads } => {
            let x = s(0);
            ensure(x.rank() >= 2, || format!("rms_norm_rope needs x [.., S, C], got {x}"))?;
            let c = x.last();
            ensure(*heads > 0 && c % heads == 0, || format!("{c} channels do not split into {heads} heads"))?;
            let norm = Op::RmsNorm { axis: x.rank() - 1, eps: *eps, style: crate::RmsStyle::MeanSquare, weight: true };
            let (_, dt) = infer(&norm, &inputs[..2], None)?;
            let mut dims = x.0.clone();
            dims.pop();
            dims.extend([*heads, c / heads]);
            let heads_shape = Shape(dims);
            infer(&Op::Rope, &[(&heads_shape, dt), inputs[2], inputs[3]], None)
        }
    }
}

/// Inference for a base op (matmul, conv3d) followed by an elementwise epilogue whose slot 0
/// is the base result and slots 1.. the inputs after the base's `n_base`.
fn epilogue_infer(
    base: &Op,
    n_base: usize,
    epilogue: &crate::ElementwiseExpr,
    inputs: &[InputInfo<'_>],
) -> Result<(Shape, DType), String> {
    ensure(epilogue.num_inputs() >= 1, || "an epilogue must read slot 0 (the accumulator)".into())?;
    let (sh, dt) = infer(base, &inputs[..n_base], None)?;
    let mut dts = vec![dt];
    for (k, (es, ed)) in inputs[n_base..].iter().enumerate() {
        ensure(es.broadcasts_to(&sh), || format!("epilogue input {} {es} does not broadcast to {sh}", k + 1))?;
        dts.push(*ed);
    }
    let steps = epilogue.step_dtypes(&dts).map_err(|e| format!("epilogue: {e}"))?;
    Ok((sh, steps.last().copied().unwrap_or(dt)))
}
