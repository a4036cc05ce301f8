"""Run all six stages on a CUDA device and print each stage's status, then the engine-vs-plain-loop ratio.

    python scripts/gpu_check.py [--device cuda:0] [--keep DIR]

What it exercises that CPU tests cannot: bf16 autocast on a real GPU (or the fp16 fallback on one without
bf16), cuDNN with baseline.seed's deterministic mode (a ResNet through inspect, baseline and overfit-batch),
evaluation chunks sized from free GPU memory, and the engine's throughput against a hand-written loop with the
same autocast (scripts/bench_engine.py's loops, interleaved, median of 3). Exit 0 when every stage passed,
1 when one did not, 2 when there is no CUDA device.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

MLP = """\
name: gpu-mlp
seed: 0
data: {source: builtin:digits, shape: [1, 8, 8]}
model: {kind: mlp, hidden: [256, 256]}
train: {lr: 1.0e-3, batch_size: 64, epochs: 15}
overfit: {samples: 16, steps: 300}
regularize: {seeds: 2, ladder: [augment, dropout, weight_decay, early_stopping]}
tune: {trials: 6}
ensemble: {top_k: 3, seeds: 1, distill: true}
checks:
  ensemble.gain: {severity: warn, reason: "270 val rows at ~99% accuracy: no gain beyond noise"}
"""
RESNET = """\
name: gpu-resnet
seed: 0
data: {source: builtin:digits, shape: [1, 8, 8]}
model: {kind: resnet}
train: {lr: 3.0e-3, batch_size: 64, epochs: 8}
overfit: {samples: 16, steps: 200}
"""
STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")


def run_stages(text: str, stages, root: Path, device: str) -> bool:
    from typer.testing import CliRunner

    from recipe.cli import app

    cfg = root / (text.split("\n", 1)[0].split(": ")[1] + ".yaml")
    cfg.write_text(textwrap.dedent(text))
    ok = True
    for stage in stages:
        start = time.perf_counter()
        r = CliRunner().invoke(app, [stage, str(cfg), "--runs", str(root / "runs"), "--device", device, "--json", "-q"])
        seconds = time.perf_counter() - start
        try:
            summary = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            summary = {"status": f"exit {r.exit_code}", "checks": []}
        bad = [f"{c['id']}={c['status']}" for c in summary.get("checks", []) if c.get("status") in ("warn", "fail")]
        rec_path = root / "runs" / cfg.stem / stage / "record.json"
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        print(f"  {cfg.stem:10s} {stage:14s} {summary.get('status', '?'):8s} exit {r.exit_code}  {seconds:6.1f}s  "
              f"device {rec.get('device', '?')}" + (f"  warn/fail: {', '.join(bad)}" if bad else ""), flush=True)
        if r.exit_code != 0:
            ok = False
            if r.exit_code == 2 or r.exception and not isinstance(r.exception, SystemExit):
                print(textwrap.indent((r.stderr or str(r.exception))[-1500:], "      "))
                break
    return ok


def engine_ratio(device: torch.device) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_engine import engine_loop, hand_loop, make_model

    from recipe.engine.train import resolve_precision

    used, _ = resolve_precision(device, "auto")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(used)
    ctx = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype else __import__("contextlib").nullcontext
    torch.manual_seed(0)
    x = torch.randn(200_000, 64, device=device)
    y = x[:, :10].argmax(1)
    xv, yv = x[:40_000].clone(), y[:40_000].clone()
    speeds: dict[str, list[float]] = {"hand": [], "engine": []}
    for r in range(4):                     # round 0 warms up (cuDNN/cuBLAS handles, allocator)
        for name in (("hand", "engine") if r % 2 else ("engine", "hand")):
            torch.manual_seed(0)
            model = make_model(64, 10).to(device)
            s = hand_loop(model, x, y, xv, yv, 3, 512, 1e-3, ctx) if name == "hand" else \
                engine_loop(model, x, y, xv, yv, 3, 512, 1e-3)
            if r:
                speeds[name].append(s)
    h, e = statistics.median(speeds["hand"]), statistics.median(speeds["engine"])
    print(f"  hand-written loop {h:,.0f} samples/s, recipe engine {e:,.0f} samples/s ({used} autocast, "
          f"200k rows x 64, MLP 256-256, batch 512)")
    return e / h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--keep", type=Path, default=None, help="write runs/ here instead of a temporary folder")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
              "run it on a machine with a GPU", file=sys.stderr)
        return 2
    from recipe.engine.train import pick_device, resolve_precision

    dev = pick_device(a.device)
    used, note = resolve_precision(dev, "auto")
    print(f"{torch.cuda.get_device_name(dev)} ({a.device}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}; precision auto -> {used}"
          + (f" ({note})" if note else ""))
    root = a.keep or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    root.mkdir(parents=True, exist_ok=True)
    print("stages:")
    ok = run_stages(MLP, STAGES, root, a.device)
    ok = run_stages(RESNET, STAGES[:3], root, a.device) and ok
    print("engine vs plain loop:")
    ratio = engine_ratio(dev)
    print(f"  ratio engine/hand {ratio:.3f}")
    print(f"runs under {root}; {'every stage passed' if ok else 'a stage did not pass (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
