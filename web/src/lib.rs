//! The browser page of ml-softmax (web/index.html): the library compiled to wasm32 and run on
//! the visitor's GPU through WebGPU, with the async API (`Context::new_async`,
//! `cross_entropy_async`, ...), since a page's thread may never block.
//!
//! Exported to JavaScript: [`Page::open`] (a promise of a page on the browser's adapter),
//! then [`Page::seed`], [`Page::batch`], [`Page::timing`], [`Page::guide`] and
//! [`Page::self_tests`], each a promise of a JSON string. The JavaScript glue
//! (web/index.html) puts them together.

mod checks;
mod guide;
// The reductions guide's steps (docs/reductions.md), shared with examples/reductions.rs and
// tests/reductions.rs; their check is async, so the page awaits it.
#[path = "../../examples/reductions/steps.rs"]
mod steps;

use std::rc::Rc;

use ml_softmax::wgpu;
use ml_softmax::{
    Context, ContextOptions, CrossEntropyOptions, DeviceCrossEntropy, SoftmaxKind, Strategy,
    reference,
};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// The page's context on the browser's adapter. Outputs are poisoned with NaN before each
/// host call, so an element a kernel fails to write cannot pass a check.
#[wasm_bindgen]
pub struct Page {
    ctx: Rc<Context>,
}

/// A library error as a JavaScript exception (its message).
fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// Runs `work` on the page's context as a promise of its JSON text.
fn promise<F>(ctx: &Rc<Context>, work: impl FnOnce(Rc<Context>) -> F + 'static) -> js_sys::Promise
where
    F: std::future::Future<Output = ml_softmax::Result<Value>> + 'static,
{
    let ctx = Rc::clone(ctx);
    future_to_promise(async move {
        let value = work(ctx).await.map_err(js_error)?;
        Ok(JsValue::from_str(&value.to_string()))
    })
}

#[wasm_bindgen]
impl Page {
    /// Opens the browser's adapter (a promise of a `Page`; rejected with the library's
    /// message when there is no WebGPU adapter).
    pub async fn open() -> Result<Page, JsValue> {
        let options = ContextOptions {
            poison_outputs: true,
            ..Default::default()
        };
        let ctx = Context::with_options_async(&options)
            .await
            .map_err(js_error)?;
        Ok(Page { ctx: Rc::new(ctx) })
    }

    /// What wgpu says of the adapter: its name (browsers give none: the library's stand-in,
    /// "unnamed BrowserWebGpu adapter") and device type; index.html adds WebGPU's adapter info.
    pub fn adapter(&self) -> String {
        let info = self.ctx.adapter_info();
        format!("{}, {:?}", info.name, info.device_type)
    }

    /// The strategies this adapter runs, `auto` first (names as `Strategy` parses them).
    pub fn strategies(&self) -> Vec<String> {
        let mut all = vec![Strategy::Auto];
        all.extend(Strategy::all(self.ctx.has_subgroups()));
        all.iter().map(ToString::to_string).collect()
    }

    /// The worked example, z = [1, 2, 3] with label 1: `{"p": [..3], "loss": x, "grad": [..3]}`.
    pub fn seed(&self) -> js_sys::Promise {
        promise(&self.ctx, |ctx| async move {
            let z = [1.0f32, 2.0, 3.0];
            let p = ctx
                .softmax_with_async(&z, 1, 3, SoftmaxKind::Softmax, Strategy::Auto)
                .await?;
            let out = ctx
                .cross_entropy_async(&z, &[1], 1, 3, &CrossEntropyOptions::default())
                .await?;
            Ok(json!({"p": p, "loss": out.loss, "grad": out.grad}))
        })
    }

    /// A random `rows x cols` batch (labels uniform, logits normal with sigma 2) through the
    /// fused kernel with `strategy`, checked against the f64 reference compiled to wasm:
    /// `{"rows", "cols", "loss", "max_abs_grad_error", "ok"}`.
    pub fn batch(&self, rows: usize, cols: usize, strategy: String, seed: u32) -> js_sys::Promise {
        promise(&self.ctx, move |ctx| async move {
            let strategy: Strategy = strategy.parse()?;
            let mut rng = checks::Rng::new(u64::from(seed));
            let logits = rng.logits(rows * cols, 2.0);
            let labels = rng.labels(rows, cols);
            let options = CrossEntropyOptions::default();
            let targets = ml_softmax::Targets::Classes(&labels);
            let out = ctx
                .cross_entropy_targets_async(&logits, targets, rows, cols, &options, strategy)
                .await?;
            let expected = reference::cross_entropy(&logits, &labels, rows, cols, &options)?;
            let verdict = checks::compare(&out, &expected, 1.0 / rows as f32);
            Ok(json!({
                "rows": rows,
                "cols": cols,
                "loss": out.loss,
                "max_abs_grad_error": verdict.max_abs_grad_error,
                "ok": verdict.problem.is_none(),
                "problem": verdict.problem,
            }))
        })
    }

    /// Times the fused kernel (device buffers, `rows x cols` f32 logits, class labels, mean
    /// loss and gradient) against a copy kernel of the same bytes, `reps` times each after
    /// one warm-up run: medians of performance.now() around submit + the readback of 4
    /// bytes that follows the work. `{"kernel_ms", "copy_ms", "timer"}`.
    pub fn timing(&self, rows: usize, cols: usize, strategy: String, reps: u32) -> js_sys::Promise {
        promise(&self.ctx, move |ctx| async move {
            let strategy: Strategy = strategy.parse()?;
            let bench = Bench::new(&ctx, rows, cols).await?;
            let after = bench.loss.slice(..);
            let kernel_ms =
                median_ms(&ctx, reps, after, |encoder| bench.fused(encoder, strategy)).await?;
            let copy_ms = median_ms(&ctx, reps, after, |encoder| bench.copy(encoder)).await?;
            Ok(json!({
                "kernel_ms": kernel_ms,
                "copy_ms": copy_ms,
                "timer": "performance.now() around submit + a 4-byte readback (median)",
            }))
        })
    }

    /// The reductions guide's steps (web/src/guide.rs, docs/reductions.md) at the guide's
    /// shapes, each checked against the f64 reference and timed, or refused with the reason:
    /// a promise of their JSON list.
    pub fn guide(&self, seed: u32) -> js_sys::Promise {
        promise(&self.ctx, move |ctx| async move {
            Ok(guide::run_all(&ctx, u64::from(seed)).await)
        })
    }

    /// The library's own checks in the browser (web/src/checks.rs): several shapes,
    /// strategies and options against the f64 reference, the typed errors.
    /// `{"passed": n, "failed": n, "checks": [{"name", "ok", "detail"}]}`.
    pub fn self_tests(&self) -> js_sys::Promise {
        promise(
            &self.ctx,
            |ctx| async move { Ok(checks::run_all(&ctx).await) },
        )
    }
}

/// The device buffers of [`Page::timing`]: those of the guide's steps (random logits and
/// labels, gradient, sizes padded to whole 32-byte units as the copy kernel wants), and the
/// reduced loss.
struct Bench<'a> {
    ctx: &'a Context,
    bufs: steps::Buffers,
    loss: wgpu::Buffer,
}

impl<'a> Bench<'a> {
    async fn new(ctx: &'a Context, rows: usize, cols: usize) -> ml_softmax::Result<Self> {
        let data = steps::Data::random(rows, cols, 1);
        let bufs = guide::buffers(ctx, &data).await?;
        let loss = ctx.create_buffer(
            "loss",
            4,
            wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        )?;
        Ok(Self { ctx, bufs, loss })
    }

    /// The fused call of the guide's step 6 (the crate), with the default options (mean):
    /// the gradient, and the reduced loss instead of the per-row ones.
    fn fused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        strategy: Strategy,
    ) -> ml_softmax::Result<()> {
        let bufs = DeviceCrossEntropy {
            loss: Some(self.loss.slice(..)),
            row_loss: None,
            ..self.bufs.device()
        };
        let (rows, cols) = self.bufs.shape();
        let options = CrossEntropyOptions::default();
        self.ctx
            .encode_cross_entropy(encoder, &bufs, rows, cols, &options, strategy)
    }

    fn copy(&self, encoder: &mut wgpu::CommandEncoder) -> ml_softmax::Result<()> {
        let (rows, cols) = self.bufs.shape();
        let len = (rows * cols) as u32;
        let (logits, grad) = (&self.bufs.logits, &self.bufs.grad);
        let words64 = self.ctx.words64();
        ml_softmax::kernels::copy::record(self.ctx, encoder, logits, grad, len, words64)
    }
}

/// The median over `reps` runs (after one untimed run that builds the pipelines) of the
/// milliseconds from submitting `record`'s work to reading back `after` (a few bytes the
/// work writes): performance.now() around submit + readback. [`Page::timing`] and the
/// guide's steps are timed so.
async fn median_ms<E: From<ml_softmax::Error>>(
    ctx: &Context,
    reps: u32,
    after: wgpu::BufferSlice<'_>,
    record: impl Fn(&mut wgpu::CommandEncoder) -> Result<(), E>,
) -> Result<f64, E> {
    let mut times = Vec::new();
    for rep in 0..=reps.max(1) {
        let start = now_ms();
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        record(&mut encoder)?;
        ctx.queue().submit([encoder.finish()]);
        ctx.read_back_async(after).await?;
        if rep > 0 {
            times.push(now_ms() - start);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// performance.now() in milliseconds (0 outside a window).
fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}
