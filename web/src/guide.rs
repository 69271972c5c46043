//! The reductions guide's steps on the page (docs/reductions.md, section by section): each
//! step of `examples/reductions/steps.rs` (1, 2, 3, 3v, 4, 5 and 6, the crate) runs on the
//! browser's adapter at [`SHAPES`], with NaN-poisoned outputs, checked against the f64
//! reference (`steps::check_async`, compiled to wasm) and timed with performance.now()
//! around submit + a 4-byte readback. A step that cannot run on the adapter (e.g. step 4
//! without subgroups) is listed as refused, with the reason `steps::prepare` gives.

use ml_softmax::{Context, Error, wgpu};
use serde_json::{Value, json};

use crate::steps::{self, Buffers, Data, STEPS, Step};

/// The shapes the page runs every step at: many moderate rows, and a few long rows (past
/// one workgroup's 256 x 4 columns per turn, so step 5 splits them into 3 chunks). A few
/// seconds in all on SwiftShader.
pub const SHAPES: [(usize, usize); 2] = [(64, 4000), (4, 40000)];

/// Timed runs per step (the median is shown).
const REPS: u32 = 3;

/// Every step at every shape: `[{"step", "title", "shape", "section", "file", "ok",
/// "grad_error", "loss_error", "ms", "refusal"}]`, `ok` true or false where the step ran
/// (false: wrong, or an error while running, in `"error"`), null where it was refused.
pub async fn run_all(ctx: &Context, seed: u64) -> Value {
    let mut entries = Vec::new();
    for (i, &(rows, cols)) in SHAPES.iter().enumerate() {
        let data = Data::random(rows, cols, seed.wrapping_add(i as u64));
        let bufs = buffers(ctx, &data).await;
        for step in &STEPS {
            let mut entry = json!({
                "step": step.name,
                "title": step.title,
                "shape": format!("{rows}x{cols}"),
                "section": section(step),
                "file": step.file,
            });
            let outcome = match &bufs {
                Ok(bufs) => run_step(ctx, step, bufs, &data).await,
                Err(e) => json!({"ok": false, "error": format!("creating the buffers: {e}")}),
            };
            if let (Some(entry), Value::Object(outcome)) = (entry.as_object_mut(), outcome) {
                entry.extend(outcome);
            }
            entries.push(entry);
        }
    }
    Value::Array(entries)
}

/// The heading of the guide's section that explains `step` ("Step 3" for 3 and 3v).
fn section(step: &Step) -> String {
    format!("Step {}", step.name.trim_end_matches('v'))
}

/// One step at one shape: refused, wrong, or right and timed.
async fn run_step(ctx: &Context, step: &Step, bufs: &Buffers, data: &Data) -> Value {
    // Shader and pipeline errors (Tint's) of the guide's own kernels come back here rather
    // than as uncaptured errors in the console.
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let checked = match steps::prepare(ctx, step, bufs) {
        Err(refusal) => {
            drop(scope.pop());
            return json!({"ok": null, "refusal": refusal.to_string()});
        }
        Ok(prepared) => steps::check_async(ctx, &prepared, bufs, data)
            .await
            .map(|errors| (prepared, errors)),
    };
    if let Some(e) = scope.pop().await {
        return json!({"ok": false, "error": format!("wgpu: {e}")});
    }
    let (prepared, errors) = match checked {
        Ok(done) => done,
        Err(e) => return json!({"ok": false, "error": e.to_string()}),
    };
    let after = bufs.grad.slice(..4);
    let ms = crate::median_ms(ctx, REPS, after, |encoder| {
        prepared.record(ctx, bufs, encoder)
    })
    .await;
    json!({
        "ok": errors.ok(),
        "grad_error": finite(errors.grad),
        "loss_error": finite(errors.loss),
        "ms": ms.as_ref().ok(),
        "error": ms.err().map(|e| format!("timing: {e}")),
    })
}

/// JSON has no infinity (an unwritten, NaN element makes the error infinite): null.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The buffers of one shape (steps::Buffers), with wgpu's allocation errors caught as the
/// library's typed errors, and shapes past the device's buffer size refused first (the
/// visitor picks the timing's shape).
pub async fn buffers(ctx: &Context, data: &Data) -> ml_softmax::Result<Buffers> {
    let bytes = (data.rows as u64 * data.cols as u64 * 4).next_multiple_of(32);
    let limit = ctx.device().limits().max_buffer_size;
    if bytes > limit {
        return Err(Error::OutOfMemory(format!(
            "{} x {} f32 logits take {bytes} bytes; one buffer holds {limit} here",
            data.rows, data.cols
        )));
    }
    let oom = ctx
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let bufs = Buffers::new(ctx, data, steps::SPLIT_CHUNK);
    let (validation, oom) = (validation.pop(), oom.pop());
    if let Some(e) = oom.await.or(validation.await) {
        return Err(Error::OutOfMemory(e.to_string()));
    }
    Ok(bufs)
}
