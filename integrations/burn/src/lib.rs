//! ml-softmax's fused cross-entropy as a [burn](https://burn.dev) loss: forward and backward
//! run ml-softmax's kernel on burn's own wgpu device and queue, on the tensors' own buffers
//! (no host round trip, no copy of the logits).
//!
//! ```no_run
//! use burn::tensor::{Device, Distribution, Int, Tensor};
//! use ml_softmax_burn::{CrossEntropyOptions, cross_entropy};
//!
//! // Open burn's wgpu device through this crate (or `register` one you opened).
//! let device: Device = ml_softmax_burn::device(Device::wgpu_options(), &Default::default())?.autodiff();
//! let logits = Tensor::<2>::random([4, 10], Distribution::Normal(0.0, 1.0), &device).require_grad();
//! let labels = Tensor::<1, Int>::from_ints([1, 0, 9, 3], &device);
//! let loss = cross_entropy(logits.clone(), labels, &CrossEntropyOptions::default())?;
//! let grads = loss.backward();
//! let dlogits = logits.grad(&grads).expect("tracked");
//! # Ok::<(), ml_softmax_burn::Error>(())
//! ```
//!
//! Semantics are ml-softmax's (PyTorch's `F.cross_entropy`, with a `mean` over a zero
//! denominator giving 0): every [`CrossEntropyOptions`] option, class-index or probability
//! targets (with their own gradient when they require one), f32, f16 (where the adapter has
//! `SHADER_F16`) and bf16 logits (where burn's runtime holds them: its SPIR-V compiler on a
//! Vulkan driver with bf16 shaders; untested). The loss is `[1]` for mean / sum and `[rows]`
//! for none, in the logits' float type.
//!
//! burn's `fusion` feature (on in burn's default features) and this crate's `fusion` feature
//! (on by default) must agree: with both, the loss is an operation of burn's `Fusion` backend.
//!
//! Errors: everything that can be checked before the loss is queued is a typed [`Error`] from
//! these functions. A failure inside burn's queue (a lost device, out of memory) panics there,
//! as burn's own ops do.
//!
//! burn's `CrossEntropyLoss` with `pad_tokens: Some(vec![p])` is `ignore_index: p` here (both
//! leave padded rows out of the mean's denominator); burn accepts several pad tokens, this
//! crate one ignore index.

mod autodiff;
pub mod backend;
mod registry;

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::wgpu::{MemoryConfiguration, WgpuInitError, WgpuOptions, WgpuSetup};
use burn::tensor::{DType, Device, Int, IntDType, Tensor};
use burn_cubecl::CubeDevice;
pub use ml_softmax::{ContextOptions, CrossEntropyOptions, Reduction};

use crate::backend::{Call, FusedCrossEntropyBackend};

/// Everything that can go wrong; bad input never panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loss's own checks (shape, options, weights), from ml-softmax.
    #[error(transparent)]
    Loss(#[from] ml_softmax::Error),
    /// burn could not open the wgpu device.
    #[error("burn could not open a wgpu device: {0}")]
    Init(#[from] WgpuInitError),
    /// The tensor is not on a burn wgpu device this crate knows: open it with [`device`] or
    /// [`register`] its setup.
    #[error(
        "the {what} is on {device}, not on a wgpu device opened with ml_softmax_burn::device or registered with ml_softmax_burn::register"
    )]
    UnknownDevice {
        /// Which tensor.
        what: &'static str,
        /// Its device.
        device: String,
    },
    /// The device's memory pool puts several tensors in one wgpu buffer, so the loss's inputs
    /// and outputs could share one, which wgpu refuses: open it with [`device`], or with
    /// `MemoryConfiguration::ExclusivePages`.
    #[error(
        "burn's memory pool on {device} puts several tensors in one wgpu buffer; open the device with ml_softmax_burn::device or with MemoryConfiguration::ExclusivePages"
    )]
    SharedBuffers {
        /// The device.
        device: String,
    },
    /// A tensor has a shape or type the loss cannot take.
    #[error("{what}: {problem}")]
    BadTensor {
        /// Which tensor.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// How the backward pass gets the gradient (module `autodiff`; BENCHMARKS.md, "Inside burn",
/// compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gradient {
    /// Keep the gradient the forward computed, `[rows, cols]` held until the backward,
    /// which scales it by the upstream gradient with one burn elementwise op. Faster only on
    /// tiny batches (8 x 1000) on lavapipe.
    Keep,
    /// Keep only the logits and run the fused kernel again in the backward, with the upstream
    /// gradient as its per-row scale. Faster from 8192 x 1000 up on lavapipe and holds no
    /// extra `[rows, cols]` tensor: the default.
    #[default]
    Recompute,
}

/// The targets of a loss.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class indices `[rows]` (i32; other int types are cast).
    Classes(Tensor<1, Int>),
    /// Probabilities `[rows, cols]` (f32; other float types are cast). Under autodiff they get
    /// a gradient when they require one, as in PyTorch.
    Probabilities(Tensor<2>),
}

impl From<Tensor<1, Int>> for Targets {
    fn from(labels: Tensor<1, Int>) -> Self {
        Targets::Classes(labels)
    }
}

impl From<Tensor<2>> for Targets {
    fn from(probabilities: Tensor<2>) -> Self {
        Targets::Probabilities(probabilities)
    }
}

/// Opens burn's wgpu device from `options` and makes the fused loss available on it. Turn on
/// autodiff with `.autodiff()` on the result, as for any burn device. `context` configures
/// ml-softmax's side (e.g. `poison_outputs`, which tests use).
///
/// The device's memory is set to `MemoryConfiguration::ExclusivePages`, one wgpu buffer per
/// tensor: burn's default pool carves many tensors out of one buffer, and wgpu refuses a
/// dispatch that binds one buffer both read-only (the logits) and writable (the gradient).
pub fn device(options: WgpuOptions, context: &ContextOptions) -> Result<Device> {
    let options = options.memory_config(MemoryConfiguration::ExclusivePages);
    let (device, setup) = options.init_with_setup()?;
    register(&device, &setup, context)?;
    Ok(device)
}

/// Makes the fused loss available on a burn wgpu device you opened yourself with
/// `Device::wgpu_options().memory_config(MemoryConfiguration::ExclusivePages)...init_with_setup()`
/// (the setup it returned). ml-softmax submits to that setup's queue, which is burn's. A
/// device opened with burn's default memory pool is refused ([`Error::SharedBuffers`], see
/// [`device`]): the pool is probed with two small allocations.
pub fn register(device: &Device, setup: &WgpuSetup, context: &ContextOptions) -> Result<()> {
    let Some(CubeDevice::Wgpu(wgpu_device)) = cube_device(device) else {
        return Err(Error::UnknownDevice {
            what: "device to register",
            device: format!("{device:?}"),
        });
    };
    if backend::pool_shares_buffers(&wgpu_device) != Some(false) {
        return Err(Error::SharedBuffers {
            device: format!("{device:?}"),
        });
    }
    registry::insert(wgpu_device, setup, context)?;
    Ok(())
}

/// Cross-entropy of `logits` `[rows, cols]` against `targets`: class indices
/// `Tensor<1, Int>` `[rows]` or probabilities `Tensor<2>` `[rows, cols]` (either converts into
/// [`Targets`]), with the default [`Gradient`] mode.
///
/// ```no_run
/// # use burn::tensor::{Device, Tensor, activation::softmax};
/// # let device: Device = ml_softmax_burn::device(Device::wgpu_options(), &Default::default())?.autodiff();
/// # let logits = Tensor::<2>::zeros([4, 10], &device).require_grad();
/// // Soft targets: their gradient is tracked too when they require one.
/// let soft = softmax(Tensor::<2>::ones([4, 10], &device), 1);
/// let loss = ml_softmax_burn::cross_entropy(logits, soft, &Default::default())?;
/// # Ok::<(), ml_softmax_burn::Error>(())
/// ```
pub fn cross_entropy(
    logits: Tensor<2>,
    targets: impl Into<Targets>,
    options: &CrossEntropyOptions,
) -> Result<Tensor<1>> {
    cross_entropy_with(logits, targets, options, Gradient::default())
}

/// [`cross_entropy`] with a choice of [`Gradient`] mode.
pub fn cross_entropy_with(
    logits: Tensor<2>,
    targets: impl Into<Targets>,
    options: &CrossEntropyOptions,
    gradient: Gradient,
) -> Result<Tensor<1>> {
    let targets = targets.into();
    let device = logits.device();
    check(&logits, &targets, options)?;
    let call = Call {
        options: options.clone(),
        has_upstream: false,
        gradient,
    };
    // Unused when `has_upstream` is false; one element so that nothing else is allocated.
    let placeholder = Tensor::<1>::empty([1], &device).into_dispatch();
    let logits = logits.into_dispatch();
    let (loss, _grad, _lse) = match targets {
        Targets::Classes(labels) => {
            let labels = match labels.dtype() {
                DType::I32 => labels,
                _ => labels.cast(IntDType::I32),
            };
            Dispatch::fused_cross_entropy(logits, labels.into_dispatch(), placeholder, call)
        }
        Targets::Probabilities(t) => {
            let t = match t.dtype() {
                DType::F32 => t,
                _ => t.cast(DType::F32),
            };
            Dispatch::fused_cross_entropy_probs(logits, t.into_dispatch(), placeholder, call)
        }
    };
    Ok(Tensor::from_dispatch(loss))
}

/// Everything the kernel would refuse, refused here with a typed error (the backend cannot
/// return one).
fn check(logits: &Tensor<2>, targets: &Targets, options: &CrossEntropyOptions) -> Result<()> {
    let [rows, cols] = logits.dims();
    if rows == 0 || cols == 0 {
        return Err(ml_softmax::Error::EmptyShape { rows, cols }.into());
    }
    options.validate(cols)?;
    if i32::try_from(options.ignore_index).is_err() {
        return Err(ml_softmax::Error::InvalidOption {
            name: "ignore_index",
            value: options.ignore_index.to_string(),
            reason: "burn's wgpu labels are i32, so the ignore index must fit in i32",
        }
        .into());
    }
    let device = logits.device();
    let ctx = cube_device(&device)
        .as_ref()
        .and_then(backend::registered)
        .map(|entry| entry.ctx)
        .ok_or_else(|| Error::UnknownDevice {
            what: "logits tensor",
            device: format!("{device:?}"),
        })?;
    let dtype = logits.dtype();
    match backend::precision(dtype) {
        None => {
            return Err(Error::BadTensor {
                what: "logits",
                problem: format!("{dtype:?} is not supported (f32, f16 or bf16)"),
            });
        }
        Some(ml_softmax::Precision::F16)
            if !ctx
                .device()
                .features()
                .contains(ml_softmax::wgpu::Features::SHADER_F16) =>
        {
            return Err(ml_softmax::Error::Unsupported {
                adapter: ctx.adapter_info().name.clone(),
                what: "f16 logits need Features::SHADER_F16, which this device lacks".into(),
            }
            .into());
        }
        Some(_) => {}
    }
    let (what, dims, target_device) = match targets {
        Targets::Classes(t) => ("labels", t.dims().to_vec(), t.device()),
        Targets::Probabilities(t) => ("targets", t.dims().to_vec(), t.device()),
    };
    let expected = match targets {
        Targets::Classes(_) => vec![rows],
        Targets::Probabilities(_) => vec![rows, cols],
    };
    if dims != expected {
        return Err(Error::BadTensor {
            what,
            problem: format!("shape {dims:?}, but the logits {rows} x {cols} need {expected:?}"),
        });
    }
    if cube_device(&target_device) != cube_device(&device) {
        return Err(Error::BadTensor {
            what,
            problem: format!("on {target_device:?}, the logits on {device:?}"),
        });
    }
    Ok(())
}

/// The cubecl device under a burn device, autodiff or not.
fn cube_device(device: &Device) -> Option<CubeDevice> {
    fn inner(device: &DispatchDevice) -> Option<CubeDevice> {
        match device {
            DispatchDevice::Cube(d) => Some(d.clone()),
            DispatchDevice::Autodiff(d) => inner(&d.clone().inner()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
    inner(device.as_dispatch())
}
