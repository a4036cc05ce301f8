"""Stage 2: an end-to-end skeleton and dumb baselines; the silent model bugs surface here."""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from recipe import checks as C
from recipe import tasks
from recipe.engine import train as E
from recipe.engine.monitors import parameters_without_gradient
from recipe.models import create, final_layer
from recipe.stage import StageResult
from recipe.stages.gradcheck import check_gradcheck

SHORT_EPOCHS = 10       # the skeleton run: enough to see the loss go down, short enough to be cheap
SHORT_SECONDS = 30.0
SEED_ROWS = 512


def _loss(model, t, task) -> float:
    task = tasks.get(task)
    return float(task.loss(task.flat(E.predict(model, t.x)), t.y))


def expected_init_loss(report: dict) -> float:
    """The loss of predicting the train targets' priors or mean, from the data report (the task says which)."""
    return tasks.get(report["task"]).expected_init_loss(report)


# ----------------------------------------------------------------------------- checks


def check_seed(cfg, ds, tr, train_kwargs, curve=lambda i: None) -> C.Check:
    """curve(i): where run i (1 or 2) writes its metrics.jsonl, like every other training run."""
    sub = tr.subset(torch.arange(min(SEED_ROWS, len(tr)), device=tr.x.device))
    runs = []
    with E.deterministic(tr.x.device):    # on CUDA: no cuDNN/atomics nondeterminism between the two runs
        for i in (1, 2):
            model = create(cfg, ds, cfg.seed).to(tr.x.device)
            r = E.fit(model, sub, None, **{**train_kwargs, "epochs": 2, "max_seconds": None, "early_stopping": None},
                      metrics_path=curve(i))
            weights = torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])
            runs.append(([h["train_loss"] for h in r.history], weights))
    (l1, w1), (l2, w2) = runs
    diff = float((w1 - w2).abs().max()) if len(w1) else 0.0
    ev = {"losses_run1": l1, "losses_run2": l2, "max_weight_difference": diff, "rows": len(sub),
          "deterministic_kernels": tr.x.device.type == "cuda"}
    if l1 != l2 or diff > 0:
        return C.make("baseline.seed", "fail", "two runs with the same seed differ", ev,
                      "Seed every random source (data order, dropout, init, augmentation) and avoid "
                      "nondeterministic kernels; otherwise no comparison between runs means anything.")
    return C.make("baseline.seed", "pass", "two runs with the same seed gave identical losses and weights", ev)


def as_built(cfg, ds, seed: int) -> nn.Module:
    """The model as the user built it: `create`'s steps (seed, build, model.init) without recipe's output bias."""
    from recipe.models import build, init_weights

    torch.manual_seed(seed)
    model = build(cfg.model, ds.shape, ds.num_outputs)
    init_weights(model, cfg.model.init, cfg.model.activation)
    return model


def check_init_loss(built, model, tr, ds, report, th) -> tuple[C.Check, float, float]:
    """The loss at init of the model as built, then after recipe's output-bias init (the model training uses)."""
    task = tasks.get(ds.task)
    after, before = _loss(model, tr, ds.task), _loss(built, tr, ds.task)
    expected = task.expected_init_loss(report)
    tol = th["rel_tolerance"]
    rel = abs(after - expected) / max(expected, 1e-8)
    fine_for_built = task.acceptable_init_losses(report, ds.num_classes)
    rel_built = min(abs(before - ref) / max(ref, 1e-8) for ref in fine_for_built)
    ev = {"initial_loss": round(after, 5), "initial_loss_as_built": round(before, 5), "expected": round(expected, 5),
          "relative_error": round(rel, 4), "relative_error_as_built": round(rel_built, 4), "rel_tolerance": tol,
          **task.init_loss_evidence(ds.num_classes)}
    if not math.isfinite(after) or rel > tol:
        side = "too high" if not math.isfinite(after) or after > expected else "too low"
        advice = ("Initial outputs are too confident: check the final layer's scale and init (recipe sets its bias "
                  "to the log class priors), and that the loss gets logits." if side == "too high" else
                  "A loss below chance before training means the target leaks into the input or the loss is "
                  "computed on the wrong tensors.")
        return C.make("baseline.init-loss", "fail", f"initial loss {after:.4g} is {side}: expected ~{expected:.4g} "
                      f"(as built: {before:.4g})", ev, advice), after, expected
    if not math.isfinite(before) or rel_built > tol:
        return C.make("baseline.init-loss", "warn", f"as built, the model starts at loss {before:.4g} (expected "
                      f"~{expected:.4g}); recipe's output-bias init brings it to {after:.4g}", ev,
                      "Fix your model's own init (final layer bias and scale): recipe's runs use its bias init, but "
                      "anything that builds the model elsewhere starts from the broken one."), after, expected
    return C.make("baseline.init-loss", "pass", f"initial loss {after:.4g} ~ expected {expected:.4g} "
                  f"(as built: {before:.4g})", ev), after, expected


def check_bias_init(built, model, tr, ds, th) -> C.Check:
    """The mean prediction at init against the train targets' priors or mean (the task measures the gap)."""
    layer = final_layer(model, ds.num_outputs)
    m = tasks.get(ds.task).init_prediction(E.predict(model, tr.x).float(), E.predict(built, tr.x).float(),
                                           ds.class_priors(), ds.num_classes, th)
    ev: dict[str, Any] = {"final_layer_found": layer is not None, **m["evidence"]}
    bad, bad_built, what, built_what, gap = m["bad"], m["bad_built"], m["what"], m["built_what"], m["gap"]
    if bad:
        return C.make("baseline.bias-init", "fail", what, ev,
                      "Initialise the final layer's bias to the log class priors (or the target mean) and keep "
                      "anything after it from shifting the output.")
    if layer is None:
        return C.make("baseline.bias-init", "warn", what + "; no final nn.Linear with the output size was found", ev,
                      "recipe could not set the output bias itself: initialise it in your factory.")
    if bad_built:
        return C.make("baseline.bias-init", "warn", f"{built_what}; after recipe's bias init: {gap:.3g}", ev,
                      "Your model's own output bias is broken (recipe's runs replace it with the priors): fix it "
                      "where the model is built.")
    return C.make("baseline.bias-init", "pass", f"{what} ({built_what})", ev)


def fit_dumb(model, ds):
    """Fit one dumb baseline on normalized train, as dumb_baselines does (deterministic: same seed, same model)."""
    from threadpoolctl import threadpool_limits

    from recipe import threads

    xt = ds.normalize(ds.train.x)
    # gradient boosting's OpenMP pool and BLAS: one thread on small data, so a busy core cannot stall them
    with threadpool_limits(threads.for_work(xt.size * 60)):
        model.fit(xt, ds.train.y)
    return model


def dumb_baselines(ds, seed: int) -> dict[str, dict[str, Any]]:
    """Majority/mean, linear and gradient-boosting scores on train and val (sklearn)."""
    task = tasks.get(ds.task)
    xt, xv = ds.normalize(ds.train.x), ds.normalize(ds.val.x)
    yt, yv = ds.train.y, ds.val.y
    out = {}
    for name, m in task.dumb_models(seed).items():
        fit_dumb(m, ds)
        row: dict[str, Any] = {"train": float(m.score(xt, yt)), "val": float(m.score(xv, yv))}
        if task.has_classes:
            pred = m.predict(xv)
            row["val_per_class"] = [float((pred[yv == c] == c).mean()) if (yv == c).any() else None
                                    for c in range(ds.num_classes)]
        out[name] = row
    return out


def check_dumb(dumb: dict, ds) -> C.Check:
    best = max(dumb, key=lambda k: dumb[k]["val"])
    task = tasks.get(ds.task)
    metric, trivial = task.metric_label, task.trivial
    ev = {k: {"train": round(v["train"], 4), "val": round(v["val"], 4)} for k, v in dumb.items()}
    ev.update(best=best, metric=metric)
    if dumb["linear"]["val"] - dumb[trivial]["val"] < 0.01 and dumb["gradient_boosting"]["val"] - dumb[trivial]["val"] < 0.01:
        return C.make("baseline.dumb", "warn", f"no baseline beats {trivial} prediction ({metric} "
                      f"{dumb[trivial]['val']:.3f})", ev,
                      "The features barely predict the target; check data.signal before training a network.")
    return C.make("baseline.dumb", "pass", f"best dumb baseline: {best}, val {metric} {dumb[best]['val']:.4f}", ev)


def _lower_bound(delta: np.ndarray, seed: int, n: int = 1000) -> float:
    """One-sided 95% paired-bootstrap lower bound of the mean of per-row differences."""
    if not len(delta):
        return float("nan")
    rng = np.random.default_rng(seed)
    means = np.array([delta[rng.integers(0, len(delta), len(delta))].mean() for _ in range(n)])
    return float(np.percentile(means, 5))


def check_input_independent(real_out: torch.Tensor, zero_out: torch.Tensor, y: torch.Tensor, ds, th,
                            seed: int) -> C.Check:
    """The trained model against the same model trained and evaluated on zeroed inputs, on val.

    Accuracy cannot tell them apart on imbalanced data (a zeroed-input model predicting the majority of a
    95/5 split scores 0.95), so the comparison is on balanced accuracy (R² for regression) and on the
    val loss, with a paired bootstrap over val rows for the loss."""
    task = tasks.get(ds.task)
    real_rows, zero_rows = task.row_loss(real_out, y).cpu().numpy(), task.row_loss(zero_out, y).cpu().numpy()
    real_loss, zero_loss = float(real_rows.mean()), float(zero_rows.mean())
    loss_gain = (zero_loss - real_loss) / zero_loss if zero_loss > 0 else 0.0
    bound = _lower_bound(zero_rows - real_rows, seed)
    metric = task.balanced_label
    real_score = task.balanced_score(real_out, y, ds.num_classes)
    zero_score = task.balanced_score(zero_out, y, ds.num_classes)
    gap = real_score - zero_score
    ev = {"metric": metric, "val_score_real_inputs": round(real_score, 4), "val_score_zeroed_inputs": round(zero_score, 4),
          "gap": round(gap, 4), "min_gap": th["min_gap"], "val_loss_real_inputs": round(real_loss, 5),
          "val_loss_zeroed_inputs": round(zero_loss, 5), "relative_loss_gain": round(loss_gain, 4),
          "loss_gain_lower_bound_95": round(bound, 5), "min_loss_gain": th["min_loss_gain"],
          "epochs": "same budget, same seed", "val_rows": len(y)}
    by_score = math.isfinite(gap) and gap >= th["min_gap"]
    by_loss = loss_gain >= th["min_loss_gain"] and bound > 0
    if not (by_score or by_loss):
        return C.make("baseline.input-independent", "fail",
                      f"the model does as well with zeroed inputs (val {metric} {zero_score:.3f}, loss {zero_loss:.4g}) "
                      f"as with real ones ({real_score:.3f}, loss {real_loss:.4g})",
                      ev, "The model's output does not depend on its input: check that forward() uses x, and that "
                          "features reach the network (no detach, no overwritten tensor).")
    why = f"{metric} {gap:+.3f}" if by_score else f"val loss {loss_gain:.0%} lower (95% bound {bound:.3g} > 0)"
    return C.make("baseline.input-independent", "pass", f"real inputs beat zeroed inputs on val: {why}", ev)


def check_batch_independence(model, tr, th) -> C.Check:
    m = copy.deepcopy(model).float().eval()
    x = tr.x[: min(4, len(tr))].clone().float().requires_grad_(True)
    if len(x) < 2:
        return C.make("baseline.batch-independence", "skip", "fewer than 2 samples")
    out = m(x)
    out = out.reshape(len(x), -1)
    if not out.requires_grad:
        return C.make("baseline.batch-independence", "skip", "the output does not depend on anything with a gradient")
    (grad,) = torch.autograd.grad(out[0].float().sum(), x, allow_unused=True)
    leak = float(grad[1:].abs().max()) if grad is not None else 0.0
    own = float(grad[0].abs().max()) if grad is not None else 0.0
    ev = {"max_grad_on_other_samples": leak, "max_grad_on_own_sample": own, "tolerance": th["tolerance"],
          "samples": len(x), "mode": "eval (BatchNorm uses running statistics, so it is not blamed)"}
    if leak > th["tolerance"]:
        return C.make("baseline.batch-independence", "fail",
                      "sample 0's output has gradient on other samples' inputs: the model mixes the batch", ev,
                      "Look for a view/reshape that mixes the batch dimension (use permute/transpose before view), "
                      "or a reduction over dim 0.")
    if own == 0.0:    # no gradient on any input: there was nothing to see mixing in
        return C.make("baseline.batch-independence", "skip", "sample 0's output has no gradient on any input "
                      "(see baseline.input-independent): batch mixing cannot be measured", ev)
    return C.make("baseline.batch-independence", "pass", "each sample's output depends on that sample only", ev)


def check_loss_input(model, tr, ds) -> C.Check:
    """Outputs of the untrained model against what the task's loss expects (logits, unbounded values)."""
    status, title, ev, advice = tasks.get(ds.task).loss_input(E.predict(model, tr.x[:256]).float(), tr.y)
    # literal statuses: the catalog audit (tests/test_checks.py) reads what this check can return from the source
    if status == "fail":
        return C.make("baseline.loss-input", "fail", title, ev, advice)
    if status == "warn":
        return C.make("baseline.loss-input", "warn", title, ev, advice)
    if status == "pass":
        return C.make("baseline.loss-input", "pass", title, ev, advice)
    raise ValueError(f"task '{ds.task}' returned loss-input status {status!r}; expected pass, warn or fail")


def check_grad_flow(model, tr, ds) -> C.Check:
    m = copy.deepcopy(model).train()
    m.zero_grad(set_to_none=True)
    x, y = tr.x[:64], tr.y[:64]
    out = m(x)
    task = tasks.get(ds.task)
    task.loss(task.flat(out).float(), y).backward()
    found = parameters_without_gradient(m)
    total, ev = found["total"], found["evidence"]
    if any(v for _, v in found["groups"]):
        parts = [f"{len(v)} {k}" for k, v in found["groups"] if v]
        return C.make("baseline.grad-flow", "fail", "parameters that will not learn: " + ", ".join(parts), ev,
                      "Unfreeze (requires_grad=True) or remove those layers; unused ones are not in forward().")
    return C.make("baseline.grad-flow", "pass", f"all {total} parameter tensors receive a gradient", ev)


def check_loss_decreases(init_loss: float, result, th) -> C.Check:
    """Whole-train loss before training vs after the skeleton run, both in eval mode (no batch noise)."""
    first = init_loss
    last = result.final_train.get("loss", float("nan")) if result.final_train else float("nan")
    drop = (first - last) / abs(first) if first and math.isfinite(first) and math.isfinite(last) else float("nan")
    ev = {"train_loss_at_init": round(first, 5), "train_loss_after": round(last, 5) if math.isfinite(last) else None,
          "relative_drop": round(drop, 4) if math.isfinite(drop) else None, "min_drop": th["min_drop"],
          "epochs": len(result.history), "stopped": result.stopped}
    if not math.isfinite(drop) or drop < th["min_drop"]:
        return C.make("baseline.loss-decreases", "fail", f"training loss did not go down ({first:.4g} -> {last:.4g})",
                      ev, "Check that optimizer.step() runs on the model's parameters and try a larger learning rate "
                          "(overfit-batch's LR range test finds one).")
    return C.make("baseline.loss-decreases", "pass", f"training loss fell {drop:.0%} ({first:.4g} -> {last:.4g})", ev)


# ----------------------------------------------------------------------------- pictures


def _batch_dump(ctx, ds, tr) -> str:
    """Exactly what enters the net: the first training batch, after normalization."""
    from recipe import plots

    bs = min(ctx.cfg.train.batch_size, len(tr), 32)
    xb = tr.x[:bs].float().cpu().numpy()
    yb = tr.y[:bs].cpu().numpy()
    if len(ds.shape) == 3:
        labels = [str(ds.classes[v]) if ds.classes else f"{v:.2f}" for v in yb]
        ctx.artifacts.figure("batch.png", plots.image_grid(xb, ds.shape, labels, "the batch exactly as the net sees it"))
    else:
        cols = list(range(min(8, xb.shape[1])))
        ctx.artifacts.figure("batch.png", plots.feature_histograms(xb, ds.feature_names, cols,
                                                                     "first batch as the net sees it (normalized)"))
    stats = {"batch_size": bs, "x_mean": float(xb.mean()), "x_std": float(xb.std()), "x_min": float(xb.min()),
             "x_max": float(xb.max()), "labels": yb[:16].tolist(),
             "per_feature": {ds.feature_names[j]: {"mean": float(xb[:, j].mean()), "std": float(xb[:, j].std())}
                             for j in range(min(16, xb.shape[1]))}}
    ctx.artifacts.json("batch.json", stats)
    return "batch.png"


def run(cfg, ctx) -> StageResult:
    ds = ctx.data()
    if ds.inputs == "tokens":          # token ids cannot be zeroed, noised or plotted as features
        from recipe.stages import baseline_text

        return baseline_text.run(cfg, ctx)
    report = ctx.upstream_json("inspect", "data_report.json")
    th = ctx.thresholds
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    t = cfg.train
    task = tasks.get(ds.task)
    kwargs = dict(task=ds.task, num_classes=ds.num_classes, optimizer=t.optimizer, lr=t.lr,
                  weight_decay=t.weight_decay, batch_size=t.batch_size, seed=cfg.seed, precision=t.precision,
                  health_thresholds=cfg.checks)
    checks: list[C.Check] = []
    with ctx.progress("baseline", 6) as bar:
        model = create(cfg, ds, cfg.seed).to(ctx.device)
        built = as_built(cfg, ds, cfg.seed).to(ctx.device)     # before recipe's output bias: measured first
        init_check, init_loss, expected = check_init_loss(built, model, tr, ds, report, th("baseline.init-loss"))
        seed_curve = lambda i: ctx.artifacts.path(f"runs/seed_run{i}/metrics.jsonl")   # noqa: E731
        checks += [check_seed(cfg, ds, tr, kwargs, seed_curve), init_check,
                   check_bias_init(built, model, tr, ds, th("baseline.bias-init"))]
        checks += [check_loss_input(model, tr, ds), check_batch_independence(model, tr, th("baseline.batch-independence")),
                   check_grad_flow(model, tr, ds), check_gradcheck(model, tr.x)]
        bar.update(1)
        dumb = dumb_baselines(ds, cfg.seed)
        checks.append(check_dumb(dumb, ds))
        bar.update(2)
        epochs = min(t.epochs, SHORT_EPOCHS)
        probe_idx = torch.arange(min(16, len(va)), device=va.x.device)
        dynamics: list[list[float]] = []

        def watch(epoch, row, m=model):
            out = E.predict(m, va.x[probe_idx], precision=t.precision).float()
            dynamics.append(task.probe_value(out, va.y[probe_idx]).cpu().tolist())

        real = E.fit(model, tr, va, **kwargs, epochs=epochs, max_seconds=SHORT_SECONDS, on_epoch=watch,
                     metrics_path=ctx.artifacts.path("metrics.jsonl"))
        ctx.artifacts.add("metrics.jsonl")
        bar.update(4)
        zeros = E.Tensors(torch.zeros_like(tr.x), tr.y)
        zero_model = create(cfg, ds, cfg.seed).to(ctx.device)
        zero_run = E.fit(zero_model, zeros, E.Tensors(torch.zeros_like(va.x), va.y), **kwargs, epochs=epochs,
                         max_seconds=SHORT_SECONDS, metrics_path=ctx.artifacts.path("runs/zero_input/metrics.jsonl"))
        bar.update(5)
        real_score = float(real.best.get("score", float("nan")))
        precision = cfg.train.precision
        checks.append(check_input_independent(E.predict(model, va.x, precision=precision),
                                              E.predict(zero_model, torch.zeros_like(va.x), precision=precision),
                                              va.y, ds, th("baseline.input-independent"), cfg.seed))
        checks.append(check_loss_decreases(init_loss, real, th("baseline.loss-decreases")))
        checks += real.health
        bar.update(6)
    _batch_dump(ctx, ds, tr)
    from recipe import plots

    ctx.artifacts.figure("prediction_dynamics.png", plots.curves(
        {f"val sample {i}": [d[i] for d in dynamics] for i in range(min(8, len(probe_idx)))}, "epoch",
        task.probe_label,
        "predictions on a fixed val batch over training"))
    ctx.artifacts.json("prediction_dynamics.json", dynamics)
    best_name = max(dumb, key=lambda k: dumb[k]["val"])
    baselines = {"task": ds.task, "metric": task.metric,
                 "dumb": dumb, "best_dumb": best_name, "best_dumb_val": dumb[best_name]["val"],
                 "best_dumb_train": dumb[best_name]["train"],
                 "expected_init_loss": expected, "init_loss": init_loss,
                 "init_loss_as_built": init_check.evidence["initial_loss_as_built"],
                 "skeleton": {"val_score": real_score, "epochs": len(real.history), **real.summary()}}
    ctx.artifacts.json("baselines.json", baselines)
    summary = (f"best dumb baseline {best_name} val {dumb[best_name]['val']:.4f}; skeleton net val {real_score:.4f} "
               f"after {len(real.history)} epochs; init loss {init_loss:.3f} (expected {expected:.3f})")
    return StageResult(checks, metrics={"best_dumb_val": dumb[best_name]["val"], "skeleton_val": real_score,
                                        "init_loss": init_loss}, summary=summary)
