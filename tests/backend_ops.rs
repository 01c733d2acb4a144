//! The cross-backend op harness (`vidrt::harness`): every op case runs on every backend
//! below and is checked against its reference (an unfused composition run on the CPU
//! backend, or a naive host loop), with NaN/inf and canary checks. Prints the op × backend ×
//! dtype support table and a summary; fails listing every failing case.

use vidrt::harness::{all_cases, run_case, summary, support_table, uncovered_ops};
use vidrt::runtime::{Backend, CpuBackend};

/// The backends under test. GPU backends plug in here, each behind its cargo feature, e.g.
/// `#[cfg(feature = "cuda")] if let Ok(b) = vidrt::runtime::cuda::CudaBackend::new() { .. }`
/// (a backend whose device is absent is skipped with a message, never silently).
fn backends() -> Vec<Box<dyn Backend>> {
    let list: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    // (cuda) (wgpu): push here.
    list
}

#[test]
fn every_op_has_a_case() {
    let cases = all_cases();
    let missing = uncovered_ops(&cases);
    assert!(missing.is_empty(), "ops without a harness case: {missing:?}");
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let dups: Vec<&&str> = names.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    assert!(dups.is_empty(), "duplicate case names: {dups:?}");
}

#[test]
fn backend_ops() {
    // Compositions run exactly as written (no passes): they are the unfused references.
    let reference = CpuBackend::unoptimized();
    let backends = backends();
    let refs: Vec<&dyn Backend> = backends.iter().map(|b| b.as_ref()).collect();
    eprintln!("{}", support_table(&refs));
    let cases = all_cases();
    let mut results = Vec::new();
    for b in &refs {
        for case in &cases {
            let r = run_case(case, *b, &reference);
            if std::env::var_os("VIDRT_HARNESS_VERBOSE").is_some() || r.failed() {
                eprintln!("{r}");
            }
            results.push(r);
        }
    }
    eprintln!("backend_ops: {}", summary(&results));
    let failed: Vec<String> = results.iter().filter(|r| r.failed()).map(|r| r.to_string()).collect();
    assert!(failed.is_empty(), "{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
}

/// Faults a broken backend could have; the harness must catch each one on every case.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// One output element off by half the output's scale (integers: by one).
    Perturb,
    /// A NaN in the output (float cases only).
    Nan,
    /// A write past the end of the output: the last element of the canary slab changes.
    OutOfBounds,
    /// The output comes back flattened.
    Flat,
}

/// The CPU backend with a fault injected into every run's outputs.
struct Faulty(Fault);

struct FaultyExe(Box<dyn vidrt::runtime::Executable>, Fault);

use vidrt::ir::{DType, Graph, Op, Tensor, TensorData};
use vidrt::runtime::{Executable, RunOptions, RuntimeError, Support, WeightSource};

/// `t` with `f` applied to its values (as f64), rebuilt in its dtype.
fn remap(t: &Tensor, f: impl Fn(&mut Vec<f64>)) -> Tensor {
    let mut v = t.to_f64_vec();
    f(&mut v);
    let data = if t.dtype().is_int() {
        TensorData::I64(v.iter().map(|&x| x as i64).collect())
    } else {
        TensorData::F32(v.iter().map(|&x| x as f32).collect())
    };
    Tensor::new(t.shape().clone(), data).expect("same element count").cast(t.dtype())
}

impl Executable for FaultyExe {
    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let mut outs = self.0.run_with(inputs, opts)?;
        for (name, t) in outs.iter_mut() {
            *t = match (self.1, name.as_str()) {
                (Fault::Perturb, "y") => remap(t, |v| {
                    let scale = v.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                    v[0] += if t.dtype().is_int() { 1.0 } else { 0.5 * scale };
                }),
                (Fault::Nan, "y") => remap(t, |v| {
                    let mid = v.len() / 2;
                    v[mid] = f64::NAN;
                }),
                (Fault::OutOfBounds, "canary") => remap(t, |v| {
                    let last = v.len() - 1;
                    v[last] = -v[last];
                }),
                (Fault::Flat, "y") => t.clone().reshape([t.numel()]).expect("same element count"),
                _ => continue,
            };
        }
        Ok(outs)
    }
}

impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        CpuBackend::new().support(op, dtype)
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        Ok(Box::new(FaultyExe(CpuBackend::new().compile(graph, weights)?, self.0)))
    }
}

/// The harness is able to fail: every injected fault fails every case it applies to.
#[test]
fn harness_catches_injected_faults() {
    let reference = CpuBackend::new();
    let cases = all_cases();
    for fault in [Fault::Perturb, Fault::Nan, Fault::OutOfBounds, Fault::Flat] {
        let faulty = Faulty(fault);
        let mut missed = Vec::new();
        for case in &cases {
            if matches!(fault, Fault::Nan) && !case.dtype.is_float() {
                continue;
            }
            let built = case.build().expect("case builds");
            let y = built.fused.output("y").expect("output y");
            let shape = built.fused.shape(y);
            // Nothing to corrupt in an empty output; a rank-1 output is already flat.
            if shape.numel() == 0 || (matches!(fault, Fault::Flat) && shape.rank() == 1) {
                continue;
            }
            let r = run_case(case, &faulty, &reference);
            if !r.failed() {
                missed.push(r.to_string());
            }
        }
        assert!(missed.is_empty(), "{fault:?} was not caught by:\n{}", missed.join("\n"));
    }
}
