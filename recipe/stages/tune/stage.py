"""Stage 5: search hyperparameters around regularize's choice; worker processes and machines share one study.

One study lives in a storage every worker can reach: by default Optuna's journal file under
runs/<name>/tune/study/ (safe for several processes), or PostgreSQL for several machines. Workers take
trials under a study lock (flock on one machine, pg_advisory_lock on PostgreSQL), so the study ends with
exactly --trials counted trials and a grid point is never handed out twice. A trial whose process died
(kill -9: its pid is gone, or its PostgreSQL heartbeat stopped) or was interrupted is marked FAIL with
`recipe:retry` and does not count: the next worker retries its slot.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from recipe import checks as C
from recipe.config import digest_json
from recipe.errors import RecipeError
from recipe.stage import StageResult
from recipe.stages.tune.batch import batch_size
from recipe.stages.tune.bounds import widen
from recipe.stages.tune.storage import StudyLock, _public, open_storage   # noqa: F401  (tune.open_storage for callers)
from recipe.stages.tune.workers import run_jobs   # noqa: F401  (worker processes; tune.run_jobs for callers)

SHARED_LOCK = True          # several `recipe tune` processes (and machines) may add trials to one study
PRESERVE = ("study",)       # the journal and trial checkpoints survive reruns: a killed study resumes
METHODS = ("random", "grid", "quasi-random", "tpe")
GRID_POINTS = 3             # points per continuous range in a grid search
RETRY = "recipe:retry"      # on a FAIL trial: why it does not count toward --trials (killed, interrupted)
WAIT_FOR_OTHERS_S = 600     # longest wait for trials other processes still run before summarizing


# ----------------------------------------------------------------------------- the search space


def default_space(chosen: dict[str, Any], cfg) -> dict[str, dict[str, Any]]:
    """Wide ranges centred on regularize's choice (lr ±10x, weight decay ±100x, batch x/2..x2, width x/2..x2)."""
    lr = chosen.get("train.lr", cfg.train.lr)
    wd = chosen.get("train.weight_decay", cfg.train.weight_decay) or 1e-5
    bs = chosen.get("train.batch_size", cfg.train.batch_size)
    hidden = chosen.get("model.hidden", cfg.model.hidden)
    space = {
        "train.lr": {"low": lr / 10, "high": min(lr * 10, 1.0), "log": True},
        "train.weight_decay": {"low": wd / 100, "high": wd * 100, "log": True},
        "model.dropout": {"low": 0.0, "high": 0.5},
        "train.batch_size": {"choices": sorted({max(8, bs // 2), bs, bs * 2})},
    }
    if cfg.model.kind in ("mlp", "cnn", "resnet") and hidden:
        space["model.hidden"] = {"choices": [[max(4, h // 2) for h in hidden], list(hidden), [h * 2 for h in hidden],
                                             list(hidden) + [hidden[-1]]]}      # narrower, same, wider, deeper
    return space


def space_of(cfg, chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if cfg.tune.space:
        return {k: v.model_dump(exclude_defaults=True) for k, v in cfg.tune.space.items()}
    return default_space(chosen, cfg)


def _encode(v: Any) -> Any:
    """Optuna choices must be scalars: lists/dicts travel as JSON strings."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _decode(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v


def _is_int(p: dict) -> bool:
    return bool(p.get("integer")) or (isinstance(p.get("low"), int) and isinstance(p.get("high"), int)
                                      and not p.get("log"))


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, p in space.items():
        if "choices" in p:
            out[key] = _decode(trial.suggest_categorical(key, [_encode(c) for c in p["choices"]]))
        elif _is_int(p):
            out[key] = trial.suggest_int(key, int(p["low"]), int(p["high"]), log=bool(p.get("log")))
        else:
            out[key] = trial.suggest_float(key, float(p["low"]), float(p["high"]), log=bool(p.get("log")))
    return out


def grid_of(space: dict[str, dict[str, Any]]) -> dict[str, list]:
    import numpy as np

    grid = {}
    for key, p in space.items():
        if "choices" in p:
            grid[key] = [_encode(c) for c in p["choices"]]
        elif _is_int(p):
            grid[key] = sorted({int(round(v)) for v in np.linspace(p["low"], p["high"], GRID_POINTS)})
        elif p.get("log"):
            grid[key] = [float(v) for v in np.geomspace(p["low"], p["high"], GRID_POINTS)]
        else:
            grid[key] = [float(v) for v in np.linspace(p["low"], p["high"], GRID_POINTS)]
    return grid


def grid_points(space: dict[str, dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Every grid point once, in a seeded order (so a short budget still spreads over the grid)."""
    import itertools

    grid = grid_of(space)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    random.Random(seed).shuffle(points)
    return points


# ----------------------------------------------------------------------------- samplers, pruners, storage


def _trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number * 7919 + 17) % (2 ** 32)


def make_sampler(method: str, seed: int):
    """Random and TPE draw from an RNG seeded by (seed, trial number): reruns, resumes and workers never replay
    the sequence of an earlier trial, and trial n of a study always gets the same random point."""
    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    class PerTrialSeed:
        def before_trial(self, study, trial):
            self._rng = LazyRandomState(_trial_seed(seed, trial.number))
            if hasattr(self, "_random_sampler"):
                self._random_sampler._rng = LazyRandomState(_trial_seed(seed, trial.number))
            super().before_trial(study, trial)

    if method == "random":
        return type("RandomSampler", (PerTrialSeed, optuna.samplers.RandomSampler), {})(seed=seed)
    if method == "tpe":
        return type("TPESampler", (PerTrialSeed, optuna.samplers.TPESampler), {})(seed=seed, n_startup_trials=5)
    if method == "quasi-random":   # the Sobol index is a study attribute: shared by workers and resumes
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)
    # grid: the points are enqueued under the study lock; any parameter not fixed would be random
    return type("RandomSampler", (PerTrialSeed, optuna.samplers.RandomSampler), {})(seed=seed)


def make_pruner(name: str, epochs: int = 0, budget: int = 0):
    """`epochs`: the longest a trial trains; `budget`: the study's trial count (ASHA fits its rungs to both)."""
    import optuna

    if name == "asha":   # rungs at 1, 3, 9 of 18 epochs (recipe/stages/tune/asha.py)
        from recipe.stages.tune.asha import ASHAPruner

        return ASHAPruner(epochs, budget)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    return optuna.pruners.NopPruner()


def storage_url(cfg, ctx) -> str:
    url = ctx.options.tune.get("storage") or cfg.tune.storage
    if url:
        return url
    return str(ctx.dir / "study" / "journal.log")


# ----------------------------------------------------------------------------- trial accounting


def counted(t) -> bool:
    """Trials that use the budget: all but those failed by a killed or interrupted process."""
    from optuna.trial import TrialState

    return not (t.state == TrialState.FAIL and t.system_attrs.get(RETRY))


def fail_stale(study) -> list[int]:
    """Mark RUNNING trials whose process is gone FAIL (+ recipe:retry): this host's dead pids, and trials whose
    RDB heartbeat stopped. Returns their numbers. Call under the study lock."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
    from optuna.trial import TrialState

    storage = study._storage
    host = os.uname().nodename
    stale = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, where = t.system_attrs.get("recipe:pid"), t.system_attrs.get("recipe:host")
        if pid is not None and where == host and not _alive(int(pid)):
            stale[t._trial_id] = (t.number, f"process {pid} on {host} died mid-trial")
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        numbers = {t._trial_id: t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for tid in storage._get_stale_trial_ids(study._study_id):
            stale.setdefault(tid, (numbers.get(tid, -1), "no heartbeat: its process or machine died"))
    out = []
    for tid, (number, why) in stale.items():
        try:
            storage.set_trial_system_attr(tid, RETRY, why)
            if storage.set_trial_state_values(tid, state=TrialState.FAIL):
                out.append(number)
        except UpdateFinishedTrialError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (killed child not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ----------------------------------------------------------------------------- one worker


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


class Objective:
    """Train one trial's configuration through the one engine; per-epoch val reports feed the pruner."""

    def __init__(self, cfg, ds, device, plan: Plan):
        from recipe.engine import train as E

        self.cfg, self.ds, self.device, self.plan = cfg, ds, device, plan
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

        pruning = self.plan.pruner != "none"

        def report(epoch: int, row: dict) -> None:
            if pruning and math.isfinite(row.get("val_score", math.nan)):
                trial.report(rung_value(row["val_score"], row.get("val_loss", math.nan)), epoch)
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
            E.save_checkpoint(Path(self.plan.checkpoints) / f"{trial.study.study_name}-{trial.number}.pt", model,
                              {"overrides": overrides, "val": value, "trial": trial.number})
        return value


def can_reach_top(study, number: int, value: float, k: int) -> bool:
    """Whether a trial finishing with `value` may be among the k best complete trials at the end (ranked as
    summarize ranks them: value, then trial number). When k trials that completed already rank above it, it never
    can: the top k only gets better. Its checkpoint is then not written (an atomic write with fsync, 14 ms a trial
    on digits under cProfile;
    a missing one is retrained by ensemble, as a trial from another machine is)."""
    from optuna.trial import TrialState

    above = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.value is not None and math.isfinite(t.value) and \
                (t.value > value or (t.value == value and t.number < number)):
            above += 1
            if above >= k:
                return False
    return True


def _next_grid_point(points: list[dict], trials) -> Optional[dict]:
    taken = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True) for t in trials if counted(t)}
    for p in points:
        if json.dumps(p, sort_keys=True) not in taken:
            return p
    return None


def max_epochs(cfg, space: dict) -> int:
    """The longest a trial trains: train.epochs, or the top of its range when tune.space searches it."""
    p = space.get("train.epochs")
    if not p:
        return int(cfg.train.epochs)
    return int(max(p["choices"]) if "choices" in p else p["high"])


def join_study(cfg, plan: Plan):
    """This process's handle on the shared study, with its own sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=plan.study_name, storage=open_storage(plan.storage),
                             sampler=make_sampler(plan.method, plan.seed),
                             pruner=make_pruner(plan.pruner, max_epochs(cfg, plan.space), plan.trials))


def work(cfg, ds, device, plan: Plan, worker: int = 0, tick=None, parent: Optional[int] = None) -> int:
    """Take trials until the study holds plan.trials counted trials (or the grid is exhausted). Returns trials run."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    from recipe.stages.tune.batch import run_batch

    study = join_study(cfg, plan)
    objective = Objective(cfg, ds, device, plan)
    lock = StudyLock(plan.storage, plan.study_name, Path(plan.lock))
    ran = 0
    try:
        while parent is None or os.getppid() == parent:     # an orphaned worker stops taking trials
            with lock:
                taken = _take(study, plan, worker, max(1, plan.batch))
            if not taken:
                break
            if len(taken) == 1:
                with get_heartbeat_thread(taken[0]._trial_id, study._storage):
                    _run_trial(study, taken[0], objective)
            else:   # tune.batch: trials that share an architecture train as one stacked model
                run_batch(study, taken, objective, tick)
            ran += len(taken)
            if tick is not None:
                tick(study)
    finally:
        lock.close()
    return ran


def _take(study, plan: Plan, worker: int, n: int) -> list:
    """Ask up to n trials, within the budget (and the grid). Call under the study lock."""
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
                           ("recipe:worker", worker)):
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
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
        study._storage.set_trial_system_attr(trial._trial_id, RETRY, "interrupted (Ctrl-C / SIGTERM)")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except BaseException as e:
        study._storage.set_trial_user_attr(trial._trial_id, "failure", f"{type(e).__name__}: {e}"[:300])
        study._storage.set_trial_system_attr(trial._trial_id, RETRY, "the trial raised an error")
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        if math.isfinite(value):
            study.tell(trial, value)
        else:   # diverged: an infeasible point of the space; it counts toward the budget
            study.tell(trial, state=TrialState.FAIL)


# ----------------------------------------------------------------------------- the stage


def run(cfg, ctx) -> StageResult:
    import optuna
    from optuna.trial import TrialState

    ds = ctx.data()
    chosen_art = ctx.upstream_json("regularize", "chosen.json")
    chosen = chosen_art["overrides"]
    opts = ctx.options.tune
    method = opts.get("method") or cfg.tune.method
    trials = opts.get("trials") or cfg.tune.trials
    jobs = opts.get("jobs") or cfg.tune.jobs
    pruner = opts.get("pruner") or cfg.tune.pruner
    space = space_of(cfg, chosen)
    storage = storage_url(cfg, ctx)
    # the study's identity: what a trial's value depends on (not --trials/--jobs, so a rerun continues it)
    ident = digest_json({"space": space, "method": method, "chosen": chosen, "seed": cfg.seed,
                         "model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"),
                         "data": ds.fingerprint, "pruner": pruner})
    study_name = f"{cfg.name}-{ident[:10]}"
    checkpoints = ctx.dir / "study" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    grid = grid_points(space, cfg.seed) if method == "grid" else None
    if grid is not None:
        trials = min(trials, len(grid))
    plan = Plan(storage=storage, study_name=study_name, method=method, trials=trials, pruner=pruner, seed=cfg.seed,
                chosen=chosen, space=space, checkpoints=str(checkpoints), lock=str(ctx.dir / "study" / "study.lock"),
                grid=grid, batch=batch_size(cfg, ds, chosen, ctx.device, jobs, trials))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="maximize",
                                load_if_exists=True)
    with StudyLock(storage, study_name, Path(plan.lock)) as lock:
        stale = fail_stale(study)
    lock.close()
    if stale:
        ctx.log(f"tune: trials {stale} were left running by a dead process: marked failed, their slots retried")
    done_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

    def finished(study_) -> int:
        return sum(1 for t in study_.get_trials(deepcopy=False, states=done_states) if counted(t))

    crashed: list[int] = []
    with ctx.progress(f"tune ({method}, {jobs} job{'s' if jobs > 1 else ''})", trials) as bar:
        def tick(study_):
            best = [t.value for t in study_.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            bar.update(finished(study_), {"val_score": float(max(best))} if best else None)

        crashed = run_jobs(cfg, ds, ctx.device, plan, jobs, tick, ctx.options.device)
        _wait_for_others(study, plan, tick)
    if finished(study) < trials:
        raise RecipeError(f"tune: the study holds {finished(study)} of {trials} trials: worker processes exited "
                          f"early (exit codes {crashed}); rerun 'recipe tune' to resume")
    return summarize(cfg, ctx, study, plan, chosen_art, crashed)


def _wait_for_others(study, plan: Plan, tick) -> None:
    """Trials other processes (or machines) still run are part of this study: wait, so every process that
    joined it reports the same best. Dead holders are failed as they are found."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + WAIT_FOR_OTHERS_S
    lock = StudyLock(plan.storage, plan.study_name, Path(plan.lock))
    try:
        while time.monotonic() < deadline:
            with lock:
                fail_stale(study)
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
                return
            tick(study)
            time.sleep(0.5)
    finally:
        lock.close()


# ----------------------------------------------------------------------------- summary and checks


def _param_count(cfg, ds, overrides: dict) -> int:
    from recipe.models import count_parameters, create

    return count_parameters(create(cfg.with_overrides(overrides), ds, 0))


def summarize(cfg, ctx, study, plan: Plan, chosen_art: dict, crashed: list[int]) -> StageResult:
    from optuna.trial import TrialState

    space = plan.space
    ds = ctx.data()
    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    counts = {s.name.lower(): sum(1 for t in all_trials if t.state == s and counted(t)) for s in TrialState}
    counts["retried"] = sum(1 for t in all_trials if not counted(t))
    infeasible = sum(1 for t in all_trials if t.state == TrialState.FAIL and counted(t))
    n_counted = sum(1 for t in all_trials if counted(t))
    infeasible_fraction = infeasible / max(n_counted, 1)
    _write_trials_csv(ctx, all_trials, space)
    if not complete:
        check = C.make("tune.improves", "fail", f"no trial completed: {infeasible} of {n_counted} trials diverged "
                       f"(infeasible fraction {infeasible_fraction:.2f})",
                       {"states": counts, "infeasible_fraction": round(infeasible_fraction, 3)},
                       "Look at the failed trials in trials.csv (NaN loss?): narrow the learning-rate range.")
        return StageResult([check], metrics={"states": counts}, summary="no trial completed")
    complete.sort(key=lambda t: (-t.value, t.number))
    top = _top(cfg, ctx, study, complete, Path(plan.checkpoints))

    checks = [check_boundary(complete, space, ctx.thresholds("tune.boundary"))]
    noise_check, chosen_entry, noise_std = check_noise(cfg, ctx, ds, complete, ctx.thresholds("tune.noise"))
    checks.append(noise_check)
    reference = chosen_art["val_mean"]
    reg_std = max(chosen_art.get("val_std", 0.0), chosen_art.get("reference_val_std", 0.0))
    noise = max(reg_std, noise_std)
    best_val = chosen_entry["mean"]
    ev = {"best_trial": chosen_entry["trial"], "best_val_seed_mean": round(best_val, 4),
          "best_single_val": round(complete[0].value, 4), "regularized_val": round(reference, 4),
          "noise": round(noise, 4), "trials": counts, "infeasible_fraction": round(infeasible_fraction, 3)}
    if best_val - reference > noise:
        checks.append(C.make("tune.improves", "pass", f"tuned val {best_val:.4f} (mean over seeds) beats the "
                             f"regularized model ({reference:.4f}) by more than noise {noise:.4f}", ev))
    elif reference - best_val > noise:
        # a warning, not a failure: regularize's model stays available and the ensemble stage includes it
        checks.append(C.make("tune.improves", "warn", f"tuned val {best_val:.4f} is worse than the regularized "
                             f"model ({reference:.4f}) beyond noise {noise:.4f}", ev,
                             "Keep regularize's configuration (the ensemble includes it); to search again, add "
                             "trials or centre tune.space on chosen.yaml (or drop tune.space for the default)."))
    else:
        checks.append(C.make("tune.improves", "warn", f"tuned val {best_val:.4f} is within noise {noise:.4f} of "
                             f"the regularized model ({reference:.4f})", ev,
                             "Tuning found nothing beyond seed noise: widen the space or add trials, or keep "
                             "regularize's configuration."))
    best_overrides = chosen_entry["overrides"]
    ctx.artifacts.text("best.yaml", f"# tune's choice: trial #{chosen_entry['trial']}, val {best_val:.4f} (mean of "
                       f"{len(chosen_entry['seeds'])} seeds)\n" + yaml.safe_dump(best_overrides, sort_keys=True))
    ctx.artifacts.json("tune.json", {"study": study.study_name, "storage": _public(plan.storage),
                                     "method": plan.method, "pruner": plan.pruner, "space": space, "states": counts,
                                     "infeasible_fraction": infeasible_fraction, "top": top,
                                     "best_trial": chosen_entry["trial"], "best_overrides": best_overrides,
                                     "noise": noise_check.evidence})
    _pictures(ctx, study, complete, space)
    epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in all_trials)
    summary = (f"{counts['complete']} trials complete, {counts['pruned']} pruned, {infeasible} infeasible, "
               f"{counts['retried']} retried; {epochs} epochs; best #{chosen_entry['trial']} val {best_val:.4f} "
               f"over seeds (regularized {reference:.4f})")
    if crashed:
        summary += f"; {len(crashed)} worker(s) crashed (exit {crashed}), their trials were retried"
    from recipe.engine.monitors import worst_per_check

    health = worst_per_check((f"trial {t.number}", t.user_attrs["health"]) for t in all_trials
                             if counted(t) and t.user_attrs.get("health"))
    return StageResult(checks, metrics={"best_val": best_val, "best_single_val": complete[0].value, "states": counts,
                                        "epochs": epochs, "study": study.study_name,
                                        "infeasible_fraction": infeasible_fraction},
                       summary=summary, extra={"health": health})


def _top(cfg, ctx, study, complete, checkpoints: Path) -> list[dict]:
    top = []
    for rank, t in enumerate(complete[:cfg.ensemble.top_k]):
        src = checkpoints / f"{study.study_name}-{t.number}.pt"
        rel = f"top/{rank}.pt"
        entry = {"rank": rank, "trial": t.number, "val": t.value, "overrides": t.user_attrs.get("overrides"),
                 "params": {key: _decode(v) for key, v in t.params.items()}, "checkpoint": None}
        if src.exists():     # trained on this machine; trials from other machines are retrained by ensemble
            shutil.copyfile(src, ctx.artifacts.path(rel))
            ctx.artifacts.add(rel)
            entry["checkpoint"] = rel
        top.append(entry)
    return top


def _write_trials_csv(ctx, trials, space) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number"] + list(space) + ["state", "val", "epochs", "seconds", "worker", "train_score", "note"])
    for t in trials:
        p = {key: _decode(v) for key, v in t.params.items()}
        note = t.system_attrs.get(RETRY) or t.user_attrs.get("failure") or ""
        w.writerow([t.number] + [json.dumps(p[key]) if key in p else "" for key in space]
                   + [t.state.name, "" if t.value is None else f"{t.value:.6g}", t.user_attrs.get("epochs", ""),
                      t.user_attrs.get("seconds", ""), t.system_attrs.get("recipe:worker", ""),
                      t.user_attrs.get("train_score", ""), note])
    ctx.artifacts.text("trials.csv", buf.getvalue())


# ----------------------------------------------------------------------------- tune.boundary


def _position(value: Any, p: dict) -> Optional[float]:
    """Where a value sits in its range, 0 (low end) .. 1 (high end); choices by their index in the list."""
    if "choices" in p:
        enc = [_encode(c) for c in p["choices"]]
        if len(enc) < 2 or value not in enc:
            return None
        return enc.index(value) / (len(enc) - 1)
    lo, hi, v = float(p["low"]), float(p["high"]), float(value)
    if p.get("log"):
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _spearman(xs: list[float], ys: list[float]) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return 0.0
    rho = spearmanr(np.asarray(xs), np.asarray(ys)).statistic
    return float(rho) if math.isfinite(rho) else 0.0


def check_boundary(complete, space, th) -> C.Check:
    """Rule: the best trial within the outer `edge_fraction` of a range (or at the end of a choice list) warns;
    it FAILS when, over at least `min_trials` trials, val also rises toward that edge (Spearman rho of position
    vs val >= `trend`): then the optimum most likely lies outside the range and tuning inside it is wasted."""
    edge, trend, min_trials = th["edge_fraction"], th["trend"], th["min_trials"]
    best = complete[0]
    rows, failing, warning, edges = {}, [], [], []
    for key, p in space.items():
        if key not in best.params:
            continue
        pos = _position(best.params[key], p)
        if pos is None:
            continue
        pairs = [(_position(t.params[key], p), t.value) for t in complete if key in t.params]
        pairs = [(x, y) for x, y in pairs if x is not None]
        rho = _spearman([x for x, _ in pairs], [y for _, y in pairs])
        side = "low" if pos <= edge else "high" if pos >= 1 - edge else None
        rows[key] = {"position": round(pos, 3), "rho": round(rho, 3), "value": _decode(best.params[key])}
        if side is None:
            continue
        toward = rho if side == "high" else -rho
        rows[key]["side"] = side
        advice, rows[key]["valid_edge"] = widen(key, p, side)
        text = f"{key}={_fmt(_decode(best.params[key]))} at the {side} end ({advice})"
        if rows[key]["valid_edge"]:     # the range already reaches what is valid: nothing to widen
            edges.append(text)
        elif len(pairs) >= min_trials and toward >= trend:
            failing.append(text + f"; val rises toward it (rho {toward:.2f} over {len(pairs)} trials)")
        else:
            warning.append(text)
    ev = {"params": rows, "edge_fraction": edge, "trend": trend, "best_trial": best.number}
    advice = ("Widen the range past that edge in tune.space and tune again. The rule: best value in the outer "
              f"{edge:.0%} (or the last choice) warns; it fails when val also rises toward that edge across "
              f"trials (Spearman rho >= {trend}, at least {min_trials} trials): the optimum is then outside.")
    if not rows:     # nothing was judged (one-choice lists, keys the trials did not sample): say so
        return C.make("tune.boundary", "skip", "no tuned parameter has a range the best trial can sit in", ev)
    note = "; at the edge of what is valid: " + "; ".join(edges) if edges else ""
    if failing:
        return C.make("tune.boundary", "fail", "the optimum lies beyond the range: " + "; ".join(failing + warning)
                      + note, ev, advice)
    if warning:
        return C.make("tune.boundary", "warn", "best value at the edge of its range: " + "; ".join(warning) + note,
                      ev, advice)
    return C.make("tune.boundary", "pass", "the best trial sits inside every range" + (" it could widen" + note
                                                                                       if edges else ""), ev)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


# ----------------------------------------------------------------------------- tune.noise


def check_noise(cfg, ctx, ds, complete, th) -> tuple[C.Check, dict, float]:
    """Rerun the top distinct configurations with extra seeds (batched into one stacked model where possible).
    Configurations whose seed mean is within the pooled seed std of the best are equivalent: the simplest wins
    (fewest parameters; then the best mean). Returns the check, the chosen entry and the pooled seed std."""
    import numpy as np

    from recipe.engine.batched import fit_seeds

    n_seeds, n_top = int(th["seeds"]), int(th["top"])
    distinct, seen = [], set()
    for t in complete:
        key = json.dumps(t.user_attrs.get("overrides"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append(t)
        if len(distinct) == n_top:
            break
    # common random numbers: every configuration gets the same extra seeds, so their differences are sharper
    seeds = [cfg.seed + 1000 * (i + 1) for i in range(n_seeds)]
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    entries, how = [], ""
    for t in distinct:
        overrides = t.user_attrs["overrides"]
        vcfg = cfg.with_overrides(overrides)
        curves = [ctx.dir / "runs" / f"noise-{t.number}-seed{s}" / "metrics.jsonl" for s in seeds]
        results, _, how = fit_seeds(vcfg, ds, tr, va, seeds, ctx.device, curves=curves)
        vals = [r.best.get("score", math.nan) for r in results]
        vals = [v for v in vals if math.isfinite(v)] or [math.nan]
        entries.append({"trial": t.number, "overrides": overrides, "trial_val": t.value, "seeds": vals,
                        "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                        "parameters": _param_count(cfg, ds, overrides)})
    pooled = float(np.sqrt(np.nanmean([e["std"] ** 2 for e in entries]))) if entries else 0.0
    ranked = sorted(entries, key=lambda e: -e["mean"])
    best = ranked[0]
    equivalent = [e for e in ranked if best["mean"] - e["mean"] <= pooled]
    chosen = min(equivalent, key=lambda e: (e["parameters"], -e["mean"]))
    ev = {"configurations": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()
                              if k != "overrides"} for e in ranked],
          "seed_std": round(pooled, 4), "extra_seeds": seeds, "how": how, "chosen_trial": chosen["trial"]}
    if len(entries) < 2:
        return (C.make("tune.noise", "skip", "only one distinct configuration completed: nothing to compare", ev),
                chosen, pooled)
    spread = best["mean"] - min(e["mean"] for e in entries)
    ev["spread"] = round(spread, 4)
    if len(equivalent) > 1:
        names = ", ".join(f"#{e['trial']} {e['mean']:.4f}" for e in equivalent)
        check = C.make("tune.noise", "warn", f"the differences between the top configurations are noise: {names} "
                       f"lie within one seed std ({pooled:.4f}) of each other; choosing the simplest, "
                       f"#{chosen['trial']} ({chosen['parameters']} parameters)", ev,
                       "Do not read the ranking: more trials will not separate them; spend the budget on seeds "
                       "(ensemble.seeds) or on a wider space.")
    else:
        check = C.make("tune.noise", "pass", f"trial #{best['trial']} (mean {best['mean']:.4f} over {len(seeds)} seeds) "
                       f"beats the next by more than the seed std {pooled:.4f}", ev)
    return check, chosen, pooled


# ----------------------------------------------------------------------------- pictures


def _pictures(ctx, study, complete, space) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipe import plots

    ordered = sorted(complete, key=lambda t: t.number)
    best_so_far, cur = [], -math.inf
    for t in ordered:
        cur = max(cur, t.value)
        best_so_far.append(cur)
    numbers = [t.number for t in ordered]
    ctx.artifacts.figure("history.png", plots.curves(
        {"trial val": [t.value for t in ordered], "best so far": best_so_far}, "trial", "val score",
        "tuning history", x={"trial val": numbers, "best so far": numbers}))
    for key, p in space.items():
        pts = [(_decode(t.params[key]), t.value) for t in complete if key in t.params]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        if "choices" in p:
            labels = [json.dumps(c) for c in p["choices"]]
            xs = [labels.index(json.dumps(v)) for v, _ in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        else:
            xs = [float(v) for v, _ in pts]
            if p.get("log"):
                ax.set_xscale("log")
            ax.axvspan(float(p["low"]), float(p["high"]), color="tab:green", alpha=0.06, label="range")
        ax.scatter(xs, [y for _, y in pts], s=18)
        ax.scatter([xs[0]], [pts[0][1]], s=60, facecolors="none", edgecolors="tab:red", label="best")
        ax.set_xlabel(key)
        ax.set_ylabel("val score")
        ax.set_title(f"val vs {key}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        ctx.artifacts.figure(f"params/{key}.png", fig)
    _importances(ctx, study, complete)


def _importances(ctx, study, complete) -> None:
    import optuna

    varied = [k for k in complete[0].params if len({json.dumps(t.params.get(k)) for t in complete}) > 1]
    try:
        if len(complete) < 3 or not varied:
            raise ValueError(f"needs at least 3 complete trials and a parameter that varies "
                             f"({len(complete)} trials, varied: {varied})")
        importances = optuna.importance.get_param_importances(
            study, params=varied, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        out = {"importances": {k: round(float(v), 4) for k, v in importances.items()}, "method": "fanova"}
    except Exception as e:   # too few trials, or a space Optuna cannot evaluate: say why, not a crash
        out = {"importances": {}, "error": f"{type(e).__name__}: {e}"[:300]}
    ctx.artifacts.json("importances.json", out)
    if out["importances"]:
        from recipe import plots

        keys = list(out["importances"])
        ctx.artifacts.figure("importances.png", plots.bars(keys, [out["importances"][k] for k in keys],
                                                           [0.0] * len(keys), "parameter importance (fANOVA)",
                                                           "importance"))
