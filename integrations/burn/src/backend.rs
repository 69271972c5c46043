//! The backend side: ml-softmax's fused kernel run on a burn tensor's own wgpu buffers.
//!
//! Data flow of one call ([`run`]): the logits (and targets) made contiguous, which is no copy
//! for the row-major tensors a linear layer produces → outputs allocated from burn's memory
//! pool → each tensor's `wgpu::Buffer` + offset + size asked of cubecl
//! (`ComputeClient::get_resource`) → burn's recorded work flushed to the queue → ml-softmax
//! records the kernel and submits on the same queue → the outputs handed back to burn as
//! tensors. Nothing is read back to the host and the logits are never copied.
//!
//! Where a copy is made: a non-contiguous logits tensor (e.g. a transposed view) is made
//! contiguous by burn first (one read and write of the logits); labels that are not i32 and
//! probability targets that are not f32 are cast (a copy of the targets); the loss of f16
//! logits is cast from f32 (one element, or `rows`). Row-major f32 / f16 logits with i32 labels,
//! the common case, are read where they are. What made a copy avoidable: cubecl's
//! `get_resource` gives the tensor's own `wgpu::Buffer` with its offset and size, and its
//! `flush` puts burn's recorded work on the queue. What forces one buffer per tensor
//! (`MemoryConfiguration::ExclusivePages`, set by `crate::device`): burn's default pool
//! carves many tensors out of one buffer, and wgpu refuses a dispatch that binds one buffer
//! read-only (logits, labels) and writable (gradient, row losses); [`run`] checks and says so.
//! Its cost to burn's own ops was not measured separately (BENCHMARKS.md's burn figures are
//! taken with it).
//!
//! Ordering: cubecl records kernels into its own command encoder and submits it when its
//! task count fills or on `flush`. `get_resource` executes the streams that wrote the logits
//! (records them), and `client.flush()` then submits everything recorded so far, so every
//! pending burn op that produces the logits or targets is on the queue before ml-softmax's
//! submission. After it, burn records later ops (the backward's consumers of the gradient)
//! into a fresh encoder that is submitted later, on the same queue, so queue order makes them
//! see the gradient. Buffers burn frees meanwhile can be handed out again only to work that is
//! submitted after ours, for the same reason.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, FloatDType, Scalar, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeDevice};
use cubecl_wgpu::{AutoCompiler, WgpuResource, WgpuServer};
use ml_softmax::{
    CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets, Precision, Reduction, Strategy, wgpu,
};

use crate::registry;

/// What one call of the fused kernel needs besides its tensors: the loss options and whether
/// the caller passes per-row upstream gradients.
#[derive(Debug, Clone)]
pub struct Call {
    /// The loss options, checked by the caller against the shape.
    pub options: CrossEntropyOptions,
    /// Whether the `upstream` tensor holds the rows' upstream gradients (the backward of
    /// [`crate::Gradient::Recompute`]); when false it is a 1-element placeholder.
    pub has_upstream: bool,
    /// How the autodiff backward gets its gradient (ignored by the plain backend).
    pub gradient: crate::Gradient,
}

/// The fused cross-entropy as a burn backend extension: implemented for burn's cubecl backend
/// on wgpu devices (below) and for `Autodiff` over it (`crate::autodiff`).
///
/// Each method returns `(loss, grad)`: the loss is `[1]` (mean / sum) or `[rows]` (none) in
/// the logits' float type, the gradient `[rows, cols]` in the logits' type, times the
/// upstream gradients when `call.has_upstream`.
#[backend_extension(Cube, Autodiff)]
pub trait FusedCrossEntropyBackend: Backend {
    /// Class-index targets (`labels`: i32 `[rows]`).
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        upstream: FloatTensor<Self>,
        call: Call,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Probability targets (`targets`: f32 `[rows, cols]`).
    fn fused_cross_entropy_probs(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        call: Call,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedCrossEntropyBackend for CubeBackend {
    fn fused_cross_entropy(
        logits: CubeTensor,
        labels: CubeTensor,
        upstream: CubeTensor,
        call: Call,
    ) -> (CubeTensor, CubeTensor) {
        run(logits, Targets::Classes(labels), upstream, &call)
    }

    fn fused_cross_entropy_probs(
        logits: CubeTensor,
        targets: CubeTensor,
        upstream: CubeTensor,
        call: Call,
    ) -> (CubeTensor, CubeTensor) {
        run(logits, Targets::Probabilities(targets), upstream, &call)
    }
}

enum Targets {
    Classes(CubeTensor),
    Probabilities(CubeTensor),
}

/// ml-softmax's storage format for a burn float type, `None` where it has none.
pub(crate) fn precision(dtype: DType) -> Option<Precision> {
    match dtype {
        DType::F32 => Some(Precision::F32),
        DType::F16 => Some(Precision::F16),
        DType::BF16 => Some(Precision::Bf16),
        _ => None,
    }
}

/// What is registered for a cubecl device, if it is a wgpu device that was registered.
pub(crate) fn registered(device: &CubeDevice) -> Option<registry::Entry> {
    match device {
        CubeDevice::Wgpu(device) => registry::get(device),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// One tensor's place in its wgpu buffer. Holding it keeps cubecl from handing the memory to
/// another tensor (the `ManagedResource` guard) until our submission is recorded.
struct Place {
    _guard: Box<dyn std::any::Any>,
    resource: WgpuResource,
}

impl Place {
    fn of(tensor: &CubeTensor) -> Place {
        let guard = tensor
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(tensor.handle.clone())
            .unwrap_or_else(|e| panic!("ml-softmax-burn: cubecl gave no wgpu buffer: {e}"));
        let resource = guard.resource().clone();
        Place {
            _guard: Box::new(guard),
            resource,
        }
    }

    /// The tensor's bytes as a slice of its buffer, rounded up to whole 4-byte words where the
    /// buffer has them (2-byte data of odd length; the kernel never writes past the tensor).
    fn slice(&self) -> wgpu::BufferSlice<'_> {
        let r = &self.resource;
        let end = (r.offset + r.size.next_multiple_of(4)).min(r.buffer.size());
        r.buffer.slice(r.offset..end)
    }
}

/// A new contiguous tensor of `shape` in `dtype` (padded to whole words), NaN-filled when
/// poisoning.
fn output(like: &CubeTensor, shape: Shape, dtype: DType, poison: bool) -> CubeTensor {
    if poison {
        let dtype = FloatDType::from(dtype);
        return CubeBackend::float_full(shape, Scalar::from(f32::NAN), &like.device, dtype);
    }
    let bytes = (shape.num_elements() * dtype.size()).next_multiple_of(4);
    let handle = like.client.empty(bytes);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

/// Runs the fused kernel: see the module's comment for the data flow and the ordering.
///
/// Bad input was turned away with a typed error by the public functions before this is
/// reached; a failure here (a lost device, out of memory, an unregistered device reached
/// through burn's own API) panics with ml-softmax's message, as burn's own ops do.
fn run(
    logits: CubeTensor,
    targets: Targets,
    upstream: CubeTensor,
    call: &Call,
) -> (CubeTensor, CubeTensor) {
    let registry::Entry { ctx, poison } = registered(&logits.device).unwrap_or_else(|| {
        panic!(
            "ml-softmax-burn: device {:?} was not opened by ml_softmax_burn::device or registered",
            logits.device
        )
    });
    let shape = logits.meta.shape().clone();
    let (rows, cols) = (shape[0], shape[1]);
    let dtype = logits.dtype;
    let precision = precision(dtype).expect("checked by the public functions");

    // 1. Inputs row-major: a no-op for contiguous tensors (no copy of the logits).
    let logits = into_contiguous(logits);
    let targets = match targets {
        Targets::Classes(t) => Targets::Classes(into_contiguous(t)),
        Targets::Probabilities(t) => Targets::Probabilities(into_contiguous(t)),
    };
    let upstream = into_contiguous(upstream);

    // 2. Outputs from burn's pool: the gradient in the logits' type, the loss in f32.
    let loss_len = if call.options.reduction == Reduction::None {
        rows
    } else {
        1
    };
    let grad = output(&logits, shape.clone(), dtype, poison);
    let loss = output(&logits, Shape::from([loss_len]), DType::F32, poison);

    // 3. The buffers, then burn's pending work onto the queue (module comment).
    let logits_at = Place::of(&logits);
    let targets_at = match &targets {
        Targets::Classes(t) | Targets::Probabilities(t) => Place::of(t),
    };
    let upstream_at = call.has_upstream.then(|| Place::of(&upstream));
    let grad_at = Place::of(&grad);
    let loss_at = Place::of(&loss);
    // wgpu refuses one buffer bound read-only and writable in one dispatch, and burn's
    // default pool puts many tensors in one buffer: `crate::device` asks for one buffer per
    // tensor. (Copying the inputs out would cost a full read and write of the logits.)
    let written = [&grad_at.resource.buffer, &loss_at.resource.buffer];
    let read = [Some(&logits_at), Some(&targets_at), upstream_at.as_ref()];
    if read
        .iter()
        .flatten()
        .any(|p| written.contains(&&p.resource.buffer))
    {
        panic!(
            "ml-softmax-burn: an input and an output of the loss share one wgpu buffer; open the \
             device with MemoryConfiguration::ExclusivePages (ml_softmax_burn::device does)"
        );
    }
    logits
        .client
        .flush()
        .unwrap_or_else(|e| panic!("ml-softmax-burn: flushing burn's queued work failed: {e}"));

    // 4. One submission on burn's queue.
    let (loss_slot, row_loss_slot) = match call.options.reduction {
        Reduction::None => (None, Some(loss_at.slice())),
        Reduction::Mean | Reduction::Sum => (Some(loss_at.slice()), None),
    };
    let bufs = DeviceCrossEntropy {
        logits: logits_at.slice(),
        precision,
        targets: match &targets {
            Targets::Classes(_) => DeviceTargets::Classes(targets_at.slice()),
            Targets::Probabilities(_) => DeviceTargets::Probabilities(targets_at.slice()),
        },
        grad: Some(grad_at.slice()),
        loss: loss_slot,
        row_loss: row_loss_slot,
        lse: None,
        upstream: upstream_at.as_ref().map(Place::slice),
    };
    ctx.cross_entropy_device(&bufs, rows, cols, &call.options, Strategy::Auto)
        .unwrap_or_else(|e| panic!("ml-softmax-burn: {e}"));

    // 5. The loss in the logits' float type, as burn's own loss would be.
    let loss = if dtype == DType::F32 {
        loss
    } else {
        burn_cubecl::kernel::cast(loss, dtype)
    };
    (loss, grad)
}
