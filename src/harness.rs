//! The cross-backend op harness, in the spirit of ggml's `test-backend-ops`.
//!
//! Every [`OpCase`] builds a small graph around one op (the *fused* graph) and a *reference*
//! for it: either the op's plain unfused composition from primitive ops (a second graph, run
//! on the reference backend) or, for ops that have no composition from other ops, a naive f64
//! loop on the host ([`Reference`] says which). Inputs come from a small seeded PRNG (never
//! zeros). [`run_case`] compiles and runs both, and checks:
//!
//! - the output's shape, dtype and element count against the graph's declared output;
//! - no NaN or infinity in the output (nor in the reference);
//! - **canaries**: the [`Backend`] trait does not expose output buffers, so out-of-bounds
//!   writes are caught by emulation: the fused graph gets a second output that concatenates
//!   sentinel constant tensors before and after the op's output along axis 0 (see
//!   [`with_canaries`]); the sentinels must come back bit-exact, and the middle must equal
//!   the op's output bit for bit. A backend that plans the concat's parts next to each
//!   other in one buffer (or fuses the concat) turns a write past the op's output into a
//!   sentinel mismatch;
//! - closeness to the reference by relative L2 error and maximum absolute error, with
//!   per-dtype [`Tolerance`]s.
//!
//! [`support_table`] renders op × backend × dtype from [`Backend::support`]; [`every_op`]
//! lists one value of every op (an exhaustive match keeps it complete) and
//! [`uncovered_ops`] names ops that have no case.

mod cases;
mod compose;
mod host;

use std::collections::HashMap;
use std::fmt;

use vidrt_ir::{DType, Graph, IrError, NodeId, Op, Shape, Tensor, TensorData};
use vidrt_runtime::{Backend, RunOptions, RuntimeError, Support};

pub use cases::all_cases;

/// Value of the sentinel slab written before the op's output (exact in every dtype).
pub const SENTINEL_BEFORE: f64 = -1536.0;
/// Value of the sentinel slab written after the op's output (exact in every dtype).
pub const SENTINEL_AFTER: f64 = 1792.0;
/// Rows of sentinels before and after the op's output along axis 0.
const SENTINEL_ROWS: [usize; 2] = [1, 2];

/// An error building or running a case.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A host reference could not be computed.
    #[error("host reference: {0}")]
    Host(String),
}

/// How close an output must be to its reference. Both bounds must hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// `‖out − ref‖₂ / ‖ref‖₂`.
    pub rel_l2: f64,
    /// `max |out − ref| / max(1, max |ref|)`: an absolute bound for outputs of unit scale,
    /// relative to the largest reference magnitude beyond that.
    pub max_abs: f64,
}

impl Tolerance {
    /// Bit-for-bit equal values (data movement, integer ops, exact casts).
    pub const EXACT: Tolerance = Tolerance { rel_l2: 0.0, max_abs: 0.0 };

    /// The default for a single op producing `dtype` (computing in f32, storing `dtype`).
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F32 => Tolerance { rel_l2: 1e-5, max_abs: 1e-4 },
            // Output rounding alone: 2⁻¹¹ (f16) and 2⁻⁸ (bf16) relative per element.
            DType::F16 => Tolerance { rel_l2: 2e-3, max_abs: 4e-3 },
            DType::BF16 => Tolerance { rel_l2: 1e-2, max_abs: 3e-2 },
            DType::I32 | DType::I64 => Tolerance::EXACT,
        }
    }
}

/// The named inputs and weights of a built case, as a host reference reads them.
pub struct Feeds<'a> {
    pub inputs: &'a [(String, Tensor)],
    pub weights: &'a HashMap<String, Tensor>,
}

impl Feeds<'_> {
    /// The input or weight called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor, String> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .or_else(|| self.weights.get(name))
            .ok_or_else(|| format!("no input or weight named `{name}`"))
    }
}

/// A naive host computation of a case's expected output.
pub type HostFn = Box<dyn Fn(&Feeds<'_>) -> Result<Tensor, String> + Send + Sync>;

/// What a case's output is checked against.
pub enum Reference {
    /// The op's plain unfused composition from primitive ops (output `y`), run on the
    /// reference backend; it computes in f32 whatever the case's dtype.
    Composition(Graph),
    /// A naive f64 loop on the host, for ops that have no composition from other ops.
    Host(HostFn),
}

impl Reference {
    /// `"composition"` or `"host"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reference::Composition(_) => "composition",
            Reference::Host(_) => "host",
        }
    }
}

/// A built case: the fused graph (output `y`), its reference, seeded inputs and weights.
pub struct Built {
    pub fused: Graph,
    pub reference: Reference,
    pub inputs: Vec<(String, Tensor)>,
    pub weights: HashMap<String, Tensor>,
}

type BuildFn = Box<dyn Fn() -> Result<Built, IrError> + Send + Sync>;

/// One op case: a name, the op under test with the dtype it produces, tolerances, and a
/// builder for its graphs and inputs (run lazily, so listing cases is cheap).
pub struct OpCase {
    /// `op/dtype/variant`, unique across [`all_cases`].
    pub name: String,
    /// The op under test (its parameters as in the fused graph).
    pub op: Op,
    /// The dtype the op produces.
    pub dtype: DType,
    pub tol: Tolerance,
    build: BuildFn,
}

impl OpCase {
    /// A case from its builder.
    pub fn new(
        name: impl Into<String>,
        op: Op,
        dtype: DType,
        tol: Tolerance,
        build: impl Fn() -> Result<Built, IrError> + Send + Sync + 'static,
    ) -> OpCase {
        OpCase { name: name.into(), op, dtype, tol, build: Box::new(build) }
    }

    /// Builds the graphs and generates the inputs.
    pub fn build(&self) -> Result<Built, IrError> {
        (self.build)()
    }
}

impl fmt::Debug for OpCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpCase").field("name", &self.name).field("op", &self.op).field("dtype", &self.dtype).finish()
    }
}

/// How a case went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    /// Every reason it failed.
    Fail(Vec<String>),
    /// The backend says it does not support the op on this dtype.
    Unsupported(String),
}

/// The result of one case on one backend.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: String,
    pub backend: &'static str,
    /// `"composition"` or `"host"` (empty when the case did not get that far).
    pub reference: &'static str,
    pub outcome: Outcome,
    /// The comparison, when both outputs were produced.
    pub error: Option<ErrorStats>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail(_))
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.outcome {
            Outcome::Pass => "ok".to_string(),
            Outcome::Fail(r) => format!("FAIL: {}", r.join("; ")),
            Outcome::Unsupported(r) => format!("unsupported: {r}"),
        };
        write!(f, "[{}] {} ({} reference)", self.backend, self.case, self.reference)?;
        if let Some(e) = &self.error {
            write!(f, " rel_l2={:.3e} max_abs={:.3e}", e.rel_l2, e.max_abs)?;
        }
        write!(f, " {status}")
    }
}

/// How far an output is from its reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorStats {
    pub rel_l2: f64,
    /// Scaled as in [`Tolerance::max_abs`].
    pub max_abs: f64,
}

/// Compares `out` with `reference` elementwise in f64.
pub fn compare(out: &Tensor, reference: &Tensor) -> Result<ErrorStats, String> {
    if out.shape() != reference.shape() {
        return Err(format!("shape {} differs from the reference's {}", out.shape(), reference.shape()));
    }
    let (a, b) = (out.to_f64_vec(), reference.to_f64_vec());
    let (mut num, mut den, mut max_abs, mut scale) = (0.0f64, 0.0f64, 0.0f64, 1.0f64);
    for (x, y) in a.iter().zip(&b) {
        let d = x - y;
        num += d * d;
        den += y * y;
        max_abs = max_abs.max(d.abs());
        scale = scale.max(y.abs());
    }
    let rel_l2 = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    Ok(ErrorStats { rel_l2, max_abs: max_abs / scale })
}

/// The fused graph with a second output `canary`: `concat([before, y, after], axis 0)`
/// where `before` and `after` are constant slabs of [`SENTINEL_BEFORE`] and
/// [`SENTINEL_AFTER`] (a rank-0 `y` is reshaped to `[1]` first).
pub fn with_canaries(fused: &Graph) -> Result<Graph, IrError> {
    let mut g = fused.clone();
    let y = g.output("y")?;
    let (shape, dtype) = (g.shape(y).clone(), g.dtype(y));
    let yv = if shape.rank() == 0 { g.reshape(y, [1])? } else { y };
    let rest = g.shape(yv).dims()[1..].to_vec();
    let slab = |rows: usize| Shape([vec![rows], rest.clone()].concat());
    let before = g.constant(SENTINEL_BEFORE, slab(SENTINEL_ROWS[0]), dtype)?;
    let after = g.constant(SENTINEL_AFTER, slab(SENTINEL_ROWS[1]), dtype)?;
    let c = g.concat(&[before, yv, after], 0)?;
    g.set_output("canary", c)?;
    Ok(g)
}

/// Each element's bit pattern, widened to u64.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        TensorData::F16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        TensorData::BF16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        TensorData::I32(v) => v.iter().map(|&x| u64::from(x as u32)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
    }
}

/// Checks the `canary` output against `y`: sentinels intact, middle equal to `y`.
fn check_canary(y: &Tensor, canary: &Tensor) -> Result<(), String> {
    let (n, [b, a]) = (y.numel(), SENTINEL_ROWS);
    let row = if y.dims().is_empty() { 1 } else { y.dims()[1..].iter().product() };
    let want = n + (b + a) * row;
    if canary.numel() != want || canary.dtype() != y.dtype() {
        return Err(format!(
            "canary output has {} {} elements, expected {want} {}",
            canary.numel(),
            canary.dtype(),
            y.dtype()
        ));
    }
    let cb = bits(canary);
    let sb = bits(&Tensor::full([1], y.dtype(), SENTINEL_BEFORE))[0];
    let sa = bits(&Tensor::full([1], y.dtype(), SENTINEL_AFTER))[0];
    if let Some(i) = cb[..b * row].iter().position(|&x| x != sb) {
        return Err(format!("canary before the output was overwritten at element {i}"));
    }
    if let Some(i) = cb[b * row + n..].iter().position(|&x| x != sa) {
        return Err(format!("canary after the output was overwritten at element {i} past the end"));
    }
    if let Some(i) = cb[b * row..b * row + n].iter().zip(bits(y)).position(|(x, y)| *x != y) {
        return Err(format!("the output inside the canaries differs from the output at element {i}"));
    }
    Ok(())
}

/// The tensor called `name` in a run's outputs.
fn take(outs: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor, String> {
    let i = outs.iter().position(|(n, _)| n == name).ok_or_else(|| format!("output `{name}` is missing"))?;
    Ok(outs.swap_remove(i).1)
}

fn run_graph(
    backend: &dyn Backend,
    g: &Graph,
    built: &Built,
    feeds: &[(&str, Tensor)],
) -> Result<Vec<(String, Tensor)>, RuntimeError> {
    let mut exe = backend.compile(g, &built.weights)?;
    // Outputs are checked for NaN/inf here, with the case named, not by the executor.
    exe.run_with(feeds, &RunOptions::default())
}

/// Runs `case` on `backend` and checks it against its reference (compositions run on
/// `reference`, normally the CPU backend).
pub fn run_case(case: &OpCase, backend: &dyn Backend, reference: &dyn Backend) -> CaseResult {
    let mut res = CaseResult {
        case: case.name.clone(),
        backend: backend.name(),
        reference: "",
        outcome: Outcome::Pass,
        error: None,
    };
    if let Support::No(why) = backend.support(&case.op, case.dtype) {
        res.outcome = Outcome::Unsupported(why);
        return res;
    }
    let mut fails = Vec::new();
    match check(case, backend, reference, &mut res) {
        Ok(mut f) => fails.append(&mut f),
        Err(e) => fails.push(e),
    }
    if !fails.is_empty() {
        res.outcome = Outcome::Fail(fails);
    }
    res
}

/// The body of [`run_case`]: `Err` for a failure that stops the case, `Ok(reasons)` for
/// the failures of a case that ran to the end.
fn check(
    case: &OpCase,
    backend: &dyn Backend,
    reference: &dyn Backend,
    res: &mut CaseResult,
) -> Result<Vec<String>, String> {
    let built = case.build().map_err(|e| format!("building the case: {e}"))?;
    res.reference = built.reference.kind();
    let feeds: Vec<(&str, Tensor)> = built.inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut fails = Vec::new();

    let wrapped = with_canaries(&built.fused).map_err(|e| format!("adding canaries: {e}"))?;
    let y_id: NodeId = built.fused.output("y").map_err(|e| e.to_string())?;
    let (shape, dtype) = (built.fused.shape(y_id).clone(), built.fused.dtype(y_id));
    let mut outs = run_graph(backend, &wrapped, &built, &feeds).map_err(|e| format!("{}: {e}", backend.name()))?;
    let y = take(&mut outs, "y")?;
    let canary = take(&mut outs, "canary")?;
    if y.shape() != &shape || y.dtype() != dtype || y.numel() != shape.numel() {
        return Err(format!(
            "output is {}{} with {} elements, declared {dtype}{shape}",
            y.dtype(),
            y.shape(),
            y.numel()
        ));
    }
    if let Some(i) = y.first_non_finite() {
        fails.push(format!("output element {i} is not finite"));
    }
    if let Err(e) = check_canary(&y, &canary) {
        fails.push(e);
    }

    let want = match &built.reference {
        Reference::Composition(r) => {
            let mut outs =
                run_graph(reference, r, &built, &feeds).map_err(|e| format!("reference {}: {e}", reference.name()))?;
            take(&mut outs, "y")?
        }
        Reference::Host(f) => {
            f(&Feeds { inputs: &built.inputs, weights: &built.weights }).map_err(|e| format!("host reference: {e}"))?
        }
    };
    if let Some(i) = want.first_non_finite() {
        fails.push(format!("reference element {i} is not finite"));
    }
    let stats = compare(&y, &want)?;
    res.error = Some(stats);
    if stats.rel_l2.is_nan() || stats.rel_l2 > case.tol.rel_l2 {
        fails.push(format!("rel_l2 {:.3e} > {:.1e}", stats.rel_l2, case.tol.rel_l2));
    }
    if stats.max_abs.is_nan() || stats.max_abs > case.tol.max_abs {
        fails.push(format!("max_abs {:.3e} > {:.1e}", stats.max_abs, case.tol.max_abs));
    }
    Ok(fails)
}

/// Runs every case in `cases` on `backend` against `reference`.
pub fn run_all(cases: &[OpCase], backend: &dyn Backend, reference: &dyn Backend) -> Vec<CaseResult> {
    cases.iter().map(|c| run_case(c, backend, reference)).collect()
}

/// One line: `backend: P passed, F failed, U unsupported, of N cases`.
pub fn summary(results: &[CaseResult]) -> String {
    let mut per: Vec<(&str, [usize; 3])> = Vec::new();
    for r in results {
        let i = match per.iter().position(|(b, _)| *b == r.backend) {
            Some(i) => i,
            None => {
                per.push((r.backend, [0; 3]));
                per.len() - 1
            }
        };
        let k = match r.outcome {
            Outcome::Pass => 0,
            Outcome::Fail(_) => 1,
            Outcome::Unsupported(_) => 2,
        };
        per[i].1[k] += 1;
    }
    per.iter()
        .map(|(b, [p, f, u])| format!("{b}: {p} passed, {f} failed, {u} unsupported, of {} cases", p + f + u))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One value of every op (every unary and binary function separately), with
/// representative parameters. The exhaustive match in `variant` makes a new op variant a
/// compile error here until it is listed (and gets a case).
pub fn every_op() -> Vec<Op> {
    use vidrt_ir::{BinaryOp, ReduceOp, RmsStyle, TrigPart, UnaryOp};
    let mut ops = vec![
        Op::Input { name: "x".into() },
        Op::Weight { name: "w".into() },
        Op::Constant { value: 1.0 },
        Op::RopeTable { grid: [1, 1, 1], dims: [2, 2, 2], theta: 10000.0, part: TrigPart::Cos },
        Op::RelPositionBucket { q_len: 1, k_len: 1, num_buckets: 32, max_distance: 128 },
    ];
    ops.extend(UnaryOp::ALL.iter().map(|&u| Op::Unary(u)));
    ops.extend(BinaryOp::ALL.iter().map(|&b| Op::Binary(b)));
    ops.extend([
        Op::Cast { to: DType::F32 },
        Op::MatMul { trans_a: false, trans_b: false, bias: false },
        Op::Attention { scale: 1.0, bias: false, mask: false },
        Op::Conv3d { stride: [1; 3], pad: [[0; 2]; 3], bias: false },
        Op::RmsNorm { axis: 0, eps: 1e-6, style: RmsStyle::MeanSquare, weight: false },
        Op::LayerNorm { eps: 1e-6, affine: false },
        Op::Modulate,
        Op::Rope,
        Op::Softmax { axis: 0 },
        Op::Reduce { op: ReduceOp::Sum, axes: vec![0], keepdim: false },
        Op::Reshape { shape: Shape::from([1]) },
        Op::Permute { perm: vec![0] },
        Op::Slice { axis: 0, start: 0, end: 1 },
        Op::Concat { axis: 0 },
        Op::Upsample { factors: [2, 2] },
        Op::Gather,
        Op::TimestepEmbedding { dim: 2, flip_sin_to_cos: false, downscale_freq_shift: 0.0, max_period: 10000.0 },
    ]);
    let silu =
        vidrt_ir::ElementwiseExpr::new(vec![vidrt_ir::ExprStep::Input(0), vidrt_ir::ExprStep::Unary(UnaryOp::Silu, 0)]);
    ops.extend([
        Op::Fused { expr: silu.clone() },
        Op::MatMulEpilogue { trans_a: false, trans_b: false, bias: false, epilogue: silu.clone() },
        Op::Conv3dEpilogue { stride: [1; 3], pad: [[0; 2]; 3], bias: false, epilogue: silu.clone() },
        Op::LayerNormModulate { eps: 1e-6 },
        Op::RmsNormRope { eps: 1e-6, heads: 1 },
        Op::RmsNormEpilogue { axis: 0, eps: 1e-6, style: RmsStyle::MeanSquare, weight: false, epilogue: silu },
    ]);
    // Every variant appears above: adding one to `Op` fails to compile here.
    fn variant(op: &Op) -> u8 {
        match op {
            Op::Input { .. } => 0,
            Op::Weight { .. } => 1,
            Op::Constant { .. } => 2,
            Op::RopeTable { .. } => 3,
            Op::RelPositionBucket { .. } => 4,
            Op::Unary(_) => 5,
            Op::Binary(_) => 6,
            Op::Cast { .. } => 7,
            Op::MatMul { .. } => 8,
            Op::Attention { .. } => 9,
            Op::Conv3d { .. } => 10,
            Op::RmsNorm { .. } => 11,
            Op::LayerNorm { .. } => 12,
            Op::Modulate => 13,
            Op::Rope => 14,
            Op::Softmax { .. } => 15,
            Op::Reduce { .. } => 16,
            Op::Reshape { .. } => 17,
            Op::Permute { .. } => 18,
            Op::Slice { .. } => 19,
            Op::Concat { .. } => 20,
            Op::Upsample { .. } => 21,
            Op::Gather => 22,
            Op::TimestepEmbedding { .. } => 23,
            Op::Fused { .. } => 24,
            Op::MatMulEpilogue { .. } => 25,
            Op::Conv3dEpilogue { .. } => 26,
            Op::LayerNormModulate { .. } => 27,
            Op::RmsNormRope { .. } => 28,
            Op::RmsNormEpilogue { .. } => 29,
        }
    }
    debug_assert!(ops.iter().map(variant).max() == Some(29));
    ops
}

/// Names of the ops in [`every_op`] that no case in `cases` tests.
pub fn uncovered_ops(cases: &[OpCase]) -> Vec<&'static str> {
    every_op().iter().map(Op::name).filter(|name| !cases.iter().any(|c| c.op.name() == *name)).collect()
}

/// A text table of op × backend × dtype from [`Backend::support`] (`yes` or `-`).
pub fn support_table(backends: &[&dyn Backend]) -> String {
    let ops = every_op();
    let width = ops.iter().map(|o| o.name().len()).max().unwrap_or(2).max(2);
    let group = 5 * DType::ALL.len();
    let (mut head, mut sub, mut sep) = (format!("{:width$}", "op"), " ".repeat(width), "-".repeat(width));
    for b in backends {
        head.push_str(&format!(" | {:<group$}", b.name()));
        sub.push_str(" |");
        for d in DType::ALL {
            sub.push_str(&format!(" {:>4}", d.name()));
        }
        sep.push_str(&format!("-+{}", "-".repeat(group + 1)));
    }
    let mut out = [head.trim_end(), sub.as_str(), sep.as_str()].join("\n");
    out.push('\n');
    for op in &ops {
        out.push_str(&format!("{:width$}", op.name()));
        for b in backends {
            out.push_str(" |");
            for d in DType::ALL {
                let s = match b.support(op, d) {
                    Support::Yes => "yes",
                    Support::No(_) => "-",
                };
                out.push_str(&format!(" {s:>4}"));
            }
        }
        out.push('\n');
    }
    out
}
