#!/usr/bin/env python3
"""Times PyTorch's CPU cross-entropy, forward + backward, as a baseline for `ml-softmax bench`.

For each shape: float32 logits [rows, cols] with requires_grad, random int64 labels,
`F.cross_entropy(logits, labels)` (mean reduction) and `.backward()`; the median of --reps
timed repetitions after --warmup untimed ones. GB/s counts 2 * rows * cols * 4 bytes (the
logits read once, the gradient written once), as `ml-softmax bench` does.

    python benches/torch_xent.py [--reps 10] [--warmup 2] [--shapes 8x1000,1024x32000]
                                 [--threads N] [--json torch.json]

`--json` writes a list of objects in the format of `ml-softmax bench --json`:
{"adapter": "pytorch-cpu <version> (<threads> threads)", "strategy": "torch", "rows", "cols",
"median_ms", "bytes", "gbps"}.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DEFAULT_SHAPES = "16384x128,8192x1000,4096x4096,1024x32000,256x131072,64x262144,8x1000"


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        try:
            rows, cols = (int(v) for v in item.lower().split("x"))
        except ValueError:
            sys.exit(f"error: bad shape {item!r}: expected ROWSxCOLS, e.g. 1024x32000")
        if rows < 1 or cols < 1:
            sys.exit(f"error: bad shape {item!r}: rows and cols must be at least 1")
        shapes.append((rows, cols))
    return shapes


def time_shape(rows, cols, reps, warmup, generator):
    logits = torch.randn(rows, cols, dtype=torch.float32, generator=generator)
    logits.requires_grad_(True)
    labels = torch.randint(0, cols, (rows,), dtype=torch.int64, generator=generator)

    def step():
        logits.grad = None
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        return loss

    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="ROWSxCOLS,... (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if args.reps < 1 or args.warmup < 0:
        sys.exit("error: --reps must be at least 1 and --warmup at least 0")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    adapter = f"pytorch-cpu {torch.__version__} ({threads} threads)"
    print(f"torch {torch.__version__}, torch.get_num_threads() = {threads}")
    print(f"F.cross_entropy forward + backward, float32, mean; median of {args.reps} "
          f"after {args.warmup} warm-up")
    print(f"{'shape':>14} {'median ms':>11} {'MB moved':>10} {'GB/s':>8}")

    generator = torch.Generator().manual_seed(args.seed)
    results = []
    for rows, cols in parse_shapes(args.shapes):
        nbytes = 2 * rows * cols * 4
        ms = time_shape(rows, cols, args.reps, args.warmup, generator)
        gbps = nbytes / (ms * 1e-3) / 1e9
        print(f"{f'{rows}x{cols}':>14} {ms:11.3f} {nbytes / 1e6:10.1f} {gbps:8.2f}", flush=True)
        results.append({
            "adapter": adapter,
            "strategy": "torch",
            "rows": rows,
            "cols": cols,
            "median_ms": round(ms, 6),
            "bytes": nbytes,
            "gbps": round(gbps, 4),
        })

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
