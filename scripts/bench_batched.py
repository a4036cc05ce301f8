"""Stacked training on CPU: K seeds of one configuration (fit_seeds), then `recipe tune` with batched trials.

    python scripts/bench_batched.py [--seeds 8] [--epochs 5] [--hidden 128 128] [--repeats 2]
                                    [--trials 32] [--tune-epochs 10] [--tune-hidden 64] [--batch 32] [--tune-repeats 2]

Seeds: same data (digits), same model, same seeds; samples/s counts every seed's training samples. The first
batched call pays for torch.func's set-up once, so both paths are warmed up before timing. The parity
line shows the val scores agree (no dropout: batched reproduces sequential up to float rounding).

Tune (tune_section): the stage's own worker loop (tune.work) on one study per run, random search over learning
rate, weight decay and dropout (one architecture, so batched trials share stacks), no pruner, same seed and
budget: tune.batch 1 vs tune.batch K, and a minimal hand-written reference (Optuna random search over a plain
PyTorch loop: data on the device, index batching, Adam, val each epoch). Trials per minute of each, their
ratios, and the best val of each (same points drawn: they should agree within dropout noise).
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
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--tune-epochs", type=int, default=10)
    ap.add_argument("--tune-hidden", type=int, nargs="+", default=[64])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tune-repeats", type=int, default=2)
    ap.add_argument("--only-tune", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)    # one thread: stacking's gain is in launch overhead, not in more cores
    if not a.only_tune:
        seeds_section(a)
    tune_section(a)


def seeds_section(a) -> None:
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


SPACE = {"train.lr": {"low": 1e-4, "high": 3e-2, "log": True},
         "train.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True}, "model.dropout": {"low": 0.0, "high": 0.5}}


def reference_study(cfg, ds, trials: int, seed: int = 0) -> tuple[float, float]:
    """Hand-written Optuna random search over a plain loop. Returns (seconds, best val accuracy)."""
    import optuna
    import torch.nn.functional as F
    from torch import nn

    device = torch.device("cpu")
    tr, va = E.to_tensors(ds, ds.train, device), E.to_tensors(ds, ds.val, device)
    epochs, bs, hidden = cfg.train.epochs, cfg.train.batch_size, cfg.model.hidden

    def objective(trial) -> float:
        lr = trial.suggest_float("train.lr", 1e-4, 3e-2, log=True)
        wd = trial.suggest_float("train.weight_decay", 1e-6, 1e-2, log=True)
        p = trial.suggest_float("model.dropout", 0.0, 0.5)
        torch.manual_seed(seed)
        layers, width = [], tr.x.shape[1]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(p)]
            width = h
        model = nn.Sequential(*layers, nn.Linear(width, ds.num_classes))
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        gen = torch.Generator().manual_seed(seed)
        best = 0.0
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(tr), generator=gen)
            for i in range(0, len(tr), bs):
                idx = perm[i:i + bs]
                loss = F.cross_entropy(model(tr.x[idx]), tr.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                best = max(best, (model(va.x).argmax(1) == va.y).float().mean().item())
        return best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start, study.best_value


def tune_section(a) -> None:
    import os
    import tempfile

    import optuna

    from recipe.stages import tune as T

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = validate({"name": "bench-batched-tune", "seed": 0, "data": {"source": "builtin:digits"},
                    "model": {"kind": "mlp", "hidden": a.tune_hidden},
                    "train": {"optimizer": "adam", "lr": 1e-3, "epochs": a.tune_epochs, "batch_size": 64}})
    cfg._base_dir = Path(".")
    ds = load(cfg)
    device = torch.device("cpu")
    folder = Path(tempfile.mkdtemp(prefix="bench-batched-tune-"))
    (folder / "ck").mkdir()
    print(f"\nrecipe tune on digits: MLP {a.tune_hidden}, random search over lr, weight decay, dropout, "
          f"{a.trials} trials x {a.tune_epochs} epochs, no pruner, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    reference_study(cfg, ds, 2)     # warm-up: torch and Optuna's first-call costs out of the timings
    rates, best = {"unbatched": [], "batched": [], "reference": []}, {}
    for repeat in range(a.tune_repeats):     # interleaved, so load from other processes hits all three alike
        for name, batch in (("unbatched", 1), ("batched", a.batch)):
            study_name = f"{name}-{repeat}"
            storage = str(folder / f"{study_name}.log")
            optuna.create_study(study_name=study_name, storage=T.open_storage(storage), direction="maximize")
            plan = T.Plan(storage=storage, study_name=study_name, method="random", trials=a.trials, pruner="none",
                          seed=0, chosen={}, space=SPACE, checkpoints=str(folder / "ck"),
                          lock=str(folder / f"{study_name}.lock"), batch=batch)
            start = time.perf_counter()
            T.work(cfg, ds, device, plan)
            seconds = time.perf_counter() - start
            trials = optuna.load_study(study_name=study_name, storage=T.open_storage(storage)).get_trials(deepcopy=False)
            stacked = sum(1 for t in trials if t.system_attrs.get("recipe:stacked"))
            rates[name].append(len(trials) / seconds * 60)
            best[name] = max(t.value for t in trials if t.value is not None)
            print(f"recipe tune, tune.batch {batch:2d}: {len(trials)} trials in {seconds:6.1f} s = "
                  f"{rates[name][-1]:6.1f} trials/minute ({stacked} trained stacked); best val {best[name]:.4f}")
        seconds, best["reference"] = reference_study(cfg, ds, a.trials)
        rates["reference"].append(a.trials / seconds * 60)
        print(f"hand-written Optuna + plain loop: {a.trials} trials in {seconds:6.1f} s = "
              f"{rates['reference'][-1]:6.1f} trials/minute; best val {best['reference']:.4f}")
    rate = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median trials/minute over {a.tune_repeats} repeats: " + ", ".join(f"{k} {v:.1f}" for k, v in rate.items()))
    print(f"trials/minute ratios: batched / unbatched {rate['batched'] / rate['unbatched']:.2f}x, "
          f"batched / reference {rate['batched'] / rate['reference']:.2f}x (goal >= 3x on CPU), "
          f"unbatched / reference {rate['unbatched'] / rate['reference']:.2f}x; "
          f"best val batched - unbatched {best['batched'] - best['unbatched']:+.4f} (one val sample "
          f"{1 / len(ds.val.y):.4f})")


if __name__ == "__main__":
    main()
