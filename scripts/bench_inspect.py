"""Time `recipe inspect` against a bare `pyarrow.csv.read_csv` of the same generated CSV, in one run.

    python scripts/bench_inspect.py [--rows 1000000] [--features 50] [--repeat 2] [--keep DIR]

For each repeat: a bare read (read_csv alone, timed inside a fresh python process: the strict reference; that
process's wall time is printed too), `recipe inspect` as a user runs it (a fresh `python -m recipe inspect`
process: start-up, read, every data check, the pictures, the record), then a second bare read. The ratio is recipe's wall time over the mean of
the two bare reads around it, so that a change in the machine's load during the run weighs on both sides.
Goal (issue 15): ratio <= 2.0 for 1M rows x 50 columns. Prints `/proc/loadavg` at the start and the end.

    python scripts/bench_inspect.py --stream [--rows 2000000] [--features 50] [--budget 64MB]

--stream (issue 20): a generated Parquet file (row groups of 100k rows) inspected over data.memory_budget, so
every check runs streamed, against a bare `pyarrow.dataset` scan of the same file (every record batch read,
none kept) in a fresh process; both sides' peak RSS (the largest process of each, from getrusage).
Goal: 20M x 50 under 2 GB peak and ratio <= 2.0.
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


SCAN = ("import resource, sys, time, pyarrow.dataset as ds; t = time.perf_counter(); "
        "n = sum(b.num_rows for b in ds.dataset(sys.argv[1], format='parquet').to_batches()); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, n)")
# runs one command and prints the largest peak RSS among it and its descendants (RUSAGE_CHILDREN is a maximum)
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "sys.stderr.write(r.stderr.decode()[-1500:] if r.returncode > 1 else ''); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def make_parquet(path: Path, rows: int, features: int = 50, classes: int = 10, seed: int = 0) -> None:
    """Written 100k rows at a time (row groups of that size), so that the generator never holds the table."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([(f"f{j}", pa.float32()) for j in range(features)] + [("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            y = rng.integers(0, classes, n)
            x = rng.normal(size=(n, features)).astype(np.float32)
            x[np.arange(n), y % features] += 3.0
            w.write_table(pa.table({**{f"f{j}": x[:, j] for j in range(features)}, "label": y}, schema=schema))


def stream_main(a) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"bench_{a.rows}x{a.features}.parquet"
        if not data.exists():
            make_parquet(data, a.rows, a.features)
        name = f"bench-stream-{a.rows}"
        cfg = folder / f"{name}.yaml"
        cfg.write_text(f"name: {name}\ndata: {{source: {data.name}, memory_budget: {a.budget}}}\n")
        print(f"{a.rows:,} rows x {a.features} float32 features + label, {data.stat().st_size / 1e6:.1f} MB Parquet "
              f"({a.rows * a.features * 4 / 1e6:.0f} MB of features), data.memory_budget {a.budget}")
        def bare_scan() -> tuple[float, int]:
            r = subprocess.run([sys.executable, "-c", SCAN, str(data)], capture_output=True, text=True, check=True)
            scan_seconds, rss, _ = r.stdout.split()
            return float(scan_seconds), int(rss)

        before = bare_scan()
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "recipe", "inspect", str(cfg), "--runs", str(folder / "runs"), "-q"]
        r = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - start
        code, peak = r.stdout.split()
        after = bare_scan()           # the mean of a scan before and after: load changes weigh on both sides
        scan_s, scan_rss = (before[0] + after[0]) / 2, max(before[1], after[1])
        rec = json.loads((folder / "runs" / name / "inspect" / "record.json").read_text())
        counts = {s: sum(c["status"] == s for c in rec.get("checks", [])) for s in ("pass", "warn", "fail", "skip")}
        print(f"bare pyarrow.dataset scan: {before[0]:.2f} s / {after[0]:.2f} s (in its process; mean {scan_s:.2f} s), "
              f"peak RSS "
              f"{int(scan_rss) / 2**20:.0f} MiB")
        print(f"recipe inspect, streamed ({rec.get('data_loading', {}).get('mode')}): {seconds:.2f} s (CLI process, "
              f"start-up included; stage {rec.get('seconds', '?')} s), exit {code}, checks {counts}, peak RSS "
              f"{int(peak) / 2**20:.0f} MiB")
        print(f"ratio {seconds / float(scan_s):.2f} to the bare scan (goal <= {GOAL}); peak RSS "
              f"{int(peak) / 2**30:.2f} GiB (goal < 2 GB at 20M x 50)")
    print(f"loadavg at end: {loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", default=None, help="folder for the CSV (default: a temp folder)")
    ap.add_argument("--stream", action="store_true", help="Parquet over data.memory_budget vs a pyarrow.dataset scan")
    ap.add_argument("--budget", default="64MB", help="data.memory_budget for --stream")
    a = ap.parse_args()
    print(f"loadavg at start: {loadavg()}  (cores this process may use: {len(os.sched_getaffinity(0))})")
    if a.stream:
        return stream_main(a)
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
