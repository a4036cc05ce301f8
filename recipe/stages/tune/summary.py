"""The end of tune: count the trials, run the three checks, write best.yaml, tune.json, trials.csv and the top."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import yaml

from recipe.stage import StageResult
from recipe.stages.tune.checks import check_boundary, check_improves, check_noise, none_completed
from recipe.stages.tune.pictures import pictures
from recipe.stages.tune.recovery import RETRY, counted
from recipe.stages.tune.space import _decode
from recipe.stages.tune.storage import _public
from recipe.stages.tune.worker import Plan


def summarize(cfg, ctx, study, plan: Plan, chosen_art: dict, crashed: list[int]) -> StageResult:
    from optuna.trial import TrialState

    from recipe import tasks

    space = plan.space
    ds = ctx.data()
    task = tasks.get(ds.task)        # ranks trials the task's way: a language model's best trial has the lowest loss
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
        check = none_completed(counts, infeasible, n_counted, infeasible_fraction)
        return StageResult([check], metrics={"states": counts}, summary="no trial completed")
    complete.sort(key=lambda t: (-task.signed(t.value), t.number))
    top = _top(cfg, ctx, study, complete, Path(plan.checkpoints))

    checks = [check_boundary(complete, space, ctx.thresholds("tune.boundary"), task)]
    noise_check, chosen_entry, noise_std = check_noise(cfg, ctx, ds, complete, ctx.thresholds("tune.noise"))
    checks.append(noise_check)
    reference = chosen_art["val_mean"]
    reg_std = max(chosen_art.get("val_std", 0.0), chosen_art.get("reference_val_std", 0.0))
    noise = max(reg_std, noise_std)
    best_val = chosen_entry["mean"]
    ev = {"best_trial": chosen_entry["trial"], "best_val_seed_mean": round(best_val, 4),
          "best_single_val": round(complete[0].value, 4), "regularized_val": round(reference, 4),
          "noise": round(noise, 4), "trials": counts, "infeasible_fraction": round(infeasible_fraction, 3)}
    checks.append(check_improves(best_val, reference, noise, ev, task))
    best_overrides = chosen_entry["overrides"]
    ctx.artifacts.text("best.yaml", f"# tune's choice: trial #{chosen_entry['trial']}, val {best_val:.4f} (mean of "
                       f"{len(chosen_entry['seeds'])} seeds)\n" + yaml.safe_dump(best_overrides, sort_keys=True))
    ctx.artifacts.json("tune.json", {"study": study.study_name, "storage": _public(plan.storage),
                                     "method": plan.method, "pruner": plan.pruner, "space": space, "states": counts,
                                     "direction": task.direction, "metric": task.metric,
                                     "batch": {"size": plan.batch, "why": plan.batch_why},
                                     "infeasible_fraction": infeasible_fraction, "top": top,
                                     "best_trial": chosen_entry["trial"], "best_overrides": best_overrides,
                                     "noise": noise_check.evidence})
    pictures(ctx, study, complete, space, task)
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
                                        "epochs": epochs, "study": study.study_name, "direction": task.direction,
                                        "batch": plan.batch,
                                        "infeasible_fraction": infeasible_fraction},
                       summary=summary, extra={"health": health})


def _top(cfg, ctx, study, complete, checkpoints: Path) -> list[dict]:
    top = []
    for rank, t in enumerate(complete[:cfg.ensemble.top_k]):
        src = checkpoints / f"{study.study_name}-{t.number}.pt"
        rel = f"top/{rank}.pt"
        entry = {"rank": rank, "trial": t.number, "val": t.value, "overrides": t.user_attrs.get("overrides"),
                 "params": {key: _decode(v) for key, v in t.params.items()}, "checkpoint": None,
                 "artifact": t.user_attrs.get("artifact")}   # tune.artifacts: where any machine finds it
        if src.exists():     # trained on this machine; ensemble finds the others' in the artifact store
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
