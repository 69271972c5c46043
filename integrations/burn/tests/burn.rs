//! The burn loss against ml-softmax's f64 reference (every option, reduction, both kinds of
//! targets, both gradient modes, f16), against burn's own `CrossEntropyLoss` where the two
//! agree, on tensors produced by still-pending burn ops, and its typed errors.
//!
//! Every test runs on every wgpu adapter burn opens (lavapipe, and llvmpipe GL where burn's
//! runtime comes up on it), prints which, and fails when none opens. Outputs are NaN-filled
//! before the kernel writes them (`poison_outputs`), and the data are fresh random values each
//! run (the seed is printed; `ML_SOFTMAX_SEED` replays).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::wgpu::{MemoryConfiguration, WgpuBackend};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::{Rng, assert_close, option_sets};
use ml_softmax::reference;
use ml_softmax_burn::{
    ContextOptions, CrossEntropyOptions, Error, Gradient, Reduction, Targets, cross_entropy,
    cross_entropy_probs, cross_entropy_with,
};

/// A burn wgpu device with the loss registered, and what it can hold.
struct Dev {
    name: String,
    device: Device,
    f16: bool,
}

/// Every graphics API on which burn's wgpu runtime opens a device. Panics, saying how to get
/// an adapter, when none does: these tests never pass without running.
fn devices() -> &'static [Dev] {
    static DEVICES: OnceLock<Vec<Dev>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let mut err = std::io::stderr();
        let mut all = Vec::new();
        for api in [WgpuBackend::Vulkan, WgpuBackend::Gl] {
            let options = Device::wgpu_options()
                .graphics_api(api)
                .memory_config(MemoryConfiguration::ExclusivePages);
            // cubecl panics on some refusals instead of returning them.
            let opened = catch_unwind(AssertUnwindSafe(|| options.init_with_setup()));
            let (device, setup) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    let _ = writeln!(err, "burn tests: no {api:?} device: {e}");
                    continue;
                }
                Err(_) => {
                    let _ = writeln!(err, "burn tests: opening {api:?} panicked");
                    continue;
                }
            };
            let poison = ContextOptions {
                poison_outputs: true,
                ..Default::default()
            };
            ml_softmax_burn::register(&device, &setup, &poison).expect("register");
            let info = setup.adapter.get_info();
            let f16 = setup.device.features().contains(wgpu_f16());
            let name = format!("{} ({:?}, {})", info.name, info.backend, info.driver_info);
            let _ = writeln!(err, "burn tests run on: {name}; f16: {f16}");
            all.push(Dev { name, device, f16 });
        }
        assert!(
            !all.is_empty(),
            "no wgpu adapter opened a burn device: the tests cannot run. On Debian/Ubuntu \
             install Mesa's software Vulkan driver: `apt-get install -y mesa-vulkan-drivers \
             libvulkan1`"
        );
        all
    })
}

fn wgpu_f16() -> ml_softmax::wgpu::Features {
    ml_softmax::wgpu::Features::SHADER_F16
}

fn floats<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn ints(values: &[i64], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i32> = values.iter().map(|&v| v as i32).collect();
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// A batch whose labels include the option sets' ignore index (2) in about a tenth of rows.
fn batch(rng: &mut Rng, rows: usize, cols: usize) -> (Vec<f32>, Vec<i64>) {
    let logits = rng.logits(rows * cols, 2.0);
    let labels = (0..rows)
        .map(|_| {
            if rng.below(10) == 0 {
                2
            } else {
                rng.below(cols) as i64
            }
        })
        .collect();
    (logits, labels)
}

/// The upstream gradient each reduction's loss gets in the tests: `c` on a reduced loss,
/// `u[r]` on row r's loss, so that a backward ignoring it fails.
fn upstream(rng: &mut Rng, reduction: Reduction, rows: usize) -> Vec<f32> {
    let len = if reduction == Reduction::None {
        rows
    } else {
        1
    };
    (0..len).map(|_| 0.5 + 2.0 * rng.uniform() as f32).collect()
}

/// The reference gradient scaled by the upstream gradient (per row, or one scalar).
fn scaled(grad: &[f32], up: &[f32], cols: usize) -> Vec<f32> {
    grad.iter()
        .enumerate()
        .map(|(i, g)| g * up[if up.len() == 1 { 0 } else { i / cols }])
        .collect()
}

/// Runs the loss and its backward (`sum(loss * up)`), checks both against `want`.
fn check(
    what: &str,
    dev: &Dev,
    (logits, shape): (&[f32], [usize; 2]),
    targets: impl Fn(&Device) -> Targets,
    options: &CrossEntropyOptions,
    want: &reference::CrossEntropyOutput,
    up: &[f32],
) {
    let cols = shape[1];
    let want_loss = match options.reduction {
        Reduction::None => want.row_loss.clone(),
        _ => vec![want.loss],
    };
    let want_grad = scaled(&want.grad, up, cols);
    let grad_scale = want_grad.iter().fold(0f32, |m, g| m.max(g.abs())).max(1e-3);
    for gradient in [Gradient::Keep, Gradient::Recompute] {
        let what = format!("{what} {gradient:?} on {}", dev.name);
        let device = dev.device.clone().autodiff();
        let z = floats(logits, shape, &device).require_grad();
        let loss = cross_entropy_with(z.clone(), targets(&device), options, gradient)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let weighted = loss.clone() * floats(up, [up.len()], &device);
        let grads = weighted.sum().backward();
        let grad = z
            .grad(&grads)
            .unwrap_or_else(|| panic!("{what}: no gradient"));
        assert_close(&format!("{what} loss"), &host(loss), &want_loss, 1e-5, 2e-5);
        assert_close(
            &format!("{what} grad"),
            &host(grad),
            &want_grad,
            2e-6 * grad_scale,
            1e-4,
        );
    }
}

#[test]
fn class_targets_match_the_reference_for_every_option_and_reduction() {
    let mut rng = Rng::new("class_targets");
    let (rows, cols) = (67, 37);
    for dev in devices() {
        let (logits, labels) = batch(&mut rng, rows, cols);
        for (name, base) in option_sets(cols, &mut rng) {
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let options = CrossEntropyOptions {
                    reduction,
                    ..base.clone()
                };
                let want = reference::cross_entropy(&logits, &labels, rows, cols, &options)
                    .expect("reference");
                let up = upstream(&mut rng, reduction, rows);
                let targets = |d: &Device| Targets::Classes(ints(&labels, d));
                let what = format!("{name} {reduction:?}");
                check(
                    &what,
                    dev,
                    (&logits, [rows, cols]),
                    targets,
                    &options,
                    &want,
                    &up,
                );
            }
        }
    }
}

#[test]
fn probability_targets_match_the_reference() {
    let mut rng = Rng::new("probability_targets");
    let (rows, cols) = (33, 301);
    for dev in devices() {
        let logits = rng.logits(rows * cols, 3.0);
        let mut probs: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() as f32).collect();
        for row in probs.chunks_mut(cols) {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|p| *p /= sum);
        }
        for (name, base) in option_sets(cols, &mut rng) {
            if base.ignore_index != CrossEntropyOptions::default().ignore_index {
                continue; // class-index targets only
            }
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let options = CrossEntropyOptions {
                    reduction,
                    ..base.clone()
                };
                let want = reference::cross_entropy_probs(&logits, &probs, rows, cols, &options)
                    .expect("reference");
                let up = upstream(&mut rng, reduction, rows);
                let targets = |d: &Device| Targets::Probabilities(floats(&probs, [rows, cols], d));
                let what = format!("probabilities {name} {reduction:?}");
                check(
                    &what,
                    dev,
                    (&logits, [rows, cols]),
                    targets,
                    &options,
                    &want,
                    &up,
                );
            }
        }
    }
}

#[test]
fn every_row_ignored_gives_zero_loss_and_gradient() {
    let mut rng = Rng::new("every_row_ignored");
    let (rows, cols) = (9, 50);
    for dev in devices() {
        let logits = rng.logits(rows * cols, 1.0);
        let device = dev.device.clone().autodiff();
        let z = floats(&logits, [rows, cols], &device).require_grad();
        let labels = ints(&vec![-100; rows], &device);
        let loss = cross_entropy(z.clone(), labels, &Default::default()).expect("loss");
        let grad = z.grad(&loss.clone().backward()).expect("gradient");
        assert_eq!(host(loss), vec![0.0], "{}", dev.name);
        assert!(host(grad).iter().all(|&g| g == 0.0), "{}", dev.name);
    }
}

/// A case of burn's loss: name, class weights, smoothing, pad token.
type BurnCase = (&'static str, Option<Vec<f32>>, Option<f32>, Option<usize>);

/// burn's `CrossEntropyLoss` on the same tensors, where the semantics agree: plain mean,
/// class weights, label smoothing, both, and a pad token (= `ignore_index`).
#[test]
fn agrees_with_burns_own_cross_entropy_loss() {
    let mut rng = Rng::new("burns_own_loss");
    let (rows, cols) = (64, 100);
    for dev in devices() {
        let (logits, labels) = batch(&mut rng, rows, cols);
        let weights: Vec<f32> = (0..cols)
            .map(|_| 0.25 + 2.0 * rng.uniform() as f32)
            .collect();
        let cases: [BurnCase; 5] = [
            ("plain mean", None, None, None),
            ("weights", Some(weights.clone()), None, None),
            ("smoothing", None, Some(0.1), None),
            ("weights + smoothing", Some(weights), Some(0.2), None),
            ("pad token 2", None, None, Some(2)),
        ];
        for (name, weight, smoothing, pad) in cases {
            let device = dev.device.clone().autodiff();
            let what = format!("{name} on {}", dev.name);
            let burns = CrossEntropyLossConfig::new()
                .with_weights(weight.clone())
                .with_smoothing(smoothing)
                .with_pad_tokens(pad.map(|p| vec![p]))
                .init(&device);
            let z = floats(&logits, [rows, cols], &device).require_grad();
            let want = burns.forward(z.clone(), ints(&labels, &device));
            let want_grad = host(z.grad(&want.clone().backward()).expect("burn's gradient"));

            let options = CrossEntropyOptions {
                weight,
                label_smoothing: smoothing.unwrap_or(0.0),
                ignore_index: pad.map_or(-100, |p| p as i64),
                ..Default::default()
            };
            let z = floats(&logits, [rows, cols], &device).require_grad();
            let loss = cross_entropy(z.clone(), ints(&labels, &device), &options).expect("loss");
            let grad = host(z.grad(&loss.clone().backward()).expect("gradient"));
            assert_close(
                &format!("{what} loss"),
                &host(loss),
                &host(want),
                1e-5,
                1e-5,
            );
            assert_close(&format!("{what} grad"), &grad, &want_grad, 1e-7, 1e-4);
        }
    }
}

/// The logits come out of a chain of burn ops still recorded, not submitted, when the loss
/// runs; the gradient flows back into that chain. Both must see the other's results.
#[test]
fn loss_on_pending_burn_ops_is_ordered_with_them() {
    let mut rng = Rng::new("pending_ops");
    let (rows, cols) = (128, 500);
    for dev in devices() {
        let (x, labels) = batch(&mut rng, rows, cols);
        let device = dev.device.clone().autodiff();
        let leaf = floats(&x, [rows, cols], &device).require_grad();
        // z = ((x * 3 + 1) * 0.5 - 0.5) / 1.5 = x, through eight pending kernels.
        let mut z = leaf.clone();
        for _ in 0..2 {
            z = ((z * 3.0 + 1.0) * 0.5 - 0.5) / 1.5;
        }
        let loss = cross_entropy(z, ints(&labels, &device), &Default::default()).expect("loss");
        let grads = loss.clone().backward();
        // The backward's consumers (the chain's own backward ops) run after the loss's kernel.
        let grad = host(leaf.grad(&grads).expect("gradient"));
        let want = reference::cross_entropy(&x, &labels, rows, cols, &Default::default())
            .expect("reference");
        let what = format!("pending ops on {}", dev.name);
        assert_close(
            &format!("{what} loss"),
            &host(loss),
            &[want.loss],
            1e-5,
            1e-4,
        );
        assert_close(&format!("{what} grad"), &grad, &want.grad, 1e-7, 1e-3);
    }
}

/// The plain backend (no autodiff): burn's inference, the loss alone.
#[test]
fn plain_backend_gives_the_loss() {
    let mut rng = Rng::new("plain_backend");
    let (rows, cols) = (40, 1000);
    for dev in devices() {
        let (logits, labels) = batch(&mut rng, rows, cols);
        let options = CrossEntropyOptions {
            label_smoothing: 0.1,
            ..Default::default()
        };
        let z = floats(&logits, [rows, cols], &dev.device);
        let loss = cross_entropy(z, ints(&labels, &dev.device), &options).expect("loss");
        let want = reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
        assert_close(
            &format!("plain on {}", dev.name),
            &host(loss),
            &[want.loss],
            1e-5,
            2e-5,
        );
    }
}

/// f16 logits where the device has SHADER_F16: loss and gradient in f16, against the
/// reference on the f16-rounded logits. (bf16 is not tested: whether burn's wgpu runtime
/// holds bf16 tensors on these adapters was not tried.)
#[test]
fn f16_logits_match_the_reference_where_the_device_has_shader_f16() {
    let mut rng = Rng::new("f16");
    let (rows, cols) = (31, 203);
    let mut ran = 0;
    for dev in devices().iter().filter(|d| d.f16) {
        ran += 1;
        let (logits, labels) = batch(&mut rng, rows, cols);
        let device = dev.device.clone().autodiff();
        let z = floats(&logits, [rows, cols], &device)
            .cast(DType::F16)
            .require_grad();
        let rounded = host(z.clone());
        let options = CrossEntropyOptions {
            z_loss: 1e-3,
            ..Default::default()
        };
        let loss = cross_entropy(z.clone(), ints(&labels, &device), &options).expect("loss");
        assert_eq!(loss.dtype(), DType::F16);
        let grad = z.grad(&loss.clone().backward()).expect("gradient");
        assert_eq!(grad.dtype(), DType::F16);
        let want = reference::cross_entropy(&rounded, &labels, rows, cols, &options).unwrap();
        let what = format!("f16 on {}", dev.name);
        assert_close(
            &format!("{what} loss"),
            &host(loss),
            &[want.loss],
            1e-3,
            2e-3,
        );
        assert_close(&format!("{what} grad"), &host(grad), &want.grad, 1e-5, 2e-2);
    }
    eprintln!("f16 ran on {ran} device(s)");
}

#[test]
fn bad_input_gives_typed_errors() {
    for dev in devices() {
        let device = dev.device.clone().autodiff();
        let z = floats(&[0.5; 12], [3, 4], &device);
        let labels = ints(&[1, 2, 3], &device);
        let short = ints(&[1, 2], &device);
        let bad = |r: ml_softmax_burn::Result<Tensor<1>>| r.map(|_| ()).unwrap_err();
        let e = bad(cross_entropy(z.clone(), short, &Default::default()));
        assert!(matches!(e, Error::BadTensor { what: "labels", .. }), "{e}");
        let options = CrossEntropyOptions {
            label_smoothing: 1.5,
            ..Default::default()
        };
        let e = bad(cross_entropy(z.clone(), labels.clone(), &options));
        assert!(
            matches!(e, Error::Loss(ml_softmax::Error::InvalidOption { .. })),
            "{e}"
        );
        let options = CrossEntropyOptions {
            weight: Some(vec![1.0; 3]),
            ..Default::default()
        };
        let e = bad(cross_entropy(z.clone(), labels.clone(), &options));
        assert!(matches!(e, Error::Loss(_)), "{e}");
        let options = CrossEntropyOptions {
            ignore_index: 1 << 40,
            ..Default::default()
        };
        let e = bad(cross_entropy(z.clone(), labels.clone(), &options));
        assert!(matches!(e, Error::Loss(_)), "{e}");
        let probs = floats(&[0.25; 8], [2, 4], &device);
        let e = bad(cross_entropy_probs(z.clone(), probs, &Default::default()));
        assert!(
            matches!(
                e,
                Error::BadTensor {
                    what: "targets",
                    ..
                }
            ),
            "{e}"
        );
        let empty = floats(&[], [0, 4], &device);
        let e = bad(cross_entropy(
            empty,
            ints(&[], &device),
            &Default::default(),
        ));
        assert!(
            matches!(e, Error::Loss(ml_softmax::Error::EmptyShape { .. })),
            "{e}"
        );
    }
}

/// A burn device nobody registered: a typed error naming the fix, not a panic.
#[test]
fn an_unregistered_device_is_refused() {
    let _ = devices();
    let other = Device::wgpu_options()
        .init()
        .expect("another burn wgpu device");
    let z = floats(&[0.5; 6], [2, 3], &other);
    let e = cross_entropy(z, ints(&[0, 1], &other), &Default::default()).map(|_| ());
    let e = e.unwrap_err();
    assert!(matches!(e, Error::UnknownDevice { .. }), "{e}");
    assert!(e.to_string().contains("ml_softmax_burn::register"), "{e}");
}
