//! The CUDA backend (feature `cuda`): the PTX kernels of `vidrt_kernels::ptx`, loaded through
//! the driver API (`cudarc`, dynamically loaded, so a build needs no CUDA).
//!
//! - [`CudaBackend::new`] probes for `libcuda` first (cudarc's loader panics without it) and
//!   returns a clear "no CUDA driver found" error.
//! - Context and stream: the device's primary context and its default stream.
//! - Device memory: a size-bucketed pool of driver allocations, reused across runs; the
//!   driver's out-of-memory becomes [`RuntimeError::OutOfMemory`].
//! - Modules: cached by the hash of the PTX text of the kernel's canonical form (its entry
//!   renamed, so identical kernels of different nodes share a module; an edited kernel never
//!   meets a stale module) and its dynamic shared memory; a graph's distinct kernels are
//!   JIT-compiled in parallel when it is compiled.
//! - Shared memory: a kernel's is static up to 48 KiB and dynamic past it
//!   (`Kernel::dynamic_shared`). [`CudaBackend::new`] reads the device's
//!   `MAX_SHARED_MEMORY_PER_BLOCK_OPTIN` (A100 163 KiB, H100/H200 227 KiB, sm_86/89 99 KiB);
//!   the lowering keeps only the tuning points that fit it, and loading a kernel that needs
//!   more is an error naming the kernel. For a kernel with more than 48 KiB of dynamic shared
//!   memory the load raises the function's `MAX_DYNAMIC_SHARED_SIZE_BYTES` to its size.
//! - Launches: 1-D geometry, passing the kernel's dynamic shared bytes (0 for static-only
//!   kernels). At compile time every loaded function is checked against its launch: a block
//!   larger than the function's `MAX_THREADS_PER_BLOCK` (registers decide it) is an error
//!   naming the kernel, never a failed launch later.
//! - Tuning (see [`crate::tune::ptx`]): [`CudaBackend::new`] reads the device's tuning
//!   database (key: device name, compute capability `sm_XY`, driver version, and the hash of
//!   every candidate's PTX text); [`CudaBackend::forcing`] and [`CudaBackend::problems`]
//!   serve `vidrt tune --backend cuda`, timed with CUDA events around the kernels.
//!
//! - Hopper's `wgmma` kernels are opt-in: with [`WGMMA_ENV`]`=1` the sm_90a lowering takes
//!   them for 16-bit matmuls (`matmul_wgmma_tma`, fed by TMA, where it takes the product,
//!   else `matmul_wgmma`; a tensor-map parameter is encoded per launch by
//!   `cuTensorMapEncodeTiled` from the kernel's [`vidrt_kernels::ptx::tma::TensorMapDesc`])
//!   for attention (`attention_wgmma`) and for convs whose output width is a multiple of 8
//!   (`conv3d_wgmma`); otherwise they use `matmul_mma` / `attention_mma` / `conv3d_mma`
//!   (`mma.sync`) as on sm_80. They pass the simulator and ptxas but have
//!   never run on a GPU, and their shared
//!   memory descriptors are the part of the ISA a simulator cannot settle; it becomes the
//!   default once the harness passes with it on an H100/H200 (`scripts/device/run.sh` runs
//!   the CUDA tests both ways).
//! - [`SYNC_ENV`]`=1` synchronizes after every launch, so a kernel that faults is named.
//!
//! Status: untested on a GPU in this change (no device on the development machine); the
//! kernels' numerics are tested through [`crate::SimBackend`].

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

mod tma;

use cudarc::driver::result as cu;
use cudarc::driver::sys::{self as cusys, CUdeviceptr, CUfunction, CUmodule};
use cudarc::driver::{CudaContext, CudaStream, DriverError};
use vidrt_ir::{DType, Graph, Op, Tensor};
use vidrt_kernels::ptx::builder::STATIC_SHARED_MAX;
use vidrt_kernels::ptx::lower::{scratch_bytes, unsupported_reason, Arg, Lowered};
use vidrt_kernels::ptx::{emit, text_hash, Kernel, Target};

use crate::backend::{Backend, Executable, RunOptions, Support, WeightSource};
use crate::cuda_sim::{
    bind_weights, check_finite, feed_inputs, lower_graph, non_finite, tensor_bytes, tensor_from_bytes,
};
use crate::tune::{default_db_path, DeviceInfo, Problem, Tunable, TuneDb, Tuning};
use crate::RuntimeError;

/// Environment variable: `1` lets sm_90a devices lower 16-bit matmuls to `matmul_wgmma`,
/// 16-bit attention to `attention_wgmma` and 16-bit convs to `conv3d_wgmma` (see the module
/// docs).
pub const WGMMA_ENV: &str = "VIDRT_CUDA_WGMMA";

/// Environment variable: `1` synchronizes after every kernel launch, so that a kernel that
/// faults or fails is named in the error (launches are asynchronous: otherwise the error
/// surfaces at the next synchronization, naming no kernel). For first runs and debugging;
/// it serializes the host with the GPU.
pub const SYNC_ENV: &str = "VIDRT_CUDA_SYNC";

/// Environment variable: `1` reports on stderr how many modules each compile loaded (JIT-
/// compiled), on how many threads, and how long it took.
pub const LOG_ENV: &str = "VIDRT_CUDA_LOG";

/// Whether [`WGMMA_ENV`] asks for the wgmma GEMM.
fn wgmma_from_env() -> bool {
    std::env::var(WGMMA_ENV).is_ok_and(|v| v == "1")
}

/// The message of the error [`CudaBackend::new`] returns on a machine without a driver.
pub const NO_DRIVER: &str = "no CUDA driver found (libcuda.so could not be loaded)";

fn driver(what: &str, e: DriverError) -> RuntimeError {
    // A DriverError comes from a loaded driver, so asking it for the error's text is safe.
    let detail = e.error_string().ok().map(|s| s.to_string_lossy().into_owned());
    map_driver(what, e.0, detail.as_deref(), None)
}

/// The typed error for the driver's result `code` from `what` (a pure function of its
/// arguments: it asks the driver nothing). Out of memory is [`RuntimeError::OutOfMemory`]
/// (`available`: the free device memory, when known); the faults after which the context is
/// unusable (CUDA's "sticky" errors: illegal address, failed launch, hardware faults, a
/// destroyed context) are [`RuntimeError::DeviceLost`]; every other code is
/// [`RuntimeError::Device`]. `detail` is the driver's text for the code, when there is one.
fn map_driver(what: &str, code: cusys::CUresult, detail: Option<&str>, available: Option<u64>) -> RuntimeError {
    use cusys::CUresult as R;
    let text = match detail {
        Some(d) => format!("CUDA driver: {what}: {code:?} ({d})"),
        None => format!("CUDA driver: {what}: {code:?}"),
    };
    match code {
        R::CUDA_ERROR_OUT_OF_MEMORY => {
            RuntimeError::OutOfMemory { what: format!("CUDA: {what}"), needed: 0, available: available.unwrap_or(0) }
        }
        R::CUDA_ERROR_ILLEGAL_ADDRESS
        | R::CUDA_ERROR_LAUNCH_FAILED
        | R::CUDA_ERROR_LAUNCH_TIMEOUT
        | R::CUDA_ERROR_HARDWARE_STACK_ERROR
        | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
        | R::CUDA_ERROR_MISALIGNED_ADDRESS
        | R::CUDA_ERROR_INVALID_ADDRESS_SPACE
        | R::CUDA_ERROR_INVALID_PC
        | R::CUDA_ERROR_ECC_UNCORRECTABLE
        | R::CUDA_ERROR_CONTEXT_IS_DESTROYED => RuntimeError::DeviceLost(format!(
            "{text}; the CUDA context cannot be used after this fault, and the driver hands the \
                 same primary context to a new backend in this process: restart the process"
        )),
        _ => RuntimeError::Device(text),
    }
}

/// A size-bucketed pool of device allocations.
#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<CUdeviceptr>>,
}

/// Shared device state.
struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    target: Target,
    /// The most shared memory one block may use (the device's opt-in maximum).
    max_shared: u32,
    pool: Mutex<Pool>,
    modules: Mutex<HashMap<u64, (CUmodule, CUfunction)>>,
    /// [`SYNC_ENV`]: synchronize after each launch.
    sync_each: bool,
    /// [`LOG_ENV`]: report module loading on stderr.
    log: bool,
}

// SAFETY: the raw module and function handles are only used with the context bound and
// behind the mutexes above; the driver API is thread-safe for these calls.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

/// A loaded kernel. Its module stays loaded as long as the [`Device`] (whose cache owns it)
/// lives, and every executable holding one also holds the device.
#[derive(Clone, Copy)]
struct Function(CUfunction);

// SAFETY: a CUfunction is a driver handle, valid in any thread with the context bound, and
// launched only that way.
unsafe impl Send for Function {}

impl Device {
    /// A buffer of at least `bytes` from the pool (size-bucketed, powers of two), for run
    /// buffers that come and go.
    fn alloc(&self, bytes: usize) -> Result<CUdeviceptr, RuntimeError> {
        let bucket = bytes.max(256).next_power_of_two();
        if let Ok(mut p) = self.pool.lock() {
            if let Some(ptr) = p.free.get_mut(&bucket).and_then(Vec::pop) {
                return Ok(ptr);
            }
        }
        self.malloc(bucket)
    }

    /// A new allocation of exactly `size` bytes (weights use it directly: no bucket rounding).
    /// On out-of-memory the pool's idle buffers go back to the driver and it tries once more;
    /// a second failure is the typed out-of-memory error (the pool stays usable).
    fn malloc(&self, size: usize) -> Result<CUdeviceptr, RuntimeError> {
        let oom = cusys::CUresult::CUDA_ERROR_OUT_OF_MEMORY;
        self.ctx.bind_to_thread().map_err(|e| driver("bind context", e))?;
        // SAFETY: a plain allocation in the bound context.
        let r = match unsafe { cu::malloc_sync(size) } {
            Err(e) if e.0 == oom => {
                self.trim();
                // SAFETY: as above.
                unsafe { cu::malloc_sync(size) }
            }
            other => other,
        };
        r.map_err(|e| {
            let free = if e.0 == oom { cu::mem_get_info().ok().map(|(free, _)| free as u64) } else { None };
            match map_driver(&format!("a device buffer of {size} bytes"), e.0, None, free) {
                RuntimeError::OutOfMemory { what, available, .. } => {
                    RuntimeError::OutOfMemory { what, needed: size as u64, available }
                }
                other => other,
            }
        })
    }

    /// Frees every idle pooled allocation.
    fn trim(&self) {
        let idle: Vec<CUdeviceptr> = match self.pool.lock() {
            Ok(mut p) => p.free.drain().flat_map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        // A buffer released during the current run may still be read by a queued kernel.
        let _ = self.stream.synchronize();
        for ptr in idle {
            // SAFETY: `ptr` came from cuMemAlloc, no run holds it (it was in the free list) and
            // no queued kernel reads it (the stream was synchronised above).
            let _ = unsafe { cu::free_sync(ptr) };
        }
    }

    fn release(&self, ptr: CUdeviceptr, bytes: usize) {
        let bucket = bytes.max(256).next_power_of_two();
        if let Ok(mut p) = self.pool.lock() {
            p.free.entry(bucket).or_default().push(ptr);
        }
    }

    /// Loads the module of `k`, whose canonical text is `text` with cache key `key` (see
    /// [`module_key`]), unless it is loaded; with its dynamic shared memory allowed (see
    /// [`dynamic_shared_attribute`]). Loads outside the cache lock, so that
    /// [`Device::functions`]' threads JIT-compile at once.
    fn load(&self, k: &Kernel, (key, text): (u64, &str)) -> Result<CUfunction, RuntimeError> {
        let dynamic = dynamic_shared_attribute(k, self.max_shared)?;
        let modules = || self.modules.lock().map_err(|_| RuntimeError::Device("module cache poisoned".into()));
        if let Some((_, f)) = modules()?.get(&key) {
            return Ok(*f);
        }
        self.ctx.bind_to_thread().map_err(|e| driver("bind context", e))?;
        let src = CString::new(text).map_err(|_| RuntimeError::Device(format!("kernel `{}`: NUL in PTX", k.name)))?;
        let module = load_ptx(&src).map_err(|(e, log)| {
            let what = if log.is_empty() {
                format!("loading the module of `{}`", k.name)
            } else {
                format!("loading the module of `{}` (the driver's JIT log: {log})", k.name)
            };
            driver(&what, e)
        })?;
        let name = CString::new(vidrt_kernels::ptx::builder::CANONICAL_ENTRY)
            .map_err(|_| RuntimeError::Device("NUL in kernel name".into()))?;
        let prepared = (|| {
            // SAFETY: `module` was just loaded.
            let f = unsafe { cu::module::get_function(module, name) }
                .map_err(|e| driver(&format!("finding `{}`", k.name), e))?;
            if let Some(bytes) = dynamic {
                use cusys::CUfunction_attribute_enum as A;
                // SAFETY: `f` is a function of the module just loaded in the bound context.
                unsafe {
                    cu::function::set_function_attribute(f, A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes)
                }
                .map_err(|e| driver(&format!("allowing {bytes} bytes of dynamic shared memory for `{}`", k.name), e))?;
            }
            if let Some(want) = k.registers_at_entry() {
                check_entry_registers(f, &k.name, want)?;
            }
            Ok(f)
        })();
        let f = match prepared {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: `module` was loaded above and nothing refers to it.
                let _ = unsafe { cu::module::unload(module) };
                return Err(e);
            }
        };
        let mut m = modules()?;
        if let Some((_, first)) = m.get(&key) {
            // Another thread loaded the same text meanwhile: keep its module.
            // SAFETY: `module` was loaded above and nothing refers to it.
            let _ = unsafe { cu::module::unload(module) };
            return Ok(*first);
        }
        m.insert(key, (module, f));
        Ok(f)
    }

    /// The functions of `kernels`, in order, loading the modules not loaded yet: each distinct
    /// canonical text once, the distinct ones in parallel (up to the host's cores, 16 at
    /// most), since the driver's JIT compile of a model's few dozen distinct kernels is the
    /// bulk of a first compile. A kernel that cannot run here is refused by name before
    /// anything is loaded; otherwise the first error is returned.
    fn functions(&self, kernels: &[&Kernel]) -> Result<Vec<CUfunction>, RuntimeError> {
        for k in kernels {
            dynamic_shared_attribute(k, self.max_shared)?;
        }
        let keyed: Vec<(u64, String)> = kernels
            .iter()
            .map(|k| {
                let text = emit(&k.canonical(), self.target);
                (module_key(k, &text), text)
            })
            .collect();
        let modules = || self.modules.lock().map_err(|_| RuntimeError::Device("module cache poisoned".into()));
        let mut seen = std::collections::HashSet::new();
        let todo: Vec<(&Kernel, u64, &str)> = {
            let loaded = modules()?;
            kernels
                .iter()
                .zip(&keyed)
                .filter(|(_, (key, _))| !loaded.contains_key(key) && seen.insert(*key))
                .map(|(k, (key, text))| (*k, *key, text.as_str()))
                .collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16).min(todo.len()).max(1);
        let t0 = std::time::Instant::now();
        let load_all = |chunk: &[(&Kernel, u64, &str)]| {
            chunk.iter().try_for_each(|&(k, key, text)| self.load(k, (key, text)).map(|_| ()))
        };
        let loaded = if threads < 2 {
            load_all(&todo)
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> =
                    todo.chunks(todo.len().div_ceil(threads)).map(|c| s.spawn(move || load_all(c))).collect();
                handles.into_iter().try_for_each(|h| {
                    h.join().unwrap_or_else(|_| Err(RuntimeError::Device("a module-loading thread panicked".into())))
                })
            })
        };
        if self.log && !todo.is_empty() {
            eprintln!(
                "vidrt cuda: loaded {} modules on {threads} threads in {:.2} s",
                todo.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        loaded?;
        let m = modules()?;
        kernels
            .iter()
            .zip(&keyed)
            .map(|(k, (key, _))| {
                m.get(key)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| RuntimeError::Device(format!("internal: the module of `{}` is not loaded", k.name)))
            })
            .collect()
    }
}

/// What loading `k` on a device whose blocks may use `max_shared` bytes of shared memory
/// needs: an error naming the kernel when it needs more, else the value to raise the
/// function's `MAX_DYNAMIC_SHARED_SIZE_BYTES` to (`Some` for more than 48 KiB of dynamic
/// shared memory, which the driver refuses at launch without it).
fn dynamic_shared_attribute(k: &Kernel, max_shared: u32) -> Result<Option<i32>, RuntimeError> {
    if k.shared_total() > max_shared {
        return Err(RuntimeError::Device(format!(
            "kernel `{}` needs {} bytes of shared memory per block ({} dynamic), but this device allows {max_shared}",
            k.name,
            k.shared_total(),
            k.dynamic_shared
        )));
    }
    if k.dynamic_shared <= STATIC_SHARED_MAX {
        return Ok(None);
    }
    i32::try_from(k.dynamic_shared)
        .map(Some)
        .map_err(|_| RuntimeError::Device(format!("kernel `{}`: {} bytes of shared memory", k.name, k.dynamic_shared)))
}

/// Checks that `f` (the loaded function of kernel `name`) can launch blocks of `block`
/// threads: its register use bounds the threads per block.
fn check_launchable(f: CUfunction, name: &str, block: u32) -> Result<(), RuntimeError> {
    use cusys::CUfunction_attribute_enum as A;
    // SAFETY: `f` is a function of a module loaded in the bound context.
    let attr = |a: A, what: &str| {
        unsafe { cu::function::get_function_attribute(f, a) }.map_err(|e| driver(&format!("{what} of `{name}`"), e))
    };
    let max = attr(A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "max threads per block")?;
    if i64::from(block) > i64::from(max) {
        let regs = attr(A::CU_FUNC_ATTRIBUTE_NUM_REGS, "registers")?;
        return Err(RuntimeError::Device(format!(
            "kernel `{name}`: launched with {block} threads per block, but the loaded function \
             allows {max} ({regs} registers per thread)"
        )));
    }
    Ok(())
}

/// Checks that `f`, the loaded function of a `setmaxnreg` kernel `name`, starts with the
/// `want` registers per thread its warpgroups' `.inc`s are paid from: with fewer an `.inc`
/// could wait forever for registers, with more the block would not fit. The driver's JIT
/// compiler, not the ptxas the tests run, makes this choice.
fn check_entry_registers(f: CUfunction, name: &str, want: u32) -> Result<(), RuntimeError> {
    use cusys::CUfunction_attribute_enum as A;
    // SAFETY: `f` is a function of a module loaded in the bound context.
    let regs = unsafe { cu::function::get_function_attribute(f, A::CU_FUNC_ATTRIBUTE_NUM_REGS) }
        .map_err(|e| driver(&format!("registers of `{name}`"), e))?;
    if i64::from(regs) != i64::from(want) {
        return Err(RuntimeError::Device(format!(
            "kernel `{name}`: the driver compiled it to {regs} registers per thread, but its setmaxnreg \
             rebalancing needs exactly {want}; this parameter point cannot run on this driver"
        )));
    }
    Ok(())
}

/// The module cache's key of `k` with canonical text `text`: the text and the dynamic shared
/// memory (set on the function when its module loads; the text declares it unsized).
fn module_key(k: &Kernel, text: &str) -> u64 {
    text_hash(&format!("{text}\n// dynamic shared bytes: {}", k.dynamic_shared))
}

/// Loads a PTX module with `cuModuleLoadDataEx`, asking for the JIT's error log: a refused
/// module comes back with the driver's reason (its line and message), which
/// `cuModuleLoadData` drops. The driver library is loaded and a context bound.
fn load_ptx(src: &CString) -> Result<CUmodule, (DriverError, String)> {
    let mut log = vec![0u8; 16 * 1024];
    let mut opts =
        [cusys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER, cusys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
    // The size option's value is the size itself, in the pointer (the driver API's convention).
    let mut vals: [*mut c_void; 2] = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
    let mut module = std::mem::MaybeUninit::<CUmodule>::uninit();
    // SAFETY: `src` is a NUL-terminated PTX image, `log` a writable buffer of the size given,
    // and the option arrays hold the two options; all outlive the call.
    let r = unsafe {
        cusys::cuModuleLoadDataEx(
            module.as_mut_ptr(),
            src.as_ptr() as *const c_void,
            opts.len() as std::ffi::c_uint,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    match r.result() {
        // SAFETY: the driver wrote the module on success.
        Ok(()) => Ok(unsafe { module.assume_init() }),
        Err(e) => {
            let n = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..n]).trim().replace('\n', "; ")))
        }
    }
}

/// The CUDA driver's version as `major.minor`.
fn driver_version() -> Result<String, RuntimeError> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: writes one int; the driver library is loaded (the backend's context exists).
    unsafe { cusys::cuDriverGetVersion(&mut v) }.result().map_err(|e| driver("cuDriverGetVersion", e))?;
    Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// The CUDA backend on device 0.
#[derive(Clone)]
pub struct CudaBackend {
    dev: Arc<Device>,
    tuning: Arc<Tuning>,
}

impl CudaBackend {
    /// Opens device 0 with the device's tuning database from the user's cache directory (see
    /// [`crate::tune`]), or fails with [`NO_DRIVER`] when there is no driver. A broken
    /// database is only a warning ([`CudaBackend::tuning_warnings`]).
    pub fn new() -> Result<Self, RuntimeError> {
        let b = Self::without_tuning()?;
        let dev = b.device_info();
        let db = default_db_path(&dev).map(|p| TuneDb::open(&p, dev.clone()));
        Ok(b.with_db(db))
    }

    /// Opens device 0 with no tuning database (the heuristics only; `--no-tune-cache`).
    pub fn without_tuning() -> Result<Self, RuntimeError> {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cusys::is_culib_present() } {
            return Err(RuntimeError::Device(NO_DRIVER.into()));
        }
        let ctx = CudaContext::new(0).map_err(|e| driver("creating a context on device 0", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| driver("compute capability", e))?;
        if major < 8 {
            return Err(RuntimeError::Device(format!("compute capability {major}.x: sm_80 or newer is needed")));
        }
        let target = if major == 9 { Target::Sm90a } else { Target::Sm80 };
        let optin = ctx
            .attribute(cusys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| driver("max shared memory per block (opt-in)", e))?;
        // Never more than the target's rule, so that a device reporting more changes nothing.
        let max_shared = u32::try_from(optin).unwrap_or(0).min(target.max_shared());
        let stream = ctx.default_stream();
        let info = DeviceInfo {
            backend: "cuda".into(),
            name: ctx.name().map_err(|e| driver("device name", e))?,
            arch: format!("sm_{major}{minor}"),
            driver: format!("CUDA {}", driver_version()?),
        };
        Ok(CudaBackend {
            dev: Arc::new(Device {
                ctx,
                stream,
                target,
                max_shared,
                pool: Mutex::new(Pool::default()),
                modules: Mutex::new(HashMap::new()),
                sync_each: std::env::var(SYNC_ENV).is_ok_and(|v| v == "1"),
                log: std::env::var(LOG_ENV).is_ok_and(|v| v == "1"),
            }),
            tuning: Arc::new(
                Tuning::new(info, None)
                    .with_ptx_target(target)
                    .with_max_shared(max_shared)
                    .with_wgmma(wgmma_from_env()),
            ),
        })
    }

    /// The same device with `db` as its tuning database.
    pub fn with_db(&self, db: Option<TuneDb>) -> Self {
        let t = Tuning::new(self.device_info(), db)
            .with_ptx_target(self.dev.target)
            .with_max_shared(self.dev.max_shared)
            .with_wgmma(self.tuning.wgmma);
        CudaBackend { dev: self.dev.clone(), tuning: Arc::new(t) }
    }

    /// The same device, with every node of kernel family `family` (e.g. `matmul_mma_bf16`)
    /// compiled at parameter point `params` (how the tuner times a candidate). An invalid
    /// point, or one whose kernel cannot load or launch here, fails to compile.
    pub fn forcing(&self, family: &str, params: &str) -> Self {
        let t = Tuning::forcing(self.device_info(), family, params)
            .with_ptx_target(self.dev.target)
            .with_max_shared(self.dev.max_shared)
            .with_wgmma(self.tuning.wgmma);
        CudaBackend { dev: self.dev.clone(), tuning: Arc::new(t) }
    }

    /// What the tuning key records of this device.
    pub fn device_info(&self) -> DeviceInfo {
        self.tuning.device.clone()
    }

    /// The tuning database in use, if any.
    pub fn tune_db(&self) -> Option<&TuneDb> {
        self.tuning.db.as_ref()
    }

    /// (nodes compiled with a tuning-database winner, winners ignored as invalid here) since
    /// this backend was made.
    pub fn tuning_hits(&self) -> (usize, usize) {
        self.tuning.hits()
    }

    /// Warnings from opening the tuning database (corrupt, foreign, unreadable).
    pub fn tuning_warnings(&self) -> Vec<String> {
        self.tuning.warnings()
    }

    /// The distinct tunable problems of `graph`, in graph order.
    pub fn problems(&self, graph: &Graph) -> Vec<Problem> {
        crate::tune::ptx::problems(graph, &self.tuning)
    }

    /// The device's name.
    pub fn device_name(&self) -> Result<String, RuntimeError> {
        self.dev.ctx.name().map_err(|e| driver("device name", e))
    }

    /// The device's free memory in bytes, as the driver reports it now.
    pub fn free_memory(&self) -> Result<u64, RuntimeError> {
        self.dev.ctx.bind_to_thread().map_err(|e| driver("bind context", e))?;
        cu::mem_get_info().map(|(free, _)| free as u64).map_err(|e| driver("cuMemGetInfo", e))
    }

    /// The PTX target the kernels are emitted for (`sm_80`, or `sm_90a` on Hopper).
    pub fn target(&self) -> &'static str {
        self.dev.target.name()
    }
}

impl Tunable for CudaBackend {
    fn device_info(&self) -> DeviceInfo {
        CudaBackend::device_info(self)
    }

    fn tune_db(&self) -> Option<&TuneDb> {
        CudaBackend::tune_db(self)
    }

    fn describe(&self) -> String {
        let d = &self.tuning.device;
        format!("{} ({}, {}; PTX for {})", d.name, d.arch, d.driver, self.target())
    }

    fn problems(&self, graph: &Graph) -> Vec<Problem> {
        CudaBackend::problems(self, graph)
    }

    fn forcing(&self, family: &str, params: &str) -> Box<dyn Backend> {
        Box::new(CudaBackend::forcing(self, family, params))
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn support(&self, op: &Op, dtype: DType) -> Support {
        match unsupported_reason(op, dtype) {
            None => Support::Yes,
            Some(r) => Support::No(r),
        }
    }

    fn compile(&self, graph: &Graph, weights: &dyn WeightSource) -> Result<Box<dyn Executable>, RuntimeError> {
        vidrt_ir::verify(graph)?;
        // The compiler's passes (fold, CSE, DCE, fusion) first: fused nodes lower to one kernel.
        let (optimized, _) = crate::cpu::optimize(graph, &vidrt_ir::passes::PassOptions::default())?;
        let graph = &optimized;
        let plans = lower_graph(graph, "cuda", &*self.tuning)?;
        // Every kernel loaded once, here, and checked against its launch: a run only launches.
        let kernels: Vec<&Kernel> = plans
            .iter()
            .flat_map(|p| match p {
                Lowered::Launches(ls) => ls.iter().map(|l| &l.kernel).collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut loaded = self.dev.functions(&kernels)?.into_iter();
        let functions = plans
            .iter()
            .map(|p| match p {
                Lowered::Launches(ls) => ls
                    .iter()
                    .map(|l| {
                        let f = loaded
                            .next()
                            .ok_or_else(|| RuntimeError::Device("internal: a launch lacks its function".into()))?;
                        check_launchable(f, &l.kernel.name, l.block)?;
                        Ok(Function(f))
                    })
                    .collect(),
                _ => Ok(Vec::new()),
            })
            .collect::<Result<Vec<Vec<Function>>, RuntimeError>>()?;
        let weights = bind_weights(graph, weights)?;
        Ok(Box::new(CudaExecutable::new(self.dev.clone(), graph.clone(), (plans, functions), weights)?))
    }
}

/// A graph compiled for the CUDA backend: its launches, its weights resident on the device
/// (uploaded once, at compile time), and when each run-owned buffer can go back to the pool.
pub struct CudaExecutable {
    dev: Arc<Device>,
    graph: Graph,
    plans: Vec<Lowered>,
    /// The loaded function of every launch of `plans`, by node.
    functions: Vec<Vec<Function>>,
    /// Device copies of the weights, by node (exact-size allocations made at compile time,
    /// freed on drop).
    resident: Vec<Option<(CUdeviceptr, usize)>>,
    /// The node whose buffer node `i` reads through (itself, or an alias chain's source).
    owner: Vec<usize>,
    /// For a buffer-owning node: the last node reading it (`usize::MAX`: a graph output, kept
    /// until it is downloaded).
    last_use: Vec<usize>,
    last_kernel: Option<std::time::Duration>,
}

impl Drop for CudaExecutable {
    fn drop(&mut self) {
        if self.dev.ctx.bind_to_thread().is_err() {
            return;
        }
        // Queued kernels may still read the weights.
        let _ = self.dev.stream.synchronize();
        for (p, _) in self.resident.iter_mut().filter_map(Option::take) {
            // SAFETY: `p` came from cuMemAlloc (`Device::malloc`) and nothing else holds it.
            let _ = unsafe { cu::free_sync(p) };
        }
    }
}

/// Device buffers of one run, by node, returned to the pool when released or on drop.
struct Buffers<'a> {
    dev: &'a Device,
    held: Vec<Option<(CUdeviceptr, usize)>>,
}

impl Buffers<'_> {
    fn release(&mut self, node: usize) {
        if let Some((p, b)) = self.held.get_mut(node).and_then(Option::take) {
            self.dev.release(p, b);
        }
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        for (p, b) in self.held.iter_mut().filter_map(Option::take) {
            self.dev.release(p, b);
        }
    }
}

/// `(owner, last_use)` of every node (see [`CudaExecutable`]).
fn lifetimes(graph: &Graph, plans: &[Lowered]) -> (Vec<usize>, Vec<usize>) {
    let n = graph.len();
    let mut owner: Vec<usize> = (0..n).collect();
    for (i, (node, plan)) in graph.nodes.iter().zip(plans).enumerate() {
        if let (Lowered::Alias, Some(src)) = (plan, node.inputs.first()) {
            owner[i] = owner.get(src.index()).copied().unwrap_or(i);
        }
    }
    // Each node's last reader (`Graph::last_uses`; `n` marks a graph output, kept to the end),
    // folded onto the buffer's owner.
    let mut last_use: Vec<usize> = (0..n).collect();
    for (i, last) in graph.last_uses().into_iter().enumerate() {
        let end = match last {
            Some(p) if p >= n => usize::MAX,
            Some(p) => p,
            None => i,
        };
        let o = owner[i];
        last_use[o] = last_use[o].max(end);
    }
    (owner, last_use)
}

impl CudaExecutable {
    fn new(
        dev: Arc<Device>,
        graph: Graph,
        (plans, functions): (Vec<Lowered>, Vec<Vec<Function>>),
        weights: Vec<Option<Tensor>>,
    ) -> Result<Self, RuntimeError> {
        let (owner, last_use) = lifetimes(&graph, &plans);
        let mut exe =
            CudaExecutable { dev, graph, plans, functions, resident: Vec::new(), owner, last_use, last_kernel: None };
        exe.dev.ctx.bind_to_thread().map_err(|e| driver("bind context", e))?;
        for w in weights {
            let Some(t) = w else {
                exe.resident.push(None);
                continue;
            };
            let host = tensor_bytes(&t);
            let p = exe.dev.malloc(host.len().max(1))?;
            // Recorded before the copy, so a failed copy still frees the buffer on drop.
            exe.resident.push(Some((p, host.len())));
            // SAFETY: `p` holds at least host.len() bytes.
            unsafe { cu::memcpy_htod_sync(p, &host) }.map_err(|e| driver("uploading a weight", e))?;
        }
        Ok(exe)
    }
}

impl Executable for CudaExecutable {
    fn last_kernel_time(&self) -> Option<std::time::Duration> {
        self.last_kernel
    }

    fn run_with(
        &mut self,
        inputs: &[(&str, Tensor)],
        opts: &RunOptions,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.last_kernel = None;
        let g = &self.graph;
        let dev = &*self.dev;
        let mut fed = feed_inputs(g, inputs)?;
        dev.ctx.bind_to_thread().map_err(|e| driver("bind context", e))?;
        let mut bufs = Buffers { dev, held: vec![None; g.len()] };
        let mut addr: Vec<CUdeviceptr> = vec![0; g.len()];
        // Leaves first (inputs uploaded, weights already resident), then the kernels alone,
        // between two events.
        for (i, (node, plan)) in g.nodes.iter().zip(&self.plans).enumerate() {
            if !matches!(plan, Lowered::Leaf) {
                continue;
            }
            addr[i] = match &node.op {
                Op::Input { name } => {
                    let t = fed[i]
                        .take()
                        .ok_or_else(|| RuntimeError::BadInput { name: name.clone(), reason: "not fed".into() })?;
                    let host = tensor_bytes(&t);
                    let p = dev.alloc(host.len())?;
                    bufs.held[i] = Some((p, host.len()));
                    // SAFETY: `p` holds at least host.len() bytes.
                    unsafe { cu::memcpy_htod_sync(p, &host) }.map_err(|e| driver("upload", e))?;
                    p
                }
                Op::Weight { name } => self.resident.get(i).copied().flatten().map(|(p, _)| p).ok_or_else(|| {
                    RuntimeError::Weight { name: name.clone(), reason: "not resident on the device".into() }
                })?,
                other => return Err(RuntimeError::Device(format!("internal: {} lowered as a leaf", other.name()))),
            };
        }
        let timing = cusys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = dev.stream.record_event(Some(timing)).map_err(|e| driver("recording the start event", e))?;
        for (i, (node, plan)) in g.nodes.iter().zip(&self.plans).enumerate() {
            if let Some(c) = &opts.cancel {
                if c.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(RuntimeError::Cancelled);
                }
            }
            match plan {
                Lowered::Leaf => continue,
                Lowered::Alias => {
                    addr[i] = node.inputs.first().map(|id| addr[id.index()]).unwrap_or(0);
                }
                Lowered::Launches(launches) => {
                    let bytes = node.shape.numel() * node.dtype.size_bytes();
                    let out = dev.alloc(bytes)?;
                    bufs.held[i] = Some((out, bytes));
                    addr[i] = out;
                    // The node's scratch, back to the pool when the node is done (or fails):
                    // the stream's later kernels that may get the memory run after these.
                    let mut scratch = Buffers { dev, held: Vec::new() };
                    for b in scratch_bytes(launches) {
                        let p = dev.alloc(b.max(1))?;
                        scratch.held.push(Some((p, b.max(1))));
                    }
                    for (l, &Function(f)) in launches.iter().zip(&self.functions[i]) {
                        let mut vals: Vec<u64> = l
                            .args
                            .iter()
                            .map(|a| match a {
                                Arg::Input(k) => node.inputs.get(*k).map_or(0, |id| addr[id.index()]),
                                Arg::Output => out,
                                Arg::Scratch { slot, .. } => {
                                    scratch.held.get(*slot).copied().flatten().map_or(0, |(p, _)| p)
                                }
                            })
                            .collect();
                        // A tensor-map parameter takes the driver's map of its buffer, by value.
                        let mut maps: Vec<Option<cusys::CUtensorMap>> = Vec::with_capacity(vals.len());
                        for (j, v) in vals.iter().enumerate() {
                            let desc = l
                                .kernel
                                .tensor_map_arg(j, *v)
                                .map_err(|e| RuntimeError::Device(format!("internal: {e}")))?;
                            let what = || format!("`{}` parameter {j}", l.kernel.name);
                            maps.push(desc.map(|d| tma::encode(&d, &what())).transpose()?);
                        }
                        let mut params: Vec<*mut c_void> = vals
                            .iter_mut()
                            .zip(maps.iter_mut())
                            .map(|(v, m)| match m {
                                Some(m) => m as *mut cusys::CUtensorMap as *mut c_void,
                                None => v as *mut u64 as *mut c_void,
                            })
                            .collect();
                        // SAFETY: every parameter of the generated kernels is a u64 device
                        // pointer or a tensor map (a 128-byte `CUtensorMap` passed by value),
                        // matched one to one by `params`, which (and `maps`) outlive the call.
                        unsafe {
                            cu::launch_kernel(
                                f,
                                (l.grid, 1, 1),
                                (l.block, 1, 1),
                                l.kernel.dynamic_shared,
                                dev.stream.cu_stream(),
                                &mut params,
                            )
                        }
                        .map_err(|e| driver(&format!("launching `{}` for node %{i}", l.kernel.name), e))?;
                        if dev.sync_each {
                            dev.stream.synchronize().map_err(|e| {
                                driver(&format!("running `{}` for node %{i} ({})", l.kernel.name, node.op.name()), e)
                            })?;
                        }
                    }
                    if opts.check_intermediates {
                        // Debug mode: wait for this node and read its output back.
                        dev.stream.synchronize().map_err(|e| driver("synchronize", e))?;
                        let mut host = vec![0u8; bytes];
                        // SAFETY: the buffer holds at least `bytes` bytes.
                        unsafe { cu::memcpy_dtoh_sync(&mut host, out) }.map_err(|e| driver("download", e))?;
                        check_finite(i, node, &host)?;
                    }
                }
            }
            // Buffers whose last reader was this node go back to the pool. The kernels of the
            // one stream run in order, so a later kernel handed the same memory writes it only
            // after this node's kernels have read it.
            for x in node.inputs.iter().map(|x| x.index()).chain([i]) {
                let o = self.owner.get(x).copied().unwrap_or(x);
                if self.last_use.get(o) == Some(&i) {
                    bufs.release(o);
                }
            }
        }
        let end = dev.stream.record_event(Some(timing)).map_err(|e| driver("recording the end event", e))?;
        dev.stream.synchronize().map_err(|e| driver("synchronize", e))?;
        let ms = start.elapsed_ms(&end).map_err(|e| driver("reading the kernel time", e))?;
        let mut outs = Vec::with_capacity(g.outputs.len());
        for (name, id) in &g.outputs {
            let node = g.node(*id);
            let mut host = vec![0u8; node.shape.numel() * node.dtype.size_bytes()];
            // SAFETY: the buffer holds at least host.len() bytes.
            unsafe { cu::memcpy_dtoh_sync(&mut host, addr[id.index()]) }.map_err(|e| driver("download", e))?;
            let t = tensor_from_bytes(node, &host)?;
            if opts.check_outputs && !node.op.is_leaf() {
                non_finite(id.index(), node, &t)?;
            }
            outs.push((name.clone(), t));
        }
        self.last_kernel = Some(std::time::Duration::from_secs_f64(f64::from(ms.max(0.0)) * 1e-3));
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cusys::CUresult as R;

    /// x → reshape (an alias of x's buffer) → neg → y (output); x is read again by the add
    /// after it: x's buffer lives until the add, the neg's until the add, the add's (an
    /// output) to the end; a node nobody reads goes right after it runs.
    #[test]
    fn buffers_are_released_after_their_last_reader_through_aliases() {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3], DType::F32).unwrap();
        let r = g.reshape(x, [3, 2]).unwrap();
        let n = g.unary(vidrt_ir::UnaryOp::Neg, r).unwrap();
        let n2 = g.reshape(n, [2, 3]).unwrap();
        let y = g.add_(n2, x).unwrap();
        let dead = g.unary(vidrt_ir::UnaryOp::Exp, x).unwrap();
        g.set_output("y", y).unwrap();
        let launch = || Lowered::Launches(Vec::new());
        let plans = vec![Lowered::Leaf, Lowered::Alias, launch(), Lowered::Alias, launch(), launch()];
        let (owner, last) = lifetimes(&g, &plans);
        assert_eq!(owner, vec![0, 0, 2, 2, 4, 5]);
        assert_eq!(last[0], 5, "x is read last by the dead exp");
        assert_eq!(last[2], 4, "neg's buffer (read through its alias) lives until the add");
        assert_eq!(last[4], usize::MAX, "the output is kept");
        assert_eq!(last[5], 5, "an unread node is released right after it runs");
        let _ = dead;
    }

    /// A kernel with `bytes` of shared memory (static up to 48 KiB, dynamic past it).
    fn kernel_with_shared(bytes: u32) -> Kernel {
        let mut b = vidrt_kernels::ptx::KernelBuilder::new("smem", "test");
        b.shared(bytes);
        b.finish()
    }

    #[test]
    fn dynamic_shared_memory_is_allowed_at_load_or_refused_by_name() {
        let h100 = Target::Sm90a.max_shared();
        // Static: nothing to raise.
        assert_eq!(dynamic_shared_attribute(&kernel_with_shared(48 * 1024), h100).unwrap(), None);
        assert_eq!(dynamic_shared_attribute(&kernel_with_shared(0), h100).unwrap(), None);
        // Dynamic past 48 KiB: raised to exactly its size, up to the device's maximum.
        let k = kernel_with_shared(90 * 1024);
        assert_eq!(k.dynamic_shared, 90 * 1024);
        assert_eq!(dynamic_shared_attribute(&k, h100).unwrap(), Some(90 * 1024));
        assert_eq!(dynamic_shared_attribute(&kernel_with_shared(h100), h100).unwrap(), Some(h100 as i32));
        // More than the device allows (an sm_86 at 99 KiB; an A100 for an sm_90a-only size).
        for (bytes, max) in [(100 * 1024, 99 * 1024), (h100, Target::Sm80.max_shared())] {
            let e = dynamic_shared_attribute(&kernel_with_shared(bytes), max).unwrap_err();
            assert!(
                matches!(&e, RuntimeError::Device(m) if m.contains("`smem`") && m.contains(&max.to_string())),
                "{e:?}"
            );
        }
    }

    #[test]
    fn driver_results_map_to_typed_errors() {
        match map_driver("a device buffer of 4096 bytes", R::CUDA_ERROR_OUT_OF_MEMORY, None, Some(1024)) {
            RuntimeError::OutOfMemory { what, available, .. } => {
                assert!(what.contains("4096 bytes"), "{what}");
                assert_eq!(available, 1024);
            }
            other => panic!("out of memory mapped to {other:?}"),
        }
        for code in [R::CUDA_ERROR_ILLEGAL_ADDRESS, R::CUDA_ERROR_LAUNCH_FAILED, R::CUDA_ERROR_CONTEXT_IS_DESTROYED] {
            let e = map_driver("launching `k`", code, Some("an illegal memory access"), None);
            assert!(matches!(e, RuntimeError::DeviceLost(_)), "{code:?} mapped to {e:?}");
            assert!(e.to_string().contains("launching `k`") && e.to_string().contains(&format!("{code:?}")), "{e}");
        }
        let e = map_driver("loading the module of `k`", R::CUDA_ERROR_INVALID_PTX, None, None);
        assert!(
            matches!(&e, RuntimeError::Device(m) if m.contains("CUDA_ERROR_INVALID_PTX") && m.contains("`k`")),
            "{e:?}"
        );
    }
}
