"""The Python side of the call-overhead measurement (BENCHMARKS.md, "Python call overhead"):
wall time of ml_softmax.Context.cross_entropy on one reused context, the same data and
method as host_call_timing.rs (3 warm-up calls, then the median and minimum of REPS calls).

    WGPU_BACKEND=vulkan python python/examples/call_overhead.py 8 1000 200
"""

import sys
import time

import numpy as np

import ml_softmax as ms


def main():
    rows, cols, reps = (int(a) for a in sys.argv[1:4])
    ctx = ms.Context()
    i = np.arange(rows * cols, dtype=np.int64)
    logits = (((i * 7919) % 1000).astype(np.float32) / 100.0 - 5.0).reshape(rows, cols)
    labels = (np.arange(rows, dtype=np.int64) * 31) % cols
    times = []
    for k in range(reps + 3):
        start = time.perf_counter()
        out = ctx.cross_entropy(logits, labels)
        ms_ = (time.perf_counter() - start) * 1e3
        del out
        if k >= 3:
            times.append(ms_)
    times.sort()
    print(f"python        {rows}x{cols}: median {times[len(times) // 2]:.3f} ms, "
          f"min {times[0]:.3f} ms over {reps} calls ({ctx!r})")


if __name__ == "__main__":
    main()
