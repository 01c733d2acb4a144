//! Property tests of the IR: the text form round-trips random valid graphs; shape inference
//! agrees with simple models (broadcasting, matmul) and keeps the invariants of views
//! (permute, reshape, slice, concat); the verifier rejects corrupted graphs with a typed
//! error naming the corrupted node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vidrt_ir::{
    cost, text, verify, BinaryOp, DType, Graph, IrError, NodeId, Op, ReduceOp, RmsStyle, Shape, TrigPart, UnaryOp,
};

// ---- random valid graphs --------------------------------------------------------------

/// A small deterministic generator driven by one proptest value per step.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

/// Scalars that stress the text form's float formatting.
const FLOATS: [f64; 8] = [0.5, -0.3, 1e-7, 12345.678, 0.1 + 0.2, -2.5e12, 3.0, f64::MIN_POSITIVE];
/// Names that stress the text form's quoting.
const NAMES: [&str; 5] = ["blk.0.attn", "q \"k\" v", "back\\slash", "line\nbreak", "ünï→code"];
const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

struct Gen {
    g: Graph,
    rng: Rng,
    leaves: usize,
}

impl Gen {
    fn leaf_name(&mut self, kind: &str) -> String {
        self.leaves += 1;
        if self.rng.below(4) == 0 {
            format!("{kind}{} {}", self.leaves, self.rng.pick(&NAMES))
        } else {
            format!("{kind}{}", self.leaves)
        }
    }

    fn dims(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.rng.range(1, 4)).collect()
    }

    fn input(&mut self, shape: Vec<usize>, dtype: DType) -> NodeId {
        let name = self.leaf_name("in");
        self.g.input(&name, shape, dtype).expect("fresh input")
    }

    fn weight(&mut self, shape: Vec<usize>, dtype: DType) -> NodeId {
        let name = self.leaf_name("w");
        self.g.weight(&name, shape, dtype).expect("fresh weight")
    }

    fn float_dtype(&mut self) -> DType {
        self.rng.pick(&FLOAT_DTYPES)
    }

    /// An existing float node of rank ≥ `min_rank`, or a new input.
    fn float_node(&mut self, min_rank: usize) -> NodeId {
        let ok: Vec<NodeId> =
            self.g.ids().filter(|&i| self.g.dtype(i).is_float() && self.g.shape(i).rank() >= min_rank).collect();
        if ok.is_empty() || self.rng.below(5) == 0 {
            let rank = self.rng.range(min_rank, min_rank + 2);
            let (d, t) = (self.dims(rank), self.float_dtype());
            self.input(d, t)
        } else {
            self.rng.pick(&ok)
        }
    }

    /// A shape that broadcasts to `s`: leading axes dropped, some axes set to 1.
    fn broadcastable(&mut self, s: &[usize]) -> Vec<usize> {
        let drop = self.rng.below(s.len() + 1);
        s[drop..].iter().map(|&d| if self.rng.coin() { 1 } else { d }).collect()
    }

    /// One random valid step; returns the node it added last.
    fn step(&mut self, kind: u8) -> Result<NodeId, IrError> {
        let y = match kind % 20 {
            0 => {
                let x = self.float_node(0);
                let op = match self.rng.pick(&UnaryOp::ALL) {
                    UnaryOp::AddScalar(_) => UnaryOp::AddScalar(self.rng.pick(&FLOATS)),
                    UnaryOp::MulScalar(_) => UnaryOp::MulScalar(self.rng.pick(&FLOATS)),
                    UnaryOp::Clamp(_, _) => {
                        let (a, b) = (self.rng.pick(&FLOATS), self.rng.pick(&FLOATS));
                        UnaryOp::Clamp(a.min(b), a.max(b))
                    }
                    u => u,
                };
                self.g.unary(op, x)?
            }
            1 => {
                let a = self.float_node(0);
                let s = self.broadcastable(&self.g.shape(a).0.clone());
                let b = self.input(s, self.g.dtype(a));
                let op = self.rng.pick(&BinaryOp::ALL);
                if self.rng.coin() {
                    self.g.binary(op, a, b)?
                } else {
                    self.g.binary(op, b, a)?
                }
            }
            2 => {
                let x = self.float_node(0);
                let to = self.rng.pick(&DType::ALL);
                self.g.cast(x, to)?
            }
            3 => {
                let (ta, tb, bias) = (self.rng.coin(), self.rng.coin(), self.rng.coin());
                let (m, k, n) = (self.rng.range(1, 5), self.rng.range(1, 5), self.rng.range(1, 5));
                let t = self.float_dtype();
                let rank = self.rng.below(3);
                let mut sa = self.dims(rank);
                sa.extend(if ta { [k, m] } else { [m, k] });
                let a = self.input(sa, t);
                let b = self.weight(if tb { vec![n, k] } else { vec![k, n] }, t);
                let mut ins = vec![a, b];
                if bias {
                    ins.push(self.weight(vec![n], t));
                }
                self.g.add(Op::MatMul { trans_a: ta, trans_b: tb, bias }, &ins)?
            }
            4 => {
                let t = self.float_dtype();
                let (b, sq, sk, h, d, dv) = (
                    self.rng.range(1, 2),
                    self.rng.range(1, 5),
                    self.rng.range(1, 5),
                    self.rng.range(1, 3),
                    self.rng.range(1, 4),
                    self.rng.range(1, 4),
                );
                let q = self.input(vec![b, sq, h, d], t);
                let k = self.input(vec![b, sk, h, d], t);
                let v = self.input(vec![b, sk, h, dv], t);
                let bias = if self.rng.coin() {
                    let s = self.broadcastable(&[b, h, sq, sk]);
                    Some(self.input(s, t))
                } else {
                    None
                };
                let mask = if self.rng.coin() { Some(self.input(vec![b, sk], DType::I64)) } else { None };
                let scale = self.rng.pick(&FLOATS);
                self.g.attention(q, k, v, scale, bias, mask)?
            }
            5 => {
                let t = self.float_dtype();
                let (n, ci, co) = (self.rng.range(1, 2), self.rng.range(1, 3), self.rng.range(1, 3));
                let mut xs = vec![n, ci];
                let mut ws = vec![co, ci];
                let mut stride = [1; 3];
                let mut pad = [[0; 2]; 3];
                for ax in 0..3 {
                    let k = self.rng.range(1, 3);
                    pad[ax] = [self.rng.below(3), self.rng.below(2)];
                    stride[ax] = self.rng.range(1, 2);
                    let min = k.saturating_sub(pad[ax][0] + pad[ax][1]).max(1);
                    xs.push(self.rng.range(min, min + 3));
                    ws.push(k);
                }
                let x = self.input(xs, t);
                let w = self.weight(ws, t);
                let b = if self.rng.coin() { Some(self.weight(vec![co], t)) } else { None };
                self.g.conv3d(x, w, b, stride, pad)?
            }
            6 => {
                let x = self.float_node(1);
                let axis = self.rng.below(self.g.shape(x).rank());
                let c = self.g.shape(x).0[axis];
                let w = if self.rng.coin() { Some(self.weight(vec![c], self.g.dtype(x))) } else { None };
                let style = if self.rng.coin() { RmsStyle::MeanSquare } else { RmsStyle::L2Clamp };
                self.g.rms_norm(x, w, axis, 1e-6, style)?
            }
            7 => {
                let x = self.float_node(1);
                let (d, t) = (self.g.shape(x).last(), self.g.dtype(x));
                let affine =
                    if self.rng.coin() { Some((self.weight(vec![d], t), self.weight(vec![d], t))) } else { None };
                self.g.layer_norm(x, affine, 1e-5)?
            }
            8 => {
                let x = self.float_node(0);
                let s = self.g.shape(x).0.clone();
                let t = self.g.dtype(x);
                let (a, b) = (self.broadcastable(&s), self.broadcastable(&s));
                let (a, b) = (self.input(a, t), self.input(b, t));
                self.g.modulate(x, a, b)?
            }
            9 => {
                let (s, h, hd) = (self.rng.range(1, 4), self.rng.range(1, 3), 2 * self.rng.range(1, 3));
                let rank = self.rng.below(2);
                let mut xs = self.dims(rank);
                xs.extend([s, h, hd]);
                let t = self.float_dtype();
                let x = self.input(xs, t);
                let c = self.input(vec![s, hd], DType::F32);
                let sn = self.input(vec![s, hd], DType::F32);
                self.g.rope(x, c, sn)?
            }
            10 => {
                let x = self.float_node(1);
                let axis = self.rng.below(self.g.shape(x).rank());
                self.g.softmax(x, axis)?
            }
            11 => {
                let x = self.float_node(1);
                let rank = self.g.shape(x).rank();
                let mut axes: Vec<usize> = (0..rank).filter(|_| self.rng.coin()).collect();
                if axes.is_empty() {
                    axes.push(self.rng.below(rank));
                }
                let op = self.rng.pick(&[ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min]);
                let keep = self.rng.coin();
                self.g.reduce(op, x, &axes, keep)?
            }
            12 => {
                let x = self.float_node(0);
                let d = self.g.shape(x).0.clone();
                let shape = reshape_target(&d, &mut self.rng);
                self.g.reshape(x, shape)?
            }
            13 => {
                let x = self.float_node(0);
                let perm = random_perm(self.g.shape(x).rank(), &mut self.rng);
                self.g.permute(x, &perm)?
            }
            14 => {
                let x = self.float_node(1);
                let axis = self.rng.below(self.g.shape(x).rank());
                let dim = self.g.shape(x).0[axis];
                let start = self.rng.range(0, dim);
                let end = self.rng.range(start, dim);
                self.g.slice(x, axis, start, end)?
            }
            15 => {
                let x = self.float_node(1);
                let mut s = self.g.shape(x).0.clone();
                let axis = self.rng.below(s.len());
                s[axis] = self.rng.range(0, 3);
                let other = self.input(s, self.g.dtype(x));
                let parts = if self.rng.coin() { vec![x, other, x] } else { vec![other] };
                self.g.concat(&parts, axis)?
            }
            16 => {
                let x = self.float_node(2);
                let f = [self.rng.range(1, 3), self.rng.range(1, 3)];
                self.g.upsample(x, f)?
            }
            17 => {
                let t = self.float_dtype();
                let ts = vec![self.rng.range(1, 6), self.rng.range(1, 4)];
                let table = self.weight(ts, t);
                let idt = self.rng.pick(&[DType::I32, DType::I64]);
                let r = self.rng.below(3);
                let ids = self.dims(r);
                let ids = self.input(ids, idt);
                self.g.gather(table, ids)?
            }
            18 => {
                let (b, dt) = (self.rng.range(1, 3), self.float_dtype());
                let t = self.input(vec![b], dt);
                let dim = 2 * self.rng.range(2, 4);
                let (flip, shift) = (self.rng.coin(), self.rng.pick(&[0.0, 1.0]));
                self.g.timestep_embedding(t, dim, flip, shift)?
            }
            _ => match self.rng.below(3) {
                0 => {
                    let v = self.rng.pick(&[1.5, -0.0, f64::INFINITY, -7.25e-9, 42.0]);
                    let t = if v.is_finite() { self.rng.pick(&DType::ALL) } else { self.float_dtype() };
                    let rank = self.rng.below(3);
                    let s = self.dims(rank);
                    self.g.constant(v, s, t)?
                }
                1 => {
                    let grid = [self.rng.range(1, 2), self.rng.range(1, 3), self.rng.range(1, 3)];
                    let dims = [2 * self.rng.range(1, 2), 2 * self.rng.range(1, 2), 2 * self.rng.range(1, 2)];
                    let part = if self.rng.coin() { TrigPart::Cos } else { TrigPart::Sin };
                    self.g.rope_table(grid, dims, 10000.0, part)?
                }
                _ => {
                    let op = Op::RelPositionBucket {
                        q_len: self.rng.range(1, 5),
                        k_len: self.rng.range(1, 5),
                        num_buckets: 2 * self.rng.range(2, 16),
                        max_distance: self.rng.range(40, 128),
                    };
                    self.g.add(op, &[])?
                }
            },
        };
        if self.rng.below(3) == 0 {
            let n = self.rng.pick(&NAMES);
            self.g.named(y, n);
        }
        Ok(y)
    }
}

/// A shape with the same element count: flattened, two adjacent axes merged, or an axis
/// split in two.
fn reshape_target(d: &[usize], rng: &mut Rng) -> Vec<usize> {
    let numel: usize = d.iter().product();
    match rng.below(3) {
        0 => vec![numel],
        1 if d.len() >= 2 => {
            let i = rng.below(d.len() - 1);
            [&d[..i], &[d[i] * d[i + 1]], &d[i + 2..]].concat()
        }
        _ => {
            // Split an axis as [f, d/f] for a divisor f, or add a unit axis.
            if d.is_empty() {
                return vec![1];
            }
            let i = rng.below(d.len());
            if d[i] == 0 {
                return [&d[..i], &[1, 0], &d[i + 1..]].concat();
            }
            let f = (1..=d[i]).filter(|&f| d[i] / f * f == d[i]).collect::<Vec<_>>();
            let f = rng.pick(&f);
            [&d[..i], &[f, d[i] / f], &d[i + 1..]].concat()
        }
    }
}

fn random_perm(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// A random valid graph from a list of (op kind, seed) steps, with 1–3 outputs.
fn random_graph(steps: &[(u8, u64)]) -> Graph {
    let mut gen = Gen { g: Graph::new(), rng: Rng(steps.first().map_or(1, |s| s.1)), leaves: 0 };
    let mut last = None;
    for (i, &(kind, seed)) in steps.iter().enumerate() {
        gen.rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        if i % 5 == 4 {
            gen.g.push_scope(format!("blocks.{i}"));
        }
        match gen.step(kind) {
            Ok(y) => last = Some(y),
            Err(e) => panic!("generator built an invalid node for kind {kind}: {e}"),
        }
    }
    let n = gen.g.len();
    if let Some(y) = last {
        gen.g.set_output("y", y).expect("first output");
    }
    for (j, name) in ["aux \"1\"", "aux\\2"].iter().enumerate() {
        if steps.len() > j + 1 {
            let id = NodeId(gen.rng.below(n) as u32);
            gen.g.set_output(*name, id).expect("fresh output name");
        }
    }
    gen.g
}

fn steps() -> impl Strategy<Value = Vec<(u8, u64)>> {
    prop::collection::vec((0u8..20, any::<u64>()), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// print → parse gives the same nodes and outputs, and prints the same text again.
    #[test]
    fn text_round_trips(steps in steps()) {
        let g = random_graph(&steps);
        prop_assert!(verify(&g).is_ok(), "{:?}", verify(&g));
        let t = text::print(&g);
        let back = text::parse(&t).map_err(|e| TestCaseError::fail(format!("{e}\n{t}")))?;
        prop_assert_eq!(&back.nodes, &g.nodes);
        prop_assert_eq!(&back.outputs, &g.outputs);
        prop_assert_eq!(text::print(&back), t);
    }

    /// Changing one non-leaf node's stored shape or dtype is rejected by the verifier with
    /// `Mismatch` naming that node.
    #[test]
    fn verifier_rejects_corrupted_shapes(steps in steps(), pick in any::<u64>(), how in 0u8..4) {
        let g = random_graph(&steps);
        let inner: Vec<usize> = (0..g.len()).filter(|&i| !g.nodes[i].op.is_leaf()).collect();
        prop_assume!(!inner.is_empty());
        let i = inner[(pick % inner.len() as u64) as usize];
        let mut bad = g.clone();
        let n = &mut bad.nodes[i];
        match how {
            0 => n.shape.0.push(1),
            1 if n.shape.rank() > 0 => n.shape.0[0] += 1,
            2 if n.shape.rank() > 0 => { n.shape.0.pop(); }
            _ => n.dtype = if n.dtype == DType::I32 { DType::F16 } else { DType::I32 },
        }
        match verify(&bad) {
            Err(IrError::Mismatch { node, .. }) => prop_assert_eq!(node, i),
            other => prop_assert!(false, "expected Mismatch at node {}, got {:?}", i, other),
        }
    }

    /// A node reading a later node is rejected as a dangling input.
    #[test]
    fn verifier_rejects_forward_references(steps in steps(), pick in any::<u64>()) {
        let g = random_graph(&steps);
        let with_inputs: Vec<usize> = (0..g.len()).filter(|&i| !g.nodes[i].inputs.is_empty()).collect();
        prop_assume!(!with_inputs.is_empty());
        let i = with_inputs[(pick % with_inputs.len() as u64) as usize];
        let mut bad = g.clone();
        bad.nodes[i].inputs[0] = NodeId(i as u32);
        match verify(&bad) {
            Err(IrError::DanglingInput { node, .. }) => prop_assert_eq!(node, i),
            other => prop_assert!(false, "expected DanglingInput at node {}, got {:?}", i, other),
        }
    }
}

// ---- shape inference against simple models -------------------------------------------

/// Numpy broadcasting, written plainly: right-align; equal extents stay, a 1 stretches.
fn broadcast_model(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn small_shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 0..=max_rank)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn binary_broadcasting_matches_model(a in small_shape(4), b in small_shape(4), op in 0usize..7) {
        let mut g = Graph::new();
        let x = g.input("a", a.clone(), DType::F32).unwrap();
        let y = g.input("b", b.clone(), DType::F32).unwrap();
        let res = g.binary(BinaryOp::ALL[op], x, y);
        match broadcast_model(&a, &b) {
            Some(out) => {
                let id = res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(g.shape(id).dims(), &out[..]);
                prop_assert_eq!(Shape::broadcast(&Shape(b.clone()), &Shape(a.clone())), Some(Shape(out)));
            }
            None => prop_assert!(matches!(res, Err(IrError::Invalid { node: 2, .. })), "{:?}", res),
        }
    }

    #[test]
    fn binary_dtypes_must_agree(a in small_shape(3)) {
        let mut g = Graph::new();
        let x = g.input("a", a.clone(), DType::F32).unwrap();
        let y = g.input("b", a, DType::BF16).unwrap();
        let rejected = matches!(g.add_(x, y), Err(IrError::Invalid { .. }));
        prop_assert!(rejected);
    }

    #[test]
    fn matmul_shapes(
        ba in small_shape(2), bb in small_shape(2),
        m in 1usize..6, k in 1usize..6, n in 1usize..6, k_off in 0usize..3,
        ta in any::<bool>(), tb in any::<bool>(),
    ) {
        // One time in three the inner dimensions disagree.
        let kb = if k_off == 0 { k + 1 } else { k };
        let mut sa = ba.clone();
        sa.extend(if ta { [k, m] } else { [m, k] });
        let mut sb = bb.clone();
        sb.extend(if tb { [n, kb] } else { [kb, n] });
        let mut g = Graph::new();
        let a = g.input("a", sa, DType::F32).unwrap();
        let b = g.input("b", sb, DType::F32).unwrap();
        let res = g.matmul(a, b, ta, tb);
        match broadcast_model(&ba, &bb).filter(|_| kb == k) {
            Some(mut out) => {
                out.extend([m, n]);
                let id = res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(g.shape(id).dims(), &out[..]);
                let numel: usize = out.iter().product();
                prop_assert_eq!(cost::node_cost(&g, id).flops, (2 * numel * k) as u64);
            }
            None => prop_assert!(matches!(res, Err(IrError::Invalid { op: "matmul", .. })), "{:?}", res),
        }
    }

    #[test]
    fn permute_invariants(s in small_shape(5), seed in any::<u64>()) {
        let perm = random_perm(s.len(), &mut Rng(seed));
        let mut g = Graph::new();
        let x = g.input("x", s.clone(), DType::F16).unwrap();
        let y = g.permute(x, &perm).unwrap();
        for (i, &p) in perm.iter().enumerate() {
            prop_assert_eq!(g.shape(y).0[i], s[p]);
        }
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let z = g.permute(y, &inv).unwrap();
        prop_assert_eq!(g.shape(z), g.shape(x));
        prop_assert_eq!(g.dtype(z), DType::F16);
        if s.len() >= 2 {
            let mut dup = perm.clone();
            dup[0] = dup[1];
            let rejected = matches!(g.permute(x, &dup), Err(IrError::Invalid { .. }));
            prop_assert!(rejected);
        }
        let rejected = matches!(g.permute(x, &[0; 6]), Err(IrError::Invalid { .. }));
        prop_assert!(rejected);
    }

    #[test]
    fn reshape_keeps_element_count(s in small_shape(4), seed in any::<u64>()) {
        let mut g = Graph::new();
        let x = g.input("x", s.clone(), DType::I64).unwrap();
        let target = reshape_target(&s, &mut Rng(seed));
        let y = g.reshape(x, target.clone()).unwrap();
        prop_assert_eq!(g.shape(y).numel(), g.shape(x).numel());
        prop_assert_eq!(g.shape(y).dims(), &target[..]);
        let back = g.reshape(y, s.clone()).unwrap();
        prop_assert_eq!(g.shape(back), g.shape(x));
        let numel: usize = s.iter().product();
        let rejected = matches!(g.reshape(x, [numel + 1]), Err(IrError::Invalid { .. }));
        prop_assert!(rejected);
    }

    #[test]
    fn slice_shapes(s in prop::collection::vec(1usize..6, 1..4), axis in 0usize..4, start in 0usize..7, len in 0usize..7) {
        let mut g = Graph::new();
        let x = g.input("x", s.clone(), DType::F32).unwrap();
        let end = start + len;
        let res = g.slice(x, axis, start, end);
        if axis < s.len() && end <= s[axis] {
            let y = res.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want = s.clone();
            want[axis] = len;
            prop_assert_eq!(g.shape(y).dims(), &want[..]);
        } else {
            prop_assert!(matches!(res, Err(IrError::Invalid { op: "slice", .. })), "{:?}", res);
        }
    }

    #[test]
    fn concat_shapes(
        s in prop::collection::vec(1usize..4, 1..4),
        axis_seed in any::<usize>(),
        lens in prop::collection::vec(0usize..4, 1..4),
        break_one in any::<bool>(),
    ) {
        let axis = axis_seed % s.len();
        let mut g = Graph::new();
        let mut parts = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            let mut p = s.clone();
            p[axis] = l;
            parts.push(g.input(&format!("x{i}"), p, DType::BF16).unwrap());
        }
        let y = g.concat(&parts, axis).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut want = s.clone();
        want[axis] = lens.iter().sum();
        prop_assert_eq!(g.shape(y).dims(), &want[..]);
        if break_one && s.len() >= 2 {
            // A part that differs off the concat axis is rejected.
            let other = (axis + 1) % s.len();
            let mut p = s.clone();
            p[other] += 1;
            let odd = g.input("odd", p, DType::BF16).unwrap();
            parts.push(odd);
            let rejected = matches!(g.concat(&parts, axis), Err(IrError::Invalid { op: "concat", .. }));
            prop_assert!(rejected);
        }
    }

    #[test]
    fn reduce_and_softmax_shapes(s in prop::collection::vec(1usize..5, 1..5), mask in any::<u8>(), keep in any::<bool>()) {
        let mut axes: Vec<usize> = (0..s.len()).filter(|a| mask & (1 << a) != 0).collect();
        if axes.is_empty() {
            axes.push(0);
        }
        let mut g = Graph::new();
        let x = g.input("x", s.clone(), DType::F32).unwrap();
        let y = g.reduce(ReduceOp::Mean, x, &axes, keep).unwrap();
        let want: Vec<usize> = s
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| if axes.contains(&i) { keep.then_some(1) } else { Some(d) })
            .collect();
        prop_assert_eq!(g.shape(y).dims(), &want[..]);
        let sm = g.softmax(x, s.len() - 1).unwrap();
        prop_assert_eq!(g.shape(sm), g.shape(x));
        let rejected = matches!(g.softmax(x, s.len()), Err(IrError::Invalid { .. }));
        prop_assert!(rejected);
    }
}
