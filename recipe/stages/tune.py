"""Stage 5: search hyperparameters around regularize's choice with Optuna; a file storage worker processes share."""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import yaml

from recipe import checks as C
from recipe.config import digest_json
from recipe.errors import ConfigError
from recipe.runner import StageResult

SHARED_LOCK = True          # several `recipe tune` processes (and machines) may add trials to one study
PRESERVE = ("study",)       # the journal and trial checkpoints survive reruns: a killed study resumes
METHODS = ("random", "grid", "quasi-random", "tpe")
GRID_POINTS = 3             # points per continuous range in a grid search


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
        space["model.hidden"] = {"choices": [[max(4, h // 2) for h in hidden], list(hidden), [h * 2 for h in hidden]]}
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


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, p in space.items():
        if "choices" in p:
            out[key] = _decode(trial.suggest_categorical(key, [_encode(c) for c in p["choices"]]))
        elif p.get("integer") or (isinstance(p["low"], int) and isinstance(p["high"], int) and not p.get("log")):
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
        elif p.get("log"):
            grid[key] = [float(v) for v in np.geomspace(p["low"], p["high"], GRID_POINTS)]
        elif p.get("integer"):
            grid[key] = sorted({int(round(v)) for v in np.linspace(p["low"], p["high"], GRID_POINTS)})
        else:
            grid[key] = [float(v) for v in np.linspace(p["low"], p["high"], GRID_POINTS)]
    return grid


def make_sampler(method: str, space, seed: int):
    import optuna

    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if method == "quasi-random":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)
    return optuna.samplers.GridSampler(grid_of(space), seed=seed)


def make_pruner(name: str):
    import optuna

    return {"none": optuna.pruners.NopPruner, "median": lambda: optuna.pruners.MedianPruner(n_warmup_steps=3),
            "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2)}[name]()


def storage_url(cfg, ctx) -> str:
    url = ctx.options.tune.get("storage") or cfg.tune.storage
    if url:
        return url
    return str(ctx.dir / "study" / "journal.log")


def open_storage(url: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
        except Exception as e:
            raise ConfigError(f"tune.storage: cannot open {url.split('@')[-1]} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


# ----------------------------------------------------------------------------- one worker


def _objective_factory(cfg, ds, device, chosen: dict, space: dict, checkpoints: Path, pruner: str):
    import optuna

    from recipe.engine import train as E
    from recipe.models import create

    tr = E.to_tensors(ds, ds.train, device)
    va = E.to_tensors(ds, ds.val, device)

    def objective(trial) -> float:
        storage = trial.study._storage   # pid + host let a later run fail trials orphaned by kill -9
        storage.set_trial_system_attr(trial._trial_id, "recipe:pid", os.getpid())
        storage.set_trial_system_attr(trial._trial_id, "recipe:host", os.uname().nodename)
        params = suggest(trial, space)
        overrides = {**chosen, **params}
        vcfg = cfg.with_overrides(overrides)
        model = create(vcfg, ds, cfg.seed)
        trial.set_user_attr("overrides", overrides)

        def report(epoch, row):
            if pruner != "none":
                trial.report(row["val_score"], epoch)
                if trial.should_prune():
                    raise E.Pruned()

        r = E.fit_from_config(model.to(device), tr, va, vcfg, ds, on_epoch=report)
        trial.set_user_attr("train_score", r.final_train.get("score"))
        trial.set_user_attr("epochs", len(r.history))
        trial.set_user_attr("seconds", round(r.seconds, 3))
        if r.stopped == "pruned":
            raise optuna.TrialPruned()
        value = r.best.get("score", math.nan)
        if not math.isfinite(value):
            trial.set_user_attr("failure", r.stopped)
            return math.nan
        E.save_checkpoint(checkpoints / f"{trial.study.study_name}-{trial.number}.pt", model,
                          {"overrides": overrides, "val": value, "trial": trial.number})
        return value

    return objective


def optimize(cfg, ds, device, storage: str, study_name: str, method: str, trials: int, chosen: dict,
             space: dict, checkpoints: Path, pruner: str, worker: int = 0) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage),
                              sampler=make_sampler(method, space, cfg.seed + 1000 * worker),
                              pruner=make_pruner(pruner))
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    remaining = trials - len(study.get_trials(deepcopy=False, states=done))
    if remaining <= 0:
        return
    objective = _objective_factory(cfg, ds, device, chosen, space, checkpoints, pruner)
    study.optimize(objective, n_trials=remaining, catch=(),
                   callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)])


def _worker_main(raw: dict, base_dir: str, args: dict) -> None:
    """Entry point of a spawned worker process: rebuild config and data, then optimize."""
    import torch

    from recipe.config import validate
    from recipe.data import load
    from recipe.engine.train import pick_device

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.pop("jobs")))
    cfg = validate(raw)
    cfg._base_dir = Path(base_dir)
    ds = load(cfg)
    optimize(cfg, ds, pick_device(args.pop("device")), **args)


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
    ident = digest_json({"space": space, "method": method, "chosen": chosen, "seed": cfg.seed,
                         "model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"),
                         "data": ds.fingerprint, "pruner": pruner})
    study_name = f"{cfg.name}-{ident[:10]}"
    checkpoints = ctx.dir / "study" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="maximize",
                                load_if_exists=True)
    _fail_orphans(study)
    if method == "grid":
        size = 1
        for v in grid_of(space).values():
            size *= len(v)
        trials = min(trials, size)
    args = dict(storage=storage, study_name=study_name, method=method, trials=trials, chosen=chosen, space=space,
                checkpoints=checkpoints, pruner=pruner)
    with ctx.progress(f"tune ({method}, {jobs} job{'s' if jobs > 1 else ''})", trials) as bar:
        def tick(study_, trial_):
            bar.update(len(study_.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                     TrialState.FAIL))),
                       {"val_score": float(study_.best_value)} if _has_complete(study_) else None)

        if jobs <= 1:
            import optuna as _o

            study_local = _o.load_study(study_name=study_name, storage=open_storage(storage),
                                        sampler=make_sampler(method, space, cfg.seed), pruner=make_pruner(pruner))
            done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            remaining = trials - len(study_local.get_trials(deepcopy=False, states=done))
            if remaining > 0:
                objective = _objective_factory(cfg, ds, ctx.device, chosen, space, checkpoints, pruner)
                study_local.optimize(objective, n_trials=remaining, catch=(),
                                     callbacks=[_o.study.MaxTrialsCallback(trials, states=done), tick])
        else:
            _run_workers(cfg, ctx, jobs, args, bar, study_name, storage)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return summarize(cfg, ctx, study, space, chosen_art, method, storage, checkpoints)


def _has_complete(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _fail_orphans(study) -> None:
    """Trials left RUNNING by a killed process on this machine are marked FAIL so they do not linger."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.system_attrs.get("recipe:pid") if hasattr(t, "system_attrs") else None
        host = t.system_attrs.get("recipe:host") if hasattr(t, "system_attrs") else None
        if pid is not None and host == os.uname().nodename and not _alive(pid):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _run_workers(cfg, ctx, jobs: int, args: dict, bar, study_name: str, storage: str) -> None:
    import time

    import optuna
    from optuna.trial import TrialState

    spawn = mp.get_context("spawn")
    raw = cfg.model_dump(mode="json")
    procs = []
    for w in range(jobs):
        a = {**args, "worker": w, "jobs": jobs, "device": ctx.options.device}
        p = spawn.Process(target=_worker_main, args=(raw, str(cfg.base_dir), a), daemon=True)
        p.start()
        procs.append(p)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            bar.update(len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.FAIL))))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        from recipe.errors import RecipeError

        raise RecipeError(f"tune: {len(bad)} worker process(es) exited with codes {bad}; rerun 'recipe tune' to resume")


def summarize(cfg, ctx, study, space, chosen_art, method, storage, checkpoints: Path) -> StageResult:
    from optuna.trial import TrialState

    th = ctx.thresholds
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
                and t.value is not None and math.isfinite(t.value)]
    counts = {s.name.lower(): sum(1 for t in study.get_trials(deepcopy=False) if t.state == s) for s in TrialState}
    if not complete:
        check = C.make("tune.improves", "fail", f"no trial completed ({counts})", {"states": counts},
                       "Look at the failed trials (NaN loss?): narrow the learning-rate range.")
        return StageResult([check], metrics={"states": counts}, summary="no trial completed")
    complete.sort(key=lambda t: -t.value)
    k = cfg.ensemble.top_k
    top = []
    for rank, t in enumerate(complete[:k]):
        src = checkpoints / f"{study.study_name}-{t.number}.pt"
        rel = f"top/{rank}.pt"
        entry = {"rank": rank, "trial": t.number, "val": t.value, "overrides": t.user_attrs.get("overrides"),
                 "params": {key: _decode(v) for key, v in t.params.items()}, "checkpoint": None}
        if src.exists():
            shutil.copyfile(src, ctx.artifacts.path(rel))
            ctx.artifacts.add(rel)
            entry["checkpoint"] = rel
        top.append(entry)
    best = complete[0]
    best_overrides = best.user_attrs["overrides"]
    ctx.artifacts.text("best.yaml", f"# tune's best trial #{best.number}: val {best.value:.4f}\n"
                       + yaml.safe_dump(best_overrides, sort_keys=True))
    header = ["number", "state", "value"] + list(space) + ["train_score", "epochs", "seconds"]
    lines = [",".join(header)]
    for t in study.get_trials(deepcopy=False):
        p = {key: _decode(v) for key, v in t.params.items()}
        cells = [t.number, t.state.name, "" if t.value is None else f"{t.value:.6g}"] + \
                [json.dumps(p.get(key)).replace(",", ";") if key in p else "" for key in space] + \
                [t.user_attrs.get("train_score", ""), t.user_attrs.get("epochs", ""), t.user_attrs.get("seconds", "")]
        lines.append(",".join(str(c) for c in cells))
    ctx.artifacts.text("trials.csv", "\n".join(lines) + "\n")
    ctx.artifacts.json("tune.json", {"study": study.study_name, "storage": storage if "://" not in storage else
                                     storage.split("@")[-1], "method": method, "space": space, "states": counts,
                                     "top": top, "best_overrides": best_overrides})
    checks = [check_boundary(best, space, th("tune.boundary"))]
    noise = max(chosen_art.get("val_std", 0.0), chosen_art.get("reference_val_std", 0.0))
    second = complete[1].value if len(complete) > 1 else None
    ev = {"best": round(best.value, 4), "second": None if second is None else round(second, 4),
          "seed_noise": round(noise, 4), "top_values": [round(t.value, 4) for t in complete[:k]]}
    if second is not None and best.value - second <= noise:
        checks.append(C.make("tune.noise", "warn", f"the best two trials differ by {best.value - second:.4f}, within "
                             f"seed noise ({noise:.4f})", ev,
                             "Do not over-read the ranking: prefer the simpler configuration or rerun the top trials "
                             "with more seeds (ensemble.seeds)."))
    else:
        checks.append(C.make("tune.noise", "pass", "the best trial stands out from the next beyond seed noise", ev))
    reference = chosen_art["val_mean"]
    ev = {"best_trial": best.number, "best_val": round(best.value, 4), "regularized_val": round(reference, 4),
          "seed_noise": round(noise, 4), "trials": counts}
    if best.value > reference + noise:
        checks.append(C.make("tune.improves", "pass", f"best trial val {best.value:.4f} beats the regularized model "
                             f"({reference:.4f}) beyond noise", ev))
    else:
        checks.append(C.make("tune.improves", "warn", f"best trial val {best.value:.4f} does not beat the "
                             f"regularized model ({reference:.4f}) beyond noise {noise:.4f}", ev,
                             "The search space may be too narrow or too small a budget: widen it or add trials."))
    _pictures(ctx, study, complete)
    summary = (f"{counts.get('complete', 0)} trials complete ({counts.get('pruned', 0)} pruned, "
               f"{counts.get('fail', 0)} failed); best #{best.number} val {best.value:.4f} "
               f"(regularized {reference:.4f})")
    return StageResult(checks, metrics={"best_val": best.value, "states": counts, "study": study.study_name},
                       summary=summary)


def check_boundary(best, space, th) -> C.Check:
    edge = th["edge_fraction"]
    at_edge = {}
    positions = {}
    for key, p in space.items():
        if "choices" in p or key not in best.params:
            continue
        v = float(best.params[key])
        lo, hi = float(p["low"]), float(p["high"])
        if p.get("log"):
            pos = (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        else:
            pos = (v - lo) / (hi - lo)
        positions[key] = round(pos, 3)
        if pos < edge or pos > 1 - edge:
            at_edge[key] = f"{v:.4g} at the {'low' if pos < edge else 'high'} end of [{lo:.4g}, {hi:.4g}]"
    ev = {"positions": positions, "edge_fraction": edge}
    if at_edge:
        ev["at_edge"] = at_edge
        return C.make("tune.boundary", "warn", "best value at the edge of its range: " + "; ".join(
            f"{k} {v}" for k, v in at_edge.items()), ev,
            "Widen those ranges in tune.space past the edge and tune again: the optimum may lie outside.")
    return C.make("tune.boundary", "pass", "the best trial sits inside every range", ev)


def _pictures(ctx, study, complete) -> None:
    from recipe import plots

    ordered = sorted(complete, key=lambda t: t.number)
    best_so_far, cur = [], -math.inf
    for t in ordered:
        cur = max(cur, t.value)
        best_so_far.append(cur)
    ctx.artifacts.figure("history.png", plots.curves(
        {"trial val": [t.value for t in ordered], "best so far": best_so_far}, "trial", "val score",
        "tuning history", x={"trial val": [t.number for t in ordered], "best so far": [t.number for t in ordered]}))
