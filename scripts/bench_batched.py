"""K seeds of one configuration: one after another through the engine vs one stacked model (vmap), on CPU.

    python scripts/bench_batched.py [--seeds 8] [--epochs 5] [--hidden 128 128] [--repeats 2]

Same data (digits), same model, same seeds; samples/s counts every seed's training samples. The first
batched call pays for torch.func's set-up once, so both paths are warmed up before timing. The parity
line shows the val scores agree (no dropout: batched reproduces sequential up to float rounding).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from recipe.config import validate
from recipe.data import load
from recipe.engine import train as E
from recipe.engine.batched import fit_seeds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    cfg = validate({"name": "bench-batched", "seed": 0, "data": {"source": "builtin:digits"},
                    "model": {"kind": "mlp", "hidden": a.hidden},
                    "train": {"lr": 1e-3, "epochs": a.epochs, "batch_size": 64}})
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = torch.device("cpu")
    tr, va = E.to_tensors(ds, ds.train, device), E.to_tensors(ds, ds.val, device)
    seeds = list(range(a.seeds))
    samples = len(tr) * a.epochs * a.seeds
    fit_seeds(cfg.with_overrides({"train.epochs": 1}), ds, tr, va, seeds[:2], device)      # warm-up
    times = {"sequential": [], "batched": []}
    scores = {}
    for _ in range(a.repeats):      # interleaved, so load from other processes hits both alike
        for name, batched in (("sequential", False), ("batched", True)):
            start = time.perf_counter()
            results, _, how = fit_seeds(cfg, ds, tr, va, seeds, device, batched=batched)
            times[name].append(time.perf_counter() - start)
            scores[name] = [r.best["score"] for r in results]
            assert name == "sequential" or how == "batched", how
    rate = {k: samples / statistics.median(v) for k, v in times.items()}
    print(f"digits MLP {a.hidden}, K={a.seeds} seeds x {a.epochs} epochs, torch threads {torch.get_num_threads()}")
    for k in ("sequential", "batched"):
        print(f"{k:>10}: {rate[k]:9.0f} samples/s  ({statistics.median(times[k]):.2f} s)")
    print(f"     ratio: {rate['batched'] / rate['sequential']:.2f}x (batched / sequential)")
    diff = max(abs(x - y) for x, y in zip(scores["sequential"], scores["batched"]))
    print(f"    parity: max |val difference| over {a.seeds} seeds = {diff:.2e}")


if __name__ == "__main__":
    main()
