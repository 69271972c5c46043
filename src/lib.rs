//! # ml-softmax
//!
//! Softmax, the cross-entropy loss and its gradient `dL/dz = softmax(z) - onehot(y)` for
//! large batches of logits, on any GPU wgpu reaches (Vulkan, Metal, DX12, GL), with WGSL
//! compute shaders; and [`reference`](mod@reference), the same functions on the CPU in f64.
//!
//! ```no_run
//! use ml_softmax::{Context, CrossEntropyOptions};
//!
//! let ctx = Context::new()?; // a hardware GPU if there is one, else a software adapter
//! // One row of 3 logits, true class 1: the worked example of the project.
//! let out = ctx.cross_entropy(&[1.0, 2.0, 3.0], &[1], 1, 3, &CrossEntropyOptions::default())?;
//! println!("loss {:.4}, grad {:?}", out.loss, out.grad); // 1.4076, [0.090, -0.755, 0.665]
//! # Ok::<(), ml_softmax::Error>(())
//! ```
//!
//! ## What is computed
//! For each row `z` (length C) with class-index target `y`, weights `w` (all 1 without),
//! `W = sum_j w_j`, label smoothing `eps`, z-loss `s`, soft-cap `c`:
//! - `z'_j = c * tanh(z_j / c)` when `c > 0`, else `z_j`; `lse = log sum_j exp(z'_j)`;
//!   `p_j = exp(z'_j - lse)`.
//! - row loss `= (1 - eps) * w_y * (lse - z'_y) + eps / C * sum_j w_j (lse - z'_j) + s * lse^2`;
//!   rows whose label is `ignore_index` have loss 0 and a zero gradient.
//! - `Mean` divides the summed row losses by `D = sum of w_y over the rows not ignored`
//!   (PyTorch's rule); `D = 0` (every row ignored) gives loss 0 and a zero gradient, where
//!   PyTorch gives NaN. `Sum` adds the rows; `None` returns them (and `loss` holds their sum).
//! - gradient `dL/dz'_j = k * [(1 - eps) w_y (p_j - [j = y]) + eps / C (W p_j - w_j) + 2 s lse p_j]`
//!   with `k = 1 / D` for `Mean`, 1 otherwise; with soft-capping times `1 - (z'_j / c)^2`.
//!
//! IEEE specials: a `-inf` logit is a mask (probability 0). A NaN or `+inf` logit makes its
//! row's loss, lse and gradient NaN and touches no other row (but a NaN row loss makes a
//! reduced `Mean`/`Sum` loss NaN, as in PyTorch).
//!
//! Probability targets (`t`, one distribution per row) use `t'_j = (1 - eps) t_j + eps / C`,
//! `T = sum_j w_j t'_j`: row loss `T lse - sum_j w_j t'_j z'_j + s lse^2`, gradient
//! `k [(T + 2 s lse) p_j - w_j t'_j]`, and `Mean` divides by `rows`.
//!
//! ## Two levels of API
//! - host slices in, `Vec`s out: [`Context::cross_entropy`], [`Context::cross_entropy_probs`],
//!   [`Context::cross_entropy_targets`], [`Context::softmax`], [`Context::log_softmax`], and
//!   [`Context::softmax_with`] ([`SoftmaxKind`]), and for f16 / bf16 bits
//!   [`Context::cross_entropy_half`] (a [`HalfCrossEntropy`] request), [`Context::softmax_half`];
//! - device-resident buffers: [`Context::cross_entropy_device`] (also in place, with
//!   per-row upstream gradients), [`Context::encode_cross_entropy`],
//!   [`Context::softmax_device`], on slices of your buffers ([`DeviceCrossEntropy`],
//!   [`DeviceSoftmax`]); [`Context::read_back`] reads a slice back.
//!
//! Async: [`Context::new_async`], [`Context::cross_entropy_async`],
//! [`Context::cross_entropy_targets_async`], [`Context::softmax_with_async`],
//! [`Context::read_back_async`] never block a thread; the blocking calls wrap them. They are
//! the API in a browser (wasm32-unknown-unknown, WebGPU; README's "In the browser"), where
//! the blocking calls give [`Error::Unsupported`] when they would wait.
//!
//! Scaling out: [`stream::CrossEntropyStream`] takes a batch as a stream of row chunks fed
//! by the caller (the mean's denominator given first), for batches past memory;
//! [`multi::MultiContext`] splits a batch's rows across every adapter of the machine;
//! [`parallel`] splits the vocabulary across ranks (vocabulary-parallel cross-entropy on the
//! caller's all-reduce: MPI, torch.distributed, threads).
//!
//! Inputs larger than one storage binding (or than 2^31 elements) are split into chunks of
//! whole rows; the results do not change. Storage may be f32, f16 (with `SHADER_F16`) or
//! bf16 ([`Precision`]); the arithmetic is always f32.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod context;
pub mod error;
// Internal, visible only for the command line, the tests and the benchmark: not part of the
// documented API (README's Layout says what lives where).
#[doc(hidden)]
pub mod kernels;
pub mod linear;
#[cfg(not(target_arch = "wasm32"))]
pub mod multi;
mod ops;
pub mod options;
pub mod parallel;
mod platform;
pub mod reference;
pub mod stream;

pub use context::{
    BackendChoice, Context, ContextOptions, CooperativeMatrixOptIn, keep_opened, list_adapters,
    list_adapters_async,
};
pub use error::{Error, Result};
pub use kernels::autotune::{Autotune, AutotuneChoice, AutotuneStats, ChoiceSource};
pub use kernels::{Precision, Strategy};
pub use linear::{
    LinearCrossEntropy, LinearCrossEntropyOutput, LinearDeviceBuffers, LinearProduct, Matrix,
};
pub use ops::{
    DeviceCrossEntropy, DeviceSoftmax, DeviceTargets, HalfCrossEntropy, SoftmaxKind, Targets,
};
pub use options::{CrossEntropyOptions, Reduction};
pub use reference::CrossEntropyOutput;

// wgpu is part of the device-resident API: re-export it so callers use the same version.
pub use wgpu;
