"""Stage 6: squeeze out the rest (ensemble, leave it training, distill), then touch the test split once.

Members are the top tuned trials, regularize's model, optional seed re-trains of the best configuration and
optional "leave it training" runs. Every choice (method, weights) is made on val; the sealed test split is
opened once per record, after every choice, and evaluated with a bootstrap interval, per-class scores, a
confusion matrix and a calibration check.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from recipe import checks as C
from recipe.errors import RecipeError
from recipe.stage import StageResult
from recipe.stages.ensemble import look as L
from recipe.stages.ensemble import sealed_test as T
from recipe.stages.ensemble.gain import check_gain, disagreement, judged_text  # noqa: F401 (public names)
from recipe.stages.ensemble.distill import TEMPERATURE, check_student, distill  # noqa: F401 (TEMPERATURE: public name)
from recipe.stages.ensemble.sealed_test import calibration, check_test, evaluate_test, per_class  # noqa: F401 (public names)

before = T.check_before_stage   # the runner calls this before loading data: the ledger's gate

GREEDY_STEPS = 25        # Caruana et al. 2004: forward selection with replacement, best prefix kept
GREEDY_INIT = 3          # ... initialised with (up to) the best few members ("sorted initialisation")
BOOTSTRAP = 1000
SAME_OUTPUTS = 1e-6      # members whose val outputs differ by less than this are the same model


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


# ----------------------------------------------------------------------------- costs


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
            replaced_out = ens_val_out if final == "ensemble" else \
                (torch.log_softmax(best.val_out.float(), 1) if task == "classification" else best.val_out)
            verdict = check_student(student_val_out, replaced_out, final, va.y, task, k, cfg.seed)
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
                                                       "health": _health(gathered, student_info)})
        # ---- the one look at the test split: every choice above was made on val. A new look is on disk
        # (fsynced) before the rows are handed out; a rerun that rebuilt the same models reuses the recorded one
        look = L.take(cfg, ctx, ds, final, used, best, student)
        result, looks_before = look.result, look.before
        if student is not None:
            student_info["test"] = result["score"] if final == "student" else result["others"]["student"]
        final_val = {"student": (student_info or {}).get("val"), "best_single": best.val}.get(final, ens_val["score"])
        checks.append(T.check_test(result, final_val, final, looks_before, student_info, look.reused))
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
    if student_info:
        metrics["student"] = {"val": student_info["val"], "test": student_info["test"],
                              "temperature": student_info["temperature"]}
    extra = {"test_looks": looks, "second_look": looks_before > 0, "health": _health(gathered, student_info)}
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
    metric = "accuracy" if task == "classification" else "R²"
    return (f"ensemble of {n} ({method}): val {metric} {ens:.4f} vs best single {best:.4f}, "
            f"{judged_text(gain)}")
