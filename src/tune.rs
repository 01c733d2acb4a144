//! `vidrt tune`: for every distinct tunable problem (kernel family × shape) in the graphs a
//! generation compiles — the text encoder, one DiT forward (batched for classifier-free
//! guidance), the VAE decoder's first and steady chunks — time every candidate parameter
//! point on the device and keep the winner in the device's tuning database.
//!
//! - Candidates are timed on a one-node graph with the problem's exact input shapes
//!   (`runtime::tune::time_candidate`: warm-up, repeats, median, fresh inputs every run). A
//!   candidate that fails to compile or run is kept with no time (infinitely slow).
//! - Resumable: the database is saved after every problem, and a problem whose key is
//!   already there (same device, driver and kernel text hash) is skipped, so a second run
//!   tunes nothing and an edited kernel is tuned again.
//! - Backends: any [`Tunable`] one: wgpu (feature `wgpu`), CUDA (feature `cuda`; timed with
//!   CUDA events around the kernels), and the PTX simulator `ptx-sim` (always built; its times
//!   are the simulator's CPU wall time, which tests the plumbing and says nothing of GPU speed).

use vidrt_graph::umt5::{build_umt5, Umt5Options};
use vidrt_graph::wan_dit::{build_dit, DitOptions, DitShape};
use vidrt_graph::wan_vae::{build_decoder_chunk, ChunkKind, ChunkOptions};
use vidrt_ir::{Graph, NodeId, Op, Tensor};
use vidrt_runtime::tune::{time_candidate, Candidate, Entry, TimingSettings, Tunable, TuneDb};
use vidrt_runtime::NoWeights;

use crate::error::{Error, Result};

/// The graphs a generation at this size compiles, named.
pub fn pipeline_graphs(
    model: &str,
    height: usize,
    width: usize,
    frames: usize,
    cfg_batch: bool,
) -> Result<Vec<(String, Graph)>> {
    let cfg = crate::inspect::preset_at(model, height, width)?;
    let sf = cfg.vae.spatial_factor();
    let lat_f = cfg.vae.encoded_frames(frames).map_err(|e| Error::Invalid(e.to_string()))?;
    let (lat_h, lat_w) = (height / sf, width / sf);
    let text_len = cfg.max_sequence_length;
    let batch = if cfg_batch { 2 } else { 1 };
    let other = |e: &dyn std::fmt::Display| Error::Other(e.to_string());
    let te = build_umt5(&cfg.text, batch, text_len, &Umt5Options::default()).map_err(|e| other(&e))?;
    let shape = DitShape { batch, frames: lat_f, height: lat_h, width: lat_w, text_len };
    let dit = build_dit(&cfg.dit, &shape, &DitOptions::default()).map_err(|e| other(&e))?;
    let opts = ChunkOptions::new(1, lat_h, lat_w);
    let mut out = vec![("text encoder".to_string(), te), ("DiT".to_string(), dit)];
    let first = build_decoder_chunk(&cfg.vae, ChunkKind::First, &opts).map_err(|e| other(&e))?;
    out.push(("VAE decode (first chunk)".into(), first.graph));
    if lat_f > 1 {
        let steady = build_decoder_chunk(&cfg.vae, ChunkKind::Steady, &opts).map_err(|e| other(&e))?;
        out.push(("VAE decode (steady chunk)".into(), steady.graph));
    }
    Ok(out)
}

/// `g` as a backend compiles it in a run at `precision` (`generate --precision`): through
/// [`vidrt_ir::passes::reduce_precision`] when not f32, then the pass pipeline (fusion), which
/// every backend runs before lowering. The tuner poses the problems of this graph, so its keys
/// are the ones compile looks up.
pub fn as_compiled(g: &Graph, precision: vidrt_ir::DType) -> Result<Graph> {
    let reduced;
    let g = if precision == vidrt_ir::DType::F32 {
        g
    } else {
        reduced = vidrt_ir::passes::reduce_precision(g, precision).map_err(|e| Error::Other(e.to_string()))?;
        &reduced
    };
    let (opt, _) = vidrt_runtime::cpu::optimize(g, &vidrt_ir::passes::PassOptions::default())
        .map_err(|e| Error::Other(e.to_string()))?;
    Ok(opt)
}

/// The component (`text`, `dit`, `vae`) a graph of [`pipeline_graphs`] belongs to.
pub fn component_of(name: &str) -> &'static str {
    if name.starts_with("text") {
        "text"
    } else if name.starts_with("DiT") {
        "dit"
    } else {
        "vae"
    }
}

/// Node `node` of `g` alone: one graph input per input of the node (weights included,
/// named `in0`, `in1`, ...), the node, and its output `out`.
pub fn isolate(g: &Graph, node: usize) -> Result<Graph> {
    let n = g.nodes.get(node).ok_or_else(|| Error::Invalid(format!("no node %{node}")))?;
    let mut h = Graph::new();
    let mut ids: Vec<NodeId> = Vec::with_capacity(n.inputs.len());
    for (k, id) in n.inputs.iter().enumerate() {
        ids.push(h.input(&format!("in{k}"), g.shape(*id).clone(), g.dtype(*id))?);
    }
    let y = h.add(n.op.clone(), &ids)?;
    h.set_output("out", y)?;
    Ok(h)
}

/// Seeded inputs for an isolated graph: floats in [-1, 1) (never zeros), integer inputs 1
/// (a key mask that keeps every key).
pub fn seeded_inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    g.inputs()
        .into_iter()
        .map(|(name, id)| {
            let node = g.node(id);
            let n = node.shape.numel();
            let t = if node.dtype.is_float() {
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 1e-3
                    })
                    .collect();
                Tensor::from_f32(node.shape.clone(), v).map(|t| t.cast(node.dtype))
            } else {
                Ok(Tensor::full(node.shape.clone(), node.dtype, 1.0))
            };
            (name.to_string(), t.unwrap_or_else(|_| Tensor::full(node.shape.clone(), node.dtype, 1.0)))
        })
        .collect()
}

/// Whether `op` is one the tuner times (the others have no parameter space yet).
pub fn is_tunable(op: &Op) -> bool {
    matches!(
        op,
        Op::MatMul { .. }
            | Op::MatMulEpilogue { .. }
            | Op::Conv3d { .. }
            | Op::Conv3dEpilogue { .. }
            | Op::Attention { .. }
    )
}

/// What a tuning run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TuneSummary {
    /// Problems timed in this run.
    pub tuned: usize,
    /// Problems found in the database already (skipped).
    pub cached: usize,
    /// Problems where every candidate failed (nothing stored).
    pub failed: usize,
    /// One line per problem: key, winner and its time (and the heuristic's point and time,
    /// where the backend names it), or why it failed.
    pub lines: Vec<String>,
}

/// Progress of a tuning run (the CLI draws a bar with ETA).
pub trait TuneProgress {
    fn begin(&mut self, total: usize);
    fn problem(&mut self, done: usize, what: &str);
    fn end(&mut self);
}

/// No progress display.
pub struct Quiet;

impl TuneProgress for Quiet {
    fn begin(&mut self, _: usize) {}
    fn problem(&mut self, _: usize, _: &str) {}
    fn end(&mut self) {}
}

/// Tunes every problem of `graphs` on `backend` into `db` (saved after every problem).
/// Problems already in `db` are skipped. Any [`Tunable`] backend: wgpu, CUDA, the PTX
/// simulator.
pub fn tune_backend(
    backend: &dyn Tunable,
    db: &mut TuneDb,
    graphs: &[(String, Graph)],
    settings: TimingSettings,
    progress: &mut dyn TuneProgress,
) -> Result<TuneSummary> {
    let mut todo = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, g) in graphs {
        for p in backend.problems(g) {
            if seen.insert(p.key.id()) {
                todo.push((name.as_str(), g, p));
            }
        }
    }
    let mut sum = TuneSummary::default();
    progress.begin(todo.len());
    for (done, (name, g, p)) in todo.iter().enumerate() {
        let what = format!("{} {:?} {} ({name})", p.key.family, p.key.shape, p.key.layout);
        progress.problem(done, &what);
        if db.get(&p.key).is_some() {
            sum.cached += 1;
            continue;
        }
        let one = isolate(g, p.node)?;
        let mut candidates = Vec::with_capacity(p.candidates.len());
        for c in &p.candidates {
            let b = backend.forcing(&p.key.family, c);
            let r = b
                .compile(&one, &NoWeights)
                .and_then(|mut exe| time_candidate(exe.as_mut(), &mut |seed| seeded_inputs(&one, seed), settings));
            candidates.push(match r {
                Ok(t) => Candidate { params: c.clone(), time_us: Some(t), error: None },
                Err(e) => Candidate { params: c.clone(), time_us: None, error: Some(e.to_string()) },
            });
        }
        match Entry::from_candidates(p.key.clone(), candidates, settings) {
            Some(e) => {
                let time = |p: &str| e.candidates.iter().find(|c| c.params == p).and_then(|c| c.time_us);
                let t = time(&e.winner).unwrap_or(0.0);
                // What tuning buys over an untuned run, where the backend names its heuristic.
                let against = match p.heuristic.as_deref() {
                    Some(h) if h == e.winner => "; the heuristic's point".to_string(),
                    Some(h) => match time(h) {
                        Some(th) if t > 0.0 => format!("; heuristic {h} ({th:.1} µs, {:.2}x the winner's)", th / t),
                        _ => format!("; heuristic {h} failed"),
                    },
                    None => String::new(),
                };
                sum.lines.push(format!("{what}: {} ({t:.1} µs){against}", e.winner));
                db.insert(e);
                db.save().map_err(|source| Error::Io { path: db.path.clone().unwrap_or_default(), source })?;
                sum.tuned += 1;
            }
            None => {
                sum.lines.push(format!("{what}: every candidate failed"));
                sum.failed += 1;
            }
        }
    }
    progress.problem(todo.len(), "done");
    progress.end();
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolates_a_node_with_its_input_shapes() {
        let gs = pipeline_graphs("tiny", 32, 32, 5, true).unwrap();
        assert_eq!(gs.len(), 4);
        let (_, dit) = &gs[1];
        let i = dit.nodes.iter().position(|n| is_tunable(&n.op)).unwrap();
        let one = isolate(dit, i).unwrap();
        vidrt_ir::verify(&one).unwrap();
        let y = one.output("out").unwrap();
        assert_eq!(one.shape(y), &dit.nodes[i].shape);
        let ins = seeded_inputs(&one, 3);
        assert_eq!(ins.len(), dit.nodes[i].inputs.len());
        assert!(ins.iter().all(|(_, t)| t.to_f32_vec().iter().all(|x| *x != 0.0)));
        assert!(pipeline_graphs("tiny", 33, 32, 5, true).is_err());
        assert!(pipeline_graphs("nope", 32, 32, 5, true).is_err());
    }
}
