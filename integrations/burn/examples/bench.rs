//! One training step's loss inside burn, forward + backward, timed: burn's `CrossEntropyLoss`
//! against ml-softmax's fused loss in both gradient modes (`Keep`, `Recompute`). Prints one
//! line per shape and loss: min and median milliseconds over `--reps` steps after two warm-up
//! steps. Each step is: loss, `backward()`, the logits' gradient taken, `device.sync()`.
//!
//! ```sh
//! cargo run --release -p ml-softmax-burn --example bench -- --shapes 8192x1000,8x1000 --reps 5
//! ```

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Distribution, Int, Tensor};
use ml_softmax_burn::{CrossEntropyOptions, Gradient, Targets};

#[derive(Clone, Copy, Debug)]
enum Loss {
    Burn,
    Fused(Gradient),
}

fn step(loss: Loss, logits: &Tensor<2>, labels: &Tensor<1, Int>, device: &Device) {
    let z = logits.clone().require_grad();
    let value = match loss {
        Loss::Burn => CrossEntropyLossConfig::new()
            .init(device)
            .forward(z.clone(), labels.clone()),
        Loss::Fused(gradient) => {
            let targets = Targets::Classes(labels.clone());
            ml_softmax_burn::cross_entropy_with(
                z.clone(),
                targets,
                &CrossEntropyOptions::default(),
                gradient,
            )
            .unwrap_or_else(|e| panic!("ml-softmax loss: {e}"))
        }
    };
    let grads = value.backward();
    let grad = z.grad(&grads).expect("a gradient");
    device.sync().expect("sync");
    drop(grad);
}

fn main() {
    let mut shapes = "8192x1000,4096x4096,1024x32000,256x131072,8x1000".to_string();
    let mut reps = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--shapes" => shapes = value,
            "--reps" => reps = value.parse().expect("--reps: a number"),
            _ => panic!("unknown flag {flag} (--shapes RxC,... --reps N)"),
        }
    }
    let device = ml_softmax_burn::device(Device::wgpu_options(), &Default::default())
        .expect("a burn wgpu device")
        .autodiff();
    println!("device {device:?}; {reps} reps after 2 warm-up steps; ms per step (min / median)");
    for shape in shapes.split(',') {
        let (rows, cols) = shape
            .split_once('x')
            .and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
            .unwrap_or_else(|| panic!("bad shape {shape}: ROWSxCOLS"));
        let logits = Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 2.0), &device);
        let labels =
            Tensor::<1, Int>::random([rows], Distribution::Uniform(0.0, cols as f64), &device);
        device.sync().expect("sync");
        for loss in [
            Loss::Burn,
            Loss::Fused(Gradient::Keep),
            Loss::Fused(Gradient::Recompute),
        ] {
            for _ in 0..2 {
                step(loss, &logits, &labels, &device);
            }
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let start = Instant::now();
                    step(loss, &logits, &labels, &device);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{rows:>6} x {cols:<7} {:<22} {:9.2} / {:9.2}",
                format!("{loss:?}"),
                times[0],
                times[times.len() / 2]
            );
        }
    }
}
