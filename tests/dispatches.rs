//! Fewer dispatches (issue 14 item 5): the batch's sums where they cost no dispatch of their
//! own, checked against the f64 reference on fresh random data, on every adapter (lavapipe
//! and llvmpipe GL in CI, and lavapipe at every emulated subgroup size), with every output
//! poisoned (NaN) first so that an element no kernel wrote fails.
//!
//! - Device path, a class-target mean over several workgroups whose labels are few beside
//!   the logits: each workgroup of the row dispatch counts the denominator itself
//!   (`BATCH_DENOMINATOR`), no batch_sum dispatch before it.
//! - Device path without a `loss` buffer: no loss-sum dispatch.
//! - Host path: one row dispatch per chunk; the loss is summed on the CPU from the row
//!   losses it reads back anyway.
//!
//! Which dispatches ran is read off the pipelines a fresh context built
//! (`Context::cached_pipelines`): a batch_sum entry point never built was never dispatched.

mod common;

use common::{Rng, assert_output_close, assert_zero_loss_and_grad, open_contexts, read};
use ml_softmax::kernels::geometry::{self, denominator_in_each_workgroup, shape_of};
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, DeviceCrossEntropy,
    DeviceTargets, Precision, Reduction, Strategy, reference,
};

/// Shapes that take the new path for a strategy: several workgroups, and few labels beside
/// the logits (`geometry::denominator_in_each_workgroup`).
fn cases(ctx: &Context) -> Vec<(Strategy, usize, usize)> {
    let mut cases = vec![
        // One lane per row: 4 workgroups of 256 lanes.
        (Strategy::Workgroup { lanes: 1 }, 1024, 100),
        // One lane per row, few rows: 8 workgroups of 8 lanes.
        (Strategy::Workgroup { lanes: 1 }, 64, 300),
        // Teams of 8 lanes, 32 rows per workgroup: 4 workgroups.
        (Strategy::Workgroup { lanes: 8 }, 100, 200),
        // A workgroup per row.
        (Strategy::Workgroup { lanes: 256 }, 10, 700),
        (Strategy::Cached { lanes: 256 }, 10, 1000),
        // The split layouts never take it (their pass 2 has no denominator sum): a mean
        // there must still be right (SplitCache once took it and summed a zero loss).
        (Strategy::Split { lanes: 256 }, 3, 40000),
        (Strategy::SplitCache { lanes: 256 }, 3, 40000),
    ];
    if ctx.subgroup_size().is_some() {
        // 64x1000: 64 / size rows per workgroup (8 workgroups at 8 lanes).
        cases.push((Strategy::Subgroup, 64, 1000));
    }
    cases
}

/// Whether the device call of `rows x cols` in `strategy` takes the new path here: more than
/// one workgroup, and the rule allows it.
fn takes_the_new_path(ctx: &Context, strategy: Strategy, rows: usize, cols: usize) -> bool {
    let (workgroup, team) = shape_of(ctx, strategy, rows as u32).unwrap();
    let workgroups = (rows as u64).div_ceil(u64::from(workgroup / team));
    workgroups > 1
        && !geometry::one_workgroup(strategy, rows as u32)
        && denominator_in_each_workgroup(strategy, rows as u32, cols as u32, workgroups, workgroup)
}

/// The caller's buffers of a device call, outputs poisoned with NaN.
struct DeviceBuffers {
    logits: wgpu::Buffer,
    targets: wgpu::Buffer,
    grad: wgpu::Buffer,
    loss: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
    probs: bool,
}

impl DeviceBuffers {
    /// `labels` (class targets) or `probs` (probability targets, `[rows, cols]`).
    fn new(ctx: &Context, logits: &[f32], labels: &[i64], probs: Option<&[f32]>) -> Self {
        use wgpu::BufferUsages as U;
        let init = |label, bytes: &[u8], usage| {
            ctx.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage,
                })
        };
        let nan = |n: usize| vec![f32::NAN; n];
        let rows = labels.len();
        let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let targets = match probs {
            Some(t) => init("targets", bytemuck::cast_slice(t), U::STORAGE),
            None => init("labels", bytemuck::cast_slice(&labels32), U::STORAGE),
        };
        let out = U::STORAGE | U::COPY_SRC;
        Self {
            logits: init("logits", bytemuck::cast_slice(logits), U::STORAGE),
            targets,
            grad: init("grad", bytemuck::cast_slice(&nan(logits.len())), out),
            loss: init(
                "loss",
                bytemuck::cast_slice(&nan(1)),
                U::COPY_DST | U::COPY_SRC,
            ),
            row_loss: init("row_loss", bytemuck::cast_slice(&nan(rows)), out),
            lse: init("lse", bytemuck::cast_slice(&nan(rows)), out),
            probs: probs.is_some(),
        }
    }

    /// Runs the call (with or without a `loss` buffer) and reads every output back; the loss
    /// is NaN (the poison) when not asked for.
    fn run(
        &self,
        ctx: &Context,
        (rows, cols): (usize, usize),
        options: &CrossEntropyOptions,
        strategy: Strategy,
        want_loss: bool,
    ) -> CrossEntropyOutput {
        let targets = self.targets.slice(..);
        let bufs = DeviceCrossEntropy {
            logits: self.logits.slice(..),
            precision: Precision::F32,
            targets: if self.probs {
                DeviceTargets::Probabilities(targets)
            } else {
                DeviceTargets::Classes(targets)
            },
            grad: Some(self.grad.slice(..)),
            loss: want_loss.then(|| self.loss.slice(..)),
            row_loss: Some(self.row_loss.slice(..)),
            lse: Some(self.lse.slice(..)),
            upstream: None,
        };
        ctx.cross_entropy_device(&bufs, rows, cols, options, strategy)
            .unwrap_or_else(|e| panic!("{rows}x{cols} {strategy}: {e}"));
        CrossEntropyOutput {
            loss: read(ctx, &self.loss)[0],
            row_loss: read(ctx, &self.row_loss),
            lse: read(ctx, &self.lse),
            grad: read(ctx, &self.grad),
        }
    }
}

/// Labels with some rows ignored (rows 1 and 5 take `ignore_index` when it is a class or
/// -100, so every option set has ignored rows).
fn labels_with_ignored(rng: &mut Rng, rows: usize, cols: usize, ignore: i64) -> Vec<i64> {
    let mut labels = rng.labels(rows, cols);
    for row in [1, 5] {
        labels[row % rows] = ignore;
    }
    labels
}

fn grad_scale(reduction: Reduction, rows: usize) -> f32 {
    match reduction {
        Reduction::Mean => 1.0 / rows as f32,
        _ => 1.0,
    }
}

/// The device path's class-target mean at shapes where each workgroup counts the denominator:
/// every option set, every reduction, with and without the loss buffer, against the
/// reference; the same bits on a second run.
#[test]
fn device_calls_count_the_denominator_in_each_workgroup() {
    let mut rng = Rng::new("dispatches device");
    let contexts = common::contexts();
    for ctx in contexts {
        for (strategy, rows, cols) in cases(ctx) {
            assert_eq!(
                takes_the_new_path(ctx, strategy, rows, cols),
                !strategy.is_split(),
                "{rows}x{cols} {strategy}: the new path is for every layout but the split ones"
            );
            // Every option set for the strategies the software adapters' table picks; the
            // defaults and all options at once for the others (pipelines cost seconds here).
            let mut sets = common::option_sets(cols, &mut rng);
            if !matches!(
                strategy,
                Strategy::Workgroup { lanes: 1 } | Strategy::Subgroup
            ) {
                sets.retain(|(name, _)| matches!(*name, "defaults" | "everything"));
            }
            let logits = rng.logits(rows * cols, 2.0);
            for (name, options) in sets {
                let labels = labels_with_ignored(&mut rng, rows, cols, options.ignore_index);
                let bufs = DeviceBuffers::new(ctx, &logits, &labels, None);
                for (reduction, options) in common::each_reduction(&options) {
                    let want =
                        reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
                    let what = format!(
                        "{} device {rows}x{cols} {strategy} {name} {reduction:?}",
                        ctx.describe()
                    );
                    let scale = grad_scale(reduction, rows);
                    let got = bufs.run(ctx, (rows, cols), &options, strategy, true);
                    assert_output_close(&what, &got, &want, scale);
                    let again = bufs.run(ctx, (rows, cols), &options, strategy, true);
                    assert_same_bits(&what, &got, &again);
                    // Without a loss buffer: no loss sum, the rest the same bits.
                    let mut without = bufs.run(ctx, (rows, cols), &options, strategy, false);
                    without.loss = got.loss;
                    assert_same_bits(&format!("{what} without loss"), &got, &without);
                }
            }
        }
    }
}

fn assert_same_bits(what: &str, a: &CrossEntropyOutput, b: &CrossEntropyOutput) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}: loss");
    assert_eq!(bits(&a.row_loss), bits(&b.row_loss), "{what}: row_loss");
    assert_eq!(bits(&a.lse), bits(&b.lse), "{what}: lse");
    assert_eq!(bits(&a.grad), bits(&b.grad), "{what}: grad");
}

/// A mean whose denominator is 0 (every row ignored, or every target weight 0) gives loss 0
/// and a zero gradient when the workgroups count the denominator themselves, too.
#[test]
fn a_zero_denominator_counted_in_each_workgroup_gives_zero() {
    let mut rng = Rng::new("dispatches zero denominator");
    for ctx in common::contexts() {
        for (strategy, rows, cols) in cases(ctx) {
            let logits = rng.logits(rows * cols, 2.0);
            let labels = rng.labels(rows, cols);
            for (labels, weight) in common::zero_denominator_cases(labels, cols) {
                let options = CrossEntropyOptions {
                    label_smoothing: 0.2,
                    weight,
                    ..Default::default()
                };
                let what = format!(
                    "{} device {rows}x{cols} {strategy} weights {}",
                    ctx.describe(),
                    options.weight.is_some()
                );
                let want =
                    reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
                assert_zero_loss_and_grad("the reference", &want);
                let bufs = DeviceBuffers::new(ctx, &logits, &labels, None);
                let got = bufs.run(ctx, (rows, cols), &options, strategy, true);
                assert_zero_loss_and_grad(&what, &got);
                assert_output_close(&what, &got, &want, 1.0);
            }
        }
    }
}

/// Probability targets on the device (the mean's denominator is the row count, known on the
/// host): every reduction, with and without the loss buffer, at the same shapes.
#[test]
fn device_probability_targets_with_and_without_the_loss() {
    let mut rng = Rng::new("dispatches probabilities");
    for ctx in common::contexts() {
        for (strategy, rows, cols) in cases(ctx) {
            let logits = rng.logits(rows * cols, 2.0);
            let targets: Vec<f32> = (0..rows)
                .flat_map(|_| {
                    let raw: Vec<f32> = (0..cols).map(|_| rng.uniform() as f32).collect();
                    let sum: f32 = raw.iter().sum();
                    raw.into_iter().map(move |x| x / sum)
                })
                .collect();
            let options = CrossEntropyOptions {
                label_smoothing: 0.1,
                z_loss: 1e-3,
                ..Default::default()
            };
            let bufs = DeviceBuffers::new(ctx, &logits, &vec![0; rows], Some(&targets));
            for (reduction, options) in common::each_reduction(&options) {
                let want = reference::cross_entropy_probs(&logits, &targets, rows, cols, &options)
                    .unwrap();
                let what = format!(
                    "{} device probabilities {rows}x{cols} {strategy} {reduction:?}",
                    ctx.describe()
                );
                let got = bufs.run(ctx, (rows, cols), &options, strategy, true);
                assert_output_close(&what, &got, &want, grad_scale(reduction, rows));
                let mut without = bufs.run(ctx, (rows, cols), &options, strategy, false);
                without.loss = got.loss;
                assert_same_bits(&format!("{what} without loss"), &got, &without);
            }
        }
    }
}

/// The host path at the same shapes (and one of several chunks): every option set and
/// reduction against the reference, the loss summed on the CPU; the same bits run after run.
#[test]
fn host_calls_sum_the_loss_on_the_cpu() {
    let mut rng = Rng::new("dispatches host");
    for ctx in common::contexts() {
        for (strategy, rows, cols) in cases(ctx) {
            let logits = rng.logits(rows * cols, 2.0);
            let mut sets = common::option_sets(cols, &mut rng);
            if !matches!(
                strategy,
                Strategy::Workgroup { lanes: 1 } | Strategy::Subgroup
            ) {
                sets.retain(|(name, _)| matches!(*name, "defaults" | "everything"));
            }
            for (name, options) in sets {
                let labels = labels_with_ignored(&mut rng, rows, cols, options.ignore_index);
                for (reduction, options) in common::each_reduction(&options) {
                    let call = || {
                        ctx.cross_entropy_with(&logits, &labels, rows, cols, &options, strategy)
                            .unwrap()
                    };
                    let got = call();
                    let want =
                        reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
                    let what = format!(
                        "{} host {rows}x{cols} {strategy} {name} {reduction:?}",
                        ctx.describe()
                    );
                    assert_output_close(&what, &got, &want, grad_scale(reduction, rows));
                    assert_same_bits(&what, &got, &call());
                }
            }
        }
    }
}

/// Which dispatches a call records, read off the pipelines a fresh context builds: the host
/// path builds its row kernel only (no batch_sum entry point), whether the batch is one
/// workgroup or several; a device mean over several workgroups with few labels builds its
/// row kernel and the loss sum (no denominator entry point), and without a loss buffer the
/// row kernel alone. Where the labels are many beside the logits, the denominator dispatch
/// is back. Results checked against the reference each time.
#[test]
fn the_pipelines_built_show_the_dispatches_recorded() {
    let mut rng = Rng::new("dispatches pipelines");
    let ctx_options = ContextOptions {
        poison_outputs: true,
        autotune: ml_softmax::Autotune::Off,
        ..Default::default()
    };
    let wg1 = Strategy::Workgroup { lanes: 1 };
    let options = CrossEntropyOptions {
        weight: Some((0..300).map(|_| 0.5 + rng.uniform() as f32).collect()),
        ..Default::default()
    };
    let check = |ctx: &Context, rng: &mut Rng, rows: usize, cols: usize, host: bool, loss| {
        let options = CrossEntropyOptions {
            weight: options.weight.as_ref().map(|w| w[..cols].to_vec()),
            ..options.clone()
        };
        let logits = rng.logits(rows * cols, 2.0);
        let labels = labels_with_ignored(rng, rows, cols, -100);
        let want = reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
        let what = format!("{} {rows}x{cols} host {host} loss {loss}", ctx.describe());
        let got = if host {
            ctx.cross_entropy_with(&logits, &labels, rows, cols, &options, wg1)
                .unwrap()
        } else {
            let mut got = DeviceBuffers::new(ctx, &logits, &labels, None).run(
                ctx,
                (rows, cols),
                &options,
                wg1,
                loss,
            );
            if !loss {
                assert!(got.loss.is_nan(), "{what}: the loss buffer was written");
                got.loss = want.loss;
            }
            got
        };
        assert_output_close(&what, &got, &want, 1.0 / rows as f32);
    };
    for ctx in open_contexts(&ctx_options) {
        // Host: 8 rows (one workgroup) and 64 rows (8 workgroups of 8 lanes): the row kernel
        // of the 8-lane workgroups, once; nothing else. (Every shape here is whole 32-byte
        // units, so every call takes the same io file.)
        check(&ctx, &mut rng, 8, 300, true, true);
        check(&ctx, &mut rng, 64, 300, true, true);
        assert_eq!(ctx.cached_pipelines(), 1, "{}: host", ctx.describe());
        // Device, 64 rows, labels few (8 * 16 <= 300): the row kernel counting D (one
        // pipeline more: WHOLE_BATCH), then the loss sum; without a loss buffer nothing new.
        assert!(denominator_in_each_workgroup(wg1, 64, 300, 8, 8));
        check(&ctx, &mut rng, 64, 300, false, false);
        assert_eq!(
            ctx.cached_pipelines(),
            2,
            "{}: device, no loss",
            ctx.describe()
        );
        check(&ctx, &mut rng, 64, 300, false, true);
        assert_eq!(ctx.cached_pipelines(), 3, "{}: device", ctx.describe());
        // Device, 64 rows of 100 (8 * 16 > 100): the denominator dispatch is back.
        assert!(!denominator_in_each_workgroup(wg1, 64, 100, 8, 8));
        check(&ctx, &mut rng, 64, 100, false, true);
        assert_eq!(
            ctx.cached_pipelines(),
            4,
            "{}: device, many labels",
            ctx.describe()
        );
    }
}
