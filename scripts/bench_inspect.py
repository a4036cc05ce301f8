"""Time `recipe inspect` against a bare `pyarrow.csv.read_csv` of the same generated CSV, in one run.

    python scripts/bench_inspect.py [--rows 1000000] [--features 50] [--repeat 2] [--keep DIR]

For each repeat: a bare read in this process (read_csv alone, no Python start-up: the strictest reference),
`recipe inspect` as a user runs it (a fresh `python -m recipe inspect` process: start-up, read, every data
check, the pictures, the record), then a second bare read. The ratio is recipe's wall time over the mean of
the two bare reads around it, so that a change in the machine's load during the run weighs on both sides.
Goal (issue 15): ratio <= 2.0 for 1M rows x 50 columns. Prints `/proc/loadavg` at the start and the end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.0


def make_csv(path: Path, rows: int, features: int = 50, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[np.arange(rows), y % features] += 3.0                 # class k shifts feature k: real, learnable signal
    cols = {f"f{j}": x[:, j] for j in range(features)}
    cols["label"] = y
    pacsv.write_csv(pa.table(cols), path)


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def bare_read(csv: Path) -> float:
    start = time.perf_counter()
    table = pacsv.read_csv(csv)
    seconds = time.perf_counter() - start
    del table
    return seconds


def recipe_inspect(cfg: Path, runs: Path) -> tuple[float, int, dict]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "recipe", "inspect", str(cfg), "--runs", str(runs), "-q", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    record = {}
    try:
        record = json.loads(r.stdout)
    except ValueError:
        print(r.stdout[-500:], r.stderr[-1500:], sep="\n")
    return seconds, r.returncode, record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", default=None, help="folder for the CSV (default: a temp folder)")
    a = ap.parse_args()
    print(f"loadavg at start: {loadavg()}  (cores this process may use: {len(os.sched_getaffinity(0))})")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"bench_{a.rows}x{a.features}.csv"
        if not csv.exists():
            make_csv(csv, a.rows, a.features)
        cfg = folder / f"bench_{a.rows}x{a.features}.yaml"
        cfg.write_text(f"name: bench-{a.rows}\ndata: {{source: {csv.name}}}\n")
        print(f"{a.rows:,} rows x {a.features} features + label, {csv.stat().st_size / 1e6:.1f} MB CSV")
        bare_read(csv)   # page cache warm for both sides
        ratios = []
        for i in range(a.repeat):
            before = bare_read(csv)
            seconds, code, record = recipe_inspect(cfg, folder / "runs")
            after = bare_read(csv)
            bare = (before + after) / 2
            ratios.append(seconds / bare)
            checks = record.get("checks", [])
            counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
            print(f"run {i + 1}: bare read_csv {before:.2f} s / {after:.2f} s (mean {bare:.2f} s); "
                  f"recipe inspect (CLI process) {seconds:.2f} s, exit {code}, stage {record.get('seconds', '?')} s, "
                  f"checks {counts}; ratio {seconds / bare:.2f} (goal <= {GOAL})")
    print(f"ratios: {', '.join(f'{r:.2f}' for r in ratios)}; best {min(ratios):.2f}, worst {max(ratios):.2f} "
          f"(goal <= {GOAL})")
    print(f"loadavg at end: {loadavg()}")


if __name__ == "__main__":
    main()
