//! Splitting a node whose buffers exceed the adapter's storage binding limit.
//!
//! A buffer may be larger than one binding (`max_storage_buffer_binding_size`, 128 MiB on
//! lavapipe and in WebGPU's defaults) as long as it fits `max_buffer_size`; a kernel can then
//! only see a window of it. A node whose output or inputs do not fit one binding is computed
//! in chunks of its output's outermost non-unit axis: each chunk is the same op on a slice of
//! that axis, lowered by the ordinary lowering as a one-node graph whose inputs are windows
//! (byte ranges bound with an offset) of the inputs that follow the axis, and whole bindings
//! of the rest (weights, broadcast operands). The kernels never know: a window is their
//! whole buffer.
//!
//! Which inputs follow the split axis is the op's business ([`follow`]): elementwise ops and
//! the row-wise norms follow by broadcasting; a matmul splits its batch axes or its rows (A's
//! rows follow, B is bound whole); attention splits its batch or, for one batch, its query
//! rows (K and V whole); rope's tables follow the sequence axis; a conv3d splits its batch
//! or its output channels (x whole per batch, the weight's rows follow).
//! Copies (permute, slice, concat, upsample) do not come here: they split their iteration
//! space into boxes of any shape (`lower::copy_steps`).
//! A chunk's windows start at multiples of the adapter's storage offset alignment, so the
//! chunk length is a multiple of a granularity in rows. Per-element arithmetic is unchanged
//! by the split, so results are the same bits as an unsplit run. Ops that cannot split
//! (reductions, norms along the split axis, a matmul with one row or a transposed A, a
//! conv3d whose input per batch exceeds one binding) are refused with the reason.

use vidrt_ir::{DType, Graph, NodeId, Op, Shape};
use vidrt_kernels::wgsl::Elem;

/// The part of a buffer a chunk binds, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// The whole buffer.
    Whole,
    /// Elements `offset..offset + len`.
    Range { offset: usize, len: usize },
}

/// One chunk of a split node: a one-node graph (inputs, then the op as node `node`) and the
/// windows of the original node's inputs and output it binds.
pub(crate) struct Chunk {
    pub graph: Graph,
    pub node: usize,
    pub ins: Vec<Window>,
    pub out: Window,
}

/// The largest binding node `i` may need, in bytes: its inputs as stored, its output as f32
/// words (the scratch a lowering may use for it is that large). Past the limit, it splits.
pub(crate) fn largest_binding(g: &Graph, i: usize, st: &dyn Fn(DType) -> Elem) -> u64 {
    let node = &g.nodes[i];
    let bytes = |shape: &Shape, d: DType| st(d).words(shape.numel()) as u64 * 4;
    let ins = node.inputs.iter().map(|id| bytes(g.shape(*id), g.dtype(*id)));
    ins.fold(node.shape.numel() as u64 * 4, u64::max)
}

/// How one input of a node follows a split of the output along axis `a`, its axes aligned
/// with the output's by `d` (input axis `j` is output axis `j + d`; the axes of output
/// axes before `a` are indexed by the chunk, or broadcast where their extent is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Its axis `a - d` is sliced like the output's axis `a`.
    Follow { d: usize },
    /// Its axes from `a - d` on are bound whole for each chunk (e.g. B of a batched matmul).
    Block { d: usize },
    /// Bound whole (weights, operands aligned otherwise).
    Whole,
}

/// For a split of node `i`'s output along axis `a`: each input's role. An error says why
/// the op cannot split along `a`.
fn roles(g: &Graph, i: usize, a: usize) -> Result<Vec<Role>, String> {
    let node = &g.nodes[i];
    let r = node.shape.rank();
    let rank = |k: usize| g.shape(node.inputs[k]).rank();
    // Right-aligned broadcasting: input k follows where it has axis `a` with extent > 1.
    let broadcast = |k: usize| -> Role {
        let d = r - rank(k);
        match a.checked_sub(d) {
            Some(ai) if g.shape(node.inputs[k]).0[ai] != 1 => Role::Follow { d },
            Some(_) => Role::Block { d },
            None => Role::Whole,
        }
    };
    let all = |f: &dyn Fn(usize) -> Role| (0..node.inputs.len()).map(f).collect::<Vec<_>>();
    let lanes_after = |axis: usize| {
        if axis > a {
            Ok(all(&broadcast))
        } else {
            Err(format!("it normalises along axis {axis}, at or before the split axis {a}"))
        }
    };
    match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Modulate | Op::Fused { .. } => Ok(all(&broadcast)),
        Op::Softmax { axis } | Op::RmsNorm { axis, .. } | Op::RmsNormEpilogue { axis, .. } => lanes_after(*axis),
        Op::LayerNorm { .. } | Op::LayerNormModulate { .. } => lanes_after(r - 1),
        Op::MatMul { trans_a, bias, .. } | Op::MatMulEpilogue { trans_a, bias, .. } => {
            let operands = 2 + usize::from(*bias);
            if a + 2 < r {
                // A batch axis: A and B follow where they have it; the bias is whole.
                Ok(all(&|k| if (2..operands).contains(&k) { Role::Whole } else { broadcast(k) }))
            } else if a + 2 == r && !trans_a {
                // Rows: A's rows follow; B (per batch) and the bias are whole; epilogue
                // inputs broadcast.
                Ok(all(&|k| match k {
                    0 => Role::Follow { d: r - rank(0) },
                    1 => Role::Block { d: r - rank(1) },
                    k if k < operands => Role::Whole,
                    k => broadcast(k),
                }))
            } else if a + 2 == r {
                Err("A is transposed, so its rows are not contiguous".into())
            } else {
                Err("a matmul does not split its columns".into())
            }
        }
        Op::Attention { bias, mask, .. } => {
            // q, k, v [B, S, H, D]; the output [B, Sq, H, Dv]; the bias broadcasts to
            // [B, H, Sq, Sk], the key mask is [B, Sk].
            let bias_role = |a: usize| -> Result<Role, String> {
                let s = g.shape(node.inputs[3]);
                let d = 4 - s.rank();
                match a {
                    0 if d == 0 && s.0[0] != 1 => Ok(Role::Follow { d }),
                    0 | 1 if d <= a => Ok(Role::Block { d }),
                    0 | 1 => Ok(Role::Whole),
                    _ => Err("attention splits its batches and query rows only".into()),
                }
                .and_then(|role| {
                    let sq = s.rank().checked_sub(2).map_or(1, |x| s.0[x]);
                    if a == 1 && sq != 1 {
                        Err("its bias varies along the query rows, which are not contiguous there".into())
                    } else {
                        Ok(role)
                    }
                })
            };
            let mut out = match a {
                0 => vec![Role::Follow { d: 0 }; 3],
                1 => vec![Role::Follow { d: 0 }, Role::Block { d: 0 }, Role::Block { d: 0 }],
                _ => return Err("attention splits its batches and query rows only".into()),
            };
            if *bias {
                out.push(bias_role(a)?);
            }
            if *mask {
                out.push(if a == 0 { Role::Follow { d: 0 } } else { Role::Block { d: 0 } });
            }
            Ok(out)
        }
        // x [.., S, H, hd]; the tables [S, hd] follow the sequence axis.
        Op::Rope if a + 3 < r => Ok(vec![Role::Follow { d: 0 }, Role::Whole, Role::Whole]),
        Op::Rope if a + 3 == r => Ok(vec![Role::Follow { d: 0 }, Role::Follow { d: a }, Role::Follow { d: a }]),
        Op::RmsNormRope { .. } if a + 3 <= r => {
            // x [.., S, C] → [.., S, H, hd]: x follows at the same axis; the norm weight is
            // whole; the [S, hd] tables follow the sequence axis.
            let tables = if a + 3 == r { Role::Follow { d: a } } else { Role::Whole };
            Ok(vec![Role::Follow { d: 0 }, Role::Whole, tables, tables])
        }
        Op::Gather if a + 1 < r => Ok(vec![Role::Whole, Role::Follow { d: 0 }]),
        Op::TimestepEmbedding { .. } if a == 0 => Ok(vec![Role::Follow { d: 0 }]),
        Op::Conv3d { bias, .. } | Op::Conv3dEpilogue { bias, .. } if a == 0 => {
            let operands = 2 + usize::from(*bias);
            Ok(all(&|k| match k {
                0 => Role::Follow { d: 0 },
                k if k < operands => Role::Whole,
                k => broadcast(k),
            }))
        }
        Op::Conv3d { bias, .. } | Op::Conv3dEpilogue { bias, .. } if a == 1 => {
            // Output channels (contiguous in [N, Co, T, H, W]): x is whole per batch; the
            // weight [Co, ..] and the bias [Co] follow; epilogue inputs broadcast.
            let operands = 2 + usize::from(*bias);
            Ok(all(&|k| match k {
                0 => Role::Block { d: 0 },
                k if k < operands => Role::Follow { d: 1 },
                k => broadcast(k),
            }))
        }
        op => Err(format!("{} does not split along axis {a} of {}", op.name(), node.shape)),
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// At most this many chunks for one node.
const MAX_CHUNKS: usize = 1 << 14;

/// A split of node `i` along output axis `a`: (rows per chunk, roles), or why not.
fn plan_axis(
    g: &Graph,
    i: usize,
    a: usize,
    limit: u64,
    align: u64,
    st: &dyn Fn(DType) -> Elem,
) -> Result<(usize, Vec<Role>), String> {
    let node = &g.nodes[i];
    let out = node.shape.dims();
    let roles = roles(g, i, a)?;
    let rows = out[a];
    let elem_bytes = |d: DType| if st(d) == Elem::F16 { 2u64 } else { 4 };
    let prod = |d: &[usize]| d.iter().product::<usize>() as u64;
    // Row sizes of the windows that slice rows: (elements per row, bytes per element).
    let mut rowed = vec![(prod(&out[a + 1..]), elem_bytes(node.dtype))];
    // Bytes every chunk binds regardless of its rows (blocks and whole inputs).
    let mut fixed = Vec::new();
    // Byte strides of the outer axes the chunks index: they must keep windows aligned.
    let mut outer_strides = vec![(prod(&out[..a]) > 1).then(|| prod(&out[a..]) * elem_bytes(node.dtype))];
    for (k, role) in roles.iter().enumerate() {
        let id = node.inputs[k];
        let (dims, eb) = (g.shape(id).dims(), elem_bytes(g.dtype(id)));
        let strides = g.shape(id).strides();
        let (d, from) = match *role {
            Role::Whole => {
                fixed.push(st(g.dtype(id)).words(g.shape(id).numel()) as u64 * 4);
                continue;
            }
            Role::Follow { d } | Role::Block { d } => (d, a.checked_sub(d).ok_or("an input aligned past the split")?),
        };
        for j in 0..from.min(dims.len()) {
            if dims[j] != 1 && dims[j] != out[j + d] {
                return Err(format!("input {k} {} does not align with the output {}", g.shape(id), node.shape));
            }
            if dims[j] != 1 {
                outer_strides.push(Some(strides[j] as u64 * eb));
            }
        }
        match role {
            Role::Follow { .. } => {
                if dims.get(from) != Some(&rows) {
                    return Err(format!("input {k} {} does not follow the output's axis {a}", g.shape(id)));
                }
                rowed.push((prod(&dims[from + 1..]), eb));
            }
            _ => fixed.push(prod(&dims[from.min(dims.len())..]) * eb),
        }
    }
    if let Some(&b) = fixed.iter().find(|&&b| b > limit) {
        return Err(format!("an input bound whole for every chunk takes {b} bytes"));
    }
    if let Some(s) = outer_strides.iter().flatten().find(|&&s| s % align != 0) {
        return Err(format!("chunks {s} bytes apart would not start at the {align}-byte alignment"));
    }
    // Rows per chunk: every window (and the output's f32 scratch) within the limit, and a
    // multiple of the rows that keep every window's offset aligned.
    let per_row = rowed.iter().map(|&(n, b)| n * b.max(4)).max().unwrap_or(4).max(1);
    let mut gran = 1u64;
    for &(n, b) in &rowed {
        let g_k = align / gcd(align, (n * b).max(1));
        gran = gran / gcd(gran, g_k) * g_k;
    }
    let fit = limit / per_row / gran * gran;
    if fit == 0 {
        return Err(format!("{gran} rows of {per_row} bytes (the alignment's granularity) exceed one binding"));
    }
    let step = (fit as usize).min(rows);
    let count = prod(&out[..a]) as usize * rows.div_ceil(step);
    if count > MAX_CHUNKS {
        return Err(format!("{count} chunks (more than {MAX_CHUNKS})"));
    }
    Ok((step, roles))
}

/// The chunks computing node `i` within bindings of `limit` bytes whose offsets are
/// multiples of `align` bytes; `st` says how each dtype is stored. The split axis is the
/// outermost one that works (outer axes are then indexed one chunk each). An error says why
/// the node cannot split.
pub(crate) fn chunks(
    g: &Graph,
    i: usize,
    limit: u64,
    align: u64,
    st: &dyn Fn(DType) -> Elem,
) -> Result<Vec<Chunk>, String> {
    let node = &g.nodes[i];
    let out = node.shape.dims();
    let first = out.iter().position(|&d| d > 1).ok_or("its output has one element")?;
    let mut why = String::new();
    let mut plan = None;
    for a in first..out.len() {
        match plan_axis(g, i, a, limit, align, st) {
            Ok(p) => {
                plan = Some((a, p));
                break;
            }
            Err(e) => {
                if why.is_empty() {
                    why = e;
                }
            }
        }
    }
    let Some((a, (step, roles))) = plan else {
        return Err(why);
    };
    let rows = out[a];
    let outer = &out[..a];
    let n_outer: usize = outer.iter().product();
    let out_strides = node.shape.strides();
    let mut chunks = Vec::new();
    for o in 0..n_outer {
        // The outer multi-index of this chunk.
        let mut idx = vec![0; a];
        let mut rem = o;
        for j in (0..a).rev() {
            idx[j] = rem % outer[j];
            rem /= outer[j];
        }
        for r0 in (0..rows).step_by(step) {
            let len = step.min(rows - r0);
            let mut mg = Graph::new();
            let mut ids: Vec<NodeId> = Vec::new();
            let mut wins = Vec::new();
            for (k, role) in roles.iter().enumerate() {
                let id = node.inputs[k];
                let mut dims = g.shape(id).dims().to_vec();
                let strides = g.shape(id).strides();
                let win = match *role {
                    Role::Whole => Window::Whole,
                    Role::Follow { d } | Role::Block { d } => {
                        let from = a - d;
                        let mut offset = 0;
                        for j in 0..from {
                            if dims[j] != 1 {
                                offset += idx[j + d] * strides[j];
                            }
                            dims[j] = 1;
                        }
                        let block: usize = dims[from..].iter().product();
                        if matches!(role, Role::Follow { .. }) {
                            offset += r0 * strides[from];
                            dims[from] = len;
                            Window::Range { offset, len: len * strides[from] }
                        } else {
                            Window::Range { offset, len: block }
                        }
                    }
                };
                wins.push(win);
                ids.push(mg.input(&format!("in{k}"), dims, g.dtype(id)).map_err(|e| e.to_string())?);
            }
            let sub = mg.add(node.op.clone(), &ids).map_err(|e| format!("a chunk does not build: {e}"))?;
            mg.named(sub, &node.name);
            let mut want = out.to_vec();
            want[..a].fill(1);
            want[a] = len;
            if mg.shape(sub).dims() != want.as_slice() {
                return Err(format!("a chunk's shape {} is not {want:?}", mg.shape(sub)));
            }
            let offset = (0..a).map(|j| idx[j] * out_strides[j]).sum::<usize>() + r0 * out_strides[a];
            chunks.push(Chunk {
                graph: mg,
                node: sub.index(),
                ins: wins,
                out: Window::Range { offset, len: len * out_strides[a] },
            });
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vidrt_ir::UnaryOp;

    fn st(d: DType) -> Elem {
        if d == DType::F16 {
            Elem::F16
        } else {
            Elem::F32
        }
    }

    /// Every chunk's windows within the limit and aligned, and the output windows tiling
    /// the output exactly once, in order.
    fn check(g: &Graph, i: usize, limit: u64, align: u64) -> Result<usize, String> {
        let chunks = chunks(g, i, limit, align, &st)?;
        let node = &g.nodes[i];
        let mut next = 0;
        for c in &chunks {
            for (k, w) in c.ins.iter().enumerate().map(|(k, w)| (Some(k), w)).chain([(None, &c.out)]) {
                let d = k.map_or(node.dtype, |k| g.dtype(node.inputs[k]));
                let numel = k.map_or(node.shape.numel(), |k| g.shape(node.inputs[k]).numel());
                let eb = if st(d) == Elem::F16 { 2 } else { 4 };
                let (offset, len) = match *w {
                    Window::Whole => (0, numel),
                    Window::Range { offset, len } => (offset, len),
                };
                assert!(offset + len <= numel, "window past its tensor");
                assert_eq!(offset as u64 * eb % align, 0, "window offset {offset} not aligned");
                // Output windows hold the f32 scratch too.
                let bytes = len as u64 * if k.is_none() { 4 } else { eb };
                assert!(bytes <= limit, "window of {bytes} bytes past {limit}");
            }
            let Window::Range { offset, len } = c.out else { panic!("the output is windowed") };
            assert_eq!(offset, next, "output windows leave a gap or overlap");
            assert_eq!(c.graph.nodes[c.node].shape.numel(), len, "chunk shape and window disagree");
            next += len;
        }
        assert_eq!(next, node.shape.numel(), "output windows do not cover the output");
        Ok(chunks.len())
    }

    proptest! {
        #[test]
        fn elementwise_and_matmul_chunks_tile_their_outputs(
            b in 1usize..4, s in 1usize..80, c in 1usize..40, n in 1usize..24,
            half in any::<bool>(), limit_kib in 1u64..16, align_log in 2u32..9,
        ) {
            let dt = if half { DType::F16 } else { DType::F32 };
            let (limit, align) = (limit_kib * 256, 1u64 << align_log);
            let mut g = Graph::new();
            let x = g.input("x", [b, s, c], dt).expect("x");
            let bias = g.input("bias", [c], dt).expect("bias");
            let y = g.add_(x, bias).expect("add");
            let e = g.unary(UnaryOp::Exp, y).expect("exp");
            let w = g.input("w", [c, n], dt).expect("w");
            let m = g.matmul(e, w, false, false).expect("matmul");
            for i in [y.index(), e.index(), m.index()] {
                // Refusals say why; a split must be exact.
                if let Err(why) = check(&g, i, limit, align) {
                    prop_assert!(!why.is_empty());
                    // Aligned rows and one batch within the limit always split.
                    let eb = if half { 2 } else { 4 };
                    let must = i != m.index() && (c as u64 * eb) % align == 0 && (s * c * 4) as u64 <= limit;
                    prop_assert!(!must, "refused: {why}");
                }
            }
        }
    }

    #[test]
    fn a_dit_sized_matmul_splits_by_batch_and_rows() {
        // CFG batch 2 × 32,760 tokens × 1536 in f32 (201 MB per batch) at lavapipe's 128 MiB.
        let mut g = Graph::new();
        let x = g.input("x", [2, 32760, 1536], DType::F32).expect("x");
        let w = g.input("w", [1536, 1536], DType::F32).expect("w");
        let m = g.matmul(x, w, false, false).expect("matmul");
        let n = check(&g, m.index(), 128 << 20, 256).expect("splits");
        assert_eq!(n, 4, "two row chunks per batch");
    }

    #[test]
    fn reductions_and_norms_along_the_only_axis_are_refused_with_a_reason() {
        let mut g = Graph::new();
        let x = g.input("x", [4096], DType::F32).expect("x");
        let s = g.add(Op::Softmax { axis: 0 }, &[x]).expect("softmax");
        let why = chunks(&g, s.index(), 1024, 32, &st).err().expect("refused");
        assert!(why.contains("normalises along axis 0"), "{why}");
    }
}
