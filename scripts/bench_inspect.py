"""Time `recipe inspect` against a bare `pyarrow.csv.read_csv` of the same generated CSV, in one run.

    python scripts/bench_inspect.py [--rows 1000000] [--features 50] [--repeat 2] [--keep DIR]

For each repeat: a bare read (read_csv alone, timed inside a fresh python process: the strict reference; that
process's wall time is printed too), `recipe inspect` as a user runs it (a fresh `python -m recipe inspect`
process: start-up, read, every data check, the pictures, the record), then a second bare read. The ratio is recipe's wall time over the mean of
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


BARE = "import sys, time, pyarrow.csv as c; t = time.perf_counter(); c.read_csv(sys.argv[1]); print(time.perf_counter() - t)"


def bare_read(csv: Path) -> tuple[float, float]:
    """read_csv alone, timed inside a fresh process (as a user's script would first read the file: a cold
    Arrow memory pool), and that process's whole wall time (start-up and the pyarrow import too)."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", BARE, str(csv)], capture_output=True, text=True, check=True)
    return float(r.stdout.strip()), time.perf_counter() - start


def recipe_inspect(cfg: Path, runs: Path, name: str) -> tuple[float, int, dict]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "recipe", "inspect", str(cfg), "--runs", str(runs), "-q", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    record = {}
    try:
        record = json.loads((runs / name / "inspect" / "record.json").read_text())
    except (OSError, ValueError):
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
        ratios, process_ratios = [], []
        for i in range(a.repeat):
            before, before_proc = bare_read(csv)
            seconds, code, record = recipe_inspect(cfg, folder / "runs", f"bench-{a.rows}")
            after, after_proc = bare_read(csv)
            bare, proc = (before + after) / 2, (before_proc + after_proc) / 2
            ratios.append(seconds / bare)
            process_ratios.append(seconds / proc)
            checks = record.get("checks", [])
            counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
            print(f"run {i + 1}: bare read_csv {before:.2f} s / {after:.2f} s (mean {bare:.2f} s; its python process "
                  f"{proc:.2f} s); recipe inspect (CLI process) {seconds:.2f} s, exit {code}, stage "
                  f"{record.get('seconds', '?')} s, checks {counts}; ratio {seconds / bare:.2f} to the read, "
                  f"{seconds / proc:.2f} to its process (goal <= {GOAL})")
    print(f"ratio to the bare read: {', '.join(f'{r:.2f}' for r in ratios)}; to the bare read's process: "
          f"{', '.join(f'{r:.2f}' for r in process_ratios)} (goal <= {GOAL})")
    print(f"loadavg at end: {loadavg()}")


if __name__ == "__main__":
    main()
