"""Tuning budget on digits: ASHA vs no pruning on the same study, then trials/minute with 1 vs 2 workers.

    python scripts/bench_tune.py [--trials 16] [--epochs 18] [--parallel-trials 8] [--parallel-epochs 20]

Random search draws trial n's point from (seed, n), so both pruning runs see exactly the same
configurations. Each run's best configuration is rerun with 3 seeds (batched) to give its val with seed
noise. Goal: ASHA spends at most a third of the epochs for a best val within noise of the unpruned one.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import optuna
import torch

from recipe.config import validate
from recipe.data import load
from recipe.engine.batched import fit_seeds
from recipe.engine import train as E
from recipe.stages import tune as T

SPACE = {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}, "model.dropout": {"low": 0.0, "high": 0.5},
         "train.batch_size": {"choices": [32, 64, 128]}}


def plan_for(folder: Path, name: str, trials: int, pruner: str) -> T.Plan:
    storage = str(folder / f"{name}.log")
    optuna.create_study(study_name=name, storage=T.open_storage(storage), direction="maximize")
    (folder / "ck").mkdir(exist_ok=True)
    return T.Plan(storage=storage, study_name=name, method="random", trials=trials, pruner=pruner, seed=0, chosen={},
                  space=SPACE, checkpoints=str(folder / "ck"), lock=str(folder / f"{name}.lock"))


def study_of(plan: T.Plan):
    return optuna.load_study(study_name=plan.study_name, storage=T.open_storage(plan.storage))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--parallel-trials", type=int, default=8)
    ap.add_argument("--parallel-epochs", type=int, default=20)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = {"name": "bench-tune", "seed": 0, "data": {"source": "builtin:digits"}, "model": {"kind": "mlp", "hidden": [64]},
           "train": {"lr": 1e-3, "epochs": a.epochs, "batch_size": 64}}
    cfg = validate(raw)
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = torch.device("cpu")
    tr, va = E.to_tensors(ds, ds.train, device), E.to_tensors(ds, ds.val, device)
    folder = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    print(f"digits MLP [64], random search, {a.trials} trials x up to {a.epochs} epochs, {os.cpu_count()} cores")
    out = {}
    for pruner in ("none", "asha"):
        plan = plan_for(folder, f"prune-{pruner}", a.trials, pruner)
        start = time.perf_counter()
        T.work(cfg, ds, device, plan)
        seconds = time.perf_counter() - start
        trials = study_of(plan).get_trials(deepcopy=False)
        epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
        best = max((t for t in trials if t.value is not None and t.state.name == "COMPLETE"), key=lambda t: t.value)
        bcfg = cfg.with_overrides(best.user_attrs["overrides"])
        results, _, _ = fit_seeds(bcfg, ds, tr, va, [1000, 2000, 3000], device)
        vals = [r.best["score"] for r in results]
        out[pruner] = (epochs, best.value, statistics.mean(vals), statistics.stdev(vals))
        pruned = sum(1 for t in trials if t.state.name == "PRUNED")
        print(f"pruner {pruner:>4}: {epochs:4d} epochs, {pruned:2d} pruned, {seconds:6.1f} s; best trial #{best.number} "
              f"val {best.value:.4f}; its config over 3 seeds {out[pruner][2]:.4f} ± {out[pruner][3]:.4f}")
    (e0, _, m0, s0), (e1, _, m1, s1) = out["none"], out["asha"]
    noise = math.sqrt(s0 ** 2 + s1 ** 2)
    print(f"ASHA epochs / unpruned epochs: {e1 / e0:.2f} (goal <= 0.33); best val difference {m1 - m0:+.4f} vs seed "
          f"noise {noise:.4f}: {'within' if abs(m1 - m0) <= max(noise, 1e-9) else 'OUTSIDE'} noise")

    pcfg = cfg.with_overrides({"train.epochs": a.parallel_epochs})
    rates = {}
    for jobs in (1, 2):
        plan = plan_for(folder, f"jobs-{jobs}", a.parallel_trials, "none")
        start = time.perf_counter()
        if jobs == 1:
            T.work(pcfg, ds, device, plan)
        else:
            ctx = mp.get_context("spawn")
            procs = [ctx.Process(target=T._worker_main, args=(pcfg.model_dump(mode="json"), ".", asdict(plan), w, jobs,
                                                               "cpu", os.getpid())) for w in range(jobs)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
        minutes = (time.perf_counter() - start) / 60
        n = sum(1 for t in study_of(plan).get_trials(deepcopy=False) if T.counted(t))
        rates[jobs] = n / minutes
        print(f"--jobs {jobs}: {n} trials in {minutes * 60:.1f} s = {rates[jobs]:.1f} trials/minute")
    print(f"trials/minute ratio --jobs 2 / --jobs 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
