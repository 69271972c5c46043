//! The Rust side of the Python call-overhead measurement (BENCHMARKS.md, "Python call
//! overhead"): wall time of `Context::cross_entropy` (host API: upload, dispatch, readback)
//! on one reused context, as `call_overhead.py` times `ml_softmax.Context.cross_entropy`.
//!
//! ```text
//! WGPU_BACKEND=vulkan cargo run --release -p ml-softmax-python --example host_call_timing -- 8 1000 200
//! ```

use std::time::Instant;

use ml_softmax::{Context, CrossEntropyOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [rows, cols, reps] = args[..] else {
        return Err("usage: host_call_timing ROWS COLS REPS".into());
    };
    let ctx = Context::new()?;
    // The same data as call_overhead.py: a simple deterministic pattern (the values do not
    // change the time).
    let logits: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect();
    let labels: Vec<i64> = (0..rows).map(|r| ((r * 31) % cols) as i64).collect();
    let options = CrossEntropyOptions::default();
    let mut times = Vec::with_capacity(reps);
    for i in 0..reps + 3 {
        let start = Instant::now();
        let out = ctx.cross_entropy(&logits, &labels, rows, cols, &options)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(&out);
        if i >= 3 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "rust host API {rows}x{cols}: median {:.3} ms, min {:.3} ms over {reps} calls ({})",
        times[times.len() / 2],
        times[0],
        ctx.describe()
    );
    Ok(())
}
