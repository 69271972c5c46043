#!/usr/bin/env python3
"""The peers of `ml-softmax bench` on the same CUDA GPU, in the same run (issue 14).

Times the forward + backward of the mean cross-entropy (class-index targets), loss and
gradient of the logits, for each shape and precision of the bench:

  eager        PyTorch eager: F.cross_entropy, then torch.autograd.grad
  compile      the same under torch.compile(dynamic=True): one compilation per precision,
               not per shape
  liger        Liger-Kernel's LigerCrossEntropyFunction (a Triton kernel; it writes the
               gradient into the logits during the forward, as it does in training)
  memcpy       dst.copy_(src) of the same bytes: the limit (reads rows*cols elements,
               writes as many, as `ml-softmax bench`'s copy-buffer does)
  *-graph      for small shapes (logits of at most --graph-max-mb), eager and memcpy also
               inside a CUDA graph of --graph-calls calls: no launch gaps; time per call =
               replay time / calls

Every figure is taken after a warm-up that holds the GPU busy (back-to-back calls for at
least --warmup-ms and until the timings of the last three chunks agree within 5 %, at most
20 times that long): after idle a GPU's clock is low (an H200 sat at 345 MHz) and rises only
under sustained load. Then --reps calls, each bracketed by CUDA events (min / median / max),
and the host wall time per call over the same reps (synchronised once at the end).

Output: JSON, one record per (shape, precision, peer); `benches/compare.py` joins it with
the bench's JSON into one table.

  python3 benches/cuda_peers.py --json peers.json
  python3 benches/cuda_peers.py --dry-run          # no torch needed: checks the plan, the
                                                   # records and the join; exits 1 on error

Import-safe: torch, triton and liger_kernel are imported only when timing.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402  (benches/compare.py: the join)

# `ml-softmax bench`'s default matrix, plus the two large shapes of issue 14.
DEFAULT_SHAPES = (
    "16384x128,8192x1000,4096x4096,1024x32000,256x131072,64x262144,8x1000,"
    "16384x32000,4096x128256"
)
PRECISIONS = {"f32": 4, "bf16": 2, "f16": 2}
PEERS = ("memcpy", "eager", "compile", "liger")
SETTLE_COUNT = 3
SETTLE_TOLERANCE = 0.05
WARMUP_CAP = 20


def parse_shapes(text):
    shapes = []
    for part in text.split(","):
        rows, sep, cols = part.strip().partition("x")
        if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) < 1 or int(cols) < 1:
            raise ValueError(f"shape {part!r} is not ROWSxCOLS")
        shapes.append((int(rows), int(cols)))
    return shapes


def plan(args):
    """Every (rows, cols, precision, peer, in_graph) to time, in order."""
    out = []
    for precision in args.precisions.split(","):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: f32, bf16 or f16")
        for rows, cols in parse_shapes(args.shapes):
            logit_bytes = rows * cols * PRECISIONS[precision]
            for peer in args.peers.split(","):
                if peer not in PEERS:
                    raise ValueError(f"peer {peer!r}: one of {', '.join(PEERS)}")
                out.append((rows, cols, precision, peer, False))
                if peer in ("memcpy", "eager") and logit_bytes <= args.graph_max_mb * 2**20:
                    out.append((rows, cols, precision, peer, True))
    return out


def record(item, args, device, versions, timing=None, error=None):
    rows, cols, precision, peer, graph = item
    rec = {
        "rows": rows,
        "cols": cols,
        "precision": precision,
        "peer": peer + ("-graph" if graph else ""),
        "timed": (
            f"CUDA events around a graph replay of {args.graph_calls} calls, per call"
            if graph
            else "CUDA events around each call"
        )
        + f", after a warm-up of >= {args.warmup_ms} ms",
        "bytes": 2 * rows * cols * PRECISIONS[precision],
        "device": device,
        "versions": versions,
        "reps": args.reps,
        "min_ms": None,
        "median_ms": None,
        "max_ms": None,
        "wall_ms": None,
        "warmup_ms": None,
        "warmup_settled": None,
        "error": error,
        "dry_run": bool(args.dry_run),
    }
    if timing:
        rec.update(timing)
    return rec


# ---- timing (torch only from here on) ----


def make_call(torch, peer, rows, cols, precision, state):
    """A no-argument function doing one call of `peer` on fresh random data of the shape."""
    import torch.nn.functional as F

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[precision]
    x = torch.randn(rows, cols, device="cuda", dtype=dtype) * 2
    y = torch.randint(0, cols, (rows,), device="cuda")
    if peer == "memcpy":
        dst = torch.empty_like(x)
        return lambda: dst.copy_(x)
    x.requires_grad_(True)
    if peer == "eager":
        def call():
            loss = F.cross_entropy(x, y)
            return torch.autograd.grad(loss, x)[0]
        return call
    if peer == "compile":
        if precision not in state:
            state[precision] = torch.compile(lambda a, b: F.cross_entropy(a, b), dynamic=True)
        compiled = state[precision]

        def call():
            loss = compiled(x, y)
            return torch.autograd.grad(loss, x)[0]
        return call
    if peer == "liger":
        from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction

        def call():
            out = LigerCrossEntropyFunction.apply(x, y)
            loss = out[0] if isinstance(out, tuple) else out
            return torch.autograd.grad(loss, x)[0]
        return call
    raise ValueError(peer)


def in_graph(torch, call, calls):
    """`call` captured `calls` times in one CUDA graph; returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            call()
    return graph.replay


def chunk_ms(torch, fn, n):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def warm_up(torch, fn, least_ms):
    """Back-to-back calls until the GPU's timings settle (see the module docstring)."""
    fn()  # compilation, autotuning, allocation: before the clock starts
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    per_call = chunk_ms(torch, fn, 10) / 10
    n = max(1, min(1000, int(2.0 / max(per_call, 1e-4))))  # chunks of about 2 ms
    times = []
    while True:
        times.append(chunk_ms(torch, fn, n))
        elapsed = (time.perf_counter() - t0) * 1e3
        recent = times[-SETTLE_COUNT:]
        steady = len(times) >= SETTLE_COUNT and max(recent) <= min(recent) * (1 + SETTLE_TOLERANCE)
        if elapsed >= least_ms and steady:
            return elapsed, True
        if elapsed >= WARMUP_CAP * least_ms:
            return elapsed, False


def time_fn(torch, fn, reps, per_call=1):
    """min / median / max per call by CUDA events around each `fn`, and host wall per call."""
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(reps)
    ]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3 / reps / per_call
    ms = sorted(s.elapsed_time(e) / per_call for s, e in events)
    return {
        "min_ms": ms[0],
        "median_ms": statistics.median(ms),
        "max_ms": ms[-1],
        "wall_ms": wall,
    }


def run_item(torch, item, args, state):
    rows, cols, precision, peer, graph = item
    call = make_call(torch, peer, rows, cols, precision, state)
    fn = in_graph(torch, call, args.graph_calls) if graph else call
    warm_ms, settled = warm_up(torch, fn, args.warmup_ms)
    reps = max(3, args.reps // args.graph_calls) if graph else args.reps
    timing = time_fn(torch, fn, reps, args.graph_calls if graph else 1)
    timing.update(warmup_ms=warm_ms, warmup_settled=settled, reps=reps)
    return timing


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES)
    p.add_argument("--precisions", default="f32,bf16,f16")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--warmup-ms", type=int, default=300)
    p.add_argument("--graph-calls", type=int, default=20)
    p.add_argument("--graph-max-mb", type=float, default=64.0)
    p.add_argument("--json", help="write the records here (default: stdout)")
    p.add_argument("--bench", nargs="*", default=[],
                   help="with --dry-run: ml-softmax bench JSON files to join with (default: "
                        "synthetic records of the same shapes)")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU, no torch: write the plan as records without timings and "
                        "check the join with compare.py")
    args = p.parse_args(argv)
    if args.reps < 1 or args.graph_calls < 1:
        p.error("--reps and --graph-calls must be at least 1")
    items = plan(args)
    records = []
    if args.dry_run:
        for item in items:
            records.append(record(item, args, "none (dry run)", {}))
        check_dry_run(records, items, args)
    else:
        import torch

        if not torch.cuda.is_available():
            print("cuda_peers.py: no CUDA device (use --dry-run to check the script)",
                  file=sys.stderr)
            return 1
        device = torch.cuda.get_device_name()
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
        try:
            import triton
            versions["triton"] = triton.__version__
        except ImportError:
            pass
        try:
            import importlib.metadata as md
            versions["liger_kernel"] = md.version("liger-kernel")
        except Exception:  # noqa: BLE001  (not installed: its records carry the error)
            pass
        state = {}
        t_start = time.perf_counter()
        for item in items:
            try:
                timing = run_item(torch, item, args, state)
                rec = record(item, args, device, versions, timing)
            except Exception as e:  # noqa: BLE001  (one failing peer must not stop the table)
                rec = record(item, args, device, versions, error=f"{type(e).__name__}: {e}"[:500])
                torch.cuda.empty_cache()
            records.append(rec)
            shown = f"{rec['median_ms']:.4f} ms" if rec["median_ms"] is not None else rec["error"]
            print(f"{item[0]}x{item[1]} {item[2]} {rec['peer']}: {shown} "
                  f"({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
    text = json.dumps(records, indent=1) + "\n"
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def check_dry_run(records, items, args):
    """The records have every field compare.py reads, and join with bench records."""
    assert len(records) == len(items) > 0, "empty plan"
    for rec in records:
        for key in compare.PEER_FIELDS:
            assert key in rec, f"record lacks {key}: {rec}"
    if args.bench:
        bench = compare.load_bench(args.bench)
    else:
        bench = []
        for rows, cols in parse_shapes(args.shapes):
            for precision in args.precisions.split(","):
                for strategy, ms in (("copy-buffer", 1.0), ("copy", 1.2), ("auto", 2.0), ("wg1", 1.9)):
                    bench.append({
                        "rows": rows, "cols": cols, "precision": precision,
                        "strategy": strategy, "median_ms": ms, "min_ms": ms, "max_ms": ms,
                        "resolved": "wg1" if strategy == "auto" else None,
                        "timer": "synthetic (dry run)", "limit_ratio": 1.0 / ms,
                        "adapter": "none (dry run)",
                    })
    table = compare.join(bench, records)
    assert table, "the join gave no rows"
    shapes = {(r["rows"], r["cols"], r["precision"]) for r in records}
    joined = {(r["rows"], r["cols"], r["precision"]) for r in table}
    if not args.bench:
        assert joined == shapes, f"join lost rows: {shapes - joined}"
    text = compare.markdown(table)
    assert text.count("\n") >= len(table) + 2, text
    print(f"dry run: {len(items)} timings planned over {len(shapes)} shape/precision pairs; "
          f"join with {'the given bench JSON' if args.bench else 'synthetic bench records'}: "
          f"{len(table)} rows", file=sys.stderr)
    print(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
