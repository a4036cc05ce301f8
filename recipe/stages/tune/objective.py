"""One tune trial: train its configuration through the one engine, report each epoch to the pruner, record it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from recipe.stages.tune.space import suggest

if TYPE_CHECKING:
    from recipe.stages.tune.worker import Plan


class Objective:
    """Train one trial's configuration through the one engine; per-epoch val reports feed the pruner."""

    def __init__(self, cfg, ds, device, plan: Plan):
        from recipe.engine import train as E

        from recipe.stages.tune.artifacts import folder_of, open_store

        self.cfg, self.ds, self.device, self.plan = cfg, ds, device, plan
        folder = folder_of(cfg)     # tune.artifacts: checkpoints also go where every machine of the study looks
        self.store = open_store(folder) if folder is not None else None
        self.tr = E.to_tensors(ds, ds.train, device)
        self.va = E.to_tensors(ds, ds.val, device)

    def __call__(self, trial) -> float:
        from recipe.engine import train as E

        overrides, vcfg, model = self.prepare(trial)
        r = E.fit_from_config(model, self.tr, self.va, vcfg, self.ds, on_epoch=self.reporter(trial, vcfg),
                              metrics_path=self.curve(trial))
        return self.finish(trial, r, model, overrides)

    def curve(self, trial) -> Path:
        """Where the trial's run writes its metrics.jsonl, stacked or not: study/runs/<study>-<trial>/."""
        return Path(self.plan.checkpoints).parent / "runs" / f"{trial.study.study_name}-{trial.number}" / \
            "metrics.jsonl"

    def prepare(self, trial):
        """The trial's point: (overrides, its config, its initialised model)."""
        from recipe.models import create

        params = suggest(trial, self.plan.space)
        overrides = {**self.plan.chosen, **params}
        vcfg = self.cfg.with_overrides(overrides)
        trial.set_user_attr("overrides", overrides)
        return overrides, vcfg, create(vcfg, self.ds, vcfg.seed).to(self.device)

    def reporter(self, trial, vcfg):
        """The engine's on_epoch: per-epoch val reports feed the pruner, which may stop the run."""
        from recipe.engine import train as E

        from recipe.stages.tune.asha import rung_value

        from recipe import tasks

        pruning = self.plan.pruner != "none"
        higher = tasks.get(self.ds.task).higher_is_better

        def report(epoch: int, row: dict) -> None:
            if pruning and math.isfinite(row.get("val_score", math.nan)):
                trial.report(rung_value(row["val_score"], row.get("val_loss", math.nan), higher), epoch)
                # pruning after the last epoch saves nothing and would hide a finished trial
                if epoch < vcfg.train.epochs and trial.should_prune():
                    raise E.Pruned()
        return report

    def finish(self, trial, r, model, overrides: dict) -> float:
        """The trial's record from its RunResult: user attrs, PRUNED (raised), its value and checkpoint."""
        import optuna

        from recipe.engine import train as E
        from recipe.engine.monitors import compact

        trial.set_user_attr("health", compact(r.health))       # the record keeps the worst per check
        trial.set_user_attr("train_score", r.final_train.get("score"))
        trial.set_user_attr("epochs", len(r.history))
        trial.set_user_attr("seconds", round(r.seconds, 3))
        if r.stopped == "pruned":
            raise optuna.TrialPruned()
        value = r.best.get("score", math.nan)
        if not math.isfinite(value):
            trial.set_user_attr("failure", r.stopped if r.stopped != "completed" else "non-finite val score")
            return math.nan
        if can_reach_top(trial.study, trial.number, value, self.cfg.ensemble.top_k):
            path = Path(self.plan.checkpoints) / f"{trial.study.study_name}-{trial.number}.pt"
            E.save_checkpoint(path, model, {"overrides": overrides, "val": value, "trial": trial.number})
            if self.store is not None:
                from recipe.stages.tune.artifacts import publish

                publish(trial, path, self.store)
        return value


def can_reach_top(study, number: int, value: float, k: int) -> bool:
    """Whether a trial finishing with `value` may be among the k best complete trials at the end (ranked as
    summarize ranks them: value, then trial number). When k trials that completed already rank above it, it never
    can: the top k only gets better. Its checkpoint is then not written (an atomic write with fsync, 14 ms a trial
    on digits under cProfile;
    a missing one is retrained by ensemble, as a trial from another machine is unless tune.artifacts shares it)."""
    from optuna.trial import TrialState
    from optuna.study import StudyDirection

    sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0    # "above": better in the study's direction
    above = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.value is not None and math.isfinite(t.value) and \
                (sign * t.value > sign * value or (t.value == value and t.number < number)):
            above += 1
            if above >= k:
                return False
    return True
