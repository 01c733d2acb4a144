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
//! (reductions, a norm of a single lane, a transposed A past one binding, an operand that
//! must be bound whole and is too large) are refused with the reason.
//!
//! Where the parts are not contiguous, boxes are staged instead ([`staged`]): copied into
//! contiguous scratch before the chunk and out of it after. "Same bits" holds with the same
//! kernel parameters: chunks have their own shapes, so a tuning database may pick other tiles
//! for them than for the whole node.

use vidrt_ir::{DType, Graph, NodeId, Op, Shape};
use vidrt_kernels::wgsl::Elem;

/// The part of a buffer a chunk binds, in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// The whole buffer.
    Whole,
    /// Elements `offset..offset + len`.
    Range { offset: usize, len: usize },
    /// A box of the tensor (a range per axis), not contiguous: staged through a contiguous
    /// scratch copy (an input is copied in before the chunk runs, the output copied out).
    Staged(Vec<(usize, usize)>),
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
    if let Some(s) = outer_strides.iter().flatten().find(|&&s| !s.is_multiple_of(align)) {
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
/// multiples of `align` bytes; `st` says how each dtype is stored. Windows of the buffers
/// where the op's parts are contiguous ([`windowed`]), else staged boxes where the op has
/// them ([`staged`]). An error says why the node cannot split.
pub(crate) fn chunks(
    g: &Graph,
    i: usize,
    limit: u64,
    align: u64,
    st: &dyn Fn(DType) -> Elem,
) -> Result<Vec<Chunk>, String> {
    if g.nodes[i].shape.numel() == 0 || g.nodes[i].inputs.iter().any(|id| g.shape(*id).numel() == 0) {
        return Err("an empty tensor (nothing to split; an operand bound whole is too large)".into());
    }
    windowed(g, i, limit, align, st).or_else(|why| match staged(g, i, limit, st) {
        Some(Ok(c)) => Ok(c),
        Some(Err(also)) => Err(format!("{why}; staged: {also}")),
        None => Err(why),
    })
}

/// Bytes per element as stored.
fn elem_bytes(st: &dyn Fn(DType) -> Elem, d: DType) -> u64 {
    if st(d) == Elem::F16 {
        2
    } else {
        4
    }
}

/// A one-node graph: inputs of `dims` (the dtypes of node `i`'s inputs), then `op`; its
/// output must be `want`.
fn sub_graph(g: &Graph, i: usize, op: Op, dims: Vec<Vec<usize>>, want: &[usize]) -> Result<(Graph, usize), String> {
    let node = &g.nodes[i];
    let mut mg = Graph::new();
    let mut ids = Vec::new();
    for (k, d) in dims.into_iter().enumerate() {
        ids.push(mg.input(&format!("in{k}"), d, g.dtype(node.inputs[k])).map_err(|e| e.to_string())?);
    }
    let sub = mg.add(op, &ids).map_err(|e| format!("a chunk does not build: {e}"))?;
    mg.named(sub, &node.name);
    if mg.shape(sub).dims() != want {
        return Err(format!("a chunk's shape {} is not {want:?}", mg.shape(sub)));
    }
    Ok((mg, sub.index()))
}

/// Chunks that stage boxes through scratch copies, for the ops whose parts are not
/// contiguous: attention by heads (q, k, v and a per-head bias; `[B, S, H, D]` interleaves
/// heads), conv3d by output rows (the input rows each chunk's window needs, with the
/// padding only where the chunk meets the border; channels-first layouts interleave rows),
/// matmul by output columns (a weight past one binding), and the elementwise ops and
/// norms along any axis but the normalised one ([`staged_broadcast`]). `None` for other ops.
fn staged(g: &Graph, i: usize, limit: u64, st: &dyn Fn(DType) -> Elem) -> Option<Result<Vec<Chunk>, String>> {
    let node = &g.nodes[i];
    let shape = |k: usize| g.shape(node.inputs[k]).dims().to_vec();
    let eb = |k: usize| elem_bytes(st, g.dtype(node.inputs[k]));
    let full = |d: &[usize]| d.iter().map(|&x| (0, x)).collect::<Vec<_>>();
    let numel = |d: &[usize]| d.iter().product::<usize>() as u64;
    let out = node.shape.dims().to_vec();
    match &node.op {
        Op::Attention { bias, mask, .. } => Some((|| {
            let (q, k, v) = (shape(0), shape(1), shape(2));
            let h = q[2];
            // Per head: q, k, v, the output (as the f32 scratch may hold it), a bias with a
            // head axis; whole: a bias without one, the key mask.
            let mut per_head = vec![numel(&q) / h as u64 * eb(0), numel(&k) / h as u64 * eb(1)];
            per_head.push(numel(&v) / h as u64 * eb(2));
            per_head.push(numel(&out) / h as u64 * 4);
            let mut whole = Vec::new();
            // The bias's head axis (it broadcasts to [B, H, Sq, Sk]), if it has one.
            let bias_axis = bias.then(|| {
                let b = shape(3);
                // Right-aligned to [B, H, Sq, Sk]: a bias of rank n has its head axis at n - 3.
                let ax = b.len().checked_sub(3).filter(|&ax| b[ax] == h && h > 1);
                match ax {
                    Some(_) => per_head.push(numel(&b) / h as u64 * eb(3)),
                    None => whole.push(numel(&b) * eb(3)),
                }
                ax
            });
            if *mask {
                let k = 3 + usize::from(*bias);
                whole.push(numel(&shape(k)) * eb(k));
            }
            if let Some(b) = whole.iter().find(|&&b| b > limit) {
                return Err(format!("an input bound whole takes {b} bytes"));
            }
            let worst = per_head.iter().copied().max().unwrap_or(1).max(1);
            let hc = (limit / worst) as usize;
            if hc == 0 {
                return Err(format!("one head takes {worst} bytes"));
            }
            let mut chunks = Vec::new();
            for h0 in (0..h).step_by(hc.min(h)) {
                let h1 = (h0 + hc).min(h);
                let heads = |d: &[usize], ax: usize| {
                    let mut b = full(d);
                    b[ax] = (h0, h1);
                    b
                };
                let mut ins = vec![heads(&q, 2), heads(&k, 2), heads(&v, 2)];
                let mut wins: Vec<Window> = ins.iter().cloned().map(Window::Staged).collect();
                if *bias {
                    match bias_axis.flatten() {
                        Some(ax) => {
                            ins.push(heads(&shape(3), ax));
                            wins.push(Window::Staged(heads(&shape(3), ax)));
                        }
                        None => {
                            ins.push(full(&shape(3)));
                            wins.push(Window::Whole);
                        }
                    }
                }
                if *mask {
                    let k = 3 + usize::from(*bias);
                    ins.push(full(&shape(k)));
                    wins.push(Window::Whole);
                }
                let dims = ins.iter().map(|b| b.iter().map(|r| r.1 - r.0).collect()).collect();
                let want = [out[0], out[1], h1 - h0, out[3]];
                let (graph, sub) = sub_graph(g, i, node.op.clone(), dims, &want)?;
                chunks.push(Chunk { graph, node: sub, ins: wins, out: Window::Staged(heads(&out, 2)) });
            }
            Ok(chunks)
        })()),
        Op::Conv3d { stride, pad, bias } | Op::Conv3dEpilogue { stride, pad, bias, .. } => Some((|| {
            let (x, w) = (shape(0), shape(1));
            let (kh, sh, top) = (w[3], stride[1], pad[1][0]);
            let (hin, ho) = (x[3], out[3]);
            let operands = 2 + usize::from(*bias);
            // Bytes per output row: the f32 output, the input rows, epilogue inputs with a row
            // axis; whole: the weight, the bias, epilogue inputs without one.
            let x_row = numel(&x) / hin as u64 * eb(0);
            let o_row = numel(&out) / ho as u64 * 4;
            let mut rowed = vec![o_row];
            let mut whole = vec![numel(&w) * eb(1)];
            if *bias {
                whole.push(numel(&shape(2)) * eb(2));
            }
            let r = out.len();
            let mut extra_axis = Vec::new();
            for k in operands..node.inputs.len() {
                let e = shape(k);
                let ax = (3 + e.len()).checked_sub(r).filter(|&ax| e[ax] == ho && ho > 1);
                match ax {
                    Some(_) => rowed.push(numel(&e) / ho as u64 * eb(k)),
                    None => whole.push(numel(&e) * eb(k)),
                }
                extra_axis.push(ax);
            }
            if let Some(b) = whole.iter().find(|&&b| b > limit) {
                return Err(format!("an input bound whole takes {b} bytes"));
            }
            // Output rows per chunk: `rows` need `(rows - 1)·sh + kh` input rows.
            let by_out = limit / rowed.iter().copied().max().unwrap_or(1).max(1);
            let by_in = (limit / x_row.max(1)).checked_sub(kh as u64).map_or(0, |x| x / sh as u64 + 1);
            let rows = by_out.min(by_in) as usize;
            if rows == 0 {
                return Err(format!("one output row needs {} bytes of input", x_row * kh as u64));
            }
            let mut chunks = Vec::new();
            for h0 in (0..ho).step_by(rows.min(ho)) {
                let h1 = (h0 + rows).min(ho);
                // Input rows [lo, hi] of the padded window, clipped to the tensor.
                let want_lo = (h0 * sh) as isize - top as isize;
                let want_hi = ((h1 - 1) * sh + kh - 1) as isize - top as isize;
                let lo = want_lo.max(0) as usize;
                let hi = want_hi.min(hin as isize - 1);
                if hi < lo as isize {
                    return Err("a chunk of output rows reads only padding".into());
                }
                let hi = hi as usize;
                let mut p = *pad;
                p[1] = [(lo as isize - want_lo) as usize, (want_hi - hi as isize) as usize];
                let op = match &node.op {
                    Op::Conv3dEpilogue { epilogue, .. } => {
                        Op::Conv3dEpilogue { stride: *stride, pad: p, bias: *bias, epilogue: epilogue.clone() }
                    }
                    _ => Op::Conv3d { stride: *stride, pad: p, bias: *bias },
                };
                let mut xb = full(&x);
                xb[3] = (lo, hi + 1);
                let mut ins = vec![xb.clone(), full(&w)];
                let mut wins = vec![Window::Staged(xb), Window::Whole];
                if *bias {
                    ins.push(full(&shape(2)));
                    wins.push(Window::Whole);
                }
                for (j, ax) in extra_axis.iter().enumerate() {
                    let e = shape(operands + j);
                    let mut b = full(&e);
                    match ax {
                        Some(ax) => {
                            b[*ax] = (h0, h1);
                            wins.push(Window::Staged(b.clone()));
                        }
                        None => wins.push(Window::Whole),
                    }
                    ins.push(b);
                }
                let dims = ins.iter().map(|b| b.iter().map(|r| r.1 - r.0).collect()).collect();
                let mut ob = full(&out);
                ob[3] = (h0, h1);
                let want: Vec<usize> = ob.iter().map(|r| r.1 - r.0).collect();
                let (graph, sub) = sub_graph(g, i, op, dims, &want)?;
                chunks.push(Chunk { graph, node: sub, ins: wins, out: Window::Staged(ob) });
            }
            Ok(chunks)
        })()),
        Op::MatMul { trans_b, bias, .. } | Op::MatMulEpilogue { trans_b, bias, .. } => Some((|| {
            // Columns: A whole; B's columns (rows of a `[N, K]` weight), the bias and epilogue
            // inputs with a column axis, boxed alike.
            let r = out.len();
            let n = out[r - 1];
            let operands = 2 + usize::from(*bias);
            if numel(&shape(0)) * eb(0) > limit {
                return Err(format!("A ({} bytes) is bound whole", numel(&shape(0)) * eb(0)));
            }
            let mut per_col = numel(&out) / n as u64 * 4;
            let mut axes = vec![None];
            for k in 1..node.inputs.len() {
                let d = shape(k);
                let ax = match k {
                    1 => Some(if *trans_b { d.len() - 2 } else { d.len() - 1 }),
                    k if k < operands => Some(0),
                    _ => (d.len() + r - 1).checked_sub(r).filter(|&ax| d[ax] == n && n > 1),
                };
                match ax {
                    Some(ax) => per_col = per_col.max(numel(&d) / d[ax] as u64 * eb(k)),
                    None if numel(&d) * eb(k) > limit => return Err(format!("input {k} is bound whole")),
                    None => {}
                }
                axes.push(ax);
            }
            let cols = (limit / per_col.max(1)) as usize;
            if cols == 0 {
                return Err(format!("one column takes {per_col} bytes"));
            }
            staged_along(g, i, r - 1, cols, &axes)
        })()),
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Modulate | Op::Fused { .. } => {
            Some(staged_broadcast(g, i, limit, st, None))
        }
        Op::Softmax { axis } | Op::RmsNorm { axis, .. } | Op::RmsNormEpilogue { axis, .. } => {
            Some(staged_broadcast(g, i, limit, st, Some(*axis)))
        }
        Op::LayerNorm { .. } | Op::LayerNormModulate { .. } => {
            Some(staged_broadcast(g, i, limit, st, Some(out.len().saturating_sub(1))))
        }
        _ => None,
    }
}

/// Staged chunks of node `i` along output axis `a`, `step` rows each: input `k` is boxed
/// alike along its axis `axes[k]`, or bound whole for `None`; the op is unchanged.
fn staged_along(g: &Graph, i: usize, a: usize, step: usize, axes: &[Option<usize>]) -> Result<Vec<Chunk>, String> {
    let node = &g.nodes[i];
    let full = |d: &[usize]| d.iter().map(|&x| (0, x)).collect::<Vec<_>>();
    let extent = node.shape.dims()[a];
    let mut chunks = Vec::new();
    for r0 in (0..extent).step_by(step.clamp(1, extent.max(1))) {
        let r1 = (r0 + step).min(extent);
        let mut dims = Vec::new();
        let mut wins = Vec::new();
        for (&id, ax) in node.inputs.iter().zip(axes) {
            let mut bx = full(g.shape(id).dims());
            match ax {
                Some(ax) => {
                    bx[*ax] = (r0, r1);
                    wins.push(Window::Staged(bx.clone()));
                }
                None => wins.push(Window::Whole),
            }
            dims.push(bx.iter().map(|r| r.1 - r.0).collect());
        }
        let mut ob = full(node.shape.dims());
        ob[a] = (r0, r1);
        let want: Vec<usize> = ob.iter().map(|r| r.1 - r.0).collect();
        let (graph, sub) = sub_graph(g, i, node.op.clone(), dims, &want)?;
        chunks.push(Chunk { graph, node: sub, ins: wins, out: Window::Staged(ob) });
    }
    Ok(chunks)
}

/// Staged chunks of an op whose inputs broadcast to its output (elementwise ops and the
/// norms, which reduce along `lane`): boxes along one output axis other than `lane`, the
/// outermost whose rows fit; inputs with that axis are boxed alike, the others whole.
fn staged_broadcast(
    g: &Graph,
    i: usize,
    limit: u64,
    st: &dyn Fn(DType) -> Elem,
    lane: Option<usize>,
) -> Result<Vec<Chunk>, String> {
    let node = &g.nodes[i];
    let out = node.shape.dims().to_vec();
    let r = out.len();
    let numel = |d: &[usize]| d.iter().product::<usize>() as u64;
    let mut why = String::from("no axis to split");
    for a in (0..r).filter(|&a| Some(a) != lane && out[a] > 1) {
        // Per output row along `a`: the f32 output and every input with the axis; whole: the rest.
        let mut per_row = numel(&out) / out[a] as u64 * 4;
        let mut whole = 0;
        let mut axes = Vec::new();
        for &id in &node.inputs {
            let d = g.shape(id).dims();
            let eb = elem_bytes(st, g.dtype(id));
            let ax = (a + d.len()).checked_sub(r).filter(|&ax| d[ax] == out[a]);
            match ax {
                Some(ax) => per_row = per_row.max(numel(d) / d[ax] as u64 * eb),
                None => whole = whole.max(numel(d) * eb),
            }
            axes.push(ax);
        }
        let rows = (limit / per_row.max(1)) as usize;
        if whole > limit || rows == 0 {
            why = format!("along axis {a}: {} bytes per row, {whole} bytes bound whole", per_row);
            continue;
        }
        return staged_along(g, i, a, rows, &axes);
    }
    Err(why)
}

/// Chunks of windows: the split axis is the outermost one that works (outer axes are then
/// indexed one chunk each).
fn windowed(g: &Graph, i: usize, limit: u64, align: u64, st: &dyn Fn(DType) -> Elem) -> Result<Vec<Chunk>, String> {
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
        let mut covered = 0;
        for c in &chunks {
            for (k, w) in c.ins.iter().enumerate().map(|(k, w)| (Some(k), w)).chain([(None, &c.out)]) {
                let d = k.map_or(node.dtype, |k| g.dtype(node.inputs[k]));
                let shape = k.map_or(&node.shape, |k| g.shape(node.inputs[k]));
                let eb = if st(d) == Elem::F16 { 2 } else { 4 };
                let len = match w {
                    Window::Whole => shape.numel(),
                    Window::Range { offset, len } => {
                        assert!(offset + len <= shape.numel(), "window past its tensor");
                        assert_eq!(*offset as u64 * eb % align, 0, "window offset {offset} not aligned");
                        *len
                    }
                    Window::Staged(bx) => {
                        assert!(bx.iter().zip(shape.dims()).all(|(r, &d)| r.0 < r.1 && r.1 <= d), "box {bx:?}");
                        bx.iter().map(|r| r.1 - r.0).product()
                    }
                };
                // Output windows hold the f32 scratch too.
                let bytes = len as u64 * if k.is_none() { 4 } else { eb };
                assert!(bytes <= limit, "window of {bytes} bytes past {limit}");
                if k.is_none() {
                    assert_eq!(c.graph.nodes[c.node].shape.numel(), len, "chunk shape and window disagree");
                    if let Window::Range { offset, .. } = w {
                        assert_eq!(*offset, covered, "output windows leave a gap or overlap");
                    }
                    covered += len;
                }
            }
        }
        assert_eq!(covered, node.shape.numel(), "output windows do not cover the output");
        // Staged output boxes are pairwise disjoint (with the count above: they tile it).
        let boxes: Vec<&Vec<(usize, usize)>> =
            chunks.iter().filter_map(|c| if let Window::Staged(b) = &c.out { Some(b) } else { None }).collect();
        for (x, a) in boxes.iter().enumerate() {
            for b in &boxes[x + 1..] {
                assert!(a.iter().zip(b.iter()).any(|(p, q)| p.1 <= q.0 || q.1 <= p.0), "boxes {a:?} and {b:?} overlap");
            }
        }
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
                    // Aligned rows and one batch within the limit always split, unless the
                    // output is a single element (nothing to split; CI's shrunk case).
                    let eb = if half { 2 } else { 4 };
                    let must = i != m.index()
                        && b * s * c > 1
                        && (c as u64 * eb).is_multiple_of(align)
                        && (s * c * 4) as u64 <= limit;
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
    fn dit_sized_attention_and_a_vae_sized_conv_stage_heads_and_rows() {
        // f32 self-attention of the 1.3B DiT, CFG batch 2: one batch's keys alone are 201 MB.
        let mut g = Graph::new();
        let q = g.input("q", [2, 32760, 12, 128], DType::F32).expect("q");
        let a = g.attention(q, q, q, 0.088, None, None).expect("attention");
        let n = check(&g, a.index(), 128 << 20, 256).expect("stages heads");
        assert_eq!(n, 3, "4 heads (33.5 MB of q, k, v and out each) per chunk");
        // The decoder's widest causal conv at 480×832 (x: 153 MB).
        let mut g = Graph::new();
        let x = g.input("x", [1, 384, 4, 120, 208], DType::F32).expect("x");
        let w = g.input("w", [384, 384, 3, 3, 3], DType::F32).expect("w");
        let y = g.conv3d(x, w, None, [1, 1, 1], [[2, 0], [1, 1], [1, 1]]).expect("conv");
        let n = check(&g, y.index(), 128 << 20, 256).expect("stages rows");
        assert!(n >= 2, "{n} chunks");
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
