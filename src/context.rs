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
use crate::kernels::autotune::{Autotune, Autotuner};
use crate::kernels::software::SoftwareIo;
use crate::kernels::{self, PipelineKey, Precision, Strategy};

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
    /// How many compute pipelines the context keeps; past that, the least recently used one
    /// is dropped (and built again if a later call needs it). Every kernel specialisation a
    /// call needs is one pipeline: its strategy, storage format and io path, which options
    /// are on, and the workgroup size. A steady workload uses a fixed set (the soak test's mix
    /// of 96 kinds of call on lavapipe and llvmpipe GL needs 1,154 in all); all 42,000-odd
    /// that exist are reached only by cycling through every option combination. On lavapipe a
    /// pipeline holds about 2 MB, so the default bounds that at about 4 GB; GPUs' are smaller.
    pub max_cached_pipelines: usize,
    /// Experimental, off by default: [`CooperativeMatrixOptIn::on`] opens the device with
    /// wgpu's `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` where the adapter offers it (Metal
    /// on Apple7+ / Mac2+, Vulkan with `VK_KHR_cooperative_matrix` and 8 x 8 f32 matrices),
    /// and the fused linear cross-entropy's matrix products then use cooperative matrices
    /// ([`Context::linear_product`]). Not run on any adapter yet: see README.
    pub cooperative_matrix: CooperativeMatrixOptIn,
    /// How `Strategy::Auto` is chosen: by the fixed table, or by timing the candidates on
    /// this adapter once per shape bucket ([`Autotune`]; [`Context::autotune_choice`]). The
    /// default, [`Autotune::OnHardware`], tunes on hardware GPUs, whose rows of the table
    /// were never measured, and keeps the table on software adapters, where it was. A choice
    /// sticks for the context's life (and with [`Autotune::Persist`] across runs), so
    /// results stay bit-reproducible.
    pub autotune: Autotune,
    /// `Strategy::SplitCache`'s cache budget: bytes of logits per group of rows whose two
    /// passes run back to back, so the second read finds them in cache. `None`:
    /// [`kernels::geometry::SPLIT_CACHE_BYTES`] (16 MiB, for GPUs with an L2 of 40 MB or
    /// more); set it to about half your GPU's last-level cache. Results are the same bits at
    /// any budget.
    pub split_cache_bytes: Option<u64>,
}

/// [`ContextOptions::cooperative_matrix`]: whether to open the device with wgpu's
/// experimental cooperative-matrix feature. Turning it on is `unsafe` because wgpu's
/// experimental features are: by [`CooperativeMatrixOptIn::on`] the caller accepts
/// `wgpu::ExperimentalFeatures::enabled`'s terms (the feature's implementation may have bugs
/// that cause undefined behaviour through otherwise safe calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CooperativeMatrixOptIn(bool);

impl CooperativeMatrixOptIn {
    /// Off: the device is opened without experimental features (the default).
    pub const fn off() -> Self {
        Self(false)
    }

    /// On: request `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` where the adapter offers it.
    ///
    /// # Safety
    /// As `wgpu::ExperimentalFeatures::enabled`: the caller accepts that wgpu's experimental
    /// features may contain bugs leading to undefined behaviour.
    pub const unsafe fn on() -> Self {
        Self(true)
    }

    /// Whether it is on.
    pub const fn is_on(self) -> bool {
        self.0
    }
}

/// [`ContextOptions::max_cached_pipelines`]'s default: room for a steady workload's set many
/// times over, so that it never rebuilds a pipeline.
pub const DEFAULT_MAX_CACHED_PIPELINES: usize = 2048;

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            adapter_name: None,
            max_chunk_bytes: None,
            wait_timeout: Duration::from_secs(300),
            poison_outputs: false,
            software_io: None,
            max_cached_pipelines: DEFAULT_MAX_CACHED_PIPELINES,
            cooperative_matrix: CooperativeMatrixOptIn::off(),
            autotune: Autotune::OnHardware,
            split_cache_bytes: None,
        }
    }
}

const NO_ADAPTER_HINT: &str = "On Linux without a GPU install Mesa's software Vulkan driver: \
     `apt-get install -y mesa-vulkan-drivers libvulkan1` (lavapipe); GL needs libegl-mesa0.";

/// Lists the adapters wgpu finds for `backend`, best first (see the module docs for the order).
/// In a browser this finds nothing (its adapter request cannot be waited for): use
/// [`list_adapters_async`].
pub fn list_adapters(backend: BackendChoice) -> Vec<wgpu::Adapter> {
    crate::platform::block_on(list_adapters_async(backend)).unwrap_or_default()
}

/// [`list_adapters`] without blocking: the one adapter a browser's WebGPU offers on wasm32.
pub async fn list_adapters_async(backend: BackendChoice) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    let instance = wgpu::Instance::new(desc);
    let mut adapters = instance.enumerate_adapters(backend.backends()).await;
    adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
    adapters
}

/// The most lanes llvmpipe (lavapipe, llvmpipe GL) puts in a compute subgroup: Mesa builds
/// its compute shaders on vectors of `MIN2(lp_native_vector_width / 32, 16)` floats
/// (llvmpipe's `lp_state_cs.c`; `LP_MAX_VECTOR_WIDTH` is 512 bits), while lavapipe reports
/// `subgroupSize = lp_native_vector_width / 32` (`lvp_device.c`). With
/// `LP_NATIVE_VECTOR_WIDTH` at 1024 or 2048 it reports, and the `subgroup_size` builtin
/// says, 32 or 64 lanes, but a subgroup holds 16: `subgroupAdd(1)` is 16 and
/// `num_subgroups` of a 64-lane workgroup is 4 (tests/gpu.rs,
/// `the_subgroup_size_reported_is_the_size_run`, shows it with a standalone shader).
/// Measured on Mesa 22.3.6; both lines are unchanged in later Mesa sources we read.
pub const LLVMPIPE_MAX_SUBGROUP: u32 = 16;

/// The subgroup size the kernels may rely on for an adapter `info` (whose device has
/// `Features::SUBGROUP` when `has_feature`), or why there is none. The subgroup strategy,
/// and everything sized by the subgroup (its workgroup size and rows per workgroup,
/// `kernels::geometry::subgroup_shape`; its loop-turn bound; the choice of
/// `Strategy::resolve`), needs ONE size known on the host before the dispatch: the host
/// sizes the grid as `workgroup / size` rows per workgroup, and the shader
/// (team_subgroup.wgsl) numbers its rows by the `num_subgroups` it meets at run time, so a
/// subgroup larger than the host assumed would leave rows unwritten. So:
/// - no `Features::SUBGROUP`: refused;
/// - `subgroup_min_size != subgroup_max_size` (the size may vary from one pipeline or
///   dispatch to the next: Intel's 8 to 32, AMD's wave32/wave64 on RDNA): refused, the
///   other strategies serve (they assume no subgroup size at all);
/// - a size that is not a power of two in 1..=128 (not a size any adapter has): refused;
/// - llvmpipe reporting more than [`LLVMPIPE_MAX_SUBGROUP`] lanes, which it does not run
///   (see there): refused;
/// - otherwise the one size reported.
pub fn usable_subgroup_size(
    info: &wgpu::AdapterInfo,
    has_feature: bool,
) -> std::result::Result<u32, String> {
    let (min, max) = (info.subgroup_min_size, info.subgroup_max_size);
    if !has_feature {
        return Err("the device has no Features::SUBGROUP".into());
    }
    if min != max {
        return Err(format!(
            "the subgroup size varies from {min} to {max} lanes at run time, and the subgroup \
             strategy needs one size known before the dispatch"
        ));
    }
    if !(min.is_power_of_two() && min <= 128) {
        return Err(format!(
            "the adapter reports an unusable subgroup size ({min})"
        ));
    }
    let llvmpipe = info.name.to_lowercase().starts_with("llvmpipe")
        || info.driver.eq_ignore_ascii_case("llvmpipe");
    if llvmpipe && min > LLVMPIPE_MAX_SUBGROUP {
        return Err(format!(
            "llvmpipe ({}) reports {min}-lane subgroups but runs {LLVMPIPE_MAX_SUBGROUP}-lane \
             ones (its compute vectors stop at 16 floats): subgroup operations would see a \
             part of each subgroup",
            info.driver_info
        ));
    }
    Ok(min)
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
/// `Context` is `Send + Sync` natively (on wasm32 it stays on the page's thread, as wgpu's
/// WebGPU objects do). Calls from several threads may run at once: each builds its own
/// buffers and command buffer and submits them to the one queue, where the GPU runs them in
/// submission order; pipelines are built once (under a lock) and shared.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    /// The subgroup size the kernels rely on, or why there is none ([`usable_subgroup_size`]).
    subgroups: std::result::Result<u32, String>,
    pub(crate) max_chunk_bytes: u64,
    /// Row chunks submitted by host calls ([`Context::host_chunks_submitted`]).
    pub(crate) host_chunks: std::sync::atomic::AtomicU64,
    /// [`ContextOptions::split_cache_bytes`], defaulted.
    pub(crate) split_cache_bytes: u64,
    pub(crate) wait_timeout: Duration,
    pub(crate) poison_outputs: bool,
    software_io: SoftwareIo,
    pub(crate) layouts: kernels::Layouts,
    pipelines: Mutex<LruCache<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<kernels::ModuleKey, wgpu::ShaderModule>>,
    /// Pipelines of kernels outside `kernels::ModuleKey` (src/linear.rs), by name.
    named_pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    pub(crate) host_pool: Mutex<crate::ops::HostPool>,
    /// Error scopes popped by sync code that the next async call settles (wasm32 only).
    pub(crate) deferred_scopes: crate::platform::DeferredScopes,
    lost: Arc<Mutex<Option<String>>>,
    lost_flag: Arc<AtomicBool>,
    /// The choices of `Strategy::Auto` (src/kernels/autotune.rs).
    pub(crate) autotune: Autotuner,
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

    /// [`Context::new`] without blocking: the way to open a context in a browser (wasm32,
    /// WebGPU), where the page's thread may not wait.
    ///
    /// ```no_run
    /// # async fn page() -> ml_softmax::Result<()> {
    /// let ctx = ml_softmax::Context::new_async().await?;
    /// let out = ctx.cross_entropy_async(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default()).await?;
    /// assert!((out.loss - 1.4076).abs() < 1e-4);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(&ContextOptions::default()).await
    }

    /// The best adapter matching `options` that opens a device. An adapter that enumerates but
    /// cannot open one (e.g. NVIDIA's GL adapter under EGL: "Parent device is lost") is
    /// skipped, and named in the error if none opens.
    pub fn with_options(options: &ContextOptions) -> Result<Self> {
        crate::platform::block_on(Self::with_options_async(options))?
    }

    /// [`Context::with_options`] without blocking (see [`Context::new_async`]).
    pub async fn with_options_async(options: &ContextOptions) -> Result<Self> {
        options.backend.check_env()?;
        let name = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|n| !n.is_empty());
        let adapters = list_adapters_async(options.backend).await;
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
            match Self::from_adapter_async(&adapter, options).await {
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

    /// One entry per adapter wgpu finds for `backend`, best first: the adapter's info and a
    /// context on it, or the error its device gave (an adapter can enumerate and still fail
    /// to open a device, e.g. NVIDIA's GL adapter under EGL: "Parent device is lost").
    /// [`keep_opened`] keeps the contexts that opened and names the others; [`Context::all`]
    /// fails on the first adapter that does not open.
    pub fn each_adapter(
        backend: BackendChoice,
        options: &ContextOptions,
    ) -> Vec<(wgpu::AdapterInfo, Result<Self>)> {
        list_adapters(backend)
            .iter()
            .map(|a| (a.get_info(), Self::from_adapter(a, options)))
            .collect()
    }

    /// The strategy `strategy` stands for on this adapter at `rows x cols` of f32 logits:
    /// itself, or for [`Strategy::Auto`] the concrete one every operation of this context
    /// runs there (the table's choice, [`Strategy::resolve`], from this adapter's device
    /// type and usable subgroup size, or the autotuned one: [`Context::autotune_choice`]).
    pub fn resolve_strategy(&self, strategy: Strategy, rows: usize, cols: usize) -> Strategy {
        self.resolve_strategy_for(strategy, rows, cols, Precision::F32)
    }

    /// [`Context::resolve_strategy`] for logits stored as `precision` (autotune times each
    /// precision apart). What `ml-softmax bench` prints beside `auto`.
    pub fn resolve_strategy_for(
        &self,
        strategy: Strategy,
        rows: usize,
        cols: usize,
        precision: Precision,
    ) -> Strategy {
        match strategy {
            Strategy::Auto => self.autotune_choice(rows, cols, precision).strategy,
            concrete => concrete,
        }
    }

    /// A context on this adapter, asking for its real limits and the optional features used.
    pub fn from_adapter(adapter: &wgpu::Adapter, options: &ContextOptions) -> Result<Self> {
        crate::platform::block_on(Self::from_adapter_async(adapter, options))?
    }

    /// [`Context::from_adapter`] without blocking.
    pub async fn from_adapter_async(
        adapter: &wgpu::Adapter,
        options: &ContextOptions,
    ) -> Result<Self> {
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SHADER_INT64;
        let mut features = adapter.features() & wanted;
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        let coop = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        if options.cooperative_matrix.is_on() && adapter.features().contains(coop) {
            features |= coop;
            // SAFETY: the caller accepted wgpu's terms for experimental features through the
            // unsafe `CooperativeMatrixOptIn::on`.
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("ml-softmax"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let info = adapter.get_info();
        let (device, queue) =
            adapter
                .request_device(&desc)
                .await
                .map_err(|e| Error::Unsupported {
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
        mut info: wgpu::AdapterInfo,
        options: &ContextOptions,
    ) -> Result<Self> {
        // Browsers give wgpu no adapter name: say what it is, for messages and describe().
        if info.name.trim().is_empty() {
            info.name = format!("unnamed {:?} adapter", info.backend);
        }
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
        let software_io =
            SoftwareIo::choose(options.software_io, info.device_type, device.features());
        let subgroups =
            usable_subgroup_size(&info, device.features().contains(wgpu::Features::SUBGROUP));
        let autotune = Autotuner::new(
            &options.autotune,
            &info,
            subgroups.as_ref().ok().copied(),
            (software_io.words64, software_io.f16_bits),
        )?;
        Ok(Self {
            autotune,
            features: device.features(),
            software_io,
            subgroups,
            layouts,
            device,
            queue,
            info,
            limits,
            max_chunk_bytes,
            host_chunks: Default::default(),
            split_cache_bytes: options
                .split_cache_bytes
                .unwrap_or(kernels::geometry::SPLIT_CACHE_BYTES),
            wait_timeout: options.wait_timeout,
            poison_outputs: options.poison_outputs,
            pipelines: Mutex::new(LruCache::new(options.max_cached_pipelines)),
            modules: Mutex::new(HashMap::new()),
            named_pipelines: Mutex::new(HashMap::new()),
            host_pool: Mutex::new(crate::ops::HostPool::default()),
            deferred_scopes: Default::default(),
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
    /// component, and the copy kernel ran faster on lavapipe with half the components
    /// (BENCHMARKS.md, "What moved the kernel").
    pub fn words64(&self) -> bool {
        self.software_io.words64
    }

    /// Whether the f16 vector io converts halves by integer and f32 operations
    /// (`shaders/f16.wgsl`) rather than `unpack2x16float` / `pack2x16float`, which llvmpipe
    /// runs lane by lane: [`ContextOptions::software_io`].
    pub fn f16_bits(&self) -> bool {
        self.software_io.f16_bits
    }

    /// The software io paths this context takes (`kernels::software`).
    pub(crate) fn software_io(&self) -> SoftwareIo {
        self.software_io
    }

    /// Whether the subgroup strategy may run here: [`Context::subgroup_size`] is known.
    pub fn has_subgroups(&self) -> bool {
        self.subgroup_size().is_some()
    }

    /// The subgroup size the kernels may rely on, when there is one: see
    /// [`usable_subgroup_size`] for the rule, [`Context::subgroup_refusal`] for why not.
    pub fn subgroup_size(&self) -> Option<u32> {
        self.subgroups.as_ref().ok().copied()
    }

    /// Why the subgroup strategy does not run on this adapter (`None` when it does).
    pub fn subgroup_refusal(&self) -> Option<&str> {
        self.subgroups.as_ref().err().map(String::as_str)
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

    /// How many compute pipelines this context holds: one per kernel specialisation a call
    /// has needed (strategy, storage format, options, workgroup size), kept with the driver's
    /// compiled code up to [`ContextOptions::max_cached_pipelines`] (about 2 MB of memory per
    /// pipeline on lavapipe, measured by the soak test).
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
            return Ok(p);
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

    /// The pipeline called `name`, built by `build` on first use (inside error scopes) and
    /// kept for the context's life: for kernels with a small fixed set of pipelines that
    /// live outside `kernels::ModuleKey` (src/linear.rs).
    pub(crate) fn named_pipeline(
        &self,
        name: &str,
        build: impl FnOnce(&wgpu::Device) -> wgpu::ComputePipeline,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self
            .named_pipelines
            .lock()
            .map_err(|_| Error::Validation("pipeline cache lock poisoned".into()))?;
        if let Some(p) = cache.get(name) {
            return Ok(Arc::clone(p));
        }
        let pipeline = Arc::new(self.scoped(|| Ok(build(&self.device)))?);
        cache.insert(name.to_string(), Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// Runs `f` inside error scopes for validation and out-of-memory, so that wgpu errors of
    /// the resources and commands it creates come back as [`Error`]s. An error `f` returns
    /// itself takes precedence.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let scope = ErrorScope::push(&self.device);
        let result = f();
        let caught = self.settle_scope(scope.pop());
        let value = result?;
        caught?;
        Ok(value)
    }

    /// [`Context::scoped`] for the async calls: awaits what the scopes caught (and, on
    /// wasm32, the scopes sync code popped meanwhile) instead of blocking.
    pub(crate) async fn scoped_async<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let scope = ErrorScope::push(&self.device);
        let result = f();
        let caught = scope.pop().await;
        let deferred = self.settle_deferred().await;
        let value = result?;
        // The deferred scopes were opened (and closed) inside this one: theirs is the
        // first error.
        deferred?;
        caught?;
        Ok(value)
    }

    /// Reads a slice of a device buffer back to the host (it needs `BufferUsages::COPY_SRC`;
    /// offset and size multiples of 4): copies it into a staging buffer after the work
    /// already submitted, and waits. The readback of the device API.
    ///
    /// ```no_run
    /// let ctx = ml_softmax::Context::new()?;
    /// let buffer = ctx.create_buffer("x", 16, ml_softmax::wgpu::BufferUsages::COPY_SRC)?;
    /// let bytes = ctx.read_back(buffer.slice(4..12))?;
    /// assert_eq!(bytes.len(), 8);
    /// # Ok::<(), ml_softmax::Error>(())
    /// ```
    pub fn read_back(&self, slice: wgpu::BufferSlice<'_>) -> Result<Vec<u8>> {
        self.block_on_gpu(self.read_back_async(slice))
    }

    /// [`Context::read_back`] without blocking: the readback of the device API in a browser.
    /// On native, see the `platform` notes in [`Context::new_async`]'s module: the future
    /// polls the device itself.
    pub async fn read_back_async(&self, slice: wgpu::BufferSlice<'_>) -> Result<Vec<u8>> {
        self.check_alive()?;
        let (buffer, offset, size) = (slice.buffer(), slice.offset(), slice.size());
        if !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC)
            || offset % 4 != 0
            || size % 4 != 0
        {
            return Err(Error::BadBuffer {
                what: "read_back",
                problem: format!(
                    "needs COPY_SRC and a slice of whole 4-byte words, has {:?} at bytes \
                     {offset}..{}",
                    buffer.usage(),
                    offset + size
                ),
            });
        }
        let staging = self
            .scoped_async(|| {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read_back"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut encoder =
                    self.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("read_back"),
                        });
                encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
                self.queue.submit([encoder.finish()]);
                Ok(staging)
            })
            .await?;
        self.read_bytes_async(&staging, size as usize).await
    }

    /// [`Context::read_back`] of f32 data.
    pub fn read_f32(&self, slice: wgpu::BufferSlice<'_>) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_back(slice)?))
    }

    /// Maps `staging` (MAP_READ) after the work that fills it was submitted, waits for it,
    /// and copies the first `len` bytes out.
    pub(crate) fn read_bytes(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<u8>> {
        self.block_on_gpu(self.read_bytes_async(staging, len))
    }

    /// [`Context::read_bytes`] without blocking.
    pub(crate) async fn read_bytes_async(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<u8>> {
        let bytes = len as u64;
        let mapped = crate::platform::map_read(&self.device, staging, 0..bytes).await;
        self.check_alive()?;
        if let Err(e) = mapped {
            return Err(Error::Wait(format!("mapping the readback buffer: {e}")));
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

/// A map that holds at most `capacity` entries, dropping the least recently used one to make
/// room. Eviction scans the entries: it happens only when a pipeline is built, which costs
/// far more (milliseconds to seconds of shader compilation) than a scan of a few thousand.
pub(crate) struct LruCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    clock: u64,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> LruCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    /// The value for `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    /// Inserts `key`, first dropping the least recently used entry if the map is full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        self.entries.insert(key, (value, self.clock));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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

    /// Pops both scopes now; the future says what they caught.
    pub(crate) fn pop(self) -> crate::platform::ScopeFuture {
        let validation = self.validation.pop();
        let oom = self.oom.pop();
        Box::pin(async move { Self::caught(validation.await, oom.await) })
    }

    fn caught(validation: Option<wgpu::Error>, oom: Option<wgpu::Error>) -> Result<()> {
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

/// The rule for running on every adapter (the GPU tests' harness follows it): keep the
/// values of the adapters that opened, and name each one that did not as `"NAME (Backend):
/// error"`, so it is reported and skipped; fail with [`Error::NoAdapter`] when none was found
/// or none opened (then naming every failure). `results` is what [`Context::each_adapter`]
/// returns (generic so the rule is tested without a broken adapter).
pub fn keep_opened<T>(
    results: Vec<(wgpu::AdapterInfo, Result<T>)>,
) -> Result<(Vec<T>, Vec<String>)> {
    let found = results.len();
    let mut opened = Vec::new();
    let mut skipped = Vec::new();
    for (info, result) in results {
        match result {
            Ok(value) => opened.push(value),
            Err(e) => skipped.push(format!("{} ({:?}): {e}", info.name, info.backend)),
        }
    }
    if opened.is_empty() {
        let tried = if found == 0 {
            "every adapter: none enumerated".to_string()
        } else {
            format!(
                "every adapter: {found} enumerated, none opened a device: {}",
                skipped.join("; ")
            )
        };
        return Err(Error::NoAdapter {
            tried,
            hint: NO_ADAPTER_HINT,
        });
    }
    Ok((opened, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_cache_drops_the_least_recently_used() {
        let mut cache = LruCache::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1)); // "b" is now the least recently used
        cache.insert("c", 3);
        assert_eq!((cache.len(), cache.get(&"b")), (2, None));
        assert_eq!((cache.get(&"a"), cache.get(&"c")), (Some(1), Some(3)));
        cache.insert("c", 4); // present: replaced, nothing dropped
        assert_eq!(
            (cache.len(), cache.get(&"a"), cache.get(&"c")),
            (2, Some(1), Some(4))
        );
        assert_eq!(LruCache::<u8, u8>::new(0).capacity, 1);
    }

    fn adapter(name: &str, driver: &str, min: u32, max: u32) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan);
        info.name = name.into();
        info.driver = driver.into();
        info.driver_info = "Mesa 22.3.6 (LLVM 15.0.6)".into();
        info.subgroup_min_size = min;
        info.subgroup_max_size = max;
        info
    }

    fn broken() -> Result<u32> {
        Err(Error::Unsupported {
            adapter: "NVIDIA H200/PCIe/SSE2".into(),
            what: "request_device failed: Parent device is lost".into(),
        })
    }

    /// An adapter that enumerates but cannot open a device is skipped and named; the others
    /// are kept, in order.
    #[test]
    fn an_adapter_that_does_not_open_is_skipped_and_named() {
        let results = vec![
            (adapter("NVIDIA H200", "NVIDIA", 32, 32), Ok(1)),
            (adapter("NVIDIA H200/PCIe/SSE2", "", 32, 32), broken()),
            (adapter("llvmpipe", "llvmpipe", 8, 8), Ok(3)),
        ];
        let (kept, skipped) = keep_opened(results).unwrap();
        assert_eq!(kept, [1, 3]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].starts_with("NVIDIA H200/PCIe/SSE2 (Vulkan): ")
                && skipped[0].contains("Parent device is lost"),
            "{skipped:?}"
        );
    }

    /// When no adapter opens, or none exists, running on every adapter is an error that says
    /// why: a GPU test must never pass without running.
    #[test]
    fn no_adapter_that_opens_is_an_error() {
        let e = keep_opened(vec![
            (adapter("GL one", "", 32, 32), broken()),
            (adapter("GL two", "", 32, 32), broken()),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("2 enumerated, none opened"), "{e}");
        assert!(
            e.contains("GL one (Vulkan)") && e.contains("GL two (Vulkan)"),
            "{e}"
        );
        assert!(e.contains("Parent device is lost"), "{e}");
        let e = keep_opened::<u32>(Vec::new()).unwrap_err().to_string();
        assert!(e.contains("none enumerated"), "{e}");
        assert!(e.contains("mesa-vulkan-drivers"), "the hint is given: {e}");
    }

    /// One fixed size is used, at every size adapters have (4 on mobile, 8 to 32 on Intel, 32
    /// on NVIDIA and Apple, 64 on AMD GCN or wave64).
    #[test]
    fn a_fixed_subgroup_size_is_used_at_every_size() {
        for size in [4, 8, 16, 32, 64, 128] {
            let info = adapter("Some GPU", "vendor driver", size, size);
            assert_eq!(usable_subgroup_size(&info, true), Ok(size), "size {size}");
            // ... but never without the feature.
            let e = usable_subgroup_size(&info, false).unwrap_err();
            assert!(e.contains("no Features::SUBGROUP"), "{e}");
        }
    }

    /// A size that varies at run time (min != max) is never relied on: the subgroup strategy
    /// is refused and the others serve.
    #[test]
    fn a_subgroup_size_that_varies_is_refused() {
        for (min, max) in [(8, 32), (32, 64), (4, 64), (16, 32)] {
            let info = adapter("Intel or AMD", "vendor driver", min, max);
            let e = usable_subgroup_size(&info, true).unwrap_err();
            assert!(e.contains(&format!("varies from {min} to {max}")), "{e}");
        }
    }

    #[test]
    fn an_impossible_subgroup_size_is_refused() {
        for size in [0, 3, 48, 256] {
            let info = adapter("Odd GPU", "vendor driver", size, size);
            assert!(usable_subgroup_size(&info, true).is_err(), "size {size}");
        }
    }

    /// llvmpipe runs at most 16 lanes per subgroup whatever it reports (LLVMPIPE_MAX_SUBGROUP):
    /// its 32 and 64 (LP_NATIVE_VECTOR_WIDTH=1024, 2048) are refused, its 4, 8 and 16 kept.
    #[test]
    fn llvmpipe_is_trusted_up_to_16_lanes() {
        for (size, ok) in [(4, true), (8, true), (16, true), (32, false), (64, false)] {
            let bits = 32 * size;
            for (name, driver) in [
                (format!("llvmpipe (LLVM 15.0.6, {bits} bits)"), "llvmpipe"),
                (format!("LLVMPIPE (LLVM 15.0.6, {bits} bits)"), ""),
                ("software".to_string(), "llvmpipe"),
            ] {
                let got = usable_subgroup_size(&adapter(&name, driver, size, size), true);
                if ok {
                    assert_eq!(got, Ok(size), "{name} / {driver}");
                } else {
                    let e = got.unwrap_err();
                    assert!(e.contains(&format!("reports {size}-lane")), "{e}");
                    assert!(
                        e.contains("Mesa 22.3.6"),
                        "the driver version is named: {e}"
                    );
                }
            }
        }
        // The rule is llvmpipe's: a GPU's 32 or 64 lanes are used.
        for size in [32, 64] {
            let info = adapter("AMD Radeon RX 7900 XTX (RADV NAVI31)", "radv", size, size);
            assert_eq!(usable_subgroup_size(&info, true), Ok(size));
        }
    }
}
