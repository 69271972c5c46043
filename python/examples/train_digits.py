"""Train two small classifiers on scikit-learn's bundled digits with ml-softmax's gradients.

Softmax regression and a one-hidden-layer MLP (ReLU), trained by SGD with momentum on large
batches. The loss and dloss/dlogits of each batch come from ml-softmax (on the GPU, float32);
numpy does the rest of the backward pass in float64. The same loop runs again with a float64
numpy loss and gradient, from the same initialisation and the same batches, and the script
checks that the two agree: the per-epoch mean training losses within 1e-3 relative at every
epoch, the test accuracies within 1 percentage point, and both models actually learned
(test accuracy above 80%). It exits non-zero otherwise.

    python python/examples/train_digits.py               # 40 epochs
    python python/examples/train_digits.py --epochs 4    # what CI runs

With matplotlib installed it also plots both loss curves (--plot FILE).
"""

import argparse
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ml_softmax as ms


def numpy_xent(z, y):
    """Mean cross-entropy and its gradient in float64: softmax(z) - onehot(y), over rows."""
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    p = np.exp(z - lse[:, None])
    rows = np.arange(len(y))
    loss = np.mean(lse - z[rows, y])
    g = p
    g[rows, y] -= 1.0
    return loss, g / len(y)


def ml_softmax_xent(z, y):
    """The same from ml-softmax: float64 logits are computed in float32 on the GPU."""
    loss, g = ms.cross_entropy(z, y)
    return loss, g.astype(np.float64)


def init_params(kind, seed, features, hidden, classes):
    rng = np.random.default_rng(seed)
    if kind == "softmax regression":
        return {"W": rng.normal(0, 0.01, (features, classes)), "b": np.zeros(classes)}
    return {
        "W1": rng.normal(0, np.sqrt(2 / features), (features, hidden)),
        "b1": np.zeros(hidden),
        "W2": rng.normal(0, np.sqrt(1 / hidden), (hidden, classes)),
        "b2": np.zeros(classes),
    }


def forward_backward(kind, params, x, y, xent):
    """Loss and parameter gradients; xent gives the loss and dloss/dlogits."""
    if kind == "softmax regression":
        z = x @ params["W"] + params["b"]
        loss, dz = xent(np.ascontiguousarray(z), y)
        return loss, {"W": x.T @ dz, "b": dz.sum(axis=0)}
    h_pre = x @ params["W1"] + params["b1"]
    h = np.maximum(h_pre, 0.0)
    z = h @ params["W2"] + params["b2"]
    loss, dz = xent(np.ascontiguousarray(z), y)
    dh = (dz @ params["W2"].T) * (h_pre > 0)
    return loss, {"W2": h.T @ dz, "b2": dz.sum(axis=0), "W1": x.T @ dh, "b1": dh.sum(axis=0)}


def predict(kind, params, x):
    if kind == "softmax regression":
        return np.argmax(x @ params["W"] + params["b"], axis=1)
    h = np.maximum(x @ params["W1"] + params["b1"], 0.0)
    return np.argmax(h @ params["W2"] + params["b2"], axis=1)


def train(kind, xent, data, batches, seed, lr, hidden):
    x_train, y_train, x_test, y_test = data
    params = init_params(kind, seed, x_train.shape[1], hidden, 10)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    curve = []
    for epoch_batches in batches:
        losses = []
        for idx in epoch_batches:
            loss, grads = forward_backward(kind, params, x_train[idx], y_train[idx], xent)
            losses.append(loss)
            for k in params:
                velocity[k] = 0.9 * velocity[k] - lr * grads[k]
                params[k] += velocity[k]
        curve.append(float(np.mean(losses)))
    accuracy = float(np.mean(predict(kind, params, x_test) == y_test))
    return curve, accuracy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256, help="rows per batch (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--plot", default="train_digits_loss.png",
                    help="where to save the loss curves when matplotlib is installed")
    args = ap.parse_args()

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target)
    data = (x_train, y_train.astype(np.int64), x_test, y_test)
    rng = np.random.default_rng(args.seed)
    batches = [np.array_split(rng.permutation(len(x_train)),
                              max(1, len(x_train) // args.batch)) for _ in range(args.epochs)]
    print(f"digits: {len(x_train)} train, {len(x_test)} test, {x.shape[1]} features, 10 classes; "
          f"{args.epochs} epochs of batches of ~{len(batches[0][0])} rows, seed {args.seed}")
    print(f"ml-softmax adapter: {ms.default_context().adapter['name']} "
          f"({ms.default_context().adapter['backend']})")

    failures = []
    results = {}
    for kind, lr in [("softmax regression", 0.5), ("MLP (1 hidden layer)", 0.1)]:
        gpu_curve, gpu_acc = train(kind, ml_softmax_xent, data, batches, args.seed, lr,
                                   args.hidden)
        ref_curve, ref_acc = train(kind, numpy_xent, data, batches, args.seed, lr, args.hidden)
        results[kind] = (gpu_curve, ref_curve)
        print(f"\n{kind}: test accuracy ml-softmax {gpu_acc:.2%}, numpy float64 {ref_acc:.2%}")
        print(f"{'epoch':>5} {'ml-softmax':>12} {'numpy f64':>12} {'rel. diff':>10}")
        worst = 0.0
        for epoch, (a, b) in enumerate(zip(gpu_curve, ref_curve), 1):
            rel = abs(a - b) / abs(b)
            worst = max(worst, rel)
            print(f"{epoch:>5} {a:>12.6f} {b:>12.6f} {rel:>10.2e}")
        if worst > 1e-3:
            failures.append(f"{kind}: loss curves differ by {worst:.2e} relative (> 1e-3)")
        if abs(gpu_acc - ref_acc) > 0.01:
            failures.append(f"{kind}: accuracies differ by {abs(gpu_acc - ref_acc):.2%} (> 1 pp)")
        if min(gpu_acc, ref_acc) < 0.8:
            failures.append(f"{kind}: test accuracy {min(gpu_acc, ref_acc):.2%} < 80%: no learning")
        if not gpu_curve[-1] < gpu_curve[0]:
            failures.append(f"{kind}: the training loss did not fall")
        print(f"largest relative loss difference: {worst:.2e}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no plot)")
    else:
        fig, axes = plt.subplots(1, len(results), figsize=(10, 4))
        for ax, (kind, (gpu_curve, ref_curve)) in zip(axes, results.items()):
            epochs = range(1, len(gpu_curve) + 1)
            ax.plot(epochs, gpu_curve, label="ml-softmax (GPU, float32)")
            ax.plot(epochs, ref_curve, "--", label="numpy float64")
            ax.set(title=kind, xlabel="epoch", ylabel="mean training loss", yscale="log")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"\nloss curves plotted to {args.plot}")

    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: loss curves within 1e-3 relative at every epoch, accuracies within 1 pp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
