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
//! Probability targets that require a gradient get PyTorch's: with `z'` the (soft-capped)
//! logits, `lse` each row's log-sum-exp of them (the kernel writes it in the forward), `u` the
//! upstream gradient, `s` the reduction's scale (1 / rows for mean, else 1), `eps` the label
//! smoothing and `w` the class weights,
//! `dL/dt[r, j] = u[r] * s * (1 - eps) * w[j] * (lse[r] - z'[r, j])` (z-loss does not depend on
//! the targets). Five burn elementwise ops over `[rows, cols]` (fused into one kernel under
//! burn's fusion), run only when the targets are tracked; the forward then keeps the logits and
//! the lse `[rows]` until the backward.

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, FloatDType, Scalar, Shape, TensorData};
use ml_softmax::Reduction;

use crate::Gradient;
use crate::backend::{Call, FusedCrossEntropyBackend};

/// The targets of one call on the inner backend, kept for `Recompute`'s second run.
#[derive(Debug, Clone)]
enum Saved<B: Backend> {
    Classes(IntTensor<B>),
    Probabilities(FloatTensor<B>),
}

/// `(loss, grad, lse)` of one kernel run (`FusedCrossEntropyBackend`).
type Outputs<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

impl<B: FusedCrossEntropyBackend> Saved<B> {
    fn run(&self, logits: FloatTensor<B>, upstream: FloatTensor<B>, call: Call) -> Outputs<B> {
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
    ) -> Outputs<Self> {
        let nodes = [logits.node()];
        differentiate::<B, C, 1>(
            nodes,
            logits,
            (Saved::Classes(labels), false),
            upstream,
            call,
        )
    }

    fn fused_cross_entropy_probs(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        call: Call,
    ) -> Outputs<Self> {
        let nodes = [logits.node(), targets.node()];
        let tracked = targets.is_tracked();
        let targets = (Saved::Probabilities(targets.into_primitive()), tracked);
        differentiate::<B, C, 2>(nodes, logits, targets, upstream, call)
    }
}

/// How the backward gets the logits' gradient ([`Gradient`]).
#[derive(Debug, Clone)]
enum LogitsGrad<B: FusedCrossEntropyBackend> {
    /// The forward's gradient.
    Keep(FloatTensor<B>),
    /// The logits and targets, to run the kernel again.
    Recompute {
        logits: FloatTensor<B>,
        targets: Saved<B>,
    },
}

/// What the probability targets' gradient needs: the logits and each row's lse.
#[derive(Debug, Clone)]
struct TargetsGrad<B: Backend> {
    logits: FloatTensor<B>,
    lse: FloatTensor<B>,
}

/// What the backward needs; `None` for an input that is not tracked.
#[derive(Debug, Clone)]
struct State<B: FusedCrossEntropyBackend> {
    logits: Option<LogitsGrad<B>>,
    targets: Option<TargetsGrad<B>>,
    call: Call,
    rows: usize,
}

/// The loss's backward: parent 0 is the logits, parent 1 (probability targets only) the
/// targets.
#[derive(Debug)]
struct CrossEntropyBackward<const N: usize>;

impl<B: FusedCrossEntropyBackend, const N: usize> Backward<B, N> for CrossEntropyBackward<N> {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        // The loss's upstream gradient: `[1]` for mean / sum, `[rows]` for none.
        let upstream = grads.consume::<B>(&ops.node);
        let State {
            logits,
            targets,
            call,
            rows,
        } = ops.state;
        let mut parents = ops.parents.into_iter();
        if let (Some(Some(parent)), Some(how)) = (parents.next(), logits) {
            let grad = logits_gradient(how, upstream.clone(), call.clone(), rows);
            grads.register::<B>(parent.id, grad);
        }
        if let (Some(Some(parent)), Some(saved)) = (parents.next(), targets) {
            grads.register::<B>(parent.id, targets_gradient(saved, upstream, &call));
        }
    }
}

fn logits_gradient<B: FusedCrossEntropyBackend>(
    how: LogitsGrad<B>,
    upstream: FloatTensor<B>,
    call: Call,
    rows: usize,
) -> FloatTensor<B> {
    match how {
        LogitsGrad::Keep(grad) => B::float_mul(grad, column::<B>(upstream)),
        LogitsGrad::Recompute { logits, targets } => {
            let upstream = f32_of::<B>(B::float_expand(upstream, Shape::from([rows])));
            let call = Call {
                has_upstream: true,
                ..call
            };
            targets.run(logits, upstream, call).1
        }
    }
}

/// `u[r] * s * (1 - eps) * w[j] * (lse[r] - z'[r, j])` in f32 (module comment).
fn targets_gradient<B: Backend>(
    TargetsGrad { logits, lse }: TargetsGrad<B>,
    upstream: FloatTensor<B>,
    call: &Call,
) -> FloatTensor<B> {
    let options = &call.options;
    let [rows, cols] = [logits.shape()[0], logits.shape()[1]];
    let device = logits.device();
    let mut z = f32_of::<B>(logits);
    if options.softcap > 0.0 {
        let cap = Scalar::from(options.softcap);
        z = B::float_mul_scalar(B::float_tanh(B::float_div_scalar(z, cap)), cap);
    }
    let lse_minus_z = B::float_sub(B::float_reshape(lse, Shape::from([rows, 1])), z);
    let scale = match options.reduction {
        Reduction::Mean => 1.0 / rows as f32,
        Reduction::Sum | Reduction::None => 1.0,
    };
    let factor = Scalar::from(scale * (1.0 - options.label_smoothing));
    let grad = B::float_mul_scalar(
        B::float_mul(lse_minus_z, column::<B>(f32_of::<B>(upstream))),
        factor,
    );
    match &options.weight {
        Some(w) => {
            let w = B::float_from_data(TensorData::new(w.clone(), [1, cols]), &device);
            B::float_mul(grad, w)
        }
        None => grad,
    }
}

/// An upstream gradient (`[1]` or `[rows]`) as a column that broadcasts over `[rows, cols]`.
fn column<B: Backend>(upstream: FloatTensor<B>) -> FloatTensor<B> {
    let len = upstream.shape()[0];
    B::float_reshape(upstream, Shape::from([len, 1]))
}

fn f32_of<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    match t.dtype() {
        DType::F32 => t,
        _ => B::float_cast(t, FloatDType::F32),
    }
}

/// burn's autodiff tensor (its type is not exported by name).
type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

/// The forward under autodiff: one kernel run, and what the backward needs kept. `targets`
/// says whether the (probability) targets are tracked.
fn differentiate<B: FusedCrossEntropyBackend, C: CheckpointStrategy, const N: usize>(
    nodes: [burn::backend::autodiff::ops::NodeGuard; N],
    logits: Tracked<B, C>,
    (targets, targets_tracked): (Saved<B>, bool),
    upstream: Tracked<B, C>,
    call: Call,
) -> Outputs<Autodiff<B, C>> {
    let upstream = upstream.into_primitive();
    let rows = logits.primitive().shape()[0];
    let logits_tracked = logits.is_tracked();
    match CrossEntropyBackward::<N>
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let logits = logits.into_primitive();
            let (loss, grad, lse) = targets.run(logits.clone(), upstream, call.clone());
            let targets_grad = targets_tracked.then(|| TargetsGrad {
                logits: logits.clone(),
                lse: lse.clone(),
            });
            let logits_grad = logits_tracked.then(|| match call.gradient {
                Gradient::Keep => LogitsGrad::Keep(grad.clone()),
                Gradient::Recompute => LogitsGrad::Recompute { logits, targets },
            });
            let state = State {
                logits: logits_grad,
                targets: targets_grad,
                call,
                rows,
            };
            let loss = prep.finish(state, loss);
            (loss, Tracked::<B, C>::new(grad), Tracked::<B, C>::new(lse))
        }
        OpsKind::UnTracked(prep) => {
            let (loss, grad, lse) = targets.run(logits.into_primitive(), upstream, call);
            let loss = prep.finish(loss);
            (loss, Tracked::<B, C>::new(grad), Tracked::<B, C>::new(lse))
        }
    }
}
