//! The case list: one or more cases per op, chosen to hit the CPU kernels' edges (sizes
//! that are not multiples of the matmul row block of 64 or the attention tiles of 64 × 256,
//! a conv large enough to be split into row tiles, a pointwise conv past its column block),
//! broadcasting, transposes, bias and mask variants, causal and asymmetric padding, strides,
//! rank-0 outputs, and f32, f16, bf16 and integer dtypes.

use std::collections::HashMap;

use vidrt_ir::{
    BinaryOp, DType, Graph, IrError, NodeId, Op, ReduceOp, Result, RmsStyle, Shape, Tensor, TensorData, TrigPart,
    UnaryOp,
};

use super::{compose, host, Built, Feeds, HostFn, OpCase, Reference, Tolerance};

/// SplitMix64: a small deterministic generator (no dependency).
struct Rng(u64);

impl Rng {
    /// Seeded from a case name (FNV-1a), so a case's inputs do not depend on its position.
    fn for_name(name: &str) -> Rng {
        Rng(name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a case's input is drawn.
#[derive(Clone, Copy, Debug)]
enum Dist {
    /// Uniform in [lo, hi).
    U(f64, f64),
    /// Magnitude uniform in [lo, hi), random sign (divisors, reciprocals).
    Away(f64, f64),
    /// Integers uniform in [lo, hi).
    Int(i64, i64),
    /// A key mask of 0 and 1 with rows of this length; about a third of the keys are
    /// masked and the first key of every row is kept.
    Mask(usize),
}

fn internal(reason: impl Into<String>) -> IrError {
    IrError::Invalid { node: 0, op: "harness", name: String::new(), reason: reason.into() }
}

/// A case under construction: the fused graph `g`, the reference graph `r`, and the inputs.
struct Ctx {
    g: Graph,
    r: Graph,
    rng: Rng,
    inputs: Vec<(String, Tensor)>,
    weights: HashMap<String, Tensor>,
}

/// What a case builder returns: the fused output and its reference.
enum Out {
    /// The fused output and the composition's output in the reference graph.
    Comp(NodeId, NodeId),
    /// The fused output and a host reference.
    Host(NodeId, HostFn),
}

fn host(f: impl Fn(&Feeds<'_>) -> std::result::Result<Tensor, String> + Send + Sync + 'static) -> HostFn {
    Box::new(f)
}

impl Ctx {
    fn new(name: &str) -> Ctx {
        Ctx { g: Graph::new(), r: Graph::new(), rng: Rng::for_name(name), inputs: Vec::new(), weights: HashMap::new() }
    }

    fn gen(&mut self, shape: &Shape, dtype: DType, dist: Dist) -> Result<Tensor> {
        let n = shape.numel();
        let v: Vec<f64> = (0..n)
            .map(|i| match dist {
                Dist::U(lo, hi) => lo + (hi - lo) * self.rng.unit(),
                Dist::Away(lo, hi) => {
                    let m = lo + (hi - lo) * self.rng.unit();
                    if self.rng.next_u64() & 1 == 0 {
                        m
                    } else {
                        -m
                    }
                }
                Dist::Int(lo, hi) => (lo + (self.rng.next_u64() % (hi - lo).max(1) as u64) as i64) as f64,
                Dist::Mask(row) => {
                    if i % row.max(1) == 0 || self.rng.unit() >= 1.0 / 3.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
            })
            .collect();
        let t = if dtype.is_int() {
            Tensor::new(shape.clone(), TensorData::I64(v.iter().map(|&x| x as i64).collect()))
        } else {
            Tensor::from_f32(shape.clone(), v.iter().map(|&x| x as f32).collect())
        };
        Ok(t.map_err(|e| internal(e.to_string()))?.cast(dtype))
    }

    /// The reference graph's view of a leaf: float leaves are cast to f32.
    fn ref_view(&mut self, id: NodeId, dtype: DType) -> Result<NodeId> {
        if dtype.is_float() && dtype != DType::F32 {
            self.r.cast(id, DType::F32)
        } else {
            Ok(id)
        }
    }

    /// A graph input in both graphs with seeded data: (fused id, reference id).
    fn input(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType, dist: Dist) -> Result<(NodeId, NodeId)> {
        let shape = shape.into();
        let t = self.gen(&shape, dtype, dist)?;
        self.inputs.push((name.to_string(), t));
        let a = self.g.input(name, shape.clone(), dtype)?;
        let b = self.r.input(name, shape, dtype)?;
        Ok((a, self.ref_view(b, dtype)?))
    }

    /// A weight in both graphs with seeded data: (fused id, reference id).
    fn weight(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType, dist: Dist) -> Result<(NodeId, NodeId)> {
        let shape = shape.into();
        let t = self.gen(&shape, dtype, dist)?;
        self.weights.insert(name.to_string(), t);
        let a = self.g.weight(name, shape.clone(), dtype)?;
        let b = self.r.weight(name, shape, dtype)?;
        Ok((a, self.ref_view(b, dtype)?))
    }

    fn finish(mut self, out: Out) -> Result<Built> {
        let reference = match out {
            Out::Comp(y, yr) => {
                self.g.set_output("y", y)?;
                self.r.set_output("y", yr)?;
                Reference::Composition(self.r)
            }
            Out::Host(y, f) => {
                self.g.set_output("y", y)?;
                Reference::Host(f)
            }
        };
        Ok(Built { fused: self.g, reference, inputs: self.inputs, weights: self.weights })
    }
}

type CaseFn = dyn Fn(&mut Ctx) -> Result<Out> + Send + Sync;

/// Collects cases, naming each `op/dtype/variant`.
struct List(Vec<OpCase>);

impl List {
    fn add(
        &mut self,
        op: Op,
        dtype: DType,
        variant: &str,
        tol: Tolerance,
        f: impl Fn(&mut Ctx) -> Result<Out> + Send + Sync + 'static,
    ) {
        let name = format!("{}/{}/{}", op.name(), dtype, variant).replace(' ', "");
        let f: Box<CaseFn> = Box::new(f);
        let seed_name = name.clone();
        self.0.push(OpCase::new(name, op, dtype, tol, move || {
            let mut c = Ctx::new(&seed_name);
            let out = f(&mut c)?;
            c.finish(out)
        }));
    }

    /// A case with the default tolerance of its dtype.
    fn std(
        &mut self,
        op: Op,
        dtype: DType,
        variant: &str,
        f: impl Fn(&mut Ctx) -> Result<Out> + Send + Sync + 'static,
    ) {
        self.add(op, dtype, variant, Tolerance::for_dtype(dtype), f);
    }

    /// A case that must match bit for bit.
    fn exact(
        &mut self,
        op: Op,
        dtype: DType,
        variant: &str,
        f: impl Fn(&mut Ctx) -> Result<Out> + Send + Sync + 'static,
    ) {
        self.add(op, dtype, variant, Tolerance::EXACT, f);
    }
}

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const I32: DType = DType::I32;
const I64: DType = DType::I64;

/// Every case, in a fixed order.
pub fn all_cases() -> Vec<OpCase> {
    let mut l = List(Vec::new());
    leaves(&mut l);
    tables(&mut l);
    unary(&mut l);
    binary(&mut l);
    cast(&mut l);
    matmul(&mut l);
    attention(&mut l);
    conv3d(&mut l);
    norms(&mut l);
    modulate_rope_softmax(&mut l);
    reduce(&mut l);
    views(&mut l);
    fused_ops(&mut l);
    l.0
}

fn leaves(l: &mut List) {
    l.exact(Op::Input { name: "x".into() }, BF16, "passthrough", |c| {
        let (x, _) = c.input("x", [3, 5], BF16, Dist::U(-1.0, 1.0))?;
        Ok(Out::Host(x, host(|f| f.get("x").cloned())))
    });
    l.exact(Op::Weight { name: "w".into() }, F32, "bound", |c| {
        let (w, _) = c.weight("blk.w", [4, 6], F32, Dist::U(-1.0, 1.0))?;
        Ok(Out::Host(w, host(|f| f.get("blk.w").cloned())))
    });
    for (dtype, value, shape) in [(F32, 0.375, vec![3, 5]), (BF16, 0.3, vec![2, 7]), (I64, 7.0, vec![4])] {
        let op = Op::Constant { value };
        l.exact(op, dtype, &format!("{shape:?}"), move |c| {
            let y = c.g.constant(value, shape.clone(), dtype)?;
            let shape = shape.clone();
            Ok(Out::Host(y, host(move |_| host::full(value, &shape, dtype))))
        });
    }
}

fn tables(l: &mut List) {
    for (grid, dims, part) in [([2, 3, 4], [4, 6, 6], TrigPart::Cos), ([3, 2, 5], [8, 4, 4], TrigPart::Sin)] {
        let theta = 10000.0;
        let op = Op::RopeTable { grid, dims, theta, part };
        l.std(op, F32, &format!("{grid:?}x{dims:?}/{part:?}"), move |c| {
            let y = c.g.rope_table(grid, dims, theta, part)?;
            Ok(Out::Host(y, host(move |_| host::rope_table(grid, dims, theta, part))))
        });
    }
    for (q_len, k_len, nb, md) in [(9, 13, 32, 128), (40, 40, 32, 20), (70, 3, 16, 50)] {
        let op = Op::RelPositionBucket { q_len, k_len, num_buckets: nb, max_distance: md };
        l.exact(op.clone(), I64, &format!("{q_len}x{k_len}/b{nb}/d{md}"), move |c| {
            let y = c.g.add(op.clone(), &[])?;
            Ok(Out::Host(y, host(move |_| host::rel_position_bucket(q_len, k_len, nb, md))))
        });
    }
    // f32 arguments t·freq of up to 1000 carry ~1e-4 of rounding into sin and cos.
    let tol = Tolerance { rel_l2: 1e-4, max_abs: 5e-4 };
    for (b, dim, flip, shift) in [(3, 32, true, 0.0), (2, 20, false, 1.0), (1, 6, true, 0.5)] {
        let op = Op::TimestepEmbedding { dim, flip_sin_to_cos: flip, downscale_freq_shift: shift, max_period: 10000.0 };
        l.add(op, F32, &format!("b{b}/d{dim}/flip{flip}/shift{shift}"), tol, move |c| {
            let (t, _) = c.input("t", [b], F32, Dist::U(0.0, 1000.0))?;
            let y = c.g.timestep_embedding(t, dim, flip, shift)?;
            Ok(Out::Host(y, host(move |f| host::timestep_embedding(f.get("t")?, dim, flip, shift, 10000.0))))
        });
    }
}

/// The input range where each unary function is defined and interesting.
fn unary_dist(op: UnaryOp) -> Dist {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => Dist::U(0.1, 3.0),
        UnaryOp::Recip => Dist::Away(0.3, 2.0),
        _ => Dist::U(-3.0, 3.0),
    }
}

fn unary_case(l: &mut List, op: UnaryOp, dtype: DType, shape: Vec<usize>) {
    l.std(Op::Unary(op), dtype, &format!("{shape:?}"), move |c| {
        let (x, xr) = c.input("x", shape.clone(), dtype, unary_dist(op))?;
        let y = c.g.unary(op, x)?;
        match compose::unary(&mut c.r, op, xr) {
            Some(yr) => Ok(Out::Comp(y, yr?)),
            None => Ok(Out::Host(y, host(move |f| host::unary(op, f.get("x")?)))),
        }
    });
}

fn unary(l: &mut List) {
    for op in UnaryOp::ALL {
        unary_case(l, op, F32, vec![3, 67]);
    }
    unary_case(l, UnaryOp::GeluTanh, BF16, vec![4, 130]);
    unary_case(l, UnaryOp::Silu, F16, vec![5, 33]);
    unary_case(l, UnaryOp::Silu, BF16, vec![2, 3, 11]);
    unary_case(l, UnaryOp::Exp, F16, vec![70]);
    unary_case(l, UnaryOp::GeluErf, BF16, vec![9, 9]);
}

fn binary_case(l: &mut List, op: BinaryOp, dtype: DType, a: Vec<usize>, b: Vec<usize>) {
    let (da, db) = match (op, dtype.is_int()) {
        (BinaryOp::Div, false) => (Dist::U(-2.0, 2.0), Dist::Away(0.5, 2.0)),
        (BinaryOp::Pow, false) => (Dist::U(0.2, 3.0), Dist::U(-2.0, 2.0)),
        (BinaryOp::Div, true) => (Dist::Int(-100, 100), Dist::Int(1, 9)),
        (BinaryOp::Pow, true) => (Dist::Int(-4, 5), Dist::Int(0, 4)),
        (_, true) => (Dist::Int(-1000, 1000), Dist::Int(-1000, 1000)),
        (_, false) => (Dist::U(-2.0, 2.0), Dist::U(-2.0, 2.0)),
    };
    let tol = if dtype.is_int() { Tolerance::EXACT } else { Tolerance::for_dtype(dtype) };
    l.add(Op::Binary(op), dtype, &format!("{a:?}o{b:?}"), tol, move |c| {
        let (x, _) = c.input("a", a.clone(), dtype, da)?;
        let (z, _) = c.input("b", b.clone(), dtype, db)?;
        let y = c.g.binary(op, x, z)?;
        Ok(Out::Host(y, host(move |f| host::binary(op, f.get("a")?, f.get("b")?))))
    });
}

fn binary(l: &mut List) {
    for op in BinaryOp::ALL {
        binary_case(l, op, F32, vec![4, 1, 67], vec![3, 67]);
    }
    binary_case(l, BinaryOp::Add, F32, vec![5, 70], vec![5, 70]);
    binary_case(l, BinaryOp::Mul, F32, vec![2, 3, 4, 5], vec![]);
    binary_case(l, BinaryOp::Sub, F32, vec![7], vec![3, 1]);
    binary_case(l, BinaryOp::Div, F32, vec![1, 1, 9], vec![2, 5, 1]);
    binary_case(l, BinaryOp::Add, BF16, vec![2, 33], vec![33]);
    binary_case(l, BinaryOp::Mul, F16, vec![3, 40], vec![3, 1]);
    for op in BinaryOp::ALL {
        binary_case(l, op, I64, vec![3, 1], vec![4]);
    }
    binary_case(l, BinaryOp::Add, I32, vec![2, 5], vec![2, 5]);
}

fn cast(l: &mut List) {
    for (from, to, dist) in [
        (F32, BF16, Dist::U(-3.0, 3.0)),
        (F32, F16, Dist::U(-3.0, 3.0)),
        (F32, F16, Dist::U(-1e-4, 1e-4)), // f16 subnormals
        (F32, I64, Dist::U(-50.0, 50.0)),
        (F32, I32, Dist::U(-50.0, 50.0)),
        (I64, F32, Dist::Int(-1000, 1000)),
        (BF16, F32, Dist::U(-3.0, 3.0)),
        (F16, BF16, Dist::U(-3.0, 3.0)),
        (BF16, F16, Dist::U(-3.0, 3.0)),
    ] {
        let variant = format!("from_{from}/{dist:?}");
        l.exact(Op::Cast { to }, to, &variant, move |c| {
            let (x, _) = c.input("x", [5, 37], from, dist)?;
            let y = c.g.cast(x, to)?;
            Ok(Out::Host(y, host(move |f| host::cast(f.get("x")?, to))))
        });
    }
}

/// A matmul case: shapes of a and b as stored, transposes, bias from an input.
fn matmul_case(l: &mut List, dtype: DType, a: Vec<usize>, b: Vec<usize>, ta: bool, tb: bool, bias: Option<usize>) {
    let op = Op::MatMul { trans_a: ta, trans_b: tb, bias: bias.is_some() };
    let variant = format!(
        "{a:?}x{b:?}{}{}{}",
        if ta { "/ta" } else { "" },
        if tb { "/tb" } else { "" },
        match bias {
            Some(_) => "/bias",
            None => "",
        }
    );
    l.std(op.clone(), dtype, &variant, move |c| {
        let d = Dist::U(-1.0, 1.0);
        let (x, xr) = c.input("a", a.clone(), dtype, d)?;
        let (w, wr) = c.input("b", b.clone(), dtype, d)?;
        let mut ins = vec![x, w];
        let mut br = None;
        if let Some(n) = bias {
            let (bb, bbr) = c.input("bias", [n], dtype, d)?;
            ins.push(bb);
            br = Some(bbr);
        }
        let y = c.g.add(op.clone(), &ins)?;
        let yr = compose::matmul(&mut c.r, xr, wr, ta, tb, br)?;
        Ok(Out::Comp(y, yr))
    });
}

fn matmul(l: &mut List) {
    matmul_case(l, F32, vec![130, 70], vec![70, 67], false, false, None);
    matmul_case(l, F32, vec![70, 130], vec![67, 70], true, true, None);
    matmul_case(l, F32, vec![33, 65], vec![33, 20], true, false, None);
    matmul_case(l, F32, vec![2, 3, 65, 33], vec![3, 33, 17], false, false, Some(17));
    matmul_case(l, F32, vec![2, 1, 5, 8], vec![1, 4, 8, 6], false, false, None);
    matmul_case(l, F32, vec![5, 70, 20], vec![5, 20, 30], false, false, None);
    matmul_case(l, F32, vec![1, 300], vec![300, 5], false, false, None);
    matmul_case(l, F32, vec![7, 1], vec![1, 9], false, false, Some(9));
    matmul_case(l, BF16, vec![65, 40], vec![33, 40], false, true, Some(33));
    matmul_case(l, F16, vec![3, 65, 40], vec![40, 33], false, false, None);
    // A DiT-style linear with bound weights.
    let op = Op::MatMul { trans_a: false, trans_b: true, bias: true };
    l.std(op, F32, "linear/weights[1,129,48]->40", |c| {
        let d = Dist::U(-1.0, 1.0);
        let (x, xr) = c.input("x", [1, 129, 48], F32, d)?;
        let (w, wr) = c.weight("proj.weight", [40, 48], F32, d)?;
        let (b, br) = c.weight("proj.bias", [40], F32, d)?;
        let y = c.g.linear(x, w, Some(b))?;
        let yr = compose::matmul(&mut c.r, xr, wr, false, true, Some(br))?;
        Ok(Out::Comp(y, yr))
    });
}

/// Attention shapes: batch, query and key lengths, heads, head dim, value head dim.
#[derive(Clone, Copy)]
struct Att {
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    d: usize,
    dv: usize,
}

/// An attention case; `bias` is the bias shape (broadcast to `[B, H, Sq, Sk]`).
fn attention_case(l: &mut List, dtype: DType, a: Att, bias: Option<Vec<usize>>, mask: bool) {
    let scale = 1.0 / (a.d as f64).sqrt();
    let op = Op::Attention { scale, bias: bias.is_some(), mask };
    let mut variant = format!("b{}/q{}/k{}/h{}/d{}", a.b, a.sq, a.sk, a.h, a.d);
    if a.dv != a.d {
        variant += &format!("/dv{}", a.dv);
    }
    if let Some(s) = &bias {
        variant += &format!("/bias{s:?}");
    }
    if mask {
        variant += "/mask";
    }
    l.std(op, dtype, &variant, move |c| {
        let d = Dist::U(-2.0, 2.0);
        let (q, qr) = c.input("q", [a.b, a.sq, a.h, a.d], dtype, d)?;
        let (k, kr) = c.input("k", [a.b, a.sk, a.h, a.d], dtype, d)?;
        let (v, vr) = c.input("v", [a.b, a.sk, a.h, a.dv], dtype, Dist::U(-1.0, 1.0))?;
        let (mut bi, mut bir, mut mk, mut mkr) = (None, None, None, None);
        if let Some(s) = &bias {
            let (x, xr) = c.input("bias", s.clone(), dtype, Dist::U(-2.0, 2.0))?;
            (bi, bir) = (Some(x), Some(xr));
        }
        if mask {
            let (x, xr) = c.input("mask", [a.b, a.sk], dtype, Dist::Mask(a.sk))?;
            (mk, mkr) = (Some(x), Some(xr));
        }
        let y = c.g.attention(q, k, v, scale, bi, mk)?;
        let yr = compose::attention(&mut c.r, qr, kr, vr, scale, bir, mkr)?;
        Ok(Out::Comp(y, yr))
    });
}

fn attention(l: &mut List) {
    let att = |b, sq, sk, h, d, dv| Att { b, sq, sk, h, d, dv };
    attention_case(l, F32, att(2, 70, 300, 3, 16, 16), None, false);
    attention_case(l, F32, att(2, 65, 257, 3, 8, 8), Some(vec![1, 3, 65, 257]), false);
    attention_case(l, F32, att(2, 5, 300, 2, 16, 16), None, true);
    attention_case(l, F32, att(2, 9, 40, 4, 8, 8), Some(vec![2, 1, 1, 40]), true);
    attention_case(l, F32, att(1, 64, 256, 2, 16, 24), None, false);
    attention_case(l, F32, att(1, 130, 13, 2, 32, 32), None, false);
    attention_case(l, F32, att(3, 1, 7, 1, 4, 4), Some(vec![7]), false);
    attention_case(l, BF16, att(1, 70, 80, 2, 16, 16), None, false);
    attention_case(l, F16, att(1, 33, 300, 2, 16, 16), None, true);
}

/// A conv case with weights (and bias) bound by name.
#[allow(clippy::too_many_arguments)]
fn conv_case(
    l: &mut List,
    dtype: DType,
    variant: &str,
    x: [usize; 5],
    w: [usize; 5],
    stride: [usize; 3],
    pad: [[usize; 2]; 3],
    bias: bool,
) {
    let op = Op::Conv3d { stride, pad, bias };
    let variant = format!("{variant}/x{x:?}/w{w:?}");
    l.std(op, dtype, &variant, move |c| {
        let d = Dist::U(-1.0, 1.0);
        let (xi, xr) = c.input("x", x, dtype, d)?;
        let (wi, wr) = c.weight("conv.weight", w, dtype, d)?;
        let (mut b, mut br) = (None, None);
        if bias {
            let (bb, bbr) = c.weight("conv.bias", [w[0]], dtype, d)?;
            (b, br) = (Some(bb), Some(bbr));
        }
        let y = c.g.conv3d(xi, wi, b, stride, pad)?;
        let yr = compose::conv3d(&mut c.r, xr, wr, br, stride, pad)?;
        Ok(Out::Comp(y, yr))
    });
}

fn conv3d(l: &mut List) {
    let causal = [[2, 0], [1, 1], [1, 1]];
    let none = [[0, 0]; 3];
    conv_case(l, F32, "causal333", [1, 3, 4, 6, 7], [5, 3, 3, 3, 3], [1; 3], causal, true);
    conv_case(l, F32, "pointwise", [2, 5, 2, 3, 5], [4, 5, 1, 1, 1], [1; 3], none, true);
    conv_case(l, F32, "pointwise_past_block", [1, 2, 1, 65, 65], [3, 2, 1, 1, 1], [1; 3], none, false);
    conv_case(l, F32, "down_hw", [1, 3, 2, 7, 9], [4, 3, 1, 3, 3], [1, 2, 2], [[0, 0], [0, 1], [0, 1]], true);
    conv_case(l, F32, "down_t", [1, 4, 5, 3, 3], [4, 4, 3, 1, 1], [2, 1, 1], none, true);
    conv_case(l, F32, "conv2d", [2, 3, 1, 5, 6], [2, 3, 1, 3, 3], [1; 3], [[0, 0], [1, 1], [1, 1]], true);
    conv_case(l, F32, "k222_asym", [1, 2, 4, 5, 6], [3, 2, 2, 2, 2], [1, 2, 1], [[1, 0], [0, 1], [1, 1]], false);
    // Column tile of 576 × 90 × 90 floats exceeds the CPU kernel's budget: several row tiles.
    conv_case(l, F32, "row_tiles", [1, 64, 1, 90, 90], [2, 64, 1, 3, 3], [1; 3], [[0, 0], [1, 1], [1, 1]], true);
    conv_case(l, BF16, "causal333", [1, 4, 3, 5, 5], [3, 4, 3, 3, 3], [1; 3], causal, true);
    conv_case(l, F16, "pointwise", [1, 6, 2, 4, 4], [5, 6, 1, 1, 1], [1; 3], none, true);
}

fn rms_case(l: &mut List, dtype: DType, x: Vec<usize>, axis: usize, style: RmsStyle, weight: Option<Vec<usize>>) {
    let eps = if style == RmsStyle::MeanSquare { 1e-6 } else { 1e-12 };
    let op = Op::RmsNorm { axis, eps, style, weight: weight.is_some() };
    let variant =
        format!("{x:?}/axis{axis}/{style:?}{}", weight.as_ref().map_or(String::new(), |w| format!("/w{w:?}")));
    l.std(op, dtype, &variant, move |c| {
        let (xi, xr) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
        let (mut w, mut wr) = (None, None);
        if let Some(ws) = &weight {
            let (a, b) = c.input("w", ws.clone(), dtype, Dist::U(0.5, 1.5))?;
            (w, wr) = (Some(a), Some(b));
        }
        let y = c.g.rms_norm(xi, w, axis, eps, style)?;
        let yr = compose::rms_norm(&mut c.r, xr, wr, axis, eps, style)?;
        Ok(Out::Comp(y, yr))
    });
}

fn ln_case(l: &mut List, dtype: DType, x: Vec<usize>, affine: bool, dist: Dist) {
    let eps = 1e-6;
    let op = Op::LayerNorm { eps, affine };
    let variant = format!("{x:?}{}/{dist:?}", if affine { "/affine" } else { "" });
    l.std(op, dtype, &variant, move |c| {
        let dd = x[x.len() - 1];
        let (xi, xr) = c.input("x", x.clone(), dtype, dist)?;
        let (mut wb, mut wbr) = (None, None);
        if affine {
            let (w, wr) = c.input("w", [dd], dtype, Dist::U(0.5, 1.5))?;
            let (b, br) = c.input("b", [dd], dtype, Dist::U(-0.5, 0.5))?;
            (wb, wbr) = (Some((w, b)), Some((wr, br)));
        }
        let y = c.g.layer_norm(xi, wb, eps)?;
        let yr = compose::layer_norm(&mut c.r, xr, wbr, eps)?;
        Ok(Out::Comp(y, yr))
    });
}

fn norms(l: &mut List) {
    use RmsStyle::{L2Clamp, MeanSquare};
    rms_case(l, F32, vec![3, 5, 130], 2, MeanSquare, Some(vec![130]));
    rms_case(l, F32, vec![2, 7, 3, 16], 3, MeanSquare, None);
    rms_case(l, F32, vec![2, 5, 3, 4, 6], 1, L2Clamp, Some(vec![5, 1, 1, 1]));
    rms_case(l, F32, vec![3, 9, 7], 1, L2Clamp, None);
    rms_case(l, F32, vec![6, 5], 0, MeanSquare, Some(vec![6]));
    rms_case(l, BF16, vec![4, 64], 1, MeanSquare, Some(vec![64]));
    rms_case(l, F16, vec![2, 3, 33], 2, MeanSquare, None);
    ln_case(l, F32, vec![3, 5, 67], true, Dist::U(-1.0, 1.0));
    ln_case(l, F32, vec![2, 130], false, Dist::U(3.0, 5.0));
    ln_case(l, BF16, vec![4, 48], true, Dist::U(-1.0, 1.0));
    ln_case(l, F16, vec![3, 20], false, Dist::U(-2.0, 2.0));
}

fn modulate_case(l: &mut List, dtype: DType, x: Vec<usize>, scale: Vec<usize>, shift: Vec<usize>) {
    l.std(Op::Modulate, dtype, &format!("{x:?}/scale{scale:?}/shift{shift:?}"), move |c| {
        let (xi, xr) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
        let (s, sr) = c.input("scale", scale.clone(), dtype, Dist::U(-0.5, 0.5))?;
        let (t, tr) = c.input("shift", shift.clone(), dtype, Dist::U(-1.0, 1.0))?;
        let y = c.g.modulate(xi, s, t)?;
        let yr = compose::modulate(&mut c.r, xr, sr, tr)?;
        Ok(Out::Comp(y, yr))
    });
}

/// A rope case; tables are random inputs (`table: None`) or built by `rope_table` in both
/// graphs from (grid, dims).
fn rope_case(l: &mut List, dtype: DType, x: Vec<usize>, table: Option<([usize; 3], [usize; 3])>) {
    let variant = format!("{x:?}/{}", table.map_or("random_tables".to_string(), |(g, d)| format!("table{g:?}{d:?}")));
    l.std(Op::Rope, dtype, &variant, move |c| {
        let r = x.len();
        let (s, hd) = (x[r - 3], x[r - 1]);
        let (xi, xr) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
        let (cos, sin, cosr, sinr) = match table {
            None => {
                let (a, ar) = c.input("cos", [s, hd], F32, Dist::U(-1.0, 1.0))?;
                let (b, br) = c.input("sin", [s, hd], F32, Dist::U(-1.0, 1.0))?;
                (a, b, ar, br)
            }
            Some((grid, dims)) => {
                let t = |g: &mut Graph, p| g.rope_table(grid, dims, 10000.0, p);
                (
                    t(&mut c.g, TrigPart::Cos)?,
                    t(&mut c.g, TrigPart::Sin)?,
                    t(&mut c.r, TrigPart::Cos)?,
                    t(&mut c.r, TrigPart::Sin)?,
                )
            }
        };
        let y = c.g.rope(xi, cos, sin)?;
        let yr = compose::rope(&mut c.r, xr, cosr, sinr)?;
        Ok(Out::Comp(y, yr))
    });
}

fn softmax_case(l: &mut List, dtype: DType, x: Vec<usize>, axis: usize, dist: Dist) {
    l.std(Op::Softmax { axis }, dtype, &format!("{x:?}/axis{axis}/{dist:?}"), move |c| {
        let (xi, xr) = c.input("x", x.clone(), dtype, dist)?;
        let y = c.g.softmax(xi, axis)?;
        let yr = compose::softmax(&mut c.r, xr, axis)?;
        Ok(Out::Comp(y, yr))
    });
}

fn modulate_rope_softmax(l: &mut List) {
    modulate_case(l, F32, vec![2, 37, 48], vec![2, 1, 48], vec![2, 1, 48]);
    modulate_case(l, F32, vec![2, 37, 48], vec![48], vec![37, 48]);
    modulate_case(l, BF16, vec![1, 10, 64], vec![1, 1, 64], vec![1, 1, 64]);
    rope_case(l, F32, vec![2, 12, 3, 16], None);
    rope_case(l, F32, vec![12, 2, 16], Some(([2, 2, 3], [4, 6, 6])));
    rope_case(l, BF16, vec![1, 12, 2, 16], Some(([2, 2, 3], [4, 6, 6])));
    rope_case(l, F16, vec![2, 6, 1, 8], None);
    softmax_case(l, F32, vec![4, 300], 1, Dist::U(-5.0, 5.0));
    softmax_case(l, F32, vec![3, 7, 5], 1, Dist::U(-5.0, 5.0));
    softmax_case(l, F32, vec![2, 3, 4], 0, Dist::U(-30.0, 30.0));
    softmax_case(l, BF16, vec![6, 70], 1, Dist::U(-5.0, 5.0));
}

fn reduce_case(l: &mut List, dtype: DType, op: ReduceOp, x: Vec<usize>, axes: Vec<usize>, keepdim: bool) {
    let variant = format!("{}/{x:?}/axes{axes:?}{}", op.name(), if keepdim { "/keepdim" } else { "" });
    let rop = Op::Reduce { op, axes: axes.clone(), keepdim };
    l.std(rop, dtype, &variant, move |c| {
        let (xi, _) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
        let y = c.g.reduce(op, xi, &axes, keepdim)?;
        let axes = axes.clone();
        Ok(Out::Host(y, host(move |f| host::reduce(op, f.get("x")?, &axes, keepdim))))
    });
}

fn reduce(l: &mut List) {
    reduce_case(l, F32, ReduceOp::Sum, vec![3, 70, 5], vec![1], false);
    reduce_case(l, F32, ReduceOp::Mean, vec![4, 6, 9], vec![0, 2], true);
    reduce_case(l, F32, ReduceOp::Max, vec![3, 4, 5], vec![2], false);
    reduce_case(l, F32, ReduceOp::Min, vec![2, 3, 4], vec![0, 1, 2], false);
    reduce_case(l, BF16, ReduceOp::Mean, vec![5, 33], vec![1], true);
}

fn dist_for(dtype: DType) -> Dist {
    if dtype.is_int() {
        Dist::Int(-1_000_000, 1_000_000)
    } else {
        Dist::U(-2.0, 2.0)
    }
}

fn views(l: &mut List) {
    for (dtype, from, to) in [
        (F32, vec![2, 3, 4], vec![6, 4]),
        (I64, vec![4, 6], vec![2, 2, 6]),
        (BF16, vec![3, 10], vec![30]),
        (F32, vec![1], vec![]),
    ] {
        let op = Op::Reshape { shape: Shape(to.clone()) };
        l.exact(op, dtype, &format!("{from:?}->{to:?}"), move |c| {
            let (x, _) = c.input("x", from.clone(), dtype, dist_for(dtype))?;
            let y = c.g.reshape(x, to.clone())?;
            let to = Shape(to.clone());
            Ok(Out::Host(y, host(move |f| host::reshape(f.get("x")?, &to))))
        });
    }
    for (dtype, x, perm) in [
        (F32, vec![2, 3, 4, 5], vec![0, 2, 1, 3]),
        (F32, vec![3, 4, 5, 2], vec![3, 1, 2, 0]),
        (BF16, vec![5, 7], vec![1, 0]),
        (I64, vec![2, 3, 4], vec![2, 0, 1]),
    ] {
        l.exact(Op::Permute { perm: perm.clone() }, dtype, &format!("{x:?}/{perm:?}"), move |c| {
            let (xi, _) = c.input("x", x.clone(), dtype, dist_for(dtype))?;
            let y = c.g.permute(xi, &perm)?;
            let perm = perm.clone();
            Ok(Out::Host(y, host(move |f| host::permute(f.get("x")?, &perm))))
        });
    }
    for (dtype, x, axis, start, end) in [
        (F32, vec![3, 10, 4], 1, 2, 7),
        (F32, vec![4, 67], 1, 3, 66),
        (I64, vec![6, 5], 0, 1, 4),
        (F16, vec![2, 3, 8], 2, 0, 8),
        (F32, vec![3, 10, 4], 1, 4, 4),
    ] {
        let op = Op::Slice { axis, start, end };
        l.exact(op, dtype, &format!("{x:?}/axis{axis}/{start}..{end}"), move |c| {
            let (xi, _) = c.input("x", x.clone(), dtype, dist_for(dtype))?;
            let y = c.g.slice(xi, axis, start, end)?;
            Ok(Out::Host(y, host(move |f| host::slice(f.get("x")?, axis, start, end))))
        });
    }
    for (dtype, parts, axis) in [
        (F32, vec![vec![2, 3, 4], vec![2, 1, 4], vec![2, 5, 4]], 1),
        (F32, vec![vec![1, 7], vec![3, 7]], 0),
        (I64, vec![vec![2, 2], vec![2, 3]], 1),
        (BF16, vec![vec![2, 3, 4], vec![2, 3, 1]], 2),
        (F32, vec![vec![3, 4]], 0),
        (F32, vec![vec![2, 0, 4], vec![2, 3, 4]], 1),
    ] {
        l.exact(Op::Concat { axis }, dtype, &format!("{parts:?}/axis{axis}"), move |c| {
            let mut ids = Vec::new();
            for (i, s) in parts.iter().enumerate() {
                ids.push(c.input(&format!("x{i}"), s.clone(), dtype, dist_for(dtype))?.0);
            }
            let y = c.g.concat(&ids, axis)?;
            let n = parts.len();
            Ok(Out::Host(
                y,
                host(move |f| {
                    let xs = (0..n).map(|i| f.get(&format!("x{i}"))).collect::<std::result::Result<Vec<_>, _>>()?;
                    host::concat(&xs, axis)
                }),
            ))
        });
    }
    for (dtype, x, factors) in
        [(F32, vec![1, 2, 3, 4, 5], [2, 2]), (F32, vec![2, 3, 3], [1, 3]), (BF16, vec![1, 3, 4, 4], [2, 2])]
    {
        l.exact(Op::Upsample { factors }, dtype, &format!("{x:?}/x{factors:?}"), move |c| {
            let (xi, xr) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
            let y = c.g.upsample(xi, factors)?;
            let yr = compose::upsample(&mut c.r, xr, factors)?;
            Ok(Out::Comp(y, yr))
        });
    }
    for (dtype, table, ids_dtype, ids, weight) in [
        (F32, [50, 16], I64, vec![2, 7], true),
        (BF16, [20, 8], I32, vec![5], false),
        (F32, [3, 5], I64, vec![4, 1, 2], false),
    ] {
        l.exact(Op::Gather, dtype, &format!("table{table:?}/ids{ids_dtype}{ids:?}"), move |c| {
            let d = Dist::U(-2.0, 2.0);
            let (t, _) =
                if weight { c.weight("embed.weight", table, dtype, d)? } else { c.input("table", table, dtype, d)? };
            let (i, _) = c.input("ids", ids.clone(), ids_dtype, Dist::Int(0, table[0] as i64))?;
            let y = c.g.gather(t, i)?;
            let tname = if weight { "embed.weight" } else { "table" };
            Ok(Out::Host(y, host(move |f| host::gather(f.get(tname)?, f.get("ids")?))))
        });
    }
}

// ---- fused ops (made by the fusion pass); reference: the unfused composition ------------

fn fexpr(text: &str) -> Result<vidrt_ir::ElementwiseExpr> {
    vidrt_ir::ElementwiseExpr::parse(text).map_err(internal)
}

/// A fused elementwise case: slots with their shapes and draws, reference = one primitive
/// node per step.
fn fused_case(l: &mut List, dtype: DType, text: &'static str, slots: Vec<(Vec<usize>, Dist)>) {
    let Ok(expr) = fexpr(text) else { return };
    let variant = format!("{text}/{:?}", slots.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
    let op = Op::Fused { expr: expr.clone() };
    l.std(op.clone(), dtype, &variant, move |c| {
        let (mut ins, mut refs) = (Vec::new(), Vec::new());
        for (k, (shape, dist)) in slots.iter().enumerate() {
            let (a, b) = c.input(&format!("s{k}"), shape.clone(), dtype, *dist)?;
            ins.push(a);
            refs.push(b);
        }
        let y = c.g.add(op.clone(), &ins)?;
        let yr = compose::expr(&mut c.r, &expr, &refs)?;
        Ok(Out::Comp(y, yr))
    });
}

#[allow(clippy::too_many_arguments)]
fn matmul_epilogue_case(
    l: &mut List,
    dtype: DType,
    a: Vec<usize>,
    n: usize,
    text: &'static str,
    extra: Vec<Vec<usize>>,
) {
    let Ok(epilogue) = fexpr(text) else { return };
    let op = Op::MatMulEpilogue { trans_a: false, trans_b: true, bias: true, epilogue: epilogue.clone() };
    l.std(op.clone(), dtype, &format!("{a:?}->{n}/{text}/{extra:?}"), move |c| {
        let d = Dist::U(-1.0, 1.0);
        let k = a[a.len() - 1];
        let (x, xr) = c.input("x", a.clone(), dtype, d)?;
        let (w, wr) = c.weight("proj.weight", [n, k], dtype, d)?;
        let (b, br) = c.weight("proj.bias", [n], dtype, d)?;
        let (mut ins, mut refs) = (vec![x, w, b], Vec::new());
        for (i, shape) in extra.iter().enumerate() {
            let (e, er) = c.input(&format!("e{i}"), shape.clone(), dtype, d)?;
            ins.push(e);
            refs.push(er);
        }
        let y = c.g.add(op.clone(), &ins)?;
        let acc = compose::matmul(&mut c.r, xr, wr, false, true, Some(br))?;
        let slots: Vec<NodeId> = std::iter::once(acc).chain(refs).collect();
        let yr = compose::expr(&mut c.r, &epilogue, &slots)?;
        Ok(Out::Comp(y, yr))
    });
}

fn conv_epilogue_case(l: &mut List, dtype: DType, x: [usize; 5], w: [usize; 5], text: &'static str, residual: bool) {
    let Ok(epilogue) = fexpr(text) else { return };
    let (stride, pad) = ([1; 3], [[2, 0], [1, 1], [1, 1]]);
    let op = Op::Conv3dEpilogue { stride, pad, bias: true, epilogue: epilogue.clone() };
    l.std(op.clone(), dtype, &format!("x{x:?}/w{w:?}/{text}"), move |c| {
        let d = Dist::U(-1.0, 1.0);
        let (xi, xr) = c.input("x", x, dtype, d)?;
        let (wi, wr) = c.weight("conv.weight", w, dtype, d)?;
        let (bi, br) = c.weight("conv.bias", [w[0]], dtype, d)?;
        let out = [x[0], w[0], x[2], x[3], x[4]];
        let (mut ins, mut slots) = (vec![xi, wi, bi], Vec::new());
        if residual {
            let (r, rr) = c.input("residual", out, dtype, d)?;
            ins.push(r);
            slots.push(rr);
        }
        let y = c.g.add(op.clone(), &ins)?;
        let acc = compose::conv3d(&mut c.r, xr, wr, Some(br), stride, pad)?;
        slots.insert(0, acc);
        let yr = compose::expr(&mut c.r, &epilogue, &slots)?;
        Ok(Out::Comp(y, yr))
    });
}

fn fused_ops(l: &mut List) {
    let u = Dist::U(-2.0, 2.0);
    // gate·x + residual; modulate written out; a chain with a cast; broadcasting slots.
    fused_case(
        l,
        F32,
        "in(0);in(1);mul(0,1);in(2);add(3,2)",
        vec![(vec![2, 37, 48], u), (vec![2, 1, 48], u), (vec![2, 37, 48], u)],
    );
    fused_case(
        l,
        F32,
        "in(0);in(1);add_scalar[1.0](1);mul(0,2);in(2);add(3,4);gelu_tanh(5)",
        vec![(vec![3, 5, 70], u), (vec![70], u), (vec![5, 1], u)],
    );
    fused_case(l, F32, "in(0);silu(0);cast[bf16](1);cast[f32](2);square(3)", vec![(vec![4, 33], u)]);
    fused_case(l, BF16, "in(0);in(1);sub(0,1);tanh(2);mul_scalar[0.5](3)", vec![(vec![6, 40], u), (vec![1, 40], u)]);
    fused_case(l, F16, "in(0);exp(0);in(1);div(1,2)", vec![(vec![2, 3, 9], u), (vec![3, 1], Dist::Away(0.5, 2.0))]);
    // DiT epilogues: gelu-tanh (ffn.net.0), gate·acc + residual (to_out.0, ffn.net.2).
    matmul_epilogue_case(l, F32, vec![1, 67, 48], 40, "in(0);gelu_tanh(0)", vec![]);
    matmul_epilogue_case(
        l,
        F32,
        vec![2, 65, 48],
        40,
        "in(0);in(1);mul(0,1);in(2);add(3,2)",
        vec![vec![2, 1, 40], vec![2, 65, 40]],
    );
    matmul_epilogue_case(l, BF16, vec![70, 32], 24, "in(0);silu(0)", vec![]);
    // VAE epilogues: conv + residual, conv + silu.
    conv_epilogue_case(l, F32, [1, 4, 3, 6, 7], [5, 4, 3, 3, 3], "in(0);in(1);add(0,1)", true);
    conv_epilogue_case(l, BF16, [1, 3, 2, 5, 5], [4, 3, 3, 3, 3], "in(0);silu(0)", false);
    // Layer norm + modulate (DiT norm1/norm3/norm_out).
    for (dtype, x, ss) in [(F32, vec![2, 37, 48], vec![2, 1, 48]), (BF16, vec![1, 20, 64], vec![64])] {
        let eps = 1e-6;
        l.std(Op::LayerNormModulate { eps }, dtype, &format!("{x:?}/scale{ss:?}"), move |c| {
            let (xi, xr) = c.input("x", x.clone(), dtype, Dist::U(-2.0, 2.0))?;
            let (s, sr) = c.input("scale", ss.clone(), dtype, Dist::U(-0.5, 0.5))?;
            let (t, tr) = c.input("shift", ss.clone(), dtype, Dist::U(-1.0, 1.0))?;
            let y = c.g.add(Op::LayerNormModulate { eps }, &[xi, s, t])?;
            let n = compose::layer_norm(&mut c.r, xr, None, eps)?;
            let yr = compose::modulate(&mut c.r, n, sr, tr)?;
            Ok(Out::Comp(y, yr))
        });
    }
    // RMS norm across heads + rope (DiT q/k).
    for (dtype, b, s, heads, hd) in [(F32, 2, 12, 3, 16), (BF16, 1, 12, 2, 16)] {
        let eps = 1e-6;
        let op = Op::RmsNormRope { eps, heads };
        l.std(op.clone(), dtype, &format!("b{b}/s{s}/h{heads}/hd{hd}"), move |c| {
            let ch = heads * hd;
            let (xi, xr) = c.input("x", [b, s, ch], dtype, Dist::U(-2.0, 2.0))?;
            let (w, wr) = c.weight("norm_q.weight", [ch], dtype, Dist::U(0.5, 1.5))?;
            let (cos, cosr) = c.input("cos", [s, hd], F32, Dist::U(-1.0, 1.0))?;
            let (sin, sinr) = c.input("sin", [s, hd], F32, Dist::U(-1.0, 1.0))?;
            let y = c.g.add(op.clone(), &[xi, w, cos, sin])?;
            let n = compose::rms_norm(&mut c.r, xr, Some(wr), 2, eps, RmsStyle::MeanSquare)?;
            let n4 = c.r.reshape(n, [b, s, heads, hd])?;
            let yr = compose::rope(&mut c.r, n4, cosr, sinr)?;
            Ok(Out::Comp(y, yr))
        });
    }
    // RMS norm + silu (the VAE's norm → nonlinearity).
    for (dtype, x) in [(F32, [1usize, 8, 2, 5, 6]), (BF16, [1, 6, 1, 4, 7])] {
        let Ok(epilogue) = fexpr("in(0);silu(0)") else { return };
        let eps = 1e-12;
        let op =
            Op::RmsNormEpilogue { axis: 1, eps, style: RmsStyle::L2Clamp, weight: true, epilogue: epilogue.clone() };
        l.std(op.clone(), dtype, &format!("{x:?}/axis1/l2clamp/silu"), move |c| {
            let (xi, xr) = c.input("x", x, dtype, Dist::U(-2.0, 2.0))?;
            let (w, wr) = c.weight("norm.gamma", [x[1], 1, 1, 1], dtype, Dist::U(0.5, 1.5))?;
            let y = c.g.add(op.clone(), &[xi, w])?;
            let n = compose::rms_norm(&mut c.r, xr, Some(wr), 1, eps, RmsStyle::L2Clamp)?;
            let yr = compose::expr(&mut c.r, &epilogue, &[n])?;
            Ok(Out::Comp(y, yr))
        });
    }
}
