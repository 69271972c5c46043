//! Scaling out (issue 16, parts 2 and 3): the library stream of row chunks
//! (`ml_softmax::stream`), the multi-adapter split (`ml_softmax::multi`), and the CLI's
//! streamed `xent`, whose peak memory is bounded by its chunk, not by its input.
//!
//! Every GPU test runs on every adapter (`common::open_contexts`, which fails loudly when
//! there is none) and prints which adapters ran. Data is fresh random each run (the seed is
//! printed); outputs are poisoned with NaN first.

// The command line's .npy reader and writer (src/npy.rs, not part of the library).
mod common;
#[allow(dead_code)]
#[path = "../src/npy.rs"]
mod npy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Rng;
use ml_softmax::multi::MultiContext;
use ml_softmax::stream::{CrossEntropyStream, Denominator};
use ml_softmax::{
    Context, CrossEntropyOptions, CrossEntropyOutput, Error, Precision, Reduction, Strategy,
    Targets, reference,
};
use npy::NpyData;

/// Rows per chunk of the bit-identity tests, and the row length (long enough that a
/// binding of `CHUNK` rows plus any offset alignment holds exactly `CHUNK` rows).
const CHUNK: usize = 7;
const COLS: usize = 300;
const ROWS: usize = 42;

/// Contexts whose host calls split batches into chunks of exactly `chunk` rows of `cols`.
fn chunked_contexts(chunk: usize, cols: usize) -> Vec<Context> {
    common::chunked_contexts("stream", (chunk * cols * 4 + 256) as u64)
}

/// Every option the kernels have, on: class weights, ignored rows, smoothing, z-loss, softcap.
fn all_options(rng: &mut Rng, reduction: Reduction) -> CrossEntropyOptions {
    CrossEntropyOptions {
        reduction,
        ignore_index: -100,
        label_smoothing: 0.1,
        weight: Some((0..COLS).map(|_| 0.25 + rng.uniform() as f32).collect()),
        z_loss: 1e-3,
        softcap: 20.0,
    }
}

fn labels_with_ignored(rng: &mut Rng) -> Vec<i64> {
    let mut labels = rng.labels(ROWS, COLS);
    for row in [0, 3, 8, 9, 30] {
        labels[row] = -100;
    }
    labels
}

/// The stream's outputs gathered: gradient, row losses and lse concatenated, loss at the end.
fn gather(parts: Vec<CrossEntropyOutput>, loss: f32) -> CrossEntropyOutput {
    let mut all = CrossEntropyOutput {
        loss,
        row_loss: Vec::new(),
        lse: Vec::new(),
        grad: Vec::new(),
    };
    for part in parts {
        all.row_loss.extend(part.row_loss);
        all.lse.extend(part.lse);
        all.grad.extend(part.grad);
    }
    all
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_bit_identical(what: &str, streamed: &CrossEntropyOutput, whole: &CrossEntropyOutput) {
    assert_eq!(
        streamed.loss.to_bits(),
        whole.loss.to_bits(),
        "{what}: loss {} streamed vs {} whole",
        streamed.loss,
        whole.loss
    );
    assert_eq!(
        bits(&streamed.row_loss),
        bits(&whole.row_loss),
        "{what}: row_loss"
    );
    assert_eq!(bits(&streamed.lse), bits(&whole.lse), "{what}: lse");
    assert_eq!(bits(&streamed.grad), bits(&whole.grad), "{what}: grad");
}

/// Pushes `logits` in chunks of [`CHUNK`] rows and returns the gathered outputs.
fn run_stream(
    ctx: &Context,
    logits: &[f32],
    targets: Targets<'_>,
    options: &CrossEntropyOptions,
    denominator: Denominator<'_>,
) -> CrossEntropyOutput {
    let mut stream =
        CrossEntropyStream::new(ctx, COLS, options, denominator, Strategy::Auto).unwrap();
    let mut parts = Vec::new();
    for first in (0..ROWS).step_by(CHUNK) {
        let count = CHUNK.min(ROWS - first);
        let chunk_targets = match targets {
            Targets::Classes(l) => Targets::Classes(&l[first..][..count]),
            Targets::Probabilities(t) => Targets::Probabilities(&t[first * COLS..][..count * COLS]),
        };
        let out = stream
            .push(&logits[first * COLS..][..count * COLS], chunk_targets)
            .unwrap();
        assert_eq!(stream.rows(), first + count);
        parts.push(out);
    }
    let loss = stream.finish().unwrap();
    gather(parts, loss)
}

#[test]
fn a_stream_equals_the_unstreamed_call_bit_for_bit_for_every_reduction_and_option() {
    let mut rng = Rng::new("stream_bit_identical");
    for ctx in &chunked_contexts(CHUNK, COLS) {
        let logits = rng.logits(ROWS * COLS, 3.0);
        let labels = labels_with_ignored(&mut rng);
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            for options in [
                CrossEntropyOptions {
                    reduction,
                    ..Default::default()
                },
                all_options(&mut rng, reduction),
            ] {
                let what = format!("{} {options:?}", ctx.describe());
                let classes = Targets::Classes(&labels);
                let scale = mean_scale(reduction, 0.05);
                let whole = whole_call(ctx, &what, &logits, classes, &options, scale);
                let streamed = run_stream(
                    ctx,
                    &logits,
                    classes,
                    &options,
                    Denominator::Labels(&labels),
                );
                assert_bit_identical(&what, &streamed, &whole);
                // The caller's own count of the denominator gives the same.
                let d: f64 = labels
                    .iter()
                    .filter(|&&y| y != options.ignore_index)
                    .map(|&y| {
                        options
                            .weight
                            .as_ref()
                            .map_or(1.0, |w| f64::from(w[y as usize]))
                    })
                    .sum();
                let given = run_stream(ctx, &logits, classes, &options, Denominator::Given(d));
                assert_bit_identical(&format!("{what} (given D)"), &given, &whole);
            }
            // Probability targets: the mean divides by the stream's rows.
            let mut options = all_options(&mut rng, reduction);
            options.ignore_index = -100;
            let targets: Vec<f32> = (0..ROWS)
                .flat_map(|_| {
                    let raw: Vec<f32> = (0..COLS).map(|_| rng.uniform() as f32).collect();
                    let sum: f32 = raw.iter().sum();
                    raw.into_iter().map(move |x| x / sum)
                })
                .collect();
            let what = format!("{} probabilities {reduction:?}", ctx.describe());
            let probs = Targets::Probabilities(&targets);
            let scale = mean_scale(reduction, 1.0 / ROWS as f32);
            let whole = whole_call(ctx, &what, &logits, probs, &options, scale);
            let again = ctx
                .cross_entropy_probs(&logits, &targets, ROWS, COLS, &options)
                .unwrap();
            assert_bit_identical(&format!("{what} rerun"), &again, &whole);
            let streamed = run_stream(ctx, &logits, probs, &options, Denominator::Rows(ROWS));
            assert_bit_identical(&what, &streamed, &whole);
        }
    }
}

#[test]
fn a_half_precision_stream_equals_the_unstreamed_call_bit_for_bit() {
    let mut rng = Rng::new("stream_half");
    for ctx in &chunked_contexts(CHUNK, COLS) {
        let logits = rng.logits(ROWS * COLS, 3.0);
        let (bf16, _) = common::to_half(&logits, Precision::Bf16);
        let labels = labels_with_ignored(&mut rng);
        let options = all_options(&mut rng, Reduction::Mean);
        let whole = ctx
            .cross_entropy_half(&half_request(&bf16, Precision::Bf16, &labels, &options))
            .unwrap();
        let mut stream = CrossEntropyStream::new(
            ctx,
            COLS,
            &options,
            Denominator::Labels(&labels),
            Strategy::Auto,
        )
        .unwrap();
        let mut grad = Vec::new();
        let mut row_loss = Vec::new();
        for first in (0..ROWS).step_by(CHUNK) {
            let count = CHUNK.min(ROWS - first);
            let out = stream
                .push_half(
                    &bf16[first * COLS..][..count * COLS],
                    Precision::Bf16,
                    Targets::Classes(&labels[first..][..count]),
                )
                .unwrap();
            grad.extend(out.grad);
            row_loss.extend(out.row_loss);
        }
        let loss = stream.finish().unwrap();
        assert!(whole.loss.is_finite() && whole.loss > 0.0, "{}", whole.loss);
        assert_eq!(loss.to_bits(), whole.loss.to_bits(), "{}", ctx.describe());
        assert_eq!(grad, whole.grad, "{}: bf16 grad", ctx.describe());
        assert_eq!(bits(&row_loss), bits(&whole.row_loss));
    }
}

#[test]
fn a_stream_refuses_bad_input_with_typed_errors_and_a_failed_push_changes_nothing() {
    let mut rng = Rng::new("stream_errors");
    let ctx = &chunked_contexts(CHUNK, COLS)[0];
    let logits = rng.logits(ROWS * COLS, 3.0);
    let labels = rng.labels(ROWS, COLS);
    let options = CrossEntropyOptions::default();
    let new = |d| CrossEntropyStream::new(ctx, COLS, &options, d, Strategy::Auto);
    assert!(matches!(
        new(Denominator::Given(-1.0)),
        Err(Error::InvalidOption {
            name: "denominator",
            ..
        })
    ));
    assert!(matches!(
        new(Denominator::Given(f64::NAN)),
        Err(Error::InvalidOption {
            name: "denominator",
            ..
        })
    ));
    assert!(matches!(
        new(Denominator::Rows(0)),
        Err(Error::EmptyShape { .. })
    ));
    let mut bad_labels = labels.clone();
    bad_labels[5] = COLS as i64;
    assert!(matches!(
        new(Denominator::Labels(&bad_labels)),
        Err(Error::LabelOutOfRange { row: 5, .. })
    ));

    let mut stream = new(Denominator::Labels(&labels)).unwrap();
    let chunk = |first: usize, count: usize| &logits[first * COLS..][..count * COLS];
    // Labels other than those the denominator was counted from.
    let mut other = labels[..3].to_vec();
    other[1] = (other[1] + 1) % COLS as i64;
    let e = stream
        .push(chunk(0, 3), Targets::Classes(&other))
        .unwrap_err();
    assert_targets_refused(&e);
    // Logits that are not whole rows.
    let e = stream
        .push(&logits[..COLS + 1], Targets::Classes(&labels[..1]))
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { what: "logits", .. }),
        "{e}"
    );
    // Probability targets in a stream counted from labels.
    let e = stream
        .push(chunk(0, 1), Targets::Probabilities(&logits[..COLS]))
        .unwrap_err();
    assert_targets_refused(&e);
    assert_eq!(
        stream.rows(),
        0,
        "a failed push must not advance the stream"
    );
    // The same chunk pushed correctly now works.
    stream
        .push(chunk(0, 3), Targets::Classes(&labels[..3]))
        .unwrap();
    // Finishing early, and pushing past the end.
    let e = stream
        .push(chunk(0, ROWS - 2), Targets::Classes(&labels[3..]))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                what: "stream rows",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        stream.finish(),
        Err(Error::LengthMismatch {
            what: "stream rows",
            expected: ROWS,
            actual: 3
        })
    ));
}

// ---- several adapters in one process ----

#[test]
fn several_adapters_split_a_batch_and_match_one_context() {
    let mut rng = Rng::new("multi");
    let contexts = chunked_contexts(CHUNK, COLS);
    let names: Vec<String> = contexts.iter().map(Context::describe).collect();
    let multi = MultiContext::from_contexts(contexts).unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "multi-adapter test splits across {} adapters: {}",
        names.len(),
        names.join(" | ")
    );
    let logits = rng.logits(ROWS * COLS, 3.0);
    // Every row of the first half ignored: with two adapters, one part has no counted row,
    // and its gradient must still be scaled by the whole batch's denominator.
    let mut labels = rng.labels(ROWS, COLS);
    for label in &mut labels[..ROWS / 2] {
        *label = -100;
    }
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let options = all_options(&mut rng, reduction);
        let what = format!("multi {reduction:?}");
        let got = multi
            .cross_entropy_targets(
                &logits,
                Targets::Classes(&labels),
                ROWS,
                COLS,
                &options,
                Strategy::Auto,
            )
            .unwrap();
        let want = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
        let scale = mean_scale(reduction, 0.05);
        common::assert_output_close(&what, &got, &want, scale);
        assert!(
            got.grad[..ROWS / 2 * COLS].iter().all(|&g| g == 0.0),
            "{what}: ignored rows must have a zero gradient"
        );
        for ctx in multi.contexts() {
            let one = ctx
                .cross_entropy(&logits, &labels, ROWS, COLS, &options)
                .unwrap();
            common::assert_output_close(
                &format!("{what} vs {}", ctx.describe()),
                &got,
                &one,
                scale,
            );
        }
    }
    // Probability targets, and f16 storage only on the adapters that have it.
    let targets: Vec<f32> = (0..ROWS * COLS)
        .map(|i| if i % COLS == i / COLS { 1.0 } else { 0.0 })
        .collect();
    let options = CrossEntropyOptions::default();
    let got = multi
        .cross_entropy_targets(
            &logits,
            Targets::Probabilities(&targets),
            ROWS,
            COLS,
            &options,
            Strategy::Auto,
        )
        .unwrap();
    let want = reference::cross_entropy_probs(&logits, &targets, ROWS, COLS, &options).unwrap();
    common::assert_output_close("multi probabilities", &got, &want, 1.0 / ROWS as f32);
    let usable = multi.usable(Precision::F16, Strategy::Auto);
    assert!(usable.iter().all(|c| {
        c.device()
            .features()
            .contains(ml_softmax::wgpu::Features::SHADER_F16)
    }));
    if usable.is_empty() {
        let e = multi
            .cross_entropy_half(&ml_softmax::HalfCrossEntropy {
                rows: 1,
                ..half_request(&[0; COLS], Precision::F16, &[0], &options)
            })
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    } else {
        let (f16, rounded) = common::to_half(&logits, Precision::F16);
        let got = multi
            .cross_entropy_half(&half_request(&f16, Precision::F16, &labels, &options))
            .unwrap();
        let want = reference::cross_entropy(&rounded, &labels, ROWS, COLS, &options).unwrap();
        common::assert_close("multi f16 loss", &[got.loss], &[want.loss], 1e-3, 1e-3);
        let grad = common::from_half(&got.grad, Precision::F16);
        common::assert_close("multi f16 grad", &grad, &want.grad, 1e-3, 1e-2);
    }
}

/// The tolerance scale of a reduction: `mean` for `Mean` (a mean is smaller than the sum
/// the tolerances were set for), 1 otherwise.
fn mean_scale(reduction: Reduction, mean: f32) -> f32 {
    if reduction == Reduction::Mean {
        mean
    } else {
        1.0
    }
}

/// `ctx`'s unstreamed call of the whole `ROWS x COLS` batch (`Auto`), checked against the
/// f64 reference with `assert_output_close` at `scale`; the GPU's output.
fn whole_call(
    ctx: &Context,
    what: &str,
    logits: &[f32],
    targets: Targets,
    options: &CrossEntropyOptions,
    scale: f32,
) -> CrossEntropyOutput {
    let whole = ctx
        .cross_entropy_targets(logits, targets, ROWS, COLS, options, Strategy::Auto)
        .unwrap();
    let want = match targets {
        Targets::Classes(labels) => reference::cross_entropy(logits, labels, ROWS, COLS, options),
        Targets::Probabilities(t) => reference::cross_entropy_probs(logits, t, ROWS, COLS, options),
    }
    .unwrap();
    common::assert_output_close(what, &whole, &want, scale);
    whole
}

/// A push refused for its targets (`InvalidOption` naming them).
fn assert_targets_refused(e: &Error) {
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                name: "targets",
                ..
            }
        ),
        "{e}"
    );
}

/// A half-precision call of the whole `ROWS x COLS` batch with class targets, `Auto`.
fn half_request<'a>(
    logits: &'a [u16],
    precision: Precision,
    labels: &'a [i64],
    options: &'a CrossEntropyOptions,
) -> ml_softmax::HalfCrossEntropy<'a> {
    ml_softmax::HalfCrossEntropy {
        logits,
        precision,
        targets: Targets::Classes(labels),
        rows: ROWS,
        cols: COLS,
        options,
        strategy: Strategy::Auto,
    }
}

// ---- the streamed CLI ----

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ml-softmax-stream-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `ml-softmax xent` and returns its peak resident set size in KiB: the child's own
/// `VmHWM` (its high-water mark, which only grows) read from `/proc/<pid>/status` every 5 ms
/// until it exits. (`wait4`'s `ru_maxrss` would not do: a child started by `posix_spawn`
/// carries the test process's own high-water mark across `exec`.)
fn xent_peak_rss_kib(args: &[&dyn AsRef<std::ffi::OsStr>]) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
        .arg("xent")
        .args(args.iter().map(|a| a.as_ref()))
        .arg("--quiet")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        // Until the child has run `exec`, it shares this process's memory and VmHWM.
        let text = std::fs::read_to_string(&status_file).unwrap_or_default();
        if text.lines().next() == Some("Name:\tml-softmax") {
            let hwm = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(status.success(), "ml-softmax xent failed: {status}");
    assert!(peak > 0, "no VmHWM read from {status_file}");
    peak
}

fn write_f32(path: &Path, shape: &[usize], data: Vec<f32>) {
    npy::write(path, shape, &NpyData::F32(data)).unwrap();
}

#[test]
fn the_streamed_cli_matches_the_reference_and_its_memory_is_bounded_by_the_chunk() {
    let dir = scratch("rss");
    let mut rng = Rng::new("cli_rss");
    let (rows, cols, chunk_rows) = (8192, 8192, 32); // a 256 MiB input, 1 MiB chunks
    let chunk_mib = (chunk_rows * cols * 4) as u64 >> 20;
    let logits: Vec<f32> = rng.logits(rows * cols, 3.0);
    let mut labels = rng.labels(rows, cols);
    labels[17] = -100;
    let big = dir.join("big.npy");
    let big_labels = dir.join("big_labels.npy");
    write_f32(&big, &[rows, cols], logits.clone());
    npy::write(&big_labels, &[rows], &NpyData::I64(labels.clone())).unwrap();
    // The baseline: one chunk of the same rows (device, pipelines, buffers of one chunk).
    let small = dir.join("small.npy");
    let small_labels = dir.join("small_labels.npy");
    write_f32(
        &small,
        &[chunk_rows, cols],
        logits[..chunk_rows * cols].to_vec(),
    );
    npy::write(
        &small_labels,
        &[chunk_rows],
        &NpyData::I64(labels[..chunk_rows].to_vec()),
    )
    .unwrap();

    let chunk = chunk_rows.to_string();
    let grad = dir.join("grad.npy");
    let loss = dir.join("loss.npy");
    let base_kib = xent_peak_rss_kib(&[
        &"--logits",
        &small,
        &"--labels",
        &small_labels,
        &"--grad-out",
        &grad,
        &"--chunk-rows",
        &chunk,
    ]);
    let big_kib = xent_peak_rss_kib(&[
        &"--logits",
        &big,
        &"--labels",
        &big_labels,
        &"--grad-out",
        &grad,
        &"--loss-out",
        &loss,
        &"--chunk-rows",
        &chunk,
    ]);
    let input_mib = (rows * cols * 4) as u64 >> 20;
    // Bounded by the chunk: a few chunk-sized buffers (read, converted, GPU in and out,
    // staging, gradient) above the one-chunk run, plus allocator slack, and far below the
    // input (an unstreamed run holds the input and the gradient: 2x input).
    let bound_kib = base_kib + 16 * chunk_mib * 1024 + 48 * 1024;
    eprintln!(
        "streamed xent peak RSS: {} MiB for a {input_mib} MiB input in {chunk_mib} MiB chunks; \
         one chunk alone {} MiB; bound {} MiB",
        big_kib >> 10,
        base_kib >> 10,
        bound_kib >> 10
    );
    assert!(
        big_kib <= bound_kib,
        "peak RSS {big_kib} KiB over the bound {bound_kib} KiB"
    );
    assert!(
        big_kib < (input_mib << 10) / 2,
        "peak RSS {big_kib} KiB: the input is held"
    );

    // The streamed result against the reference, on a sample of rows (the whole check in f64
    // would take longer than the run): the loss over every row, the gradient of some rows.
    let got = match npy::read(&grad).unwrap().data {
        NpyData::F32(v) => v,
        other => panic!("grad is {}", other.dtype()),
    };
    let want = reference::cross_entropy(&logits, &labels, rows, cols, &Default::default()).unwrap();
    let got_loss = match npy::read(&loss).unwrap().data {
        NpyData::F32(v) => v[0],
        other => panic!("loss is {}", other.dtype()),
    };
    common::assert_close("streamed loss", &[got_loss], &[want.loss], 1e-6, 1e-4);
    for row in [0, 17, 31, 32, 4095, rows - 1] {
        let r = &want.grad[row * cols..][..cols];
        let g = &got[row * cols..][..cols];
        common::assert_close(&format!("streamed grad row {row}"), g, r, 1e-9, 1e-3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_streamed_cli_gives_the_unchunked_results_for_any_chunk_size() {
    let dir = scratch("chunks");
    let mut rng = Rng::new("cli_chunks");
    // Whole 4-element vectors per row: each row is then read the same way at any offset.
    let (rows, cols) = (23, 64);
    let logits = rng.logits(rows * cols, 3.0);
    let mut labels = rng.labels(rows, cols);
    labels[4] = -1;
    let weight: Vec<f32> = (0..cols).map(|_| 0.5 + rng.uniform() as f32).collect();
    let l = dir.join("l.npy");
    let y = dir.join("y.npy");
    let w = dir.join("w.npy");
    // float64 logits: converted chunk by chunk.
    npy::write(
        &l,
        &[rows, cols],
        &NpyData::F64(logits.iter().map(|&x| f64::from(x)).collect()),
    )
    .unwrap();
    npy::write(&y, &[rows], &NpyData::I64(labels.clone())).unwrap();
    write_f32(&w, &[cols], weight.clone());
    let run = |chunk: &str, tag: &str| -> Vec<Vec<f32>> {
        let outs: Vec<PathBuf> = ["grad", "lse", "probs", "loss"]
            .iter()
            .map(|o| dir.join(format!("{o}-{tag}.npy")))
            .collect();
        let status = Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
            .args([
                "xent",
                "--quiet",
                "--ignore-index",
                "-1",
                "--label-smoothing",
                "0.05",
            ])
            .arg("--logits")
            .arg(&l)
            .arg("--labels")
            .arg(&y)
            .arg("--weight")
            .arg(&w)
            .arg("--grad-out")
            .arg(&outs[0])
            .arg("--lse-out")
            .arg(&outs[1])
            .arg("--probs-out")
            .arg(&outs[2])
            .arg("--loss-out")
            .arg(&outs[3])
            .args(["--chunk-rows", chunk])
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        outs.iter()
            .map(|p| match npy::read(p).unwrap().data {
                NpyData::F32(v) => v,
                other => panic!("{} is {}", p.display(), other.dtype()),
            })
            .collect()
    };
    let whole = run("1000", "whole");
    let options = CrossEntropyOptions {
        ignore_index: -1,
        label_smoothing: 0.05,
        weight: Some(weight),
        ..Default::default()
    };
    let want = reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
    common::assert_close("cli grad", &whole[0], &want.grad, 2e-7, 1e-4);
    common::assert_close("cli lse", &whole[1], &want.lse, 1e-5, 1e-5);
    common::assert_close("cli loss", &whole[3], &[want.loss], 1e-6, 2e-5);
    for chunk in ["1", "5", "22"] {
        let got = run(chunk, chunk);
        // Each row's results do not depend on the chunking; the loss's summation order does.
        assert_eq!(bits(&got[0]), bits(&whole[0]), "grad, chunks of {chunk}");
        assert_eq!(bits(&got[1]), bits(&whole[1]), "lse, chunks of {chunk}");
        assert_eq!(bits(&got[2]), bits(&whole[2]), "probs, chunks of {chunk}");
        common::assert_close(
            &format!("loss, chunks of {chunk}"),
            &got[3],
            &whole[3],
            1e-6,
            1e-5,
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_ml-softmax"))
        .args(["xent", "--quiet", "--chunk-rows", "0"])
        .arg("--logits")
        .arg(&l)
        .arg("--labels")
        .arg(&y)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--chunk-rows 0"));
    let _ = std::fs::remove_dir_all(&dir);
}
