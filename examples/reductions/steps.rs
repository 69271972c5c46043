//! The steps of docs/reductions.md: each step's WGSL file, how it is dispatched, what stops
//! it on an adapter, and the check of its outputs against the f64 reference. Shared by
//! `examples/reductions.rs` (the table and the plot), `tests/reductions.rs` and the browser
//! page (`web/src/guide.rs`, compiled to wasm32): the check is async ([`check_async`], built
//! on `Context::read_back_async`), so that a page can await it; native callers block on it
//! through [`check`].
//!
//! Every step computes, for each row r of `logits [rows, cols]` with label `labels[r]`,
//! `grad = softmax(z) - onehot(y)` (`[rows, cols]`) and `loss[r] = -log softmax(z)_y`: the
//! cross-entropy with `Reduction::None`. Step 6 is the crate itself.
#![allow(dead_code)] // the test, the example and the page each use a part

use ml_softmax::kernels::software::SOFTWARE_LOOP_TURNS;
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{Context, CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets, Strategy};
use ml_softmax::{Reduction, reference};

/// How a step's kernel is laid out: what the host must check and dispatch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// One thread per row; `passes` passes over the row.
    ThreadPerRow { passes: u64 },
    /// One workgroup of 256 lanes per row; `width` floats per load (1 or 4).
    Workgroup { width: u64 },
    /// One subgroup per row (workgroup = one subgroup), vec4 loads.
    Subgroup,
    /// Rows split into chunks of `chunk` columns, a workgroup each, two dispatches.
    Split,
    /// The crate's own kernels (`Strategy::Auto`).
    Production,
}

pub struct Step {
    pub name: &'static str,
    pub title: &'static str,
    /// The WGSL file under examples/reductions/ (empty for the production step).
    pub file: &'static str,
    /// That file's text: what the step teaches, after [`COMMON`] (and [`THREAD_ROW`] or
    /// [`TREE`] where `fragments` says so), which the host puts in front of it.
    pub source: &'static str,
    /// The shared fragments the step needs, in order, before `source`.
    pub fragments: &'static [&'static str],
    pub entry_points: &'static [&'static str],
    pub kind: Kind,
}

/// `common.wgsl`: the bindings, `Params` and helpers every step shares.
pub const COMMON: &str = include_str!("common.wgsl");
/// `thread_row.wgsl`: the thread-per-row frame (entry point, gradient pass) of steps 1 and 2.
pub const THREAD_ROW: &str = include_str!("thread_row.wgsl");
/// `tree.wgsl`: step 3's workgroup tree, for the workgroup steps (3, 3v, 5).
pub const TREE: &str = include_str!("tree.wgsl");

impl Step {
    /// The WGSL module the host builds: the step's fragments, then its file (as the library
    /// composes its shaders: fragments joined, no text rewritten).
    pub fn module_source(&self) -> String {
        let mut text = String::new();
        for fragment in self.fragments.iter().chain([&self.source]) {
            text.push_str(fragment);
            text.push('\n');
        }
        text
    }
}

/// One guide step from its WGSL file under examples/reductions/.
macro_rules! step {
    ($name:literal, $title:literal, $file:literal, $fragments:expr, $entries:expr, $kind:expr) => {
        Step {
            name: $name,
            title: $title,
            file: $file,
            source: include_str!($file),
            fragments: $fragments,
            entry_points: $entries,
            kind: $kind,
        }
    };
}

pub const STEPS: [Step; 7] = [
    step! { "1", "thread per row, 3 passes", "step1_three_passes.wgsl", &[COMMON, THREAD_ROW],
    &["main"], Kind::ThreadPerRow { passes: 3 } },
    step! { "2", "thread per row, online", "step2_online.wgsl", &[COMMON, THREAD_ROW],
    &["main"], Kind::ThreadPerRow { passes: 2 } },
    step! { "3", "workgroup tree", "step3_workgroup_tree.wgsl", &[COMMON, TREE], &["main"],
    Kind::Workgroup { width: 1 } },
    step! { "3v", "workgroup tree, vec4", "step3v_vec4.wgsl", &[COMMON, TREE], &["main"],
    Kind::Workgroup { width: 4 } },
    step! { "4", "subgroup per row, vec4", "step4_subgroup.wgsl", &[COMMON], &["main"],
    Kind::Subgroup },
    step! { "5", "split row, merged (m, d)", "step5_split.wgsl", &[COMMON, TREE],
    &["stats", "write_grad"], Kind::Split },
    Step {
        name: "6",
        title: "production (auto)",
        file: "",
        source: "",
        fragments: &[],
        entry_points: &[],
        kind: Kind::Production,
    },
];

/// Lanes of the workgroup steps (3, 3v, 5).
pub const LANES: u64 = 256;
/// Columns per workgroup of step 5 by default: 16,384, as the crate's split layout
/// (`ml_softmax::kernels::geometry::SPLIT_CHUNK_COLS`).
pub const SPLIT_CHUNK: u32 = 16384;
/// Most workgroups along one dimension of a dispatch.
const MAX_GRID: u64 = 65535;

/// Why a step does not run at a shape on an adapter.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// A software adapter (llvmpipe) ends an invocation's loops after 65,535 turns in all.
    LoopLimit { turns: u64 },
    /// The vec4 steps need whole vectors per row.
    NeedsVec4,
    /// No usable subgroups (the reason given by the crate).
    NoSubgroups(String),
    /// More rows than one dispatch dimension holds (the guide's kernels do not go 2-D).
    TooManyRows,
    /// More bytes than one storage binding of the device takes.
    TooBig,
    /// The crate's own error (step 6).
    Crate(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::LoopLimit { turns } => write!(
                f,
                "needs {turns} loop turns per invocation; llvmpipe stops at {SOFTWARE_LOOP_TURNS}"
            ),
            Refusal::NeedsVec4 => write!(f, "needs cols % 4 == 0"),
            Refusal::NoSubgroups(why) => write!(f, "no subgroups: {why}"),
            Refusal::TooManyRows => write!(f, "more than 65,535 row workgroups"),
            Refusal::TooBig => write!(f, "larger than one storage binding"),
            Refusal::Crate(e) => write!(f, "{e}"),
        }
    }
}

impl From<ml_softmax::Error> for Refusal {
    fn from(e: ml_softmax::Error) -> Self {
        Refusal::Crate(e.to_string())
    }
}

/// Whether llvmpipe's loop limit holds on the adapter. Natively: on every software (CPU)
/// adapter, as the crate assumes (lavapipe and llvmpipe GL are those seen). In a browser: only
/// on one that names itself llvmpipe; the browser's own CPU adapter, Chromium's SwiftShader,
/// has no such limit (steps 1 and 2 ran right there at 4 x 40,000, 120,000 turns).
pub fn software(ctx: &Context) -> bool {
    let info = ctx.adapter_info();
    if cfg!(target_arch = "wasm32") {
        info.name.to_lowercase().contains("llvmpipe")
    } else {
        info.device_type == wgpu::DeviceType::Cpu
    }
}

/// Loop turns one invocation of `kind` takes for a row of `cols` columns (an upper bound):
/// the strided loops of each pass, plus 8 rounds of a 256-lane tree.
pub fn loop_turns(kind: Kind, cols: u64, subgroup: u64, chunk: u64) -> u64 {
    match kind {
        Kind::ThreadPerRow { passes } => passes * cols,
        Kind::Workgroup { width } => 2 * cols.div_ceil(width * LANES) + 8,
        Kind::Subgroup => 2 * cols.div_ceil(4 * subgroup),
        // The write dispatch: the partials, a tree, its chunk.
        Kind::Split => cols.div_ceil(chunk).div_ceil(LANES) + 8 + chunk.div_ceil(4 * LANES),
        Kind::Production => 0,
    }
}

/// Random logits (normal, sigma 2) and labels, from a seed (SplitMix64 + Box-Muller).
pub struct Data {
    pub rows: usize,
    pub cols: usize,
    pub logits: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Data {
    pub fn random(rows: usize, cols: usize, seed: u64) -> Self {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut uniform = move || ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let mut logits = Vec::with_capacity(rows * cols);
        for _ in 0..rows * cols {
            let (u1, u2) = (uniform(), uniform());
            logits
                .push((2.0 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32);
        }
        let labels = (0..rows)
            .map(|_| ((uniform() * cols as f64) as usize).min(cols - 1) as i64)
            .collect();
        Data {
            rows,
            cols,
            logits,
            labels,
        }
    }
}

/// The device buffers of one shape, shared by every step. Sizes are padded to 32 bytes (the
/// crate's device API wants whole vectors).
pub struct Buffers {
    params: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    loss: wgpu::Buffer,
    partials: wgpu::Buffer,
    /// Bytes of the logits (and of the gradient).
    pub bytes: u64,
    rows: usize,
    cols: usize,
    chunk: u32,
}

/// The uniform block every step's WGSL reads (`struct Params` in common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    parts: u32,
    chunk: u32,
}

impl Buffers {
    /// `chunk`: step 5's columns per workgroup (a multiple of 4; [`SPLIT_CHUNK`] normally,
    /// smaller in the tests so that small rows split too).
    pub fn new(ctx: &Context, data: &Data, chunk: u32) -> Self {
        assert!(
            chunk.is_multiple_of(4) && chunk > 0,
            "the split chunk must be a multiple of 4"
        );
        let (rows, cols) = (data.rows, data.cols);
        let parts = cols.div_ceil(chunk as usize);
        let dev = ctx.device();
        let bytes = (rows * cols * 4) as u64;
        let padded = bytes.next_multiple_of(32);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let mut logits = bytemuck::cast_slice::<f32, u8>(&data.logits).to_vec();
        logits.resize(padded as usize, 0);
        let labels: Vec<i32> = data.labels.iter().map(|&y| y as i32).collect();
        let init = |label, contents: &[u8], usage| {
            dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let empty = |label, size: u64| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.next_multiple_of(32),
                usage,
                mapped_at_creation: false,
            })
        };
        let params = Params {
            rows: rows as u32,
            cols: cols as u32,
            parts: parts as u32,
            chunk,
        };
        Buffers {
            params: init(
                "params",
                bytemuck::bytes_of(&params),
                wgpu::BufferUsages::UNIFORM,
            ),
            logits: init("logits", &logits, usage),
            labels: init("labels", bytemuck::cast_slice(&labels), usage),
            grad: empty("grad", padded),
            loss: empty("loss", 4 * rows as u64),
            partials: empty("partials", 8 * (rows * parts) as u64),
            bytes,
            rows,
            cols,
            chunk,
        }
    }
}

impl Buffers {
    /// `(rows, cols)` of the shape.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The crate's device-API view of these buffers (step 6): f32 logits and class labels in,
    /// the gradient into `grad` and the per-row losses into `loss`.
    pub fn device(&self) -> DeviceCrossEntropy<'_> {
        DeviceCrossEntropy {
            logits: self.logits.slice(..),
            precision: ml_softmax::Precision::F32,
            targets: DeviceTargets::Classes(self.labels.slice(..)),
            grad: Some(self.grad.slice(..)),
            loss: None,
            row_loss: Some(self.loss.slice(..)),
            lse: None,
            upstream: None,
        }
    }
}

/// A step made ready for one shape: its pipelines, bind groups and grids, or the crate.
pub enum Prepared {
    Kernels(Vec<(wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))>),
    Production,
}

/// Builds `step` for the shape of `bufs` on `ctx`, or says why it cannot run there.
pub fn prepare(ctx: &Context, step: &Step, bufs: &Buffers) -> Result<Prepared, Refusal> {
    let (rows, cols) = (bufs.rows as u64, bufs.cols as u64);
    if step.kind == Kind::Production {
        return Ok(Prepared::Production);
    }
    if bufs.bytes > ctx.device().limits().max_storage_buffer_binding_size {
        return Err(Refusal::TooBig);
    }
    let vec4 = matches!(
        step.kind,
        Kind::Workgroup { width: 4 } | Kind::Subgroup | Kind::Split
    );
    if vec4 && cols % 4 != 0 {
        return Err(Refusal::NeedsVec4);
    }
    let subgroup = match step.kind {
        Kind::Subgroup => match ctx.subgroup_size() {
            Some(size) => u64::from(size),
            None => {
                let why = ctx.subgroup_refusal().unwrap_or("none reported");
                return Err(Refusal::NoSubgroups(why.to_string()));
            }
        },
        _ => 0,
    };
    let turns = loop_turns(step.kind, cols, subgroup, u64::from(bufs.chunk));
    if software(ctx) && turns > SOFTWARE_LOOP_TURNS {
        return Err(Refusal::LoopLimit { turns });
    }
    let parts = cols.div_ceil(u64::from(bufs.chunk));
    let grid = match step.kind {
        Kind::ThreadPerRow { .. } => (rows.div_ceil(64), 1),
        Kind::Split => (parts, rows),
        _ => (rows, 1),
    };
    if grid.0 > MAX_GRID || grid.1 > MAX_GRID {
        return Err(Refusal::TooManyRows);
    }
    let dev = ctx.device();
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(step.file),
        source: wgpu::ShaderSource::Wgsl(step.module_source().into()),
    });
    let constants = [("SG", subgroup as f64)];
    // The bindings every step's module declares (common.wgsl and the step's file): params
    // (uniform), logits and labels (read), grad and loss (read_write), and for step 5 the
    // partials (read_write).
    let mut buffers = vec![
        &bufs.params,
        &bufs.logits,
        &bufs.labels,
        &bufs.grad,
        &bufs.loss,
    ];
    if step.kind == Kind::Split {
        buffers.push(&bufs.partials);
    }
    let layout_entries: Vec<wgpu::BindGroupLayoutEntry> = (0..buffers.len() as u32)
        .map(|binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match binding {
                    0 => wgpu::BufferBindingType::Uniform,
                    1 | 2 => wgpu::BufferBindingType::Storage { read_only: true },
                    _ => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let bind_layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(step.file),
        entries: &layout_entries,
    });
    let layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(step.file),
        bind_group_layouts: &[Some(&bind_layout)],
        immediate_size: 0,
    });
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .into_iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(step.file),
        layout: &bind_layout,
        entries: &entries,
    });
    let mut kernels = Vec::new();
    for entry in step.entry_points {
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: if step.kind == Kind::Subgroup {
                    &constants
                } else {
                    &[]
                },
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        kernels.push((pipeline, bind.clone(), (grid.0 as u32, grid.1 as u32)));
    }
    Ok(Prepared::Kernels(kernels))
}

impl Prepared {
    /// Records the step's work into `encoder` (one compute pass per dispatch).
    pub fn record(
        &self,
        ctx: &Context,
        bufs: &Buffers,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<(), Refusal> {
        match self {
            Prepared::Kernels(kernels) => {
                for (pipeline, bind, (x, y)) in kernels {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind, &[]);
                    pass.dispatch_workgroups(*x, *y, 1);
                }
                Ok(())
            }
            Prepared::Production => {
                let options = CrossEntropyOptions {
                    reduction: Reduction::None,
                    ..Default::default()
                };
                let device = bufs.device();
                Ok(ctx.encode_cross_entropy(
                    encoder,
                    &device,
                    bufs.rows,
                    bufs.cols,
                    &options,
                    Strategy::Auto,
                )?)
            }
        }
    }
}

/// The largest differences from the f64 reference.
#[derive(Clone, Copy, Debug)]
pub struct Errors {
    /// max |grad - reference| over all elements.
    pub grad: f64,
    /// max |loss - reference| / max(1, |reference|) over the rows.
    pub loss: f64,
}

impl Errors {
    /// Within what f32 arithmetic allows: the gradient entries are probabilities (at most
    /// 1 in size), the losses are about log(cols).
    pub fn ok(&self) -> bool {
        self.grad <= 1e-5 && self.loss <= 1e-5
    }
}

/// Runs `step` once with NaN-poisoned outputs, reads grad and loss back and compares them
/// with `ml_softmax::reference::cross_entropy` (f64, `Reduction::None`). An element a step
/// leaves unwritten stays NaN, and a NaN makes the error infinite. Nothing in it blocks: the
/// readbacks are `Context::read_back_async`, so a browser page awaits it as it is.
pub async fn check_async(
    ctx: &Context,
    prepared: &Prepared,
    bufs: &Buffers,
    data: &Data,
) -> Result<Errors, Refusal> {
    let (dev, queue) = (ctx.device(), ctx.queue());
    queue.write_buffer(&bufs.grad, 0, &vec![0xFF; bufs.grad.size() as usize]);
    queue.write_buffer(&bufs.loss, 0, &vec![0xFF; bufs.loss.size() as usize]);
    let mut encoder = dev.create_command_encoder(&Default::default());
    prepared.record(ctx, bufs, &mut encoder)?;
    queue.submit([encoder.finish()]);
    // Each readback is copied after the work just submitted, so it sees the step's outputs.
    let grad = ctx.read_back_async(bufs.grad.slice(..bufs.bytes)).await?;
    let loss = ctx
        .read_back_async(bufs.loss.slice(..4 * bufs.rows as u64))
        .await?;
    let options = CrossEntropyOptions {
        reduction: Reduction::None,
        ..Default::default()
    };
    let want =
        reference::cross_entropy(&data.logits, &data.labels, data.rows, data.cols, &options)?;
    let worst = |got: &[u8], want: &[f32], rel: bool| {
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(got);
        got.iter().zip(want).fold(0.0f64, |acc, (&g, &w)| {
            let scale = if rel {
                f64::from(w.abs()).max(1.0)
            } else {
                1.0
            };
            let e = (f64::from(g) - f64::from(w)).abs() / scale;
            if e.is_nan() {
                f64::INFINITY
            } else {
                acc.max(e)
            }
        })
    };
    Ok(Errors {
        grad: worst(&grad, &want.grad, false),
        loss: worst(&loss, &want.row_loss, true),
    })
}

/// [`check_async`], blocking (native): polls it, and while it waits for the GPU, waits in
/// wgpu's blocking `device.poll` (no spinning). Not in a browser, where a page may not block.
#[cfg(not(target_arch = "wasm32"))]
pub fn check(
    ctx: &Context,
    prepared: &Prepared,
    bufs: &Buffers,
    data: &Data,
) -> Result<Errors, Refusal> {
    use std::task::{Poll, Waker};
    let mut future = std::pin::pin!(check_async(ctx, prepared, bufs, data));
    let mut cx = std::task::Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result;
        }
        ctx.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Refusal::Crate(format!("reading back: {e}")))?;
    }
}
