//! Trains a small MLP on synthetic data twice from the same initial weights: once with burn's
//! `CrossEntropyLoss`, once with ml-softmax's fused loss; prints both loss curves, the final
//! test accuracy and the time per step of each.
//!
//! ```sh
//! cargo run --release -p ml-softmax-burn --example train -- --steps 300 --every 50
//! ```
//!
//! The time per step is wall clock over all steps but the first quarter (at most 10, which
//! compile the kernels), including the loss readback every `--every` steps.
//!
//! The data: `classes` Gaussian blobs in `dim` dimensions (fixed seed), 4096 training and
//! 1024 test points. The model: `dim → hidden → ReLU → classes`, Adam at 1e-2. The two runs
//! should print nearly the same curve (the losses agree to about 1e-6 per step; the
//! optimizer amplifies the difference slowly). Exits non-zero if the final losses differ by
//! more than 1e-2 relative or the accuracies by more than 2 points.

use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ml_softmax_burn::CrossEntropyOptions;

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    out: Linear,
    relu: Relu,
}

impl Mlp {
    fn new(dim: usize, hidden: usize, classes: usize, device: &Device) -> Self {
        Mlp {
            hidden: LinearConfig::new(dim, hidden).init(device),
            out: LinearConfig::new(hidden, classes).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(self.relu.forward(self.hidden.forward(x)))
    }
}

/// Command-line settings (`--name value`).
struct Args {
    steps: usize,
    every: usize,
    batch: usize,
    dim: usize,
    hidden: usize,
    classes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        steps: 300,
        every: 50,
        batch: 256,
        dim: 32,
        hidden: 128,
        classes: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let value: usize = value
            .parse()
            .map_err(|_| format!("{flag}: {value} is not a positive integer"))?;
        let slot = match flag.as_str() {
            "--steps" => &mut args.steps,
            "--every" => &mut args.every,
            "--batch" => &mut args.batch,
            "--dim" => &mut args.dim,
            "--hidden" => &mut args.hidden,
            "--classes" => &mut args.classes,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--steps --every --batch --dim --hidden --classes)"
                ));
            }
        };
        if value == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        *slot = value;
    }
    Ok(args)
}

/// `n` points of `classes` Gaussian blobs: (features `[n, dim]`, labels `[n]`).
fn blobs(n: usize, dim: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<i32>) {
    let mut state = seed;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    // The centres come from their own fixed stream, the same for the train and test sets.
    let mut centre_state = 0x5EED_u64;
    let mut centre = move || {
        centre_state ^= centre_state << 13;
        centre_state ^= centre_state >> 7;
        centre_state ^= centre_state << 17;
        ((centre_state >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * 6.0
    };
    let centres: Vec<f32> = (0..classes * dim).map(|_| centre()).collect();
    let mut x = Vec::with_capacity(n * dim);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % classes;
        y.push(class as i32);
        for d in 0..dim {
            let noise = (uniform() + uniform() + uniform() - 1.5) * 2.0;
            x.push(centres[class * dim + d] + noise);
        }
    }
    (x, y)
}

struct Data {
    x: Tensor<2>,
    y: Tensor<1, Int>,
}

fn to_device(n: usize, dim: usize, classes: usize, seed: u64, device: &Device) -> Data {
    let (x, y) = blobs(n, dim, classes, seed);
    Data {
        x: Tensor::from_data(TensorData::new(x, [n, dim]), device),
        y: Tensor::from_data(TensorData::new(y, [n]), device),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Loss {
    Burn,
    MlSoftmax,
}

struct Run {
    final_loss: f32,
    accuracy: f32,
    ms_per_step: f64,
}

fn train(model: Mlp, loss_kind: Loss, args: &Args, train: &Data, test: &Data) -> Run {
    let device = train.x.device();
    let burns = CrossEntropyLossConfig::new().init(&device);
    let options = CrossEntropyOptions::default();
    let mut optim = AdamConfig::new().init();
    let mut model = model;
    let n = train.x.dims()[0];
    let mut final_loss = f32::NAN;
    // The time per step leaves out the first steps: they compile the run's kernels.
    let warmup = (args.steps / 4).min(10);
    let mut start = Instant::now();
    for step in 1..=args.steps {
        if step == warmup + 1 {
            device.sync().expect("sync");
            start = Instant::now();
        }
        let first = ((step - 1) * args.batch) % (n - args.batch + 1);
        // burn's `slice` takes one range per sliced dimension: here the first only.
        #[allow(clippy::single_range_in_vec_init)]
        let x = train.x.clone().slice([first..first + args.batch]);
        #[allow(clippy::single_range_in_vec_init)]
        let y = train.y.clone().slice([first..first + args.batch]);
        let logits = model.forward(x);
        let loss = match loss_kind {
            Loss::Burn => burns.forward(logits, y),
            Loss::MlSoftmax => ml_softmax_burn::cross_entropy(logits, y, &options)
                .unwrap_or_else(|e| panic!("ml-softmax loss: {e}")),
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
        if step % args.every == 0 || step == args.steps {
            final_loss = loss.into_scalar::<f32>();
            println!("  step {step:5}  loss {final_loss:.6}");
        }
    }
    device.sync().expect("sync");
    let ms_per_step = start.elapsed().as_secs_f64() * 1e3 / (args.steps - warmup) as f64;
    let predicted = model.forward(test.x.clone()).argmax(1).flatten::<1>(0, 1);
    let correct = predicted
        .equal(test.y.clone())
        .int()
        .sum()
        .into_scalar::<i64>();
    let accuracy = 100.0 * correct as f32 / test.y.dims()[0] as f32;
    Run {
        final_loss,
        accuracy,
        ms_per_step,
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let device = match ml_softmax_burn::device(Device::wgpu_options(), &Default::default()) {
        Ok(device) => device.autodiff(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let train_set = to_device(4096.max(args.batch), args.dim, args.classes, 1, &device);
    let test_set = to_device(1024, args.dim, args.classes, 2, &device);
    let model = Mlp::new(args.dim, args.hidden, args.classes, &device);
    println!(
        "MLP {} → {} → {} classes, batch {}, {} steps, Adam 1e-2; device {device:?}",
        args.dim, args.hidden, args.classes, args.batch, args.steps
    );

    let mut runs = Vec::new();
    for (kind, name) in [
        (Loss::Burn, "burn's CrossEntropyLoss"),
        (Loss::MlSoftmax, "ml-softmax"),
    ] {
        println!("{name}:");
        let run = train(model.clone(), kind, &args, &train_set, &test_set);
        println!(
            "  final loss {:.6}, test accuracy {:.1} %, {:.2} ms per step",
            run.final_loss, run.accuracy, run.ms_per_step
        );
        runs.push(run);
    }
    let (a, b) = (&runs[0], &runs[1]);
    let loss_gap = (a.final_loss - b.final_loss).abs() / a.final_loss.abs().max(1e-3);
    let accuracy_gap = (a.accuracy - b.accuracy).abs();
    println!(
        "final losses differ by {:.2e} relative, accuracies by {accuracy_gap:.1} points",
        loss_gap
    );
    if !(loss_gap <= 1e-2 && accuracy_gap <= 2.0) {
        eprintln!("error: the two runs disagree (more than 1e-2 in loss or 2 points in accuracy)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
