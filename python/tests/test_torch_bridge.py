"""ml_softmax.torch against torch.nn.functional.cross_entropy, where PyTorch is installed.

Without torch every test here is SKIPPED (never passed): pytest -rs prints the reason. CI does
not install torch (a multi-GB download), so these run only on machines that have it.
"""

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is not installed: the ml_softmax.torch bridge tests did NOT run "
           "(pip install torch to run them)",
)
F = torch.nn.functional

import ml_softmax.torch as mst  # noqa: E402


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch_forward_and_backward(ctx, rng, reduction):
    rows, cols = 37, 301
    z = torch.tensor(rng.standard_normal((rows, cols)) * 3, dtype=torch.float32)
    y = torch.tensor(rng.integers(0, cols, rows))
    y[0] = -100
    w = torch.tensor(rng.uniform(0.2, 2.0, cols), dtype=torch.float32)
    opts = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    z1 = z.clone().requires_grad_()
    loss = mst.cross_entropy(z1, y, context=ctx, **opts)
    z2 = z.clone().requires_grad_()
    want = F.cross_entropy(z2, y, **opts)
    upstream = torch.tensor(rng.random(want.shape), dtype=torch.float32)
    (loss * upstream).sum().backward()
    (want * upstream).sum().backward()
    torch.testing.assert_close(loss, want, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=2e-5 * z2.grad.abs().max().item())


def test_probability_targets_and_bfloat16(ctx, rng):
    z = torch.tensor(rng.standard_normal((8, 50)), dtype=torch.float32)
    t = torch.softmax(torch.tensor(rng.standard_normal((8, 50)), dtype=torch.float32), -1)
    z1 = z.clone().requires_grad_()
    mst.cross_entropy(z1, t, context=ctx).backward()
    z2 = z.clone().requires_grad_()
    F.cross_entropy(z2, t).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=1e-6)
    zb = z.to(torch.bfloat16).requires_grad_()
    mst.cross_entropy(zb, t, context=ctx).backward()
    assert zb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(zb.grad.float(), z2.grad, rtol=0, atol=2e-2 * z2.grad.abs().max().item())
