"""Time `recipe inspect` end to end on generated numeric CSVs: 100k and 1M rows x 50 features, 10 classes.

    python scripts/bench_inspect.py [--rows 100000 1000000] [--keep DIR]

Prints the wall time of each (a fresh `recipe` process, CSV read with pyarrow, every data check, the
pictures) and the time ratio against the row ratio, to show near-linear growth. Goal: 1M x 50 <= 15 s
on 2 cores.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]


def make_csv(path: Path, rows: int, features: int = 50, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[np.arange(rows), y] += 3.0                           # class k shifts feature k: real, learnable signal
    cols = {f"f{j}": x[:, j] for j in range(features)}
    cols["label"] = y
    pacsv.write_csv(pa.table(cols), path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--keep", default=None, help="folder for the CSVs (default: a temp folder)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        times = {}
        for rows in a.rows:
            csv = folder / f"bench_{rows}.csv"
            if not csv.exists():
                make_csv(csv, rows)
            cfg = folder / f"bench_{rows}.yaml"
            cfg.write_text(f"name: bench-{rows}\ndata: {{source: {csv.name}}}\n")
            start = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "recipe", "inspect", str(cfg), "--runs", str(folder / "runs"),
                                "-q", "--json"], capture_output=True, text=True, cwd=ROOT)
            times[rows] = time.perf_counter() - start
            status = r.stdout.strip().splitlines()[-1][:80] if r.stdout.strip() else r.stderr[-300:]
            mb = csv.stat().st_size / 1e6
            print(f"{rows:>9,} rows x 50 ({mb:6.1f} MB CSV): {times[rows]:6.2f} s  exit {r.returncode}")
            if r.returncode not in (0, 1):
                print(status)
        if len(a.rows) >= 2:
            lo, hi = a.rows[0], a.rows[-1]
            print(f"time ratio {times[hi] / times[lo]:.2f}x for {hi / lo:.0f}x the rows")


if __name__ == "__main__":
    main()
