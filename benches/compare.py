#!/usr/bin/env python3
"""Joins `ml-softmax bench --json` files with `benches/cuda_peers.py` output into one table.

  python3 benches/compare.py --bench f32.json bf16.json f16.json --peers peers.json [--out table.md]

One row per (shape, precision) of the bench: the limit (the driver's buffer copy
`copy-buffer`, and torch's memcpy of the same bytes where the peers ran), ours (`auto`, the
strategy it resolved to, and the best strategy), each peer, and ratios `peer / ours` (above
1: ours is faster) and `ours of limit` (copy-buffer time / auto time). All figures are
medians in ms; the last column says how each side was timed. A peer that failed or was not
run shows its error or `-`.
"""

import argparse
import json
import sys

# What compare.py reads from each peer record (cuda_peers.py --dry-run checks them).
PEER_FIELDS = ("rows", "cols", "precision", "peer", "median_ms", "min_ms", "max_ms",
               "wall_ms", "timed", "error", "dry_run")
PEER_COLUMNS = ("eager", "eager-graph", "compile", "liger")


def load_bench(paths):
    records = []
    for path in paths:
        with open(path) as f:
            records.extend(json.load(f))
    return records


def _ms(value):
    return "-" if value is None else f"{value:.4f}"


def join(bench, peers):
    """Rows of the table: one per (rows, cols, precision) in the bench, in its order."""
    keys = []
    by_key = {}
    for r in bench:
        key = (r["rows"], r["cols"], r["precision"])
        if key not in by_key:
            keys.append(key)
            by_key[key] = {}
        by_key[key][r["strategy"]] = r
    peer_by = {}
    for p in peers:
        peer_by.setdefault((p["rows"], p["cols"], p["precision"]), {})[p["peer"]] = p
    table = []
    for key in keys:
        kernels = by_key[key]
        auto = kernels.get("auto")
        limit = kernels.get("copy-buffer")
        strategies = {
            name: r for name, r in kernels.items()
            if not name.startswith("copy") and name != "auto" and r.get("median_ms") is not None
        }
        best = min(strategies.items(), key=lambda kv: kv[1]["median_ms"], default=(None, None))
        ours = auto["median_ms"] if auto else None
        row = {
            "rows": key[0],
            "cols": key[1],
            "precision": key[2],
            "limit_ms": limit["median_ms"] if limit else None,
            "ours_ms": ours,
            "ours_min_ms": auto.get("min_ms") if auto else None,
            "ours_max_ms": auto.get("max_ms") if auto else None,
            "resolved": auto.get("resolved") if auto else None,
            "best": best[0],
            "best_ms": best[1]["median_ms"] if best[1] else None,
            "ours_of_limit": (limit["median_ms"] / ours) if (limit and ours) else None,
            "ours_timed": auto.get("timer") if auto else None,
            "peers": {},
        }
        found = peer_by.get(key, {})
        memcpy = found.get("memcpy")
        row["memcpy_ms"] = memcpy["median_ms"] if memcpy else None
        for name in PEER_COLUMNS:
            p = found.get(name)
            if p is None:
                continue
            ms = p.get("median_ms")
            row["peers"][name] = {
                "ms": ms,
                "wall_ms": p.get("wall_ms"),
                "ratio": (ms / ours) if (ms and ours) else None,
                "timed": p.get("timed"),
                "error": p.get("error"),
                "dry_run": p.get("dry_run", False),
            }
        table.append(row)
    return table


def markdown(table):
    head = ["shape", "prec", "copy-buffer ms", "torch memcpy ms", "ours (auto=) ms",
            "ours of limit", "best strategy ms"]
    head += [f"{name} ms (/ours)" for name in PEER_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = set()
    for r in table:
        cells = [
            f"{r['rows']}x{r['cols']}", r["precision"], _ms(r["limit_ms"]), _ms(r["memcpy_ms"]),
            f"{_ms(r['ours_ms'])} ({r['resolved'] or '-'})",
            "-" if r["ours_of_limit"] is None else f"{100 * r['ours_of_limit']:.0f}%",
            f"{_ms(r['best_ms'])} ({r['best'] or '-'})",
        ]
        if r["ours_timed"]:
            notes.add(f"ours: {r['ours_timed']}")
        for name in PEER_COLUMNS:
            p = r["peers"].get(name)
            if p is None:
                cells.append("-")
            elif p["dry_run"]:
                cells.append("dry run")
            elif p["ms"] is None:
                cells.append("failed: " + (p["error"] or "?")[:60].replace("|", "/"))
            else:
                cells.append(f"{_ms(p['ms'])} ({p['ratio']:.2f})" if p["ratio"] else _ms(p["ms"]))
            if p and p.get("timed"):
                notes.add(f"{name}: {p['timed']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Medians. (/ours) = peer time / our auto time: above 1, ours is faster. "
                 "ours of limit = copy-buffer time / auto time.")
    lines.extend(f"- {n}" for n in sorted(notes))
    return "\n".join(lines) + "\n"


def self_test():
    bench = [
        {"rows": 8, "cols": 1000, "precision": "f32", "strategy": s, "median_ms": ms,
         "min_ms": ms, "max_ms": ms, "resolved": "wg1" if s == "auto" else None,
         "timer": "GPU timestamps"}
        for s, ms in (("copy", 0.02), ("copy-buffer", 0.01), ("auto", 0.04), ("wg1", 0.04),
                      ("wg8", 0.03))
    ]
    peers = [
        {"rows": 8, "cols": 1000, "precision": "f32", "peer": "eager", "median_ms": 0.08,
         "min_ms": 0.08, "max_ms": 0.08, "wall_ms": 0.1, "timed": "events", "error": None,
         "dry_run": False},
        {"rows": 8, "cols": 1000, "precision": "f32", "peer": "liger", "median_ms": None,
         "min_ms": None, "max_ms": None, "wall_ms": None, "timed": "events",
         "error": "ImportError: no liger", "dry_run": False},
        {"rows": 9, "cols": 9, "precision": "f32", "peer": "eager", "median_ms": 1.0},
    ]
    (row,) = join(bench, peers)
    assert row["limit_ms"] == 0.01 and row["ours_ms"] == 0.04, row
    assert abs(row["ours_of_limit"] - 0.25) < 1e-12, row
    assert row["best"] == "wg8" and row["resolved"] == "wg1", row
    assert abs(row["peers"]["eager"]["ratio"] - 2.0) < 1e-12, row
    text = markdown([row])
    assert "| 8x1000 | f32 |" in text and "0.0800 (2.00)" in text, text
    assert "failed: ImportError" in text, text
    print("compare.py self-test: ok", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", nargs="+", help="ml-softmax bench --json files")
    p.add_argument("--peers", help="cuda_peers.py --json file")
    p.add_argument("--out", help="write the markdown table here too")
    p.add_argument("--json", help="write the joined rows as JSON here")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args(argv)
    if args.self_test:
        self_test()
        return 0
    if not args.bench:
        p.error("--bench is required")
    peers = []
    if args.peers:
        with open(args.peers) as f:
            peers = json.load(f)
    table = join(load_bench(args.bench), peers)
    text = markdown(table)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
