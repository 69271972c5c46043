"""Vocabulary-parallel cross-entropy: each rank holds some columns of the vocabulary.

Each rank (process, GPU, thread) holds ``logits[..., vocab_start:vocab_start + n]`` of a
vocabulary of ``vocab_size`` classes, as Megatron-LM's vocab-parallel output layer does. Per
row, its GPU computes partial statistics over its columns (max, sum of exp, the target logit
when the label is one of its classes, and the sums that label smoothing, class weights,
probability targets, z-loss and soft-capping need); the ranks merge them with two calls of
your collective, ``all_reduce(array, "max")`` then ``all_reduce(array, "sum")`` (each rank's
sum of exp rescaled to the common max in between: the online-softmax merge); then each rank
writes its slice of the gradient. The result equals the unsharded ``ml_softmax.cross_entropy``
within float32 rounding.

No collective of our own: ``mpi_all_reduce(comm)`` adapts mpi4py, ``torch_all_reduce(group)``
torch.distributed (NCCL, gloo), and any callable with the same contract works (the tests use
threads).

Reproducibility: the max is exact in any order; the sum is not. Results are bit-identical run
after run if your collective adds the ranks' arrays in an order that does not change between
calls (MPI and NCCL keep one for a fixed communicator, message size and algorithm), and every
rank receives the same bits (as an all-reduce does). Then every rank also returns the same loss.
"""

from __future__ import annotations

import numpy as np

from ._options import with_loss_options

__all__ = ["cross_entropy", "mpi_all_reduce", "torch_all_reduce"]


@with_loss_options
def cross_entropy(
    logits_shard,
    target,
    vocab_start: int,
    vocab_size: int,
    all_reduce,
    *,
    context=None,
    **options,
):
    """This rank's part of a vocabulary-parallel cross-entropy: ``(loss, grad_shard)``.

    Every rank calls it collectively (same rows, same options, its own columns).

    Arguments
    ---------
    logits_shard : numpy.ndarray, C-contiguous, [rows, n] or [..., n], float32 or float64
        Columns ``vocab_start .. vocab_start + n`` of the logits (classes last). float64 is
        computed in float32. (float16 / bfloat16 shards are not supported yet.)
    target : numpy.ndarray
        Class indices (int64/int32, the leading shape): the WHOLE batch's labels, classes of
        the whole vocabulary, the same on every rank. Or probabilities (a float dtype, the
        shard's shape): this rank's columns of the targets.
    vocab_start : int
        The class of this rank's first column.
    vocab_size : int
        Classes of the whole vocabulary (the sum of the ranks' n).
    all_reduce : callable ``all_reduce(array, op) -> array``
        Called collectively by every rank, twice: op "max", then "sum"; ``array`` is a 1-D
        float32 numpy array; it returns the elementwise reduction over the ranks, of the same
        shape and dtype, the same bits on every rank. ``mpi_all_reduce(comm)``,
        ``torch_all_reduce(group)``.
    weight : array-like of n numbers, optional
        This rank's slice of the class weights (the same columns as its logits).
    ignore_index, reduction, label_smoothing, z_loss, softcap
        As ``ml_softmax.cross_entropy``; ``label_smoothing`` spreads over all
        ``vocab_size`` classes.
    context : ml_softmax.Context, optional
        The adapter to run on (default: ``ml_softmax.default_context()``). Ranks in one
        process may share one.

    Returns
    -------
    loss : the whole batch's loss (float for "mean"/"sum", float32 array of the leading shape
        for "none"), the same on every rank; "mean" divides by the summed target weight of
        the whole batch (counted once), or the row count for probability targets.
    grad_shard : numpy.ndarray of the shard's shape, float32: this rank's columns of the
        gradient.

    Errors: ValueError for bad input (a shard outside the vocabulary, a label outside
    [0, vocab_size), wrong shapes, an all_reduce result of the wrong shape); an exception
    raised by ``all_reduce`` propagates unchanged; ml_softmax.DeviceError for device failures.
    """
    if context is None:
        from . import default_context

        context = default_context()
    return context._vocab_cross_entropy(
        logits_shard,
        target,
        vocab_start,
        vocab_size,
        all_reduce,
        **options,
    )


def mpi_all_reduce(comm):
    """An ``all_reduce(array, op)`` for cross_entropy over an mpi4py communicator.

    ``comm`` is e.g. ``mpi4py.MPI.COMM_WORLD``; each call is one ``comm.Allreduce`` (MPI.MAX
    or MPI.SUM on float32 buffers).
    """
    from mpi4py import MPI

    ops = {"max": MPI.MAX, "sum": MPI.SUM}

    def all_reduce(array, op):
        send = np.ascontiguousarray(array, dtype=np.float32)
        out = np.empty_like(send)
        comm.Allreduce([send, MPI.FLOAT], [out, MPI.FLOAT], op=ops[op])
        return out

    return all_reduce


def torch_all_reduce(group=None):
    """An ``all_reduce(array, op)`` for cross_entropy over torch.distributed.

    Call it after ``torch.distributed.init_process_group``. ``group`` is a process group
    (None: the default one). With the NCCL backend the array goes to the current CUDA device
    (``torch.cuda.current_device()``) and back; with gloo it stays on the CPU.
    (Written against torch.distributed's documented API; its tests use a stand-in module,
    it has not been run against a real torch yet.)
    """
    import torch
    import torch.distributed as dist

    ops = {"max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}

    def all_reduce(array, op):
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        if dist.get_backend(group) == "nccl":
            tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(tensor, op=ops[op], group=group)
        return tensor.cpu().numpy()

    return all_reduce
