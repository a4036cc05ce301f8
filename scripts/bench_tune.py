"""Tuning budget on digits: ASHA vs no pruning on the same study, then trials/minute with 1 vs 2 workers.

    python scripts/bench_tune.py [--trials 48] [--epochs 18] [--parallel-trials 24] [--parallel-epochs 40]

Pruning. Random search draws trial n's point from (seed, n), so both runs see exactly the same configurations.
Each run's best configuration is rerun with 3 seeds (batched) to give its val with seed noise. Goal: ASHA
spends at most a third of the epochs for a best val within noise of the unpruned one. 48 trials, because ASHA
is a many-trials method: with reduction 3 and rungs at 2 and 6 of 18 epochs, about a ninth of the trials runs to
the end and each pays 2 epochs at least, so it spends ~0.26 of the unpruned epochs only once the study is large
against 3^2; on 16 trials the order of the first few trials decides (0.2-0.45 over different draws).

Parallel. --jobs 2 is the stage's own run_jobs: this process takes trials while one spawned worker imports torch
(seconds on 2 cores), then both take trials with one torch thread each. 24 trials of ~0.5 s (MLP [64], 40
epochs) is the size of a real digits study (configs/digits.yaml: trials of ~1 s); with trials of a few hundred
milliseconds the worker's start-up is most of the study and the ratio says little.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
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
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--parallel-trials", type=int, default=24)
    ap.add_argument("--parallel-epochs", type=int, default=40)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = {"name": "bench-tune", "seed": 0, "data": {"source": "builtin:digits"}, "model": {"kind": "mlp", "hidden": [64]},
           "train": {"lr": 1e-3, "epochs": a.epochs, "batch_size": 64}}
    cfg = validate(raw)
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = torch.device("cpu")
    torch.set_num_threads(1)      # the pruning runs count epochs; one thread keeps them quick on a shared machine
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
    cores = os.cpu_count() or 1
    rates = {}
    # --jobs 1 is timed with 1 torch thread and with one per core; the faster is the baseline (on a busy machine
    # more threads than free cores spin and slow down, which would flatter --jobs 2)
    for jobs, threads in [(1, n) for n in sorted({1, cores})] + [(2, None)]:
        if threads is not None:
            torch.set_num_threads(threads)
        plan = plan_for(folder, f"jobs-{jobs}-{threads}", a.parallel_trials, "none")
        load_before = os.getloadavg()[0]     # other work on the machine takes cores --jobs 2 would use
        start = time.time()
        T.run_jobs(pcfg, ds, device, plan, jobs, device_name="cpu")
        seconds = time.time() - start
        trials = [t for t in study_of(plan).get_trials(deepcopy=False) if T.counted(t)]
        rate = len(trials) / seconds * 60
        rates[jobs] = max(rates.get(jobs, 0.0), rate)
        line = (f"--jobs {jobs}: {len(trials)} trials in {seconds:.1f} s = {rate:.1f} trials/minute "
                f"({threads or max(1, cores // jobs)} torch thread(s) per process; load average {load_before:.1f})")
        spawned = [t for t in trials if t.system_attrs.get("recipe:worker") != 0]
        if spawned:
            joined = min(t.datetime_start.timestamp() for t in spawned) - start
            line += f"; the spawned worker took its first trial after {joined:.1f} s and ran {len(spawned)}"
        print(line)
    print(f"trials/minute ratio --jobs 2 / --jobs 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
