"""ml_softmax: softmax, the cross-entropy loss and its gradient on any GPU wgpu reaches.

numpy arrays in, loss and gradient out, computed by WGSL compute shaders through wgpu on
Vulkan, Metal, DX12 or GL (including software adapters: lavapipe, llvmpipe). Semantics are
PyTorch's ``torch.nn.functional.cross_entropy`` with the classes on the LAST axis.

    >>> import numpy as np, ml_softmax as ms
    >>> z = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    >>> loss, grad = ms.cross_entropy(z, np.array([1]))
    >>> round(loss, 4), grad.round(3)
    (1.4076, array([[ 0.09 , -0.755,  0.665]], dtype=float32))

Functions: cross_entropy, linear_cross_entropy, softmax, log_softmax, adapters,
default_context; class Context
(one adapter, reused across calls, shareable across threads); exception DeviceError.
The optional PyTorch bridge is ``ml_softmax.torch`` (import it explicitly; needs torch).
``ml_softmax.parallel``: vocabulary-parallel cross-entropy over your collective (mpi4py,
torch.distributed, or any ``all_reduce`` callable).
"""

from __future__ import annotations

import threading

from . import parallel
from ._native import Context, DeviceError, _adapters
from ._options import with_loss_options

__all__ = [
    "Context",
    "DeviceError",
    "adapters",
    "cross_entropy",
    "default_context",
    "linear_cross_entropy",
    "log_softmax",
    "parallel",
    "softmax",
]

__version__ = "0.1.0"

_default = None
_default_lock = threading.Lock()


def default_context() -> Context:
    """The Context the module-level functions use, created on first use.

    It is ``Context()``: backend "auto" honouring the environment variables WGPU_BACKEND
    (e.g. "vulkan" or "vulkan,gl") and WGPU_ADAPTER_NAME (a substring of the adapter name),
    read when it is created; otherwise the best adapter, a hardware GPU before a software one.
    Raises DeviceError when there is no adapter, ValueError when WGPU_BACKEND names no backend.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Context()
        return _default


def adapters() -> list[dict]:
    """The adapters wgpu finds on this machine, best first, as dicts.

    Keys: "name", "backend" ("vulkan", "metal", "dx12", "gl"), "type" ("discretegpu",
    "integratedgpu", "virtualgpu", "cpu", "other"), "driver", "driver_info", and "default"
    (True for the adapter the module-level functions use, see default_context). WGPU_BACKEND
    narrows the list. Build a context on any of them with
    ``Context(backend=a["backend"], adapter=a["name"])``.
    """
    found = _adapters()
    try:
        info = default_context().adapter
    except DeviceError:
        info = None
    for a in found:
        a["default"] = info is not None and (a["name"], a["backend"]) == (
            info["name"],
            info["backend"],
        )
    return found


@with_loss_options
def cross_entropy(logits, target, **options):
    """Cross-entropy loss and its gradient dloss/dlogits, on the GPU: ``(loss, grad)``.

    Arguments
    ---------
    logits : numpy.ndarray, C-contiguous, shape [rows, classes] or [..., classes]
        The classes are the LAST axis (e.g. [batch, time, vocab], as language models hold
        them). PyTorch's own (N, C, d1, ...) layout is NOT this one: move the class axis last
        (``np.moveaxis(x, 1, -1)``, then ``np.ascontiguousarray``). dtype float32, float16,
        bfloat16 (``ml_dtypes.bfloat16``) or float64; float64 is cast to float32 and computed
        in float32, and its gradient is returned as float32. All arithmetic is float32.
    target : numpy.ndarray, C-contiguous
        Either class indices: int64 or int32, of the logits' leading shape (``[rows]`` for
        2-D logits), each in [0, classes) or equal to ``ignore_index``; or probabilities: a
        float array (float32/float64/float16/bfloat16, used as float32) of the logits' shape,
        one distribution per row.
    weight : array-like of ``classes`` numbers, optional
        Class weights (finite, >= 0), as PyTorch's ``weight``.
    ignore_index : int
        Rows whose class index equals it get loss 0 and a zero gradient row (class-index
        targets only).
    reduction : "mean", "sum" or "none"
    label_smoothing : float in [0, 1]
        PyTorch's formula: the target becomes (1 - eps) * onehot + eps / classes.
    z_loss : float >= 0
        Adds ``z_loss * lse**2`` to each (non-ignored) row's loss (PaLM's auxiliary loss).
    softcap : float >= 0 or None
        Logit soft-capping (Gemma 2): the loss sees ``softcap * tanh(z / softcap)``. None or 0
        turns it off.

    Returns
    -------
    loss : float for "mean" and "sum"; for "none" a float32 array of the logits' leading
        shape (one loss per row).
    grad : numpy.ndarray of the logits' shape and dtype (float32 for float64 logits): the
        gradient of the returned loss; for "none" the gradient of the SUM of the row losses
        (multiply row r by your upstream gradient of row r's loss).

    Semantics
    ---------
    Row loss ``(1-eps) w_y (lse - z_y) + eps/C sum_j w_j (lse - z_j) + z_loss lse^2`` with
    ``lse = log sum_j exp(z_j)``; gradient ``softmax(z) - onehot(y)`` generalised as in the
    repository README, "What is computed". "mean" divides by D, the summed weight w_y of the
    rows not ignored (PyTorch's rule); with probability targets it divides by the number of
    rows. Zero-denominator rule: when D = 0 (every row ignored, or all their target weights
    0) the "mean" loss is 0.0 and the gradient is all zeros, where PyTorch gives NaN.
    A -inf logit is a mask (probability 0); a NaN or +inf logit makes its row's loss and
    gradient NaN (and a "mean"/"sum" loss NaN) without touching other rows.

    Errors
    ------
    ValueError, with the library's message, for bad input: logits not a numpy array or
    with fewer than 2 dimensions or not C-contiguous; a dtype not listed above; a target of
    the wrong shape; a label outside [0, classes) that is not ignore_index (the message names
    the row, counting rows of the flattened [rows, classes] view); a NaN, infinite or
    negative weight or one of the wrong length; an option outside its domain; an empty
    shape. ml_softmax.DeviceError for device failures: no adapter, an adapter that lacks a
    feature the call needs (float16 needs SHADER_F16 or a software adapter), out of memory,
    a lost device.

    The GIL is released while the GPU works; the arrays are borrowed (not copied) for that
    time, so do not write into them from another thread during the call. Runs on
    default_context(); use ``Context(...).cross_entropy`` to pick the adapter.
    """
    return default_context().cross_entropy(logits, target, **options)


@with_loss_options
def linear_cross_entropy(hidden, classifier, target, *, bias=None, **options):
    """Fused linear + cross-entropy: ``(loss, d_hidden, d_classifier)``, plus ``d_bias`` last
    when a bias is given, without ever storing the [rows, vocab] logits.

    The loss is ``cross_entropy(hidden @ classifier.T + bias, target, ...)`` with the same
    options and semantics; the logits are computed one vocabulary block at a time on the GPU
    (twice: once for the loss, once for the gradients), so memory does not grow with the
    vocabulary. Use it for a language model's output layer, where the logits are the largest
    tensor of the step.

    hidden : [..., dim] float32, float16, bfloat16 (ml_dtypes) or float64 (cast to float32).
    classifier : [vocab, dim], same dtypes (``torch.nn.Linear(dim, vocab).weight``).
    target : int64 or int32 class indices of hidden's leading shape (probability targets
        are not supported here).
    bias : [vocab] numbers, optional.
    The other options: as cross_entropy. All arithmetic is float32; the gradients are
    float32 arrays of hidden's, classifier's and bias's shapes. Errors as cross_entropy
    (ValueError names the input, e.g. a classifier of another dim). Runs on default_context().
    """
    return default_context().linear_cross_entropy(
        hidden, classifier, target, bias=bias, **options
    )


def softmax(logits):
    """Softmax of each row (the last axis) of ``logits``, on the GPU.

    logits: a C-contiguous numpy array of float32, float16, bfloat16 (ml_dtypes) or float64,
    at least 2-D, classes last. Returns an array of the same shape and dtype (float32 for
    float64 input, which is computed in float32). -inf logits get probability 0; a row with a
    NaN or +inf gives NaN. ValueError for bad input, DeviceError for device failures, as for
    cross_entropy. Runs on default_context().
    """
    return default_context().softmax(logits)


def log_softmax(logits):
    """Log-softmax of each row (the last axis) of ``logits``, on the GPU: ``z - lse(z)``.

    Same arguments, dtypes, shapes and errors as softmax. Runs on default_context().
    """
    return default_context().log_softmax(logits)
