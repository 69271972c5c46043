"""ml_softmax.parallel: vocabulary-parallel cross-entropy, threads standing in for ranks.

Each test splits the vocabulary into uneven slices, runs one thread per rank with a
thread-based all_reduce (the ranks' arrays folded in rank order, the same bits to each), puts
the gradient slices back together and compares with the float64 numpy reference, within the
unsharded tests' tolerances (`check`), on every adapter with fresh random data. The adapters
for mpi4py and torch.distributed are tested against stand-in modules here; the MPI example
(python/examples/vocab_parallel_mpi.py) runs under mpirun in CI.
"""

import sys
import threading
import types

import numpy as np
import pytest

import ml_softmax as ms
import reference as ref
from test_ml_softmax import OPTION_SETS, REDUCTIONS, check, make_labels, make_options


class ThreadGroup:
    """all_reduce among `ranks` threads: deposit, wait, fold every slot in rank order, wait."""

    def __init__(self, ranks):
        self.slots = [None] * ranks
        self.barrier = threading.Barrier(ranks, timeout=120)

    def all_reduce_for(self, rank):
        def all_reduce(array, op):
            assert array.dtype == np.float32 and array.ndim == 1
            self.slots[rank] = array.copy()
            self.barrier.wait()
            out = self.slots[0].copy()
            for other in self.slots[1:]:
                out = np.maximum(out, other) if op == "max" else out + other
            self.barrier.wait()
            return out

        return all_reduce


def bounds(rng, vocab, ranks):
    cuts = sorted(rng.choice(np.arange(1, vocab), ranks - 1, replace=False).tolist())
    return [0, *cuts, vocab]


def run_sharded(ctx, z, target, b, opts, reduction):
    """One thread per rank; returns (loss of each rank, gradient put back together)."""
    ranks = len(b) - 1
    group = ThreadGroup(ranks)
    results = [None] * ranks
    errors = []
    vocab = z.shape[-1]

    def rank_main(rank):
        lo, hi = b[rank], b[rank + 1]
        mine = dict(opts)
        if mine.get("weight") is not None:
            mine["weight"] = mine["weight"][lo:hi]
        t = target if np.issubdtype(target.dtype, np.integer) else target[..., lo:hi].copy()
        try:
            results[rank] = ms.parallel.cross_entropy(
                np.ascontiguousarray(z[..., lo:hi]), t, lo, vocab,
                group.all_reduce_for(rank), reduction=reduction, context=ctx, **mine)
        except BaseException as e:  # reported below, after every thread has ended
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    losses = [r[0] for r in results]
    grad = np.concatenate([r[1] for r in results], axis=-1)
    return losses, grad


def assert_same_on_every_rank(losses):
    for loss in losses[1:]:
        np.testing.assert_array_equal(loss, losses[0])


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_class_targets_match_the_reference(ctx, rng, option_set, reduction, ranks):
    rows, vocab = int(rng.integers(1, 30)), int(rng.integers(8, 400))
    opts = make_options(rng, OPTION_SETS[option_set], vocab)
    z = (rng.standard_normal((rows, vocab)) * 3).astype(np.float32)
    y = make_labels(rng, rows, vocab, opts)
    b = bounds(rng, vocab, ranks)
    for rank in range(ranks):  # a label on every rank (where there are rows enough)
        y[rank % rows] = rng.integers(b[rank], b[rank + 1])
    losses, grad = run_sharded(ctx, z, y, b, opts, reduction)
    assert_same_on_every_rank(losses)
    check(losses[0], grad, *ref.cross_entropy(z, y, reduction=reduction, **opts))


@pytest.mark.parametrize("ranks", [1, 3, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option_set", ["defaults", "weight", "label_smoothing", "z_loss",
                                        "softcap"])
def test_probability_targets_match_the_reference(ctx, rng, option_set, reduction, ranks):
    rows, vocab = int(rng.integers(1, 20)), int(rng.integers(8, 300))
    opts = make_options(rng, OPTION_SETS[option_set], vocab)
    z = (rng.standard_normal((rows, vocab)) * 2).astype(np.float32)
    t = rng.dirichlet(np.ones(vocab), rows).astype(np.float32)
    losses, grad = run_sharded(ctx, z, t, bounds(rng, vocab, ranks), opts, reduction)
    assert_same_on_every_rank(losses)
    check(losses[0], grad, *ref.cross_entropy(z, t, reduction=reduction, **opts))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_rank_with_every_row_ignored_and_a_batch_with_every_row_ignored(ctx, rng, reduction):
    rows, vocab = 12, 60
    b = [0, 20, 45, 60]
    z = rng.standard_normal((2, rows // 2, vocab)).astype(np.float32)  # N-D, classes last
    y = rng.integers(0, 20, (2, rows // 2))  # every label on rank 0
    y[0, 1] = y[1, 3] = -100
    losses, grad = run_sharded(ctx, z, y, b, {}, reduction)
    check(losses[0], grad, *ref.cross_entropy(z, y, reduction=reduction))
    y[:] = -100
    losses, grad = run_sharded(ctx, z, y, b, {}, reduction)
    check(losses[0], grad, *ref.cross_entropy(z, y, reduction=reduction))
    assert not grad.any()


def test_bad_input_and_a_failing_all_reduce(ctx, rng):
    z = rng.standard_normal((3, 4)).astype(np.float32)
    y = np.array([0, 5, 9])
    noop = lambda array, op: array  # noqa: E731 (one rank: the reduction is the identity)
    with pytest.raises(ValueError, match="vocabulary of 6"):
        ms.parallel.cross_entropy(z, y, 4, 6, noop, context=ctx)
    with pytest.raises(ValueError, match="label 9 in row 2 is outside 0..9"):
        ms.parallel.cross_entropy(z, y, 0, 9, noop, context=ctx)
    with pytest.raises(ValueError, match="returned shape"):
        ms.parallel.cross_entropy(z, y, 0, 10, lambda a, op: a[:1], context=ctx)

    class Boom(Exception):
        pass

    def failing(array, op):
        raise Boom(op)

    with pytest.raises(Boom, match="max"):
        ms.parallel.cross_entropy(z, y, 0, 10, failing, context=ctx)
    with pytest.raises(ValueError, match="float32 or float64"):
        ms.parallel.cross_entropy(z.astype(np.float16), y, 0, 10, noop, context=ctx)


def test_the_mpi_adapter_calls_allreduce_with_the_op(monkeypatch):
    """mpi_all_reduce against a stand-in mpi4py (mpirun runs the real one in CI)."""
    calls = []

    class Comm:
        def Allreduce(self, send, recv, op):
            calls.append(op)
            recv[0][:] = send[0] * 2  # as if two ranks held the same array

    fake = types.ModuleType("mpi4py")
    fake.MPI = types.SimpleNamespace(MAX="MPI.MAX", SUM="MPI.SUM", FLOAT="MPI.FLOAT")
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    reduce = ms.parallel.mpi_all_reduce(Comm())
    out = reduce(np.array([1.0, 2.0], dtype=np.float32), "sum")
    np.testing.assert_array_equal(out, [2.0, 4.0])
    assert out.dtype == np.float32
    reduce(np.array([1.0], dtype=np.float32), "max")
    assert calls == ["MPI.SUM", "MPI.MAX"]


def test_the_torch_adapter_against_a_stand_in_torch_distributed(monkeypatch):
    """torch_all_reduce with a fake torch / torch.distributed (torch is not installed in CI;
    this checks the calls made, not real torch)."""
    calls = []

    class Tensor:
        def __init__(self, array):
            self.array = array

        def to(self, device):
            calls.append(("to", device))
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.array

    dist = types.ModuleType("torch.distributed")
    dist.ReduceOp = types.SimpleNamespace(MAX="MAX", SUM="SUM")
    dist.get_backend = lambda group=None: "nccl" if group == "gpu-group" else "gloo"

    def all_reduce(tensor, op, group=None):
        calls.append(("all_reduce", op, group))
        tensor.array *= 3

    dist.all_reduce = all_reduce
    torch = types.ModuleType("torch")
    torch.distributed = dist
    torch.from_numpy = Tensor
    torch.device = lambda kind, index: f"{kind}:{index}"
    torch.cuda = types.SimpleNamespace(current_device=lambda: 1)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch.distributed", dist)
    given = np.array([1.0, -1.0], dtype=np.float32)
    out = ms.parallel.torch_all_reduce()(given, "max")
    np.testing.assert_array_equal(out, [3.0, -3.0])
    np.testing.assert_array_equal(given, [1.0, -1.0])  # the caller's array is not written
    ms.parallel.torch_all_reduce("gpu-group")(given, "sum")
    assert calls == [("all_reduce", "MAX", None), ("to", "cuda:1"), ("all_reduce", "SUM", "gpu-group")]
