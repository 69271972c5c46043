//! The burn loss against ml-softmax's f64 reference (every option, reduction, both kinds of
//! targets and the probability targets' own gradient, both gradient modes, f16), against
//! burn's own `CrossEntropyLoss` where the two agree, on tensors produced by still-pending
//! burn ops, and its typed errors.
//!
//! Each case runs on two paths ([`Path`]): the public API on burn's `Device`, which is burn's
//! `Fusion` backend in this build (the crate's default `fusion` feature, as in burn's default
//! features), and the backend trait called on `Autodiff<CubeBackend>` directly, which is what
//! burn without fusion runs. One binary, one build of burn, both backends.
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

use burn::backend::autodiff::Autodiff;
use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::{AutodiffBackend, DispatchDevice};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::wgpu::{MemoryConfiguration, WgpuBackend};
use burn::tensor::{DType, Device, FloatDType, Int, IntDType, Scalar, Tensor, TensorData};
use burn_cubecl::{CubeBackend, CubeDevice, tensor::CubeTensor};
use common::{Rng, assert_close, each_reduction, option_sets, to_half};
use ml_softmax::{Precision, reference};
use ml_softmax_burn::backend::{Call, FusedCrossEntropyBackend};
use ml_softmax_burn::{
    ContextOptions, CrossEntropyOptions, Error, Gradient, Reduction, Targets, cross_entropy,
    cross_entropy_with,
};

/// A burn wgpu device with the loss registered, and what it can hold.
struct Dev {
    name: String,
    device: Device,
    cube: CubeDevice,
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
            let DispatchDevice::Cube(cube) = device.as_dispatch().clone() else {
                panic!("burn's wgpu device is not a cubecl device")
            };
            all.push(Dev {
                name,
                device,
                cube,
                f16,
            });
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

fn i32s(values: &[i64]) -> TensorData {
    let values: Vec<i32> = values.iter().map(|&v| v as i32).collect();
    let len = values.len();
    TensorData::new(values, [len])
}

fn ints(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(i32s(values), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// How a test reaches the loss.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `ml_softmax_burn::cross_entropy_with` on burn's `Device`: burn's `Fusion` backend here.
    Fused,
    /// `FusedCrossEntropyBackend` on `Autodiff<CubeBackend>`: burn without fusion.
    Unfused,
}

const PATHS: [Path; 2] = [Path::Fused, Path::Unfused];

/// The targets of a case, on the host.
#[derive(Clone, Copy)]
enum Data<'a> {
    Classes(&'a [i64]),
    Probabilities(&'a [f32]),
}

/// One call of the loss and its backward (`sum(loss * up)`): what goes in.
#[derive(Clone, Copy)]
struct Case<'a> {
    logits: &'a [f32],
    shape: [usize; 2],
    targets: Data<'a>,
    options: &'a CrossEntropyOptions,
    gradient: Gradient,
    /// The loss's upstream gradient: `[1]` for mean / sum, `[rows]` for none.
    up: &'a [f32],
    /// The logits' float type (the data are cast to it on the device).
    dtype: DType,
    /// Whether the (probability) targets require a gradient.
    track_targets: bool,
    /// Whether the logits pass through eight burn ops that compute the identity, still
    /// pending when the loss runs; the gradient is then taken at their input.
    pending: bool,
}

impl<'a> Case<'a> {
    fn new(
        logits: &'a [f32],
        shape: [usize; 2],
        targets: Data<'a>,
        options: &'a CrossEntropyOptions,
    ) -> Self {
        Case {
            logits,
            shape,
            targets,
            options,
            gradient: Gradient::default(),
            up: &[1.0],
            dtype: DType::F32,
            track_targets: false,
            pending: false,
        }
    }
}

/// What comes out, on the host: the loss, the logits' gradient, the targets' gradient (when
/// tracked).
struct Got {
    loss: Vec<f32>,
    grad: Vec<f32>,
    dtargets: Option<Vec<f32>>,
}

/// Runs `case` on `path`, under autodiff.
fn run(path: Path, dev: &Dev, case: Case) -> Got {
    match path {
        Path::Fused => run_fused(dev, case),
        Path::Unfused => run_unfused(dev, case),
    }
}

fn run_fused(dev: &Dev, case: Case) -> Got {
    let device = dev.device.clone().autodiff();
    let leaf = floats(case.logits, case.shape, &device)
        .cast(case.dtype)
        .require_grad();
    let mut z = leaf.clone();
    if case.pending {
        for _ in 0..2 {
            z = ((z * 3.0 + 1.0) * 0.5 - 0.5) / 1.5;
        }
    }
    let probs = match case.targets {
        Data::Classes(_) => None,
        Data::Probabilities(p) => {
            let t = floats(p, case.shape, &device);
            Some(if case.track_targets {
                t.require_grad()
            } else {
                t
            })
        }
    };
    let targets = match (case.targets, &probs) {
        (Data::Classes(labels), _) => Targets::Classes(ints(labels, &device)),
        (_, Some(t)) => Targets::Probabilities(t.clone()),
        (Data::Probabilities(_), None) => unreachable!(),
    };
    let loss = cross_entropy_with(z, targets, case.options, case.gradient).expect("the loss");
    assert_eq!(loss.dtype(), case.dtype, "the loss's float type");
    let up = floats(case.up, [case.up.len()], &device).cast(case.dtype);
    let grads = (loss.clone() * up).sum().backward();
    let grad = leaf.grad(&grads).expect("the logits' gradient");
    assert_eq!(grad.dtype(), case.dtype, "the gradient's float type");
    let dtargets = probs
        .filter(|_| case.track_targets)
        .map(|t| host(t.grad(&grads).expect("the targets' gradient")));
    Got {
        loss: host(loss),
        grad: host(grad),
        dtargets,
    }
}

/// burn's autodiff over its cubecl backend, with no fusion in between.
type Unfused = Autodiff<CubeBackend>;

fn cube_host(t: CubeTensor) -> Vec<f32> {
    pollster::block_on(CubeBackend::float_into_data(t))
        .expect("readback")
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

fn run_unfused(dev: &Dev, case: Case) -> Got {
    let cube = &dev.cube;
    let from = |v: &[f32], shape: &[usize]| {
        Unfused::float_from_data(TensorData::new(v.to_vec(), shape.to_vec()), cube)
    };
    let dtype = FloatDType::from(case.dtype);
    let leaf = Unfused::float_set_require_grad(
        Unfused::float_cast(from(case.logits, &case.shape), dtype),
        true,
    );
    let mut z = leaf.clone();
    if case.pending {
        for _ in 0..2 {
            z = Unfused::float_mul_scalar(z, Scalar::from(3.0f32));
            z = Unfused::float_add_scalar(z, Scalar::from(1.0f32));
            z = Unfused::float_mul_scalar(z, Scalar::from(0.5f32));
            z = Unfused::float_sub_scalar(z, Scalar::from(0.5f32));
            z = Unfused::float_div_scalar(z, Scalar::from(1.5f32));
        }
    }
    let call = Call {
        options: case.options.clone(),
        has_upstream: false,
        gradient: case.gradient,
    };
    let placeholder = from(&[0.0], &[1]);
    let mut probs = None;
    let (loss, _, _) = match case.targets {
        Data::Classes(labels) => {
            let labels = Unfused::int_from_data(i32s(labels), cube);
            let labels = Unfused::int_cast(labels, IntDType::I32);
            Unfused::fused_cross_entropy(z, labels, placeholder, call)
        }
        Data::Probabilities(p) => {
            let t = Unfused::float_set_require_grad(from(p, &case.shape), case.track_targets);
            probs = Some(t.clone());
            Unfused::fused_cross_entropy_probs(z, t, placeholder, call)
        }
    };
    let up = Unfused::float_cast(from(case.up, &[case.up.len()]), dtype);
    let total = Unfused::float_sum(Unfused::float_mul(loss.clone(), up));
    let grads = Unfused::backward(total);
    let grad = Unfused::grad(&leaf, &grads).expect("the logits' gradient");
    let dtargets = probs
        .filter(|_| case.track_targets)
        .map(|t| cube_host(Unfused::grad(&t, &grads).expect("the targets' gradient")));
    Got {
        loss: cube_host(Unfused::inner(loss)),
        grad: cube_host(grad),
        dtargets,
    }
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

/// Random probability rows.
fn distributions(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut probs: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() as f32).collect();
    for row in probs.chunks_mut(cols) {
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= sum);
    }
    probs
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

/// `up` for row `r` (one scalar, or one per row).
fn up_of(up: &[f32], r: usize) -> f64 {
    f64::from(up[if up.len() == 1 { 0 } else { r }])
}

/// What the case should give, from the f64 reference: loss, logits' gradient and (for
/// tracked probability targets) `u[r] * s * (1 - eps) * w[j] * (lse[r] - z'[r, j])`.
fn expected(case: &Case) -> Got {
    let [rows, cols] = case.shape;
    let o = case.options;
    let want = match case.targets {
        Data::Classes(labels) => reference::cross_entropy(case.logits, labels, rows, cols, o),
        Data::Probabilities(p) => reference::cross_entropy_probs(case.logits, p, rows, cols, o),
    }
    .expect("reference");
    let loss = match o.reduction {
        Reduction::None => want.row_loss.clone(),
        _ => vec![want.loss],
    };
    let grad = want
        .grad
        .iter()
        .enumerate()
        .map(|(i, &g)| (f64::from(g) * up_of(case.up, i / cols)) as f32)
        .collect();
    let dtargets = case.track_targets.then(|| {
        let scale = match o.reduction {
            Reduction::Mean => 1.0 / rows as f64,
            _ => 1.0,
        } * (1.0 - f64::from(o.label_smoothing));
        let cap = f64::from(o.softcap);
        (0..rows * cols)
            .map(|i| {
                let (r, j) = (i / cols, i % cols);
                let z = f64::from(case.logits[i]);
                let z = if cap > 0.0 { cap * (z / cap).tanh() } else { z };
                let w = o.weight.as_ref().map_or(1.0, |w| f64::from(w[j]));
                (up_of(case.up, r) * scale * w * (f64::from(want.lse[r]) - z)) as f32
            })
            .collect()
    });
    Got {
        loss,
        grad,
        dtargets,
    }
}

/// Tolerances of one float type: (loss atol, loss rtol, gradient atol relative to its largest
/// value, gradient rtol).
fn tolerances(dtype: DType) -> (f32, f32, f32, f32) {
    match dtype {
        DType::F32 => (1e-5, 2e-5, 2e-6, 1e-4),
        _ => (1e-3, 2e-3, 1e-3, 2e-2),
    }
}

/// Runs `case` on both paths and both gradient modes, and checks everything against the
/// reference computed on `case.logits` (already rounded to `case.dtype` by the caller).
fn check(what: &str, dev: &Dev, case: Case) {
    let want = expected(&case);
    let (loss_atol, loss_rtol, grad_atol, grad_rtol) = tolerances(case.dtype);
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, g| m.max(g.abs())).max(1e-3);
    for path in PATHS {
        for gradient in [Gradient::Keep, Gradient::Recompute] {
            let what = format!("{what} {path:?} {gradient:?} on {}", dev.name);
            let got = run(path, dev, Case { gradient, ..case });
            assert_close(
                &format!("{what} loss"),
                &got.loss,
                &want.loss,
                loss_atol,
                loss_rtol,
            );
            let atol = grad_atol * largest(&want.grad);
            assert_close(
                &format!("{what} grad"),
                &got.grad,
                &want.grad,
                atol,
                grad_rtol,
            );
            match (&got.dtargets, &want.dtargets) {
                (Some(got), Some(want)) => {
                    let atol = grad_atol * largest(want);
                    let what = format!("{what} targets' grad");
                    assert_close(&what, got, want, atol, grad_rtol);
                }
                (None, None) => {}
                _ => panic!("{what}: the targets' gradient was not tracked as asked"),
            }
        }
    }
}

#[test]
fn class_targets_match_the_reference_for_every_option_and_reduction() {
    let mut rng = Rng::new("class_targets");
    let (rows, cols) = (67, 37);
    for dev in devices() {
        let (logits, labels) = batch(&mut rng, rows, cols);
        for (name, base) in option_sets(cols, &mut rng) {
            for (reduction, options) in each_reduction(&base) {
                let up = upstream(&mut rng, reduction, rows);
                let targets = Data::Classes(&labels);
                let case = Case {
                    up: &up,
                    ..Case::new(&logits, [rows, cols], targets, &options)
                };
                check(&format!("{name} {reduction:?}"), dev, case);
            }
        }
    }
}

/// Probability targets, with their own gradient tracked (PyTorch's `-log_softmax` scaled).
#[test]
fn probability_targets_and_their_gradient_match_the_reference() {
    let mut rng = Rng::new("probability_targets");
    let (rows, cols) = (33, 301);
    for dev in devices() {
        let logits = rng.logits(rows * cols, 3.0);
        let probs = distributions(&mut rng, rows, cols);
        for (name, base) in option_sets(cols, &mut rng) {
            if base.ignore_index != CrossEntropyOptions::default().ignore_index {
                continue; // class-index targets only
            }
            for (reduction, options) in each_reduction(&base) {
                let up = upstream(&mut rng, reduction, rows);
                let targets = Data::Probabilities(&probs);
                let case = Case {
                    up: &up,
                    track_targets: true,
                    ..Case::new(&logits, [rows, cols], targets, &options)
                };
                check(&format!("probabilities {name} {reduction:?}"), dev, case);
            }
        }
    }
}

#[test]
fn every_row_ignored_gives_zero_loss_and_gradient() {
    let mut rng = Rng::new("every_row_ignored");
    let (rows, cols) = (9, 50);
    let options = CrossEntropyOptions::default();
    for dev in devices() {
        let logits = rng.logits(rows * cols, 1.0);
        let labels = vec![-100; rows];
        for path in PATHS {
            let case = Case::new(&logits, [rows, cols], Data::Classes(&labels), &options);
            let got = run(path, dev, case);
            assert_eq!(got.loss, vec![0.0], "{path:?} on {}", dev.name);
            assert!(
                got.grad.iter().all(|&g| g == 0.0),
                "{path:?} on {}",
                dev.name
            );
        }
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
            let burns = CrossEntropyLossConfig::new()
                .with_weights(weight.clone())
                .with_smoothing(smoothing)
                .with_pad_tokens(pad.map(|p| vec![p]))
                .init(&device);
            let z = floats(&logits, [rows, cols], &device).require_grad();
            let want = burns.forward(z.clone(), ints(&labels, &device));
            let want_grad = host(z.grad(&want.clone().backward()).expect("burn's gradient"));
            let want = host(want);

            let options = CrossEntropyOptions {
                weight,
                label_smoothing: smoothing.unwrap_or(0.0),
                ignore_index: pad.map_or(-100, |p| p as i64),
                ..Default::default()
            };
            for path in PATHS {
                let what = format!("{name} {path:?} on {}", dev.name);
                let case = Case::new(&logits, [rows, cols], Data::Classes(&labels), &options);
                let got = run(path, dev, case);
                assert_close(&format!("{what} loss"), &got.loss, &want, 1e-5, 1e-5);
                assert_close(&format!("{what} grad"), &got.grad, &want_grad, 1e-7, 1e-4);
            }
        }
    }
}

/// The logits come out of a chain of burn ops still queued (fusion) or recorded (cubecl), not
/// submitted, when the loss is called; the gradient flows back into that chain. Both must see
/// the other's results.
#[test]
fn loss_on_pending_burn_ops_is_ordered_with_them() {
    let mut rng = Rng::new("pending_ops");
    let (rows, cols) = (128, 500);
    let options = CrossEntropyOptions::default();
    for dev in devices() {
        let (x, labels) = batch(&mut rng, rows, cols);
        let case = Case {
            pending: true,
            ..Case::new(&x, [rows, cols], Data::Classes(&labels), &options)
        };
        let want = expected(&case);
        for path in PATHS {
            let what = format!("pending ops {path:?} on {}", dev.name);
            let got = run(path, dev, case);
            assert_close(&format!("{what} loss"), &got.loss, &want.loss, 1e-5, 1e-4);
            assert_close(&format!("{what} grad"), &got.grad, &want.grad, 1e-7, 1e-3);
        }
    }
}

/// The plain backends (no autodiff): burn's inference, the loss alone.
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
        let want = reference::cross_entropy(&logits, &labels, rows, cols, &options).unwrap();
        let z = floats(&logits, [rows, cols], &dev.device);
        let fused = cross_entropy(z, ints(&labels, &dev.device), &options).expect("loss");
        let data = TensorData::new(logits.clone(), [rows, cols]);
        let z = CubeBackend::float_from_data(data, &dev.cube);
        let labels = CubeBackend::int_from_data(i32s(&labels), &dev.cube);
        let labels = CubeBackend::int_cast(labels, IntDType::I32);
        let placeholder = CubeBackend::float_from_data(TensorData::new(vec![0f32], [1]), &dev.cube);
        let call = Call {
            options: options.clone(),
            has_upstream: false,
            gradient: Gradient::default(),
        };
        let (unfused, _, _) = CubeBackend::fused_cross_entropy(z, labels, placeholder, call);
        for (path, loss) in [
            (Path::Fused, host(fused)),
            (Path::Unfused, cube_host(unfused)),
        ] {
            let what = format!("plain {path:?} on {}", dev.name);
            assert_close(&what, &loss, &[want.loss], 1e-5, 2e-5);
        }
    }
}

/// Half-precision logits: the loss and gradient in that type, against the reference on the
/// rounded logits. f16 where the device has SHADER_F16 (lavapipe).
#[test]
fn f16_logits_match_the_reference_where_the_device_has_shader_f16() {
    let mut rng = Rng::new("f16");
    let (rows, cols) = (31, 203);
    let mut ran = 0;
    for dev in devices().iter().filter(|d| d.f16) {
        ran += 1;
        let (logits, labels) = batch(&mut rng, rows, cols);
        let (_, rounded) = to_half(&logits, Precision::F16);
        let options = CrossEntropyOptions {
            z_loss: 1e-3,
            ..Default::default()
        };
        let case = Case {
            dtype: DType::F16,
            ..Case::new(&rounded, [rows, cols], Data::Classes(&labels), &options)
        };
        check("f16", dev, case);
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
        let e = bad(cross_entropy(z.clone(), probs, &Default::default()));
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

/// A burn device nobody registered: a typed error naming the fix, not a panic. Registering
/// it is refused while burn's default memory pool puts several tensors in one wgpu buffer
/// (the loss could not bind its inputs and outputs then).
#[test]
fn an_unregistered_or_shared_pool_device_is_refused() {
    let _ = devices();
    let (other, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("another burn wgpu device");
    let z = floats(&[0.5; 6], [2, 3], &other);
    let e = cross_entropy(z.clone(), ints(&[0, 1], &other), &Default::default()).map(|_| ());
    let e = e.unwrap_err();
    assert!(matches!(e, Error::UnknownDevice { .. }), "{e}");
    assert!(e.to_string().contains("ml_softmax_burn::register"), "{e}");

    let e = ml_softmax_burn::register(&other, &setup, &Default::default()).unwrap_err();
    assert!(matches!(e, Error::SharedBuffers { .. }), "{e}");
    assert!(e.to_string().contains("ExclusivePages"), "{e}");
    let e = cross_entropy(z, ints(&[0, 1], &other), &Default::default()).map(|_| ());
    assert!(
        matches!(e, Err(Error::UnknownDevice { .. })),
        "still unregistered"
    );
}
