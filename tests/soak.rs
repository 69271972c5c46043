//! Long-running tests, all `#[ignore]`d so that `cargo test --release` stays fast. Run them
//! with `cargo test --release --test soak -- --ignored --nocapture --test-threads 1`
//! (one at a time: each measures memory or time), or one by name. TESTING.md holds the
//! figures of the last run.
//!
//! - `a_host_batch_over_2_gib_matches_the_reference`: 2100 x 262144 f32 logits (2.2 GB, more
//!   than 2^31 bytes) through the host API on lavapipe, which splits it into 128 MiB chunks;
//!   sampled rows against the reference.
//! - `a_device_buffer_of_almost_2_gib_matches_the_reference`: the device API on one buffer
//!   of 2047 x 262144 f32 (2 GiB less 1 MiB: lavapipe's `max_buffer_size` is 2^31 - 1),
//!   in place, so the chunks are bound at byte offsets up to 2 GiB.
//! - `thousands_of_mixed_calls_do_not_grow_memory`: mixed shapes, options, strategies and
//!   APIs in a loop, VmRSS after a warm-up and after N calls.
//! - `eight_threads_hammer_one_context`: eight threads, many calls each, mixed strategies,
//!   host and device API, on one context per adapter; every result checked.
//!
//! Knobs: `ML_SOFTMAX_SOAK_CALLS` (default 7000), `ML_SOFTMAX_THREAD_CALLS` (per thread,
//! default 2000), `ML_SOFTMAX_SEED` (the data).

mod common;

use std::time::Instant;

use common::{Rng, assert_close, assert_output_close, contexts, vm_hwm_kib, vm_rss_kib};
use ml_softmax::kernels::geometry::cached_max_cols;
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{
    Context, CrossEntropyOptions, CrossEntropyOutput, DeviceCrossEntropy, DeviceTargets, Precision,
    Reduction, Strategy, Targets, reference,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn describe(ctx: &Context) -> String {
    let info = ctx.adapter_info();
    format!("{} ({:?})", info.name, info.backend)
}

/// The Vulkan adapter (lavapipe in CI), where the big-buffer tests run.
fn vulkan() -> &'static Context {
    contexts()
        .iter()
        .find(|c| c.adapter_info().backend == wgpu::Backend::Vulkan)
        .expect("the >2 GiB tests run on a Vulkan adapter (lavapipe): none found")
}

/// Logits of one big row, drawn from a seed of its own so that a sampled row can be
/// regenerated without keeping the whole batch (uniform in [-4, 4]: cheap to draw).
fn big_row(seed: u64, row: usize, out: &mut [f32]) {
    let mut rng = Rng::seeded(seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for x in out {
        *x = ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0;
    }
}

/// The rows to check in a batch of `rows` split every `chunk_rows`: both ends, both sides of
/// every chunk boundary, and a few drawn at random.
fn sample_rows(rows: usize, chunk_rows: usize, rng: &mut Rng) -> Vec<usize> {
    let mut sample = vec![0, 1, rows - 2, rows - 1];
    let mut b = chunk_rows;
    while b < rows {
        sample.extend([b - 1, b]);
        b += chunk_rows;
    }
    sample.extend((0..8).map(|_| rng.below(rows)));
    sample.sort_unstable();
    sample.dedup();
    sample
}

/// Rows per chunk of the library for `cols` columns (its rule: whole rows in one binding,
/// less the offset alignment).
fn chunk_rows(ctx: &Context, cols: usize) -> usize {
    let limits = ctx.device().limits();
    let budget = limits.max_storage_buffer_binding_size
        - u64::from(limits.min_storage_buffer_offset_alignment);
    (budget / (4 * cols as u64)).max(1) as usize
}

/// One row of a mean over `denominator` rows, from the reference on that row alone (a Sum,
/// scaled here), against the GPU's row.
#[allow(clippy::too_many_arguments)]
fn check_sampled_row(
    what: &str,
    z: &[f32],
    label: i64,
    denominator: f64,
    gpu_grad: &[f32],
    gpu_row_loss: f32,
    gpu_lse: f32,
) {
    let cols = z.len();
    let sum = CrossEntropyOptions {
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let cpu = reference::cross_entropy(z, &[label], 1, cols, &sum).unwrap();
    let want: Vec<f32> = cpu
        .grad
        .iter()
        .map(|&g| (f64::from(g) / denominator) as f32)
        .collect();
    let scale = (1.0 / denominator) as f32;
    assert_close(&format!("{what} lse"), &[gpu_lse], &cpu.lse, 1e-5, 1e-5);
    assert_close(
        &format!("{what} row_loss"),
        &[gpu_row_loss],
        &cpu.row_loss,
        1e-5,
        1e-5,
    );
    assert_close(&format!("{what} grad"), gpu_grad, &want, 2e-6 * scale, 1e-4);
}

// ------------------------------------------------------------------------ over 2 GiB, host

/// 2100 x 262144 logits = 2,202,009,600 bytes (> 2^31) through the host API on lavapipe:
/// split into 128 MiB chunks of 127 rows (17 chunks), with the output poisoned (NaN) before
/// each chunk. Checks: every gradient element finite (nothing left unwritten), sampled rows
/// (both sides of every chunk boundary) against the reference, the mean against the GPU's
/// own row losses.
#[test]
#[ignore = "slow: ~2.2 GB of logits on lavapipe, ~5 GB of RAM; see TESTING.md"]
fn a_host_batch_over_2_gib_matches_the_reference() {
    let ctx = vulkan();
    let (rows, cols) = (2100usize, 262_144usize);
    let n = rows * cols;
    assert!(n * 4 > 1 << 31);
    let seed = 0x5eed;
    let rss0 = vm_rss_kib();
    let t = Instant::now();
    let mut logits = vec![0.0f32; n];
    for (r, row) in logits.chunks_mut(cols).enumerate() {
        big_row(seed, r, row);
    }
    let mut rng = Rng::new("over 2 GiB");
    let mut labels = rng.labels(rows, cols);
    labels[5] = -100; // one ignored row: D = rows - 1
    let gen_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let out = ctx
        .cross_entropy(
            &logits,
            &labels,
            rows,
            cols,
            &CrossEntropyOptions::default(),
        )
        .unwrap();
    let gpu_s = t.elapsed().as_secs_f64();
    let rss_peak = vm_hwm_kib();

    let t = Instant::now();
    assert_eq!(out.grad.len(), n);
    let bad = out.grad.iter().position(|g| !g.is_finite());
    assert!(bad.is_none(), "grad[{bad:?}] is not finite");
    let denominator = (rows - 1) as f64;
    let chunk = chunk_rows(ctx, cols);
    let sample = sample_rows(rows, chunk, &mut rng);
    for &r in &sample {
        let z = &logits[r * cols..][..cols];
        let g = &out.grad[r * cols..][..cols];
        let what = format!("row {r}");
        if labels[r] == -100 {
            assert!(
                g.iter().all(|&x| x == 0.0) && out.row_loss[r] == 0.0,
                "{what}"
            );
        } else {
            check_sampled_row(
                &what,
                z,
                labels[r],
                denominator,
                g,
                out.row_loss[r],
                out.lse[r],
            );
        }
    }
    let mean: f64 = out.row_loss.iter().map(|&l| f64::from(l)).sum::<f64>() / denominator;
    assert_close("mean loss", &[out.loss], &[mean as f32], 1e-6, 1e-5);
    println!(
        "{}: {rows} x {cols} = {} bytes of logits, {} chunks of {chunk} rows; generate {gen_s:.1} s, \
         GPU call {gpu_s:.1} s, checks {:.1} s ({} rows sampled); RSS before {}, peak {}; loss {}",
        describe(ctx),
        n * 4,
        rows.div_ceil(chunk),
        t.elapsed().as_secs_f64(),
        sample.len(),
        mib(rss0),
        mib(rss_peak),
        out.loss,
    );
}

// ---------------------------------------------------------------------- ~2 GiB, device API

/// One device buffer of 2047 x 262144 f32 = 2 GiB - 1 MiB (lavapipe's max_buffer_size is
/// 2^31 - 1), gradient written in place, generated straight into the mapped buffer (no host
/// copy of the batch). The library binds it in 128 MiB chunks at byte offsets up to 2 GiB;
/// sampled rows (both sides of every chunk boundary) are read back and checked.
#[test]
#[ignore = "slow: a 2 GiB buffer on lavapipe, ~3 GB of RAM; see TESTING.md"]
fn a_device_buffer_of_almost_2_gib_matches_the_reference() {
    let ctx = vulkan();
    let d = ctx.device();
    let (rows, cols) = (2047usize, 262_144usize);
    let bytes = (rows * cols * 4) as u64;
    assert!(
        bytes <= d.limits().max_buffer_size,
        "{bytes} > max_buffer_size"
    );
    let seed = 0xb16;
    let rss0 = vm_rss_kib();
    let t = Instant::now();
    let logits = d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("2 GiB logits"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    });
    {
        // Mapped memory is write-only in wgpu: draw a row, copy it in.
        let mut view = logits.get_mapped_range_mut(..).unwrap();
        let mut row = vec![0.0f32; cols];
        for r in 0..rows {
            big_row(seed, r, &mut row);
            let at = r * cols * 4;
            view.slice(at..at + cols * 4)
                .copy_from_slice(bytemuck::cast_slice(&row));
        }
    }
    logits.unmap();
    let mut rng = Rng::new("2 GiB device");
    let labels = rng.labels(rows, cols);
    let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
    let init = |label, contents: &[u8], usage| {
        d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    };
    use wgpu::BufferUsages as U;
    let nan = vec![f32::NAN; rows];
    let labels_buf = init("labels", bytemuck::cast_slice(&labels32), U::STORAGE);
    let loss = init(
        "loss",
        bytemuck::cast_slice(&[f32::NAN]),
        U::COPY_DST | U::COPY_SRC,
    );
    let row_loss = init(
        "row_loss",
        bytemuck::cast_slice(&nan),
        U::STORAGE | U::COPY_SRC,
    );
    let lse = init("lse", bytemuck::cast_slice(&nan), U::STORAGE | U::COPY_SRC);
    let gen_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let bufs = DeviceCrossEntropy {
        logits: logits.slice(..),
        precision: Precision::F32,
        targets: DeviceTargets::Classes(labels_buf.slice(..)),
        grad: None,
        loss: Some(loss.slice(..)),
        row_loss: Some(row_loss.slice(..)),
        lse: Some(lse.slice(..)),
        upstream: None,
    };
    ctx.cross_entropy_device(
        &bufs,
        rows,
        cols,
        &CrossEntropyOptions::default(),
        Strategy::Auto,
    )
    .unwrap();
    let loss = read_range(ctx, &loss, 0, 1)[0];
    let gpu_s = t.elapsed().as_secs_f64();
    let row_loss = read_range(ctx, &row_loss, 0, rows);
    let lse = read_range(ctx, &lse, 0, rows);
    let rss_peak = vm_hwm_kib();

    let chunk = chunk_rows(ctx, cols);
    let sample = sample_rows(rows, chunk, &mut rng);
    let mut z = vec![0.0f32; cols];
    for &r in &sample {
        big_row(seed, r, &mut z);
        let g = read_range(ctx, &logits, r * cols, cols);
        check_sampled_row(
            &format!("row {r}"),
            &z,
            labels[r],
            rows as f64,
            &g,
            row_loss[r],
            lse[r],
        );
    }
    assert!(
        row_loss.iter().all(|l| l.is_finite()),
        "a row loss was not written"
    );
    let mean: f64 = row_loss.iter().map(|&l| f64::from(l)).sum::<f64>() / rows as f64;
    assert_close("mean loss", &[loss], &[mean as f32], 1e-6, 1e-5);
    println!(
        "{}: device buffer of {bytes} bytes ({rows} x {cols}), in place, {} chunks of {chunk} rows; \
         generate {gen_s:.1} s, GPU call + loss readback {gpu_s:.1} s; {} rows sampled; \
         RSS before {}, peak {}; loss {loss}",
        describe(ctx),
        rows.div_ceil(chunk),
        sample.len(),
        mib(rss0),
        mib(rss_peak),
    );
}

// ------------------------------------------------------------- mixed calls: shared helpers

/// One random call: a shape, options from the ones users combine, data, a strategy, an API.
struct Call {
    rows: usize,
    cols: usize,
    logits: Vec<f32>,
    labels: Vec<i64>,
    targets: Vec<f32>,
    options: CrossEntropyOptions,
    strategy: Strategy,
    api: Api,
}

#[derive(Debug, Clone, Copy)]
enum Api {
    Host,
    HostProbs,
    Softmax { log: bool },
    Device { in_place: bool },
    DeviceSoftmax { in_place: bool },
}

impl Call {
    /// Shapes up to `max_rows` x `max_cols`, skewed to small ones (log-uniform).
    fn draw(rng: &mut Rng, ctx: &Context, max_rows: usize, max_cols: usize) -> Self {
        let log_uniform = |rng: &mut Rng, max: usize| -> usize {
            let x = (max as f64).ln() * rng.uniform();
            (x.exp() as usize).clamp(1, max)
        };
        let rows = log_uniform(rng, max_rows);
        let cols = log_uniform(rng, max_cols);
        Self::draw_shape(rng, ctx, rows, cols)
    }

    /// A call of the given shape; options, data, strategy and API drawn.
    fn draw_shape(rng: &mut Rng, ctx: &Context, rows: usize, cols: usize) -> Self {
        let logits = rng.logits(rows * cols, 2.0);
        let mut labels = rng.labels(rows, cols);
        let mut options = CrossEntropyOptions {
            reduction: [Reduction::Mean, Reduction::Sum, Reduction::None][rng.below(3)],
            ..Default::default()
        };
        if rng.below(3) == 0 {
            options.label_smoothing = 0.1;
        }
        if rng.below(3) == 0 {
            options.weight = Some(
                (0..cols)
                    .map(|_| 0.25 + 2.0 * rng.uniform() as f32)
                    .collect(),
            );
        }
        if rng.below(4) == 0 {
            options.z_loss = 1e-3;
        }
        if rng.below(4) == 0 {
            options.softcap = 3.0;
        }
        if rng.below(4) == 0 && rows > 1 {
            labels[0] = -100; // an ignored row
        }
        let mut targets: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() as f32).collect();
        for row in targets.chunks_mut(cols) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|t| *t /= s);
        }
        // (Cached holds rows of at most 64 columns per lane.)
        let mut strategies: Vec<Strategy> = Strategy::all(ctx.has_subgroups())
            .into_iter()
            .filter(|s| !matches!(s, Strategy::Cached { lanes } if cols > cached_max_cols(*lanes) as usize))
            .collect();
        strategies.push(Strategy::Auto);
        let strategy = strategies[rng.below(strategies.len())];
        let api = match rng.below(8) {
            0..=2 => Api::Host,
            3 => Api::HostProbs,
            4 => Api::Softmax {
                log: rng.below(2) == 0,
            },
            5 | 6 => Api::Device {
                in_place: rng.below(2) == 0,
            },
            _ => Api::DeviceSoftmax {
                in_place: rng.below(2) == 0,
            },
        };
        Call {
            rows,
            cols,
            logits,
            labels,
            targets,
            options,
            strategy,
            api,
        }
    }

    /// Runs the call; with `check`, compares it with the reference.
    fn run(&self, ctx: &Context, check: bool) {
        let (rows, cols) = (self.rows, self.cols);
        let what = format!(
            "{} {rows}x{cols} {} {:?}",
            describe(ctx),
            self.strategy,
            self.api
        );
        let scale = if self.options.reduction == Reduction::Mean {
            1.0 / rows as f32
        } else {
            1.0
        };
        match self.api {
            Api::Host | Api::HostProbs | Api::Device { .. } => {
                let probs = matches!(self.api, Api::HostProbs);
                let gpu = match self.api {
                    Api::Device { in_place } => self.device(ctx, in_place),
                    _ => {
                        let targets = if probs {
                            Targets::Probabilities(&self.targets)
                        } else {
                            Targets::Classes(&self.labels)
                        };
                        ctx.cross_entropy_targets(
                            &self.logits,
                            targets,
                            rows,
                            cols,
                            &self.options,
                            self.strategy,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}"))
                    }
                };
                if check {
                    let cpu = if probs {
                        reference::cross_entropy_probs(
                            &self.logits,
                            &self.targets,
                            rows,
                            cols,
                            &self.options,
                        )
                    } else {
                        reference::cross_entropy(
                            &self.logits,
                            &self.labels,
                            rows,
                            cols,
                            &self.options,
                        )
                    }
                    .unwrap();
                    assert_output_close(&what, &gpu, &cpu, scale);
                }
            }
            Api::Softmax { .. } | Api::DeviceSoftmax { .. } => {
                let (got, log) = match self.api {
                    Api::DeviceSoftmax { in_place } => (self.device_softmax(ctx, in_place), false),
                    Api::Softmax { log } => (
                        ctx.softmax_with(
                            &self.logits,
                            rows,
                            cols,
                            common::softmax_kind(log),
                            self.strategy,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}")),
                        log,
                    ),
                    _ => unreachable!(),
                };
                if check {
                    if log {
                        let want = reference::log_softmax(&self.logits, rows, cols).unwrap();
                        assert_close(&what, &got, &want, 1e-5, 1e-5);
                    } else {
                        let want = reference::softmax(&self.logits, rows, cols).unwrap();
                        assert_close(&what, &got, &want, 1e-7, 1e-4);
                    }
                }
            }
        }
    }

    fn device(&self, ctx: &Context, in_place: bool) -> CrossEntropyOutput {
        let (rows, cols) = (self.rows, self.cols);
        let labels: Vec<i32> = self.labels.iter().map(|&y| y as i32).collect();
        let nan = |n: usize| vec![f32::NAN; n];
        let logits = storage(ctx, &self.logits);
        let grad = storage(ctx, &nan(rows * cols));
        let labels = buffer_with(
            ctx,
            bytemuck::cast_slice(&labels),
            wgpu::BufferUsages::STORAGE,
        );
        let loss = buffer_with(
            ctx,
            bytemuck::cast_slice(&nan(1)),
            wgpu::BufferUsages::COPY_SRC,
        );
        let row_loss = storage(ctx, &nan(rows));
        let lse = storage(ctx, &nan(rows));
        let bufs = DeviceCrossEntropy {
            logits: logits.slice(..),
            precision: Precision::F32,
            targets: DeviceTargets::Classes(labels.slice(..)),
            grad: (!in_place).then(|| grad.slice(..)),
            loss: Some(loss.slice(..)),
            row_loss: Some(row_loss.slice(..)),
            lse: Some(lse.slice(..)),
            upstream: None,
        };
        ctx.cross_entropy_device(&bufs, rows, cols, &self.options, self.strategy)
            .unwrap_or_else(|e| panic!("device {rows}x{cols}: {e}"));
        CrossEntropyOutput {
            loss: read_range(ctx, &loss, 0, 1)[0],
            row_loss: read_range(ctx, &row_loss, 0, rows),
            lse: read_range(ctx, &lse, 0, rows),
            grad: read_range(ctx, if in_place { &logits } else { &grad }, 0, rows * cols),
        }
    }

    fn device_softmax(&self, ctx: &Context, in_place: bool) -> Vec<f32> {
        let n = self.rows * self.cols;
        let logits = storage(ctx, &self.logits);
        let out = storage(ctx, &vec![f32::NAN; n]);
        let bufs = ml_softmax::DeviceSoftmax {
            logits: logits.slice(..),
            out: (!in_place).then(|| out.slice(..)),
            precision: Precision::F32,
            kind: ml_softmax::SoftmaxKind::Softmax,
        };
        ctx.softmax_device(&bufs, self.rows, self.cols, self.strategy)
            .unwrap_or_else(|e| panic!("device softmax {}x{}: {e}", self.rows, self.cols));
        read_range(ctx, if in_place { &logits } else { &out }, 0, n)
    }
}

/// A buffer holding `bytes`, written through the queue (mapping at creation costs tens of
/// milliseconds per buffer on llvmpipe GL).
fn buffer_with(ctx: &Context, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("soak"),
        size: bytes.len() as u64,
        usage: usage | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue().write_buffer(&buffer, 0, bytes);
    buffer
}

fn storage(ctx: &Context, data: &[f32]) -> wgpu::Buffer {
    buffer_with(
        ctx,
        bytemuck::cast_slice(data),
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    )
}

/// Reads `len` f32 from element `first` of `buffer` (after the work that fills it).
fn read_range(ctx: &Context, buffer: &wgpu::Buffer, first: usize, len: usize) -> Vec<f32> {
    let d = ctx.device();
    let size = (len * 4) as u64;
    let staging = d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = d.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, (first * 4) as u64, &staging, 0, size);
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let v = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).unwrap());
    staging.unmap();
    v
}

// ---------------------------------------------------------------------------------- soak

/// VmRSS once freed heap memory is handed back to the system (glibc `malloc_trim`), so that
/// what is measured is what is live, not what the allocator keeps cached.
fn settled_rss_kib() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it is thread-safe.
        unsafe {
            malloc_trim(0);
        }
    }
    vm_rss_kib()
}

/// Kinds of call in the memory soak (each an adapter, a shape and a seed for the rest).
const SOAK_KINDS: usize = 96;

/// The shapes of the soak: a fixed menu, so that every pool (the library's host buffer
/// sets, wgpu's memory blocks, the driver's) has seen every size by the end of the warm-up,
/// and what grows afterwards is a leak. From 1 x 1 to 8 MiB, rows past the split layout's
/// 16384-column chunks, rows past 256 (the batch sum's lanes).
const SOAK_SHAPES: [(usize, usize); 12] = [
    (1, 1),
    (1, 7),
    (3, 1000),
    (257, 33),
    (33, 517),
    (100, 4096),
    (1024, 1000),
    (8, 50257),
    (16, 32000),
    (3, 131072),
    (2, 262144),
    (256, 8192),
];

/// Thousands of calls drawn from 96 kinds of call over a menu of 12 shapes (1 x 1 to
/// 256 x 8192), each kind with its own options, strategy and API (host, probability targets,
/// softmax, device, in place), on either adapter; every 16th call is checked against the
/// reference. RSS (after `malloc_trim`) after a warm-up that runs every kind twice, and then
/// at 20 checkpoints, all printed, with the number of cached pipelines (which must not grow
/// after the warm-up). The floor of the last quarter of checkpoints must not exceed
/// the floor of the second quarter by more than 48 MiB (the checkpoints scatter over ~70 MiB
/// with buffers in flight): with the default N = 7000 calls (about two minutes here), a leak
/// of more than ~14 KiB per call fails; raise N to see smaller ones.
#[test]
#[ignore = "slow: minutes; see TESTING.md"]
fn thousands_of_mixed_calls_do_not_grow_memory() {
    let calls = env_usize("ML_SOFTMAX_SOAK_CALLS", 7000);
    let ctxs = contexts();
    let mut rng = Rng::new("soak");
    // A menu of call kinds (adapter, shape, and the seed that draws options, strategy, API
    // and data). Every kind runs twice in the warm-up, which builds every pipeline the soak
    // needs: a context keeps each pipeline it builds (about 2 MB each on lavapipe), and new
    // ones appearing during the measurement would look like a leak (they did, once the
    // strategies and io files multiplied: 305 -> 731 pipelines over a 7000-call run).
    let kinds: Vec<(usize, (usize, usize), u64)> = (0..SOAK_KINDS)
        .map(|k| {
            let shape = SOAK_SHAPES[rng.below(SOAK_SHAPES.len())];
            (k % ctxs.len(), shape, rng.next_u64())
        })
        .collect();
    let rss_start = settled_rss_kib();
    let t = Instant::now();
    let run = |i: usize, kind: usize| {
        let (c, (rows, cols), seed) = kinds[kind];
        let ctx = &ctxs[c];
        let call = Call::draw_shape(&mut Rng::seeded(seed), ctx, rows, cols);
        call.run(ctx, i.is_multiple_of(16));
    };
    let warmup = 2 * kinds.len();
    for i in 0..warmup {
        run(i, i % kinds.len());
    }
    let warm_s = t.elapsed().as_secs_f64();
    let rss_warm = settled_rss_kib();
    let t = Instant::now();
    let mut checkpoints = Vec::new();
    let pipelines = || ctxs.iter().map(Context::cached_pipelines).sum::<usize>();
    let pipelines_warm = pipelines();
    let mut pipeline_counts = Vec::new();
    for i in 0..calls {
        run(warmup + i, rng.below(kinds.len()));
        if (i + 1) % (calls / 20).max(1) == 0 {
            checkpoints.push(settled_rss_kib().unwrap_or(0));
            pipeline_counts.push(pipelines());
        }
    }
    let soak_s = t.elapsed().as_secs_f64();
    let rss_end = settled_rss_kib();
    println!(
        "soak on {}: {warmup} warm-up calls ({warm_s:.1} s), then {calls} calls in {soak_s:.1} s; \
         RSS at start {}, after warm-up {}, after the calls {}, peak {}",
        ctxs.iter().map(describe).collect::<Vec<_>>().join(" + "),
        mib(rss_start),
        mib(rss_warm),
        mib(rss_end),
        mib(vm_hwm_kib()),
    );
    println!(
        "RSS checkpoints (MiB): {:?}",
        checkpoints
            .iter()
            .map(|k| (*k as f64 / 1024.0).round())
            .collect::<Vec<_>>()
    );
    println!("pipelines cached: {pipelines_warm} after warm-up, then {pipeline_counts:?}");
    let q = (checkpoints.len() / 4).max(1);
    let second = *checkpoints[q..2 * q].iter().min().unwrap();
    let last = *checkpoints[checkpoints.len() - q..].iter().min().unwrap();
    let per_call = (last as f64 - second as f64) * 1024.0 / (calls as f64 / 2.0);
    println!(
        "RSS floor, second quarter {} -> last quarter {} ({per_call:+.0} bytes per call)",
        mib(Some(second)),
        mib(Some(last))
    );
    assert_eq!(
        pipeline_counts.last(),
        Some(&pipelines_warm),
        "the warm-up must build every pipeline the soak uses"
    );
    assert!(
        last <= second + 48 * 1024,
        "RSS floor grew from {second} KiB to {last} KiB over the second half of {calls} calls"
    );
}

// --------------------------------------------------------------------------- eight threads

/// Eight threads share one context per adapter; each makes many calls of its own shapes
/// (up to 128 x 2048), strategies, options and APIs (host, probabilities, softmax, device,
/// in place), and checks every result against the reference.
#[test]
#[ignore = "slow: ~1-2 minutes; see TESTING.md"]
fn eight_threads_hammer_one_context() {
    let per_thread = env_usize("ML_SOFTMAX_THREAD_CALLS", 2000);
    for ctx in contexts() {
        let t = Instant::now();
        std::thread::scope(|s| {
            for thread in 0..8 {
                s.spawn(move || {
                    let mut rng = Rng::new(&format!("thread {thread}"));
                    for _ in 0..per_thread {
                        let call = Call::draw(&mut rng, ctx, 128, 2048);
                        call.run(ctx, true);
                    }
                });
            }
        });
        println!(
            "{}: 8 threads x {per_thread} calls, all checked, in {:.1} s",
            describe(ctx),
            t.elapsed().as_secs_f64()
        );
    }
}
