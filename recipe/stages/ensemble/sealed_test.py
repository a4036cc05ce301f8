"""The sealed test split's ledger: every look is written to disk, durably, before the test rows are opened.

runs/<name>/test_looks.json lists every look at the test split. It fails closed:
- a look is appended (temp file, fsync, rename, fsync of the folder) *before* `Dataset.open_test` hands out
  the rows, so a process killed anywhere after that point still leaves the look on record;
- a ledger that exists but cannot be read or parsed is never taken for "no looks": the stage refuses
  (GateError, exit 3, like every other "cannot prove the upstream facts" refusal) and names the file.
  With --force the unreadable file is kept beside the new ledger and counted as at least one earlier look.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from recipe import checks as C
from recipe import tasks
from recipe.errors import GateError
from recipe.workspace import atomic_write_json

LEDGER = "test_looks.json"
ECE_BINS = 15


def ledger_path(ctx) -> Path:
    return ctx.workspace.dir / LEDGER


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class UnreadableLedger(GateError):
    """The ledger exists but cannot be read as a list of looks: nobody can say the test split is unseen."""


def read_looks(path: Path) -> list[dict[str, Any]]:
    """The recorded looks; [] only when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UnreadableLedger(_refusal(path, f"cannot be read ({e.strerror or e})")) from None
    try:
        looks = json.loads(text)
    except ValueError as e:
        raise UnreadableLedger(_refusal(path, f"is not valid JSON ({e})")) from None
    if not isinstance(looks, list) or not all(isinstance(k, dict) and "at" in k for k in looks):
        raise UnreadableLedger(_refusal(path, "is not a list of looks"))
    return looks


def _refusal(path: Path, why: str) -> list[str]:
    return [f"{path}: the test-look ledger {why}; recipe cannot tell whether the test split was already "
            "evaluated, so it will not open it",
            f"restore the file, or pass --force to count this as a further look (the unreadable file is kept as "
            f"{path.name}.unreadable-<time>)"]


def _durable_write(path: Path, looks: list[dict[str, Any]]) -> None:
    """Atomic write (fsynced temp file renamed over the old one), then fsync the folder so the rename itself
    survives a crash of the machine, not only of the process."""
    atomic_write_json(path, looks)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:      # some filesystems do not open folders; the file itself is already fsynced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _set_aside(path: Path) -> dict[str, Any]:
    """--force over an unreadable ledger: keep the file for the user and note it as an unknown earlier look."""
    kept = path.with_name(f"{path.name}.unreadable-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, kept)
    return {"at": _now(), "status": "unknown", "note": f"the earlier ledger could not be read; kept as {kept.name}",
            "forced": True}


def check_before_stage(cfg, ctx) -> None:
    """The gate of the one look: a second look needs --force; an unreadable ledger refuses even the first."""
    path = ledger_path(ctx)
    try:
        looks = read_looks(path)
    except UnreadableLedger:
        if not ctx.options.force:
            raise
        _durable_write(path, [_set_aside(path)])
        return
    if looks and not ctx.options.force:
        from recipe.stages.ensemble import reuse as R

        now = R.inputs(cfg.model_dump(mode="json"), ctx.workspace)
        scored = [k for k in looks if k.get("status") == "scored"]
        if any(not R.changed(k.get("inputs"), now) for k in scored):
            return      # the same inputs as a scored look: the stage reuses that result if it rebuilds the model
        last = looks[-1]
        if last.get("status") == "opened":
            what = (f"was opened on {last['at']} (pid {last.get('pid')}) by a run that ended before it recorded a "
                    "score (killed or crashed)")
        elif "test_score" in last:
            what = f"was already evaluated on {last['at']} (test score {last['test_score']:.4f})"
        else:
            what = f"was already evaluated on {last['at']} ({last.get('note', 'score unknown')})"
        why = ""
        if scored:
            why = (f"; its recorded result cannot be reused: {', '.join(R.changed(scored[-1].get('inputs'), now))} "
                   "changed since that look")
        raise GateError([f"the test split of '{cfg.name}' {what}{why}; every further look leaks test into your "
                         "choices",
                         f"pass --force to look again (it is recorded in the record and {path})"])


def record_look(ctx, ds) -> tuple[int, int]:
    """Append this look to the ledger, durably, before any test row is read; returns (index, looks before)."""
    path = ledger_path(ctx)
    looks = read_looks(path)
    looks.append({"at": _now(), "status": "opened", "pid": os.getpid(), "fingerprint": ds.fingerprint,
                  "forced": bool(ctx.options.force)})
    _durable_write(path, looks)
    return len(looks) - 1, len(looks) - 1


def open_test(ctx, ds):
    """The only way ensemble reaches the test rows: the look is on disk first. Returns (split, index, before)."""
    index, before = record_look(ctx, ds)
    return ds.open_test("ensemble.test"), index, before


def finish_look(ctx, index: int, score: float, **facts: Any) -> int:
    """The look's score, once known, with what lets a rerun reuse it (test_reuse); returns the looks on record."""
    path = ledger_path(ctx)
    looks = read_looks(path)
    looks[index] = {**looks[index], "status": "scored", "test_score": score, "scored_at": _now(), **facts}
    _durable_write(path, looks)
    return len(looks)


def note_reuse(ctx, index: int) -> int:
    """A rerun reported look `index` again without opening test: noted on that look, not counted as a look."""
    path = ledger_path(ctx)
    looks = read_looks(path)
    looks[index] = {**looks[index], "reused_at": [*looks[index].get("reused_at", []), _now()]}
    _durable_write(path, looks)
    return len(looks)


# ----------------------------------------------------------------------------- the one look: scores on test


def calibration(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(1)
    right = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_conf = np.bincount(which, conf, bins) / np.maximum(counts, 1)
    mean_acc = np.bincount(which, right, bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / max(len(y), 1) * np.abs(mean_acc - mean_conf)))
    return {"ece": ece, "bins": bins, "confidence": mean_conf, "accuracy": mean_acc, "counts": counts}


def per_class(cm: np.ndarray, classes: list) -> list[dict[str, Any]]:
    out = []
    for k, name in enumerate(classes):
        tp, support, predicted = cm[k, k], cm[k].sum(), cm[:, k].sum()
        # a class never predicted has precision 0 (sklearn's zero_division=0), not "unknown": no prediction of
        # it was right; recall stays undefined only for a class with no test rows
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else \
            (0.0 if support else math.nan)
        out.append({"class": name, "precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
                    "support": int(support)})
    return out


def _r(v: float, nd: int = 4) -> Optional[float]:
    return round(float(v), nd) if math.isfinite(v) else None


def metric_name(task) -> str:
    """The score's name on any split: a language model's "val loss (nats/token)" is its test loss on test."""
    return task.metric_label.removeprefix("val ")


def evaluate_test(cfg, ctx, ds, final_out: torch.Tensor, ty: torch.Tensor, others: dict[str, torch.Tensor],
                  groups=None, ngram=None):
    """Scores, interval, per-class table, confusion matrix and calibration of the final model on test; for a
    language model, perplexity and the n-gram models on the same test documents. `groups`: each test row's
    document (a language model's windows), so the interval resamples documents; `ngram`: (the fitted n-gram
    models, the test documents' tokens) for ngram_test.score_ngrams."""
    from recipe import plots
    from recipe.stages.ensemble.stats import _score, bootstrap_score

    t = tasks.get(ds.task)
    s = _score(final_out, ty, ds.task, ds.num_classes)
    lo, hi = bootstrap_score(final_out, ty, ds.task, cfg.seed, groups)
    result: dict[str, Any] = {"score": s["score"], "ci95": [lo, hi], "loss": s["loss"], "rows": len(ty),
                              "metric": metric_name(t),
                              "others": {k: _score(o, ty, ds.task, ds.num_classes)["score"] for k, o in others.items()}}
    if groups is not None:
        result["bootstrap"] = {"resampled": "documents", "n_documents": int(len(np.unique(np.asarray(groups))))}
    if t.has_classes:
        y = ty.cpu().numpy()
        pred = final_out.argmax(1).cpu().numpy()
        cm = np.zeros((ds.num_classes, ds.num_classes), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        classes = [str(c) for c in ds.classes]
        result["per_class"] = per_class(cm, classes)
        result["confusion"] = cm.tolist()
        cal = calibration(torch.exp(final_out).cpu().numpy(), y)
        result["ece"] = cal["ece"]
        result["calibration"] = {"bins": cal["bins"], "confidence": cal["confidence"].round(4).tolist(),
                                 "accuracy": cal["accuracy"].round(4).tolist(), "counts": cal["counts"].tolist()}
        ctx.artifacts.figure("confusion.png", plots.confusion_matrix(cm, classes))
        ctx.artifacts.figure("reliability.png", plots.reliability_diagram(cal["confidence"], cal["accuracy"],
                                                                          cal["counts"], cal["ece"]))
    elif "perplexity" in s:     # a language model: its loss per token as perplexity, and the n-gram models
        from recipe.stages.ensemble.ngram_test import network_doc_sums, score_ngrams

        result.update(perplexity=s["perplexity"], perplexity_ci95=[float(np.exp(lo)), float(np.exp(hi))],
                      bits_per_token=s["bits_per_token"], token_accuracy=s["token_accuracy"], tokens=s["tokens"])
        if ngram is not None:
            fitted, test_docs = ngram
            net = network_doc_sums(t, final_out, ty, groups, len(test_docs))
            result["ngram"] = score_ngrams(fitted, test_docs, net, cfg.seed)
    else:
        std, mean = ds.target_stats["std"], ds.target_stats["mean"]
        pred = final_out.reshape(-1).cpu().numpy() * std + mean
        true = ty.cpu().numpy() * std + mean
        result["rmse"] = float(np.sqrt(np.mean((pred - true) ** 2)))
        ctx.artifacts.figure("predicted_vs_true.png", plots.predicted_vs_true(pred, true))
    return result


def check_test(result: dict[str, Any], ens_val: float, final: str, looks_before: int,
               student: Optional[dict], reused: Optional[dict] = None, task=None) -> C.Check:
    """The one test number with its interval; warns where val lies past the interval on the better side (val
    was overfit by selection: above it for a score, below it for a language model's loss, `task.signed`)."""
    signed = task.signed if task is not None else (lambda v: v)
    lo, hi = result["ci95"]
    metric = result["metric"]
    ev = {"final_model": final, "test_score": round(result["score"], 4), "ci95": [round(lo, 4), round(hi, 4)], "metric": metric,
          "val_score": round(ens_val, 4), "test_rows": result["rows"], "looks_before": looks_before,
          **{f"{k}_test": round(v, 4) for k, v in result["others"].items()}}
    if "ece" in result:
        ev["ece"] = round(result["ece"], 4)
        ev["per_class_f1"] = {p["class"]: p["f1"] for p in result["per_class"]}
    if "rmse" in result:
        ev["rmse"] = round(result["rmse"], 4)
    if "perplexity" in result:
        ev["perplexity"] = round(result["perplexity"], 4)
        ev["perplexity_ci95"] = [round(v, 4) for v in result["perplexity_ci95"]]
    if "bootstrap" in result:
        ev["bootstrap"] = result["bootstrap"]
    if student:
        ev["student"] = {"val": round(student["val"], 4), "test": round(student["test"], 4),
                         "temperature": student.get("temperature")}
    look = "second look (forced, recorded)" if looks_before else "computed once"
    if reused is not None:
        ev["reused_look"] = reused
        look = (f"recorded result of look {reused['look'] + 1} ({reused['at']}) reused: the same model on the same "
                "rows, test not opened again")
    over = f" over {result['bootstrap']['n_documents']} test documents" if "bootstrap" in result else ""
    ppl = f", perplexity {result['perplexity']:.3f}" if "perplexity" in result else ""
    title = (f"{final.replace('_', ' ')}: test {metric} {result['score']:.4f} (95% CI {lo:.4f}–{hi:.4f}{over}){ppl}, "
             f"{look}")
    if signed(ens_val) > max(signed(lo), signed(hi)):
        return C.make("ensemble.test", "warn", title + f"; worse than val {ens_val:.4f}: val was overfit by selection",
                      ev,
                      "Expect the test number in production; the val number is optimistic after tuning.")
    if "ece" in result and result["ece"] > 0.1:
        return C.make("ensemble.test", "warn", title + f"; poorly calibrated (ECE {result['ece']:.3f})", ev,
                      "Do not read the probabilities as confidences: calibrate them (temperature scaling on val).")
    return C.make("ensemble.test", "pass", title, ev)
