"""PyTorch bridge: ``ml_softmax.torch.cross_entropy`` returns a loss tensor whose backward
gives the gradient ml-softmax computed. Import this module only where torch is installed
(``import ml_softmax.torch``); ``import ml_softmax`` never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch as _torch

import ml_softmax as _ms

__all__ = ["cross_entropy"]


def _to_numpy(t: "_torch.Tensor") -> np.ndarray:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == _torch.bfloat16:
        import ml_dtypes

        return t.view(_torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _to_torch(a, like: "_torch.Tensor") -> "_torch.Tensor":
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        t = _torch.from_numpy(a.view(np.int16)).view(_torch.bfloat16)
    else:
        t = _torch.from_numpy(a)
    return t.to(like.device)


class _CrossEntropy(_torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, context, weight, ignore_index, reduction,
                label_smoothing, z_loss, softcap):
        z = _to_numpy(logits)
        y = _to_numpy(target)
        w = None if weight is None else _to_numpy(weight).astype(np.float32)
        loss, grad = context.cross_entropy(
            z, y, weight=w, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
        g = _to_torch(grad, logits)
        if g.dtype != logits.dtype:  # float64 logits: computed (and the gradient) in float32
            g = g.to(logits.dtype)
        ctx.save_for_backward(g)
        ctx.reduction = reduction
        if reduction == "none":
            out = _to_torch(loss, logits)
        else:
            out = _torch.tensor(loss, dtype=_torch.float32, device=logits.device)
        return out.to(logits.dtype) if logits.dtype == _torch.float64 else out

    @staticmethod
    def backward(ctx, grad_output):
        (g,) = ctx.saved_tensors
        if ctx.reduction == "none":
            # Row r's gradient depends only on row r's loss: scale it by that row's upstream.
            scaled = g * grad_output.unsqueeze(-1).to(g.dtype)
        else:
            scaled = g * grad_output.to(g.dtype)
        return scaled, None, None, None, None, None, None, None, None


def cross_entropy(input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap=None, context=None):
    """Cross-entropy whose forward and gradient are computed by ml-softmax on the GPU.

    Like ``torch.nn.functional.cross_entropy(input, target, weight=..., ignore_index=...,
    reduction=..., label_smoothing=...)``, plus ``z_loss`` and ``softcap``, but with the
    classes on the LAST axis of ``input`` ([rows, classes] or [..., classes]): PyTorch's own
    (N, C, d1, ...) layout for N-D input is NOT this one (for 2-D input they coincide); use
    ``input.movedim(1, -1)`` first. ``target``: int64/int32 class indices of the leading shape,
    or float probabilities of input's shape. Returns a loss tensor (0-d for "mean"/"sum", the
    leading shape for "none") whose ``backward()`` gives input the gradient ml-softmax
    computed (float32, float16 or bfloat16 as the input; float64 input is computed in float32).
    Semantics, the zero-denominator rule (a "mean" over no counted rows is 0 with a zero
    gradient, where PyTorch gives NaN) and errors: ``help(ml_softmax.cross_entropy)``.

    CPU tensors are passed to ml-softmax without a copy (when contiguous). A CUDA (or other
    device) tensor is copied to the host, its gradient computed by ml-softmax on the wgpu
    adapter and copied back: two device-host copies of the logits' size per call (each
    synchronises the CUDA stream), on top of ml-softmax's own upload and readback to its
    adapter, so on a CUDA machine this is much slower than PyTorch's own kernel. It exists for
    adapters PyTorch cannot use (Vulkan, Metal, DX12, GL), with CPU tensors.

    context: an ``ml_softmax.Context`` (default: ``ml_softmax.default_context()``).
    """
    context = context or _ms.default_context()
    if softcap is not None:
        softcap = float(softcap)
    return _CrossEntropy.apply(input, target, context, weight, int(ignore_index), reduction,
                               float(label_smoothing), float(z_loss), softcap)
