#!/usr/bin/env python3
"""Checks `ml-softmax xent` against PyTorch's `F.cross_entropy`, forward and backward.

For a few shapes and every reduction, random logits and labels are drawn with numpy, saved
as .npy, run through the binary, and compared with `torch.nn.functional.cross_entropy`
computed by autograd (for reduction 'none', the gradient of the sum of the row losses, which
is what `xent --grad-out` writes). One more case per reduction adds class weights, label
smoothing and rows labelled -100 (the ignore index).

PyTorch runs in float64 on the same float32 inputs by default, so the differences printed are
ml-softmax's own error; `--torch-dtype float32` compares with PyTorch's float32 result instead.
Each case also prints how far PyTorch float32 is from float64, for scale.

Tolerances: loss |d| <= 1e-5 * |ref| (+ 1e-7 * max|ref| so that exact zeros of ignored rows
compare); gradient |d| <= 1e-6 * max|grad| + 1e-4 * |ref|, element by element. Exits 1 when
any case is outside them.

    python benches/check_against_torch.py [--bin target/release/ml-softmax] [--backend vulkan]
                                          [--seed 0] [--torch-dtype float64|float32]

The binary is, in order: --bin, $ML_SOFTMAX_BIN, target/release/ml-softmax beside this
script's repository (and $CARGO_TARGET_DIR/release/ml-softmax if that does not exist).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

LOSS_RTOL = 1e-5
LOSS_ATOL_REL_MAX = 1e-7
GRAD_ATOL_REL_MAX = 1e-6
GRAD_RTOL = 1e-4

SHAPES = [(64, 1000), (8, 50257), (3, 7)]
REDUCTIONS = ["mean", "sum", "none"]


def default_binary():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.join(root, "target", "release", "ml-softmax")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "ml-softmax"))
    for c in candidates:
        if os.path.exists(c):
            return c
    return candidates[0]


def torch_reference(logits, labels, reduction, weight, smoothing, dtype):
    """Loss and gradient from PyTorch autograd."""
    z = torch.from_numpy(logits).to(dtype).requires_grad_(True)
    w = None if weight is None else torch.from_numpy(weight).to(dtype)
    loss = F.cross_entropy(z, torch.from_numpy(labels), weight=w, ignore_index=-100,
                           reduction=reduction, label_smoothing=smoothing)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().double().numpy(), z.grad.double().numpy()


def loss_diff(got, ref):
    """(max abs diff, max rel diff, worst |d| / tolerance)."""
    got = np.asarray(got, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    d = np.abs(got - ref)
    tol = LOSS_RTOL * np.abs(ref) + LOSS_ATOL_REL_MAX * np.abs(ref).max()
    rel = d / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    return d.max(), rel.max(), (d / np.maximum(tol, 1e-300)).max()


def grad_diff(got, ref):
    """(max abs diff, max abs diff / max|ref|, worst |d| / tolerance)."""
    d = np.abs(got.astype(np.float64) - ref)
    scale = np.abs(ref).max()
    tol = GRAD_ATOL_REL_MAX * scale + GRAD_RTOL * np.abs(ref)
    return d.max(), d.max() / max(scale, 1e-300), (d / np.maximum(tol, 1e-300)).max()


def run_case(args, tmp, name, logits, labels, reduction, weight=None, smoothing=0.0):
    rows, cols = logits.shape
    paths = {k: os.path.join(tmp, f"{name}-{k}.npy") for k in ("logits", "labels", "weight",
                                                             "loss", "grad")}
    np.save(paths["logits"], logits)
    np.save(paths["labels"], labels)
    cmd = [args.bin, "xent", "--logits", paths["logits"], "--labels", paths["labels"],
           "--loss-out", paths["loss"], "--grad-out", paths["grad"], "--reduction", reduction,
           "--ignore-index", "-100", "--label-smoothing", repr(smoothing)]
    if weight is not None:
        np.save(paths["weight"], weight)
        cmd += ["--weight", paths["weight"]]
    if args.backend:
        cmd += ["--backend", args.backend]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"{name}: ml-softmax failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return False
    loss = np.load(paths["loss"])
    grad = np.load(paths["grad"])
    want_loss_shape = (rows,) if reduction == "none" else ()
    if loss.shape != want_loss_shape or loss.dtype != np.float32:
        print(f"{name}: loss is {loss.dtype} {loss.shape}, expected float32 {want_loss_shape}")
        return False
    if grad.shape != (rows, cols) or grad.dtype != np.float32:
        print(f"{name}: grad is {grad.dtype} {grad.shape}, expected float32 {(rows, cols)}")
        return False

    ref_loss, ref_grad = torch_reference(logits, labels, reduction, weight, smoothing,
                                         args.dtype)
    la, lr, lt = loss_diff(loss, ref_loss)
    ga, gr, gt = grad_diff(grad, ref_grad)
    ok = lt <= 1.0 and gt <= 1.0
    # For scale: PyTorch float32 against PyTorch float64.
    t32_loss, t32_grad = torch_reference(logits, labels, reduction, weight, smoothing,
                                         torch.float32)
    t64_loss, t64_grad = torch_reference(logits, labels, reduction, weight, smoothing,
                                         torch.float64)
    _, t32_lr, _ = loss_diff(t32_loss, t64_loss)
    _, t32_gr, _ = grad_diff(t32_grad, t64_grad)
    print(f"{name:<26} {la:10.2e} {lr:10.2e} {ga:10.2e} {gr:12.2e} {max(lt, gt):9.3f} "
          f"{t32_lr:10.2e} {t32_gr:11.2e} {secs:6.2f}s  {'ok' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bin_pos", nargs="?", metavar="BIN", help="the ml-softmax binary")
    ap.add_argument("--bin", help="the ml-softmax binary (default: $ML_SOFTMAX_BIN, else "
                    "target/release/ml-softmax)")
    ap.add_argument("--backend", help="passed to xent --backend (default: the binary's auto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-dtype", choices=["float64", "float32"], default="float64")
    args = ap.parse_args()
    args.bin = args.bin or args.bin_pos or os.environ.get("ML_SOFTMAX_BIN") or default_binary()
    args.dtype = torch.float64 if args.torch_dtype == "float64" else torch.float32
    if not os.path.exists(args.bin):
        sys.exit(f"error: no binary at {args.bin}: run `cargo build --release` or pass --bin")

    rng = np.random.default_rng(args.seed)
    print(f"binary {args.bin}; torch {torch.__version__} ({args.torch_dtype} reference); "
          f"numpy {np.__version__}; seed {args.seed}")
    print(f"tolerances: loss rtol {LOSS_RTOL:g}; grad atol {GRAD_ATOL_REL_MAX:g} * max|grad| "
          f"+ rtol {GRAD_RTOL:g}; 'worst' is the largest |diff| / tolerance (<= 1 passes)")
    print(f"{'case':<26} {'loss abs':>10} {'loss rel':>10} {'grad abs':>10} "
          f"{'grad abs/max':>12} {'worst':>9} {'t32 loss':>10} {'t32 grad':>11} {'time':>7}")

    all_ok = True
    with tempfile.TemporaryDirectory(prefix="ml-softmax-check-") as tmp:
        for rows, cols in SHAPES:
            logits = (rng.standard_normal((rows, cols)) * 2.0).astype(np.float32)
            labels = rng.integers(0, cols, rows, dtype=np.int64)
            for reduction in REDUCTIONS:
                all_ok &= run_case(args, tmp, f"{rows}x{cols} {reduction}", logits, labels,
                                   reduction)
        # Class weights + label smoothing + ignored rows.
        rows, cols = 64, 1000
        logits = (rng.standard_normal((rows, cols)) * 2.0).astype(np.float32)
        labels = rng.integers(0, cols, rows, dtype=np.int64)
        labels[rng.choice(rows, rows // 8, replace=False)] = -100
        weight = rng.uniform(0.1, 2.0, cols).astype(np.float32)
        for reduction in REDUCTIONS:
            all_ok &= run_case(args, tmp, f"{rows}x{cols} {reduction} w+ls+ign", logits,
                               labels, reduction, weight=weight, smoothing=0.1)

    print("all within tolerance" if all_ok else "FAILED: some cases are outside the tolerance")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
