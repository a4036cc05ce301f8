"""Stage 6: squeeze out the rest (ensemble, leave it training, distill), then touch the test split once.

Members are the top tuned trials, regularize's model, optional seed re-trains of the best configuration and
optional "leave it training" runs. Every choice (method, weights) is made on val; the sealed test split is
opened once per record, after every choice, and evaluated with a bootstrap interval, per-class scores, a
confusion matrix and a calibration check.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from recipe import checks as C
from recipe import tasks
from recipe.stage import StageResult
from recipe.stages.ensemble import look as L
from recipe.stages.ensemble import sealed_test as T
from recipe.stages.ensemble.cost import inference_cost
from recipe.stages.ensemble.distill import check_student, distill
from recipe.stages.ensemble.gain import check_gain, judged_text
from recipe.stages.ensemble.members import Member, drop_duplicates, gather_members
from recipe.stages.ensemble.ngram_test import check_beats_ngram, check_on_val, fit_ngrams
from recipe.stages.ensemble.selection import combine, greedy_select
from recipe.stages.ensemble.stats import _score

before = T.check_before_stage   # the runner calls this before loading data: the ledger's gate


def run(cfg, ctx) -> StageResult:
    from recipe.engine import train as E
    from recipe.stages.tune.artifacts import provenance

    ds = ctx.data()
    va = ctx.tensors("val")
    task, k = ds.task, ds.num_classes
    t = tasks.get(task)
    # text: val windows and rows resampled by document in the gain's bootstrap (recipe/stages/ensemble/gain.py)
    val_groups = ds.val.rows if ds.inputs == "tokens" else None
    steps = 4 + int(cfg.ensemble.distill)
    precision = cfg.train.precision          # every forward pass below: selection, distillation, cost, test
    with ctx.progress("ensemble", steps) as bar:
        members = gather_members(cfg, ctx, ds)
        gathered = list(members)             # drop_duplicates keeps one of each model; every run's health stays
        for m in members:
            m.val_out = E.predict(m.model, va.x, precision=precision)
            s = _score(m.val_out, va.y, task, k)
            m.val, m.val_loss = s["score"], s["loss"]
        members, same = drop_duplicates(members)
        bar.update(1)
        outs = [m.val_out for m in members]
        method = cfg.ensemble.method
        weights = greedy_select(outs, va.y, task, k) if method == "greedy" else np.full(len(members), 1 / len(members))
        ens_val_out = combine(outs, weights, task)
        ens_val = _score(ens_val_out, va.y, task, k)
        best = max(members, key=lambda m: (t.signed(m.val), -m.val_loss))    # a language model's: lowest loss
        checks = [check_gain(members, same, weights, ens_val_out, va.y, task, k, method, cfg.seed, val_groups)]
        used = [(m, w) for m, w in zip(members, weights) if w > 0]
        bar.update(2)
        # the model predict applies: the ensemble only where it earned its cost, else the best single model;
        # a distilled student replaces it only where val says the student is not worse beyond noise
        final = "ensemble" if checks[0].status != "fail" else "best_single"
        why = "ensemble.gain passed: the ensemble beats its best member on val" if final == "ensemble" else \
            f"ensemble.gain failed ({checks[0].title}): the best single model ships"
        student, student_info = None, None
        if cfg.ensemble.distill:
            student, student_info = distill(cfg, ctx, ds, best, [m for m, _ in used], [w for _, w in used])
            student_val_out = E.predict(student, va.x, precision=precision)
            student_info["val"] = _score(student_val_out, va.y, task, k)["score"]
            replaced_out = ens_val_out if final == "ensemble" else tasks.get(task).as_output(best.val_out)
            verdict = check_student(student_val_out, replaced_out, final, va.y, task, k, cfg.seed, val_groups)
            checks.append(verdict)
            student_info["shipped"] = verdict.status == "pass"
            why = f"ensemble.distill: {verdict.title}"
            if verdict.status == "pass":
                final = "student"
            else:
                student_info["not_shipped_because"] = verdict.title
            bar.update(3)
        cost = {"ensemble": inference_cost([m.model for m, _ in used], va.x, precision),
                "best_single": inference_cost([best.model], va.x, precision)}
        if student is not None:
            cost["student"] = inference_cost([student], va.x, precision)
            student_info["cost"] = cost["student"]
        # a language model (token streams) must beat the n-gram models: fitted on train, ranked on val here,
        # scored on test only inside the look; not below the best one on val already decides the check
        ngrams = None
        if ds.inputs == "tokens" and getattr(ds, "streams", None):
            from recipe.baselines.ngram import orders_from

            orders = orders_from(C.thresholds("baseline.dumb", cfg.checks))
            ngrams = fit_ngrams(ds.doc_tokens["train"], ds.doc_tokens["val"], ds.vocab_size, orders)
            chosen_val = {"student": (student_info or {}).get("val"), "best_single": best.val}.get(final,
                                                                                                 ens_val["score"])
            on_val = check_on_val(ngrams, chosen_val, final)
            if on_val is not None:
                checks.append(on_val)
        # ---- everything that can fail is decided on val: a check that fails (after the config's severity caps)
        # stops the stage here, before the test split is opened
        failed = L.val_failures(checks, cfg.checks)
        if failed:
            looks = len(T.read_looks(T.ledger_path(ctx)))
            checks.append(L.not_opened(failed, looks))
            summary = (f"{_val_line(len(used), method, task, ens_val['score'], best.val, checks[0])}; "
                       f"would ship: {final}; test split not opened ({', '.join(c.id for c in failed)} failed on val)")
            return StageResult(checks, metrics={"val": ens_val["score"], "best_single_val": best.val, "final": final,
                                                "final_reason": why, "test_opened": False},
                               summary=summary, extra={"test_looks": looks, "second_look": False,
                                                       "health": _health(gathered, student_info),
                                                       "tune_members": provenance(gathered)})
        # ---- the one look at the test split: every choice above was made on val. A new look is on disk
        # (fsynced) before the rows are handed out; a rerun that rebuilt the same models reuses the recorded one
        look = L.take(cfg, ctx, ds, final, used, best, student, ngrams)
        result, looks_before = look.result, look.before
        if student is not None:
            student_info["test"] = result["score"] if final == "student" else result["others"]["student"]
        final_val = {"student": (student_info or {}).get("val"), "best_single": best.val}.get(final, ens_val["score"])
        checks.append(T.check_test(result, final_val, final, looks_before, student_info, look.reused, t))
        if "ngram" in result:      # test's verdict replaces a val failure the config capped
            checks = [c for c in checks if c.id != "ensemble.beats-ngram"] + [check_beats_ngram(result["ngram"],
                                                                                                final)]
        bar.update(steps)
    # ---- artifacts: the ensemble as a loadable thing (member checkpoints + weights), and what predict needs
    saved = []
    for i, (m, w) in enumerate(used):
        rel = f"members/{i}.pt"
        E.save_checkpoint(ctx.artifacts.path(rel), m.model, {"overrides": m.overrides, "val": m.val, "name": m.name})
        ctx.artifacts.add(rel)
        saved.append({"checkpoint": rel, "weight": float(w), "name": m.name, "source": m.source,
                      "origin": m.origin, "overrides": m.overrides, "val": m.val, "val_loss": m.val_loss,
                      "seed": m.seed, **({"info": m.info} if m.info else {})})
    E.save_checkpoint(ctx.artifacts.path("best.pt"), best.model, {"overrides": best.overrides, "val": best.val,
                                                                 "name": best.name})
    ctx.artifacts.add("best.pt")
    if student is not None:
        E.save_checkpoint(ctx.artifacts.path("student.pt"), student, {"overrides": best.overrides,
                                                                       "val": student_info["val"]})
        ctx.artifacts.add("student.pt")
        student_info["checkpoint"] = "student.pt"
    candidates = [{"name": m.name, "source": m.source, "val": m.val, "val_loss": m.val_loss, "weight": float(w)}
                  for m, w in zip(members, weights)]
    test_json = {k: v for k, v in result.items() if k != "others"} | {f"{k}_score": v for k, v in
                                                                         result["others"].items()}
    ctx.artifacts.json("ensemble.json", {
        "task": task, "classes": ds.classes, "feature_names": ds.feature_names, "shape": list(ds.shape),
        "normalization": ds.norm, "encoding": ds.encoding, "target_stats": ds.target_stats,
        "target_column": cfg.data.target, "final": final, "final_reason": why, "method": method, "members": saved,
        "candidates": candidates, "same_model": same, "best_member": best.name,
        "best": {"checkpoint": "best.pt", "name": best.name, "overrides": best.overrides, "val": best.val},
        "val": ens_val["score"], "best_single_val": best.val, "test_metric": result["metric"],
        "test": result["score"], "test_ci95": result["ci95"],
        "best_single_test": result["others"]["best_single"], "test_detail": test_json, "student": student_info,
        "inference_cost": cost, "data_fingerprint": ds.fingerprint,
    })
    looks = L.finish(cfg, ctx, look)
    lo, hi = result["ci95"]
    metric = result["metric"]
    reused = f" (recorded result of look {look.index + 1} reused: same models, no new look)" if look.reused else ""
    summary = (f"{_val_line(len(saved), method, task, ens_val['score'], best.val, checks[0])}; "
               f"final model: {final}; test {metric} of the {final.replace('_', ' ')} {result['score']:.4f} "
               f"[{lo:.4f}, {hi:.4f}]{reused}; {why}")
    metrics = {"val": ens_val["score"], "best_single_val": best.val, "test": result["score"], "test_ci95": [lo, hi],
               "best_single_test": result["others"]["best_single"], "members": len(saved), "final": final,
               "final_reason": why,
               "inference_cost": cost}
    if "ece" in result:
        metrics["ece"] = result["ece"]
    if "perplexity" in result:
        metrics.update(test_perplexity=result["perplexity"], test_perplexity_ci95=result["perplexity_ci95"])
    if "ngram" in result:
        ng = result["ngram"]
        metrics["ngram_test"] = {"best": ng["best"], "test_loss": ng["models"][ng["best"]]["test_loss"],
                                 "gain": ng["gain"]["mean"]}
        summary += (f"; best n-gram ({ng['best']}) test {ng['models'][ng['best']]['test_loss']:.4f} nats/token "
                    f"({ng['gain']['mean']:+.4f} for the {final.replace('_', ' ')})")
    if student_info:
        metrics["student"] = {"val": student_info["val"], "test": student_info["test"],
                              "temperature": student_info["temperature"]}
    extra = {"test_looks": looks, "second_look": looks_before > 0, "health": _health(gathered, student_info),
             "tune_members": provenance(gathered)}    # which tuned trials were loaded, which retrained and why
    if look.reused:
        extra["test_reused"] = look.reused
    return StageResult(checks, metrics=metrics, summary=summary, extra=extra)


def _health(gathered: list[Member], student_info: Optional[dict]) -> list:
    """The worst status per health check over every run this stage trained (members, student)."""
    from recipe.engine.monitors import worst_per_check

    trained_here = [(m.name, m.health) for m in gathered if m.health]
    if student_info:
        trained_here.append(("student", student_info["health"]))
    return worst_per_check(trained_here)


def _val_line(n: int, method: str, task: str, ens: float, best: float, gain: C.Check) -> str:
    """The val half of the summary, naming the metric ensemble.gain was judged on (it may not be the score)."""
    metric = T.metric_name(tasks.get(task))
    return (f"ensemble of {n} ({method}): val {metric} {ens:.4f} vs best single {best:.4f}, "
            f"{judged_text(gain)}")
