"""Stage 3: memorize one small batch, find a learning rate, then fit the whole train set."""
from __future__ import annotations

import math
from typing import Any

import torch

from recipe import checks as C
from recipe import tasks
from recipe.engine import train as E
from recipe.engine.lr_find import lr_range_test
from recipe.engine.schedule import from_config as schedule_from_config
from recipe.models import count_parameters, create
from recipe.stage import StageResult

# Karpathy's step 3 trains without regularization: the question is only "can it fit?". Augmentation is a
# regularizer too: regularize's reference starts from these overrides and tries data.augment as a rung.
UNREGULARIZED = {"model.dropout": 0.0, "train.weight_decay": 0.0, "train.early_stopping": None, "data.augment": []}


def engine_classes(ds) -> int:
    """The `num_classes` the engine's task methods read: the class count, or for token inputs the model's output
    width (a language model's vocabulary: one next-token class per id)."""
    return ds.num_outputs if ds.inputs == "tokens" else ds.num_classes


def optimizer_settings(cfg) -> dict[str, Any]:
    """The config's gradient clipping and lr schedule (None and constant for tables unless set): a GPT's warmup
    and cosine decay are part of how it fits, so overfit-batch trains with them as every later stage does."""
    return {"grad_clip": cfg.train.grad_clip, "schedule": schedule_from_config(cfg.train)}


def _unit(ds) -> str:
    if ds.inputs != "tokens":
        return "samples"
    # text classification pads each document to block_size; a language model cuts the stream into windows
    return (f"documents of up to {ds.block_size} tokens" if ds.pad_id is not None else
            f"windows of {ds.block_size} tokens")


def _memorize(cfg, ds, tr, idx, lr: float, batch: int, device, metrics_path=None) -> tuple[E.RunResult, dict]:
    model = create(cfg, ds, cfg.seed).to(device)
    sub = tr.subset(idx)
    steps_per_epoch = math.ceil(len(sub) / batch)
    epochs = max(1, cfg.overfit.steps // steps_per_epoch)
    r = E.fit(model, sub, None, task=ds.task, num_classes=engine_classes(ds), optimizer=cfg.train.optimizer, lr=lr,
              batch_size=batch, epochs=epochs, seed=cfg.seed, precision=cfg.train.precision, monitor_every=25,
              health_thresholds=cfg.checks, metrics_path=metrics_path, **optimizer_settings(cfg))
    return r, r.final_train


def check_memorize(cfg, ds, tr, device, th, lr_suggestion: float,
                   runs_dir=None) -> tuple[C.Check, list[float], dict[str, Any]]:
    """overfit.memorize; each run's curve goes to runs_dir/<memorize|memorize_retry>/metrics.jsonl."""
    def curve_path(name):
        return runs_dir / name / "metrics.jsonl" if runs_dir is not None else None

    n = min(cfg.overfit.samples, len(tr))
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(tr), generator=g)[:n]
    task = tasks.get(ds.task)
    limit, min_score = th[task.memorize_loss_key], task.memorize_min_score
    criterion = (f"loss <= {limit}" + (f" and {min_score:.0%} {task.metric_label}" if min_score is not None else "")
                 + f" on {n} {_unit(ds)} within {cfg.overfit.steps} steps")

    def ok(final):
        return final and final["loss"] <= limit and (min_score is None or task.gain(final["score"], min_score) >= 0)

    r, final = _memorize(cfg, ds, tr, idx, cfg.train.lr, n, device, curve_path("memorize"))
    curve = [h["train_loss"] for h in r.history]
    ev: dict[str, Any] = {"criterion": criterion, "samples": n, "steps": r.steps, "lr": cfg.train.lr,
                          "final_loss": round(final.get("loss", float("nan")), 6) if final else None,
                          f"final_{task.metric}": round(final.get("score", float("nan")), 4) if final else None}
    if ok(final):
        return C.make("overfit.memorize", "pass", f"memorized {n} {_unit(ds)}: loss {final['loss']:.2g} after "
                      f"{r.steps} steps",
                      ev), curve, ev
    # diagnosis: which monitor fired first, then a retry with the range-test LR and a smaller batch
    fired = [c for c in r.health if c.status in ("warn", "fail")]
    if fired:
        ev["first_monitor"] = {"id": fired[0].id, "title": fired[0].title, **{k: v for k, v in fired[0].evidence.items()
                                                                            if k in ("step", "first_bad_parameter")}}
    retry_lr = lr_suggestion if math.isfinite(lr_suggestion) else cfg.train.lr / 3
    retry, rfinal = _memorize(cfg, ds, tr, idx, retry_lr, max(1, n // 2), device, curve_path("memorize_retry"))
    ev["retry"] = {"lr": retry_lr, "batch": max(1, n // 2),
                   "final_loss": round(rfinal.get("loss", float("nan")), 6) if rfinal else None,
                   "passed": bool(ok(rfinal))}
    if ok(rfinal):
        return C.make("overfit.memorize", "warn", f"could not memorize {n} {_unit(ds)} at lr {cfg.train.lr:g}, but did "
                      f"at lr {retry_lr:.3g} with batch {max(1, n // 2)}", ev,
                      f"Use train.lr={retry_lr:.3g}; recipe uses it for the following stages."), curve, ev
    last = final.get("loss", float("nan")) if final else float("nan")
    return C.make("overfit.memorize", "fail", f"could not memorize {n} {_unit(ds)} (loss {last:.3g} after {r.steps} "
                  "steps)", ev, f"A model that cannot memorize {n} {_unit(ds)} has a bug: check the loss, the targets' "
                  "alignment with inputs, frozen layers; or the model is far too small."), curve, ev


def check_train_fit(result: E.RunResult, baselines: dict, task, extra: dict[str, Any]) -> C.Check:
    """overfit.train-fit: the unregularized model's final train score against the bar the task names
    (`task.train_fit_baseline`: the best dumb model's val score for tables, the best n-gram's train loss for a
    language model), compared in the task's direction."""
    key = task.train_fit_baseline
    bar, name = baselines[key], baselines["best_dumb"]
    split = key.rsplit("_", 1)[-1]                           # best_dumb_val -> val, best_dumb_train -> train
    train_score = result.final_train.get("score", float("nan"))
    ev = {"train_score": round(train_score, 4), "val_score": round(result.best.get("score", math.nan), 4),
          "best_dumb_val": round(baselines["best_dumb_val"], 4), "best_dumb": name, "must_beat": key,
          "bar": round(bar, 4), "metric": task.metric, "higher_is_better": task.higher_is_better, **extra}
    if "best_dumb_train" in baselines:
        ev["best_dumb_train"] = round(baselines["best_dumb_train"], 4)
    # ">= 0": a perfect train fit passes even when a dumb baseline is already perfect on val (wine)
    if result.stopped == "non_finite" or not task.gain(train_score, bar) >= 0:
        return C.make("overfit.train-fit", "fail", f"train score {train_score:.4f} ({task.metric}) does not beat the "
                      f"best dumb baseline {name}'s {split} score {bar:.4f}", ev,
                      "Make the model bigger or train longer (train.epochs) until it fits the train set.")
    return C.make("overfit.train-fit", "pass", f"train score {train_score:.4f} ({task.metric}) beats the best dumb "
                  f"baseline {name}'s {split} score ({bar:.4f})", ev)


def run(cfg, ctx) -> StageResult:
    ds = ctx.data()
    baselines = ctx.upstream_json("baseline", "baselines.json")
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    plain = cfg.with_overrides(UNREGULARIZED)
    checks: list[C.Check] = []
    t = cfg.train
    with ctx.progress("overfit-batch", plain.train.epochs + 3) as bar:
        probe = create(plain, ds, cfg.seed).to(ctx.device)
        rt = lr_range_test(probe, tr, task=ds.task, num_classes=engine_classes(ds), optimizer=t.optimizer,
                           batch_size=t.batch_size, seed=cfg.seed, precision=t.precision)
        bar.update(1)
        memo, memo_curve, memo_ev = check_memorize(plain, ds, tr, ctx.device, ctx.thresholds("overfit.memorize"),
                                                   rt.recommended, ctx.dir / "runs")
        checks.append(memo)
        bar.update(2)
        candidates = {"config": t.lr}
        if math.isfinite(rt.recommended) and not math.isclose(rt.recommended, t.lr, rel_tol=0.25):
            candidates["range_test"] = rt.recommended
        if memo.status == "warn":
            candidates["memorize_retry"] = memo_ev["retry"]["lr"]
        runs: dict[str, tuple[Any, Any]] = {}
        for name, lr in candidates.items():
            model = create(plain, ds, cfg.seed).to(ctx.device)
            r = E.fit(model, tr, va, task=ds.task, num_classes=engine_classes(ds), optimizer=t.optimizer, lr=lr,
                      batch_size=t.batch_size, epochs=t.epochs, seed=cfg.seed, precision=t.precision,
                      max_seconds=t.max_seconds, restore_best=False, health_thresholds=cfg.checks,
                      **optimizer_settings(plain),
                      metrics_path=ctx.artifacts.path(f"runs/train_fit_{name}/metrics.jsonl"),
                      progress=lambda e, row: bar.update(2 + e, row))
            runs[name] = (r, model)
        # the fit stage is judged on fitting: keep the learning rate with the lowest final train loss
        chosen = min(runs, key=lambda k: runs[k][0].final_train.get("loss", math.inf)
                     if runs[k][0].stopped != "non_finite" else math.inf)
        result, model = runs[chosen]
        bar.update(plain.train.epochs + 3)
    lr_used = candidates[chosen]
    checks.append(C.make("overfit.lr-range", "pass" if math.isfinite(rt.recommended) else "warn",
                         f"range test recommends lr {rt.recommended:.3g}; using {lr_used:.3g} ({chosen})"
                         if math.isfinite(rt.recommended) else "range test found no descending region",
                         {"recommended": rt.recommended, "min_loss_lr": rt.min_loss_lr, "stopped": rt.stopped,
                          "config_lr": t.lr, "used": lr_used, "chosen_by": "lowest final train loss",
                          "train_loss_by_lr": {k: round(v[0].final_train.get("loss", math.nan), 5) for k, v in runs.items()}},
                         "" if math.isfinite(rt.recommended) else "The loss never fell: check the data and model first."))
    train_score = result.final_train.get("score", float("nan"))
    best_dumb = baselines["best_dumb_val"]
    checks.append(check_train_fit(result, baselines, tasks.get(ds.task),
                                  {"epochs": len(result.history), "parameters": count_parameters(model), "lr": lr_used}))
    checks += result.health
    meta = {"overrides": {**UNREGULARIZED, "train.lr": lr_used}, "train": result.final_train, "val": result.best,
            "task": ds.task, "num_outputs": ds.num_outputs, "shape": list(ds.shape)}
    E.save_checkpoint(ctx.artifacts.path("train_fit.pt"), model, meta)
    ctx.artifacts.add("train_fit.pt")
    ctx.artifacts.json("lr.json", {"config_lr": t.lr, "recommended": rt.recommended, "used": lr_used, "chosen": chosen,
                                   "range_test": {"lrs": rt.lrs, "losses": rt.losses}})
    ctx.artifacts.json("train_fit.json", {"overrides": meta["overrides"], "history": result.history,
                                          **result.summary(), "memorize": memo_ev})
    from recipe import plots

    hist = result.history
    ctx.artifacts.figure("curves.png", plots.curves(
        {"train loss": [h["train_loss"] for h in hist], "val loss": [h["val_loss"] for h in hist]}, "epoch", "loss",
        f"train-fit (lr {lr_used:.3g}); memorize reached {memo_ev.get('final_loss')}", logy=True))
    ctx.artifacts.figure("memorize.png", plots.curves({"batch loss": memo_curve}, "step", "loss",
                                                      f"memorize {memo_ev['samples']} samples", logy=True))
    finite = [(lr, l) for lr, l in zip(rt.lrs, rt.losses) if math.isfinite(l)]
    if finite:
        ctx.artifacts.figure("lr_range.png", plots.curves({"smoothed loss": [l for _, l in finite]}, "learning rate",
                                                          "loss", "learning-rate range test",
                                                          x={"smoothed loss": [lr for lr, _ in finite]}, logx=True,
                                                          mark=rt.recommended))
    summary = (f"memorize: {memo.status}; train-fit at lr {lr_used:.3g}: train {train_score:.4f}, "
               f"val {result.best.get('score', math.nan):.4f} vs best dumb {baselines['best_dumb']} "
               f"{best_dumb:.4f} on val ({tasks.get(ds.task).metric})")
    return StageResult(checks, metrics={"train_score": train_score, "val_score": result.best.get("score"),
                                        "lr": lr_used}, summary=summary)
