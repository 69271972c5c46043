//! A batch split across every adapter of the machine (`ml_softmax::multi::MultiContext`),
//! timed against each adapter alone, with the results checked against one context.
//!
//! ```sh
//! cargo run --release --example multi_adapter -- 4096 32000 5    # rows cols repetitions
//! ```
//!
//! Prints one line per configuration: the median wall time of the host call (upload,
//! kernels, readback) over the repetitions, after one warm-up call that compiles the
//! pipelines. BENCHMARKS.md ("Several adapters in one process") has the figures.

use std::time::Instant;

use ml_softmax::multi::MultiContext;
use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, CrossEntropyOutput, Strategy,
    Targets,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let rows = args.next().transpose()?.unwrap_or(4096);
    let cols = args.next().transpose()?.unwrap_or(32000);
    let reps = args.next().transpose()?.unwrap_or(5).max(1);

    // Data: a fixed pseudo-random batch (xorshift), labels spread over the classes.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let logits: Vec<f32> = (0..rows * cols)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
        })
        .collect();
    let labels: Vec<i64> = (0..rows).map(|r| ((r * 7919) % cols) as i64).collect();
    let options = CrossEntropyOptions::default();

    let multi = MultiContext::new(BackendChoice::Auto, &ContextOptions::default())?;
    println!("{rows} x {cols} f32, mean loss + gradient, median of {reps}");
    let time = |run: &dyn Fn() -> ml_softmax::Result<CrossEntropyOutput>| {
        let first = run()?; // warm-up: compiles the pipelines
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let started = Instant::now();
            run()?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        Ok::<_, ml_softmax::Error>((times[reps / 2], first))
    };
    let mut alone = Vec::new();
    for ctx in multi.contexts() {
        let (seconds, out) = time(&|| single(ctx, &logits, &labels, rows, cols, &options))?;
        println!(
            "  one adapter   {:8.1} ms  {}",
            seconds * 1e3,
            ctx.describe()
        );
        alone.push(out);
    }
    let (seconds, split) = time(&|| {
        multi.cross_entropy_targets(
            &logits,
            Targets::Classes(&labels),
            rows,
            cols,
            &options,
            Strategy::Auto,
        )
    })?;
    println!(
        "  all {} split  {:8.1} ms",
        multi.contexts().len(),
        seconds * 1e3
    );
    // The split must give one context's results (within the tests' tolerances).
    let one = &alone[0];
    let worst = split
        .grad
        .iter()
        .zip(&one.grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "  loss {} split vs {} on one; largest gradient difference {worst:e}",
        split.loss, one.loss
    );
    if (split.loss - one.loss).abs() > 1e-4 * one.loss.abs() || worst > 1e-6 {
        return Err("the split result differs from one context's".into());
    }
    Ok(())
}

fn single(
    ctx: &Context,
    logits: &[f32],
    labels: &[i64],
    rows: usize,
    cols: usize,
    options: &CrossEntropyOptions,
) -> ml_softmax::Result<CrossEntropyOutput> {
    ctx.cross_entropy(logits, labels, rows, cols, options)
}
