"""Replay recipe's ASHA (and variants) on recorded learning curves: epochs spent and best val, without training.

    python scripts/asha_replay.py [--data digits] [--trials 48] [--epochs 18] [--seeds 0 1 2] [--curves FILE]

Training is deterministic and a trial's point depends only on (seed, trial number) (tune.make_sampler), so a
pruned study trains exactly a prefix of each trial's unpruned curve: replaying a pruner on the unpruned curves
gives the epochs and the best val that study would have had. The curves come from recipe's own unpruned study
(tune.work, pruner none, MLP [64], bench_tune.py's space) and are cached in --curves (JSON). Prints, per pruner
variant, the fraction of the unpruned epochs spent over all seeds and the best-val gap per seed in val samples
(the goals of scripts/bench_tune.py: <= 0.20 and <= 1). A variant is "default" or "reduction/references".
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def record(data: str, trials: int, epochs: int, seed: int) -> tuple[dict[int, list[list[float]]], int]:
    """Every trial's val curve ([score, loss] per epoch) from recipe's unpruned study, and the number of val rows."""
    import torch

    from recipe.config import validate
    from recipe.data import load
    from recipe.engine.runlog import read_metrics
    from recipe.stages import tune as T
    from scripts.bench_tune import plan_for

    raw = {"name": f"replay-{data}", "seed": 0, "data": {"source": f"builtin:{data}"},
           "model": {"kind": "mlp", "hidden": [64]}, "train": {"lr": 1e-3, "epochs": epochs, "batch_size": 64}}
    cfg = validate(raw)
    cfg._base_dir = Path(".")
    ds = load(cfg)
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="asha-replay-"))
    name = f"none-{seed}"
    T.work(cfg, ds, torch.device("cpu"), plan_for(folder, name, trials, "none", seed))
    curves = {}
    for n in range(trials):
        rows, _ = read_metrics(folder / "runs" / f"{name}-{n}" / "metrics.jsonl")
        curves[n] = [[float(r["val_score"]), float(r["val_loss"])] for r in rows]
    return curves, len(ds.val.y)


def replay(curves: dict[int, list[list[float]]], epochs: int, pruner) -> tuple[int, float]:
    """(epochs trained, best complete value) of a sequential study that prunes with `pruner`; each epoch reports
    what tune's Objective reports (tune.asha.rung_value of the val score and loss)."""
    from recipe.stages.tune.asha import rung_value

    used = [0]

    def objective(trial):
        curve = curves[trial.number]
        for epoch in range(1, epochs + 1):
            used[0] += 1
            score, loss = curve[epoch - 1]
            trial.report(rung_value(score, loss), epoch)
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return curve[-1][0]

    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(objective, n_trials=len(curves))
    return used[0], study.best_value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--trials", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--curves", default=None, help="JSON cache of the recorded curves")
    ap.add_argument("--variants", nargs="+", default=["default", "3/3", "3/4", "4/4"],
                    help="'default' (tune's ASHAPruner) or reduction/references")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from recipe.stages.tune.asha import ASHAPruner

    cache = Path(a.curves or f"/tmp/asha-curves2-{a.data}-{a.trials}x{a.epochs}.json")
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    for seed in a.seeds:
        if str(seed) not in stored:
            curves, n_val = record(a.data, a.trials, a.epochs, seed)
            stored[str(seed)] = {"n_val": n_val, "curves": curves}
            cache.write_text(json.dumps(stored))
    print(f"{a.data}: {a.trials} trials x {a.epochs} epochs, seeds {a.seeds} (curves: {cache})")
    for variant in a.variants:
        reduction, bootstrap = (3, None) if variant == "default" else (int(v) for v in variant.split("/"))
        spent = full = 0
        gaps = []
        for seed in a.seeds:
            entry = stored[str(seed)]
            curves = {int(k): v for k, v in entry["curves"].items()}
            pruner = ASHAPruner(a.epochs, a.trials, reduction=reduction, bootstrap=bootstrap)
            used, best = replay(curves, a.epochs, pruner)
            spent, full = spent + used, full + a.trials * a.epochs
            gaps.append(round((max(c[-1][0] for c in curves.values()) - best) * entry["n_val"], 1))
        shown = ASHAPruner(a.epochs, a.trials, reduction, bootstrap)
        print(f"  {variant}: reduction {reduction}, references {shown.bootstrap}, rungs {shown.rungs}: "
              f"{spent / full:.3f} of the unpruned epochs; best val gap per seed {gaps} val samples")


if __name__ == "__main__":
    main()
