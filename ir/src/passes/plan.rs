//! Memory planning: every tensor a run produces (graph inputs included, weights excluded)
//! gets an offset in one arena, from liveness.
//!
//! - A buffer lives from the node that writes it to the last node that reads it (outputs to
//!   the end of the run).
//! - A reshape shares its input's buffer (a view).
//! - In place: an elementwise node (unary, binary, cast, modulate, fused) or an epilogue's
//!   extra input writes over an input of the same shape and element size that no later node
//!   reads (the element at index i is read before index i is written).
//! - Offsets: buffers by decreasing size, each at the lowest offset that overlaps no placed
//!   buffer alive at the same time (greedy by size). Offsets are 256-byte aligned.
//!
//! The arena size is known before anything is allocated; `passes::pipeline_with` fails up
//! front when it exceeds a limit.

use crate::{DType, Graph, Node, Op};

/// Offsets are aligned to this many bytes.
pub const ALIGN: u64 = 256;

/// One arena buffer: its offset and size in bytes and the nodes (by position) during which it
/// is live, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub offset: u64,
    pub size: u64,
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    fn live_with(&self, o: &Buffer) -> bool {
        self.first <= o.last && o.first <= self.last
    }
    fn overlaps(&self, o: &Buffer) -> bool {
        self.offset < o.offset + o.size && o.offset < self.offset + self.size
    }
}

/// A memory plan for a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    /// Per node: the buffer holding its value (`None` for weights and views of weights).
    pub buffer_of: Vec<Option<usize>>,
    pub buffers: Vec<Buffer>,
    /// Bytes of the arena (the planned peak activation memory).
    pub arena_bytes: u64,
    /// The largest sum of simultaneously live buffers (a lower bound for any plan).
    pub live_peak_bytes: u64,
    /// The node at which the live set is largest.
    pub peak_at: usize,
    /// Sum of every intermediate's size, as if nothing were freed or shared.
    pub naive_bytes: u64,
    /// Bytes of the weights the graph reads.
    pub weight_bytes: u64,
    /// Nodes written in place over a dying input.
    pub in_place: usize,
    /// Reshapes sharing their input's buffer.
    pub views: usize,
}

impl MemoryPlan {
    /// Checks that no two buffers alive at the same time overlap in the arena, and that every
    /// buffer fits it.
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.buffers.iter().enumerate() {
            if a.offset + a.size > self.arena_bytes || a.offset % ALIGN != 0 {
                return Err(format!("buffer {i} {a:?} is misplaced in an arena of {}", self.arena_bytes));
            }
            for (j, b) in self.buffers.iter().enumerate().skip(i + 1) {
                if a.size > 0 && b.size > 0 && a.live_with(b) && a.overlaps(b) {
                    return Err(format!("buffers {i} {a:?} and {j} {b:?} are live together and overlap"));
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a node's value when floats are stored as `storage`.
pub fn node_bytes(n: &Node, storage: Option<DType>) -> u64 {
    let d = match storage {
        Some(s) if n.dtype.is_float() => s,
        _ => n.dtype,
    };
    (n.shape.numel() as u64).saturating_mul(d.size_bytes() as u64)
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN).saturating_mul(ALIGN)
}

/// Input positions of `n` that may be overwritten by its output (same-index reads).
fn in_place_candidates(n: &Node) -> std::ops::Range<usize> {
    match &n.op {
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Modulate | Op::Fused { .. } => 0..n.inputs.len(),
        Op::MatMulEpilogue { bias, .. } | Op::Conv3dEpilogue { bias, .. } => 2 + usize::from(*bias)..n.inputs.len(),
        Op::RmsNormEpilogue { weight, .. } => 1 + usize::from(*weight)..n.inputs.len(),
        _ => 0..0,
    }
}

/// Plans `g`'s activation memory; floats sized as `storage` when given.
pub fn plan_memory(g: &Graph, storage: Option<DType>) -> MemoryPlan {
    let n = g.len();
    let last_use = g.last_uses();
    let end = |i: usize| last_use[i].unwrap_or(i);
    let mut buffer_of: Vec<Option<usize>> = vec![None; n];
    let mut bufs: Vec<Buffer> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let (mut in_place, mut views, mut naive, mut weight_bytes) = (0, 0, 0u64, 0u64);
    for (i, node) in g.nodes.iter().enumerate() {
        let size = node_bytes(node, storage);
        if let Op::Weight { .. } = node.op {
            weight_bytes += size;
            continue;
        }
        if let Op::Reshape { .. } = node.op {
            let src = buffer_of[node.inputs[0].index()];
            if let Some(b) = src {
                members[b].push(i);
                bufs[b].last = bufs[b].last.max(end(i));
                views += 1;
            }
            buffer_of[i] = src;
            continue;
        }
        naive += size;
        let reuse = in_place_candidates(node).find_map(|k| {
            let p = node.inputs[k];
            let pn = g.node(p);
            let b = buffer_of[p.index()]?;
            let ok = pn.shape == node.shape
                && node_bytes(pn, storage) == size
                && !node.inputs.iter().enumerate().any(|(j, &q)| j != k && buffer_of[q.index()] == Some(b))
                && members[b].iter().all(|&m| end(m) <= i);
            ok.then_some(b)
        });
        match reuse {
            Some(b) => {
                members[b].push(i);
                bufs[b].last = bufs[b].last.max(end(i));
                in_place += 1;
                buffer_of[i] = Some(b);
            }
            None => {
                bufs.push(Buffer { offset: 0, size: align(size), first: i, last: end(i) });
                members.push(vec![i]);
                buffer_of[i] = Some(bufs.len() - 1);
            }
        }
    }
    // Greedy by size: place big buffers first at the lowest free offset.
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by(|&a, &b| bufs[b].size.cmp(&bufs[a].size).then(bufs[a].first.cmp(&bufs[b].first)));
    let mut placed: Vec<usize> = Vec::with_capacity(bufs.len());
    let mut arena = 0u64;
    for &b in &order {
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&p| bufs[p].live_with(&bufs[b]) && bufs[p].size > 0)
            .map(|&p| (bufs[p].offset, bufs[p].offset + bufs[p].size))
            .collect();
        busy.sort_unstable();
        let mut off = 0u64;
        for (s, e) in busy {
            if off + bufs[b].size <= s {
                break;
            }
            off = off.max(e);
        }
        bufs[b].offset = off;
        arena = arena.max(off + bufs[b].size);
        placed.push(b);
    }
    // Live-set sweep (lower bound and where the peak is).
    let mut delta = vec![0i128; n + 2];
    for b in &bufs {
        delta[b.first] += i128::from(b.size);
        delta[b.last + 1] -= i128::from(b.size);
    }
    let (mut cur, mut peak, mut peak_at) = (0i128, 0i128, 0usize);
    for (t, d) in delta.iter().enumerate().take(n + 1) {
        cur += d;
        if cur > peak {
            peak = cur;
            peak_at = t.min(n.saturating_sub(1));
        }
    }
    MemoryPlan {
        buffer_of,
        buffers: bufs,
        arena_bytes: arena,
        live_peak_bytes: u64::try_from(peak).unwrap_or(u64::MAX),
        peak_at,
        naive_bytes: naive,
        weight_bytes,
        in_place,
        views,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reuses_memory() {
        let mut g = Graph::new();
        let x = g.input("x", [1024], DType::F32).unwrap();
        let mut y = x;
        for _ in 0..10 {
            let z = g.silu(y).unwrap();
            y = g.reshape(z, [32, 32]).unwrap();
            y = g.reshape(y, [1024]).unwrap();
        }
        g.set_output("y", y).unwrap();
        let p = plan_memory(&g, None);
        p.check().unwrap();
        assert_eq!(p.naive_bytes, 11 * 4096);
        assert_eq!(p.arena_bytes, 4096, "{p:?}");
        assert_eq!(p.in_place, 10);
        assert_eq!(p.views, 20);
    }

    #[test]
    fn live_buffers_do_not_share() {
        let mut g = Graph::new();
        let x = g.input("x", [256], DType::F32).unwrap();
        let a = g.silu(x).unwrap();
        let b = g.gelu_tanh(x).unwrap();
        let c = g.add_(a, b).unwrap();
        g.set_output("c", c).unwrap();
        g.set_output("x", x).unwrap();
        let p = plan_memory(&g, Some(DType::BF16));
        p.check().unwrap();
        assert_eq!(p.arena_bytes, 3 * 512);
    }
}
