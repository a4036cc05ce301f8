"""ensemble.gain: does the ensemble beat its best member on val beyond bootstrap noise, and on which metric.

The gain is judged on the loss (log-loss for classification, squared error for regression: smooth, and what
averaging improves) and, for classification, also on accuracy; the check's evidence (`judged_on`) and title
name the metric that decided, so a summary never shows an accuracy tie beside a verdict made on log-loss.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recipe import checks as C
from recipe import tasks

if TYPE_CHECKING:
    from recipe.stages.ensemble.members import Member


def disagreement(outputs: list[torch.Tensor], task: str) -> float:
    """Mean pairwise share of val rows where two members predict differently (classification) or the mean
    absolute difference of their predictions (regression, standardized units)."""
    if len(outputs) < 2:
        return 0.0
    t = tasks.get(task)
    vals = [t.disagreement(outputs[i], outputs[j]) for i in range(len(outputs)) for j in range(i + 1, len(outputs))]
    return float(np.mean(vals))


def loss_name(task: str) -> str:
    return tasks.get(task).loss_label


def check_gain(members: list[Member], same: dict[str, str], weights: np.ndarray, ens_out: torch.Tensor,
               y: torch.Tensor, task: str, num_classes: int, method: str, seed: int, groups=None) -> C.Check:
    """ensemble.gain: the ensemble must beat the best single member on val beyond bootstrap noise. `groups`:
    each val row's document (a language model's windows), so the bootstrap resamples documents, not windows."""
    from recipe.stages.ensemble.stats import _lower, _score, paired_bootstrap, row_correct, row_loss

    t = tasks.get(task)
    best = max(members, key=lambda m: (t.signed(m.val), -m.val_loss))    # a language model's best: lowest loss
    ens = _score(ens_out, y, task, num_classes)
    used = [f"{m.name} ×{w:.2f}" for m, w in zip(members, weights) if w > 0]
    spread = disagreement([m.val_out for m in members], task)
    ev: dict[str, Any] = {
        "ensemble_val": round(ens["score"], 4), "best_member": best.name, "best_member_val": round(best.val, 4),
        "gain": round(t.signed(ens["score"]) - t.signed(best.val), 4), "method": method, "weights": used,
        "members": {m.name: round(m.val, 4) for m in members}, "distinct_members": len(members),
        "disagreement": round(spread, 4),
    }
    if same:
        ev["same_model"] = same
    # paired bootstrap over val rows: the ensemble and the best member are scored on the same rows
    loss_delta = row_loss(best.val_out, y, task) - row_loss(ens_out, y, task)    # > 0: ensemble better
    lmean, llo, lhi = paired_bootstrap(loss_delta, seed, groups=groups)
    lbound = _lower(loss_delta, seed, groups)
    ev["loss_gain"] = {"mean": round(lmean, 5), "ci95": [round(llo, 5), round(lhi, 5)],
                       "lower_bound_95": round(lbound, 5),
                       "unit": t.loss_unit, "loss": t.loss_label}
    if groups is not None:
        ev["loss_gain"]["resampled"] = f"{len(np.unique(np.asarray(groups)))} val documents"
    beyond, judged = lbound > 0, loss_name(task)
    why = f"its {judged} is lower by {lmean:.4f} (one-sided 95% bound {lbound:.4f} > 0)"
    tested = f"{judged} {lmean:+.4f} per row (bound {lbound:.4f})"
    if t.has_classes:
        acc_delta = row_correct(ens_out, y) - row_correct(best.val_out, y)
        amean, alo, ahi = paired_bootstrap(acc_delta, seed + 1)
        abound = _lower(acc_delta, seed + 1)
        ev["accuracy_gain"] = {"mean": round(amean, 4), "ci95": [round(alo, 4), round(ahi, 4)],
                               "lower_bound_95": round(abound, 4)}
        tested += f", accuracy {amean:+.4f} (bound {abound:.4f})"
        if abound > 0:
            beyond, judged = True, "accuracy"
            why = f"its accuracy is higher by {amean:.4f} (one-sided 95% bound {abound:.4f} > 0)"
        if ens["score"] < best.val:        # never trade the task metric for a lower loss
            beyond = False
    ev["judged_on"] = judged if beyond else (f"{t.loss_label} and {t.metric_label}" if t.has_classes else judged)
    ev["note"] = "selected and measured on val: the gain is optimistic; the test numbers are not"
    if t.has_classes and not beyond and bool(row_correct(best.val_out, y).min() == 1):
        # a perfect best member leaves an ensemble nothing to gain on val: no evidence of a problem either way
        ev["best_member_val_errors"] = 0
        return C.make("ensemble.gain", "warn", f"{best.name} already gets all {len(y)} val rows right: val leaves an "
                      "ensemble nothing to gain, so the best single model ships", ev,
                      "Nothing to fix; a harder or larger val split would tell members apart.")
    if len(members) == 1 or (t.has_classes and spread == 0.0 and not beyond):
        n = len(members) + len(same)
        return C.make("ensemble.gain", "fail", f"no diversity: the {n} members are the same model "
                      f"(identical val predictions), so the ensemble cannot beat {best.name}", ev,
                      "Ship the single best model, or make members differ: more tuned trials (tune.trials), "
                      "seed re-trains (ensemble.seeds) or a longer run (ensemble.long_epochs).")
    if sum(1 for w in weights if w > 0) == 1:
        return C.make("ensemble.gain", "fail", f"the {method} selection kept {best.name} alone: no ensemble beats "
                      f"the best member on val", ev,
                      "Ship the single best model; an ensemble here only costs inference time.")
    if not beyond:
        return C.make("ensemble.gain", "fail", f"the ensemble (val {ens['score']:.4f}) does not beat the best member "
                      f"{best.name} (val {best.val:.4f}) beyond bootstrap noise ({tested})", ev,
                      "Ship the single best model, or add diverse members (ensemble.seeds, more tune.trials).")
    return C.make("ensemble.gain", "pass", f"ensemble of {len(used)} beats {best.name} on val beyond noise: {why}", ev)


def judged_text(gain: C.Check) -> str:
    """For the stage summary: the metric the gain was judged on, with the paired-bootstrap numbers."""
    ev = gain.evidence
    lg, ag = ev.get("loss_gain") or {}, ev.get("accuracy_gain")
    name = lg.get("loss") or ("log-loss" if ag is not None else "squared error")
    loss = f"{name} reduced by {lg.get('mean', 0.0):+.4f}/row " \
           f"(one-sided 95% bound {lg.get('lower_bound_95', 0.0):+.4f})"
    acc = f"accuracy {ag['mean']:+.4f} (bound {ag['lower_bound_95']:+.4f})" if ag else ""
    judged = ev.get("judged_on", "")
    if judged == "accuracy":
        return f"gain judged on accuracy: {acc}"
    if judged == "log-loss and accuracy":
        return f"gain judged on log-loss and accuracy: {loss}; {acc}"
    return f"gain judged on {judged}: {loss}"
