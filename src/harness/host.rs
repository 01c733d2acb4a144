//! Naive host references in f64 for ops that have no composition from other ops:
//! transcendental unary functions, broadcasting binary ops, casts, reductions, data
//! movement, gathers and the positional tables. Written from the op's documentation with
//! explicit index arithmetic, sharing no code with any backend.

use vidrt_ir::{BinaryOp, DType, ReduceOp, Shape, Tensor, TensorData, TrigPart, UnaryOp};

/// Coordinates of flat index `i` in `dims` (row-major).
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut c = vec![0; dims.len()];
    for ax in (0..dims.len()).rev() {
        c[ax] = i % dims[ax].max(1);
        i /= dims[ax].max(1);
    }
    c
}

/// Flat index of `coords` in `dims` (row-major).
fn ravel(coords: &[usize], dims: &[usize]) -> usize {
    coords.iter().zip(dims).fold(0, |acc, (&c, &d)| acc * d + c)
}

/// The source index in `src` of output coordinates `c` under numpy broadcasting.
fn broadcast_source(c: &[usize], src: &[usize]) -> usize {
    let off = c.len() - src.len();
    let coords: Vec<usize> = src.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { c[off + i] }).collect();
    ravel(&coords, src)
}

fn f32_tensor(shape: impl Into<Shape>, v: impl IntoIterator<Item = f64>) -> Result<Tensor, String> {
    Tensor::from_f32(shape, v.into_iter().map(|x| x as f32).collect()).map_err(|e| e.to_string())
}

/// The elements of `t` at `idx`, as a tensor of `t`'s dtype and `shape` (exact).
fn pick(t: &Tensor, idx: &[usize], shape: Shape) -> Result<Tensor, String> {
    fn sel<T: Copy>(v: &[T], idx: &[usize]) -> Result<Vec<T>, String> {
        idx.iter().map(|&i| v.get(i).copied().ok_or_else(|| format!("index {i} out of range"))).collect()
    }
    let data = match t.data() {
        TensorData::F32(v) => TensorData::F32(sel(v, idx)?),
        TensorData::F16(v) => TensorData::F16(sel(v, idx)?),
        TensorData::BF16(v) => TensorData::BF16(sel(v, idx)?),
        TensorData::I32(v) => TensorData::I32(sel(v, idx)?),
        TensorData::I64(v) => TensorData::I64(sel(v, idx)?),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// erf by its Maclaurin series: within 1e-12 for |x| ≤ 4 (the alternating terms cancel
/// beyond f64's last bits there), ±1 beyond, where erfc < 2e-8.
pub fn erf(x: f64) -> f64 {
    if x.abs() > 4.0 {
        return x.signum();
    }
    let (mut sum, mut term, mut n) = (0.0f64, x, 0u32);
    // term_n = (−1)ⁿ x^(2n+1) / n!
    while n < 200 {
        let t = term / f64::from(2 * n + 1);
        sum += t;
        if t.abs() < 1e-17 * sum.abs().max(1e-300) {
            break;
        }
        n += 1;
        term *= -x * x / f64::from(n);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// A unary function in f64; `None` for the ones the harness composes instead.
pub fn unary_f64(op: UnaryOp, x: f64) -> Option<f64> {
    Some(match op {
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        _ => return None,
    })
}

pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    let v: Option<Vec<f64>> = x.to_f64_vec().into_iter().map(|a| unary_f64(op, a)).collect();
    let v = v.ok_or_else(|| format!("no host reference for {}", op.name()))?;
    f32_tensor(x.shape().clone(), v)
}

/// A broadcasting binary op: f64 for floats (result in f32), exact i64 for integers
/// (wrapping add/sub/mul, truncating division, saturating pow).
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let out = Shape::broadcast(a.shape(), b.shape()).ok_or("shapes do not broadcast")?;
    let od = out.dims().to_vec();
    let pairs: Vec<(usize, usize)> = (0..out.numel())
        .map(|i| {
            let c = unravel(i, &od);
            (broadcast_source(&c, a.dims()), broadcast_source(&c, b.dims()))
        })
        .collect();
    if a.dtype().is_int() {
        let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
        let v: Result<Vec<i64>, String> = pairs
            .iter()
            .map(|&(i, j)| {
                let (p, q) = (x[i], y[j]);
                Ok(match op {
                    BinaryOp::Add => p.wrapping_add(q),
                    BinaryOp::Sub => p.wrapping_sub(q),
                    BinaryOp::Mul => p.wrapping_mul(q),
                    BinaryOp::Div => p.checked_div(q).ok_or("integer division by zero")?,
                    BinaryOp::Max => p.max(q),
                    BinaryOp::Min => p.min(q),
                    BinaryOp::Pow => p.saturating_pow(u32::try_from(q).unwrap_or(0)),
                })
            })
            .collect();
        return Ok(Tensor::new(out, TensorData::I64(v?)).map_err(|e| e.to_string())?.cast(a.dtype()));
    }
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let v = pairs.iter().map(|&(i, j)| {
        let (p, q) = (x[i], y[j]);
        match op {
            BinaryOp::Add => p + q,
            BinaryOp::Sub => p - q,
            BinaryOp::Mul => p * q,
            BinaryOp::Div => p / q,
            BinaryOp::Max => p.max(q),
            BinaryOp::Min => p.min(q),
            BinaryOp::Pow => p.powf(q),
        }
    });
    f32_tensor(out, v)
}

/// Rounds `x` to the nearest value with `p` significand bits and minimum normal exponent
/// `emin` (ties to even); beyond `max` it is infinite.
fn round_to_format(x: f64, p: i32, emin: i32, max: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let e = (((x.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(emin);
    let q = 2f64.powi(e - (p - 1));
    let r = (x / q).round_ties_even() * q;
    if r.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        r
    }
}

/// `x` rounded to the float `dtype` (ties to even), from the format's parameters:
/// significand bits, minimum normal exponent and largest finite value.
fn round_float(x: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F16 => round_to_format(x, 11, -14, 65504.0),
        DType::BF16 => round_to_format(x, 8, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127)),
        _ => round_to_format(x, 24, -126, f64::from(f32::MAX)),
    }
}

/// f64 values as a tensor of `dtype`: floats rounded by [`round_float`] (then exactly
/// representable on the way through f32), integers truncated toward zero.
fn from_f64(shape: Shape, v: &[f64], dtype: DType) -> Result<Tensor, String> {
    let t = match dtype {
        DType::I32 => Tensor::new(shape, TensorData::I32(v.iter().map(|&a| a.trunc() as i32).collect())),
        DType::I64 => Tensor::new(shape, TensorData::I64(v.iter().map(|&a| a.trunc() as i64).collect())),
        _ => Tensor::from_f32(shape, v.iter().map(|&a| round_float(a, dtype) as f32).collect()),
    };
    Ok(t.map_err(|e| e.to_string())?.cast(dtype))
}

/// Converts to `to`: round to nearest even for floats, truncation toward zero for
/// float → integer.
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor, String> {
    from_f64(x.shape().clone(), &x.to_f64_vec(), to)
}

/// A tensor of `dtype` filled with `value` rounded to the dtype.
pub fn full(value: f64, shape: &[usize], dtype: DType) -> Result<Tensor, String> {
    let n = shape.iter().product();
    from_f64(Shape(shape.to_vec()), &vec![value; n], dtype)
}

/// Reduction over `axes` in f64.
pub fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor, String> {
    let xd = x.dims().to_vec();
    let kept: Vec<usize> = (0..xd.len()).filter(|a| !axes.contains(a)).collect();
    let kd: Vec<usize> = kept.iter().map(|&a| xd[a]).collect();
    let n_out: usize = kd.iter().product();
    let count: usize = axes.iter().map(|&a| xd[a]).product();
    let v = x.to_f64_vec();
    let mut acc: Vec<Vec<f64>> = vec![Vec::with_capacity(count); n_out];
    for (i, &val) in v.iter().enumerate() {
        let c = unravel(i, &xd);
        let kc: Vec<usize> = kept.iter().map(|&a| c[a]).collect();
        acc[ravel(&kc, &kd)].push(val);
    }
    let res = acc.iter().map(|vals| match op {
        ReduceOp::Sum => vals.iter().sum(),
        ReduceOp::Mean => vals.iter().sum::<f64>() / vals.len().max(1) as f64,
        ReduceOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
    });
    let shape: Vec<usize> =
        if keepdim { (0..xd.len()).map(|a| if axes.contains(&a) { 1 } else { xd[a] }).collect() } else { kd };
    f32_tensor(shape, res)
}

pub fn reshape(x: &Tensor, shape: &Shape) -> Result<Tensor, String> {
    let idx: Vec<usize> = (0..x.numel()).collect();
    pick(x, &idx, shape.clone())
}

/// `out[c] = x[c permuted back]`: output axis `i` is input axis `perm[i]`.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let xd = x.dims();
    let od: Vec<usize> = perm.iter().map(|&p| xd[p]).collect();
    let idx: Vec<usize> = (0..x.numel())
        .map(|i| {
            let oc = unravel(i, &od);
            let mut ic = vec![0; xd.len()];
            for (o, &p) in perm.iter().enumerate() {
                ic[p] = oc[o];
            }
            ravel(&ic, xd)
        })
        .collect();
    pick(x, &idx, Shape(od))
}

pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor, String> {
    let xd = x.dims();
    let mut od = xd.to_vec();
    od[axis] = end - start;
    let n: usize = od.iter().product();
    let idx: Vec<usize> = (0..n)
        .map(|i| {
            let mut c = unravel(i, &od);
            c[axis] += start;
            ravel(&c, xd)
        })
        .collect();
    pick(x, &idx, Shape(od))
}

/// Concatenation along `axis`, element by element.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = xs.first().ok_or("concat of nothing")?;
    let mut od = first.dims().to_vec();
    od[axis] = xs.iter().map(|t| t.dims()[axis]).sum();
    // Join the inputs into one flat buffer (exact: f16/bf16 widen to f32, i32 to i64),
    // pick from it, and narrow back.
    let offsets: Vec<usize> = xs.iter().scan(0, |s, t| Some(std::mem::replace(s, *s + t.numel()))).collect();
    let joined = match first.data() {
        TensorData::F32(_) => TensorData::F32(xs.iter().flat_map(|t| t.to_f32_vec()).collect()),
        TensorData::F16(_) | TensorData::BF16(_) => TensorData::F32(xs.iter().flat_map(|t| t.to_f32_vec()).collect()),
        TensorData::I32(_) | TensorData::I64(_) => TensorData::I64(xs.iter().flat_map(|t| t.to_i64_vec()).collect()),
    };
    let total = joined.len();
    let joined = Tensor::new([total], joined).map_err(|e| e.to_string())?;
    let n: usize = od.iter().product();
    let mut idx = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = unravel(i, &od);
        let mut part = 0;
        while c[axis] >= xs[part].dims()[axis] {
            c[axis] -= xs[part].dims()[axis];
            part += 1;
        }
        idx.push(offsets[part] + ravel(&c, xs[part].dims()));
    }
    Ok(pick(&joined, &idx, Shape(od))?.cast(first.dtype()))
}

/// Rows of `table` `[V, D]` at `ids`; an id outside the table is an error.
pub fn gather(table: &Tensor, ids: &Tensor) -> Result<Tensor, String> {
    let (v, d) = (table.dims()[0], table.dims()[1]);
    let mut idx = Vec::with_capacity(ids.numel() * d);
    for id in ids.to_i64_vec() {
        let row = usize::try_from(id).ok().filter(|&r| r < v).ok_or_else(|| format!("id {id} outside the table"))?;
        idx.extend((0..d).map(|j| row * d + j));
    }
    let mut shape = ids.dims().to_vec();
    shape.push(d);
    pick(table, &idx, Shape(shape))
}

/// `[B, dim]`: `freq_j = exp(−ln(max_period)·j/(half − shift))`, `[sin, cos]` of `t·freq`
/// (`[cos, sin]` when flipped), in f64.
pub fn timestep_embedding(t: &Tensor, dim: usize, flip: bool, shift: f64, max_period: f64) -> Result<Tensor, String> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(t.numel() * dim);
    for tv in t.to_f64_vec() {
        let args: Vec<f64> =
            (0..half).map(|j| tv * (-max_period.ln() * j as f64 / (half as f64 - shift)).exp()).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        if flip {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
    }
    f32_tensor([t.numel(), dim], out)
}

/// Wan's 3-axis rotary table in f64: token `(f, h, w)` row-major; per axis `a` with `d_a`
/// dims, pair `j` has angle `pos_a / theta^(2j/d_a)`, each value written twice.
pub fn rope_table(grid: [usize; 3], dims: [usize; 3], theta: f64, part: TrigPart) -> Result<Tensor, String> {
    let hd: usize = dims.iter().sum();
    let s = grid[0] * grid[1] * grid[2];
    let mut out = Vec::with_capacity(s * hd);
    for tok in 0..s {
        let pos = unravel(tok, &grid);
        for a in 0..3 {
            for j in 0..dims[a] / 2 {
                let angle = pos[a] as f64 / theta.powf(2.0 * j as f64 / dims[a] as f64);
                let v = if part == TrigPart::Cos { angle.cos() } else { angle.sin() };
                out.extend([v, v]);
            }
        }
    }
    f32_tensor([s, hd], out)
}

/// transformers' bidirectional `_relative_position_bucket` of `key − query`, with its
/// mixed precision: the log ratio in f32, divided by `math.log(max_distance/max_exact)`
/// (an f64 rounded to f32), scaled and truncated.
pub fn rel_position_bucket(
    q_len: usize,
    k_len: usize,
    num_buckets: usize,
    max_distance: usize,
) -> Result<Tensor, String> {
    let half = (num_buckets / 2) as i64;
    let max_exact = half / 2;
    let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
    let mut out = Vec::with_capacity(q_len * k_len);
    for q in 0..q_len as i64 {
        for k in 0..k_len as i64 {
            let rel = k - q;
            let mut bucket = if rel > 0 { half } else { 0 };
            let n = rel.abs();
            if n < max_exact {
                bucket += n;
            } else {
                let large = max_exact + ((n as f32 / max_exact as f32).ln() / denom * (half - max_exact) as f32) as i64;
                bucket += large.min(half - 1);
            }
            out.push(bucket);
        }
    }
    Tensor::new([q_len, k_len], TensorData::I64(out)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-2.0, -0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {} != {want}", erf(x));
        }
    }

    /// The format-parameter rounding agrees with the `half` crate on normals, subnormals,
    /// ties and overflow.
    #[test]
    fn rounding_matches_half() {
        let mut v: Vec<f32> = (0..4000).map(|i| ((i as f32) * 0.618_034).sin() * 10f32.powi(i % 13 - 8)).collect();
        v.extend([1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65519.0, 65520.0, 3e-8, 1.0 + 2f32.powi(-8)]);
        let x = Tensor::from_f32([v.len()], v).expect("matching length");
        for to in [DType::F16, DType::BF16] {
            let want = x.cast(to).to_f64_vec();
            let got = cast(&x, to).expect("cast").to_f64_vec();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(a == b, "{to} element {i}: {a} vs {b}");
            }
        }
    }
}
