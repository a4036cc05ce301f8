"""recipe's stages on digits on a quiet machine and on a busy one, in one run: the ratios to quiet.

    python scripts/bench_load.py [--config configs/digits.yaml] [--stages baseline,overfit-batch,regularize,tune]

Scenarios, each on a copy of one inspected workspace, every stage as a user runs it (`recipe STAGE -q`):
  quiet           nothing else runs
  torch-defaults  quiet, with torch's own thread choice (one thread per core, spinning waits): the policy
                  before recipe/threads.py; shows that quiet times did not get worse
  beside-torch    another training process of the same priority runs beside recipe: a two-thread torch loop
                  with torch's defaults, started and stopped here
  nice-19         recipe at `nice -n 19` beside a single-threaded busy loop at normal priority
Goal: every stage's busy/quiet ratio <= 1.5.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = [sys.executable, "-m", "recipe"]

TORCH_LOOP = """
import torch
torch.set_num_threads(2)
x, y = torch.randn(4096, 64), torch.randint(0, 10, (4096,))
m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                        torch.nn.Linear(256, 10))
opt = torch.optim.Adam(m.parameters(), 1e-3)
while True:
    idx = torch.randint(0, 4096, (128,))
    loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
"""
BUSY_LOOP = "while True: pass"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RECIPE_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _background(code: str) -> subprocess.Popen:
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)             # torch imported, the loop running
    return proc


def _stage(stage: str, config: Path, runs: Path, env: dict, nice: bool, limit: float) -> tuple[float, int]:
    cmd = (["nice", "-n", "19"] if nice else []) + RECIPE + [stage, str(config), "--runs", str(runs), "-q"]
    start = time.perf_counter()
    try:
        code = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=limit).returncode
    except subprocess.TimeoutExpired:
        code = 124
    return time.perf_counter() - start, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "digits.yaml")
    ap.add_argument("--stages", default="baseline,overfit-batch,regularize,tune")
    ap.add_argument("--limit", type=float, default=600, help="seconds after which a stage is stopped")
    a = ap.parse_args()
    stages = a.stages.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    base = work / "inspected"
    print(f"load average at start: {open('/proc/loadavg').read().strip()}; usable cores: "
          f"{len(os.sched_getaffinity(0))}")
    subprocess.run(RECIPE + ["inspect", str(a.config), "--runs", str(base), "-q"], env=_env(), cwd=ROOT, check=True)
    scenarios = [("quiet", None, {}, False),
                 ("torch-defaults", None, {"RECIPE_THREADS": str(len(os.sched_getaffinity(0))),
                                           "OMP_WAIT_POLICY": "ACTIVE"}, False),
                 ("beside-torch", TORCH_LOOP, {}, False),
                 ("nice-19", BUSY_LOOP, {}, True)]
    times: dict[str, dict[str, float]] = {}
    for name, load, extra, nice in scenarios:
        runs = work / name
        shutil.copytree(base, runs)
        bg = _background(load) if load else None
        try:
            row = {}
            for stage in stages:
                seconds, code = _stage(stage, a.config, runs, _env(**extra), nice, a.limit)
                row[stage] = seconds
                if code not in (0, 1):
                    print(f"  {name}: recipe {stage} exited {code}")
            times[name] = row
        finally:
            if bg is not None:
                bg.kill()
                bg.wait()
        print(f"{name:>15}: " + "  ".join(f"{s} {t:6.1f} s" for s, t in row.items())
              + f"  (load average after: {open('/proc/loadavg').read().split()[0]})", flush=True)
    quiet = times["quiet"]
    print("\nratio to quiet (goal <= 1.5 under load; torch-defaults shows the quiet cost of the old policy)")
    print(f"{'scenario':>15}  " + "  ".join(f"{s:>13}" for s in stages) + f"  {'total':>8}")
    worst = 0.0
    for name, row in times.items():
        ratios = [row[s] / quiet[s] for s in stages]
        total = sum(row.values()) / sum(quiet.values())
        if name not in ("quiet", "torch-defaults"):
            worst = max(worst, *ratios)
        print(f"{name:>15}  " + "  ".join(f"{r:13.2f}" for r in ratios) + f"  {total:8.2f}")
    print(f"worst ratio under load: {worst:.2f} (goal <= 1.5): {'met' if worst <= 1.5 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
