"""ASHA for tune: successive halving on rungs fitted to the epoch budget, ties broken by val loss, no blind climbs.

Why not Optuna's SuccessiveHalvingPruner as it comes: (1) its rungs go on as min_resource * reduction^k up to the
last epoch, so a rung at 27 of 30 epochs prunes on a ranking that saves 3 epochs; (2) a trial reaching a rung with
fewer than `reduction` competitors is promoted when it is the best so far, so the first trial always climbs every
rung; (3) its `bootstrap_count` cures that by pruning the first trials at *every* rung, and on a study of a few
dozen trials can leave no trial that completes; (4) it keeps the top 1/reduction at every rung, also at the last
one, where the step to the end may be only x2; (5) equal values all climb: val accuracy on a few hundred rows
takes few distinct values, and on breast_cancer/wine most of a rung's field ties with its cut.

Here: rungs at 1, 3, 9 ... epochs while each promotion at least doubles the epochs (18 -> [1, 3, 9]); a rung keeps
the fraction of its field that the epochs grow by to the next rung (successive halving's rule: every rung spends
the same epochs): 1/3 at 1 and 3, 9/18 = 1/2 at the last rung of 18 epochs; the first `references` trials stop at
rung 0 (2 x reduction of them on a study of 48 or more trials, `reduction` below 24: the first field that promotes
is then big enough to mean something, and the best trial is a reference with odds <= 1/8); values reported to the
pruner rank equal val scores by val loss (rung_value); a trial is never pruned when that would leave the study
without any trial that can complete.

Measured by replaying recorded curves (scripts/asha_replay.py: 48 trials x 18 epochs, MLP [64], bench_tune.py's
lr / dropout / batch-size space, seeds 0 1 2): fraction of the unpruned epochs and best-val gap per seed in val
samples, before (Optuna's halving with references 3) -> now: digits 0.212 [0, 1, 0] -> 0.192 [0, 1, 0]; digits
seeds 3 4 5 0.150 [4, 1, 2] -> 0.144 [2, 1, 2]; breast_cancer 0.262 [0, 0, 0] -> 0.186 [0, 0, 0]; wine 0.299
[0, 0, 0] -> 0.183 [0, 0, 0]. Of the parts, the loss tie-break saves most on breast_cancer and wine; alone it
costs digits seed 1 a val sample at the last rung (a trial tied there at epoch 9 ends 6 samples apart), which
the 1/2 kept at the last rung gives back.
"""
from __future__ import annotations

import math

from optuna.pruners import BasePruner
from optuna.trial import TrialState

from recipe.stages.tune.optuna_private import set_system_attr

REDUCTION = 3       # rungs grow x3 in epochs; each rung below the last keeps the top third
FIRST_RUNG = 1      # epochs: on digits, epoch-1 ranks keep the best trials as often as epoch-2 ranks
TIE_WEIGHT = 1e-9   # val loss's weight in rung_value: far below one val sample (1/n_val) for any n_val < 1e8


def rung_key(rung: int) -> str:
    """The system attribute holding a trial's value at `rung` (0 = the first): the name Optuna's halving pruner
    gives it, so studies recorded before ASHA had its own name keep their rung values when resumed."""
    return f"completed_rung_{rung}"


def rungs(epochs: int, reduction: int = REDUCTION) -> list[int]:
    """Epochs at which trials are compared: FIRST_RUNG * r^k while the promotion to the next step at least
    doubles the epochs (a rung at 27 of 30 epochs would prune on a ranking that saves 3 epochs).
    18 epochs -> [1, 3, 9] (then 18), 30 -> [1, 3, 9], 8 -> [1, 3], 3 -> [1], 1 -> [] (too short to prune)."""
    out, step = [], FIRST_RUNG
    while step * 2 <= epochs:
        out.append(step)
        step *= reduction
    return out


def references(budget: int, reduction: int = REDUCTION) -> int:
    """Trials that stop at rung 0 as its first field: 2 x reduction from 8 references' worth of budget up."""
    return max(reduction, min(2 * reduction, budget // 8))


def rung_value(score: float, loss: float, higher_is_better: bool = True) -> float:
    """What a trial reports to the pruner: its val score, equal scores ranked by val loss (lower is better). A
    lower-is-better score (a language model's val loss, in a "minimize" study) gets the tie-break added."""
    if not math.isfinite(loss):
        return score
    tie = TIE_WEIGHT * max(loss, 0.0) / (1.0 + max(loss, 0.0))
    return score - tie if higher_is_better else score + tie


class ASHAPruner(BasePruner):
    """Asynchronous successive halving for a study of `budget` trials of at most `epochs` epochs each."""

    def __init__(self, epochs: int, budget: int, reduction: int = REDUCTION, bootstrap: int | None = None):
        self.rungs = rungs(epochs, reduction)
        self.budget = budget
        self.bootstrap = references(budget, reduction) if bootstrap is None else bootstrap
        ends = self.rungs[1:] + [epochs]
        self.keep = [r / nxt for r, nxt in zip(self.rungs, ends)]     # the fraction of a rung's field promoted

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step not in self.rungs:
            return False    # between rungs, and past the last one (Optuna's rungs go on: 27 of 30 epochs)
        k = self.rungs.index(step)
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return not self._last_hope(study, trial)
        key = rung_key(k)
        trials = study.get_trials(deepcopy=False)
        field = [t.system_attrs[key] for t in trials if key in t.system_attrs and t.number != trial.number]
        set_system_attr(study, trial, key, value)
        if k == 0 and len(field) < self.bootstrap:   # a reference: its value is part of later trials' field
            return not self._last_hope(study, trial)
        # the top floor(n * keep) of the n values at this rung climb (at least the best): as Optuna's halving
        # with its reduction factor, but with the fraction of this rung and strict ranks (ties: rung_value)
        keep = max(1, math.floor((len(field) + 1) * self.keep[k] + 1e-9))
        sign = 1.0 if _maximizing(study) else -1.0     # a language model's study minimizes its val loss
        better = sum(1 for v in field if sign * v > sign * value)
        return better >= keep and not self._last_hope(study, trial)

    def _last_hope(self, study, trial) -> bool:
        """True when no trial completed, none other is running and the budget ends with this one."""
        from recipe.stages.tune.recovery import counted

        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number != trial.number)
               for t in trials):
            return False
        return sum(1 for t in trials if counted(t)) >= self.budget


def _maximizing(study) -> bool:
    from optuna.study import StudyDirection

    return study.direction == StudyDirection.MAXIMIZE
