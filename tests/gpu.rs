//! The GPU against the f64 CPU reference, on every adapter of the machine (lavapipe and
//! llvmpipe GL in CI), on fresh random data, with output buffers poisoned (NaN) before each
//! dispatch so that an element the kernels fail to write fails the comparison.

mod common;

use common::{
    Rng, assert_close, assert_half_output_close, assert_output_close, contexts, from_half, read,
    to_half,
};
use ml_softmax::Precision;
use ml_softmax::kernels::geometry::{self as row_softmax, cached_max_cols};
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets,
    Error, Reduction, Strategy, reference,
};

/// Runs the host API and the reference on the same input and compares them.
fn check_case(
    ctx: &Context,
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    options: &CrossEntropyOptions,
    strategy: Strategy,
) {
    let logits = rng.logits(rows * cols, 2.0);
    let labels = rng.labels(rows, cols);
    let gpu = ctx
        .cross_entropy_with(&logits, &labels, rows, cols, options, strategy)
        .unwrap_or_else(|e| panic!("{rows}x{cols} {strategy}: {e}"));
    let cpu = reference::cross_entropy(&logits, &labels, rows, cols, options).unwrap();
    let scale = match options.reduction {
        Reduction::Mean => 1.0 / rows as f32,
        _ => 1.0,
    };
    let what = format!("{} {rows}x{cols} {strategy}", ctx.adapter_info().name);
    assert_output_close(&what, &gpu, &cpu, scale);
}

#[test]
fn the_worked_example_on_every_adapter() {
    for ctx in contexts() {
        let z = [1.0f32, 2.0, 3.0];
        let out = ctx
            .cross_entropy(&z, &[1], 1, 3, &CrossEntropyOptions::default())
            .unwrap();
        let p = ctx.softmax(&z, 1, 3).unwrap();
        // The figures of the seed document, to its three decimals...
        let expect_p = [0.090, 0.245, 0.665];
        let expect_g = [0.090, -0.755, 0.665];
        for j in 0..3 {
            assert!((p[j] - expect_p[j]).abs() < 5e-4, "p[{j}] = {}", p[j]);
            assert!(
                (out.grad[j] - expect_g[j]).abs() < 5e-4,
                "grad[{j}] = {}",
                out.grad[j]
            );
        }
        assert!((out.loss - 1.4076).abs() < 1e-4, "loss = {}", out.loss);
        // ...and to f32 precision against the closed form.
        let e: Vec<f64> = z.iter().map(|&v| f64::from(v).exp()).collect();
        let sum: f64 = e.iter().sum();
        let loss = -(e[1] / sum).ln();
        assert!((f64::from(out.loss) - loss).abs() < 1e-6);
        println!("{}: seed example ok", ctx.describe());
    }
}

/// The shapes users send: every column count of the issue with 1 and 7 rows, and the
/// batch sizes with the column counts that keep the suite fast on a 2-core software adapter.
#[test]
fn matches_the_reference_across_shapes() {
    let mut rng = Rng::new("shapes");
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    for cols in [1, 2, 3, 1000, 50257, 131072, 262144] {
        shapes.push((1, cols));
        shapes.push((7, cols));
    }
    shapes.extend([(4096, 1000), (4096, 3), (70000, 1), (70000, 3), (70000, 2)]);
    for ctx in contexts() {
        for &(rows, cols) in &shapes {
            check_case(
                ctx,
                &mut rng,
                rows,
                cols,
                &CrossEntropyOptions::default(),
                Strategy::Auto,
            );
        }
        println!("{}: {} shapes ok", ctx.describe(), shapes.len());
    }
}

#[test]
fn every_reduction_matches_the_reference() {
    let mut rng = Rng::new("reductions");
    for ctx in contexts() {
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let options = CrossEntropyOptions {
                reduction,
                ..Default::default()
            };
            check_case(ctx, &mut rng, 33, 517, &options, Strategy::Auto);
        }
    }
}

/// Every strategy on every shape class (short, medium and long rows), at a small size.
#[test]
fn every_strategy_matches_the_reference() {
    let mut rng = Rng::new("strategies");
    for ctx in contexts() {
        for strategy in Strategy::all(ctx.has_subgroups()) {
            for (rows, cols) in [
                (37, 5),
                (19, 130),
                (9, 1001),
                (3, 20000),
                (300, 1),
                (1100, 7),
            ] {
                if let Strategy::Cached { lanes } = strategy
                    && cols > cached_max_cols(lanes) as usize
                {
                    // Past the register cache: a typed error, not a wrong answer.
                    let z = rng.logits(rows * cols, 2.0);
                    let labels = rng.labels(rows, cols);
                    let options = CrossEntropyOptions::default();
                    let e = ctx
                        .cross_entropy_with(&z, &labels, rows, cols, &options, strategy)
                        .unwrap_err();
                    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
                    continue;
                }
                check_case(
                    ctx,
                    &mut rng,
                    rows,
                    cols,
                    &CrossEntropyOptions::default(),
                    strategy,
                );
            }
        }
    }
}

/// `Context::resolve_strategy` names the strategy `Auto` runs (what `ml-softmax bench`
/// prints beside `auto`): the two give the same bits, and the name is a concrete strategy.
#[test]
fn auto_runs_the_strategy_resolve_strategy_names() {
    let mut rng = Rng::new("resolve_strategy");
    for ctx in contexts() {
        for (rows, cols) in [(9, 1001), (3, 20000), (64, 4096), (2, 131_072), (700, 130)] {
            let resolved = ctx.resolve_strategy(Strategy::Auto, rows, cols);
            assert_ne!(resolved, Strategy::Auto);
            assert_eq!(ctx.resolve_strategy(resolved, rows, cols), resolved);
            let z = rng.logits(rows * cols, 3.0);
            let labels = rng.labels(rows, cols);
            let options = CrossEntropyOptions::default();
            let auto = ctx
                .cross_entropy_with(&z, &labels, rows, cols, &options, Strategy::Auto)
                .unwrap();
            let named = ctx
                .cross_entropy_with(&z, &labels, rows, cols, &options, resolved)
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let what = format!("{} {rows}x{cols} auto = {resolved}", ctx.describe());
            assert_eq!(auto.loss.to_bits(), named.loss.to_bits(), "{what}");
            assert_eq!(bits(&auto.grad), bits(&named.grad), "{what}");
            assert_eq!(bits(&auto.lse), bits(&named.lse), "{what}");
        }
    }
}

/// The register cache of `Strategy::Cached` at every size a lane can hold (1 to 16 vec4s),
/// with loose columns at the row ends, options that read class weights beside the cache, and
/// softmax.
#[test]
fn the_register_cache_at_every_size() {
    let mut rng = Rng::new("register cache");
    let cached = Strategy::Cached { lanes: 32 };
    for ctx in contexts() {
        for cols in [4, 131, 258, 515, 1030, 2047, 2048] {
            let rows = 5;
            let weights: Vec<f32> = (0..cols).map(|_| rng.uniform() as f32 + 0.5).collect();
            let options = CrossEntropyOptions {
                weight: Some(weights),
                label_smoothing: 0.1,
                ..Default::default()
            };
            check_case(ctx, &mut rng, rows, cols, &options, cached);
            let z = rng.logits(rows * cols, 3.0);
            let p = ctx
                .softmax_with(&z, rows, cols, ml_softmax::SoftmaxKind::Softmax, cached)
                .unwrap();
            let want = reference::softmax(&z, rows, cols).unwrap();
            let what = format!("{} softmax {rows}x{cols} {cached}", ctx.adapter_info().name);
            assert_close(&what, &p, &want, 1e-7, 1e-4);
        }
    }
}

/// More than 65,535 workgroups: one row per workgroup forces the 2-D grid.
#[test]
fn more_rows_than_one_grid_dimension() {
    let mut rng = Rng::new("grid");
    for ctx in contexts() {
        check_case(
            ctx,
            &mut rng,
            70000,
            3,
            &CrossEntropyOptions::default(),
            Strategy::Workgroup { lanes: 256 },
        );
    }
}

/// llvmpipe ends a shader invocation's loops after 65,535 turns in all: one lane per row left
/// the end of a 262,144-column softmax row unwritten (found by the soak test). Auto must stay
/// within the limit on software adapters, an explicit strategy past it must be a typed error
/// there, and every row must be written everywhere.
#[test]
fn long_rows_stay_within_llvmpipe_loop_limit() {
    let mut rng = Rng::new("loop limit");
    let one_lane = Strategy::Workgroup { lanes: 1 };
    for ctx in contexts() {
        let name = &ctx.adapter_info().name;
        let software = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
        // The case that failed, now in steps of 4 blocks: within the limit.
        let (rows, cols) = (1, 262_144);
        let z = rng.logits(rows * cols, 2.0);
        let lp = ctx
            .softmax_with(
                &z,
                rows,
                cols,
                ml_softmax::SoftmaxKind::LogSoftmax,
                one_lane,
            )
            .unwrap();
        let want = reference::log_softmax(&z, rows, cols).unwrap();
        assert_close(
            &format!("{name} log_softmax 1x262144 wg1"),
            &lp,
            &want,
            1e-5,
            1e-5,
        );

        // Past what one lane per row can do on llvmpipe.
        let (rows, cols) = (2, 600_000);
        let z = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let options = CrossEntropyOptions::default();
        let got = ctx
            .cross_entropy(&z, &labels, rows, cols, &options)
            .unwrap();
        let want_xent = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
        assert_output_close(&format!("{name} 2x600000 auto"), &got, &want_xent, 0.5);
        let p = ctx.softmax(&z, rows, cols).unwrap();
        let want = reference::softmax(&z, rows, cols).unwrap();
        assert_close(
            &format!("{name} softmax 2x600000 auto"),
            &p,
            &want,
            1e-7,
            1e-4,
        );
        match ctx.cross_entropy_with(&z, &labels, rows, cols, &options, one_lane) {
            Err(e) if software => {
                assert!(
                    matches!(e, Error::Unsupported { .. }) && e.to_string().contains("loop turns"),
                    "{name}: {e}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) if software => panic!("{name}: wg1 over 600,000 columns must be refused"),
            Ok(got) => assert_output_close(&format!("{name} 2x600000 wg1"), &got, &want_xent, 0.5),
        }
    }
}

/// The batch sums walk all rows of a chunk in one workgroup: past 16.7 million rows its lanes
/// would take more than llvmpipe's 65,535 loop turns and the sum would silently stop short.
/// They are split into dispatches of at most 8.4 million rows; 17 million rows of one class
/// with z-loss (so every row loss is s z^2, not 0) still sum to the reference.
#[test]
fn the_loss_sums_every_one_of_17_million_rows() {
    let mut rng = Rng::new("17M rows");
    let (rows, cols) = (17_000_000, 1);
    let z = rng.logits(rows, 2.0);
    let labels = vec![0i64; rows];
    let options = CrossEntropyOptions {
        reduction: Reduction::Sum,
        z_loss: 1e-3,
        ..Default::default()
    };
    let want = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
    for ctx in contexts() {
        let got = ctx
            .cross_entropy(&z, &labels, rows, cols, &options)
            .unwrap();
        let name = &ctx.adapter_info().name;
        assert!(
            approx::relative_eq!(got.loss, want.loss, max_relative = 1e-4),
            "{name}: loss {} vs reference {}",
            got.loss,
            want.loss
        );
    }
}

#[test]
fn softmax_and_log_softmax_match_the_reference() {
    let mut rng = Rng::new("softmax");
    for ctx in contexts() {
        for (rows, cols) in [(5, 3), (64, 1000), (2, 50257)] {
            let z = rng.logits(rows * cols, 3.0);
            let p = ctx.softmax(&z, rows, cols).unwrap();
            let lp = ctx.log_softmax(&z, rows, cols).unwrap();
            assert_close(
                "softmax",
                &p,
                &reference::softmax(&z, rows, cols).unwrap(),
                1e-7,
                1e-4,
            );
            assert_close(
                "log_softmax",
                &lp,
                &reference::log_softmax(&z, rows, cols).unwrap(),
                1e-5,
                1e-5,
            );
        }
    }
}

/// A tiny chunk limit splits even small inputs into many row chunks, at offsets that are
/// not multiples of the binding alignment: the results must not change.
#[test]
fn chunked_inputs_match_the_reference() {
    let mut rng = Rng::new("chunks");
    let options = ContextOptions {
        max_chunk_bytes: Some(4096),
        poison_outputs: true,
        ..Default::default()
    };
    for ctx in common::open_contexts(&options) {
        // 4096-byte chunks hold 10 rows of 97 columns: 23 chunks, the last one partial.
        let (rows, cols) = (223, 97);
        check_case(
            &ctx,
            &mut rng,
            rows,
            cols,
            &CrossEntropyOptions::default(),
            Strategy::Auto,
        );
        let z = rng.logits(rows * cols, 2.0);
        let p = ctx.softmax(&z, rows, cols).unwrap();
        assert_close(
            "chunked softmax",
            &p,
            &reference::softmax(&z, rows, cols).unwrap(),
            1e-7,
            1e-4,
        );

        // The device API chunks inside the caller's buffers, at unaligned row offsets.
        let labels = rng.labels(rows, cols);
        let dev = DeviceRun::new(&ctx, &z, &labels);
        let got = dev.run(&ctx, rows, cols, &CrossEntropyOptions::default());
        let cpu =
            reference::cross_entropy(&z, &labels, rows, cols, &CrossEntropyOptions::default())
                .unwrap();
        assert_output_close("chunked device", &got, &cpu, 1.0 / rows as f32);
        println!("{}: chunked ok", ctx.describe());
    }
}

/// -inf is a mask; NaN and +inf poison their own row only.
#[test]
fn ieee_specials_stay_in_their_row() {
    let mut rng = Rng::new("ieee");
    for ctx in contexts() {
        let (rows, cols) = (6, 40);
        let mut z = rng.logits(rows * cols, 2.0);
        let labels: Vec<i64> = vec![3, 3, 3, 3, 3, 3];
        for j in (0..cols).step_by(3) {
            if j != 3 {
                z[cols + j] = f32::NEG_INFINITY; // row 1: masked classes
            }
        }
        z[2 * cols + 7] = f32::NAN; // row 2
        z[3 * cols + 9] = f32::INFINITY; // row 3
        let options = CrossEntropyOptions {
            reduction: Reduction::None,
            ..Default::default()
        };
        let gpu = ctx
            .cross_entropy(&z, &labels, rows, cols, &options)
            .unwrap();
        let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
        assert_output_close("ieee", &gpu, &cpu, 1.0);
        for r in [0, 1, 4, 5] {
            assert!(gpu.row_loss[r].is_finite(), "row {r} must stay finite");
            assert!(gpu.grad[r * cols..][..cols].iter().all(|g| g.is_finite()));
        }
        for r in [2, 3] {
            assert!(gpu.row_loss[r].is_nan(), "row {r} loss must be NaN");
            assert!(gpu.grad[r * cols..][..cols].iter().all(|g| g.is_nan()));
        }
        // Masked classes get probability 0, hence gradient exactly 0.
        assert!(
            (0..cols)
                .step_by(3)
                .filter(|&j| j != 3)
                .all(|j| gpu.grad[cols + j] == 0.0)
        );
    }
}

/// Device buffers in, device buffers out: the caller's buffers are poisoned first.
struct DeviceRun {
    logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    grad: wgpu::Buffer,
    loss: wgpu::Buffer,
    row_loss: wgpu::Buffer,
    lse: wgpu::Buffer,
}

impl DeviceRun {
    fn new(ctx: &Context, logits: &[f32], labels: &[i64]) -> Self {
        let d = ctx.device();
        let labels: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let init = |label, bytes: &[u8], usage| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage,
            })
        };
        use wgpu::BufferUsages as U;
        let nan = |n: usize| vec![f32::NAN; n];
        Self {
            logits: init("logits", bytemuck::cast_slice(logits), U::STORAGE),
            labels: init("labels", bytemuck::cast_slice(&labels), U::STORAGE),
            grad: init(
                "grad",
                bytemuck::cast_slice(&nan(logits.len())),
                U::STORAGE | U::COPY_SRC,
            ),
            loss: init(
                "loss",
                bytemuck::cast_slice(&nan(1)),
                U::COPY_DST | U::COPY_SRC,
            ),
            row_loss: init(
                "row_loss",
                bytemuck::cast_slice(&nan(labels.len())),
                U::STORAGE | U::COPY_SRC,
            ),
            lse: init(
                "lse",
                bytemuck::cast_slice(&nan(labels.len())),
                U::STORAGE | U::COPY_SRC,
            ),
        }
    }

    fn run(
        &self,
        ctx: &Context,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
    ) -> ml_softmax::CrossEntropyOutput {
        self.run_in(ctx, rows, cols, options, Strategy::Auto)
    }

    fn run_in(
        &self,
        ctx: &Context,
        rows: usize,
        cols: usize,
        options: &CrossEntropyOptions,
        strategy: Strategy,
    ) -> ml_softmax::CrossEntropyOutput {
        let bufs = DeviceCrossEntropy {
            logits: self.logits.slice(..),
            precision: Precision::F32,
            targets: DeviceTargets::Classes(self.labels.slice(..)),
            grad: Some(self.grad.slice(..)),
            loss: Some(self.loss.slice(..)),
            row_loss: Some(self.row_loss.slice(..)),
            lse: Some(self.lse.slice(..)),
            upstream: None,
        };
        ctx.cross_entropy_device(&bufs, rows, cols, options, strategy)
            .unwrap();
        ml_softmax::CrossEntropyOutput {
            loss: read(ctx, &self.loss)[0],
            row_loss: read(ctx, &self.row_loss),
            lse: read(ctx, &self.lse),
            grad: read(ctx, &self.grad),
        }
    }
}

#[test]
fn the_device_api_matches_the_reference() {
    let mut rng = Rng::new("device");
    for ctx in contexts() {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let (rows, cols) = (50, 300);
            let z = rng.logits(rows * cols, 2.0);
            let mut labels = rng.labels(rows, cols);
            labels[7] = -100; // ignored: the GPU computes the mean's denominator itself
            let options = CrossEntropyOptions {
                reduction,
                ..Default::default()
            };
            let got = DeviceRun::new(ctx, &z, &labels).run(ctx, rows, cols, &options);
            let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
            assert_output_close("device", &got, &cpu, 1.0 / rows as f32);
        }
    }
}

#[test]
fn results_are_bit_identical_run_after_run() {
    let mut rng = Rng::new("determinism");
    for ctx in contexts() {
        let (rows, cols) = (64, 5000);
        let z = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let options = CrossEntropyOptions::default();
        let first = ctx
            .cross_entropy(&z, &labels, rows, cols, &options)
            .unwrap();
        for _ in 0..3 {
            let again = ctx
                .cross_entropy(&z, &labels, rows, cols, &options)
                .unwrap();
            assert_eq!(first.loss.to_bits(), again.loss.to_bits());
            assert!(
                first
                    .grad
                    .iter()
                    .zip(&again.grad)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert!(
                first
                    .row_loss
                    .iter()
                    .zip(&again.row_loss)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}

#[test]
fn eight_threads_share_one_context() {
    for ctx in contexts() {
        std::thread::scope(|s| {
            for t in 0..8 {
                s.spawn(move || {
                    let mut rng = Rng::new(&format!("thread {t}"));
                    let (rows, cols) = (10 + t, 100 + 37 * t);
                    check_case(
                        ctx,
                        &mut rng,
                        rows,
                        cols,
                        &CrossEntropyOptions::default(),
                        Strategy::Auto,
                    );
                });
            }
        });
    }
}

// ---- bad input: typed errors that name the problem, never a panic ----

#[test]
fn bad_input_gives_errors_that_name_the_problem() {
    let ctx = &contexts()[0];
    let opts = CrossEntropyOptions::default();
    let e = ctx
        .cross_entropy(&[0.0; 6], &[0, 5], 2, 3, &opts)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                row: 1,
                value: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("row 1") && e.to_string().contains("label 5"),
        "{e}"
    );

    let e = ctx
        .cross_entropy(&[0.0; 5], &[0, 1], 2, 3, &opts)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                what: "logits",
                expected: 6,
                actual: 5
            }
        ),
        "{e}"
    );
    let e = ctx.cross_entropy(&[0.0; 6], &[0], 2, 3, &opts).unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { what: "labels", .. }),
        "{e}"
    );
    let e = ctx.cross_entropy(&[], &[], 0, 3, &opts).unwrap_err();
    assert!(matches!(e, Error::EmptyShape { rows: 0, cols: 3 }), "{e}");
    let e = ctx.softmax(&[], 2, 0).unwrap_err();
    assert!(matches!(e, Error::EmptyShape { .. }), "{e}");

    let bad = CrossEntropyOptions {
        label_smoothing: 1.5,
        ..Default::default()
    };
    let e = ctx.cross_entropy(&[0.0; 3], &[0], 1, 3, &bad).unwrap_err();
    assert!(e.to_string().contains("label_smoothing"), "{e}");
    let bad = CrossEntropyOptions {
        weight: Some(vec![1.0, -1.0, 1.0]),
        ..Default::default()
    };
    let e = ctx.cross_entropy(&[0.0; 3], &[0], 1, 3, &bad).unwrap_err();
    assert!(matches!(e, Error::InvalidWeight { index: 1, .. }), "{e}");
}

#[test]
fn no_matching_adapter_is_an_error_not_a_panic() {
    let e = Context::with_options(&ContextOptions {
        adapter_name: Some("no such adapter 1234".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
    assert!(e.to_string().contains("no such adapter 1234"), "{e}");
}

#[test]
fn the_subgroup_strategy_without_subgroups_is_an_error() {
    for ctx in contexts().iter().filter(|c| !c.has_subgroups()) {
        let e = ctx
            .cross_entropy_with(
                &[1.0, 2.0],
                &[0],
                1,
                2,
                &Default::default(),
                Strategy::Subgroup,
            )
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
}

// ---- the subgroup size (issue #19): 4, 8, 16, 32, 64 lanes ----
// CI runs this file on lavapipe at each size it emulates (LP_NATIVE_VECTOR_WIDTH 128 to 2048,
// .ci/run); the harness prints the size beside each adapter.

/// The subgroup strategy at the size the adapter runs: row counts around the rows per
/// workgroup the host assumes (`subgroup_shape`: 64 / size), and row lengths around one
/// block per lane (4 size columns) and one step of 4 blocks per lane (16 size), with loose
/// columns. Where the subgroup strategy is refused (no feature, a varying size, llvmpipe
/// reporting more lanes than it runs), the expected result is a typed error that says why.
#[test]
fn the_subgroup_strategy_at_the_adapters_subgroup_size() {
    let mut rng = Rng::new("subgroup size");
    for ctx in contexts() {
        let name = ctx.describe();
        let Some(size) = ctx.subgroup_size() else {
            let why = ctx.subgroup_refusal().expect("a refusal says why");
            let e = ctx
                .cross_entropy_with(
                    &[1.0; 130],
                    &[3],
                    1,
                    130,
                    &Default::default(),
                    Strategy::Subgroup,
                )
                .unwrap_err();
            assert!(matches!(e, Error::Unsupported { .. }), "{name}: {e}");
            assert!(
                e.to_string().contains(why),
                "{name}: the error says why: {e}"
            );
            eprintln!("{name}: subgroup strategy refused as expected: {why}");
            continue;
        };
        let (workgroup, team) = row_softmax::subgroup_shape(size);
        let per_workgroup = (workgroup / team) as usize;
        let s = size as usize;
        let mut cases = 0;
        for rows in [1, per_workgroup + 1, 3 * per_workgroup - 1] {
            for cols in [1, 4 * s - 1, 4 * s + 1, 16 * s, 16 * s + 5, 48 * s + 3] {
                check_case(
                    ctx,
                    &mut rng,
                    rows,
                    cols,
                    &Default::default(),
                    Strategy::Subgroup,
                );
                let z = rng.logits(rows * cols, 3.0);
                let gpu = ctx
                    .softmax_with(
                        &z,
                        rows,
                        cols,
                        ml_softmax::SoftmaxKind::Softmax,
                        Strategy::Subgroup,
                    )
                    .unwrap();
                let cpu = reference::softmax(&z, rows, cols).unwrap();
                assert_close(
                    &format!("{name} {rows}x{cols} softmax"),
                    &gpu,
                    &cpu,
                    1e-6,
                    1e-4,
                );
                cases += 1;
            }
        }
        eprintln!("{name}: subgroup strategy at {size} lanes, {cases} shapes match the reference");
    }
}

/// A standalone shader (no code of this crate): every lane of a workgroup writes the
/// `subgroup_size` builtin, `subgroupAdd(1)` (the lanes its subgroup really holds),
/// `subgroupMax(subgroup_invocation_id) + 1` and `num_subgroups`. On an adapter whose size
/// the crate relies on, all four agree with that size. On llvmpipe reporting 32 or 64 lanes
/// (LP_NATIVE_VECTOR_WIDTH 1024 or 2048) the expected result is the emulator's bug, stated
/// here so that a fixed Mesa shows up: the builtin says 32 or 64, a subgroup holds 16 lanes
/// (`context::LLVMPIPE_MAX_SUBGROUP`). That is why the subgroup strategy summed half or a
/// quarter of each row there: its lanes stride by the builtin's 32 or 64 blocks, and only 16
/// of them exist.
#[test]
fn the_subgroup_size_reported_is_the_size_run() {
    const KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) i: u32,
        @builtin(subgroup_size) size: u32,
        @builtin(subgroup_invocation_id) lane: u32,
        @builtin(num_subgroups) count: u32) {
    out[4u * i] = size;
    out[4u * i + 1u] = subgroupAdd(1u);
    out[4u * i + 2u] = subgroupMax(lane) + 1u;
    out[4u * i + 3u] = count;
}
"#;
    let mut ran = 0;
    for ctx in contexts() {
        let name = ctx.describe();
        let info = ctx.adapter_info();
        if !ctx.device().features().contains(wgpu::Features::SUBGROUP) {
            assert!(
                !ctx.has_subgroups(),
                "{name}: no feature, no subgroup strategy"
            );
            eprintln!("{name}: no Features::SUBGROUP, nothing to run");
            continue;
        }
        ran += 1;
        let workgroup = info.subgroup_max_size.max(64);
        let source = KERNEL.replace("WORKGROUP", &workgroup.to_string());
        let module = ctx
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("subgroup size test"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = ctx
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("subgroup size test"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let n = 4 * workgroup as usize;
        let out = storage_init(ctx, "out", &vec![f32::NAN; n], wgpu::BufferUsages::empty());
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: out.as_entire_binding(),
            }],
        });
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        ctx.queue().submit([encoder.finish()]);
        let got: Vec<u32> = bytemuck::cast_slice(&read(ctx, &out)).to_vec();
        let lanes: Vec<[u32; 4]> = got.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        let first = lanes[0];
        assert!(
            lanes.iter().all(|l| *l == first),
            "{name}: lanes disagree: {lanes:?}"
        );
        let [builtin, held, highest, count] = first;
        eprintln!(
            "{name}: subgroup_size builtin {builtin}, lanes held {held}, highest lane + 1 \
             {highest}, {count} subgroups per {workgroup}-lane workgroup"
        );
        let llvmpipe_refused = ctx
            .subgroup_refusal()
            .is_some_and(|why| why.starts_with("llvmpipe"));
        if let Some(size) = ctx.subgroup_size() {
            // The size the crate relies on is the size the shader runs at.
            assert_eq!(
                [builtin, held, highest, count],
                [size, size, size, workgroup / size],
                "{name}: relies on {size}-lane subgroups"
            );
        } else if llvmpipe_refused {
            // The emulator's bug, as expected: it reports more lanes than it runs.
            let real = ml_softmax::context::LLVMPIPE_MAX_SUBGROUP;
            assert_eq!(
                builtin, info.subgroup_min_size,
                "{name}: the builtin says the size reported"
            );
            assert_eq!(
                [held, highest, count],
                [real, real, workgroup / real],
                "{name}: llvmpipe ({}) was expected to run {real}-lane subgroups whatever it \
                 reports; if it now runs the {builtin} it reports, narrow the llvmpipe rule of \
                 context::usable_subgroup_size to the Mesa versions that do not",
                info.driver_info
            );
        } else {
            // A size that varies: whatever the size of this pipeline, the lanes agree on it.
            assert!(
                (info.subgroup_min_size..=info.subgroup_max_size).contains(&builtin),
                "{name}: builtin {builtin} outside the reported range"
            );
            assert_eq!([held, highest], [builtin, builtin], "{name}");
        }
    }
    eprintln!("{ran} adapter(s) with subgroups checked");
}

#[test]
fn device_buffers_of_the_wrong_size_or_usage_are_rejected() {
    let ctx = &contexts()[0];
    let d = ctx.device();
    let buffer = |size, usage| {
        d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let logits = buffer(4 * 12, storage);
    let labels = buffer(4 * 4, storage);
    let small_grad = buffer(4 * 11, storage);
    let uniform_grad = buffer(4 * 12, wgpu::BufferUsages::UNIFORM);
    let opts = CrossEntropyOptions::default();
    for (grad, needle) in [
        (&small_grad, "holds 44 bytes, needs 48"),
        (&uniform_grad, "needs usage"),
    ] {
        let bufs = DeviceCrossEntropy {
            logits: logits.slice(..),
            precision: Precision::F32,
            targets: DeviceTargets::Classes(labels.slice(..)),
            grad: Some(grad.slice(..)),
            loss: None,
            row_loss: None,
            lse: None,
            upstream: None,
        };
        let e = ctx
            .cross_entropy_device(&bufs, 4, 3, &opts, Strategy::Auto)
            .unwrap_err();
        assert!(matches!(e, Error::BadBuffer { what: "grad", .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

// ---- the options of the loss, alone and in the combinations that interact ----

/// The option sets of these tests: each option alone and two combinations that interact.
fn options_cases(cols: usize, rng: &mut Rng) -> Vec<(&'static str, CrossEntropyOptions)> {
    common::option_sets_but(cols, rng, &["defaults", "everything"])
}

#[test]
fn every_option_matches_the_reference_in_every_reduction() {
    let mut rng = Rng::new("options");
    for ctx in contexts() {
        for (rows, cols) in [(40, 13), (6, 3001)] {
            for (name, options) in options_cases(cols, &mut rng) {
                for (reduction, options) in common::each_reduction(&options) {
                    let logits = rng.logits(rows * cols, 3.0);
                    let mut labels = rng.labels(rows, cols);
                    labels[1] = 2; // at least one row hits the ignore index 2 where it is set
                    let gpu = ctx
                        .cross_entropy(&logits, &labels, rows, cols, &options)
                        .unwrap();
                    let cpu =
                        reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
                    let what = format!(
                        "{} {name} {reduction:?} {rows}x{cols}",
                        ctx.adapter_info().name
                    );
                    let scale = if reduction == Reduction::Mean {
                        1.0 / rows as f32
                    } else {
                        1.0
                    };
                    assert_output_close(&what, &gpu, &cpu, scale);
                }
            }
        }
    }
}

/// A fully ignored mean batch gives loss 0 and a zero gradient (PyTorch: NaN), on the host
/// and on the device path, where the GPU computes the denominator itself.
#[test]
fn a_fully_ignored_batch_gives_zero_not_nan() {
    let mut rng = Rng::new("all ignored");
    for ctx in contexts() {
        let (rows, cols) = (5, 9);
        let z = rng.logits(rows * cols, 2.0);
        let labels = vec![-100i64; rows];
        let options = CrossEntropyOptions::default();
        let host = ctx
            .cross_entropy(&z, &labels, rows, cols, &options)
            .unwrap();
        let device = DeviceRun::new(ctx, &z, &labels).run(ctx, rows, cols, &options);
        for out in [host, device] {
            assert!(out.row_loss.iter().all(|&l| l == 0.0));
            common::assert_zero_loss_and_grad("every row ignored", &out);
        }
    }
}

/// A batch that is one workgroup of its strategy sums itself in its row dispatch (the mean's
/// denominator, then the loss) on the device path; the host path sums the loss on the CPU,
/// so its row kernel is the plain one: two pipelines in all, and the results are the
/// reference's, through the host API and through the device API (where the GPU computes the
/// denominator), with class weights and an ignored row. Twice the rows (two workgroups):
/// each workgroup counts the denominator itself (the same whole-batch pipeline) and the
/// loss sum's dispatch is back (tests/dispatches.rs covers that path in full). Fresh
/// contexts, so that the pipeline count is this test's alone.
#[test]
fn a_batch_of_one_workgroup_sums_itself_in_one_dispatch() {
    let mut rng = Rng::new("whole batch");
    let ctx_options = ContextOptions {
        poison_outputs: true,
        ..Default::default()
    };
    let wg1 = Strategy::Workgroup { lanes: 1 };
    let cols = 1000;
    let rows = row_softmax::ROW_PER_LANE_FEW_LANES as usize - 1;
    assert!(row_softmax::one_workgroup(wg1, rows as u32));
    assert!(!row_softmax::one_workgroup(wg1, 2 * rows as u32));
    for ctx in common::open_contexts(&ctx_options) {
        let name = ctx.adapter_info().name.clone();
        let options = CrossEntropyOptions {
            weight: Some((0..cols).map(|_| 0.5 + rng.uniform() as f32).collect()),
            ..Default::default()
        };
        for (rows, pipelines) in [(rows, 2), (2 * rows, 3)] {
            let z = rng.logits(rows * cols, 2.0);
            let mut labels = rng.labels(rows, cols);
            labels[2] = -100;
            let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
            let host = ctx
                .cross_entropy_with(&z, &labels, rows, cols, &options, wg1)
                .unwrap();
            let device = DeviceRun::new(&ctx, &z, &labels).run_in(&ctx, rows, cols, &options, wg1);
            let what = format!("{name} {rows}x{cols} wg1");
            assert_output_close(&format!("{what} host"), &host, &cpu, 1.0 / rows as f32);
            assert_output_close(&format!("{what} device"), &device, &cpu, 1.0 / rows as f32);
            // The host's row kernel and the device's whole-batch one; then batch_sum's loss
            // sum (the denominator counted in each of the device call's two workgroups).
            assert_eq!(ctx.cached_pipelines(), pipelines, "{what}: pipelines built");
        }
    }
}

/// A device and queue the caller already has can be wrapped.
#[test]
fn a_context_can_wrap_an_existing_device() {
    let adapter = &ml_softmax::list_adapters(BackendChoice::Auto)[0];
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device(device, queue, &ContextOptions::default()).unwrap();
    // No SUBGROUP feature was requested, so the subgroup strategy is not used.
    assert!(!ctx.has_subgroups());
    let mut rng = Rng::new("wrapped device");
    check_case(
        &ctx,
        &mut rng,
        12,
        345,
        &CrossEntropyOptions::default(),
        Strategy::Auto,
    );
}

// ---- probability targets, in-place gradients, upstream gradients ----

fn random_targets(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut t: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() as f32).collect();
    for row in t.chunks_mut(cols) {
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= sum);
    }
    t
}

#[test]
fn probability_targets_match_the_reference() {
    let mut rng = Rng::new("probabilities");
    for ctx in contexts() {
        for (rows, cols) in [(17, 9), (5, 2049)] {
            for (name, options) in options_cases(cols, &mut rng) {
                for (reduction, options) in common::each_reduction(&options) {
                    let z = rng.logits(rows * cols, 3.0);
                    let t = random_targets(&mut rng, rows, cols);
                    let gpu = ctx
                        .cross_entropy_probs(&z, &t, rows, cols, &options)
                        .unwrap();
                    let cpu = reference::cross_entropy_probs(&z, &t, rows, cols, &options).unwrap();
                    let what = format!(
                        "{} probs {name} {reduction:?} {rows}x{cols}",
                        ctx.adapter_info().name
                    );
                    let scale = if reduction == Reduction::Mean {
                        1.0 / rows as f32
                    } else {
                        1.0
                    };
                    assert_output_close(&what, &gpu, &cpu, scale);
                }
            }
        }
    }
}

fn storage_init(
    ctx: &Context,
    label: &str,
    data: &[f32],
    extra: wgpu::BufferUsages,
) -> wgpu::Buffer {
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | extra,
        })
}

/// The gradient written over the logits, probability targets on the device, and a per-row
/// upstream gradient: each against the reference (the upstream one scaled by hand).
#[test]
fn in_place_probability_and_upstream_device_calls() {
    // `z` with PAD (a finite value no kernel writes) up to whole vec4s when `pad`.
    const PAD: f32 = 1234.5;
    fn padded(z: &[f32], pad: bool) -> Vec<f32> {
        let mut z = z.to_vec();
        if pad {
            z.resize(z.len().next_multiple_of(4), PAD);
        }
        z
    }
    // The first `n` values, after checking that the padding behind them is untouched.
    fn unpadded(mut data: Vec<f32>, n: usize) -> Vec<f32> {
        assert!(
            data[n..].iter().all(|&x| x == PAD),
            "the padding was written"
        );
        data.truncate(n);
        data
    }
    let mut rng = Rng::new("device extras");
    // The f32 io files, in place too: 23 x 301 = 6923 floats in a buffer of exactly that
    // size cannot be bound as whole vec4s (scalar io_f32.wgsl); padded to 6924 floats they
    // can (io_f32x4.wgsl, with loose columns at most row ends); 300 columns have none.
    for ((rows, cols, pad), ctx) in [(23, 301, false), (23, 301, true), (23, 300, false)]
        .into_iter()
        .flat_map(|shape| contexts().iter().map(move |ctx| (shape, ctx)))
    {
        let z = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let t = random_targets(&mut rng, rows, cols);
        let options = CrossEntropyOptions {
            reduction: Reduction::None,
            label_smoothing: 0.05,
            ..Default::default()
        };
        let up: Vec<f32> = (0..rows).map(|_| rng.normal(1.0)).collect();
        let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let label_buf = ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("labels"),
                contents: bytemuck::cast_slice(&labels32),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let target_buf = storage_init(ctx, "targets", &t, wgpu::BufferUsages::empty());
        let up_buf = storage_init(ctx, "upstream", &up, wgpu::BufferUsages::empty());
        let nan = vec![f32::NAN; rows];
        let row_loss = storage_init(ctx, "row_loss", &nan, wgpu::BufferUsages::empty());

        for probs in [false, true] {
            // The logits buffer receives the gradient: nothing else is written.
            let logits = storage_init(ctx, "logits", &padded(&z, pad), wgpu::BufferUsages::empty());
            let targets = if probs {
                DeviceTargets::Probabilities(target_buf.slice(..))
            } else {
                DeviceTargets::Classes(label_buf.slice(..))
            };
            let bufs = DeviceCrossEntropy {
                logits: logits.slice(..),
                precision: Precision::F32,
                targets,
                grad: None,
                loss: None,
                row_loss: Some(row_loss.slice(..)),
                lse: None,
                upstream: Some(up_buf.slice(..)),
            };
            ctx.cross_entropy_device(&bufs, rows, cols, &options, Strategy::Auto)
                .unwrap();
            let grad = unpadded(read(ctx, &logits), rows * cols);
            let mut cpu = if probs {
                reference::cross_entropy_probs(&z, &t, rows, cols, &options).unwrap()
            } else {
                reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap()
            };
            for (r, row) in cpu.grad.chunks_mut(cols).enumerate() {
                row.iter_mut().for_each(|g| *g *= up[r]);
            }
            let what = format!(
                "{} {rows}x{cols} (padded {pad}) in place, probs {probs}",
                ctx.adapter_info().name
            );
            assert_close(&format!("{what} grad"), &grad, &cpu.grad, 2e-6, 1e-4);
            assert_close(
                &format!("{what} row_loss"),
                &read(ctx, &row_loss),
                &cpu.row_loss,
                1e-5,
                1e-5,
            );
        }

        // Softmax in place too.
        let logits = storage_init(ctx, "logits", &padded(&z, pad), wgpu::BufferUsages::empty());
        let bufs = ml_softmax::DeviceSoftmax {
            logits: logits.slice(..),
            out: None,
            precision: Precision::F32,
            kind: ml_softmax::SoftmaxKind::Softmax,
        };
        ctx.softmax_device(&bufs, rows, cols, Strategy::Auto)
            .unwrap();
        assert_close(
            "softmax in place",
            &unpadded(read(ctx, &logits), rows * cols),
            &reference::softmax(&z, rows, cols).unwrap(),
            1e-7,
            1e-4,
        );
    }
}

// ---- half precision: f16 where the adapter has SHADER_F16, bf16 everywhere ----

#[test]
fn half_precision_logits_and_gradients() {
    let mut rng = Rng::new("half");
    for ctx in contexts() {
        let has_f16 = ctx.device().features().contains(wgpu::Features::SHADER_F16);
        for precision in [Precision::F16, Precision::Bf16] {
            // Odd row lengths put row boundaries inside bf16 words.
            for (rows, cols) in [(3, 3), (7, 1001), (4, 4096)] {
                let (bits, z) = to_half(&rng.logits(rows * cols, 2.0), precision);
                let labels = rng.labels(rows, cols);
                let options = CrossEntropyOptions {
                    label_smoothing: 0.1,
                    ..Default::default()
                };
                let got = ctx.cross_entropy_half(&ml_softmax::HalfCrossEntropy {
                    logits: &bits,
                    precision,
                    targets: ml_softmax::Targets::Classes(&labels),
                    rows,
                    cols,
                    options: &options,
                    strategy: Strategy::Auto,
                });
                if precision == Precision::F16 && !has_f16 {
                    let e = got.unwrap_err();
                    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
                    assert!(e.to_string().contains("SHADER_F16"), "{e}");
                    continue;
                }
                let got = got.unwrap();
                // The reference sees exactly the values the GPU read.
                let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
                let what = format!("{} {precision:?} {rows}x{cols}", ctx.adapter_info().name);
                assert_half_output_close(&what, &got, &cpu, precision);

                let want = reference::softmax(&z, rows, cols).unwrap();
                let shape = (rows, cols);
                common::check_half_softmax(
                    ctx,
                    &what,
                    &bits,
                    precision,
                    shape,
                    Strategy::Auto,
                    &want,
                );
            }
        }
    }
}

/// The device API on half-precision buffers: f16 in place (where the adapter has it), bf16
/// into a separate buffer, and bf16 in place refused with a clear error.
#[test]
fn half_precision_on_the_device() {
    let mut rng = Rng::new("half device");
    for ctx in contexts() {
        let has_f16 = ctx.device().features().contains(wgpu::Features::SHADER_F16);
        let (rows, cols) = (9, 333); // 2997 elements: an odd count, padded to whole words
        let labels = rng.labels(rows, cols);
        let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let label_buf = ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("labels"),
                contents: bytemuck::cast_slice(&labels32),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let options = CrossEntropyOptions::default();
        // Padded to 2998 elements (whole 4-byte words, not whole 8-byte vectors: the scalar io
        // files) or to 3000 (whole vectors: io_f16x4.wgsl / io_bf16x4.wgsl).
        let paddings = [1, 3];
        for (precision, pad) in [Precision::F16, Precision::Bf16]
            .into_iter()
            .flat_map(|p| paddings.map(|pad| (p, pad)))
        {
            if precision == Precision::F16 && !has_f16 {
                continue;
            }
            let (mut bits, z) = to_half(&rng.logits(rows * cols, 2.0), precision);
            bits.resize(bits.len() + pad, 0);
            let half_buf = |label| {
                ctx.device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::cast_slice(&bits),
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    })
            };
            let logits = half_buf("logits");
            let separate = half_buf("grad");
            let in_place = precision == Precision::F16;
            let bufs = DeviceCrossEntropy {
                logits: logits.slice(..),
                precision,
                targets: DeviceTargets::Classes(label_buf.slice(..)),
                grad: if in_place {
                    None
                } else {
                    Some(separate.slice(..))
                },
                loss: None,
                row_loss: None,
                lse: None,
                upstream: None,
            };
            ctx.cross_entropy_device(&bufs, rows, cols, &options, Strategy::Auto)
                .unwrap();
            let written = read(ctx, if in_place { &logits } else { &separate });
            let grad_bits: Vec<u16> =
                bytemuck::cast_slice::<f32, u16>(&written)[..rows * cols].to_vec();
            let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
            let rel = common::half_rel(precision);
            let what = format!(
                "{} device {precision:?} in {} elements",
                ctx.adapter_info().name,
                bits.len()
            );
            assert_close(
                &what,
                &from_half(&grad_bits, precision),
                &cpu.grad,
                1e-7,
                rel,
            );
        }
        // bf16 has no in-place variant.
        let buf = storage_init(ctx, "bf16", &[0.0; 8], wgpu::BufferUsages::empty());
        let bufs = DeviceCrossEntropy {
            logits: buf.slice(..),
            precision: Precision::Bf16,
            targets: DeviceTargets::Classes(label_buf.slice(..)),
            grad: None,
            loss: None,
            row_loss: None,
            lse: None,
            upstream: None,
        };
        let e = ctx
            .cross_entropy_device(&bufs, 2, 8, &options, Strategy::Auto)
            .unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains("bf16"),
            "{e}"
        );
    }
}

/// The io paths of software adapters (`ContextOptions::software_io`: 64-bit words, 32-byte
/// units for one lane per row, f16 converted by bit operations) and the GPUs' (32-bit words,
/// `unpack2x16float` / `pack2x16float`) give bit-identical results where they sum in the same
/// order, and results that match the reference where not; the copy kernel copies exactly in
/// both units. 64-bit words need `SHADER_INT64` (lavapipe has it, llvmpipe GL not: there
/// `words64()` must say no).
#[test]
fn both_io_paths_give_the_same_bits() {
    let mut rng = Rng::new("io paths");
    let with = |software| ContextOptions {
        poison_outputs: true,
        software_io: Some(software),
        ..Default::default()
    };
    let narrow = common::open_contexts(&with(false));
    let wide = common::open_contexts(&with(true));
    assert!(!narrow.is_empty(), "no adapter: this GPU test cannot run");
    let mut compared = 0;
    for (n, w) in narrow.iter().zip(&wide) {
        let name = w.adapter_info().name.clone();
        let int64 = w.device().features().contains(wgpu::Features::SHADER_INT64);
        assert!(
            !n.words64() && !n.f16_bits(),
            "{name}: software io was refused"
        );
        assert_eq!(w.words64(), int64, "{name}: words64 wherever SHADER_INT64");
        assert!(w.f16_bits(), "{name}: f16 by bits when asked");
        let has_f16 = w.device().features().contains(wgpu::Features::SHADER_F16);
        if !int64 && !has_f16 {
            eprintln!("{name}: no SHADER_INT64 nor SHADER_F16, one io path only");
            continue;
        }
        compared += 1;
        // 1001 columns: loose columns at both ends of most rows, around whole blocks.
        let (rows, cols) = (5, 1001);
        let z = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let options = CrossEntropyOptions::default();
        let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // f32 in 16-byte blocks (`wg8`: no 32-byte units) moves the same bits in either word.
        let run = |ctx: &Context, strategy| {
            ctx.cross_entropy_with(&z, &labels, rows, cols, &options, strategy)
                .unwrap()
        };
        let wg8 = Strategy::Workgroup { lanes: 8 };
        let (a, b) = (run(n, wg8), run(w, wg8));
        assert_output_close(&format!("{name} f32 32-bit words"), &a, &cpu, 0.2);
        same_bits(
            &format!("{name} f32 gradients"),
            &bits(&a.grad),
            &bits(&b.grad),
        );
        assert_eq!(
            a.loss.to_bits(),
            b.loss.to_bits(),
            "{name}: f32 losses differ"
        );
        // One lane per row takes 32-byte units of two blocks (io_f32x8.wgsl) with 64-bit
        // words. A row starting half-way into a unit then has 4 more head columns, summed in
        // another order, so only the reference can judge it; rows that start at a whole
        // unit (1000 columns) give the bits of the 16-byte blocks.
        let wg1 = Strategy::Workgroup { lanes: 1 };
        assert_output_close(&format!("{name} f32 units"), &run(w, wg1), &cpu, 0.2);
        let whole_z = rng.logits(rows * 1000, 2.0);
        let whole_labels = rng.labels(rows, 1000);
        let run = |ctx: &Context| {
            ctx.cross_entropy_with(&whole_z, &whole_labels, rows, 1000, &options, wg1)
                .unwrap()
        };
        let (a, b) = (run(n), run(w));
        same_bits(
            &format!("{name} f32 units, whole rows"),
            &bits(&a.grad),
            &bits(&b.grad),
        );
        // Halves the same way: 16-byte blocks (`wg8`) give the same bits; units of two
        // blocks (`wg1`, io_f16x8.wgsl / io_bf16x8.wgsl) the reference, and the same bits on
        // rows that start at a whole unit.
        for precision in [Precision::F16, Precision::Bf16] {
            if precision == Precision::F16 && !has_f16 {
                continue;
            }
            let what = format!("{name} {precision:?}");
            let half_run = |ctx: &Context, z: &[f32], labels: &[i64], cols, strategy| {
                let (half, zh) = to_half(z, precision);
                let got = ctx
                    .cross_entropy_half(&ml_softmax::HalfCrossEntropy {
                        logits: &half,
                        precision,
                        targets: ml_softmax::Targets::Classes(labels),
                        rows,
                        cols,
                        options: &options,
                        strategy,
                    })
                    .unwrap();
                let cpu = reference::cross_entropy(&zh, labels, rows, cols, &options).unwrap();
                assert_half_output_close(
                    &format!("{what} {cols} {strategy}"),
                    &got,
                    &cpu,
                    precision,
                );
                got
            };
            let (a, b) = (
                half_run(n, &z, &labels, cols, wg8),
                half_run(w, &z, &labels, cols, wg8),
            );
            same_bits(&format!("{what} gradients"), &a.grad, &b.grad);
            assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}: losses differ");
            half_run(w, &z, &labels, cols, wg1);
            let whole = |ctx| half_run(ctx, &whole_z, &whole_labels, 1000, wg1);
            let (a, b) = (whole(n), whole(w));
            same_bits(&format!("{what} units, whole rows"), &a.grad, &b.grad);
        }
        // The copy kernel, in both words, on the same (non-zero) data.
        let len = 8 * 501; // whole units of either copy
        let src_data = rng.logits(len, 2.0);
        let src = storage_init(w, "copy src", &src_data, wgpu::BufferUsages::empty());
        for words64 in [false, int64] {
            let dst = storage_init(
                w,
                "copy dst",
                &vec![f32::NAN; len],
                wgpu::BufferUsages::empty(),
            );
            let mut encoder = w.device().create_command_encoder(&Default::default());
            ml_softmax::kernels::copy::record(w, &mut encoder, &src, &dst, len as u32, words64)
                .unwrap();
            w.queue().submit([encoder.finish()]);
            assert_eq!(
                bits(&read(w, &dst)),
                bits(&src_data),
                "{name}: copy words64={words64}"
            );
        }
    }
    eprintln!("io paths compared on {compared} adapter(s)");
}

/// `a` and `b` hold the same values; a failure names the first that differs.
fn same_bits<T: PartialEq + std::fmt::Debug>(what: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        let n = (0..a.len()).filter(|&i| a[i] != b[i]).count();
        panic!(
            "{what}: {n} of {} differ, first at {i}: {:?} against {:?}",
            a.len(),
            a[i],
            b[i]
        );
    }
}

/// f16.wgsl's conversions by bit operations (io_f16x4.wgsl with `F16_BITS`, software
/// adapters) against the `half` crate: every one of the 65,536 halves to f32 (exact), and f32
/// to half (round to nearest even) for values at and around every rounding boundary of every
/// half exponent, the overflow and subnormal edges, and the specials. They use no f16 type,
/// so they run on every adapter.
#[test]
fn f16_bit_conversions_match_the_half_crate() {
    const KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> halves: array<u32>;
@group(0) @binding(1) var<storage, read_write> widened: array<u32>;
@group(0) @binding(2) var<storage, read> floats: array<f32>;
@group(0) @binding(3) var<storage, read_write> narrowed: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = 4u * (gid.x + 65535u * 64u * gid.y);
    if q + 3u < arrayLength(&halves) {
        let f = f32_of_f16(vec4<u32>(halves[q], halves[q + 1u], halves[q + 2u], halves[q + 3u]));
        for (var k = 0u; k < 4u; k++) {
            widened[q + k] = bitcast<u32>(f[k]);
        }
    }
    if q + 3u < arrayLength(&floats) {
        let h = f16_of_f32(vec4<f32>(floats[q], floats[q + 1u], floats[q + 2u], floats[q + 3u]));
        for (var k = 0u; k < 4u; k++) {
            narrowed[q + k] = h[k];
        }
    }
}
"#;
    let halves: Vec<u32> = (0..=u16::MAX).map(u32::from).collect();
    // f32 bits at every half exponent (and past both ends), around the rounding point of the
    // 13 dropped mantissa bits (0x1000 is a tie) with both parities of the kept bit.
    let mut floats: Vec<f32> = Vec::new();
    for exponent in 127 - 28..=127 + 17 {
        for mantissa in [
            0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2fff, 0x3000, 0x3001, 0x7f_e000,
            0x7f_efff, 0x7f_f000, 0x7f_f001, 0x7f_ffff, 0x12_3456, 0x55_5555,
        ] {
            let bits = (exponent << 23) | mantissa;
            floats.push(f32::from_bits(bits));
            floats.push(-f32::from_bits(bits));
        }
    }
    floats.extend([
        0.0,
        -0.0,
        65504.0,
        65519.996,
        65520.0,
        1e9,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40, // an f32 denormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let mut rng = Rng::new("f16 bits");
    floats.extend(rng.logits(4000, 1e3));
    floats.resize(floats.len().next_multiple_of(4), 1.0);
    for ctx in contexts() {
        let name = ctx.adapter_info().name.clone();
        let source = format!("{}\n{KERNEL}", include_str!("../shaders/f16.wgsl"));
        let module = ctx
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("f16 bits test"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = ctx
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("f16 bits test"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let input = |label, bytes: &[u8]| {
            ctx.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let poisoned =
            |n: usize| storage_init(ctx, "out", &vec![f32::NAN; n], wgpu::BufferUsages::empty());
        let (h_in, f_in) = (
            input("halves", bytemuck::cast_slice(&halves)),
            input("floats", bytemuck::cast_slice(&floats)),
        );
        let (h_out, f_out) = (poisoned(halves.len()), poisoned(floats.len()));
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[&h_in, &h_out, &f_in, &f_out]
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect::<Vec<_>>(),
        });
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((halves.len() / 4).div_ceil(64) as u32, 1, 1);
        }
        ctx.queue().submit([encoder.finish()]);
        let widened: Vec<u32> = bytemuck::cast_slice(&read(ctx, &h_out)).to_vec();
        for (&h, &got) in halves.iter().zip(&widened) {
            let want = half::f16::from_bits(h as u16).to_f32();
            let got = f32::from_bits(got);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{name}: half {h:#06x} -> {got:e} ({:#010x}), want {want:e}",
                got.to_bits()
            );
        }
        let narrowed: Vec<u32> = bytemuck::cast_slice(&read(ctx, &f_out)).to_vec();
        for (&v, &got) in floats.iter().zip(&narrowed) {
            let want = half::f16::from_f32(v);
            let ok = if want.is_nan() {
                (got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0 && got <= 0xffff
            } else {
                got == u32::from(want.to_bits())
            };
            assert!(
                ok,
                "{name}: {v:e} ({:#010x}) -> {got:#06x}, want {:#06x}",
                v.to_bits(),
                want.to_bits()
            );
        }
        eprintln!(
            "{name}: {} halves and {} floats converted exactly",
            halves.len(),
            floats.len()
        );
    }
}

// ---- faults: out of memory and a lost device ----

#[test]
fn a_buffer_larger_than_the_device_allows_is_an_error_and_the_context_survives() {
    for ctx in contexts() {
        let too_big = ctx.device().limits().max_buffer_size + 4;
        let e = ctx
            .create_buffer("huge", too_big, wgpu::BufferUsages::STORAGE)
            .unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        assert!(e.to_string().contains("max_buffer_size"), "{e}");
        let ok = ctx.create_buffer("small", 1024, wgpu::BufferUsages::STORAGE);
        assert!(ok.is_ok());
        let out = ctx
            .cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default())
            .unwrap();
        assert!((out.loss - 1.4076).abs() < 1e-4);
    }
}

#[test]
fn a_lost_device_is_reported_and_says_to_rebuild() {
    for ctx in common::open_contexts(&ContextOptions::default()) {
        ctx.cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default())
            .unwrap();
        ctx.device().destroy();
        let e = ctx
            .cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &Default::default())
            .unwrap_err();
        assert!(matches!(e, Error::DeviceLost(_)), "{}: {e}", ctx.describe());
        assert!(e.to_string().contains("build a new Context"), "{e}");
    }
}

#[test]
fn a_context_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Context>();
}

/// The split layout (rows over several workgroups, partials merged) with every option,
/// probability targets and softmax, on rows of 3 chunks with a ragged last chunk.
#[test]
fn the_split_layout_matches_the_reference_with_every_option() {
    let mut rng = Rng::new("split");
    let split = Strategy::Split { lanes: 256 };
    for ctx in contexts() {
        let (rows, cols) = (3, 2 * 16384 + 1001);
        for (name, options) in options_cases(cols, &mut rng) {
            let z = rng.logits(rows * cols, 3.0);
            let mut labels = rng.labels(rows, cols);
            labels[1] = 2;
            let what = format!("{} split {name}", ctx.adapter_info().name);
            let gpu = ctx
                .cross_entropy_with(&z, &labels, rows, cols, &options, split)
                .unwrap();
            let cpu = reference::cross_entropy(&z, &labels, rows, cols, &options).unwrap();
            assert_output_close(&what, &gpu, &cpu, 1.0 / rows as f32);
            let t = random_targets(&mut rng, rows, cols);
            let targets = ml_softmax::Targets::Probabilities(&t);
            let gpu = ctx
                .cross_entropy_targets(&z, targets, rows, cols, &options, split)
                .unwrap();
            let cpu = reference::cross_entropy_probs(&z, &t, rows, cols, &options).unwrap();
            assert_output_close(&format!("{what} probs"), &gpu, &cpu, 1.0 / rows as f32);
        }
        let z = rng.logits(rows * cols, 3.0);
        for log in [false, true] {
            let got = ctx
                .softmax_with(&z, rows, cols, common::softmax_kind(log), split)
                .unwrap();
            let want = if log {
                reference::log_softmax(&z, rows, cols).unwrap()
            } else {
                reference::softmax(&z, rows, cols).unwrap()
            };
            assert_close("split softmax", &got, &want, 1e-5, 1e-4);
        }
    }
}

/// A row loss of +inf (label smoothing over a masked class, as in PyTorch) keeps a summed
/// loss at +inf: the compensated batch sum must not turn it into NaN.
#[test]
fn an_infinite_row_loss_sums_to_infinity() {
    for ctx in contexts() {
        let z = [0.5, f32::NEG_INFINITY, 1.0, 0.25, 0.75, 2.0];
        let options = CrossEntropyOptions {
            label_smoothing: 0.1,
            reduction: Reduction::Sum,
            ..Default::default()
        };
        let gpu = ctx.cross_entropy(&z, &[0, 2], 2, 3, &options).unwrap();
        let cpu = reference::cross_entropy(&z, &[0, 2], 2, 3, &options).unwrap();
        assert_eq!(cpu.loss, f32::INFINITY);
        assert_eq!(gpu.loss, f32::INFINITY, "{}", ctx.describe());
        assert_eq!(gpu.row_loss[0], f32::INFINITY);
    }
}

/// A mean whose denominator D is 0 gives loss 0 and a zero gradient, on every adapter and
/// strategy, whichever way D is 0: every row ignored, or every target weight 0 while other
/// classes keep their weight (then label smoothing gives non-zero row losses, still reported).
/// The rule (a deliberate difference from PyTorch's NaN) is README's.
#[test]
fn a_zero_denominator_mean_is_zero_both_ways() {
    let mut rng = Rng::new("zero-denominator");
    let (rows, cols) = (9, 300);
    for ctx in contexts() {
        let logits = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        for (labels, weight) in common::zero_denominator_cases(labels, cols) {
            let smoothed = weight.is_some();
            let options = CrossEntropyOptions {
                label_smoothing: 0.2,
                weight,
                ..Default::default()
            };
            let want = reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
            common::assert_zero_loss_and_grad("the reference", &want);
            assert_eq!(want.row_loss.iter().all(|&r| r > 0.0), smoothed);
            for strategy in
                std::iter::once(Strategy::Auto).chain(Strategy::all(ctx.has_subgroups()))
            {
                let got = ctx
                    .cross_entropy_with(&logits, &labels, rows, cols, &options, strategy)
                    .unwrap();
                let what = format!("{} {strategy} smoothed rows {smoothed}", ctx.describe());
                common::assert_zero_loss_and_grad(&what, &got);
                assert_output_close(&what, &got, &want, 1.0);
            }
            // The device API sums D on the GPU (the whole-batch path: 9 rows are one
            // workgroup), and in separate dispatches for a batch of more rows.
            for rows in [rows, 600] {
                let logits = rng.logits(rows * cols, 2.0);
                let labels: Vec<i64> = (0..rows).map(|i| labels[i % labels.len()]).collect();
                let want =
                    reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
                let got = DeviceRun::new(ctx, &logits, &labels).run(ctx, rows, cols, &options);
                let what = format!(
                    "{} device {rows} rows, smoothed rows {smoothed}",
                    ctx.describe()
                );
                common::assert_zero_loss_and_grad(&what, &got);
                assert_output_close(&what, &got, &want, 1.0);
            }
        }
    }
}

/// A context whose pipeline cache holds 2 keeps at most 2 and still computes right: a call
/// whose pipeline was dropped builds it again.
#[test]
fn a_bounded_pipeline_cache_stays_bounded_and_correct() {
    let mut rng = Rng::new("bounded-cache");
    let (rows, cols) = (7, 300);
    for adapter in contexts() {
        let info = adapter.adapter_info();
        let ctx = Context::with_options(&ContextOptions {
            backend: match info.backend {
                wgpu::Backend::Gl => BackendChoice::Gl,
                _ => BackendChoice::Vulkan,
            },
            adapter_name: Some(info.name.clone()),
            poison_outputs: true,
            max_cached_pipelines: 2,
            ..Default::default()
        })
        .unwrap();
        let logits = rng.logits(rows * cols, 2.0);
        let labels = rng.labels(rows, cols);
        let want =
            reference::cross_entropy(&logits, &labels, rows, cols, &Default::default()).unwrap();
        let strategies = [1, 8, 32].map(|lanes| Strategy::Workgroup { lanes });
        for strategy in strategies.iter().chain(&strategies) {
            let got = ctx
                .cross_entropy_with(&logits, &labels, rows, cols, &Default::default(), *strategy)
                .unwrap();
            assert_output_close(&format!("{} {strategy}", ctx.describe()), &got, &want, 1.0);
            assert!(
                ctx.cached_pipelines() <= 2,
                "{} pipelines",
                ctx.cached_pipelines()
            );
        }
    }
}
