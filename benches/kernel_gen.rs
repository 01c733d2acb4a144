//! Criterion benches of kernel generation and compile-side validation (no GPU needed):
//!
//! - `ptx/build_catalog`: building every catalog kernel (`ptx::catalog::all_kernels`);
//! - `ptx/emit_<target>`: emitting the PTX text of all of them for one target;
//! - `wgsl/generate`: generating every WGSL kernel family at every tuning point;
//! - `wgsl/generate_validate`: the same plus naga parsing and validation of each module
//!   (`wgsl::validate`), what the wgpu backend pays before it creates a pipeline.
//!
//! `cargo bench --bench kernel_gen -- --quick` runs in well under a minute.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vidrt_ir::{BinaryOp, UnaryOp};
use vidrt_kernels::ptx::{catalog, emit, Target};
use vidrt_kernels::wgsl::attention::{attention, AttnParams};
use vidrt_kernels::wgsl::elementwise::{binary_expr, elementwise, unary_expr};
use vidrt_kernels::wgsl::gemm::{gemm, GemmKind, GemmParams};
use vidrt_kernels::wgsl::lane::{lane, LaneOp};
use vidrt_kernels::wgsl::{copy, misc, validate, Elem, WgslError, WgslKernel};

/// Every WGSL kernel family at its tuning points (the head dims the models use).
fn wgsl_kernels() -> Result<Vec<WgslKernel>, WgslError> {
    let mut v = Vec::new();
    for u in UnaryOp::ALL {
        v.push(elementwise(u.name(), &[Elem::F32], Elem::F32, &unary_expr(u, "x0"))?);
    }
    for b in BinaryOp::ALL {
        v.push(elementwise(b.name(), &[Elem::F32, Elem::F32], Elem::F32, &binary_expr(b, "x0", "x1"))?);
    }
    v.push(elementwise("modulate", &[Elem::F32; 3], Elem::F32, "x0 * (1.0 + x1) + x2")?);
    v.push(copy::strided());
    for wg in [64, 128, 256, 512] {
        for op in LaneOp::ALL {
            v.push(lane(op, wg, false)?);
            v.push(lane(op, wg, true)?);
        }
    }
    v.extend([misc::rope(), misc::gather(), misc::timestep()]);
    for p in GemmParams::SPACE {
        for bias in [false, true] {
            v.push(gemm(GemmKind::MatMul { bias }, p)?);
            v.push(gemm(GemmKind::Conv3d { bias }, p)?);
        }
    }
    for (d, dv) in [(32, 32), (64, 64), (128, 128)] {
        for mask in [None, Some(Elem::I32)] {
            for p in AttnParams::space(d, dv, false, mask) {
                v.push(attention(p)?);
            }
        }
    }
    Ok(v)
}

fn ptx(c: &mut Criterion) {
    let kernels = match catalog::all_kernels() {
        Ok(k) => k,
        Err(e) => panic!("catalog: {e}"),
    };
    let mut g = c.benchmark_group("ptx");
    g.throughput(Throughput::Elements(kernels.len() as u64));
    g.bench_function("build_catalog", |b| b.iter(|| black_box(catalog::all_kernels().map(|k| k.len()))));
    for t in Target::ALL {
        // The kernels this target has the instructions of (sm_90a-only ones are left out on sm_80).
        let kernels: Vec<&vidrt_kernels::ptx::Kernel> =
            kernels.iter().filter(|k| emit::check_target(k, t).is_ok()).collect();
        let bytes: usize = kernels.iter().map(|k| emit(k, t).len()).sum();
        eprintln!("ptx {t:?}: {} kernels, {bytes} bytes of PTX", kernels.len());
        g.bench_function(format!("emit_{t:?}"), |b| {
            b.iter(|| kernels.iter().map(|k| emit(black_box(k), t).len()).sum::<usize>())
        });
    }
    g.finish();
}

fn wgsl(c: &mut Criterion) {
    let n = match wgsl_kernels() {
        Ok(k) => k.len(),
        Err(e) => panic!("wgsl: {e}"),
    };
    let bad: Vec<String> =
        wgsl_kernels().unwrap_or_default().iter().filter_map(|k| validate(k).err().map(|e| e.to_string())).collect();
    eprintln!("wgsl: {n} kernels, {} fail validation {bad:?}", bad.len());
    let mut g = c.benchmark_group("wgsl");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("generate", |b| b.iter(|| black_box(wgsl_kernels().map(|k| k.len()))));
    g.bench_function("generate_validate", |b| {
        b.iter(|| {
            let ks = wgsl_kernels().unwrap_or_default();
            ks.iter().map(|k| validate(k).map(|i| i.workgroup_bytes).unwrap_or(u64::MAX)).fold(0u64, u64::wrapping_add)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = ptx, wgsl
}
criterion_main!(benches);
