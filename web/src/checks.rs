//! The library's checks in the browser (`index.html?tests`): what tests/async_api.rs and
//! tests/gpu.rs check natively, on the browser's WebGPU adapter through the async API.
//! Every check compares against the f64 reference on fresh random data, with outputs
//! poisoned with NaN first (the page's context has `poison_outputs`), so an unwritten element
//! fails; error checks match the library's typed errors.

use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, Error, Precision, Reduction,
    SoftmaxKind, Strategy, Targets, reference,
};
use serde_json::{Value, json};

/// SplitMix64 with Box-Muller normals: the tests' generator (tests/common), seeded by the page.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn logits(&mut self, n: usize, sigma: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
                (sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }

    pub fn labels(&mut self, rows: usize, cols: usize) -> Vec<i64> {
        (0..rows)
            .map(|_| (self.next_u64() % cols as u64) as i64)
            .collect()
    }
}

/// How a GPU output compares with the reference.
pub struct Verdict {
    /// The largest |gpu - reference| over the gradient.
    pub max_abs_grad_error: f64,
    /// The first element out of tolerance, if any.
    pub problem: Option<String>,
}

/// The first element of `gpu` not within `atol + rtol * |reference|` (NaN only equal to NaN).
fn first_mismatch(
    what: &str,
    gpu: &[f32],
    expected: &[f32],
    atol: f32,
    rtol: f32,
) -> Option<String> {
    if gpu.len() != expected.len() {
        return Some(format!(
            "{what}: {} values, expected {}",
            gpu.len(),
            expected.len()
        ));
    }
    gpu.iter()
        .zip(expected)
        .enumerate()
        .find_map(|(i, (&g, &r))| {
            let ok = if g.is_nan() || r.is_nan() {
                g.is_nan() && r.is_nan()
            } else {
                (g - r).abs() <= atol + rtol * r.abs()
            };
            (!ok).then(|| format!("{what}[{i}]: gpu {g} vs reference {r}"))
        })
}

/// A whole cross-entropy output against the reference, with the native tests' tolerances
/// (tests/common: `assert_output_close`); `grad_scale` is the size of the gradient entries.
pub fn compare(
    gpu: &CrossEntropyOutput,
    expected: &CrossEntropyOutput,
    grad_scale: f32,
) -> Verdict {
    let max_abs_grad_error = gpu
        .grad
        .iter()
        .zip(&expected.grad)
        .map(|(&g, &r)| (f64::from(g) - f64::from(r)).abs())
        .fold(0.0, |m, e| if e.is_nan() { f64::NAN } else { m.max(e) });
    let problem = first_mismatch("lse", &gpu.lse, &expected.lse, 1e-5, 1e-5)
        .or_else(|| first_mismatch("row_loss", &gpu.row_loss, &expected.row_loss, 1e-5, 1e-5))
        .or_else(|| first_mismatch("loss", &[gpu.loss], &[expected.loss], 1e-6, 2e-5))
        .or_else(|| first_mismatch("grad", &gpu.grad, &expected.grad, 2e-6 * grad_scale, 1e-4));
    Verdict {
        max_abs_grad_error,
        problem,
    }
}

type Check = Result<String, String>;

/// Sets a check's options on top of the defaults.
type SetOptions = fn(&mut CrossEntropyOptions);

/// A cross-entropy call through the async API against the reference.
async fn cross_entropy(
    ctx: &Context,
    rng: &mut Rng,
    (rows, cols): (usize, usize),
    options: &CrossEntropyOptions,
    strategy: Strategy,
    probabilities: bool,
) -> Check {
    let logits = rng.logits(rows * cols, 2.0);
    let mut labels = rng.labels(rows, cols);
    for row in (0..rows).step_by(5) {
        labels[row] = options.ignore_index; // every 5th row ignored (when the option is on)
    }
    let probs = reference::softmax(&rng.logits(rows * cols, 1.0), rows, cols).map_err(text)?;
    let (targets, expected) = if probabilities {
        let expected = reference::cross_entropy_probs(&logits, &probs, rows, cols, options);
        (Targets::Probabilities(&probs), expected)
    } else {
        let expected = reference::cross_entropy(&logits, &labels, rows, cols, options);
        (Targets::Classes(&labels), expected)
    };
    let expected = expected.map_err(text)?;
    let out = ctx
        .cross_entropy_targets_async(&logits, targets, rows, cols, options, strategy)
        .await
        .map_err(text)?;
    let scale = match options.reduction {
        Reduction::Mean => 1.0 / rows as f32,
        Reduction::Sum | Reduction::None => 1.0,
    };
    let verdict = compare(&out, &expected, scale);
    match verdict.problem {
        None => Ok(format!("max |grad error| {:e}", verdict.max_abs_grad_error)),
        Some(problem) => Err(problem),
    }
}

/// Softmax or log-softmax through the async API against the reference.
async fn softmax(ctx: &Context, rng: &mut Rng, rows: usize, cols: usize, log: bool) -> Check {
    let logits = rng.logits(rows * cols, 3.0);
    let kind = if log {
        SoftmaxKind::LogSoftmax
    } else {
        SoftmaxKind::Softmax
    };
    let got = ctx
        .softmax_with_async(&logits, rows, cols, kind, Strategy::Auto)
        .await
        .map_err(text)?;
    let expected = if log {
        reference::log_softmax(&logits, rows, cols)
    } else {
        reference::softmax(&logits, rows, cols)
    }
    .map_err(text)?;
    match first_mismatch("out", &got, &expected, 1e-5, 1e-4) {
        None => Ok(format!("{} values", got.len())),
        Some(problem) => Err(problem),
    }
}

/// `result` is the error `expected` says, containing `needle`.
fn expect_error<T>(
    result: ml_softmax::Result<T>,
    expected: fn(&Error) -> bool,
    needle: &str,
) -> Check {
    match result {
        Ok(_) => Err("succeeded; an error was expected".into()),
        Err(e) if expected(&e) && e.to_string().contains(needle) => Ok(e.to_string()),
        Err(e) => Err(format!("the wrong error: {e}")),
    }
}

/// A device-API cross-entropy of f16 logits: what an adapter without `SHADER_F16` refuses.
fn f16_device_call(ctx: &Context) -> ml_softmax::Result<()> {
    let usage = ml_softmax::wgpu::BufferUsages::STORAGE | ml_softmax::wgpu::BufferUsages::COPY_DST;
    let logits = ctx.create_buffer("f16 logits", 8, usage)?;
    let labels = ctx.create_buffer("labels", 4, usage)?;
    let bufs = ml_softmax::DeviceCrossEntropy {
        logits: logits.slice(..),
        precision: Precision::F16,
        targets: ml_softmax::DeviceTargets::Classes(labels.slice(..)),
        grad: None,
        loss: None,
        row_loss: None,
        lse: None,
        upstream: None,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_cross_entropy(
        &mut encoder,
        &bufs,
        1,
        3,
        &Default::default(),
        Strategy::Auto,
    )
}

/// Class weights for 777 classes: 0.25 to 1.75.
fn class_weights() -> Vec<f32> {
    (0..777).map(|i| 0.25 + (i % 7) as f32 * 0.25).collect()
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Every check, in order: `{"passed", "failed", "skipped", "checks": [...]}`.
pub async fn run_all(ctx: &Context) -> Value {
    let mut rng = Rng::new(js_sys::Date::now() as u64);
    let mut checks: Vec<(String, Check)> = Vec::new();
    let mut skipped = Vec::new();
    let defaults = CrossEntropyOptions::default();

    // Shapes (short rows to one long row, several workgroups per row) on every strategy.
    let mut strategies = vec![Strategy::Auto];
    strategies.extend(Strategy::all(ctx.has_subgroups()));
    for shape in [(1, 3), (7, 1000), (33, 4097), (3, 40000)] {
        for &strategy in &strategies {
            let name = format!("cross_entropy {}x{} {strategy}", shape.0, shape.1);
            let result = cross_entropy(ctx, &mut rng, shape, &defaults, strategy, false).await;
            // A strategy's typed refusal of a shape it cannot hold (cached rows past its
            // registers) is listed as skipped, not passed.
            match result {
                Err(e) if e.contains("cannot do this: strategy") => {
                    skipped.push(format!("{name}: {e}"));
                }
                result => checks.push((name, result)),
            }
        }
    }
    // Options, one at a time and all together, for each reduction: each case sets its
    // options on top of the reduction's defaults.
    let cases: [(&str, SetOptions); 7] = [
        ("ignore_index -100", |_| {}),
        ("ignore_index 3", |o| o.ignore_index = 3),
        ("label_smoothing 0.1", |o| o.label_smoothing = 0.1),
        ("class weights", |o| o.weight = Some(class_weights())),
        ("z_loss 1e-3", |o| o.z_loss = 1e-3),
        ("softcap 5", |o| o.softcap = 5.0),
        ("all options", |o| {
            o.label_smoothing = 0.1;
            o.weight = Some(class_weights());
            o.z_loss = 1e-3;
            o.softcap = 20.0;
        }),
    ];
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (what, set) in cases {
            let mut options = CrossEntropyOptions {
                reduction,
                ..Default::default()
            };
            set(&mut options);
            let name = format!("cross_entropy 19x777 {what}, {reduction:?}");
            let result =
                cross_entropy(ctx, &mut rng, (19, 777), &options, Strategy::Auto, false).await;
            checks.push((name, result));
        }
        let options = CrossEntropyOptions {
            reduction,
            label_smoothing: 0.05,
            ..Default::default()
        };
        let name = format!("probability targets 19x777 with smoothing, {reduction:?}");
        let result = cross_entropy(ctx, &mut rng, (19, 777), &options, Strategy::Auto, true).await;
        checks.push((name, result));
    }
    for (rows, cols) in [(5, 3), (16, 32000)] {
        for log in [false, true] {
            let name = format!(
                "{} {rows}x{cols}",
                if log { "log_softmax" } else { "softmax" }
            );
            checks.push((name, softmax(ctx, &mut rng, rows, cols, log).await));
        }
    }

    // Chunks: a context whose calls split 37 x 1000 into chunks of 8 rows (five awaited
    // readbacks in one call).
    let chunked = ContextOptions {
        poison_outputs: true,
        max_chunk_bytes: Some(8 * 1000 * 4),
        ..Default::default()
    };
    let result = match Context::with_options_async(&chunked).await {
        Ok(small) => {
            cross_entropy(
                &small,
                &mut rng,
                (37, 1000),
                &defaults,
                Strategy::Auto,
                false,
            )
            .await
        }
        Err(e) => Err(e.to_string()),
    };
    checks.push(("cross_entropy 37x1000 in chunks of 8 rows".into(), result));

    // Typed errors.
    let bad_label = ctx
        .cross_entropy_async(&[1.0, 2.0, 3.0], &[3], 1, 3, &defaults)
        .await;
    let is_label = |e: &Error| matches!(e, Error::LabelOutOfRange { .. });
    checks.push((
        "a label out of range is LabelOutOfRange".into(),
        expect_error(bad_label, is_label, "3"),
    ));
    let unsupported = |e: &Error| matches!(e, Error::Unsupported { .. });
    let blocking = ctx.cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &defaults);
    checks.push((
        "a blocking call in the browser is Unsupported, naming the async API".into(),
        expect_error(blocking, unsupported, "async"),
    ));
    if ctx
        .device()
        .features()
        .contains(ml_softmax::wgpu::Features::SHADER_F16)
    {
        skipped.push("f16 without SHADER_F16 (this adapter has SHADER_F16)".to_string());
    } else {
        // The device API (it records without waiting; the host API's half calls block).
        let half = f16_device_call(ctx);
        checks.push((
            "f16 without SHADER_F16 is Unsupported".into(),
            expect_error(half, unsupported, "SHADER_F16"),
        ));
    }

    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    json!({
        "adapter": ctx.describe(),
        "passed": checks.len() - failed,
        "failed": failed,
        "skipped": skipped,
        "checks": checks
            .into_iter()
            .map(|(name, result)| {
                let ok = result.is_ok();
                let detail = result.unwrap_or_else(|e| e);
                json!({"name": name, "ok": ok, "detail": detail})
            })
            .collect::<Vec<_>>(),
    })
}
