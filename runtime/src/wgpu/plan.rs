//! Buffer planning and launch recording for [`super::WgpuBackend::compile`]: one buffer per
//! node (reshapes alias their input; a buffer is reused once its last reader has run),
//! nodes past one storage binding in chunks (`super::split`), every launch recorded with
//! its retyped kernel, pipeline and bind group; and [`plan_bindings`], the same splitting
//! as a dry run without a device.

use std::sync::Arc;

use vidrt_ir::{DType, Graph, Op, Tensor};
use vidrt_kernels::wgsl::{f16::retype, Elem, Features};

use super::device::{Ctx, Pipeline};
use super::lower::{self, Alloc, Buf};
use super::{split, to_words, WgpuExecutable};
use crate::backend::{Executable, WeightSource};
use crate::tune::Tuning;
use crate::RuntimeError;

/// How node `i` is computed within bindings of `limit` bytes at `align`-byte offsets
/// (`st`: each dtype's storage): `None` for one launch sequence over whole buffers (also
/// copies, which split themselves into boxes, see `lower::copy_steps`, and a gather from a
/// table past one binding, which reads it in windows of rows), else its chunks;
/// [`RuntimeError::OutOfMemory`] saying why for a node that cannot split.
fn split_node(
    g: &Graph,
    i: usize,
    limit: u64,
    align: u64,
    st: &dyn Fn(DType) -> Elem,
    what: &str,
) -> Result<Option<Vec<split::Chunk>>, RuntimeError> {
    let node = &g.nodes[i];
    let largest = split::largest_binding(g, i, st);
    let copy = matches!(node.op, Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } | Op::Upsample { .. });
    // A gather from a table past one binding reads it in windows of rows (lowering).
    let table = |k: usize| st(g.dtype(node.inputs[k])).words(g.shape(node.inputs[k]).numel()) as u64 * 4;
    let big_table = matches!(node.op, Op::Gather) && table(0) > limit;
    let refuse = |why: String| RuntimeError::OutOfMemory {
        what: format!(
            "{what} ({} {}, past one storage binding, and it cannot be split: {why})",
            node.op.name(),
            node.shape
        ),
        needed: largest,
        available: limit,
    };
    if big_table {
        // The ids and the output are bound whole by every window's launch.
        let out = st(node.dtype).words(node.shape.numel()) as u64 * 4;
        if table(1) > limit || out > limit {
            return Err(refuse("a gather splits its table, not its ids or output as well".into()));
        }
        return Ok(None);
    }
    if largest <= limit || copy {
        return Ok(None);
    }
    split::chunks(g, i, limit, align, st).map(Some).map_err(refuse)
}

/// A dry run of the planner's splitting, with no device: how many nodes of `graph` (after
/// the compiler's passes, as [`WgpuBackend`](super::WgpuBackend) compiles it) would run in chunks with storage
/// bindings of at most `binding_limit` bytes at offsets aligned to `offset_align`, tensors
/// stored as `features` allow (f16 storage) in buffers of at most `max_buffer` bytes; the
/// error for a node that cannot split or a tensor past `max_buffer`. Whether a graph at a
/// large shape fits an adapter's limits, without allocating it. Not checked: scratch a
/// lowering allocates inside a node (e.g. a reduction's f32 copy of its input).
pub fn plan_bindings(
    graph: &Graph,
    binding_limit: u64,
    offset_align: u64,
    max_buffer: u64,
    features: Features,
) -> Result<usize, RuntimeError> {
    vidrt_ir::verify(graph)?;
    let (g, _) = crate::cpu::optimize(graph, &vidrt_ir::passes::PassOptions::default())?;
    let st = |d: DType| lower::storage(d, features);
    let mut split = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        let what = format!("node %{i} `{}`", node.name);
        let bytes = st(node.dtype).words(node.shape.numel()) as u64 * 4;
        if bytes > max_buffer {
            return Err(RuntimeError::OutOfMemory {
                what: format!("{what} ({} {}, one buffer)", node.op.name(), node.shape),
                needed: bytes,
                available: max_buffer,
            });
        }
        if node.op.is_leaf()
            || matches!(node.op, Op::Reshape { .. } | Op::RopeTable { .. } | Op::RelPositionBucket { .. })
        {
            continue;
        }
        // Copies and gathers past one binding split themselves when lowered.
        let chunked = split_node(&g, i, binding_limit, offset_align.max(4), &st, &what)?.is_some();
        if chunked || split::largest_binding(&g, i, &st) > binding_limit {
            split += 1;
        }
    }
    Ok(split)
}

/// A buffer of the plan, or a window of one (what a chunk of a split node binds).
struct Slot {
    buffer: wgpu::Buffer,
    /// The words it holds (a window: the words it binds).
    words: usize,
    /// The words its current tensor takes (a reused buffer may be larger): what it binds.
    used: usize,
    /// Where a window starts in `buffer`, in bytes (0 for a whole buffer).
    offset: u64,
    /// The plan's buffer this is (a window of): its own index for a whole buffer.
    root: Buf,
}

/// Buffer planning and launch recording.
pub(super) struct Planner<'g> {
    ctx: Arc<Ctx>,
    tuning: Arc<Tuning>,
    features: Features,
    binding_limit: u64,
    g: &'g Graph,
    bufs: Vec<Slot>,
    free: Vec<Buf>,
    scratch: Vec<Buf>,
}

impl Alloc for Planner<'_> {
    fn scratch(&mut self, words: usize) -> Result<Buf, RuntimeError> {
        let b = self.take(words, "scratch")?;
        self.scratch.push(b);
        Ok(b)
    }

    fn shared_limit(&self) -> u64 {
        u64::from(self.ctx.limits.max_compute_workgroup_storage_size)
    }

    fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    fn features(&self) -> Features {
        self.features
    }

    fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    fn offset_align(&self) -> u64 {
        u64::from(self.ctx.limits.min_storage_buffer_offset_alignment).max(4).next_multiple_of(4)
    }

    fn binding_bytes(&self, b: Buf) -> u64 {
        (self.bufs[b].used as u64 * 4).max(4)
    }

    fn window(&mut self, b: Buf, offset: usize, words: usize) -> Buf {
        let (buffer, root) = (self.bufs[b].buffer.clone(), self.bufs[b].root);
        let offset = self.bufs[b].offset + offset as u64 * 4;
        self.bufs.push(Slot { buffer, words, used: words, offset, root });
        self.bufs.len() - 1
    }
}

/// One recorded launch.
pub(super) struct Launch {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) group: wgpu::BindGroup,
    pub(super) grid: [u32; 3],
    /// The graph node this launch computes (part of).
    pub(super) node: usize,
}

impl<'g> Planner<'g> {
    pub(super) fn new(
        ctx: Arc<Ctx>,
        tuning: Arc<Tuning>,
        features: Features,
        binding_limit: u64,
        g: &'g Graph,
    ) -> Self {
        Planner { ctx, tuning, features, binding_limit, g, bufs: Vec::new(), free: Vec::new(), scratch: Vec::new() }
    }

    /// A new whole buffer in the plan.
    fn push(&mut self, buffer: wgpu::Buffer, words: usize) -> Buf {
        let root = self.bufs.len();
        self.bufs.push(Slot { buffer, words, used: words, offset: 0, root });
        root
    }

    /// What a chunk binds for part `w` of buffer `b` (a tensor of `dims` stored as `e`): `b`
    /// itself, a window (offsets aligned by [`split::chunks`]), or a scratch buffer for a
    /// staged box, with the copy into it appended to `steps` for an input (`Some(true)` is
    /// returned for a staged part). f16 scratch joins `half`.
    #[allow(clippy::too_many_arguments)] // one part: buffer, window, tensor, direction, outputs
    fn chunk_part(
        &mut self,
        (b, w): (Buf, &split::Window),
        (dims, e): (&[usize], Elem),
        input: bool,
        steps: &mut Vec<lower::Step>,
        half: &mut Vec<Buf>,
    ) -> Result<Buf, RuntimeError> {
        match w {
            split::Window::Whole => Ok(b),
            split::Window::Range { offset, len } => Ok(self.window(b, e.words(*offset), e.words(*len))),
            split::Window::Staged(bx) => {
                let bdims: Vec<usize> = bx.iter().map(|r| r.1 - r.0).collect();
                let tmp = self.scratch(e.words(bdims.iter().product()))?;
                if e == Elem::F16 {
                    half.push(tmp);
                }
                if input {
                    let st = vidrt_ir::Shape(dims.to_vec()).strides();
                    let base = bx.iter().zip(&st).map(|(r, s)| r.0 * s).sum();
                    let dst = vidrt_ir::Shape(bdims.clone()).strides();
                    steps.extend(lower::copy_steps(self, (e, e), &bdims, (b, base, &st), (tmp, 0, &dst))?);
                }
                Ok(tmp)
            }
        }
    }

    /// The launch of step `s` of node `node` (`what`): its kernel retyped where it reads or
    /// writes a buffer of `half` (one holding f16 values), its pipeline and bind group.
    fn record(&mut self, mut s: lower::Step, half: &[Buf], what: &str, node: usize) -> Result<Launch, RuntimeError> {
        let root = |b: &Buf| self.bufs[*b].root;
        let reads: Vec<bool> = s.ins.iter().map(|b| half.contains(&root(b))).collect();
        let writes = half.contains(&root(&s.out));
        if writes || reads.iter().any(|&r| r) {
            s.kernel =
                retype(&s.kernel, &reads, writes).map_err(|e| RuntimeError::Device(format!("wgpu: {what}: {e}")))?;
        }
        let pipeline = self.ctx.pipeline(&s.kernel)?;
        let meta = self.ctx.storage_init(&s.meta, "meta")?;
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: meta.as_entire_binding() }];
        for (k, b) in s.ins.iter().chain([&s.out]).enumerate() {
            let n = &self.g.nodes[node];
            let what =
                format!("{what} ({} {}): binding {} of kernel `{}`", n.op.name(), n.shape, k + 1, s.kernel.entry);
            entries.push(wgpu::BindGroupEntry { binding: k as u32 + 1, resource: self.binding(*b, &what)? });
        }
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&s.kernel.entry),
            layout: &pipeline.layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RuntimeError::Device(format!("wgpu: {what}: binding `{}`: {e}", s.kernel.entry)));
        }
        Ok(Launch { pipeline, group, grid: s.grid, node })
    }

    /// The copy of a staged output box from its scratch `tmp` into `out` (of `dims`).
    fn unstage(
        &mut self,
        tmp: Buf,
        bx: &[(usize, usize)],
        (out, dims, e): (Buf, &[usize], Elem),
    ) -> Result<Vec<lower::Step>, RuntimeError> {
        let bdims: Vec<usize> = bx.iter().map(|r| r.1 - r.0).collect();
        let st = vidrt_ir::Shape(dims.to_vec()).strides();
        let base = bx.iter().zip(&st).map(|(r, s)| r.0 * s).sum();
        let src = vidrt_ir::Shape(bdims.clone()).strides();
        lower::copy_steps(self, (e, e), &bdims, (tmp, 0, &src), (out, base, &st))
    }

    /// The binding of `b`, refused past the binding limit.
    fn binding(&self, b: Buf, what: &str) -> Result<wgpu::BindingResource<'_>, RuntimeError> {
        let s = &self.bufs[b];
        let size = self.binding_bytes(b);
        if size > self.binding_limit {
            return Err(RuntimeError::OutOfMemory {
                what: format!("{what} (one storage binding)"),
                needed: size,
                available: self.binding_limit,
            });
        }
        Ok(wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &s.buffer,
            offset: s.offset,
            size: std::num::NonZeroU64::new(size),
        }))
    }

    /// A buffer of at least `words` words: the smallest free one that fits, else a new one.
    fn take(&mut self, words: usize, what: &str) -> Result<Buf, RuntimeError> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &b)| self.bufs[b].words >= words && self.bufs[b].words <= words.saturating_mul(2).max(1024))
            .min_by_key(|(_, &b)| self.bufs[b].words)
            .map(|(k, _)| k);
        if let Some(k) = best {
            let b = self.free.swap_remove(k);
            self.bufs[b].used = words;
            return Ok(b);
        }
        let b = self.ctx.storage((words as u64).saturating_mul(4), what)?;
        Ok(self.push(b, words))
    }

    /// A new buffer of `words` words (wgpu zero-fills new buffers).
    fn new_zeroed(&mut self, words: usize, what: &str) -> Result<Buf, RuntimeError> {
        let b = self.ctx.storage((words as u64).saturating_mul(4), what)?;
        Ok(self.push(b, words))
    }

    fn new_init(&mut self, words: &[u32], what: &str) -> Result<Buf, RuntimeError> {
        let b = self.ctx.storage_init(words, what)?;
        Ok(self.push(b, words.len()))
    }

    /// The executable, and how many of its nodes were split past one binding.
    pub(super) fn build(mut self, weights: &dyn WeightSource) -> Result<(Box<dyn Executable>, usize), RuntimeError> {
        let g = self.g;
        let n = g.len();
        let last = g.last_uses();
        // Alias roots (reshape shares its input's buffer) and each root's last reader.
        let mut root: Vec<usize> = (0..n).collect();
        let mut end: Vec<usize> = (0..n).collect();
        let mut pinned = vec![false; n];
        for (i, node) in g.nodes.iter().enumerate() {
            if let Op::Reshape { .. } = node.op {
                root[i] = root[node.inputs[0].index()];
            }
            let r = root[i];
            end[r] = end[r].max(last[i].unwrap_or(i));
            if node.op.is_leaf() || matches!(node.op, Op::RopeTable { .. } | Op::RelPositionBucket { .. }) {
                pinned[r] = true;
            }
        }
        for (_, id) in &g.outputs {
            pinned[root[id.index()]] = true;
        }
        let mut node_buf: Vec<Option<Buf>> = vec![None; n];
        let mut inputs = Vec::new();
        let mut launches = Vec::new();
        let mut computed = Vec::new();
        let mut split_nodes = 0;
        let features = self.features;
        let st = |d: DType| lower::storage(d, features);
        for (i, node) in g.nodes.iter().enumerate() {
            let words = st(node.dtype).words(node.shape.numel());
            let what = format!("node %{i} `{}`", node.name);
            let buf = match &node.op {
                Op::Input { name } => {
                    // Never a recycled buffer: inputs are written before any launch runs,
                    // so a buffer an earlier node writes would clobber them.
                    // Not through `new_init`: no host copy of the declared size (a huge input
                    // is refused by the size check before anything is allocated).
                    let b = self.new_zeroed(words, &what)?;
                    inputs.push((name.clone(), i, b));
                    b
                }
                Op::Weight { name } => {
                    let t = weights.fetch(name, &node.shape, node.dtype)?;
                    if t.shape() != &node.shape {
                        return Err(RuntimeError::ShapeMismatch {
                            name: name.clone(),
                            expected: node.shape.clone(),
                            expected_dtype: node.dtype,
                            got: t.shape().clone(),
                            got_dtype: t.dtype(),
                        });
                    }
                    self.new_init(&to_words(&t, node.dtype, st(node.dtype), name)?, &what)?
                }
                Op::Constant { value } => {
                    let t = Tensor::full(node.shape.clone(), node.dtype, *value);
                    self.new_init(&to_words(&t, node.dtype, st(node.dtype), &node.name)?, &what)?
                }
                Op::RopeTable { .. } | Op::RelPositionBucket { .. } => {
                    // Tables that depend only on the op's parameters: computed once, on the host.
                    let t = crate::cpu::eval(node, &[])?;
                    self.new_init(&to_words(&t, node.dtype, st(node.dtype), &node.name)?, &what)?
                }
                Op::Reshape { .. } => node_buf[node.inputs[0].index()]
                    .ok_or_else(|| RuntimeError::Device(format!("wgpu: internal: {what}: input has no buffer")))?,
                _ => {
                    let ins: Vec<Buf> =
                        node.inputs.iter().map(|id| node_buf[id.index()]).collect::<Option<Vec<_>>>().ok_or_else(
                            || RuntimeError::Device(format!("wgpu: internal: {what}: input has no buffer")),
                        )?;
                    let out = self.take(words, &what)?;
                    // f16 storage: every kernel reading or writing a buffer of f16 values (an
                    // f16 input or output, or its staged copy) is retyped (the generators
                    // write f32 kernels).
                    let mut half: Vec<Buf> = node
                        .inputs
                        .iter()
                        .zip(&ins)
                        .filter(|(id, _)| st(g.dtype(**id)) == Elem::F16)
                        .map(|(_, b)| *b)
                        .chain((st(node.dtype) == Elem::F16).then_some(out))
                        .collect();
                    let chunks = split_node(g, i, self.binding_limit, self.offset_align(), &st, &what)?;
                    let is_window = |p: &Self, b: &Buf| p.bufs[*b].root != *b;
                    let mut was_split = chunks.is_some();
                    match chunks {
                        None => {
                            let steps = lower::lower(g, i, &ins, out, &mut self)?;
                            // Copies split themselves into windows.
                            was_split |=
                                steps.iter().any(|s| s.ins.iter().chain([&s.out]).any(|b| is_window(&self, b)));
                            for s in steps {
                                launches.push(self.record(s, &half, &what, i)?);
                            }
                        }
                        Some(chunks) => {
                            let whole = half.len();
                            for c in &chunks {
                                let mut steps = Vec::new();
                                let mut cins = Vec::with_capacity(ins.len());
                                for ((w, id), &b) in c.ins.iter().zip(&node.inputs).zip(&ins) {
                                    let t = (g.shape(*id).dims(), st(g.dtype(*id)));
                                    cins.push(self.chunk_part((b, w), t, true, &mut steps, &mut half)?);
                                }
                                let t = (node.shape.dims(), st(node.dtype));
                                let cout = self.chunk_part((out, &c.out), t, false, &mut steps, &mut half)?;
                                steps.extend(lower::lower(&c.graph, c.node, &cins, cout, &mut self)?);
                                if let split::Window::Staged(bx) = &c.out {
                                    steps.extend(self.unstage(cout, bx, (out, t.0, t.1))?);
                                }
                                // Recorded now: which scratch holds f16 values holds for this chunk.
                                for s in steps {
                                    launches.push(self.record(s, &half, &what, i)?);
                                }
                                // The next chunk's launches run after this one's: its scratch is free.
                                half.truncate(whole);
                                let scratch = std::mem::take(&mut self.scratch);
                                self.free.extend(scratch);
                            }
                        }
                    }
                    if was_split {
                        split_nodes += 1;
                    }
                    let scratch = std::mem::take(&mut self.scratch);
                    self.free.extend(scratch);
                    computed.push((i, out));
                    out
                }
            };
            node_buf[i] = Some(buf);
            // Release buffers whose last reader is this node.
            for id in node.inputs.iter().map(|x| root[x.index()]).chain([root[i]]) {
                if end[id] == i && !pinned[id] {
                    if let Some(b) = node_buf[id] {
                        if !self.free.contains(&b) {
                            self.free.push(b);
                        }
                    }
                }
            }
        }
        let outputs = g
            .outputs
            .iter()
            .map(|(name, id)| {
                let node = g.node(*id);
                node_buf[id.index()]
                    .map(|b| (name.clone(), id.index(), b))
                    .ok_or_else(|| RuntimeError::Device(format!("wgpu: internal: output `{name}` of {}", node.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timer = self.ctx.timestamp_period.map(|_| {
            let q = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel time"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let b = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel time"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (q, b)
        });
        self.ctx.check_uncaptured()?;
        let exe = Box::new(WgpuExecutable {
            features,
            ctx: self.ctx,
            graph: g.clone(),
            device_bytes: self
                .bufs
                .iter()
                .enumerate()
                .filter(|(k, s)| s.root == *k)
                .map(|(_, s)| s.buffer.size())
                .sum(),
            bufs: self.bufs.into_iter().map(|s| s.buffer).collect(),
            inputs,
            outputs,
            launches,
            computed,
            timer,
            last_kernel: None,
        });
        Ok((exe, split_nodes))
    }
}
