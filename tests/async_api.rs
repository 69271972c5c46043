//! The async API (issue 21): `Context::new_async`, `cross_entropy_async`,
//! `cross_entropy_targets_async`, `softmax_with_async`, `read_back_async`. They are the
//! blocking calls' core, so on every adapter their results equal the blocking calls' bit for
//! bit (and the f64 reference within the usual tolerances), across several row chunks.
//!
//! The futures run under `pollster::block_on`, an executor that knows nothing of wgpu: it
//! only parks until woken. The futures finish because each poll that waits runs a
//! non-blocking `device.poll` and wakes itself (src/platform.rs) - nobody else polls the
//! device here. (In the browser the same calls are tested by web/browser_test.py.)
//!
//! Every GPU test runs on every adapter and prints which ran; data is fresh random each run
//! (the seed is printed); outputs are poisoned with NaN first.

mod common;

use common::Rng;
use ml_softmax::{
    Context, CrossEntropyOptions, Error, Reduction, SoftmaxKind, Strategy, Targets, reference, wgpu,
};

const ROWS: usize = 37;
const COLS: usize = 1000;

/// Contexts on every adapter whose host calls split `ROWS x COLS` into chunks of 8 rows, so
/// a call awaits several readbacks.
fn chunked_contexts() -> Vec<Context> {
    common::chunked_contexts("async", (8 * COLS * 4) as u64)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_async_cross_entropy_equals_the_blocking_one_bit_for_bit() {
    let mut rng = Rng::new("async cross_entropy");
    let logits = rng.logits(ROWS * COLS, 3.0);
    let mut labels = rng.labels(ROWS, COLS);
    labels[5] = -100;
    let options = CrossEntropyOptions {
        reduction: Reduction::Mean,
        label_smoothing: 0.1,
        weight: Some((0..COLS).map(|_| 0.5 + rng.uniform() as f32).collect()),
        ..Default::default()
    };
    let expected = reference::cross_entropy(&logits, &labels, ROWS, COLS, &options).unwrap();
    for ctx in chunked_contexts() {
        let what = ctx.describe();
        let sync = ctx
            .cross_entropy(&logits, &labels, ROWS, COLS, &options)
            .unwrap();
        let out =
            pollster::block_on(ctx.cross_entropy_async(&logits, &labels, ROWS, COLS, &options))
                .unwrap();
        assert_eq!(bits(&out.grad), bits(&sync.grad), "{what}: grad");
        assert_eq!(
            bits(&out.row_loss),
            bits(&sync.row_loss),
            "{what}: row_loss"
        );
        assert_eq!(bits(&out.lse), bits(&sync.lse), "{what}: lse");
        assert_eq!(out.loss.to_bits(), sync.loss.to_bits(), "{what}: loss");
        common::assert_output_close(&what, &out, &expected, 1.0 / ROWS as f32);
    }
}

#[test]
fn the_async_targets_and_softmax_match_the_reference_for_every_strategy() {
    let mut rng = Rng::new("async targets and softmax");
    let logits = rng.logits(ROWS * COLS, 2.0);
    let probs = reference::softmax(&rng.logits(ROWS * COLS, 1.0), ROWS, COLS).unwrap();
    let options = CrossEntropyOptions {
        reduction: Reduction::Sum,
        z_loss: 1e-3,
        ..Default::default()
    };
    let expected = reference::cross_entropy_probs(&logits, &probs, ROWS, COLS, &options).unwrap();
    let p = reference::softmax(&logits, ROWS, COLS).unwrap();
    let lp = reference::log_softmax(&logits, ROWS, COLS).unwrap();
    for ctx in chunked_contexts() {
        for strategy in Strategy::all(ctx.has_subgroups()) {
            let what = format!("{} {strategy}", ctx.describe());
            let targets = Targets::Probabilities(&probs);
            let run =
                ctx.cross_entropy_targets_async(&logits, targets, ROWS, COLS, &options, strategy);
            let out = pollster::block_on(run).unwrap();
            common::assert_output_close(&what, &out, &expected, 1.0);
            let got = pollster::block_on(ctx.softmax_with_async(
                &logits,
                ROWS,
                COLS,
                SoftmaxKind::Softmax,
                strategy,
            ));
            common::assert_close(&format!("{what} softmax"), &got.unwrap(), &p, 1e-6, 1e-4);
            let got = pollster::block_on(ctx.softmax_with_async(
                &logits,
                ROWS,
                COLS,
                SoftmaxKind::LogSoftmax,
                strategy,
            ));
            common::assert_close(
                &format!("{what} log_softmax"),
                &got.unwrap(),
                &lp,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn new_async_opens_the_adapter_new_opens_and_read_back_async_reads_a_slice() {
    let ctx = pollster::block_on(Context::new_async()).unwrap();
    let blocking = Context::new().unwrap();
    assert_eq!(ctx.describe(), blocking.describe());
    eprintln!("async tests run on: {}", ctx.describe());
    let mut rng = Rng::new("async read_back");
    let data = rng.logits(64, 1.0);
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let buffer = ctx.create_buffer("data", 256, usage).unwrap();
    ctx.queue()
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&data));
    let back = pollster::block_on(ctx.read_back_async(buffer.slice(16..80))).unwrap();
    let back: Vec<f32> = bytemuck::pod_collect_to_vec(&back);
    assert_eq!(bits(&back), bits(&data[4..20]));
    // A slice that cannot be read back is the library's typed error, as in read_back.
    let e = pollster::block_on(ctx.read_back_async(buffer.slice(2..10))).unwrap_err();
    assert!(matches!(e, Error::BadBuffer { .. }), "{e}");
}

#[test]
fn bad_input_to_an_async_call_is_a_typed_error() {
    let ctx = Context::new().unwrap();
    let options = CrossEntropyOptions::default();
    let run = ctx.cross_entropy_async(&[1.0, 2.0, 3.0], &[3], 1, 3, &options);
    let e = pollster::block_on(run).unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { .. }), "{e}");
    let e = pollster::block_on(ctx.softmax_with_async(
        &[1.0; 5],
        2,
        3,
        SoftmaxKind::Softmax,
        Strategy::Auto,
    ))
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
}
