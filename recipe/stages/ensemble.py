"""Stage 6: squeeze out the rest (ensemble of the top tuned models), then touch the test split once."""
from __future__ import annotations

import math
import shutil
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from recipe import checks as C
from recipe.errors import GateError
from recipe.runner import StageResult
from recipe.workspace import atomic_write_json

GREEDY_STEPS = 25        # Caruana et al. 2004: forward selection with replacement, best prefix kept
BOOTSTRAP = 1000
LEDGER = "test_looks.json"


def _ledger_path(ctx):
    return ctx.workspace.dir / LEDGER


def _ledger(ctx) -> list[dict]:
    import json

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


def _members(cfg, ctx, ds, tune_art) -> list[dict[str, Any]]:
    from recipe.engine import train as E
    from recipe.models import create

    members = []
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    for entry in tune_art["top"]:
        mcfg = cfg.with_overrides(entry["overrides"])
        model = create(mcfg, ds, cfg.seed)
        source = "checkpoint"
        if entry.get("checkpoint") and ctx.upstream_path("tune", entry["checkpoint"]).exists():
            state = E.load_checkpoint(ctx.upstream_path("tune", entry["checkpoint"]))
            model.load_state_dict(state["state_dict"])
        else:   # trained on another machine (shared storage): retrain from its overrides and seed
            source = "retrained"
            E.fit_from_config(model.to(ctx.device), tr, va, mcfg, ds)
        members.append({"name": f"trial {entry['trial']}", "model": model.to(ctx.device), "overrides": entry["overrides"],
                        "source": source, "seed": cfg.seed})
    best = tune_art["top"][0]["overrides"]
    bcfg = cfg.with_overrides(best)
    for i in range(cfg.ensemble.seeds):
        seed = cfg.seed + 1 + i
        model = create(bcfg, ds, seed).to(ctx.device)
        E.fit_from_config(model, tr, va, bcfg, ds, seed=seed)
        members.append({"name": f"best, seed {seed}", "model": model, "overrides": best, "source": "seed", "seed": seed})
    if cfg.ensemble.long_epochs > 1:
        long = cfg.with_overrides({**best, "train.epochs": bcfg.train.epochs * cfg.ensemble.long_epochs})
        model = create(long, ds, cfg.seed).to(ctx.device)
        E.fit_from_config(model, tr, va, long, ds)
        members.append({"name": f"best, {cfg.ensemble.long_epochs}x epochs", "model": model,
                        "overrides": {**best, "train.epochs": long.train.epochs}, "source": "long", "seed": cfg.seed})
    return members


def _combine(outputs: list[torch.Tensor], weights: np.ndarray, task: str) -> torch.Tensor:
    """Weighted average of probabilities (classification) or predictions; returns log-probs / predictions."""
    w = torch.as_tensor(weights, dtype=torch.float32, device=outputs[0].device)
    if task == "classification":
        probs = sum(wi * torch.softmax(o, 1) for wi, o in zip(w, outputs))
        return torch.log(probs.clamp_min(1e-12))
    return sum(wi * o.reshape(len(o), -1)[:, 0] for wi, o in zip(w, outputs))


def _score(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int) -> dict[str, Any]:
    from recipe.engine.train import score_outputs

    return score_outputs(out, y, task, num_classes)


def greedy_select(outputs: list[torch.Tensor], y, task: str, num_classes: int) -> np.ndarray:
    """Forward selection with replacement on val (Caruana 2004); returns member weights (sum 1)."""
    counts = np.zeros(len(outputs))
    best_counts, best_key = None, None
    for _ in range(GREEDY_STEPS):
        step_best, step_key = None, None
        for i in range(len(outputs)):
            trial = counts.copy()
            trial[i] += 1
            s = _score(_combine(outputs, trial / trial.sum(), task), y, task, num_classes)
            key = (s["score"], -s["loss"])
            if step_key is None or key > step_key:
                step_best, step_key = i, key
        counts[step_best] += 1
        if best_key is None or step_key > best_key:
            best_counts, best_key = counts.copy(), step_key
    return best_counts / best_counts.sum()


def bootstrap_ci(correct_or_sq: np.ndarray, y: np.ndarray, task: str, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(correct_or_sq)
    stats = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        if task == "classification":
            stats.append(correct_or_sq[idx].mean())
        else:
            var = y[idx].var()
            stats.append(1 - correct_or_sq[idx].mean() / var if var > 0 else np.nan)
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def run(cfg, ctx) -> StageResult:
    from recipe.engine import train as E

    ds = ctx.data()
    tune_art = ctx.upstream_json("tune", "tune.json")
    va = ctx.tensors("val")
    with ctx.progress("ensemble", 4) as bar:
        members = _members(cfg, ctx, ds, tune_art)
        bar.update(1)
        val_out = [E.predict(m["model"], va.x) for m in members]
        for m, o in zip(members, val_out):
            m["val"] = _score(o, va.y, ds.task, ds.num_classes)["score"]
        if cfg.ensemble.method == "greedy":
            weights = greedy_select(val_out, va.y, ds.task, ds.num_classes)
        else:
            weights = np.full(len(members), 1 / len(members))
        ens_val = _score(_combine(val_out, weights, ds.task), va.y, ds.task, ds.num_classes)
        best_i = int(np.argmax([m["val"] for m in members]))
        bar.update(2)
        # ---- the one look at the test split
        test = ds.open_test("ensemble.test")
        tx = torch.from_numpy(np.ascontiguousarray(ds.normalize(test.x))).to(ctx.device)
        ty = torch.from_numpy(np.ascontiguousarray(ds.target(test.y))).to(ctx.device)
        test_out = [E.predict(m["model"], tx) for m in members]
        ens_test_out = _combine(test_out, weights, ds.task)
        ens_test = _score(ens_test_out, ty, ds.task, ds.num_classes)
        single_test = _score(test_out[best_i], ty, ds.task, ds.num_classes)
        if ds.task == "classification":
            per_row = (ens_test_out.argmax(1) == ty).float().cpu().numpy()
        else:
            per_row = ((ens_test_out - ty) ** 2).float().cpu().numpy()
        lo, hi = bootstrap_ci(per_row, ty.float().cpu().numpy(), ds.task, cfg.seed)
        bar.update(4)
    checks = []
    gain = ens_val["score"] - members[best_i]["val"]
    used = [members[i]["name"] for i in np.flatnonzero(weights)]
    ev = {"ensemble_val": round(ens_val["score"], 4), "best_member_val": round(members[best_i]["val"], 4),
          "best_member": members[best_i]["name"], "gain": round(gain, 4), "method": cfg.ensemble.method,
          "members_used": used, "weights": [round(float(w), 3) for w in weights],
          "note": "selected and measured on val: the gain is optimistic; the test score below is not"}
    if gain > 0:
        checks.append(C.make("ensemble.gain", "pass", f"ensemble of {len(used)} beats the best member on val by "
                             f"{gain:.4f}", ev))
    else:
        checks.append(C.make("ensemble.gain", "warn", f"ensemble no better than the best member on val ({gain:+.4f})",
                             ev, "Members are too alike: add seeds (ensemble.seeds) or more diverse trials; "
                                 "ship the single best model."))
    metric = "accuracy" if ds.task == "classification" else "R²"
    ev = {"test_score": round(ens_test["score"], 4), "ci95": [round(lo, 4), round(hi, 4)], "metric": metric,
          "best_single_test": round(single_test["score"], 4), "val_score": round(ens_val["score"], 4),
          "test_rows": len(test.y), "looks_before": len(_ledger(ctx))}
    if ds.task == "classification":
        ev["per_class"] = [round(v, 4) if math.isfinite(v) else None for v in ens_test["per_class"]]
    if ens_val["score"] > hi:
        checks.append(C.make("ensemble.test", "warn", f"test {metric} {ens_test['score']:.4f} (95% CI {lo:.4f}–{hi:.4f}) "
                             f"is below val {ens_val['score']:.4f}: val was overfit by selection", ev,
                             "Expect the test number in production; the val number is optimistic after tuning."))
    else:
        checks.append(C.make("ensemble.test", "pass", f"test {metric} {ens_test['score']:.4f} "
                             f"(95% CI {lo:.4f}–{hi:.4f}), computed once", ev))
    # artifacts: members (weights only) and everything predict needs
    saved = []
    for i, (m, w) in enumerate(zip(members, weights)):
        if w <= 0:
            continue
        rel = f"members/{i}.pt"
        E.save_checkpoint(ctx.artifacts.path(rel), m["model"], {"overrides": m["overrides"], "val": m["val"],
                                                                "name": m["name"]})
        ctx.artifacts.add(rel)
        saved.append({"checkpoint": rel, "weight": float(w), "overrides": m["overrides"], "name": m["name"],
                      "val": m["val"], "source": m["source"]})
    ctx.artifacts.json("ensemble.json", {
        "task": ds.task, "classes": ds.classes, "feature_names": ds.feature_names, "shape": list(ds.shape),
        "normalization": ds.norm, "encoding": ds.encoding, "target_stats": ds.target_stats,
        "members": saved, "method": cfg.ensemble.method, "val": ens_val["score"], "test": ens_test["score"],
        "test_ci95": [lo, hi], "best_single_test": single_test["score"], "data_fingerprint": ds.fingerprint,
    })
    looks = _ledger(ctx) + [{"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "test_score": ens_test["score"], "fingerprint": ds.fingerprint,
                             "forced": bool(ctx.options.force)}]
    atomic_write_json(_ledger_path(ctx), looks)
    summary = (f"ensemble of {len(saved)} ({cfg.ensemble.method}) val {ens_val['score']:.4f}; "
               f"test {metric} {ens_test['score']:.4f} [{lo:.4f}, {hi:.4f}] (best single {single_test['score']:.4f})")
    return StageResult(checks, metrics={"val": ens_val["score"], "test": ens_test["score"], "test_ci95": [lo, hi],
                                        "best_single_test": single_test["score"], "members": len(saved)},
                       summary=summary, extra={"test_looks": len(looks)})
