"""ml_softmax.linear_cross_entropy against the float64 numpy reference (logits
hidden @ classifier.T + bias in float64, then tests/reference.py's cross-entropy, then the two
products), on every adapter, with NaN-poisoned outputs."""

import ml_dtypes
import numpy as np
import pytest

import ml_softmax as ms
import reference as ref


def expected(h, c, y, bias=None, **opts):
    h64, c64 = h.astype(np.float64), c.astype(np.float64)
    z = h64 @ c64.T + (0 if bias is None else np.asarray(bias, np.float64))
    loss, g = ref.cross_entropy(z, y, **opts)
    return loss, g @ c64, g.T @ h64, g.sum(axis=0), np.abs(g) @ np.abs(c64), np.abs(g).T @ np.abs(h64)


def problem(rng, rows, dim, vocab):
    h = rng.standard_normal((rows, dim)).astype(np.float32)
    c = (rng.standard_normal((vocab, dim)) * 1.5 / np.sqrt(dim)).astype(np.float32)
    y = rng.integers(0, vocab, rows)
    return h, c, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference_with_every_option(ctx, rng, reduction):
    # vocab past one 2048-column block and not a multiple of it; dim not a multiple of 16.
    rows, dim, vocab = 40, 19, 2100
    h, c, y = problem(rng, rows, dim, vocab)
    y[::4] = 3  # ignored rows
    bias = rng.standard_normal(vocab).astype(np.float32) * 0.3
    opts = dict(weight=rng.uniform(0.2, 2.0, vocab).astype(np.float32), ignore_index=3,
                reduction=reduction, label_smoothing=0.1, z_loss=1e-3, softcap=4.0)
    loss, gh, gc, gb = ctx.linear_cross_entropy(h, c, y, bias=bias, **opts)
    want, wgh, wgc, wgb, sh, sc = expected(h, c, y, bias, **opts)
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-5)
    assert gh.dtype == np.float32 and gh.shape == h.shape
    assert gc.dtype == np.float32 and gc.shape == c.shape
    assert np.all(np.abs(gh - wgh) <= 1e-4 * sh + 1e-7)
    assert np.all(np.abs(gc - wgc) <= 1e-4 * sc + 1e-7)
    np.testing.assert_allclose(gb, wgb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_inputs(ctx, rng, dtype):
    h, c, y = problem(rng, 30, 24, 500)
    h, c = h.astype(dtype), c.astype(dtype)
    loss, gh, gc = ctx.linear_cross_entropy(h, c, y)
    want, wgh, wgc, _, sh, sc = expected(h.astype(np.float32), c.astype(np.float32), y)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    assert np.all(np.abs(gh - wgh) <= 1e-4 * sh + 1e-7)
    assert np.all(np.abs(gc - wgc) <= 1e-4 * sc + 1e-7)


def test_module_function_and_leading_shape(rng):
    h, c, y = problem(rng, 12, 8, 30)
    loss, gh, gc = ms.linear_cross_entropy(h.reshape(3, 4, 8), c, y.reshape(3, 4),
                                           reduction="none")
    want, wgh, _, _, _, _ = expected(h, c, y, reduction="none")
    assert loss.shape == (3, 4) and gh.shape == (3, 4, 8)
    np.testing.assert_allclose(loss.reshape(-1), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gh.reshape(12, 8), wgh, rtol=1e-3, atol=1e-6)


def test_bad_input_is_a_value_error(rng):
    h, c, y = problem(rng, 4, 6, 10)
    with pytest.raises(ValueError, match="classifier must be \\[vocab, dim\\]"):
        ms.linear_cross_entropy(h, c[:, :5].copy(), y)
    with pytest.raises(ValueError, match="label 10"):
        ms.linear_cross_entropy(h, c, np.array([0, 10, 1, 2]))
    with pytest.raises(ValueError, match="bias has 9 elements"):
        ms.linear_cross_entropy(h, c, y, bias=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="class indices"):
        ms.linear_cross_entropy(h, c, np.full((4, 10), 0.1))
