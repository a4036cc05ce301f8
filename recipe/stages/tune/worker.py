"""One tune worker: join the shared study, take trials under the study lock within the budget, run and tell them."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from recipe.stages.tune import optuna_private as P
from recipe.stages.tune.objective import Objective
from recipe.stages.tune.recovery import RETRY, counted, fail_stale
from recipe.stages.tune.samplers import make_pruner, make_sampler
from recipe.stages.tune.space import max_epochs, suggest
from recipe.stages.tune.storage import StudyLock, open_storage


@dataclass
class Plan:
    """Everything a worker needs to join the study (picklable: spawned processes get a copy)."""

    storage: str
    study_name: str
    method: str
    trials: int
    pruner: str
    seed: int
    chosen: dict
    space: dict
    checkpoints: str
    lock: str
    grid: Optional[list] = None
    batch: int = 1                  # trials asked at once; those sharing an architecture train stacked
    batch_why: str = ""             # why that many (tune.json): the config, the model size, or why it cannot stack


def _next_grid_point(points: list[dict], trials) -> Optional[dict]:
    taken = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True) for t in trials if counted(t)}
    for p in points:
        if json.dumps(p, sort_keys=True) not in taken:
            return p
    return None


def join_study(cfg, plan: Plan):
    """This process's handle on the shared study, with its own sampler and pruner."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # recipe keeps each asked trial's heartbeat itself (P.heartbeat), which Optuna warns about on every ask
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna.load_study(study_name=plan.study_name, storage=open_storage(plan.storage),
                             sampler=make_sampler(plan.method, plan.seed),
                             pruner=make_pruner(plan.pruner, max_epochs(cfg, plan.space), plan.trials))


def work(cfg, ds, device, plan: Plan, worker: int = 0, tick=None, parent: Optional[int] = None,
         gpu: Optional[str] = None) -> int:
    """Take trials until the study holds plan.trials counted trials (or the grid is exhausted). Returns trials run.
    `gpu`: the GPU this worker is pinned to (recipe/devices.py), recorded on each trial it takes."""
    from recipe.stages.tune.batch import run_batch

    study = join_study(cfg, plan)
    if gpu is not None:     # where this worker runs, as it saw it: said even if it ends up taking no trial
        study.set_user_attr(f"recipe:pinned:{os.uname().nodename}:{os.getpid()}",
                            {"worker": worker, "gpu": gpu, "device": str(device),
                             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
    objective = Objective(cfg, ds, device, plan)
    lock = StudyLock(plan.storage, plan.study_name, Path(plan.lock))
    ran = 0
    try:
        while parent is None or os.getppid() == parent:     # an orphaned worker stops taking trials
            with lock:
                taken = _take(study, plan, worker, max(1, plan.batch), gpu)
            if not taken:
                break
            if len(taken) == 1:
                with P.heartbeat(study, taken[0]):
                    _run_trial(study, taken[0], objective)
            else:   # tune.batch: trials that share an architecture train as one stacked model
                run_batch(study, taken, objective, tick)
            ran += len(taken)
            if tick is not None:
                tick(study)
    finally:
        lock.close()
    return ran


def _take(study, plan: Plan, worker: int, n: int, gpu: Optional[str] = None) -> list:
    """Ask up to n trials, within the budget (and the grid). Call under the study lock."""
    pinned = {} if gpu is None else {"recipe:gpu": gpu,    # what the worker saw, not what it was told
                                     "recipe:cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    fail_stale(study)
    taken = []
    for _ in range(n):
        trials = study.get_trials(deepcopy=False)
        if sum(counted(t) for t in trials) >= plan.trials:
            break
        if plan.grid is not None:
            point = _next_grid_point(plan.grid, trials)
            if point is None:
                break
            study.enqueue_trial(point)
        trial = study.ask()
        for key, value in (("recipe:pid", os.getpid()), ("recipe:host", os.uname().nodename),
                           ("recipe:worker", worker), *pinned.items()):
            P.set_system_attr(study, trial, key, value)
        suggest(trial, plan.space)   # now: the sampler's RNG is seeded per trial at ask, the next ask reseeds it
        taken.append(trial)
    return taken


def _run_trial(study, trial, objective) -> None:
    import optuna
    from optuna.trial import TrialState

    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt:
        P.set_system_attr(study, trial, RETRY, "interrupted (Ctrl-C / SIGTERM)")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except BaseException as e:
        trial.set_user_attr("failure", f"{type(e).__name__}: {e}"[:300])
        P.set_system_attr(study, trial, RETRY, "the trial raised an error")
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        if math.isfinite(value):
            study.tell(trial, value)
        else:   # diverged: an infeasible point of the space; it counts toward the budget
            study.tell(trial, state=TrialState.FAIL)
