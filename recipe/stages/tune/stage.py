"""Stage 5: search hyperparameters around regularize's choice; worker processes and machines share one study.

One study lives in a storage every worker can reach: by default Optuna's journal file under
runs/<name>/tune/study/ (safe for several processes), or PostgreSQL for several machines. Workers take
trials under a study lock (flock on one machine, pg_advisory_lock on PostgreSQL), so the study ends with
exactly --trials counted trials and a grid point is never handed out twice. A trial whose process died
(kill -9: its pid is gone, or its PostgreSQL heartbeat stopped) or was interrupted is marked FAIL with
`recipe:retry` and does not count: the next worker retries its slot.
"""
from __future__ import annotations

import time
from pathlib import Path

from recipe.config import digest_json
from recipe.devices import plan_jobs
from recipe.errors import RecipeError
from recipe.stage import StageResult
from recipe.stages.tune.batch import batch_plan
from recipe.stages.tune.jobs import run_jobs
from recipe.stages.tune.recovery import counted, fail_stale
from recipe.stages.tune.space import grid_points, space_of
from recipe.stages.tune.storage import StudyLock, open_storage, storage_url
from recipe.stages.tune.summary import summarize
from recipe.stages.tune.worker import Plan

SHARED_LOCK = True          # several `recipe tune` processes (and machines) may add trials to one study
PRESERVE = ("study",)       # the journal and trial checkpoints survive reruns: a killed study resumes
METHODS = ("random", "grid", "quasi-random", "tpe")
WAIT_FOR_OTHERS_S = 600     # longest wait for trials other processes still run before summarizing


def run(cfg, ctx) -> StageResult:
    import optuna
    from optuna.trial import TrialState

    from recipe import tasks

    ds = ctx.data()
    task = tasks.get(ds.task)        # the study's direction: maximize a score, minimize a language model's loss
    chosen_art = ctx.upstream_json("regularize", "chosen.json")
    chosen = chosen_art["overrides"]
    opts = ctx.options.tune
    method = opts.get("method") or cfg.tune.method
    trials = opts.get("trials") or cfg.tune.trials
    jobs_plan = plan_jobs(opts.get("jobs") or cfg.tune.jobs, ctx.options.device,      # --jobs auto, GPU pinning
                          "--jobs" if opts.get("jobs") else "tune.jobs")
    jobs = jobs_plan.jobs
    ctx.log(f"tune: {jobs} worker{'s' if jobs > 1 else ''} ({jobs_plan.reason})")
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
    batch, batch_why = batch_plan(cfg, ds, chosen, ctx.device, jobs, trials)
    plan = Plan(storage=storage, study_name=study_name, method=method, trials=trials, pruner=pruner, seed=cfg.seed,
                chosen=chosen, space=space, checkpoints=str(checkpoints), lock=str(ctx.dir / "study" / "study.lock"),
                grid=grid, batch=batch, batch_why=batch_why)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage), direction=task.direction,
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
            bar.update(finished(study_), {"val_score": float(max(best, key=task.signed))} if best else None)

        crashed = run_jobs(cfg, ds, ctx.device, plan, jobs, tick, ctx.options.device, jobs_plan.gpus)
        _wait_for_others(study, plan, tick)
    if finished(study) < trials:
        raise RecipeError(f"tune: the study holds {finished(study)} of {trials} trials: worker processes exited "
                          f"early (exit codes {crashed}); rerun 'recipe tune' to resume")
    result = summarize(cfg, ctx, study, plan, chosen_art, crashed)
    result.extra["jobs"] = jobs_plan.record()
    return result


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
