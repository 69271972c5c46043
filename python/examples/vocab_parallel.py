"""Vocabulary-parallel cross-entropy across processes, checked against the unsharded call.

Each rank holds uneven columns of the logits of a shared random batch, calls
``ms.parallel.cross_entropy`` with a ready-made all_reduce adapter, and rank 0 gathers the
gradient slices and compares loss and gradient with ``ms.cross_entropy`` on the whole batch.
Exits 1 on any mismatch (on every rank), so CI fails.

    mpirun -n 4 python python/examples/vocab_parallel.py              # mpi4py (as root: add
                                                                      # --allow-run-as-root --oversubscribe)
    torchrun --nproc-per-node 2 python/examples/vocab_parallel.py --engine torch   # gloo

Each rank takes adapter ``rank % number of adapters`` (so on a machine with lavapipe and
llvmpipe GL, ranks alternate between them); ``--share-adapter`` puts every rank on the
default one.
"""

import argparse
import sys
import time

import numpy as np

import ml_softmax as ms


class Mpi:
    def __init__(self):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.all_reduce = ms.parallel.mpi_all_reduce(self.comm)

    def gather(self, obj):
        return self.comm.gather(obj, root=0)

    def broadcast(self, obj):
        return self.comm.bcast(obj, root=0)


class Torch:
    def __init__(self):
        import torch.distributed as dist

        dist.init_process_group("gloo")
        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.all_reduce = ms.parallel.torch_all_reduce()

    def gather(self, obj):
        out = [None] * self.size if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]


# (name, options, probability targets?)
CASES = [
    ("defaults, mean", {}, False),
    ("weights + smoothing + ignore_index, mean", {"weight": True, "label_smoothing": 0.1,
                                                  "ignore_index": 3}, False),
    ("z_loss + softcap, sum", {"z_loss": 1e-3, "softcap": 5.0, "reduction": "sum"}, False),
    ("probability targets + weights, none", {"weight": True, "reduction": "none"}, True),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["mpi", "torch"], default="mpi")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=5003)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--share-adapter", action="store_true")
    args = parser.parse_args()
    engine = Mpi() if args.engine == "mpi" else Torch()
    rank, size = engine.rank, engine.size

    adapters = ms.adapters()
    if args.share_adapter:
        ctx = ms.default_context()
    else:
        a = adapters[rank % len(adapters)]
        ctx = ms.Context(backend=a["backend"], adapter=a["name"])
    # Uneven slices: rank r holds a share proportional to r + 1.
    shares = np.arange(1, size + 1)
    bounds = np.concatenate([[0], np.cumsum(shares * args.vocab // shares.sum())])
    bounds[-1] = args.vocab
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    print(f"rank {rank}/{size}: classes {lo}..{hi} of {args.vocab} on {ctx!r}", flush=True)

    failed = False
    for i, (name, opts, probs) in enumerate(CASES):
        # Every rank draws the same batch; each keeps its columns.
        rng = np.random.default_rng([args.seed, i])
        z = (rng.standard_normal((args.rows, args.vocab)) * 3).astype(np.float32)
        weight = rng.uniform(0.2, 2.0, args.vocab).astype(np.float32)
        if probs:
            target = rng.dirichlet(np.ones(args.vocab), args.rows).astype(np.float32)
            mine = target[:, lo:hi].copy()
        else:
            target = rng.integers(0, args.vocab, args.rows)
            target[::7] = opts.get("ignore_index", -100)
            mine = target
        whole_opts = dict(opts, weight=weight if opts.get("weight") else None)
        rank_opts = dict(whole_opts, weight=weight[lo:hi] if opts.get("weight") else None)
        start = time.perf_counter()
        loss, grad = ms.parallel.cross_entropy(
            np.ascontiguousarray(z[:, lo:hi]), mine, lo, args.vocab, engine.all_reduce,
            context=ctx, **rank_opts)
        seconds = time.perf_counter() - start
        gathered = engine.gather((loss, grad))
        verdict = None
        if rank == 0:
            want_loss, want_grad = ms.cross_entropy(z, target, **whole_opts)
            got_grad = np.concatenate([g for _, g in gathered], axis=1)
            loss_err = max(float(np.max(np.abs(np.asarray(l) - want_loss)
                                        / np.maximum(np.abs(want_loss), 1e-30)))
                           for l, _ in gathered)
            grad_err = float(np.max(np.abs(got_grad - want_grad)) / np.max(np.abs(want_grad)))
            same = all(np.array_equal(l, gathered[0][0]) for l, _ in gathered)
            ok = loss_err <= 2e-5 and grad_err <= 2e-5 and same
            verdict = ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: loss rel err {loss_err:.1e} (2e-5 allowed), "
                  f"grad err {grad_err:.1e} of max|grad| (2e-5 allowed), same loss on every rank: "
                  f"{same}; {seconds * 1e3:.0f} ms on rank 0", flush=True)
        failed |= not engine.broadcast(verdict)
    if rank == 0:
        print("FAILED" if failed else f"all {len(CASES)} cases match the unsharded call "
              f"over {size} ranks", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
