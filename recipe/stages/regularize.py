"""Stage 4: diagnose bias vs variance, try each regularizer alone (with seed noise), keep what helps."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import yaml

from recipe import checks as C
from recipe.engine import train as E
from recipe.engine.monitors import compact, worst_per_check
from recipe.engine.runlog import run_folder
from recipe.models import create
from recipe.stage import StageResult
from recipe.stages.regularize_checks import (active_regularizers, beats, check_beats_baselines, check_mode,
                                             check_still_improving, check_too_strong, noise, pictures)

DROPOUT = 0.2
# L2 through the optimizer (coupled under Adam). Mild on purpose: at overfit-batch's learning rate on digits
# (6e-3) L2 of 3e-4 or 1e-3 already threw one Adam seed in three off (val 0.89-0.94, the others 0.99). Configs whose
# data invites memorizing set a stronger train.weight_decay (the planted high-variance case uses 3e-3).
WEIGHT_DECAY = 1e-4


@dataclass
class Variant:
    """One row of the ablation table: a rung's overrides trained with every seed."""

    name: str
    overrides: dict[str, Any]
    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    history: list[list[dict]] = field(default_factory=list)
    health: list[list[dict]] = field(default_factory=list)   # per seed: the run's health checks, compact
    models: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    note: str = ""
    delta: float = 0.0
    noise: float = 0.0                       # seed noise of the delta: a rung is kept only when delta > noise
    kept: bool = False

    @property
    def val_mean(self) -> float:
        return float(np.mean(self.val)) if self.val else math.nan

    @property
    def val_std(self) -> float:
        return float(np.std(self.val)) if len(self.val) > 1 else 0.0

    @property
    def train_mean(self) -> float:
        return float(np.mean(self.train)) if self.train else math.nan

    def row(self) -> dict[str, Any]:
        return {"variant": self.name, "overrides": self.overrides, "train": round(self.train_mean, 4),
                "train_std": round(float(np.std(self.train)) if len(self.train) > 1 else 0.0, 4),
                "val": round(self.val_mean, 4), "val_std": round(self.val_std, 4), "seeds": len(self.val),
                "delta": round(self.delta, 4), "noise": round(self.noise, 4), "kept": self.kept, "note": self.note}


@dataclass
class Spec:
    """A variant to train with every seed: overrides, plus an optional train subset (learning curve)."""

    name: str
    overrides: dict[str, Any]
    subset: Optional[np.ndarray] = None      # row positions in train (learning curve)
    keep: bool = False                       # return the trained models
    seeds: Optional[list[int]] = None        # default: the trainer's seeds


def _fit_one(cfg, ds, tr, va, device, task: dict) -> dict[str, Any]:
    """One (variant, seed) run through the one engine; the unit of work of a worker process."""
    vcfg = cfg.with_overrides(task["overrides"])
    train = tr if task["subset"] is None else tr.subset(torch.as_tensor(task["subset"], device=tr.x.device))
    model = create(vcfg, ds, task["seed"]).to(device)
    r = E.fit_from_config(model, train, va, vcfg, ds, seed=task["seed"], metrics_path=task.get("metrics_path"))
    out = {"train": r.final_train.get("score", math.nan), "val": r.best.get("score", math.nan),
           "history": r.history, "health": compact(r.health)}
    if task["keep"]:
        out["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(raw: dict, base_dir: str, device: str, jobs: int) -> None:
    from recipe import threads
    from recipe.config import validate
    from recipe.data import load

    threads.set_share(jobs)      # each of the jobs processes gets its share of the cores, not all of them
    threads.apply_default()
    cfg = validate(raw)
    cfg._base_dir = __import__("pathlib").Path(base_dir)
    ds = load(cfg)
    dev = E.pick_device(device)
    _WORKER.update(cfg=cfg, ds=ds, device=dev, tr=E.to_tensors(ds, ds.train, dev), va=E.to_tensors(ds, ds.val, dev))


def _worker_task(task: dict) -> dict[str, Any]:
    w = _WORKER
    return _fit_one(w["cfg"], w["ds"], w["tr"], w["va"], w["device"], task)


class Trainer:
    """Runs variants of the base config with every seed on the same data and budget; `jobs` worker
    processes train independent (variant, seed) runs in parallel, each with its share of the threads."""

    def __init__(self, cfg, ctx, base: dict[str, Any], progress, jobs: int = 1):
        self.cfg, self.ctx, self.base, self.progress = cfg, ctx, base, progress
        self.ds = ctx.data()
        self.tr, self.va = ctx.tensors("train"), ctx.tensors("val")
        self.seeds = [cfg.seed + i for i in range(cfg.regularize.seeds)]
        self.runs = 0
        self.health_runs: list[tuple[str, list[dict]]] = []      # every run's health checks, for the record
        self.jobs = jobs
        self.pool = None

    def __enter__(self):
        if self.jobs > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            from recipe import threads

            threads.configure_env()      # the spawned workers import torch with OpenMP told not to spin
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                            initargs=(self.cfg.model_dump(mode="json"), str(self.cfg.base_dir),
                                                      self.ctx.options.device, self.jobs))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def config(self, overrides: dict[str, Any]):
        return self.cfg.with_overrides({**self.base, **overrides})

    def run_all(self, specs: list[Spec]) -> list[Variant]:
        tasks = [(i, {"overrides": {**self.base, **sp.overrides}, "seed": seed, "subset": sp.subset, "keep": sp.keep,
                      "metrics_path": str(self.ctx.dir / "runs" / run_folder(f"{sp.name}_seed{seed}")
                                          / "metrics.jsonl")})
                 for i, sp in enumerate(specs) for seed in (sp.seeds or self.seeds)]
        if self.pool is None:
            results = []
            for _, t in tasks:
                results.append(_fit_one(self.cfg, self.ds, self.tr, self.va, self.ctx.device, t))
                self.progress.advance()
        else:
            futures = [self.pool.submit(_worker_task, t) for _, t in tasks]
            results = []
            for f in futures:
                results.append(f.result())
                self.progress.advance()
        variants = [Variant(sp.name, sp.overrides) for sp in specs]
        for (i, t), res in zip(tasks, results):
            v = variants[i]
            v.seeds.append(t["seed"])
            v.train.append(res["train"])
            v.val.append(res["val"])
            v.history.append(res["history"])
            v.health.append(res["health"])
            self.health_runs.append((f"{v.name} seed {t['seed']}", res["health"]))
            if "state_dict" in res:
                model = create(self.config(v.overrides), self.ds, t["seed"])
                model.load_state_dict(res["state_dict"])
                v.models.append(model.to(self.ctx.device))
            self.runs += 1
        return variants

    def run(self, name: str, overrides: dict[str, Any], subset=None, keep_models: bool = False,
            seeds: Optional[list[int]] = None) -> Variant:
        return self.run_all([Spec(name, overrides, subset, keep_models, seeds)])[0]

    def fresh_seeds(self) -> list[int]:
        """As many seeds again, none used by the ladder: a re-run on them is an independent replicate."""
        return [s + len(self.seeds) for s in self.seeds]


def bias_variance(ref: Variant, target_error: float, th) -> tuple[C.Check, str]:
    train_err, val_err = 1 - ref.train_mean, 1 - ref.val_mean
    bias, variance = train_err - target_error, val_err - train_err
    hb, hv = bias > th["high_bias"], variance > th["high_variance"]
    verdict = "both" if hb and hv else "high bias" if hb else "high variance" if hv else "fine"
    ev = {"train_error": round(train_err, 4), "val_error": round(val_err, 4), "target_error": target_error,
          "avoidable_bias": round(bias, 4), "variance": round(variance, 4), "verdict": verdict,
          "high_bias": th["high_bias"], "high_variance": th["high_variance"]}
    advice = {
        "high bias": "Bigger model or train longer first; more data or regularization will not help a model that "
                     "cannot fit train.",
        "high variance": "Regularize: the ladder below tries each remedy (more data first, then augmentation, ...).",
        "both": "Fit train first (bigger model, longer), then regularize.",
        "fine": "Train and val errors are close to the target: tune next.",
    }[verdict]
    status = "warn" if verdict in ("high bias", "both") else "pass"
    return C.make("regularize.bias-variance", status, f"{verdict}: avoidable bias {bias:.3f}, variance {variance:.3f}",
                  ev, advice), verdict


def _permutation_importance(model, va, ds, seed: int, precision: str) -> np.ndarray:
    g = torch.Generator(device=va.x.device).manual_seed(seed)
    base = E.evaluate(model, va, ds.task, ds.num_classes, precision=precision)["score"]
    imp = np.zeros(va.x.shape[1])
    for j in range(va.x.shape[1]):
        x = va.x.clone()
        x[:, j] = x[torch.randperm(len(x), generator=g, device=x.device), j]
        imp[j] = base - E.evaluate(model, E.Tensors(x, va.y), ds.task, ds.num_classes, precision=precision)["score"]
    return imp


def ladder_rungs(cfg, ds, base_cfg) -> dict[str, dict[str, Any]]:
    """Overrides for each rung, relative to overfit-batch's unregularized train-fit config.

    Strengths come from the experiment config when it sets them (model.dropout, train.weight_decay,
    train.early_stopping, data.augment), else from recipe's defaults."""
    hidden = list(base_cfg.model.hidden)
    epochs = base_cfg.train.epochs
    stopping = cfg.train.early_stopping.model_dump() if cfg.train.early_stopping else \
        {"patience": max(3, epochs // 6), "metric": "val_loss"}
    aug = list(cfg.data.augment) or (["shift", "noise"] if len(ds.shape) == 3 else ["noise"])
    larger = {"model.hidden": [h * 2 for h in hidden] or [64]}
    if base_cfg.model.kind == "linear":
        larger = {"model.kind": "mlp", "model.hidden": [64, 64]}
    return {
        "augment": {"data.augment": aug},
        "smaller_model": {"model.hidden": [max(4, h // 2) for h in hidden]},
        "smaller_batch": {"train.batch_size": max(8, base_cfg.train.batch_size // 2)},
        "dropout": {"model.dropout": cfg.model.dropout or DROPOUT},
        "weight_decay": {"train.weight_decay": cfg.train.weight_decay or WEIGHT_DECAY},
        "early_stopping": {"train.early_stopping": stopping},
        "larger_model": {**larger, "train.early_stopping": stopping},
        "train_longer": {"train.epochs": epochs * 2},   # high bias only: not a regularizer
    }


LEARNING_CURVE = (0.25, 0.5)


def learning_curve(points: dict[float, Variant], ref: Variant) -> dict[str, Any]:
    points = {**points, 1.0: ref}
    fr = sorted(points)
    errs = {f: 1 - points[f].val_mean for f in fr}
    # power law through the last two points: err(2n) ~ err(n) * (err(n) / err(n/2))
    slope = math.log(max(errs[1.0], 1e-6) / max(errs[0.5], 1e-6)) / math.log(2)
    predicted = errs[1.0] * 2 ** slope
    gain = errs[1.0] - predicted
    return {"fractions": fr, "val_error": [errs[f] for f in fr], "val_std": [points[f].val_std for f in fr],
            "slope": slope, "predicted_error_2x": predicted, "predicted_gain_2x": gain,
            "more_data_helps": bool(gain > max(ref.val_std, 0.002))}


def run(cfg, ctx) -> StageResult:
    ds = ctx.data()
    fit = ctx.upstream_json("overfit-batch", "train_fit.json")
    baselines = ctx.upstream_json("baseline", "baselines.json")
    # overfit-batch's LR, unregularized: no dropout, weight decay, early stopping or augmentation (a record
    # written before augmentation counted as a regularizer lacks the key: the reference trains without it too)
    base = {"data.augment": [], **fit["overrides"]}
    rcfg = cfg.regularize
    th = ctx.thresholds
    ladder = list(rcfg.ladder)
    base_cfg = cfg.with_overrides(base)
    rungs = ladder_rungs(cfg, ds, base_cfg)
    jobs = ctx.options.jobs or rcfg.jobs
    budget = rcfg.budget_seconds
    started = time.perf_counter()
    checks: list[C.Check] = []
    diagnostics: dict[str, Any] = {}
    skipped: list[str] = []
    planned = (2 + len(ladder) + 3) * rcfg.seeds
    with ctx.progress(f"regularize ({jobs} job{'s' if jobs > 1 else ''})", planned) as bar, \
            Trainer(cfg, ctx, base, bar, jobs) as trainer:
        ref = trainer.run("reference", {}, keep_models=True)
        variants: list[Variant] = [ref]
        bv, verdict = bias_variance(ref, rcfg.target_error, th("regularize.bias-variance"))
        checks.append(bv)
        if verdict == "high bias":
            # regularizers cannot help a model that does not fit train: a bigger model or longer training
            ladder = [r for r in ladder if r in ("learning_curve", "larger_model")] + ["train_longer"]
            skipped.append("regularizers skipped: the reference model underfits (high bias)")
        specs: list[Spec] = []
        n = len(trainer.tr)
        perm = np.random.default_rng(cfg.seed).permutation(n)
        for rung in ladder:
            if rung == "learning_curve":
                specs += [Spec(f"learning_curve_{int(f * 100)}", {}, subset=perm[: max(8, int(f * n))])
                          for f in LEARNING_CURVE]
            elif rung == "fewer_features":
                imp = _permutation_importance(ref.models[0], trainer.va, ds, cfg.seed, base_cfg.train.precision)
                drop = np.argsort(imp)[: max(1, len(imp) // 4)]
                drop = drop[imp[drop] <= 0]
                if len(drop) == 0:
                    skipped.append("fewer_features: every feature matters on val")
                    continue
                diagnostics["fewer_features"] = {"dropped": [ds.feature_names[j] for j in drop],
                                                 "importance": {ds.feature_names[j]: float(imp[j])
                                                                for j in np.argsort(-imp)[:10]}}
                # an ordinary override, so the rung can be kept (and predict applies it) like any other
                rungs["fewer_features"] = {"model.drop_inputs": sorted(int(j) for j in drop)}
                specs.append(Spec("fewer_features", rungs["fewer_features"]))
            else:
                specs.append(Spec(rung, rungs[rung]))
        # independent rungs run as one batch (in parallel with --jobs), within the time budget
        done: list[Variant] = []
        for i in range(0, len(specs), max(1, jobs)):
            if budget is not None and time.perf_counter() - started > budget:
                skipped += [f"{sp.name}: regularize.budget_seconds ({budget:g}s) spent" for sp in specs[i:]]
                break
            done += trainer.run_all(specs[i:i + max(1, jobs)])
        curve = {float(v.name.rsplit("_", 1)[1]) / 100: v for v in done if v.name.startswith("learning_curve_")}
        if curve:
            diagnostics["learning_curve"] = learning_curve(curve, ref)
        for v in done:
            if v.name == "fewer_features":
                dropped = diagnostics["fewer_features"]["dropped"]
                v.note = "zeroes " + ", ".join(dropped[:6]) + (" …" if len(dropped) > 6 else "") + \
                         " (model.drop_inputs); to remove them from the data, use data.features"
        variants += [v for v in done if not v.name.startswith("learning_curve_")]
        # keep what beats noise; build the combination greedily from the best single rung
        kept = [v for v in variants[1:] if v.name in rungs and beats(v, ref)]
        kept.sort(key=lambda v: -v.val_mean)
        best = kept[0] if kept else ref
        combo_steps = []
        for v in kept[1:]:
            merged = {**best.overrides, **v.overrides}
            if merged == best.overrides:
                continue
            trial = trainer.run("+".join([best.name, v.name]), merged)
            combo_steps.append(trial.row())
            variants.append(trial)
            if beats(trial, best):
                best = trial
        # the best of several noisy rungs is biased upward (winner's curse): verify it on fresh seeds
        chosen = ref if best is ref else trainer.run(f"chosen ({best.name})", best.overrides, keep_models=True,
                                                     seeds=trainer.fresh_seeds())
        verified = chosen is ref or beats(chosen, ref)
        if chosen is not ref:
            variants.append(chosen)
        runs_done = trainer.runs
        mode_check = check_mode(cfg, chosen, trainer, ds, th("regularize.mode"))
    best_dumb = baselines["best_dumb_val"]
    dumb_error = 1 - best_dumb
    for v in variants:
        v.delta = v.val_mean - ref.val_mean
        v.noise = 0.0 if v is ref else noise(v, ref)
        v.kept = v in kept or v is chosen
    table = [v.row() for v in variants]
    ev = {"reference_val": round(ref.val_mean, 4), "reference_std": round(ref.val_std, 4), "seeds": rcfg.seeds,
          "kept": [v.name for v in kept], "chosen": best.name, "chosen_val": round(chosen.val_mean, 4),
          "verified_val_std": round(chosen.val_std, 4), "verified_seeds": chosen.seeds, "verified": verified,
          "runs": runs_done, "jobs": jobs,
          "deltas": {v.name: f"{v.val_mean - ref.val_mean:+.4f} ± {noise(v, ref):.4f}" for v in variants[1:]}}
    if skipped:
        ev["skipped"] = skipped
    if "learning_curve" in diagnostics:
        ev["more_data_helps"] = diagnostics["learning_curve"]["more_data_helps"]
    if best is ref:
        checks.append(C.make("regularize.ladder", "pass", f"no rung beat the reference beyond seed noise; "
                             f"keeping the reference (val {ref.val_mean:.4f})", ev))
    elif verified:
        checks.append(C.make("regularize.ladder", "pass", f"kept {', '.join(v.name for v in kept)}; chosen {best.name}: "
                             f"val {chosen.val_mean:.4f} on fresh seeds vs reference {ref.val_mean:.4f}", ev))
    else:
        checks.append(C.make("regularize.ladder", "warn", f"kept {', '.join(v.name for v in kept)}; chosen {best.name} "
                             f"did not replicate on fresh seeds: val {chosen.val_mean:.4f} vs reference "
                             f"{ref.val_mean:.4f} within noise {noise(chosen, ref):.4f}", ev,
                             "The gain was likely seed luck: raise regularize.seeds before trusting this choice."))
    checks.append(check_too_strong(variants, ref, chosen, rungs, dumb_error, len(trainer.va),
                                 active_regularizers(trainer.config(best.overrides)), active_regularizers(cfg)))
    checks.append(mode_check)
    checks.append(check_still_improving(chosen, th("regularize.still-improving")))
    checks.append(check_beats_baselines(chosen, baselines, ds, len(trainer.va)))
    chosen_overrides = {**base, **best.overrides}
    model = chosen.models[0]
    ccfg = cfg.with_overrides(chosen_overrides)
    E.save_checkpoint(ctx.artifacts.path("chosen.pt"), model, {"overrides": chosen_overrides, "val": chosen.val_mean})
    ctx.artifacts.add("chosen.pt")
    ctx.artifacts.text("chosen.yaml", "# regularize's choice: overrides on top of the experiment config\n"
                       + yaml.safe_dump(chosen_overrides, sort_keys=True))
    ctx.artifacts.json("chosen.json", {"overrides": chosen_overrides, "variant": best.name, "val": chosen.val,
                                       "val_mean": chosen.val_mean, "val_std": chosen.val_std,
                                       "train": chosen.train, "train_mean": chosen.train_mean,
                                       "reference_val_std": ref.val_std, "seeds": chosen.seeds, "verdict": verdict,
                                       "history": chosen.history[0]})
    ctx.artifacts.json("ablation.json", {"table": table, "combination": combo_steps, "diagnostics": diagnostics,
                                         "verdict": verdict})
    header = "variant,seeds,train_mean,train_std,val_mean,val_std,delta,kept,noise,note\n"
    ctx.artifacts.text("ablation.csv", header + "".join(
        f"{r['variant']},{r['seeds']},{r['train']},{r['train_std']},{r['val']},{r['val_std']},{r['delta']},"
        f"{'yes' if r['kept'] else 'no'},{r['noise']},\"{r['note']}\"\n" for r in table))
    pictures(ctx, ds, variants, ref, diagnostics, model, ccfg)
    summary = (f"{verdict}; chosen {best.name}: val {chosen.val_mean:.4f} ± {chosen.val_std:.4f} "
               f"(reference {ref.val_mean:.4f}, best dumb {best_dumb:.4f}); {runs_done} runs")
    # every run's health checks stay in the record (the worst status per check, and the run that had it): a rung
    # that diverged is evidence about that rung, not a failure of the stage
    return StageResult(checks, metrics={"chosen_val": chosen.val_mean, "reference_val": ref.val_mean,
                                        "verdict": verdict, "runs": runs_done}, summary=summary,
                       extra={"health": worst_per_check(trainer.health_runs)})
