//! Issue 14 item 3, reading the logits once: `Strategy::Cached` (the row held on chip between
//! the two passes) in all three storage formats, and `Strategy::SplitCache` (the split
//! layout's two passes alternating per cache-sized group of rows) against the f64 reference
//! and bit for bit against `Strategy::Split`, whose order it changes. On every adapter (the
//! harness fails when none opens), outputs poisoned with NaN first, fresh random data.
//!
//! The cache budget is made small here (`ContextOptions::split_cache_bytes`: two f32 rows) so
//! that a few rows make several groups: the default 16 MiB would need tens of MiB of logits.

mod common;

use common::{Rng, assert_close, assert_half_output_close, from_half, to_half};
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, DeviceCrossEntropy,
    DeviceTargets, Error, HalfCrossEntropy, Precision, Reduction, SoftmaxKind, Strategy, Targets,
    reference,
};

const SPLIT: Strategy = Strategy::Split { lanes: 256 };
const SPLIT_CACHE: Strategy = Strategy::SplitCache { lanes: 256 };
/// 3 chunks of the split layout per row (16,384 columns each), the last one partial.
const COLS: usize = 40_000;
/// Rows: with a budget of two f32 rows, 4 groups in f32 (2 + 2 + 2 + 1) and 2 in the
/// half formats (4 + 3).
const ROWS: usize = 7;

/// Contexts on every adapter with poisoned outputs, autotune off, and the given split cache
/// budget and chunk size; says on stderr which adapters ran.
fn budget_contexts(
    what: &str,
    split_cache_bytes: u64,
    max_chunk_bytes: Option<u64>,
) -> Vec<Context> {
    let options = ContextOptions {
        poison_outputs: true,
        autotune: ml_softmax::Autotune::Off,
        split_cache_bytes: Some(split_cache_bytes),
        max_chunk_bytes,
        ..Default::default()
    };
    common::contexts_with(&format!("read-once ({what})"), &options)
}

fn has_f16(ctx: &Context) -> bool {
    ctx.device().features().contains(wgpu::Features::SHADER_F16)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every output of two runs, bit for bit (`G`: f32 or half bits).
fn assert_same_bits<G: PartialEq + std::fmt::Debug>(
    what: &str,
    a: &CrossEntropyOutput<G>,
    b: &CrossEntropyOutput<G>,
) {
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}: loss");
    assert_eq!(bits(&a.row_loss), bits(&b.row_loss), "{what}: row losses");
    assert_eq!(bits(&a.lse), bits(&b.lse), "{what}: lse");
    assert!(a.grad == b.grad, "{what}: gradient bits differ");
}

/// A cross-entropy of `logits` (f32 values that are exact in `precision`) through the host
/// API of `precision`, the gradient as f32 values and, for the half formats, as bits.
fn run(
    ctx: &Context,
    (logits, precision): (&[f32], Precision),
    labels: &[i64],
    (rows, cols): (usize, usize),
    options: &CrossEntropyOptions,
    strategy: Strategy,
) -> Result<CrossEntropyOutput<u32>, Error> {
    let out = match precision {
        Precision::F32 => ctx
            .cross_entropy_with(logits, labels, rows, cols, options, strategy)?
            .map_grad(|g| bits(&g)),
        half => {
            let (h, _) = to_half(logits, half);
            ctx.cross_entropy_half(&HalfCrossEntropy {
                logits: &h,
                precision: half,
                targets: Targets::Classes(labels),
                rows,
                cols,
                options,
                strategy,
            })?
            .map_grad(|g| g.into_iter().map(u32::from).collect())
        }
    };
    Ok(out)
}

/// Checks `got` (gradient as bits of `precision`) against the reference of the values read;
/// `rows` sets the gradient's scale under a mean.
fn check(
    what: &str,
    got: &CrossEntropyOutput<u32>,
    (cpu, reduction, rows): (&CrossEntropyOutput, Reduction, usize),
    precision: Precision,
) {
    match precision {
        Precision::F32 => {
            let scale = match reduction {
                Reduction::Mean => 1.0 / rows as f32,
                _ => 1.0,
            };
            let f = got
                .clone()
                .map_grad(|g| g.into_iter().map(f32::from_bits).collect());
            common::assert_output_close(what, &f, cpu, scale);
        }
        half => {
            let h = got
                .clone()
                .map_grad(|g| g.into_iter().map(|b| b as u16).collect());
            assert_half_output_close(what, &h, cpu, half);
        }
    }
}

/// Softmax through the host API of `precision`, as f32 values.
fn softmax(
    ctx: &Context,
    (logits, precision): (&[f32], Precision),
    (rows, cols): (usize, usize),
    strategy: Strategy,
) -> Vec<f32> {
    let kind = SoftmaxKind::Softmax;
    match precision {
        Precision::F32 => ctx
            .softmax_with(logits, rows, cols, kind, strategy)
            .unwrap(),
        half => {
            let (h, _) = to_half(logits, half);
            let p = ctx
                .softmax_half(&h, half, rows, cols, kind, strategy)
                .unwrap();
            from_half(&p, half)
        }
    }
}

/// The precisions a context runs: f16 only with `SHADER_F16` (elsewhere a typed error).
fn precisions(ctx: &Context, rng: &mut Rng) -> Vec<Precision> {
    let mut all = vec![Precision::F32, Precision::Bf16];
    if has_f16(ctx) {
        all.push(Precision::F16);
    } else {
        let z = rng.logits(4, 1.0);
        let e = run(
            ctx,
            (&z, Precision::F16),
            &[1],
            (1, 4),
            &Default::default(),
            SPLIT_CACHE,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
    all
}

/// `SplitCache` in several groups, each format and reduction: the reference's values and
/// `Split`'s bits, cross-entropy and softmax.
#[test]
fn the_cache_ordered_split_matches_the_reference_and_split_bit_for_bit() {
    let mut rng = Rng::new("split cache");
    let budget = 2 * COLS as u64 * 4;
    for ctx in budget_contexts("split groups", budget, None) {
        let name = ctx.describe();
        for precision in precisions(&ctx, &mut rng) {
            // Values exact in the format: what the reference sees is what the GPU reads.
            let z = rng.logits(ROWS * COLS, 2.0);
            let z = match precision {
                Precision::F32 => z,
                half => to_half(&z, half).1,
            };
            let mut labels = rng.labels(ROWS, COLS);
            labels[3] = -100; // an ignored row inside a group
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let options = CrossEntropyOptions {
                    reduction,
                    label_smoothing: 0.1,
                    ..Default::default()
                };
                let what = format!("{name} {precision:?} {ROWS}x{COLS} {reduction:?}");
                let shape = (ROWS, COLS);
                let grouped = run(&ctx, (&z, precision), &labels, shape, &options, SPLIT_CACHE)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let cpu = reference::cross_entropy(&z, &labels, ROWS, COLS, &options).unwrap();
                let reference = (&cpu, reduction, ROWS);
                check(
                    &format!("{what} splitcache256"),
                    &grouped,
                    reference,
                    precision,
                );
                let split = run(&ctx, (&z, precision), &labels, shape, &options, SPLIT).unwrap();
                assert_same_bits(
                    &format!("{what}: splitcache256 vs split256"),
                    &grouped,
                    &split,
                );
            }
            let p = softmax(&ctx, (&z, precision), (ROWS, COLS), SPLIT_CACHE);
            let want = reference::softmax(&z, ROWS, COLS).unwrap();
            let rel = if precision == Precision::F32 {
                1e-4
            } else {
                common::half_rel(precision)
            };
            assert_close(
                &format!("{name} {precision:?} softmax"),
                &p,
                &want,
                1e-7,
                rel,
            );
            let q = softmax(&ctx, (&z, precision), (ROWS, COLS), SPLIT);
            assert_eq!(bits(&p), bits(&q), "{name} {precision:?}: softmax bits");
        }
    }
}

fn storage(ctx: &Context, label: &str, data: &[u8]) -> wgpu::Buffer {
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

/// Groups inside row chunks (a chunk of 3 rows, groups of one): probability targets with
/// class weights through the host API, and the device API with per-row upstream gradients
/// (which the shader finds by the group's row offset), in place.
#[test]
fn cache_groups_inside_row_chunks_with_targets_weights_and_upstream() {
    let mut rng = Rng::new("split cache chunks");
    let row_bytes = COLS as u64 * 4;
    for ctx in budget_contexts(
        "split groups in chunks",
        row_bytes,
        Some(3 * row_bytes + 256),
    ) {
        let name = ctx.describe();
        let z = rng.logits(ROWS * COLS, 2.0);
        // Probability targets, class weights, a mean.
        let mut t: Vec<f32> = (0..ROWS * COLS).map(|_| rng.uniform() as f32).collect();
        for row in t.chunks_mut(COLS) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
        let options = CrossEntropyOptions {
            weight: Some((0..COLS).map(|_| 0.5 + rng.uniform() as f32).collect()),
            ..Default::default()
        };
        let targets = Targets::Probabilities(&t);
        let go = |s| ctx.cross_entropy_targets(&z, targets, ROWS, COLS, &options, s);
        let grouped = go(SPLIT_CACHE).unwrap();
        let cpu = reference::cross_entropy_probs(&z, &t, ROWS, COLS, &options).unwrap();
        let scale = 1.0 / ROWS as f32;
        common::assert_output_close(&format!("{name} probs"), &grouped, &cpu, scale);
        assert_same_bits(
            &format!("{name} probs vs split"),
            &grouped,
            &go(SPLIT).unwrap(),
        );

        // The device API: class targets, upstream gradients, the gradient in place.
        let labels = rng.labels(ROWS, COLS);
        let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let up: Vec<f32> = (0..ROWS).map(|_| rng.normal(1.0)).collect();
        let label_buf = storage(&ctx, "labels", bytemuck::cast_slice(&labels32));
        let up_buf = storage(&ctx, "upstream", bytemuck::cast_slice(&up));
        let options = CrossEntropyOptions {
            reduction: Reduction::None,
            ..Default::default()
        };
        let device_grad = |strategy| {
            let logits = storage(&ctx, "logits", bytemuck::cast_slice(&z));
            let nan = vec![f32::NAN; ROWS];
            let row_loss = storage(&ctx, "row_loss", bytemuck::cast_slice(&nan));
            let bufs = DeviceCrossEntropy {
                logits: logits.slice(..),
                precision: Precision::F32,
                targets: DeviceTargets::Classes(label_buf.slice(..)),
                grad: None,
                loss: None,
                row_loss: Some(row_loss.slice(..)),
                lse: None,
                upstream: Some(up_buf.slice(..)),
            };
            ctx.cross_entropy_device(&bufs, ROWS, COLS, &options, strategy)
                .unwrap();
            (common::read(&ctx, &logits), common::read(&ctx, &row_loss))
        };
        let (grad, row_loss) = device_grad(SPLIT_CACHE);
        let mut cpu = reference::cross_entropy(&z, &labels, ROWS, COLS, &options).unwrap();
        for (row, u) in cpu.grad.chunks_mut(COLS).zip(&up) {
            row.iter_mut().for_each(|g| *g *= u);
        }
        assert_close(&format!("{name} device grad"), &grad, &cpu.grad, 2e-6, 1e-4);
        assert_close(
            &format!("{name} device row_loss"),
            &row_loss,
            &cpu.row_loss,
            1e-5,
            1e-5,
        );
        let (split_grad, split_loss) = device_grad(SPLIT);
        assert_eq!(
            bits(&grad),
            bits(&split_grad),
            "{name}: device gradient bits"
        );
        assert_eq!(
            bits(&row_loss),
            bits(&split_loss),
            "{name}: device row loss bits"
        );
    }
}

/// `Cached` (the row in registers, read once) in f32, bf16 and f16: the reference's values,
/// and the same bits when run again, at the longest row 256 lanes hold and a short one.
#[test]
fn the_register_cache_in_every_format() {
    let mut rng = Rng::new("cached formats");
    let cached = Strategy::Cached { lanes: 256 };
    let longest = ml_softmax::kernels::geometry::cached_max_cols(256) as usize;
    for ctx in budget_contexts(
        "cached",
        ml_softmax::kernels::geometry::SPLIT_CACHE_BYTES,
        None,
    ) {
        let name = ctx.describe();
        for precision in precisions(&ctx, &mut rng) {
            for (rows, cols) in [(5, longest), (9, 1001)] {
                let z = rng.logits(rows * cols, 2.0);
                let z = match precision {
                    Precision::F32 => z,
                    half => to_half(&z, half).1,
                };
                let labels = rng.labels(rows, cols);
                for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                    let options = CrossEntropyOptions {
                        reduction,
                        z_loss: 1e-3,
                        ..Default::default()
                    };
                    let what = format!("{name} {precision:?} {rows}x{cols} {reduction:?} {cached}");
                    let shape = (rows, cols);
                    let got = run(&ctx, (&z, precision), &labels, shape, &options, cached)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
                    check(&what, &got, (&cpu, reduction, rows), precision);
                    let again =
                        run(&ctx, (&z, precision), &labels, shape, &options, cached).unwrap();
                    assert_same_bits(&format!("{what}: twice"), &got, &again);
                }
                let p = softmax(&ctx, (&z, precision), (rows, cols), cached);
                let want = reference::softmax(&z, rows, cols).unwrap();
                let rel = if precision == Precision::F32 {
                    1e-4
                } else {
                    common::half_rel(precision)
                };
                assert_close(
                    &format!("{name} {precision:?} {rows}x{cols} softmax"),
                    &p,
                    &want,
                    1e-7,
                    rel,
                );
            }
        }
        // Past the register cache: a typed error in every format, not a wrong answer.
        let z = rng.logits(longest + 1, 1.0);
        let e = run(
            &ctx,
            (&z, Precision::Bf16),
            &[0],
            (1, longest + 1),
            &Default::default(),
            cached,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{name}: {e}");
    }
}
