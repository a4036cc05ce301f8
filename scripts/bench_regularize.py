"""Wall time of `recipe regularize` on digits (configs/digits.yaml) with --jobs 1 and --jobs 2, one process, and of
a rerun that finds every run in regularize's run cache (what a resume after Ctrl-C costs at most).

    python scripts/bench_regularize.py [--config configs/digits.yaml]

Upstream stages run once; regularize then runs with each --jobs value on the same records (--force is
not needed: its own record is the only thing rewritten), with its run cache emptied before each, then once more
with the cache kept. Prints the wall times and the ratios.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typer.testing import CliRunner  # noqa: E402

from recipe.cli import app  # noqa: E402
from recipe.config import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs" / "digits.yaml"))
    a = ap.parse_args()
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for stage in ("inspect", "baseline", "overfit-batch"):
            r = runner.invoke(app, [stage, a.config, "--runs", str(runs), "-q"])
            if r.exit_code:
                sys.exit(f"{stage} exited {r.exit_code}: {r.stderr[-500:]}")
        times, outs = {}, {}
        for jobs in (1, 2, "reuse"):
            if jobs != "reuse":
                shutil.rmtree(runs / load(a.config).name / "regularize" / "cache", ignore_errors=True)
            start = time.perf_counter()
            r = runner.invoke(app, ["regularize", a.config, "--runs", str(runs), "-q", "--json", "--jobs",
                                       "1" if jobs == "reuse" else str(jobs)])
            times[jobs] = time.perf_counter() - start
            outs[jobs] = json.loads(r.stdout)
    for jobs in (1, 2, "reuse"):
        m = outs[jobs]["metrics"]
        label = "rerun, cache kept" if jobs == "reuse" else f"--jobs {jobs}"
        print(f"{label}: {times[jobs]:6.1f} s  ({m['runs']} runs, {m.get('reused_runs', 0)} reused, chosen val "
              f"{m['chosen_val']:.4f}, verdict {m['verdict']}, exit {outs[jobs]['exit_code']})")
    print(f"speed-up jobs 2 / jobs 1: {times[1] / times[2]:.2f}x")
    print(f"speed-up rerun with every run reused / fresh --jobs 1: {times[1] / times['reuse']:.1f}x")


if __name__ == "__main__":
    main()
