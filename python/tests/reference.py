"""The float64 numpy reference the tests compare against (written here, independent of the
library's own Rust reference). Formulas: README.md, "What is computed"."""

import numpy as np


def _capped(z, softcap):
    if softcap:
        return softcap * np.tanh(z / softcap)
    return z


def lse_rows(zc):
    m = np.max(zc, axis=1, keepdims=True)
    return m[:, 0] + np.log(np.sum(np.exp(zc - m), axis=1))


def cross_entropy(z, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0, softcap=None):
    """(loss, grad) in float64 for logits z [..., C] and class-index or probability targets."""
    z = np.asarray(z, dtype=np.float64)
    shape = z.shape
    C = shape[-1]
    z = z.reshape(-1, C)
    R = z.shape[0]
    eps = label_smoothing
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    W = w.sum()
    zc = _capped(z, softcap)
    lse = lse_rows(zc)
    p = np.exp(zc - lse[:, None])
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        y = target.reshape(-1).astype(np.int64)
        ignored = y == ignore_index
        yy = np.where(ignored, 0, y)
        wy = np.where(ignored, 0.0, w[yy])
        onehot = np.zeros((R, C))
        onehot[np.arange(R), yy] = 1.0
        row = ((1 - eps) * wy * (lse - zc[np.arange(R), yy])
               + eps / C * np.sum(w * (lse[:, None] - zc), axis=1)
               + z_loss * lse**2)
        g = ((1 - eps) * wy[:, None] * (p - onehot)
             + eps / C * (W * p - w)
             + 2 * z_loss * lse[:, None] * p)
        row[ignored] = 0.0
        g[ignored] = 0.0
        denom = wy.sum()
    else:
        t = np.asarray(target, dtype=np.float64).reshape(R, C)
        t = (1 - eps) * t + eps / C
        T = np.sum(w * t, axis=1)
        row = T * lse - np.sum(w * t * zc, axis=1) + z_loss * lse**2
        g = (T + 2 * z_loss * lse)[:, None] * p - w * t
        denom = float(R)
    if softcap:
        g = g * (1 - (zc / softcap) ** 2)
    if reduction == "mean":
        if denom == 0:  # the library's zero-denominator rule: loss 0, gradient 0
            return 0.0, np.zeros(shape)
        return row.sum() / denom, (g / denom).reshape(shape)
    if reduction == "sum":
        return row.sum(), g.reshape(shape)
    return row.reshape(shape[:-1]), g.reshape(shape)


def softmax(z, log=False):
    z = np.asarray(z, dtype=np.float64)
    shape = z.shape
    z2 = z.reshape(-1, shape[-1])
    lse = lse_rows(z2)[:, None]
    out = z2 - lse if log else np.exp(z2 - lse)
    return out.reshape(shape)
