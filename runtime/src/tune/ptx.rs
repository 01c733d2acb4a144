//! Tuning of the PTX families, shared by the CUDA backend and the PTX simulator: the
//! [`Tuning`] of a backend is the lowering's [`Chooser`] (forced point, database winner,
//! heuristic), and [`problems`] lists a graph's tunable problems through the same lowering.
//!
//! Keys: the family with its input dtype (`matmul_mma_bf16`, `conv3d_simt_f32`,
//! `attention_mma_bf16`, ...), the dtypes, the problem's dimensions bucketed, their alignment,
//! the layout facts the lowering reports (transposes, bias, epilogue, kernel size, stride,
//! padding, head dims, bias pattern, mask dtype), the device ([`DeviceInfo`]: backend `cuda`
//! with the device's name, compute capability and driver version; `ptx-sim` for the
//! simulator), and a hash over every candidate's PTX text generated at the bucketed shape.
//!
//! Candidates: the points of the family's space that generate for the problem's exact shape
//! (a generator error, or shared memory past what one block may use on the device, drops a
//! point: [`Tuning::max_shared`], else the target's opt-in maximum). On CUDA a point
//! whose loaded function cannot launch its block (registers, threads) fails to compile and is
//! kept with no time.

use std::cell::RefCell;
use std::collections::HashSet;

use vidrt_ir::{DType, Graph, Op};
use vidrt_kernels::ptx::lower::{lower_with, Lowered};
use vidrt_kernels::ptx::tune::{Chooser, Pick, TuneProblem};
use vidrt_kernels::ptx::{emit, Kernel, Target};

use super::{alignment, bucket, DeviceInfo, Problem, TuneDb, TuneKey, Tuning};

/// What the simulator's tuning keys record of it.
pub fn sim_device_info() -> DeviceInfo {
    DeviceInfo {
        backend: "ptx-sim".into(),
        name: "vidrt PTX simulator (CPU)".into(),
        arch: "sm_80 (simulated)".into(),
        driver: format!("vidrt-runtime {}", env!("CARGO_PKG_VERSION")),
    }
}

impl Tuning {
    /// The key of a PTX lowering's problem.
    pub fn ptx_key(&self, p: &TuneProblem<'_>) -> TuneKey {
        let shape: Vec<usize> = p.dims.iter().map(|&d| bucket(d)).collect();
        let variant = format!("{}|{}|{shape:?}|{}", p.family, p.dtypes, p.layout);
        // Hashed as emitted for this device (the backend's target), so an edit that changes
        // only the Hopper text re-tunes there too.
        let target = self.ptx_target.unwrap_or(Target::Sm80);
        let kernel_hash = self.hash(&variant, || {
            p.space.iter().filter_map(|t| (p.representative)(t).ok()).map(|k| emit(&k, target)).collect()
        });
        TuneKey {
            family: p.family.clone(),
            dtypes: p.dtypes.clone(),
            shape,
            align: alignment(&p.align),
            layout: p.layout.clone(),
            device: self.device.clone(),
            kernel_hash,
        }
    }
}

impl Chooser for Tuning {
    fn pick(&self, p: &TuneProblem<'_>) -> Pick {
        if let Some(t) = self.forced(&p.family) {
            return Pick::Forced(t);
        }
        // No database: no key (and no candidate hash) to compute.
        if self.db.as_ref().is_none_or(TuneDb::is_empty) {
            return Pick::Heuristic;
        }
        self.choose(&self.ptx_key(p))
    }

    fn record(&self, used: bool) {
        Tuning::record(self, used);
    }

    fn target(&self) -> Target {
        self.ptx_target.unwrap_or(Target::Sm80)
    }

    fn wgmma(&self) -> bool {
        self.wgmma
    }

    fn max_shared(&self) -> u32 {
        self.max_shared.unwrap_or_else(|| Chooser::target(self).max_shared())
    }
}

/// Records the problem of the node being lowered, with each valid candidate's kernel (and
/// lets the heuristic lower it).
struct Recorder<'a> {
    tuning: &'a Tuning,
    found: RefCell<Option<(TuneKey, Vec<Generated>)>>,
}

/// A candidate's text and its kernel at the node's shape.
type Generated = (String, Kernel);

impl Chooser for Recorder<'_> {
    fn pick(&self, p: &TuneProblem<'_>) -> Pick {
        let key = self.tuning.ptx_key(p);
        let candidates = p.space.iter().filter_map(|t| (p.generate)(t).ok().map(|k| (t.clone(), k))).collect();
        *self.found.borrow_mut() = Some((key, candidates));
        Pick::Heuristic
    }

    fn target(&self) -> Target {
        Chooser::target(self.tuning)
    }

    fn wgmma(&self) -> bool {
        Chooser::wgmma(self.tuning)
    }

    fn max_shared(&self) -> u32 {
        Chooser::max_shared(self.tuning)
    }
}

/// The distinct tunable problems (matmul, conv3d and attention nodes, fused or not) of
/// `graph` under the PTX lowering, keyed by `tuning`'s device, in graph order. A node that
/// does not lower, or has no valid candidate, poses none.
pub fn problems(graph: &Graph, tuning: &Tuning) -> Vec<Problem> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let tunable = matches!(
            node.op,
            Op::MatMul { .. }
                | Op::MatMulEpilogue { .. }
                | Op::Conv3d { .. }
                | Op::Conv3dEpilogue { .. }
                | Op::Attention { .. }
        );
        if !tunable {
            continue;
        }
        let ins: Vec<(&[usize], DType)> =
            node.inputs.iter().map(|id| (graph.shape(*id).dims(), graph.dtype(*id))).collect();
        let r = Recorder { tuning, found: RefCell::new(None) };
        // A node that fails to lower fails at compile; what it lowered to names the heuristic's
        // candidate (the kernel that candidate generates at this shape).
        let lowered = lower_with(&node.op, &ins, node.shape.dims(), node.dtype, &format!("n{i}"), &r);
        if let Some((key, candidates)) = r.found.into_inner() {
            if !candidates.is_empty() && seen.insert(key.id()) {
                let heuristic = match &lowered {
                    Ok(Lowered::Launches(ls)) => {
                        candidates.iter().find(|(_, k)| ls.iter().any(|l| l.kernel == *k)).map(|(t, _)| t.clone())
                    }
                    _ => None,
                };
                let candidates = candidates.into_iter().map(|(t, _)| t).collect();
                out.push(Problem { key, candidates, node: i, heuristic });
            }
        }
    }
    out
}
