//! The wgpu device: adapter selection (with the `VIDRT_WGPU_ADAPTER` override), the
//! device's limits, a pipeline cache keyed by the shader text's hash, buffer creation and
//! read-back. Every device-side failure becomes a [`RuntimeError`]; validation errors are
//! caught with error scopes, and the uncaptured-error handler never panics.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use vidrt_kernels::wgsl::{validate, Features, WgslKernel};

/// Where a buffer's `map_async` callback leaves its result.
type MapSlot = Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>>;
use crate::RuntimeError;

/// Environment variable: a case-insensitive substring of the adapter name to pick.
pub const ADAPTER_ENV: &str = "VIDRT_WGPU_ADAPTER";

/// A compiled compute pipeline and its bind group layout.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// An open device with its caches.
pub(crate) struct Ctx {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<u64, Arc<Pipeline>>>,
    /// The last error the uncaptured-error handler saw (taken by the next check).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it has been (kept: a lost device stays lost).
    lost: Arc<Mutex<Option<String>>>,
    /// Nanoseconds per timestamp tick, when the device has `TIMESTAMP_QUERY` (requested
    /// whenever the adapter offers it).
    pub timestamp_period: Option<f32>,
    /// The optional kernel features the device was opened with (requested whenever the
    /// adapter offers them).
    pub features: Features,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Device(format!("wgpu: {what}: {e}"))
}

impl Ctx {
    /// Opens the adapter chosen by `VIDRT_WGPU_ADAPTER` (a substring of its name), else the
    /// default high-performance adapter. An error, never a panic, when there is none.
    pub fn open() -> Result<Ctx, RuntimeError> {
        if wgpu::Instance::enabled_backend_features().is_empty() {
            return Err(RuntimeError::Device("wgpu: no backend compiled in".into()));
        }
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let wanted = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        let adapter = match &wanted {
            Some(name) => {
                let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
                let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                all.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&name.to_lowercase())).ok_or_else(
                    || {
                        RuntimeError::Device(format!(
                            "wgpu: no adapter matches {ADAPTER_ENV}={name:?}; adapters found: {names:?}"
                        ))
                    },
                )?
            }
            None => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            }))
            .map_err(|e| {
                RuntimeError::Device(format!(
                    "wgpu: no GPU adapter found ({e}); install a Vulkan driver (e.g. Mesa's lavapipe: \
                     `apt-get install mesa-vulkan-drivers libvulkan1`)"
                ))
            })?,
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let offered = adapter.features();
        let timestamps = offered.contains(wgpu::Features::TIMESTAMP_QUERY);
        let kernel_features = Features {
            subgroups: offered.contains(wgpu::Features::SUBGROUP),
            f16: offered.contains(wgpu::Features::SHADER_F16),
        };
        let mut features = wgpu::Features::empty();
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if kernel_features.subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        if kernel_features.f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("vidrt"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| dev_err("request_device", e))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert_with(|| e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert_with(|| format!("wgpu: {reason:?}: {message}"));
            }
        });
        let timestamp_period = timestamps.then(|| queue.get_timestamp_period());
        Ok(Ctx {
            device,
            queue,
            info,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            uncaptured,
            lost,
            timestamp_period,
            features: kernel_features,
        })
    }

    /// Fails with [`RuntimeError::DeviceLost`] once the device is lost, else with the first
    /// error the device reported outside an error scope, if any.
    pub fn check_uncaptured(&self) -> Result<(), RuntimeError> {
        self.check_lost()?;
        match self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            Some(e) => Err(dev_err("device error", e)),
            None => Ok(()),
        }
    }

    /// Fails with [`RuntimeError::DeviceLost`] once the device is lost.
    pub fn check_lost(&self) -> Result<(), RuntimeError> {
        match self.lost.lock().ok().and_then(|s| s.clone()) {
            Some(reason) => Err(RuntimeError::DeviceLost(format!("{reason}; open a new backend to continue"))),
            None => Ok(()),
        }
    }

    /// Destroys the device (what a driver reset does to it), for tests of device loss.
    pub fn destroy(&self) {
        self.device.destroy();
        // The callback runs on a later poll; a destroyed device is lost from now on.
        if let Ok(mut s) = self.lost.lock() {
            s.get_or_insert_with(|| "wgpu: Destroyed: the device was destroyed".into());
        }
    }

    /// The pipeline for `k` (cached by the hash of its text and entry point). Checks its
    /// workgroup memory and size against the device's limits first.
    pub fn pipeline(&self, k: &WgslKernel) -> Result<Arc<Pipeline>, RuntimeError> {
        let mut h = DefaultHasher::new();
        k.source.hash(&mut h);
        k.entry.hash(&mut h);
        let key = h.finish();
        if let Some(p) = self.pipelines.lock().map_err(|_| dev_err("pipeline cache", "poisoned"))?.get(&key) {
            return Ok(p.clone());
        }
        self.check_lost()?;
        if !self.features.covers(k.features) {
            return Err(dev_err(&k.entry, format!("needs {:?}, the device has {:?}", k.features, self.features)));
        }
        let info = validate(k).map_err(|e| dev_err("shader", e))?;
        let l = &self.limits;
        if info.workgroup_bytes > u64::from(l.max_compute_workgroup_storage_size) {
            return Err(dev_err(
                &k.entry,
                format!(
                    "needs {} bytes of workgroup memory, the adapter allows {}",
                    info.workgroup_bytes, l.max_compute_workgroup_storage_size
                ),
            ));
        }
        let [x, y, z] = k.workgroup;
        if x * y * z > l.max_compute_invocations_per_workgroup
            || x > l.max_compute_workgroup_size_x
            || y > l.max_compute_workgroup_size_y
        {
            return Err(dev_err(&k.entry, format!("workgroup {:?} exceeds the adapter's limits", k.workgroup)));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&k.entry),
            source: wgpu::ShaderSource::Wgsl(k.source.as_str().into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&k.entry),
            layout: None,
            module: &module,
            entry_point: Some(&k.entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(dev_err(&format!("creating pipeline `{}`", k.entry), e));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipeline { pipeline, layout });
        self.pipelines.lock().map_err(|_| dev_err("pipeline cache", "poisoned"))?.insert(key, p.clone());
        Ok(p)
    }

    /// The largest storage binding, in bytes.
    pub fn binding_limit(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// A storage buffer of `bytes` (at least 4), checked against the buffer size limit
    /// (kernels bind it whole, or in windows where it is larger than one binding).
    pub fn storage(&self, bytes: u64, what: &str) -> Result<wgpu::Buffer, RuntimeError> {
        let bytes = bytes.max(4).saturating_add(3) / 4 * 4;
        let max = self.limits.max_buffer_size;
        if bytes > max {
            return Err(RuntimeError::OutOfMemory {
                what: format!("{what} (one buffer, past the adapter's buffer size limit)"),
                needed: bytes,
                available: max,
            });
        }
        self.check_lost()?;
        // The driver's out-of-memory (and any validation failure) is caught here, by node.
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        self.check_lost()?;
        if oom.is_some() {
            return Err(RuntimeError::OutOfMemory {
                what: format!("{what} (the device is out of memory)"),
                needed: bytes,
                available: 0,
            });
        }
        if let Some(e) = invalid {
            return Err(dev_err(&format!("creating the buffer of {what} ({bytes} bytes)"), e));
        }
        Ok(b)
    }

    /// A storage buffer holding `words`.
    pub fn storage_init(&self, words: &[u32], what: &str) -> Result<wgpu::Buffer, RuntimeError> {
        let b = self.storage(words.len() as u64 * 4, what)?;
        if !words.is_empty() {
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(words));
        }
        Ok(b)
    }

    /// Reads back `words` 32-bit words of each buffer (one submission, one wait).
    pub fn read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        bufs: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u32>>, RuntimeError> {
        self.check_lost()?;
        let mut staging = Vec::with_capacity(bufs.len());
        for (b, words) in bufs {
            let bytes = (words * 4).max(4);
            let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(b, 0, &s, 0, bytes);
            staging.push(s);
        }
        self.queue.submit([encoder.finish()]);
        let results: Vec<MapSlot> = staging.iter().map(|_| Arc::new(Mutex::new(None))).collect();
        for (s, r) in staging.iter().zip(&results) {
            let r = r.clone();
            s.map_async(wgpu::MapMode::Read, .., move |res| {
                if let Ok(mut slot) = r.lock() {
                    *slot = Some(res);
                }
            });
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.check_lost().err().unwrap_or_else(|| dev_err("poll", e)))?;
        self.check_uncaptured()?;
        let mut out = Vec::with_capacity(bufs.len());
        for ((s, r), (_, words)) in staging.iter().zip(&results).zip(bufs) {
            match r.lock().ok().and_then(|mut x| x.take()) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(dev_err("map", e)),
                None => return Err(dev_err("map", "the buffer was not mapped after the wait")),
            }
            let data = s.slice(..).get_mapped_range().map_err(|e| dev_err("map", e))?;
            let mut v: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, u32>(&data);
            v.truncate(*words as usize);
            drop(data);
            s.unmap();
            out.push(v);
        }
        Ok(out)
    }
}
