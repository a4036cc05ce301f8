"""Start-up of commands that train nothing, against a bare `python -c "import torch"`, in one run.

    python scripts/bench_startup.py [--repeats 5]

Makefiles call `recipe status` and `recipe --help` often; DESIGN §1 says they import neither torch nor
scikit-learn. Goal: each <= 0.5x the bare torch import (median of interleaved repeats, wall time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    recipe = [sys.executable, "-m", "recipe"]
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "recipe --help": recipe + ["--help"],
        "recipe status": recipe + ["status", str(ROOT / "configs" / "digits.yaml"), "--runs", str(runs)],
        "recipe checks": recipe + ["checks"],
    }
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(a.repeats):          # interleaved, so a busy moment hits every command alike
        for name, cmd in commands.items():
            samples[name].append(_time(cmd, env))
    torch_s = statistics.median(samples["import torch"])
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = "" if name == "import torch" else f"  ratio {median / torch_s:.2f} (goal <= 0.5)"
        print(f"{name:>14}: median {median:.3f} s over {len(values)}{ratio}")


if __name__ == "__main__":
    main()
