//! The GPU context: instance, adapter, device, queue, and the cache of pipelines built on them.
//!
//! Picking an adapter: a hardware GPU when there is one (discrete, then integrated, then
//! virtual), else a software one (lavapipe, llvmpipe GL, WARP). `WGPU_BACKEND` (a comma list
//! such as `vulkan,gl`) and `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter's
//! name) narrow the choice when [`ContextOptions`] leaves it open; an explicit
//! [`BackendChoice`] or name in the options wins over the environment.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::kernels::{self, PipelineKey};

/// Which graphics API to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Every backend wgpu supports here (narrowed by `WGPU_BACKEND` when set).
    #[default]
    Auto,
    /// Vulkan (Linux, Windows, Android; lavapipe in software).
    Vulkan,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows; WARP in software).
    Dx12,
    /// OpenGL / GLES through EGL or WGL (llvmpipe in software).
    Gl,
}

impl BackendChoice {
    /// The wgpu backend set this choice stands for. `Auto` with a `WGPU_BACKEND` that names
    /// no known backend stands for every backend here; [`BackendChoice::check_env`] reports it.
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => env_backends()
                .ok()
                .flatten()
                .map_or(wgpu::Backends::all(), |(backends, _)| backends),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

impl BackendChoice {
    /// Checks `WGPU_BACKEND` where this choice honours it (`Auto`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] naming `WGPU_BACKEND` when it holds a name that is not a backend.
    pub fn check_env(self) -> Result<()> {
        match self {
            BackendChoice::Auto => env_backends().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// How this choice reads in messages: `auto (WGPU_BACKEND=vulkan)` where the variable
    /// narrowed it.
    fn describe(self) -> String {
        match (self, env_backends()) {
            (BackendChoice::Auto, Ok(Some((_, text)))) => format!("auto (WGPU_BACKEND={text})"),
            _ => self.to_string(),
        }
    }
}

/// `WGPU_BACKEND`, a comma list of backend names as wgpu reads it, checked name by name
/// (wgpu itself drops unknown names, which then finds no adapter and blames the drivers).
fn env_backends() -> Result<Option<(wgpu::Backends, String)>> {
    let Ok(text) = std::env::var("WGPU_BACKEND") else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut backends = wgpu::Backends::empty();
    for name in text.split(',').map(str::trim) {
        let one = wgpu::Backends::from_comma_list(&name.to_ascii_lowercase());
        if one.is_empty() {
            return Err(Error::InvalidOption {
                name: "WGPU_BACKEND (environment variable)",
                value: text.clone(),
                reason: "expected a comma list of vulkan, metal, dx12, gl (or unset it)",
            });
        }
        backends |= one;
    }
    Ok(Some((backends, text)))
}

impl FromStr for BackendChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "metal" | "mtl" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            _ => Err(Error::InvalidOption {
                name: "backend",
                value: s.to_string(),
                reason: "expected one of auto, vulkan, metal, dx12, gl",
            }),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Metal => "metal",
            BackendChoice::Dx12 => "dx12",
            BackendChoice::Gl => "gl",
        };
        f.write_str(name)
    }
}

/// How to build a [`Context`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContextOptions {
    /// The graphics API; `Auto` honours `WGPU_BACKEND`.
    pub backend: BackendChoice,
    /// A case-insensitive substring of the adapter name; `None` honours `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
    /// Upper bound on the bytes of logits one dispatch binds. `None`: the device's
    /// `max_storage_buffer_binding_size`. Larger inputs are split into row chunks; a small
    /// value here exercises that path on small data.
    pub max_chunk_bytes: Option<u64>,
    /// How long to wait for one submission before giving up with [`Error::Wait`].
    pub wait_timeout: Duration,
    /// Debugging aid: fill the host API's output buffers with NaN before each dispatch, so
    /// that an element a kernel fails to write shows up as NaN instead of a stale value.
    /// Costs one extra upload per call; the tests turn it on.
    pub poison_outputs: bool,
    /// Whether the kernels take the io paths measured faster on software adapters
    /// (llvmpipe): blocks moved as 64-bit words where the device has
    /// `Features::SHADER_INT64` ([`Context::words64`]), and halves converted by bit
    /// operations ([`Context::f16_bits`]). `None`: on software adapters only (GPUs keep
    /// 32-bit words and their f16 instructions; not measured); `Some(_)`: forced either way.
    /// Results are the same bits either way (tests/gpu.rs checks).
    pub software_io: Option<bool>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            adapter_name: None,
            max_chunk_bytes: None,
            wait_timeout: Duration::from_secs(300),
            poison_outputs: false,
            software_io: None,
        }
    }
}

const NO_ADAPTER_HINT: &str = "On Linux without a GPU install Mesa's software Vulkan driver: \
     `apt-get install -y mesa-vulkan-drivers libvulkan1` (lavapipe); GL needs libegl-mesa0.";

/// Lists the adapters wgpu finds for `backend`, best first (see the module docs for the order).
pub fn list_adapters(backend: BackendChoice) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    let instance = wgpu::Instance::new(desc);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backend.backends()));
    adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
    adapters
}

/// Lower is better: hardware before software, then Vulkan, Metal, DX12, GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal => 1,
        wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 3,
        _ => 4,
    };
    (device, api)
}

/// Device, queue and pipeline cache: build one and reuse it for every call.
///
/// `Context` is `Send + Sync`. Calls from several threads may run at once: each builds its own
/// buffers and command buffer and submits them to the one queue, where the GPU runs them in
/// submission order; pipelines are built once (under a lock) and shared.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    pub(crate) max_chunk_bytes: u64,
    pub(crate) wait_timeout: Duration,
    pub(crate) poison_outputs: bool,
    words64: bool,
    f16_bits: bool,
    pub(crate) layouts: kernels::Layouts,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<kernels::ModuleKey, wgpu::ShaderModule>>,
    pub(crate) host_pool: Mutex<crate::ops::HostPool>,
    lost: Arc<Mutex<Option<String>>>,
    lost_flag: Arc<AtomicBool>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The best adapter under [`ContextOptions::default`] (environment variables honoured).
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::default())
    }

    /// The best adapter matching `options` that opens a device. An adapter that enumerates but
    /// cannot open one (e.g. NVIDIA's GL adapter under EGL: "Parent device is lost") is
    /// skipped, and named in the error if none opens.
    pub fn with_options(options: &ContextOptions) -> Result<Self> {
        options.backend.check_env()?;
        let name = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|n| !n.is_empty());
        let adapters = list_adapters(options.backend);
        let found: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let candidates = adapters.into_iter().filter(|a| match &name {
            Some(n) => a.get_info().name.to_lowercase().contains(&n.to_lowercase()),
            None => true,
        });
        let mut failed = Vec::new();
        for adapter in candidates {
            match Self::from_adapter(&adapter, options) {
                Ok(ctx) => return Ok(ctx),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let mut tried = format!("backend {}", options.backend.describe());
        if let Some(n) = &name {
            tried.push_str(&format!(", name containing \"{n}\""));
        }
        if found.is_empty() {
            tried.push_str(", none enumerated");
        } else if failed.is_empty() {
            tried.push_str(&format!(", found only: {}", found.join(", ")));
        } else {
            tried.push_str(&format!(", none opened a device: {}", failed.join("; ")));
        }
        Err(Error::NoAdapter {
            tried,
            hint: NO_ADAPTER_HINT,
        })
    }

    /// One context per adapter wgpu finds for `backend`, best first. The tests run on each.
    pub fn all(backend: BackendChoice, options: &ContextOptions) -> Result<Vec<Self>> {
        list_adapters(backend)
            .iter()
            .map(|a| Self::from_adapter(a, options))
            .collect()
    }

    /// A context on this adapter, asking for its real limits and the optional features used.
    pub fn from_adapter(adapter: &wgpu::Adapter, options: &ContextOptions) -> Result<Self> {
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SHADER_INT64;
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("ml-softmax"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let info = adapter.get_info();
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::Unsupported {
                adapter: info.name.clone(),
                what: format!("request_device failed: {e}"),
            })?;
        Self::build(device, queue, info, options)
    }

    /// Wraps a device and queue the caller already has. Pipelines use only the features the
    /// device was created with: request `Features::SUBGROUP` to allow the subgroup strategy.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
    ) -> Result<Self> {
        let info = device.adapter_info();
        Self::build(device, queue, info, options)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &ContextOptions,
    ) -> Result<Self> {
        // wgpu's default handler panics on an error no scope caught; turn it into a log line.
        // Every operation of this crate runs inside error scopes, so this only sees misuse
        // elsewhere on a shared device.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("ml-softmax: uncaptured wgpu error: {e}");
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = Arc::new(AtomicBool::new(false));
        {
            let lost = Arc::clone(&lost);
            let flag = Arc::clone(&lost_flag);
            device.set_device_lost_callback(move |reason, message| {
                if let Ok(mut slot) = lost.lock() {
                    *slot = Some(format!("{reason:?}: {message}"));
                }
                flag.store(true, Ordering::SeqCst);
            });
        }
        let limits = device.limits();
        let binding = limits.max_storage_buffer_binding_size;
        let max_chunk_bytes = options.max_chunk_bytes.unwrap_or(binding).min(binding);
        let layouts = kernels::Layouts::new(&device);
        let software_io = options
            .software_io
            .unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        let words64 = software_io && device.features().contains(wgpu::Features::SHADER_INT64);
        Ok(Self {
            features: device.features(),
            words64,
            f16_bits: software_io,
            layouts,
            device,
            queue,
            info,
            limits,
            max_chunk_bytes,
            wait_timeout: options.wait_timeout,
            poison_outputs: options.poison_outputs,
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            host_pool: Mutex::new(crate::ops::HostPool::default()),
            lost,
            lost_flag,
        })
    }

    /// Name, backend, device type and driver of the adapter in use.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One line naming the adapter: `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)"`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// The wgpu device, for callers of the device-resident API who create their buffers.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Whether the kernels hold their blocks (4 elements, one storage access) as 64-bit words
    /// (`shaders/words64.wgsl`) rather than 32-bit ones: [`ContextOptions::software_io`] on a
    /// device with `Features::SHADER_INT64`. llvmpipe pays each storage access per
    /// component, and the copy kernel ran 1.2-1.6x faster on lavapipe with half the components
    /// (BENCHMARKS.md).
    pub fn words64(&self) -> bool {
        self.words64
    }

    /// Whether the f16 vector io converts halves by integer and f32 operations
    /// (`shaders/f16.wgsl`) rather than `unpack2x16float` / `pack2x16float`, which llvmpipe
    /// runs lane by lane: [`ContextOptions::software_io`].
    pub fn f16_bits(&self) -> bool {
        self.f16_bits
    }

    /// Whether the adapter runs one subgroup per row (fixed, known subgroup size).
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP) && self.subgroup_size().is_some()
    }

    /// The subgroup size when the adapter reports one fixed size.
    pub fn subgroup_size(&self) -> Option<u32> {
        let (lo, hi) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        (lo == hi && lo > 0 && self.features.contains(wgpu::Features::SUBGROUP)).then_some(lo)
    }

    /// A buffer on this context's device, for callers of the device-resident API. A size
    /// past the device's `max_buffer_size`, or an allocation wgpu reports out of memory,
    /// comes back as [`Error::OutOfMemory`]; the context stays usable.
    pub fn create_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let max = self.limits.max_buffer_size;
        if size > max {
            return Err(Error::OutOfMemory(format!(
                "a buffer of {size} bytes is larger than this device allows \
                 (max_buffer_size {max})"
            )));
        }
        self.scoped(|| {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            }))
        })
    }

    /// A buffer holding `contents`, written through the queue. (wgpu's `create_buffer_init`
    /// maps the buffer at creation and panics when the device is gone; this does not.)
    pub(crate) fn buffer_with(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = (contents.len() as u64).next_multiple_of(4).max(4);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.write_words(&buffer, contents);
        buffer
    }

    /// `queue.write_buffer` at offset 0, padding `bytes` with zeros to whole 4-byte words
    /// (the queue moves whole words; 2-byte data can have an odd length).
    pub(crate) fn write_words(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(buffer, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer, 0, &padded);
        }
    }

    /// Fails with [`Error::DeviceLost`] once wgpu has reported the device lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        // A non-blocking poll runs wgpu's pending callbacks, the device-lost one included.
        let _ = self.device.poll(wgpu::PollType::Poll);
        if self.lost_flag.load(Ordering::SeqCst) {
            let why = self
                .lost
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            return Err(Error::DeviceLost(why));
        }
        Ok(())
    }

    /// How many compute pipelines this context has built so far: one per kernel
    /// specialisation a call has needed (strategy, storage format, options, workgroup size).
    /// They stay cached, with the driver's compiled code, until the context is dropped, so
    /// this also tells what the cache holds (about 2 MB of memory per pipeline on lavapipe,
    /// measured by the soak test).
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.lock().map_or(0, |cache| cache.len())
    }

    /// The pipeline for `key`, built on first use (shader JIT costs 0.2-3 s on software
    /// adapters) and shared afterwards.
    pub(crate) fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Validation("pipeline cache lock poisoned".into()))?;
        if let Some(p) = cache.get(&key) {
            return Ok(Arc::clone(p));
        }
        let pipeline = self.scoped(|| {
            let module = {
                let mut modules = self
                    .modules
                    .lock()
                    .map_err(|_| Error::Validation("shader cache lock poisoned".into()))?;
                modules
                    .entry(key.module)
                    .or_insert_with(|| {
                        self.device
                            .create_shader_module(wgpu::ShaderModuleDescriptor {
                                label: Some(&key.module.label()),
                                source: wgpu::ShaderSource::Wgsl(key.module.source().into()),
                            })
                    })
                    .clone()
            };
            let constants = key.constants();
            Ok(self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.entry_point()),
                    layout: Some(self.layouts.pipeline_layout(key.module)),
                    module: &module,
                    entry_point: Some(key.entry_point()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                }))
        })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// Runs `f` inside error scopes for validation and out-of-memory, so that wgpu errors of
    /// the resources and commands it creates come back as [`Error`]s. An error `f` returns
    /// itself takes precedence.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let scope = ErrorScope::push(&self.device);
        let result = f();
        let caught = scope.pop();
        let value = result?;
        caught?;
        Ok(value)
    }

    /// Maps `staging` (MAP_READ) after the work that fills it was submitted, waits for it,
    /// and copies the first `len` bytes out.
    pub(crate) fn read_bytes(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<u8>> {
        let bytes = len as u64;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(self.wait_timeout),
            })
            .map_err(|e| Error::Wait(e.to_string()))?;
        self.check_alive()?;
        match rx.recv_timeout(self.wait_timeout) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Wait(format!("mapping the readback buffer: {e}"))),
            Err(_) => return Err(Error::Wait("the readback buffer was never mapped".into())),
        }
        let out = {
            let view = staging
                .get_mapped_range(0..bytes)
                .map_err(|e| Error::Wait(format!("reading the mapped buffer: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}

/// Catches validation and out-of-memory errors of the operations between `push` and `pop`
/// on this thread (wgpu's error scopes are per thread).
///
/// Scopes must be popped in reverse order of pushing. The fields are declared innermost
/// first because Rust drops fields in declaration order: an early `?` return that drops an
/// unpopped `ErrorScope` then still pops `validation` before `oom`.
pub(crate) struct ErrorScope {
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl ErrorScope {
    pub(crate) fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Self { validation, oom }
    }

    pub(crate) fn pop(self) -> Result<()> {
        let validation = pollster::block_on(self.validation.pop());
        let oom = pollster::block_on(self.oom.pop());
        if let Some(e) = oom {
            return Err(Error::OutOfMemory(e.to_string()));
        }
        if let Some(e) = validation {
            let text = e.to_string();
            // Buffer creation beyond what the device can hold is reported as validation on
            // some backends: name it for what it is.
            if text.contains("OutOfMemory") || text.contains("out of memory") {
                return Err(Error::OutOfMemory(text));
            }
            return Err(Error::Validation(text));
        }
        Ok(())
    }
}
