"""ASHA for tune: Optuna's successive halving on rungs fitted to the epoch budget, never promoting blindly from rung 0.

Why not SuccessiveHalvingPruner as it comes: (1) its rungs go on as min_resource * reduction^k up to the last
epoch, so a rung at 27 of 30 epochs prunes on a ranking that saves 3 epochs; (2) a trial reaching a rung with
fewer than `reduction` competitors is promoted when it is the best so far, so the first trial always climbs every
rung and the next few climb with odds 1/2, 1/3...; (3) its `bootstrap_count` cures that by pruning the first
trials at *every* rung, and on a study of a few dozen trials can leave no trial that completes. Here: rungs at
1, 3, 9 ... epochs while each promotion at least doubles the epochs (18 -> [1, 3, 9]), the first `reduction`
trials stop at rung 0 as references, later rungs promote as Optuna does (their first arrival already beat a real
rung-0 field), and a trial is never pruned when that would leave the study without any trial that can complete.

Measured by replaying 144 digits curves (MLP [64], 18 epochs, lr/dropout/batch size at random) in 150 orders:
rungs [1, 3, 9] with 3 references spend 0.165 of the unpruned epochs on 48 trials (0.18 on 24, 0.20 on 12; 2
references: 0.169); the former rungs [2, 6] spent 0.27. Either way ASHA keeps a trial within one val sample of
the unpruned best in about half of the draws (mean gap 1.6 of 269 samples): on digits the epoch-1 rank predicts
the epoch-18 rank about as well as the epoch-2 rank, so the earlier rung buys its epochs nearly for free. A draw
whose first trials are good costs more (they climb before the field exists): scripts/bench_tune.py's three seeds
are such draws (0.20-0.22).
"""
from __future__ import annotations

import math

from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.trial import TrialState

from recipe.stages.optuna_private import rung_key, set_system_attr

REDUCTION = 3       # each rung keeps the top third
FIRST_RUNG = 1      # epochs: on digits, epoch-1 ranks keep the best trials as often as epoch-2 ranks (see below)


def rungs(epochs: int, reduction: int = REDUCTION) -> list[int]:
    """Epochs at which trials are compared: FIRST_RUNG * r^k while the promotion to the next step at least
    doubles the epochs (a rung at 27 of 30 epochs would prune on a ranking that saves 3 epochs).
    18 epochs -> [1, 3, 9] (then 18), 30 -> [1, 3, 9], 8 -> [1, 3], 3 -> [1], 1 -> [] (too short to prune)."""
    out, step = [], FIRST_RUNG
    while step * 2 <= epochs:
        out.append(step)
        step *= reduction
    return out


class ASHAPruner(BasePruner):
    """Asynchronous successive halving for a study of `budget` trials of at most `epochs` epochs each."""

    def __init__(self, epochs: int, budget: int, reduction: int = REDUCTION, bootstrap: int | None = None):
        self.rungs = rungs(epochs, reduction)
        self.budget = budget
        self.bootstrap = reduction if bootstrap is None else bootstrap
        self._sha = SuccessiveHalvingPruner(min_resource=self.rungs[0], reduction_factor=reduction) \
            if self.rungs else None

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if self._sha is None or step is None or step < self.rungs[0] or step > self.rungs[-1]:
            return False    # past the last rung: Optuna's rungs go on (27 of 30 epochs), ours stop
        key = rung_key(0)
        if key not in trial.system_attrs:
            references = sum(1 for t in study.get_trials(deepcopy=False) if key in t.system_attrs)
            if references < self.bootstrap:   # stop at rung 0: its value is a reference for later trials
                value = trial.intermediate_values[step]
                if not math.isnan(value):
                    set_system_attr(study, trial, key, value)
                return not self._last_hope(study, trial)
        return self._sha.prune(study, trial) and not self._last_hope(study, trial)

    def _last_hope(self, study, trial) -> bool:
        """True when no trial completed, none other is running and the budget ends with this one."""
        from recipe.stages.tune import counted

        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number != trial.number)
               for t in trials):
            return False
        return sum(1 for t in trials if counted(t)) >= self.budget
