//! The Wan graphs (DiT, VAE, umT5, the whole pipeline) on the golden cases through the
//! default compile path: every check passes with the passes on, the passes really fused
//! the graphs (fused nodes counted per case), and the optimized outputs match the
//! unoptimized CPU reference run. Fails when the golden data is missing.

use std::sync::Mutex;

use vidrt::eval::run_case;
use vidrt::golden::{default_dir, Case};
use vidrt::ir::{passes, Graph};
use vidrt::runtime::{Backend, CpuBackend, Executable, RuntimeError, Support, WeightSource};

/// The default CPU backend, recording what the pass pipeline did to every compiled graph.
struct Recording {
    inner: CpuBackend,
    /// (nodes before, nodes after, fused nodes after) per compiled graph.
    log: Mutex<Vec<(usize, usize, usize)>>,
}

impl Backend for Recording {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn support(&self, op: &vidrt::ir::Op, dtype: vidrt::ir::DType) -> Support {
        self.inner.support(op, dtype)
    }
    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        let (opt, _) = passes::pipeline(graph).map_err(|e| RuntimeError::Device(e.to_string()))?;
        let fused = opt.nodes.iter().filter(|n| n.op.is_fused()).count();
        if let Ok(mut log) = self.log.lock() {
            log.push((graph.len(), opt.len(), fused));
        }
        self.inner.compile(graph, weights)
    }
}

fn check(name: &str, min_fused: usize) {
    let Some(dir) = default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let case = Case::load(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let rec = Recording { inner: CpuBackend::new(), log: Mutex::new(Vec::new()) };
    let (report, optimized) = run_case(&case, &rec).unwrap_or_else(|e| panic!("{name}: {e}"));
    let failures: Vec<String> =
        report.failures().iter().map(|r| format!("{}:{} {:?}", r.check.file, r.check.tensor, r.outcome)).collect();
    assert!(!report.results.is_empty(), "{name}: no checks ran");
    assert!(failures.is_empty(), "{name} through the passes:\n{}", failures.join("\n"));
    let log = rec.log.lock().map(|l| l.clone()).unwrap_or_default();
    let (before, after, fused) = log.iter().fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
    eprintln!("{name}: {} graphs compiled, {before} nodes → {after} after the passes, {fused} fused", log.len());
    assert!(fused >= min_fused, "{name}: only {fused} fused nodes (expected ≥ {min_fused})");
    assert!(after < before, "{name}: the passes removed nothing ({before} → {after})");

    let (_, reference) = run_case(&case, &CpuBackend::unoptimized()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(reference.keys().collect::<Vec<_>>(), optimized.keys().collect::<Vec<_>>());
    for (key, want) in &reference {
        let got = &optimized[key];
        let (a, b) = (want.to_f64_vec(), got.to_f64_vec());
        let scale = a.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale;
        // Fused kernels run the same f32 operations in the same order; the only differences
        // come from constant folding (f64) and summation order, far below the goldens'.
        assert!(worst <= 1e-5, "{name} {key:?}: optimized differs from unoptimized by {worst:.3e} (scaled)");
    }
}

#[test]
fn dit_through_passes() {
    check("dit", 4);
}

#[test]
fn vae_through_passes() {
    check("vae", 4);
}

#[test]
fn text_encoder_through_passes() {
    check("text_encoder", 2);
}

#[test]
fn pipeline_through_passes() {
    check("pipeline", 4);
}
