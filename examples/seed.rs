//! The worked example the project grew from, on the backend you name:
//!
//! ```text
//! cargo run --release --example seed -- vulkan     # or metal, dx12, gl, auto
//! ```
//!
//! Logits z = [1, 2, 3], true class index 1: p ≈ [0.090, 0.245, 0.665], L ≈ 1.4076,
//! dL/dz = p - onehot(1) ≈ [0.090, -0.755, 0.665].

use ml_softmax::{BackendChoice, Context, ContextOptions, CrossEntropyOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend: BackendChoice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "auto".into())
        .parse()?;
    let ctx = Context::with_options(&ContextOptions {
        backend,
        ..Default::default()
    })?;
    println!("adapter: {}", ctx.describe());

    let z = [1.0f32, 2.0, 3.0];
    let p = ctx.softmax(&z, 1, 3)?;
    let out = ctx.cross_entropy(&z, &[1], 1, 3, &CrossEntropyOptions::default())?;
    println!("z     = {z:?}, true class index 1");
    println!("p     = [{:.3}, {:.3}, {:.3}]", p[0], p[1], p[2]);
    println!("L     = {:.4}", out.loss);
    let g = &out.grad;
    println!("dL/dz = [{:.3}, {:.3}, {:.3}]", g[0], g[1], g[2]);
    Ok(())
}
