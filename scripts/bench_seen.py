"""What recording predict's train facts (recipe.data.seen: ranges, quantiles, missing counts) costs data loading.

    python scripts/bench_seen.py [--rows 200000] [--repeats 3]

Writes one numeric-only CSV (the float32 matrix path) and one with two text columns (the per-column path),
loads each with the facts recorded and with recording replaced by a no-op, alternating, in this one process;
prints the best time of each and the ratio (with / without), and the time spent inside the recorders as a
share of the load (the steadier number on a busy machine: both are measured in the same load).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import load as load_config  # noqa: E402
from recipe.data import load as load_data, seen  # noqa: E402


def _write(path: Path, rows: int, text: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).round(4)
    cols = [f"f{i}" for i in range(20)] + (["colour", "size"] if text else []) + ["label"]
    with path.open("w") as f:
        f.write(",".join(cols) + "\n")
        colours, sizes = np.array(["red", "green", "blue"]), np.array(["S", "M", "L", "XL"])
        c, s, y = rng.integers(0, 3, rows), rng.integers(0, 4, rows), (x[:, 0] > 0).astype(int)
        for i in range(rows):
            cells = [f"{v:.4f}" for v in x[i]] + ([colours[c[i]], sizes[s[i]]] if text else []) + [str(y[i])]
            f.write(",".join(cells) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    real_numeric, real_levels = seen.record_numeric, seen.record_levels
    with tempfile.TemporaryDirectory() as d:
        for kind, text in (("numeric matrix", False), ("text columns", True)):
            path = Path(d) / f"{'text' if text else 'num'}.csv"
            _write(path, a.rows, text)
            cfg_path = Path(d) / "c.yaml"
            cfg_path.write_text(f"name: b\nseed: 0\ndata: {{source: {path.name}}}\n")
            cfg = load_config(cfg_path, [])
            best = {"with": float("inf"), "without": float("inf")}
            share = []
            inside = [0.0]

            def timed(fn):
                def wrapper(v):
                    t = time.perf_counter()
                    out = fn(v)
                    inside[0] += time.perf_counter() - t
                    return out
                return wrapper

            for _ in range(a.repeats):
                for mode in ("with", "without"):
                    if mode == "without":
                        seen.record_numeric = lambda v: {}
                        seen.record_levels = lambda v: {}
                    else:
                        seen.record_numeric, seen.record_levels = timed(real_numeric), timed(real_levels)
                    inside[0] = 0.0
                    start = time.perf_counter()
                    load_data(cfg)
                    took = time.perf_counter() - start
                    best[mode] = min(best[mode], took)
                    if mode == "with":
                        share.append(inside[0] / took)
                    seen.record_numeric, seen.record_levels = real_numeric, real_levels
            print(f"{kind:15s} {a.rows} rows: with facts {best['with']:.3f}s, without {best['without']:.3f}s, "
                  f"ratio {best['with'] / best['without']:.3f}; recording = {100 * min(share):.1f}% of a load "
                  f"(median {100 * float(np.median(share)):.1f}%)")
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
