//! The host path's pipeline (issue 14 item 8): a call of several chunks alternates between
//! two buffer sets, uploading chunk k + 1 through mapped staging and reading chunk k - 1 back
//! while the GPU runs chunk k (src/ops/host.rs, src/ops/pool.rs).
//!
//! Its results must be those of one chunk at a time, bit for bit: each multi-chunk call is
//! compared with the same chunks pushed one per call (`CrossEntropyStream`, or one softmax
//! call per chunk: single-chunk calls take one buffer set and `queue.write_buffer`, the
//! unpipelined path), with the device API on the same chunking (the loss within a few ulps: the
//! host path sums it on the CPU), and with the f64 reference.
//! A call's future dropped mid-way must leave the pooled buffers usable: the next call
//! succeeds with the same bits.
//!
//! Every GPU test runs on every adapter and prints which ran; data is fresh random each run
//! (the seed is printed); outputs are poisoned with NaN first.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Waker};

use common::Rng;
use ml_softmax::stream::{CrossEntropyStream, Denominator};
use ml_softmax::wgpu::util::DeviceExt;
use ml_softmax::{
    Context, CrossEntropyOptions, CrossEntropyOutput, DeviceCrossEntropy, DeviceTargets,
    HalfCrossEntropy, Precision, Reduction, SoftmaxKind, Strategy, Targets, reference, wgpu,
};

/// Rows per chunk the contexts below split calls into, and a batch of several chunks with a
/// short last one.
const CHUNK: usize = 8;
const ROWS: usize = 45;
const COLS: usize = 1000;

/// Contexts on every adapter whose host and device calls split `ROWS x COLS` into chunks of
/// `CHUNK` rows (room for `CHUNK` f32 rows plus any offset alignment up to 256 bytes): six
/// chunks, so both buffer sets are reused twice.
fn chunked_contexts() -> Vec<Context> {
    common::chunked_contexts("host pipeline", (CHUNK * COLS * 4 + 256) as u64)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `got` and `want` hold the same values, bit for bit; names the first that differs.
fn assert_bits_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}[{i}]: {:?} vs {:?} (bits)", got[i], want[i]);
    }
}

fn assert_same_bits(what: &str, got: &CrossEntropyOutput, want: &CrossEntropyOutput) {
    assert_bits_eq(
        &format!("{what}: grad"),
        &bits(&got.grad),
        &bits(&want.grad),
    );
    assert_bits_eq(
        &format!("{what}: row_loss"),
        &bits(&got.row_loss),
        &bits(&want.row_loss),
    );
    assert_bits_eq(&format!("{what}: lse"), &bits(&got.lse), &bits(&want.lse));
    assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}: loss");
}

/// The stream's outputs of `CHUNK`-row pushes, concatenated, with its final loss.
fn streamed<T: Copy>(
    rows: usize,
    mut push: impl FnMut(std::ops::Range<usize>) -> CrossEntropyOutput<T>,
) -> CrossEntropyOutput<T> {
    let mut all = CrossEntropyOutput {
        loss: 0.0,
        row_loss: Vec::new(),
        lse: Vec::new(),
        grad: Vec::new(),
    };
    for first in (0..rows).step_by(CHUNK) {
        let out = push(first..(first + CHUNK).min(rows));
        all.grad.extend_from_slice(&out.grad);
        all.row_loss.extend_from_slice(&out.row_loss);
        all.lse.extend_from_slice(&out.lse);
        all.loss = out.loss;
    }
    all
}

/// The device API on the same context (so the same chunking), class labels.
fn device_cross_entropy(
    ctx: &Context,
    logits: &[f32],
    labels: &[i64],
    options: &CrossEntropyOptions,
    strategy: Strategy,
) -> CrossEntropyOutput {
    use wgpu::BufferUsages as U;
    let init = |label, contents: &[u8], usage| {
        ctx.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
    };
    let nan = |n: usize| vec![f32::NAN; n];
    let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
    let logits_buf = init("logits", bytemuck::cast_slice(logits), U::STORAGE);
    let label_buf = init("labels", bytemuck::cast_slice(&labels32), U::STORAGE);
    let grad = init(
        "grad",
        bytemuck::cast_slice(&nan(logits.len())),
        U::STORAGE | U::COPY_SRC,
    );
    let loss = init(
        "loss",
        bytemuck::cast_slice(&nan(1)),
        U::COPY_DST | U::COPY_SRC,
    );
    let row_loss = init(
        "row_loss",
        bytemuck::cast_slice(&nan(labels.len())),
        U::STORAGE | U::COPY_SRC,
    );
    let lse = init(
        "lse",
        bytemuck::cast_slice(&nan(labels.len())),
        U::STORAGE | U::COPY_SRC,
    );
    let bufs = DeviceCrossEntropy {
        logits: logits_buf.slice(..),
        precision: Precision::F32,
        targets: DeviceTargets::Classes(label_buf.slice(..)),
        grad: Some(grad.slice(..)),
        loss: Some(loss.slice(..)),
        row_loss: Some(row_loss.slice(..)),
        lse: Some(lse.slice(..)),
        upstream: None,
    };
    ctx.cross_entropy_device(
        &bufs,
        labels.len(),
        logits.len() / labels.len(),
        options,
        strategy,
    )
    .unwrap();
    CrossEntropyOutput {
        loss: common::read(ctx, &loss)[0],
        row_loss: common::read(ctx, &row_loss),
        lse: common::read(ctx, &lse),
        grad: common::read(ctx, &grad),
    }
}

#[test]
fn several_chunks_equal_one_chunk_at_a_time_and_the_device_path_for_every_strategy() {
    let mut rng = Rng::new("host pipeline classes");
    let logits = rng.logits(ROWS * COLS, 3.0);
    let mut labels = rng.labels(ROWS, COLS);
    labels[3] = -100;
    labels[20] = -100;
    let options = CrossEntropyOptions {
        label_smoothing: 0.05,
        z_loss: 1e-4,
        weight: Some((0..COLS).map(|_| 0.5 + rng.uniform() as f32).collect()),
        ..Default::default()
    };
    let expected = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
    for ctx in chunked_contexts() {
        for strategy in Strategy::all(ctx.has_subgroups()) {
            let what = format!("{} {strategy}", ctx.describe());
            let host = ctx
                .cross_entropy_with(&logits, &labels, ROWS, COLS, &options, strategy)
                .unwrap();
            common::assert_output_close(&what, &host, &expected, 1.0 / ROWS as f32);
            let denominator = Denominator::Labels(&labels);
            let mut stream =
                CrossEntropyStream::new(&ctx, COLS, &options, denominator, strategy).unwrap();
            let one_at_a_time = streamed(ROWS, |r| {
                let targets = Targets::Classes(&labels[r.clone()]);
                let chunk = &logits[r.start * COLS..r.end * COLS];
                stream.push(chunk, targets).unwrap()
            });
            assert_eq!(stream.finish().unwrap().to_bits(), host.loss.to_bits());
            assert_same_bits(
                &format!("{what} vs one chunk at a time"),
                &host,
                &one_at_a_time,
            );
            // The device API counts a mean's denominator on the GPU in f32 (the host path in
            // f64), so its gradient scale can differ by an ulp: compared on a sum. Its outputs
            // per element and per row bit for bit; the loss within a few ulps, as the host
            // path sums it on the CPU in f64 and the device path on the GPU (Kahan, f32).
            let sum = CrossEntropyOptions {
                reduction: Reduction::Sum,
                ..options.clone()
            };
            let host = ctx
                .cross_entropy_with(&logits, &labels, ROWS, COLS, &sum, strategy)
                .unwrap();
            let device = device_cross_entropy(&ctx, &logits, &labels, &sum, strategy);
            let what = format!("{what} sum vs the device API");
            let loss = |o: &CrossEntropyOutput| CrossEntropyOutput {
                loss: 0.0,
                ..o.clone()
            };
            assert_same_bits(&what, &loss(&host), &loss(&device));
            let ulps = (host.loss.to_bits() as i64 - device.loss.to_bits() as i64).abs();
            assert!(
                ulps <= 4,
                "{what}: loss {} vs {} ({ulps} ulps)",
                host.loss,
                device.loss
            );
        }
    }
}

#[test]
fn several_chunks_of_probability_targets_and_sums_equal_one_chunk_at_a_time() {
    let mut rng = Rng::new("host pipeline probabilities");
    let logits = rng.logits(ROWS * COLS, 2.0);
    let probs = reference::softmax(&rng.logits(ROWS * COLS, 1.0), ROWS, COLS).unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum] {
        let options = CrossEntropyOptions {
            reduction,
            softcap: 20.0,
            ..Default::default()
        };
        let expected =
            reference::cross_entropy_probs(&logits, &probs, ROWS, COLS, &options).unwrap();
        for ctx in chunked_contexts() {
            let strategy = ctx.resolve_strategy_for(Strategy::Auto, ROWS, COLS, Precision::F32);
            let what = format!("{} {strategy} {reduction:?}", ctx.describe());
            let targets = Targets::Probabilities(&probs);
            let host = ctx
                .cross_entropy_targets(&logits, targets, ROWS, COLS, &options, strategy)
                .unwrap();
            let scale = if reduction == Reduction::Mean {
                1.0 / ROWS as f32
            } else {
                1.0
            };
            common::assert_output_close(&what, &host, &expected, scale);
            let mut stream =
                CrossEntropyStream::new(&ctx, COLS, &options, Denominator::Rows(ROWS), strategy)
                    .unwrap();
            let one_at_a_time = streamed(ROWS, |r| {
                let targets = Targets::Probabilities(&probs[r.start * COLS..r.end * COLS]);
                let chunk = &logits[r.start * COLS..r.end * COLS];
                stream.push(chunk, targets).unwrap()
            });
            assert_same_bits(
                &format!("{what} vs one chunk at a time"),
                &host,
                &one_at_a_time,
            );
        }
    }
}

#[test]
fn several_chunks_of_softmax_equal_one_call_per_chunk() {
    let mut rng = Rng::new("host pipeline softmax");
    let logits = rng.logits(ROWS * COLS, 2.0);
    for ctx in chunked_contexts() {
        for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
            let strategy = ctx.resolve_strategy_for(Strategy::Auto, ROWS, COLS, Precision::F32);
            let what = format!("{} {strategy} {kind:?}", ctx.describe());
            let all = ctx
                .softmax_with(&logits, ROWS, COLS, kind, strategy)
                .unwrap();
            let mut per_chunk = Vec::new();
            for first in (0..ROWS).step_by(CHUNK) {
                let rows = CHUNK.min(ROWS - first);
                let chunk = &logits[first * COLS..][..rows * COLS];
                per_chunk.extend(ctx.softmax_with(chunk, rows, COLS, kind, strategy).unwrap());
            }
            assert_bits_eq(&what, &bits(&all), &bits(&per_chunk));
            let want = match kind {
                SoftmaxKind::Softmax => reference::softmax(&logits, ROWS, COLS),
                SoftmaxKind::LogSoftmax => reference::log_softmax(&logits, ROWS, COLS),
            };
            common::assert_close(&what, &all, &want.unwrap(), 1e-6, 1e-5);
        }
    }
}

#[test]
fn several_chunks_of_half_precision_equal_one_chunk_at_a_time() {
    let mut rng = Rng::new("host pipeline half");
    // An odd element count per chunk (8 x 999) and in all: 2-byte uploads padded to words.
    let cols = COLS - 1;
    let labels = rng.labels(ROWS, cols);
    let options = CrossEntropyOptions::default();
    for ctx in chunked_contexts() {
        let has_f16 = ctx.device().features().contains(wgpu::Features::SHADER_F16);
        for precision in [Precision::F16, Precision::Bf16] {
            if precision == Precision::F16 && !has_f16 {
                eprintln!("{}: no SHADER_F16, f16 not run", ctx.describe());
                continue;
            }
            let (half, z) = common::to_half(&rng.logits(ROWS * cols, 2.0), precision);
            let strategy = ctx.resolve_strategy_for(Strategy::Auto, ROWS, cols, precision);
            let what = format!("{} {strategy} {precision:?}", ctx.describe());
            let host = ctx
                .cross_entropy_half(&HalfCrossEntropy {
                    logits: &half,
                    precision,
                    targets: Targets::Classes(&labels),
                    rows: ROWS,
                    cols,
                    options: &options,
                    strategy,
                })
                .unwrap();
            let cpu = reference::cross_entropy(&z, &labels, ROWS, cols, &options).unwrap();
            common::assert_half_output_close(&what, &host, &cpu, precision);
            let denominator = Denominator::Labels(&labels);
            let mut stream =
                CrossEntropyStream::new(&ctx, cols, &options, denominator, strategy).unwrap();
            let one_at_a_time = streamed(ROWS, |r| {
                let chunk = &half[r.start * cols..r.end * cols];
                let targets = Targets::Classes(&labels[r.clone()]);
                stream.push_half(chunk, precision, targets).unwrap()
            });
            assert_bits_eq(&format!("{what}: grad"), &host.grad, &one_at_a_time.grad);
            assert_bits_eq(
                &format!("{what}: lse"),
                &bits(&host.lse),
                &bits(&one_at_a_time.lse),
            );
            assert_eq!(host.loss.to_bits(), one_at_a_time.loss.to_bits(), "{what}");
            let kind = SoftmaxKind::Softmax;
            let all = ctx
                .softmax_half(&half, precision, ROWS, cols, kind, strategy)
                .unwrap();
            let mut per_chunk = Vec::new();
            for first in (0..ROWS).step_by(CHUNK) {
                let rows = CHUNK.min(ROWS - first);
                let chunk = &half[first * cols..][..rows * cols];
                per_chunk.extend(
                    ctx.softmax_half(chunk, precision, rows, cols, kind, strategy)
                        .unwrap(),
                );
            }
            assert_bits_eq(&format!("{what}: softmax"), &all, &per_chunk);
            let want = reference::softmax(&z, ROWS, cols).unwrap();
            let got = common::from_half(&all, precision);
            common::assert_close(&what, &got, &want, 1e-7, common::half_rel(precision));
        }
    }
}

/// Polls `future` `polls` times with a waker that does nothing, then drops it; says whether
/// it was still running (dropped mid-call) rather than finished.
fn poll_then_drop<T>(future: impl Future<Output = T>, polls: usize) -> bool {
    let mut future = pin!(future);
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..polls {
        if future.as_mut().poll(&mut cx).is_ready() {
            return false;
        }
    }
    true
}

#[test]
fn an_async_call_dropped_mid_way_leaves_the_next_call_correct() {
    let mut rng = Rng::new("host pipeline dropped");
    let logits = rng.logits(ROWS * COLS, 3.0);
    let labels = rng.labels(ROWS, COLS);
    let options = CrossEntropyOptions::default();
    let expected = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
    for ctx in chunked_contexts() {
        let what = ctx.describe();
        let clean = ctx
            .cross_entropy(&logits, &labels, ROWS, COLS, &options)
            .unwrap();
        common::assert_output_close(&what, &clean, &expected, 1.0 / ROWS as f32);
        // Dropped after 1, 2, ... polls: with the first upload mapped, mid-submission, with
        // a readback or an upload mapping pending, or mapped and not yet unmapped.
        let mut dropped_mid_way = 0;
        for polls in 1..=12 {
            let call = ctx.cross_entropy_async(&logits, &labels, ROWS, COLS, &options);
            dropped_mid_way += usize::from(poll_then_drop(call, polls));
            let softmax =
                ctx.softmax_with_async(&logits, ROWS, COLS, SoftmaxKind::Softmax, Strategy::Auto);
            dropped_mid_way += usize::from(poll_then_drop(softmax, polls));
            // The next calls reuse the pooled buffer sets the dropped ones left.
            let next = ctx
                .cross_entropy(&logits, &labels, ROWS, COLS, &options)
                .unwrap_or_else(|e| panic!("{what}: after a drop at poll {polls}: {e}"));
            assert_same_bits(
                &format!("{what} after a drop at poll {polls}"),
                &next,
                &clean,
            );
            let p = ctx.softmax(&logits, ROWS, COLS).unwrap();
            assert!(
                p.iter().all(|x| x.is_finite()),
                "{what}: softmax after a drop"
            );
        }
        // An adapter whose calls all finish within their first poll (llvmpipe GL: its
        // queue runs the work at submission) has no mid-call state to drop; every other
        // adapter must have had calls dropped mid-way here.
        let finish_at_once = ctx.cross_entropy_async(&logits, &labels, ROWS, COLS, &options);
        let synchronous = !poll_then_drop(finish_at_once, 1);
        eprintln!(
            "{what}: {dropped_mid_way} of 24 calls dropped mid-way{}",
            if synchronous {
                " (its calls finish within their first poll)"
            } else {
                ""
            }
        );
        assert!(
            dropped_mid_way > 0 || synchronous,
            "{what}: no call was dropped mid-way, yet calls do not finish at their first poll"
        );
    }
}

/// `ml-softmax bench --host` on every backend: every figure present, positive, in its JSON
/// (the bench itself fails when a readback differs from what was uploaded).
#[test]
fn bench_host_reports_transfer_rates_and_the_host_api() {
    let dir = std::env::temp_dir().join(format!("ml-softmax-bench-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ran = Vec::new();
    for backend in ["vulkan", "gl"] {
        let json = dir.join(format!("{backend}.json"));
        // 512 x 1000 f32 = 2 MB: three chunks of at most 1 MiB.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
            .args([
                "bench",
                "--host",
                "--backend",
                backend,
                "--shapes",
                "512x1000",
            ])
            .args(["--reps", "2", "--chunk-mib", "1", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("no GPU adapter found"),
                "bench --host on {backend} failed: {stdout}{stderr}"
            );
            eprintln!("bench --host: no {backend} adapter: {stderr}");
            continue;
        }
        let records: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let whats: Vec<&str> = records
            .iter()
            .map(|r| r["what"].as_str().unwrap())
            .collect();
        assert_eq!(
            whats,
            [
                "memcpy",
                "upload (mapped staging)",
                "readback",
                "cross_entropy",
                "cross_entropy 1 MiB chunks"
            ],
            "{backend}"
        );
        for r in &records {
            let gbps = r["gbps"].as_f64().unwrap();
            assert!(gbps.is_finite() && gbps > 0.0, "{backend}: {r}");
            assert_eq!(r["shape"], "512x1000", "{backend}");
        }
        assert!(stdout.contains("transfer floor"), "{backend}: {stdout}");
        ran.push(backend);
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("bench --host ran on: {ran:?}");
    assert!(!ran.is_empty(), "bench --host ran on no backend");
}

/// A call of more than `PIPELINE_CHUNK_BYTES` (64 MiB) of logits is cut into chunks of that
/// size even where the adapter's binding limit would take it whole (128 MiB on lavapipe and
/// llvmpipe GL): 288 x 65536 f32 logits (72 MiB) are chunks of 256 and 32 rows. Checked
/// against the same rows pushed as two calls of 256 and 32 rows (each one chunk, not
/// pipelined), bit for bit with the loss, and against the f64 reference.
#[test]
fn a_call_past_the_pipeline_chunk_is_cut_and_pipelined() {
    const ROWS: usize = 288;
    const COLS: usize = 65536;
    const PIECE: usize = 256;
    let mut rng = Rng::new("host pipeline chunk size");
    let logits = rng.logits(ROWS * COLS, 3.0);
    let labels = rng.labels(ROWS, COLS);
    let options = CrossEntropyOptions::default();
    let expected = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
    for ctx in common::contexts() {
        let strategy = ctx.resolve_strategy_for(Strategy::Auto, ROWS, COLS, Precision::F32);
        let what = format!("{} {strategy}", ctx.describe());
        let before = ctx.host_chunks_submitted();
        let host = ctx
            .cross_entropy_with(&logits, &labels, ROWS, COLS, &options, strategy)
            .unwrap();
        let chunks = ctx.host_chunks_submitted() - before;
        assert_eq!(chunks, 2, "{what}: chunks of a 72 MiB call");
        common::assert_output_close(&what, &host, &expected, 1.0 / ROWS as f32);
        let denominator = Denominator::Labels(&labels);
        let mut stream =
            CrossEntropyStream::new(ctx, COLS, &options, denominator, strategy).unwrap();
        let mut pieces = CrossEntropyOutput {
            loss: 0.0,
            row_loss: Vec::new(),
            lse: Vec::new(),
            grad: Vec::new(),
        };
        for r in [0..PIECE, PIECE..ROWS] {
            let targets = Targets::Classes(&labels[r.clone()]);
            let out = stream
                .push(&logits[r.start * COLS..r.end * COLS], targets)
                .unwrap();
            pieces.grad.extend_from_slice(&out.grad);
            pieces.row_loss.extend_from_slice(&out.row_loss);
            pieces.lse.extend_from_slice(&out.lse);
            pieces.loss = out.loss;
        }
        assert_same_bits(&format!("{what} vs two pieces"), &host, &pieces);
    }
}

/// A blocking call waits for the submission its own call names (`platform::wait_first_for`),
/// never for one a call on another device left on the thread: here an async call on context
/// `a` dropped mid-way, then blocking calls on context `b`, a second device on the same
/// adapter: `Context::read_back`, and a host call. (Seen in the Python tests before the fix: "Tried to wait using a submission index
/// (199) that has not been returned by a successful submission".)
#[test]
fn a_blocking_call_ignores_a_wait_left_by_another_device() {
    let mut rng = Rng::new("host pipeline two devices");
    let logits = rng.logits(ROWS * COLS, 3.0);
    let labels = rng.labels(ROWS, COLS);
    let options = CrossEntropyOptions::default();
    let expected = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
    for (a, b) in chunked_contexts().into_iter().zip(chunked_contexts()) {
        let what = b.describe();
        // Many submissions on `a`, few on `b`, so that `a`'s indices are unknown to `b`.
        for _ in 0..4 {
            a.cross_entropy(&logits, &labels, ROWS, COLS, &options)
                .unwrap();
        }
        for polls in 1..=12 {
            let call = a.cross_entropy_async(&logits, &labels, ROWS, COLS, &options);
            poll_then_drop(call, polls);
            // `Context::read_back`, whose wait names no submission of its own, then a host
            // call.
            let buffer = b
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("read back"),
                    contents: bytemuck::cast_slice(&logits[..COLS]),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                });
            let back = b.read_back(buffer.slice(..)).unwrap_or_else(|e| {
                panic!("{what}: read_back after a call on another device: {e}")
            });
            assert_eq!(
                back,
                bytemuck::cast_slice::<f32, u8>(&logits[..COLS]),
                "{what}"
            );
            let out = b
                .cross_entropy(&logits, &labels, ROWS, COLS, &options)
                .unwrap_or_else(|e| panic!("{what}: after a call on another device: {e}"));
            common::assert_output_close(&what, &out, &expected, 1.0 / ROWS as f32);
        }
    }
}
