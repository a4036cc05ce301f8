"""Stage 6: squeeze out the rest (ensemble, leave it training, distill), then touch the test split once.

Members are the top tuned trials, regularize's model, optional seed re-trains of the best configuration and
optional "leave it training" runs. Every choice (method, weights) is made on val; the sealed test split is
opened once per record, after every choice, and evaluated with a bootstrap interval, per-class scores, a
confusion matrix and a calibration check.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from recipe import checks as C
from recipe.errors import GateError, RecipeError
from recipe.runner import StageResult
from recipe.workspace import atomic_write_json

GREEDY_STEPS = 25        # Caruana et al. 2004: forward selection with replacement, best prefix kept
GREEDY_INIT = 3          # ... initialised with (up to) the best few members ("sorted initialisation")
BOOTSTRAP = 1000
TEMPERATURE = 2.0        # Hinton et al. 2015: soft targets at T > 1 carry the teacher's "dark knowledge"
ECE_BINS = 15
SAME_OUTPUTS = 1e-6      # members whose val outputs differ by less than this are the same model
LEDGER = "test_looks.json"


# ----------------------------------------------------------------------------- the sealed test ledger


def _ledger_path(ctx):
    return ctx.workspace.dir / LEDGER


def _ledger(ctx) -> list[dict]:
    try:
        return json.loads(_ledger_path(ctx).read_text())
    except (OSError, ValueError):
        return []


def before(cfg, ctx) -> None:
    """The test split is evaluated once: a second look needs --force (and is recorded)."""
    looks = _ledger(ctx)
    if looks and not ctx.options.force:
        last = looks[-1]
        raise GateError([f"the test split of '{cfg.name}' was already evaluated on {last['at']} "
                         f"(test score {last['test_score']:.4f}); every further look leaks test into your choices",
                         "pass --force to look again (it is recorded in the record and runs/<name>/test_looks.json)"])


# ----------------------------------------------------------------------------- members


@dataclass
class Member:
    name: str
    source: str                      # tune | regularize | seed | long | retrained
    overrides: dict[str, Any]
    seed: int
    model: nn.Module
    origin: Optional[str] = None     # the upstream checkpoint it was loaded from
    info: dict[str, Any] = field(default_factory=dict)
    val_out: Optional[torch.Tensor] = None
    val: float = math.nan
    val_loss: float = math.nan
    health: list = field(default_factory=list)   # the health checks of the run that trained it here (if any)


def _load_member(cfg, ds, overrides: dict, path, device) -> nn.Module:
    from recipe.engine import train as E
    from recipe.models import create

    model = create(cfg.with_overrides(overrides), ds, cfg.seed)
    state = E.load_checkpoint(path)
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise RecipeError(f"{path}: the checkpoint does not fit the model its overrides describe "
                          f"({str(e).splitlines()[0][:160]}); rerun the stage that wrote it") from None
    return model.to(device)


def gather_members(cfg, ctx, ds) -> list[Member]:
    """Top-k tuned trials, regularize's model, seed re-trains and the long run of the best configuration."""
    from recipe.engine import train as E
    from recipe.models import create

    tune_art = ctx.upstream_json("tune", "tune.json")
    chosen = ctx.upstream_json("regularize", "chosen.json")
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    members: list[Member] = []
    for entry in tune_art["top"][: cfg.ensemble.top_k]:
        overrides = entry["overrides"]
        rel = entry.get("checkpoint")
        if rel and ctx.upstream_path("tune", rel).exists():
            model = _load_member(cfg, ds, overrides, ctx.upstream_path("tune", rel), ctx.device)
            members.append(Member(f"trial {entry['trial']}", "tune", overrides, cfg.seed, model, f"tune/{rel}"))
        else:   # trained on another machine (shared storage): retrain from its overrides and seed
            mcfg = cfg.with_overrides(overrides)
            model = create(mcfg, ds, cfg.seed).to(ctx.device)
            r = E.fit_from_config(model, tr, va, mcfg, ds, metrics_path=_curve(ctx, f"trial_{entry['trial']}"))
            members.append(Member(f"trial {entry['trial']}", "retrained", overrides, cfg.seed, model, health=r.health))
    members.append(Member(f"regularize ({chosen.get('variant', 'chosen')})", "regularize", chosen["overrides"],
                          (chosen.get("seeds") or [cfg.seed])[0],   # chosen.pt holds the first seed's model
                          _load_member(cfg, ds, chosen["overrides"], ctx.upstream_path("regularize",
                                                                                                "chosen.pt"),
                                                 ctx.device), "regularize/chosen.pt"))
    best = tune_art.get("best_overrides") or tune_art["top"][0]["overrides"]   # tune.noise's choice among the top
    bcfg = cfg.with_overrides(best)
    for i in range(cfg.ensemble.seeds):
        seed = cfg.seed + 1 + i
        model = create(bcfg, ds, seed).to(ctx.device)
        r = E.fit_from_config(model, tr, va, bcfg, ds, seed=seed, metrics_path=_curve(ctx, f"seed_{seed}"))
        members.append(Member(f"best config, seed {seed}", "seed", best, seed, model,
                              info={"epochs": len(r.history), "seconds": round(r.seconds, 2)}, health=r.health))
    if cfg.ensemble.long_epochs > 1:
        epochs = bcfg.train.epochs * cfg.ensemble.long_epochs
        patience = max(5, bcfg.train.epochs // 2)
        long = cfg.with_overrides({**best, "train.epochs": epochs,
                                   "train.early_stopping": {"patience": patience, "metric": "val_loss"}})
        model = create(long, ds, cfg.seed).to(ctx.device)
        r = E.fit_from_config(model, tr, va, long, ds, metrics_path=_curve(ctx, "long"))
        members.append(Member(f"best config, {cfg.ensemble.long_epochs}x epochs", "long",
                              {**best, "train.epochs": epochs}, cfg.seed, model,
                              info={"max_epochs": epochs, "epochs_run": len(r.history), "best_epoch": r.best_epoch,
                                    "stopped": r.stopped, "patience": patience}, health=r.health))
    return members


def _curve(ctx, run: str):
    """Where a run trained here writes its curve: ensemble/runs/<run>/metrics.jsonl."""
    return ctx.dir / "runs" / run / "metrics.jsonl"


def drop_duplicates(members: list[Member]) -> tuple[list[Member], dict[str, str]]:
    """Members whose val outputs match an earlier member's are the same model: keep the first."""
    kept: list[Member] = []
    same: dict[str, str] = {}
    for m in members:
        twin = next((k for k in kept if k.val_out.shape == m.val_out.shape
                     and float((k.val_out - m.val_out).abs().max()) < SAME_OUTPUTS), None)
        if twin is None:
            kept.append(m)
        else:
            same[m.name] = twin.name
    return kept, same


# ----------------------------------------------------------------------------- combining and selecting


def combine(outputs: list[torch.Tensor], weights, task: str) -> torch.Tensor:
    """Weighted average of probabilities (classification; returns log-probs) or of predictions."""
    w = [float(v) for v in weights]
    if task == "classification":
        probs = sum(wi * torch.softmax(o.float(), 1) for wi, o in zip(w, outputs) if wi > 0)
        return torch.log(probs.clamp_min(1e-12))
    return sum(wi * o.reshape(len(o), -1)[:, 0] for wi, o in zip(w, outputs) if wi > 0)


def row_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> np.ndarray:
    """Per-row negative log-likelihood (classification) or squared error, as float64."""
    if task == "classification":
        return torch.nn.functional.cross_entropy(out, y, reduction="none").double().cpu().numpy()
    return ((out.reshape(len(out), -1)[:, 0] - y) ** 2).double().cpu().numpy()


def row_correct(out: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (out.argmax(1) == y).double().cpu().numpy()


def _score(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int) -> dict[str, Any]:
    from recipe.engine.train import score_outputs

    return score_outputs(out, y, task, num_classes)


def _key(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int, floor: float = math.inf) -> tuple:
    s = _score(out, y, task, num_classes)
    return min(s["score"], floor), -s["loss"]


def greedy_select(outputs: list[torch.Tensor], y, task: str, num_classes: int) -> np.ndarray:
    """Caruana et al. 2004: start from the best few members, add members with replacement, keep the best prefix.

    The key is the loss (log-loss / squared error: smooth, and what averaging improves) among ensembles whose
    task score is at least the best member's; below that floor, the score decides. The start includes the
    best member alone, so the result is never below the best member on val.
    """
    m = len(outputs)
    keys = [_key(o, y, task, num_classes) for o in outputs]
    floor = max(k[0] for k in keys)
    order = sorted(range(m), key=lambda i: keys[i], reverse=True)
    counts, best_key = None, None
    for n in range(1, min(GREEDY_INIT, m) + 1):          # sorted initialisation: the best prefix of size <= 3
        trial = np.zeros(m)
        trial[order[:n]] = 1
        k = _key(combine(outputs, trial / trial.sum(), task), y, task, num_classes, floor)
        if best_key is None or k > best_key:
            counts, best_key = trial, k
    current = counts.copy()
    for _ in range(GREEDY_STEPS):
        step_i, step_key = None, None
        for i in range(m):
            trial = current.copy()
            trial[i] += 1
            k = _key(combine(outputs, trial / trial.sum(), task), y, task, num_classes, floor)
            if step_key is None or k > step_key:
                step_i, step_key = i, k
        current[step_i] += 1
        if step_key > best_key:
            counts, best_key = current.copy(), step_key
    return counts / counts.sum()


BOOTSTRAP_CHUNK = 2 ** 22    # resampled row indices held at once (32 MB of int64), whatever the split's size


def resampled(n_rows: int, seed: int, stat, n: int = BOOTSTRAP) -> np.ndarray:
    """stat(idx) for n bootstrap resamples of n_rows rows: idx is (k, n_rows), stat returns (k,).

    The resamples are drawn in chunks of BOOTSTRAP_CHUNK indices, so 1M test rows need tens of MB rather than
    the 8 GB of one (n, n_rows) index array; the random stream, and so every interval, is the same either way."""
    rng = np.random.default_rng(seed)
    per = max(1, BOOTSTRAP_CHUNK // max(n_rows, 1))
    return np.concatenate([stat(rng.integers(0, n_rows, (min(per, n - start), n_rows)))
                           for start in range(0, n, per)])


def paired_bootstrap(delta: np.ndarray, seed: int, n: int = BOOTSTRAP) -> tuple[float, float, float]:
    """Mean of per-row differences with its 95% bootstrap interval (rows resampled together)."""
    means = resampled(len(delta), seed, lambda idx: delta[idx].mean(1), n)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(delta.mean()), float(lo), float(hi)


def _lower(delta: np.ndarray, seed: int) -> float:
    """One-sided 95% lower bound of the mean difference: "the ensemble is better" is a one-sided claim."""
    means = resampled(len(delta), seed, lambda idx: delta[idx].mean(1))
    return float(np.percentile(means, 5))


def bootstrap_score(out: torch.Tensor, y: torch.Tensor, task: str, seed: int) -> tuple[float, float]:
    """95% bootstrap interval of accuracy or R² on a split."""
    if task == "classification":
        correct = row_correct(out, y)
        stats = resampled(len(y), seed, lambda idx: correct[idx].mean(1))
    else:
        loss, yv = row_loss(out, y, task), y.double().cpu().numpy()

        def r2(idx):
            sq, var = loss[idx].mean(1), yv[idx].var(1)
            return np.where(var > 0, 1 - sq / np.where(var > 0, var, 1), np.nan)

        stats = resampled(len(y), seed, r2)
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def disagreement(outputs: list[torch.Tensor], task: str) -> float:
    """Mean pairwise share of val rows where two members predict differently (classification) or the mean
    absolute difference of their predictions (regression, standardized units)."""
    if len(outputs) < 2:
        return 0.0
    vals = []
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            if task == "classification":
                vals.append(float((outputs[i].argmax(1) != outputs[j].argmax(1)).float().mean()))
            else:
                vals.append(float((outputs[i].reshape(-1) - outputs[j].reshape(-1)).abs().mean()))
    return float(np.mean(vals))


def check_gain(members: list[Member], same: dict[str, str], weights: np.ndarray, ens_out: torch.Tensor,
               y: torch.Tensor, task: str, num_classes: int, method: str, seed: int) -> C.Check:
    """ensemble.gain: the ensemble must beat the best single member on val beyond bootstrap noise."""
    best = max(members, key=lambda m: (m.val, -m.val_loss))
    ens = _score(ens_out, y, task, num_classes)
    used = [f"{m.name} ×{w:.2f}" for m, w in zip(members, weights) if w > 0]
    spread = disagreement([m.val_out for m in members], task)
    ev: dict[str, Any] = {
        "ensemble_val": round(ens["score"], 4), "best_member": best.name, "best_member_val": round(best.val, 4),
        "gain": round(ens["score"] - best.val, 4), "method": method, "weights": used,
        "members": {m.name: round(m.val, 4) for m in members}, "distinct_members": len(members),
        "disagreement": round(spread, 4),
    }
    if same:
        ev["same_model"] = same
    # paired bootstrap over val rows: the ensemble and the best member are scored on the same rows
    loss_delta = row_loss(best.val_out, y, task) - row_loss(ens_out, y, task)    # > 0: ensemble better
    lmean, llo, lhi = paired_bootstrap(loss_delta, seed)
    lbound = _lower(loss_delta, seed)
    ev["loss_gain"] = {"mean": round(lmean, 5), "ci95": [round(llo, 5), round(lhi, 5)],
                       "lower_bound_95": round(lbound, 5),
                       "unit": "nll per row" if task == "classification" else "squared error per row (std units)"}
    beyond = lbound > 0
    why = f"its {'log-loss' if task == 'classification' else 'squared error'} is lower by {lmean:.4f} " \
          f"(one-sided 95% bound {lbound:.4f} > 0)"
    if task == "classification":
        acc_delta = row_correct(ens_out, y) - row_correct(best.val_out, y)
        amean, alo, ahi = paired_bootstrap(acc_delta, seed + 1)
        abound = _lower(acc_delta, seed + 1)
        ev["accuracy_gain"] = {"mean": round(amean, 4), "ci95": [round(alo, 4), round(ahi, 4)],
                               "lower_bound_95": round(abound, 4)}
        if abound > 0:
            beyond, why = True, f"its accuracy is higher by {amean:.4f} (one-sided 95% bound {abound:.4f} > 0)"
        if ens["score"] < best.val:        # never trade the task metric for a lower loss
            beyond = False
    ev["note"] = "selected and measured on val: the gain is optimistic; the test numbers are not"
    if len(members) == 1 or (task == "classification" and spread == 0.0 and not beyond):
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
                      f"{best.name} (val {best.val:.4f}) beyond bootstrap noise", ev,
                      "Ship the single best model, or add diverse members (ensemble.seeds, more tune.trials).")
    return C.make("ensemble.gain", "pass", f"ensemble of {len(used)} beats {best.name} on val beyond noise: {why}", ev)


# ----------------------------------------------------------------------------- distillation


class Tempered(nn.Module):
    """The student as trained on soft targets: logits divided by the temperature."""

    def __init__(self, student: nn.Module, temperature: float):
        super().__init__()
        self.student, self.temperature = student, temperature

    def forward(self, x):
        return self.student(x) / self.temperature


def distill(cfg, ctx, ds, best: Member, members: list[Member], weights) -> tuple[nn.Module, dict[str, Any]]:
    """One student of the best member's size trained on the ensemble's soft targets (train rows only)."""
    from recipe.engine import train as E
    from recipe.engine.monitors import compact
    from recipe.models import create

    tr, va = ctx.tensors("train"), ctx.tensors("val")
    precision = cfg.train.precision
    teacher = combine([E.predict(m.model, tr.x, precision=precision) for m in members], weights, ds.task)  # (N, C) or (N,)
    scfg = cfg.with_overrides(best.overrides)
    student = create(scfg, ds, cfg.seed + 1000).to(ctx.device)
    if ds.task == "classification":
        soft = torch.softmax(teacher / TEMPERATURE, 1)                                  # (N, C) soft targets
        target, net = E.Tensors(tr.x, soft), Tempered(student, TEMPERATURE)
    else:
        target, net = E.Tensors(tr.x, teacher.float()), student
    r = E.fit_from_config(net, target, va, scfg, ds, eval_train=False, augment=None,
                          metrics_path=_curve(ctx, "student"))
    info = {"temperature": TEMPERATURE if ds.task == "classification" else None, "size_of": best.name,
            "epochs": len(r.history), "seconds": round(r.seconds, 2), "stopped": r.stopped,
            "overrides": best.overrides, "transfer_set": "train rows", "health": compact(r.health)}
    return student.eval(), info


def inference_cost(models: list[nn.Module], x: torch.Tensor, precision: str = "auto") -> dict[str, float]:
    """Parameters and measured milliseconds per 1000 rows (best of 3 passes over x)."""
    from recipe.engine.train import predict

    params = sum(sum(p.numel() for p in m.parameters()) for m in models)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for m in models:
            predict(m, x, precision=precision)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"parameters": int(params), "ms_per_1000_rows": round(1000 * min(times) * 1000 / max(len(x), 1), 3)}


# ----------------------------------------------------------------------------- the one look at test


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
        precision = tp / predicted if predicted else math.nan
        recall = tp / support if support else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
        out.append({"class": name, "precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
                    "support": int(support)})
    return out


def _r(v: float, nd: int = 4) -> Optional[float]:
    return round(float(v), nd) if math.isfinite(v) else None


def evaluate_test(cfg, ctx, ds, final_out: torch.Tensor, ty: torch.Tensor, others: dict[str, torch.Tensor]):
    """Scores, interval, per-class table, confusion matrix and calibration of the final model on test."""
    from recipe import plots

    s = _score(final_out, ty, ds.task, ds.num_classes)
    lo, hi = bootstrap_score(final_out, ty, ds.task, cfg.seed)
    result: dict[str, Any] = {"score": s["score"], "ci95": [lo, hi], "loss": s["loss"], "rows": len(ty),
                              "metric": "accuracy" if ds.task == "classification" else "R²",
                              "others": {k: _score(o, ty, ds.task, ds.num_classes)["score"] for k, o in others.items()}}
    if ds.task == "classification":
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
    else:
        std, mean = ds.target_stats["std"], ds.target_stats["mean"]
        pred = final_out.reshape(-1).cpu().numpy() * std + mean
        true = ty.cpu().numpy() * std + mean
        result["rmse"] = float(np.sqrt(np.mean((pred - true) ** 2)))
        ctx.artifacts.figure("predicted_vs_true.png", plots.predicted_vs_true(pred, true))
    return result


def check_test(result: dict[str, Any], ens_val: float, final: str, looks_before: int,
               student: Optional[dict]) -> C.Check:
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
    if student:
        ev["student"] = {"val": round(student["val"], 4), "test": round(student["test"], 4),
                         "temperature": student.get("temperature")}
    look = "second look (forced, recorded)" if looks_before else "computed once"
    title = f"{final.replace('_', ' ')}: test {metric} {result['score']:.4f} (95% CI {lo:.4f}–{hi:.4f}), {look}"
    if ens_val > hi:
        return C.make("ensemble.test", "warn", title + f"; below val {ens_val:.4f}: val was overfit by selection", ev,
                      "Expect the test number in production; the val number is optimistic after tuning.")
    if "ece" in result and result["ece"] > 0.1:
        return C.make("ensemble.test", "warn", title + f"; poorly calibrated (ECE {result['ece']:.3f})", ev,
                      "Do not read the probabilities as confidences: calibrate them (temperature scaling on val).")
    return C.make("ensemble.test", "pass", title, ev)


# ----------------------------------------------------------------------------- the stage


def run(cfg, ctx) -> StageResult:
    from recipe.engine import train as E

    ds = ctx.data()
    va = ctx.tensors("val")
    task, k = ds.task, ds.num_classes
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
        best = max(members, key=lambda m: (m.val, -m.val_loss))
        checks = [check_gain(members, same, weights, ens_val_out, va.y, task, k, method, cfg.seed)]
        used = [(m, w) for m, w in zip(members, weights) if w > 0]
        bar.update(2)
        student, student_info = None, None
        if cfg.ensemble.distill:
            student, student_info = distill(cfg, ctx, ds, best, [m for m, _ in used], [w for _, w in used])
            sv = _score(E.predict(student, va.x, precision=precision), va.y, task, k)
            student_info["val"] = sv["score"]
            bar.update(3)
        cost = {"ensemble": inference_cost([m.model for m, _ in used], va.x, precision),
                "best_single": inference_cost([best.model], va.x, precision)}
        if student is not None:
            cost["student"] = inference_cost([student], va.x, precision)
            student_info["cost"] = cost["student"]
        # the model predict applies: the student when asked for, else the ensemble only where it earned its cost
        final = "student" if student is not None else ("ensemble" if checks[0].status != "fail" else "best_single")
        # ---- the one look at the test split: every choice above was made on val
        looks_before = len(_ledger(ctx))
        test = ds.open_test("ensemble.test")
        tx = torch.from_numpy(np.ascontiguousarray(ds.normalize(test.x))).to(ctx.device)
        ty = torch.from_numpy(np.ascontiguousarray(ds.target(test.y))).to(ctx.device)
        test_outs = [E.predict(m.model, tx, precision=precision) for m, _ in used]
        ens_test_out = combine(test_outs, [w for _, w in used], task)
        single_out = E.predict(best.model, tx, precision=precision)
        others = {"best_single": single_out}
        if final == "student":
            others["ensemble"] = ens_test_out
            student_out = E.predict(student, tx, precision=precision)
            final_out = torch.log_softmax(student_out, 1) if task == "classification" else student_out
        elif final == "best_single":
            others["ensemble"] = ens_test_out
            final_out = torch.log_softmax(single_out, 1) if task == "classification" else single_out
        else:
            final_out = ens_test_out
        result = evaluate_test(cfg, ctx, ds, final_out, ty, others)
        if student is not None:
            student_info["test"] = result["score"]
        final_val = {"student": (student_info or {}).get("val"), "best_single": best.val}.get(final, ens_val["score"])
        checks.append(check_test(result, final_val, final, looks_before, student_info))
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
        "target_column": cfg.data.target, "final": final, "method": method, "members": saved,
        "candidates": candidates, "same_model": same, "best_member": best.name,
        "best": {"checkpoint": "best.pt", "name": best.name, "overrides": best.overrides, "val": best.val},
        "val": ens_val["score"], "best_single_val": best.val, "test_metric": result["metric"],
        "test": result["score"], "test_ci95": result["ci95"],
        "best_single_test": result["others"]["best_single"], "test_detail": test_json, "student": student_info,
        "inference_cost": cost, "data_fingerprint": ds.fingerprint,
    })
    looks = _ledger(ctx) + [{"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "test_score": result["score"], "fingerprint": ds.fingerprint,
                             "forced": bool(ctx.options.force)}]
    atomic_write_json(_ledger_path(ctx), looks)
    lo, hi = result["ci95"]
    metric = result["metric"]
    summary = (f"ensemble of {len(saved)} ({method}) val {ens_val['score']:.4f} vs best single {best.val:.4f}; "
               f"final model: {final}; test {metric} {result['score']:.4f} [{lo:.4f}, {hi:.4f}] "
               f"(best single {result['others']['best_single']:.4f})")
    metrics = {"val": ens_val["score"], "best_single_val": best.val, "test": result["score"], "test_ci95": [lo, hi],
               "best_single_test": result["others"]["best_single"], "members": len(saved), "final": final,
               "inference_cost": cost}
    if "ece" in result:
        metrics["ece"] = result["ece"]
    if student_info:
        metrics["student"] = {"val": student_info["val"], "test": student_info["test"],
                              "temperature": student_info["temperature"]}
    from recipe.engine.monitors import worst_per_check

    trained_here = [(m.name, m.health) for m in gathered if m.health]
    if student_info:
        trained_here.append(("student", student_info["health"]))
    return StageResult(checks, metrics=metrics, summary=summary,
                       extra={"test_looks": len(looks), "second_look": looks_before > 0,
                              "health": worst_per_check(trained_here)})
