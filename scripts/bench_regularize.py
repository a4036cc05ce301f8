"""Wall time of `recipe regularize` on digits (configs/digits.yaml) with --jobs 1 and --jobs 2, one process.

    python scripts/bench_regularize.py [--config configs/digits.yaml]

Upstream stages run once; regularize then runs with each --jobs value on the same records (--force is
not needed: its own record is the only thing rewritten). Prints both wall times and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typer.testing import CliRunner  # noqa: E402

from recipe.cli import app  # noqa: E402


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
        for jobs in (1, 2):
            start = time.perf_counter()
            r = runner.invoke(app, ["regularize", a.config, "--runs", str(runs), "-q", "--json", "--jobs", str(jobs)])
            times[jobs] = time.perf_counter() - start
            outs[jobs] = json.loads(r.stdout)
    for jobs in (1, 2):
        m = outs[jobs]["metrics"]
        print(f"--jobs {jobs}: {times[jobs]:6.1f} s  ({m['runs']} runs, chosen val {m['chosen_val']:.4f}, "
              f"verdict {m['verdict']}, exit {outs[jobs]['exit_code']})")
    print(f"speed-up jobs 2 / jobs 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
