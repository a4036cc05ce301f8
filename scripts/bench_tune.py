"""Tuning against a hand-written study, on digits in one run: ASHA's epochs, wall time per trial, --jobs 2 scaling.

    python scripts/bench_tune.py [--trials 48] [--epochs 18] [--seeds 0 1 2] [--parallel-trials 24]
                                 [--parallel-epochs 40]

The reference is `reference_study` below: what a careful user writes by hand with no recipe code (Optuna random
search, optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), data on the device, index
batching x[perm[i:i+bs]], Adam, val accuracy after each epoch). Importable: `from scripts.bench_tune import
reference_study`. Both studies draw their points from recipe's per-trial-seeded random sampler, so for a seed they
train exactly the same configurations and their epochs, best values and seconds compare one to one.

Pruning. Per seed: recipe's study without pruning and with ASHA, and the reference's. Goal: ASHA spends <= 0.20
of the unpruned epochs at a best val within one val sample (1/n_val) of the unpruned study's best. Training is
deterministic, so a trial ASHA lets complete has exactly its unpruned value: the gap says whether ASHA kept the
best trials. Several seeds, because one draw of 48 points decides 0.15-0.30 (good early trials climb every rung).

Wall time per trial. Recipe's unpruned study (tune's work(): journal storage, the one engine, checkpoints) against
the reference's on the same configurations. Goal <= 1.1x.

Parallel. --jobs 2 is the stage's own run_jobs (this process plus one spawned worker, one torch thread each) against
--jobs 1, threads as the stage picks them (recipe/threads.py: one for this small model). Goal >= 1.7x on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import optuna
import torch
import torch.nn.functional as F
from torch import nn

SPACE = {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}, "model.dropout": {"low": 0.0, "high": 0.5},
         "train.batch_size": {"choices": [32, 64, 128]}}


# ----------------------------------------------------------------------------- the hand-written reference


def _mlp(d_in: int, hidden: list[int], d_out: int, dropout: float) -> nn.Sequential:
    """The network recipe builds for model: {kind: mlp, hidden: [...]} (Linear-ReLU-Dropout ..., Linear)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


def reference_study(x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor, y_va: torch.Tensor, *,
                    trials: int, epochs: int, pruner: str = "asha", hidden: Optional[list[int]] = None,
                    seed: int = 0, sampler=None, min_resource: int = 1, reduction: int = 3) -> dict:
    """A hand-written Optuna study over SPACE (lr, dropout, batch size) with a minimal torch loop. `pruner`: "asha"
    (SuccessiveHalvingPruner(min_resource, reduction)) or "none"; `sampler`: RandomSampler(seed) unless given.
    Returns {"epochs": trained in all, "best": best complete trial's last-epoch val accuracy, "seconds": wall time
    of the study, "trials", "pruned", "values": {trial number: value} of complete trials}."""
    hidden = [64] if hidden is None else hidden
    x_tr, x_va = x_tr.flatten(1), x_va.flatten(1)
    n, d_in, d_out = len(x_tr), x_tr.shape[1], int(max(y_tr.max(), y_va.max())) + 1
    used = [0]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", SPACE["train.lr"]["low"], SPACE["train.lr"]["high"], log=True)
        dropout = trial.suggest_float("model.dropout", SPACE["model.dropout"]["low"], SPACE["model.dropout"]["high"])
        bs = trial.suggest_categorical("train.batch_size", SPACE["train.batch_size"]["choices"])
        torch.manual_seed(seed)
        model = _mlp(d_in, hidden, d_out, dropout).to(x_tr.device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        acc = 0.0
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(n, device=x_tr.device)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(x_va).argmax(1) == y_va).float().mean().item()
            used[0] += 1
            trial.report(acc, epoch)
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = (optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction)
              if pruner == "asha" else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", pruner=chosen,
                                sampler=sampler or optuna.samplers.RandomSampler(seed=seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - start
    done = study.get_trials(deepcopy=False)
    values = {t.number: t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE}
    return {"epochs": used[0], "best": max(values.values()), "seconds": seconds, "trials": len(done),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done), "values": values}


# ----------------------------------------------------------------------------- recipe's study


def plan_for(folder: Path, name: str, trials: int, pruner: str, seed: int = 0):
    from recipe.stages import tune as T

    storage = str(folder / f"{name}.log")
    optuna.create_study(study_name=name, storage=T.open_storage(storage), direction="maximize")
    (folder / "ck").mkdir(exist_ok=True)
    return T.Plan(storage=storage, study_name=name, method="random", trials=trials, pruner=pruner, seed=seed,
                  chosen={}, space=SPACE, checkpoints=str(folder / "ck"), lock=str(folder / f"{name}.lock"))


def recipe_study(cfg, ds, device, folder: Path, name: str, trials: int, pruner: str, seed: int) -> dict:
    from recipe.stages import tune as T

    plan = plan_for(folder, name, trials, pruner, seed)
    start = time.perf_counter()
    T.work(cfg, ds, device, plan)
    seconds = time.perf_counter() - start
    done = optuna.load_study(study_name=name, storage=T.open_storage(plan.storage)).get_trials(deepcopy=False)
    values = {t.number: t.value for t in done if t.state.name == "COMPLETE"}
    return {"epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in done), "best": max(values.values()),
            "seconds": seconds, "trials": len(done), "pruned": sum(t.state.name == "PRUNED" for t in done),
            "values": values}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel-trials", type=int, default=24)
    ap.add_argument("--parallel-epochs", type=int, default=40)
    a = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load at start (/proc/loadavg): {f.read().strip()}")
    from recipe.config import validate
    from recipe.data import load
    from recipe.engine import train as E
    from recipe.stages import tune as T

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = {"name": "bench-tune", "seed": 0, "data": {"source": "builtin:digits"},
           "model": {"kind": "mlp", "hidden": [64]}, "train": {"lr": 1e-3, "epochs": a.epochs, "batch_size": 64}}
    cfg = validate(raw)
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = torch.device("cpu")
    torch.set_num_threads(1)      # the reference on one thread, as recipe's fit picks for this small model
    tr, va = E.to_tensors(ds, ds.train, device), E.to_tensors(ds, ds.val, device)
    n_val = len(va)
    folder = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    print(f"digits MLP [64], random search, {a.trials} trials x up to {a.epochs} epochs, seeds {a.seeds}, "
          f"{os.cpu_count()} cores, {n_val} val rows (one val sample = {1 / n_val:.4f})")
    rows = []
    for seed in a.seeds:
        r_none = recipe_study(cfg, ds, device, folder, f"none-{seed}", a.trials, "none", seed)
        h_none = reference_study(tr.x, tr.y, va.x, va.y, trials=a.trials, epochs=a.epochs, pruner="none",
                                 sampler=T.make_sampler("random", seed))
        r_asha = recipe_study(cfg, ds, device, folder, f"asha-{seed}", a.trials, "asha", seed)
        h_asha = reference_study(tr.x, tr.y, va.x, va.y, trials=a.trials, epochs=a.epochs, pruner="asha",
                                 sampler=T.make_sampler("random", seed))
        rows.append((seed, r_none, h_none, r_asha, h_asha))
        same = max(abs(r_none["values"][k] - h_none["values"][k]) for k in r_none["values"])
        print(f"seed {seed}: unpruned best val recipe {r_none['best']:.4f}, reference {h_none['best']:.4f} (largest "
              f"per-trial difference {same * n_val:.1f} val samples); wall time recipe {r_none['seconds']:.1f} s, "
              f"reference {h_none['seconds']:.1f} s")
        for who, pruned, full in (("recipe   ", r_asha, r_none), ("reference", h_asha, h_none)):
            gap = (full["best"] - pruned["best"]) * n_val
            print(f"  ASHA {who}: {pruned['epochs']:4d} of {full['epochs']} epochs = "
                  f"{pruned['epochs'] / full['epochs']:.3f}, {pruned['pruned']} pruned; best val {pruned['best']:.4f}, "
                  f"{gap:.1f} val samples below the unpruned best")
    for who, i, j in (("recipe", 3, 1), ("reference", 4, 2)):
        frac = sum(r[i]["epochs"] for r in rows) / sum(r[j]["epochs"] for r in rows)
        gaps = [round((r[j]["best"] - r[i]["best"]) * n_val, 1) for r in rows]
        print(f"ASHA epochs / unpruned epochs, {who}: {frac:.3f} over {len(rows)} seeds (goal <= 0.20); best val "
              f"gap in val samples per seed {gaps} (goal <= 1)")
    per_trial = sum(r[1]["seconds"] for r in rows) / sum(r[1]["trials"] for r in rows)
    per_ref = sum(r[2]["seconds"] for r in rows) / sum(r[2]["trials"] for r in rows)
    print(f"tune wall time per trial (unpruned, {a.epochs} epochs): recipe {per_trial:.3f} s, reference "
          f"{per_ref:.3f} s: {per_trial / per_ref:.2f}x (goal <= 1.1)")

    pcfg = cfg.with_overrides({"train.epochs": a.parallel_epochs})
    rates = {}
    # threads as the stage chooses them (recipe/threads.py): this model's steps are small work, one thread each
    for jobs in (1, 2):
        plan = plan_for(folder, f"jobs-{jobs}", a.parallel_trials, "none")
        load_before = os.getloadavg()[0]     # other work on the machine takes cores --jobs 2 would use
        start = time.time()
        T.run_jobs(pcfg, ds, device, plan, jobs, device_name="cpu")
        seconds = time.time() - start
        study = optuna.load_study(study_name=plan.study_name, storage=T.open_storage(plan.storage))
        trials = [t for t in study.get_trials(deepcopy=False) if T.counted(t)]
        rate = len(trials) / seconds * 60
        rates[jobs] = rate
        line = (f"--jobs {jobs}: {len(trials)} trials in {seconds:.1f} s = {rate:.1f} trials/minute "
                f"(load average {load_before:.1f})")
        spawned = [t for t in trials if t.system_attrs.get("recipe:worker") != 0]
        if spawned:
            joined = min(t.datetime_start.timestamp() for t in spawned) - start
            line += f"; the spawned worker took its first trial after {joined:.1f} s and ran {len(spawned)}"
        print(line)
    print(f"trials/minute ratio --jobs 2 / --jobs 1: {rates[2] / rates[1]:.2f}x (goal >= 1.7)")
    with open("/proc/loadavg") as f:
        print(f"load at end (/proc/loadavg): {f.read().strip()}")


if __name__ == "__main__":
    main()
