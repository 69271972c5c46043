//! The loss under burn's autodiff: the forward runs the fused kernel once; the backward gives
//! the logits ml-softmax's gradient, in one of two ways ([`Gradient`]):
//!
//! - `Keep`: the gradient the forward computed is kept until the backward, which multiplies
//!   it by the upstream gradient (a scalar for mean / sum, `[rows]` for none): one burn
//!   elementwise op. Costs one `[rows, cols]` tensor of memory between the two passes.
//! - `Recompute` (the default): the forward's gradient is dropped; the backward runs the
//!   fused kernel again on the saved logits with the upstream gradients as its per-row scale.
//!   No extra memory held; the logits are read twice and the kernel runs twice.
//!
//! Measured on lavapipe (BENCHMARKS.md, "Inside burn"), `Recompute` was 1.3-1.8x faster from
//! 8192 x 1000 up: a second run of the fused kernel costs less than burn's elementwise
//! multiply over `[rows, cols]` (burn's generic kernels move bytes more slowly there), and
//! `Keep` was faster only at 8 x 1000 (1.1 against 1.6 ms). Hence the default. The device
//! API has no lse-only backward kernel, so the recompute runs the whole kernel.
//!
//! No gradient flows to probability targets (PyTorch gives one; training on soft labels
//! rarely needs it).

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, FloatDType, Shape};

use crate::Gradient;
use crate::backend::{Call, FusedCrossEntropyBackend};

/// The targets of one call on the inner backend, kept for `Recompute`'s second run.
#[derive(Debug, Clone)]
enum Saved<B: Backend> {
    Classes(IntTensor<B>),
    Probabilities(FloatTensor<B>),
}

impl<B: FusedCrossEntropyBackend> Saved<B> {
    fn run(
        &self,
        logits: FloatTensor<B>,
        upstream: FloatTensor<B>,
        call: Call,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        match self {
            Saved::Classes(labels) => {
                B::fused_cross_entropy(logits, labels.clone(), upstream, call)
            }
            Saved::Probabilities(t) => {
                B::fused_cross_entropy_probs(logits, t.clone(), upstream, call)
            }
        }
    }
}

impl<B: FusedCrossEntropyBackend, C: CheckpointStrategy> FusedCrossEntropyBackend
    for Autodiff<B, C>
{
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        upstream: FloatTensor<Self>,
        call: Call,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        differentiate::<B, C>(logits, Saved::Classes(labels), upstream, call)
    }

    fn fused_cross_entropy_probs(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        call: Call,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let targets = Saved::Probabilities(targets.into_primitive());
        differentiate::<B, C>(logits, targets, upstream, call)
    }
}

/// What the backward needs, by [`Gradient`] mode.
#[derive(Debug, Clone)]
enum State<B: FusedCrossEntropyBackend> {
    /// The forward's gradient.
    Keep { grad: FloatTensor<B>, rows: usize },
    /// The logits and targets, to run the kernel again.
    Recompute {
        logits: FloatTensor<B>,
        targets: Saved<B>,
        call: Call,
        rows: usize,
    },
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: FusedCrossEntropyBackend> Backward<B, 1> for CrossEntropyBackward {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        // The loss's upstream gradient: `[1]` for mean / sum, `[rows]` for none.
        let upstream = grads.consume::<B>(&ops.node);
        let Some(parent) = parent else { return };
        let grad = match ops.state {
            State::Keep { grad, rows } => {
                let len = upstream.shape()[0];
                debug_assert!(len == 1 || len == rows);
                B::float_mul(grad, B::float_reshape(upstream, Shape::from([len, 1])))
            }
            State::Recompute {
                logits,
                targets,
                call,
                rows,
            } => {
                let upstream = B::float_expand(upstream, Shape::from([rows]));
                let upstream = match upstream.dtype() {
                    DType::F32 => upstream,
                    _ => B::float_cast(upstream, FloatDType::F32),
                };
                let call = Call {
                    has_upstream: true,
                    ..call
                };
                targets.run(logits, upstream, call).1
            }
        };
        grads.register::<B>(parent.id, grad);
    }
}

/// burn's autodiff tensor (its type is not exported by name).
type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

fn differentiate<B: FusedCrossEntropyBackend, C: CheckpointStrategy>(
    logits: Tracked<B, C>,
    targets: Saved<B>,
    upstream: Tracked<B, C>,
    call: Call,
) -> (Tracked<B, C>, Tracked<B, C>) {
    let upstream = upstream.into_primitive();
    let rows = logits.primitive().shape()[0];
    match CrossEntropyBackward
        .prepare::<C>([logits.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (logits, _guard) = logits.into_parts();
            let (loss, grad) = targets.run(logits.clone(), upstream, call.clone());
            let state = match call.gradient {
                Gradient::Keep => State::Keep {
                    grad: grad.clone(),
                    rows,
                },
                Gradient::Recompute => State::Recompute {
                    logits,
                    targets,
                    call,
                    rows,
                },
            };
            (prep.finish(state, loss), Tracked::<B, C>::new(grad))
        }
        OpsKind::UnTracked(prep) => {
            let (loss, grad) = targets.run(logits.into_primitive(), upstream, call);
            (prep.finish(loss), Tracked::<B, C>::new(grad))
        }
    }
}
