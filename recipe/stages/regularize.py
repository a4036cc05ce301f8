"""Stage 4: diagnose bias vs variance, try each regularizer alone (with seed noise), keep what helps."""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np
import torch
import yaml

from recipe import checks as C
from recipe import tasks
from recipe.engine import train as E
from recipe.engine.monitors import worst_per_check
from recipe.models_seq import SEQUENCE_KINDS
from recipe.stage import StageResult
from recipe.stages.regularize_checks import (beats, check_mode, check_still_improving, check_too_strong,
                                             configured_rungs, noise, pictures)
from recipe.stages.regularize_trainer import CACHE, Spec, Trainer, Variant, continue_command  # noqa: F401
from recipe.stages.regularize_verdicts import (bias_variance, check_beats_baselines, dumb_val_rows, label_noise_rate,
                                               reachable_error)

PRESERVE = (CACHE,)     # finished runs survive reruns: an interrupted ladder resumes (regularize_trainer)

DROPOUT = 0.2
# L2 through the optimizer (coupled under Adam). Mild on purpose: at overfit-batch's learning rate on digits
# (6e-3) L2 of 3e-4 or 1e-3 already threw one Adam seed in three off (val 0.89-0.94, the others 0.99). Configs whose
# data invites memorizing set a stronger train.weight_decay (the planted high-variance case uses 3e-3).
WEIGHT_DECAY = 1e-4
# adamw decouples the decay: each step shrinks the weights by lr x wd, so 1e-4 at lr 1e-3 is no regularizer at all.
# nanoGPT's 0.1 is the usual strength for transformers trained with AdamW.
WEIGHT_DECAY_DECOUPLED = 0.1


def _permutation_importance(model, va, ds, seed: int, precision: str) -> np.ndarray:
    g = torch.Generator(device=va.x.device).manual_seed(seed)
    base = E.evaluate(model, va, ds.task, ds.num_classes, precision=precision)["score"]     # tables only
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
    smaller = {"model.hidden": [max(4, h // 2) for h in hidden]}
    if base_cfg.model.kind == "linear":
        larger = {"model.kind": "mlp", "model.hidden": [64, 64]}
    if base_cfg.model.kind in SEQUENCE_KINDS:
        smaller, larger = sequence_sizes(base_cfg.model)
    decay = WEIGHT_DECAY_DECOUPLED if base_cfg.train.optimizer == "adamw" else WEIGHT_DECAY
    return {
        "augment": {"data.augment": aug},
        "smaller_model": smaller,
        "smaller_batch": {"train.batch_size": max(8, base_cfg.train.batch_size // 2)},
        "dropout": {"model.dropout": cfg.model.dropout or DROPOUT},
        "weight_decay": {"train.weight_decay": cfg.train.weight_decay or decay},
        "early_stopping": {"train.early_stopping": stopping},
        "larger_model": {**larger, "train.early_stopping": stopping},
        "train_longer": {"train.epochs": epochs * 2},   # high bias only: not a regularizer
    }


def sequence_sizes(model) -> tuple[dict[str, Any], dict[str, Any]]:
    """smaller_model and larger_model for gpt, lstm and gru: half and twice the width model.n_embd (a gpt's stays a
    multiple of n_head, so every head keeps n_embd / n_head dimensions); depth (n_layer) is left to tune."""
    step = model.n_head if model.kind == "gpt" else 1
    return ({"model.n_embd": max(step, model.n_embd // 2 // step * step)}, {"model.n_embd": model.n_embd * 2})


def unavailable_rungs(cfg, ds, rungs: dict[str, dict[str, Any]], base_cfg) -> dict[str, str]:
    """Rungs that cannot run on this data or model, and why: the record says so instead of passing them over."""
    out: dict[str, str] = {}
    if ds.inputs == "tokens":
        # token ids are categories: flipping, shifting or adding noise to them makes other text, not the same text
        # seen differently, and zeroing a position is not dropping a feature
        out["augment"] = "augmentation is off for text (token ids cannot be shifted or noised like floats)"
        out["fewer_features"] = "token positions are not features (model.drop_inputs zeroes float inputs)"
        if base_cfg.model.kind not in SEQUENCE_KINDS:
            why = f"model.kind {base_cfg.model.kind} is a factory: recipe does not know its size or dropout"
            out.update({r: why for r in ("smaller_model", "larger_model", "dropout")})
    if rungs["smaller_model"].get("model.n_embd") == base_cfg.model.n_embd and base_cfg.model.kind in SEQUENCE_KINDS:
        out["smaller_model"] = f"model.n_embd {base_cfg.model.n_embd} is already the smallest width for the heads"
    return out


def train_sizes(ds, tr, subsets: dict[float, Any]) -> tuple[str, dict[float, int]]:
    """What the learning curve's x axis counts per train fraction: rows, or for token inputs the real (non-pad)
    tokens the model trains on."""
    if ds.inputs != "tokens":
        return "rows", {f: len(s) for f, s in subsets.items()}
    real = (tr.x != ds.pad_id) if ds.pad_id is not None else torch.ones_like(tr.x, dtype=torch.bool)
    per_row = real.sum(1).cpu().numpy()
    return "tokens", {f: int(per_row[np.asarray(s)].sum()) for f, s in subsets.items()}


LEARNING_CURVE = (0.25, 0.5)


def learning_curve(points: dict[float, Variant], ref: Variant, unit: str = "rows",
                   sizes: Optional[dict[float, int]] = None) -> dict[str, Any]:
    points = {**points, 1.0: ref}
    fr = sorted(points)
    errs = {f: points[f].val_error for f in fr}
    # power law through the last two points: err(2n) ~ err(n) * (err(n) / err(n/2))
    slope = math.log(max(errs[1.0], 1e-6) / max(errs[0.5], 1e-6)) / math.log(2)
    predicted = errs[1.0] * 2 ** slope
    gain = errs[1.0] - predicted
    return {"fractions": fr, "unit": unit, "train_size": [(sizes or {}).get(f) for f in fr],
            "val_error": [errs[f] for f in fr], "val_std": [points[f].val_std for f in fr], "slope": slope,
            "predicted_error_2x": predicted, "predicted_gain_2x": gain,
            "more_data_helps": bool(gain > max(ref.val_std, 0.002))}


# rungs that move the same knob: never combined (smaller_model + larger_model is no model at all)
AXIS = {"smaller_model": "model size", "larger_model": "model size"}


def contradicts(a: Variant, b: Variant) -> str:
    """Why b's rung cannot join a (a may be a combination): the same axis, or a key set to another value."""
    axes = {AXIS[r] for r in a.name.split("+") if r in AXIS}
    if b.name in AXIS and AXIS[b.name] in axes:
        return f"same axis ({AXIS[b.name]})"
    keys = [k for k in b.overrides if k in a.overrides and a.overrides[k] != b.overrides[k]]
    return f"both set {', '.join(keys)}" if keys else ""


def raw_columns(cfg, ds, dropped: list[int]) -> dict[str, Any]:
    """The data columns behind dropped encoded inputs: one-hot levels map back to their column, which data.features
    can remove only when every level was dropped (data.features takes raw column names of csv/parquet files)."""
    raw_of = {f"{col}={lv}": col for col, levels in ds.encoding.get("categorical", {}).items() for lv in levels}
    cols = [raw_of.get(n, n) for n in ds.feature_names]
    gone = {cols[j] for j in dropped}
    whole = [c for c in dict.fromkeys(cols) if c in gone and all(j in dropped for j, cj in enumerate(cols) if cj == c)]
    partial = [c for c in dict.fromkeys(cols) if c in gone and c not in whole]
    tabular = str(cfg.data.source).lower().rsplit(".", 1)[-1] in ("csv", "tsv", "txt", "parquet", "pq")
    keep = [c for c in dict.fromkeys(cols) if c not in whole]
    return {"columns": whole, "partly": partial, "data_features": keep if tabular and whole else None}


def fewer_features_note(info: dict[str, Any]) -> str:
    short = lambda names: ", ".join(names[:6]) + (" …" if len(names) > 6 else "")   # noqa: E731
    parts = []
    if info["columns"]:
        parts.append(f"drops column{'s' if len(info['columns']) > 1 else ''} {short(info['columns'])}")
    if info["partly"]:
        parts.append(f"some levels of {short(info['partly'])}")
    note = "zeroes the inputs of " + "; ".join(parts) + " (model.drop_inputs)"
    if info["data_features"] is not None:
        keep = info["data_features"]
        note += (f"; to remove them from the data: data.features: [{', '.join(keep)}]" if len(keep) <= 12 else
                 f"; to remove them from the data, leave {short(info['columns'])} out of data.features")
    return note


def run(cfg, ctx) -> StageResult:
    try:
        return _run(cfg, ctx)
    except KeyboardInterrupt:
        saved = len(list((ctx.dir / CACHE).glob("*.pt"))) if (ctx.dir / CACHE).exists() else 0
        raise KeyboardInterrupt(f"regularize stopped; {saved} finished run{'s are' if saved != 1 else ' is'} kept in "
                                f"{ctx.dir / CACHE}. Continue with: {continue_command(cfg, 'regularize', ctx.options.runs)}"
                                ) from None


def _run(cfg, ctx) -> StageResult:
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
    unavailable = unavailable_rungs(cfg, ds, rungs, base_cfg)
    task = tasks.get(ds.task)
    from recipe.devices import plan_jobs

    jobs_plan = plan_jobs(ctx.options.jobs or rcfg.jobs, ctx.options.device,     # --jobs auto, GPU pinning
                          "--jobs" if ctx.options.jobs else "regularize.jobs")
    jobs = jobs_plan.jobs
    ctx.log(f"regularize: {jobs} worker{'s' if jobs > 1 else ''} ({jobs_plan.reason})")
    budget = rcfg.budget_seconds
    started = time.perf_counter()
    checks: list[C.Check] = []
    diagnostics: dict[str, Any] = {}
    skipped: list[str] = []
    planned = (2 + len(ladder) + 3) * rcfg.seeds
    reach = reachable_error(rcfg.target_error, baselines, label_noise_rate(ctx.workspace.read_record("inspect")),
                            ds.task)
    with ctx.progress(f"regularize ({jobs} job{'s' if jobs > 1 else ''})", planned) as bar, \
            Trainer(cfg, ctx, base, bar, jobs, jobs_plan.gpus) as trainer:
        ref = trainer.run("reference", {}, keep_models=True)
        variants: list[Variant] = [ref]
        bv, verdict = bias_variance(ref, reach, th("regularize.bias-variance"))
        checks.append(bv)
        if verdict == "high bias":
            # regularizers cannot help a model that does not fit train: a bigger model or longer training
            ladder = [r for r in ladder if r in ("learning_curve", "larger_model")] + ["train_longer"]
            skipped.append("regularizers skipped: the reference model underfits (high bias)")
        specs: list[Spec] = []
        n = len(trainer.tr)
        perm = np.random.default_rng(cfg.seed).permutation(n)
        for rung in ladder:
            if rung in unavailable:
                skipped.append(f"{rung}: {unavailable[rung]}")
            elif rung == "learning_curve":
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
                                                 **raw_columns(cfg, ds, [int(j) for j in drop]),
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
            unit, sizes = train_sizes(ds, trainer.tr, {**{f: perm[: max(8, int(f * n))] for f in curve},
                                                        1.0: np.arange(n)})
            diagnostics["learning_curve"] = learning_curve(curve, ref, unit, sizes)
        for v in done:
            if v.name == "fewer_features":
                v.note = fewer_features_note(diagnostics["fewer_features"])
        variants += [v for v in done if not v.name.startswith("learning_curve_")]
        # keep what beats noise; build the combination greedily from the best single rung
        kept = [v for v in variants[1:] if v.name in rungs and beats(v, ref)]
        kept.sort(key=lambda v: -v.gain_over(ref))
        best = kept[0] if kept else ref
        combo_steps = []
        for v in kept[1:]:
            merged = {**best.overrides, **v.overrides}
            if merged == best.overrides:
                continue
            why = contradicts(best, v)
            if why:
                combo_steps.append({"variant": f"{best.name}+{v.name}", "skipped": f"contradictory rungs: {why}"})
                continue
            trial = trainer.run("+".join([best.name, v.name]), merged)
            combo_steps.append(trial.row())
            variants.append(trial)
            if beats(trial, best):
                best = trial
        # the best of several noisy rungs is biased upward (winner's curse): verify it on fresh seeds, and ship only
        # what replicates (the combination, else the best single rung, else the reference)
        choice, chosen, rejected = ref, ref, []
        candidates = [] if best is ref else [best] + ([kept[0]] if best is not kept[0] else [])
        for cand in candidates:
            rep = trainer.run(f"chosen ({cand.name})", cand.overrides, keep_models=True, seeds=trainer.fresh_seeds())
            variants.append(rep)
            if beats(rep, ref):
                choice, chosen = cand, rep
                break
            rejected.append(rep)
        runs_done = trainer.runs
        mode_check = check_mode(cfg, chosen, trainer, ds, th("regularize.mode"))
        precision = trainer.config(choice.overrides).train.precision
        net_out = E.predict(chosen.models[0], trainer.va.x, precision=precision).float().cpu().numpy()
        y_val = trainer.va.y.cpu().numpy()
    trainer.cache.prune()
    rows = dumb_val_rows(ds, baselines, net_out, y_val, cfg.seed)
    best_dumb = baselines["best_dumb_val"]
    dumb_error = task.error(best_dumb)
    for v in variants:
        v.delta = v.val_mean - ref.val_mean
        v.noise = 0.0 if v is ref else noise(v, ref)
        v.kept = v in kept or v is chosen
    table = [v.row() for v in variants]
    ev = {"reference_val": round(ref.val_mean, 4), "reference_std": round(ref.val_std, 4), "seeds": rcfg.seeds,
          "kept": [v.name for v in kept], "best": best.name, "chosen": choice.name,
          "chosen_val": round(chosen.val_mean, 4), "verified_val_std": round(chosen.val_std, 4),
          "verified_seeds": chosen.seeds, "verified": choice is not ref,
          "did_not_replicate": {r.name: f"{r.val_mean:.4f} ± {noise(r, ref):.4f}" for r in rejected},
          "runs": runs_done, "reused_runs": trainer.reused, "jobs": jobs,
          "deltas": {v.name: f"{v.val_mean - ref.val_mean:+.4f} ± {noise(v, ref):.4f}" for v in variants[1:]},
          "higher_is_better": task.higher_is_better}     # the deltas' sign: a language model's loss falls
    if skipped:
        ev["skipped"] = skipped
    if unavailable:     # said even when a high-bias verdict left these rungs out anyway
        ev["not_applicable"] = unavailable
    if "learning_curve" in diagnostics:
        ev["more_data_helps"] = diagnostics["learning_curve"]["more_data_helps"]
    failed = "; ".join(f"{r.name} did not replicate on fresh seeds (val {r.val_mean:.4f} vs reference "
                       f"{ref.val_mean:.4f}, within noise {noise(r, ref):.4f})" for r in rejected)
    if best is ref:
        checks.append(C.make("regularize.ladder", "pass", f"no rung beat the reference beyond seed noise; "
                             f"keeping the reference (val {ref.val_mean:.4f})", ev))
    elif choice is ref:
        checks.append(C.make("regularize.ladder", "warn", f"kept {', '.join(v.name for v in kept)}; {failed}: "
                             f"shipping the reference instead (val {ref.val_mean:.4f})", ev,
                             "The gain was likely seed luck: raise regularize.seeds to measure the rungs more "
                             "precisely; the unregularized reference goes on to tune."))
    else:
        fallback = f"{failed}; shipping {choice.name} instead: " if rejected else ""
        checks.append(C.make("regularize.ladder", "pass", f"kept {', '.join(v.name for v in kept)}; {fallback}chosen "
                             f"{choice.name}: val {chosen.val_mean:.4f} on fresh seeds vs reference "
                             f"{ref.val_mean:.4f}", ev))
    checks.append(check_too_strong(variants, ref, chosen, rungs, dumb_error, len(trainer.va),
                                   tuple(r for r in choice.name.split("+") if choice is not ref),
                                   configured_rungs(cfg), trainer.config(choice.overrides)))
    checks.append(mode_check)
    checks.append(check_still_improving(chosen, th("regularize.still-improving")))
    checks.append(check_beats_baselines(rows, ds.task, baselines, th("regularize.beats-baselines"), cfg.seed,
                                        chosen.val_mean))
    chosen_overrides = {**base, **choice.overrides}
    model = chosen.models[0]
    ccfg = cfg.with_overrides(chosen_overrides)
    E.save_checkpoint(ctx.artifacts.path("chosen.pt"), model, {"overrides": chosen_overrides, "val": chosen.val_mean})
    ctx.artifacts.add("chosen.pt")
    ctx.artifacts.text("chosen.yaml", "# regularize's choice: overrides on top of the experiment config\n"
                       + yaml.safe_dump(chosen_overrides, sort_keys=True))
    ctx.artifacts.json("chosen.json", {"overrides": chosen_overrides, "variant": choice.name, "val": chosen.val,
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
    reused = f" ({trainer.reused} reused from an earlier run)" if trainer.reused else ""
    summary = (f"{verdict}; chosen {choice.name}: val {chosen.val_mean:.4f} ± {chosen.val_std:.4f} "
               f"(reference {ref.val_mean:.4f}, best dumb {best_dumb:.4f}); {runs_done} runs{reused}")
    # every run's health checks stay in the record (the worst status per check, and the run that had it): a rung
    # that diverged is evidence about that rung, not a failure of the stage
    return StageResult(checks, metrics={"chosen_val": chosen.val_mean, "reference_val": ref.val_mean,
                                        "verdict": verdict, "runs": runs_done, "reused_runs": trainer.reused},
                       summary=summary, extra={"health": worst_per_check(trainer.health_runs),
                                               "jobs": {**jobs_plan.record(),
                                                        "workers": list(trainer.placements.values())}})
