//! Elementwise expressions: the body of a fused elementwise node ([`crate::Op::Fused`]) and
//! the epilogue of a fused matmul or conv3d ([`crate::Op::MatMulEpilogue`],
//! [`crate::Op::Conv3dEpilogue`]).
//!
//! An expression is a straight-line program: a list of steps, each reading input slots or
//! earlier steps; the last step is the result. Input slots broadcast (numpy rules) to the
//! node's output shape. Every step computes in f32 (f64 in host references); a
//! [`ExprStep::Cast`] rounds to its dtype, so a fused chain of bf16 nodes keeps one rounding
//! where the unfused chain had a cast, and skips the storage rounding between ops.
//!
//! Text form (inside a quoted attribute): steps separated by `;`, operands are step indices:
//! `in(0);in(1);add_scalar[1](1);mul(0,2)` is `x·(s + 1)`.

use serde::{Deserialize, Serialize};

use crate::op::{BinaryOp, UnaryOp};
use crate::DType;

/// One step of an [`ElementwiseExpr`]. Operands are indices of earlier steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExprStep {
    /// The value of input slot `k`, broadcast to the output shape.
    Input(usize),
    /// A unary function of an earlier step.
    Unary(UnaryOp, usize),
    /// A binary function of two earlier steps (`op(a, b)`, operand order kept).
    Binary(BinaryOp, usize, usize),
    /// Rounds an earlier step to a float dtype (an IR `cast` inside the chain).
    Cast(DType, usize),
}

/// A straight-line elementwise program; the last step is the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ElementwiseExpr {
    pub steps: Vec<ExprStep>,
}

impl ElementwiseExpr {
    /// An expression of the given steps.
    pub fn new(steps: Vec<ExprStep>) -> Self {
        ElementwiseExpr { steps }
    }

    /// How many input slots it reads (one more than the largest slot index; 0 if none).
    pub fn num_inputs(&self) -> usize {
        self.steps
            .iter()
            .filter_map(|s| match s {
                ExprStep::Input(k) => Some(k + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks the program's structure: non-empty, operands refer to earlier steps, every slot
    /// below `num_inputs` is read.
    pub fn check(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("an elementwise expression needs at least one step".into());
        }
        let n = self.num_inputs();
        let mut seen = vec![false; n];
        for (i, s) in self.steps.iter().enumerate() {
            let operands: Vec<usize> = match *s {
                ExprStep::Input(k) => {
                    seen[k] = true;
                    vec![]
                }
                ExprStep::Unary(_, a) | ExprStep::Cast(_, a) => vec![a],
                ExprStep::Binary(_, a, b) => vec![a, b],
            };
            for o in operands {
                if o >= i {
                    return Err(format!("step {i} reads step {o}, which does not come before it"));
                }
            }
            if let ExprStep::Unary(UnaryOp::Clamp(lo, hi), _) = s {
                if lo > hi {
                    return Err(format!("step {i}: clamp bounds {lo} > {hi}"));
                }
            }
            if let ExprStep::Cast(d, _) = s {
                if !d.is_float() {
                    return Err(format!("step {i}: casts inside an expression must be to a float dtype, got {d}"));
                }
            }
        }
        if let Some(k) = seen.iter().position(|s| !s) {
            return Err(format!("input slot {k} is never read"));
        }
        Ok(())
    }

    /// The dtype of every step given the slots' dtypes (all float; binary operands agree).
    pub fn step_dtypes(&self, inputs: &[DType]) -> Result<Vec<DType>, String> {
        self.check()?;
        if inputs.len() != self.num_inputs() {
            return Err(format!("expression reads {} inputs, got {}", self.num_inputs(), inputs.len()));
        }
        let mut out: Vec<DType> = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            let d = match *s {
                ExprStep::Input(k) => inputs[k],
                ExprStep::Unary(_, a) => out[a],
                ExprStep::Cast(d, _) => d,
                ExprStep::Binary(_, a, b) => {
                    if out[a] != out[b] {
                        return Err(format!("step {i}: operand dtypes differ ({} vs {})", out[a], out[b]));
                    }
                    out[a]
                }
            };
            if !d.is_float() {
                return Err(format!("step {i}: expressions compute on floats, got {d}"));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Approximate flops per output element (cost model).
    pub fn flops_per_elem(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                ExprStep::Input(_) => 0,
                ExprStep::Unary(u, _) => u.flops_per_elem(),
                ExprStep::Binary(..) | ExprStep::Cast(..) => 1,
            })
            .sum()
    }

    /// The steps other than input reads (how many unfused elementwise ops it replaces, casts
    /// included).
    pub fn op_count(&self) -> usize {
        self.steps.iter().filter(|s| !matches!(s, ExprStep::Input(_))).count()
    }

    /// Evaluates the program on one element with f64 arithmetic given the slots' values
    /// (host references and constant folding). `cast` rounds a value to a dtype.
    pub fn eval_f64(&self, slots: &[f64], cast: impl Fn(DType, f64) -> f64) -> f64 {
        let mut vals: Vec<f64> = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            let v = match *s {
                ExprStep::Input(k) => slots.get(k).copied().unwrap_or(f64::NAN),
                ExprStep::Unary(u, a) => unary_f64(u, vals[a]),
                ExprStep::Binary(b, x, y) => binary_f64(b, vals[x], vals[y]),
                ExprStep::Cast(d, a) => cast(d, vals[a]),
            };
            vals.push(v);
        }
        vals.last().copied().unwrap_or(f64::NAN)
    }

    /// The text form (see the module docs).
    pub fn to_text(&self) -> String {
        let mut parts = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            parts.push(match *s {
                ExprStep::Input(k) => format!("in({k})"),
                ExprStep::Unary(u, a) => match u {
                    UnaryOp::AddScalar(c) | UnaryOp::MulScalar(c) => format!("{}[{c:?}]({a})", u.name()),
                    UnaryOp::Clamp(lo, hi) => format!("clamp[{lo:?},{hi:?}]({a})"),
                    _ => format!("{}({a})", u.name()),
                },
                ExprStep::Binary(b, x, y) => format!("{}({x},{y})", b.name()),
                ExprStep::Cast(d, a) => format!("cast[{}]({a})", d.name()),
            });
        }
        parts.join(";")
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        for part in text.split(';') {
            let part = part.trim();
            let open = part.find('(').ok_or_else(|| format!("`{part}`: expected `name(operands)`"))?;
            if !part.ends_with(')') {
                return Err(format!("`{part}`: expected a closing `)`"));
            }
            let head = &part[..open];
            let args: Vec<usize> = part[open + 1..part.len() - 1]
                .split(',')
                .map(|a| a.trim().parse::<usize>().map_err(|_| format!("`{part}`: bad operand `{a}`")))
                .collect::<Result<_, _>>()?;
            let (name, params) = match head.find('[') {
                Some(b) if head.ends_with(']') => (&head[..b], Some(&head[b + 1..head.len() - 1])),
                Some(_) => return Err(format!("`{part}`: unclosed `[`")),
                None => (head, None),
            };
            let nums = |p: Option<&str>| -> Result<Vec<f64>, String> {
                p.unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().parse::<f64>().map_err(|_| format!("`{part}`: bad number `{s}`")))
                    .collect()
            };
            let one = |args: &[usize]| -> Result<usize, String> {
                match args {
                    [a] => Ok(*a),
                    _ => Err(format!("`{part}`: expected one operand")),
                }
            };
            let step = match name {
                "in" => ExprStep::Input(one(&args)?),
                "cast" => {
                    let d: DType = params.unwrap_or("").parse().map_err(|e| format!("`{part}`: {e}"))?;
                    ExprStep::Cast(d, one(&args)?)
                }
                _ => {
                    if let Some(b) = BinaryOp::ALL.iter().find(|b| b.name() == name) {
                        match args[..] {
                            [x, y] => ExprStep::Binary(*b, x, y),
                            _ => return Err(format!("`{part}`: expected two operands")),
                        }
                    } else if let Some(u) = UnaryOp::ALL.iter().find(|u| u.name() == name) {
                        let p = nums(params)?;
                        let u = match (u, &p[..]) {
                            (UnaryOp::AddScalar(_), [c]) => UnaryOp::AddScalar(*c),
                            (UnaryOp::MulScalar(_), [c]) => UnaryOp::MulScalar(*c),
                            (UnaryOp::Clamp(_, _), [lo, hi]) => UnaryOp::Clamp(*lo, *hi),
                            (UnaryOp::AddScalar(_) | UnaryOp::MulScalar(_) | UnaryOp::Clamp(_, _), _) => {
                                return Err(format!("`{part}`: wrong parameters"))
                            }
                            (u, []) => *u,
                            _ => return Err(format!("`{part}`: `{name}` takes no parameters")),
                        };
                        ExprStep::Unary(u, one(&args)?)
                    } else {
                        return Err(format!("`{part}`: unknown step `{name}`"));
                    }
                }
            };
            steps.push(step);
        }
        let e = ElementwiseExpr { steps };
        e.check()?;
        Ok(e)
    }
}

/// Unary functions in f64 (host references, constant folding).
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Square => x * x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::AddScalar(c) => x + c,
        UnaryOp::MulScalar(c) => x * c,
        UnaryOp::Clamp(lo, hi) => x.max(lo).min(hi),
    }
}

/// Binary functions in f64.
pub fn binary_f64(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
    }
}

/// erf in f64: Taylor series for |x| < 2, continued fraction of erfc beyond.
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let v = if ax < 2.0 {
        let (mut term, mut sum) = (ax, ax);
        for n in 1..80 {
            term *= -ax * ax / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        let mut k = ax;
        for n in (1..80).rev() {
            k = ax + (n as f64 / 2.0) / k;
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / k
    };
    if x < 0.0 {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let e = ElementwiseExpr::new(vec![
            ExprStep::Input(0),
            ExprStep::Input(1),
            ExprStep::Unary(UnaryOp::AddScalar(1.0), 1),
            ExprStep::Binary(BinaryOp::Mul, 0, 2),
            ExprStep::Unary(UnaryOp::Clamp(-1.5, 2.0), 3),
            ExprStep::Cast(DType::BF16, 4),
        ]);
        let t = e.to_text();
        assert_eq!(ElementwiseExpr::parse(&t).unwrap(), e, "{t}");
        assert_eq!(e.num_inputs(), 2);
        assert_eq!(e.op_count(), 4);
    }

    #[test]
    fn bad_programs_are_rejected() {
        assert!(ElementwiseExpr::parse("in(0);silu(1)").is_err());
        assert!(ElementwiseExpr::parse("in(1)").is_err());
        assert!(ElementwiseExpr::parse("in(0);bogus(0)").is_err());
        assert!(ElementwiseExpr::default().check().is_err());
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in
            [(0.0, 0.0), (0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.5, 0.999_593_047_982_555)]
        {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-12);
        }
    }
}
