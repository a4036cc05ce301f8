"""Stage 2: an end-to-end skeleton and dumb baselines; the silent model bugs surface here."""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from recipe import checks as C
from recipe.engine import train as E
from recipe.models import create, final_layer
from recipe.runner import StageResult

SHORT_EPOCHS = 10       # the skeleton run: enough to see the loss go down, short enough to be cheap
SHORT_SECONDS = 30.0
SEED_ROWS = 512


def _loss(model, t, task) -> float:
    out = E.predict(model, t.x)
    return float(E.loss_fn(task)(out if task == "classification" else out.reshape(-1), t.y))


def expected_init_loss(report: dict) -> float:
    """Cross-entropy of predicting the class priors (their entropy), or 1.0 for standardized targets."""
    if report["task"] == "classification":
        p = np.asarray(report["class_priors"], float)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    return 1.0


# ----------------------------------------------------------------------------- checks


def check_seed(cfg, ds, tr, train_kwargs) -> C.Check:
    sub = tr.subset(torch.arange(min(SEED_ROWS, len(tr)), device=tr.x.device))
    runs = []
    with E.deterministic(tr.x.device):    # on CUDA: no cuDNN/atomics nondeterminism between the two runs
        for _ in range(2):
            model = create(cfg, ds, cfg.seed).to(tr.x.device)
            r = E.fit(model, sub, None, **{**train_kwargs, "epochs": 2, "max_seconds": None, "early_stopping": None})
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


def check_init_loss(model, tr, ds, report, th) -> tuple[C.Check, float, float]:
    actual = _loss(model, tr, ds.task)
    expected = expected_init_loss(report)
    rel = abs(actual - expected) / max(expected, 1e-8)
    ev = {"initial_loss": round(actual, 5), "expected": round(expected, 5), "relative_error": round(rel, 4),
          "rel_tolerance": th["rel_tolerance"]}
    if ds.task == "classification":
        ev["uniform_guess"] = round(math.log(ds.num_classes), 5)
    else:
        ev["target"] = "standardized (variance 1)"
    if not math.isfinite(actual) or rel > th["rel_tolerance"]:
        side = "too high" if not math.isfinite(actual) or actual > expected else "too low"
        advice = ("Initial outputs are too confident: check the final layer's scale and init (recipe sets its bias "
                  "to the log class priors), and that the loss gets logits." if side == "too high" else
                  "A loss below chance before training means the target leaks into the input or the loss is "
                  "computed on the wrong tensors.")
        return C.make("baseline.init-loss", "fail", f"initial loss {actual:.4g} is {side}: expected ~{expected:.4g}",
                      ev, advice), actual, expected
    return C.make("baseline.init-loss", "pass", f"initial loss {actual:.4g} ~ expected {expected:.4g}", ev), actual, expected


def check_bias_init(model, tr, ds, th) -> C.Check:
    layer = final_layer(model, ds.num_outputs)
    out = E.predict(model, tr.x).float()
    ev: dict[str, Any] = {"final_layer_found": layer is not None}
    if ds.task == "classification":
        mean_p = torch.softmax(out, 1).mean(0).cpu().numpy()
        priors = np.asarray(ds.class_priors())
        tv = 0.5 * float(np.abs(mean_p - priors).sum())
        ev.update(mean_predicted=[round(float(v), 4) for v in mean_p[:10]], priors=[round(float(v), 4) for v in priors[:10]],
                  tv_distance=round(tv, 4), max_tv=th["max_tv"])
        bad = tv > th["max_tv"]
        what = f"mean prediction at init is {tv:.3f} (total variation) away from the class priors"
    else:
        offset = float(out.reshape(-1).mean())   # standardized target: the train mean is 0
        ev.update(mean_output=round(offset, 4), max_mean_offset=th["max_mean_offset"])
        bad = abs(offset) > th["max_mean_offset"]
        what = f"mean output at init is {offset:+.3f} target standard deviations from the target mean"
    if bad:
        return C.make("baseline.bias-init", "fail", what, ev,
                      "Initialise the final layer's bias to the log class priors (or the target mean) and keep "
                      "anything after it from shifting the output.")
    if layer is None:
        return C.make("baseline.bias-init", "warn", what + "; no final nn.Linear with the output size was found", ev,
                      "recipe could not set the output bias itself: initialise it in your factory.")
    return C.make("baseline.bias-init", "pass", what, ev)


def dumb_baselines(ds, seed: int) -> dict[str, dict[str, Any]]:
    """Majority/mean, linear and gradient-boosting scores on train and val (sklearn)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    cls = ds.task == "classification"
    xt, xv = ds.normalize(ds.train.x), ds.normalize(ds.val.x)
    yt, yv = ds.train.y, ds.val.y
    models = {
        "majority" if cls else "mean": DummyClassifier(strategy="most_frequent") if cls else DummyRegressor(),
        "linear": LogisticRegression(max_iter=500) if cls else Ridge(),
        "gradient_boosting": (HistGradientBoostingClassifier if cls else HistGradientBoostingRegressor)(
            max_iter=60, random_state=seed, early_stopping=False),
    }
    from threadpoolctl import threadpool_limits

    from recipe import threads

    out = {}
    for name, m in models.items():
        # gradient boosting's OpenMP pool and BLAS: one thread on small data, so a busy core cannot stall them
        with threadpool_limits(threads.for_work(xt.size * 60)):
            m.fit(xt, yt)
        row: dict[str, Any] = {"train": float(m.score(xt, yt)), "val": float(m.score(xv, yv))}
        if cls:
            pred = m.predict(xv)
            row["val_per_class"] = [float((pred[yv == c] == c).mean()) if (yv == c).any() else None
                                    for c in range(ds.num_classes)]
        out[name] = row
    return out


def check_dumb(dumb: dict, ds) -> C.Check:
    best = max(dumb, key=lambda k: dumb[k]["val"])
    metric = "accuracy" if ds.task == "classification" else "R²"
    ev = {k: {"train": round(v["train"], 4), "val": round(v["val"], 4)} for k, v in dumb.items()}
    ev.update(best=best, metric=metric)
    trivial = "majority" if ds.task == "classification" else "mean"
    if dumb["linear"]["val"] - dumb[trivial]["val"] < 0.01 and dumb["gradient_boosting"]["val"] - dumb[trivial]["val"] < 0.01:
        return C.make("baseline.dumb", "warn", f"no baseline beats {trivial} prediction ({metric} "
                      f"{dumb[trivial]['val']:.3f})", ev,
                      "The features barely predict the target; check data.signal before training a network.")
    return C.make("baseline.dumb", "pass", f"best dumb baseline: {best}, val {metric} {dumb[best]['val']:.4f}", ev)


def check_input_independent(real_score: float, zero_score: float, ds, th) -> C.Check:
    gap = real_score - zero_score
    ev = {"val_score_real_inputs": round(real_score, 4), "val_score_zeroed_inputs": round(zero_score, 4),
          "gap": round(gap, 4), "min_gap": th["min_gap"], "epochs": "same budget, same seed"}
    if gap < th["min_gap"]:
        return C.make("baseline.input-independent", "fail",
                      f"the model does as well with zeroed inputs ({zero_score:.3f}) as with real ones ({real_score:.3f})",
                      ev, "The model's output does not depend on its input: check that forward() uses x, and that "
                          "features reach the network (no detach, no overwritten tensor).")
    return C.make("baseline.input-independent", "pass",
                  f"real inputs beat zeroed inputs by {gap:.3f} val score", ev)


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
    ev = {"max_grad_on_other_samples": leak, "tolerance": th["tolerance"], "samples": len(x),
          "mode": "eval (BatchNorm uses running statistics, so it is not blamed)"}
    if leak > th["tolerance"]:
        return C.make("baseline.batch-independence", "fail",
                      "sample 0's output has gradient on other samples' inputs: the model mixes the batch", ev,
                      "Look for a view/reshape that mixes the batch dimension (use permute/transpose before view), "
                      "or a reduction over dim 0.")
    return C.make("baseline.batch-independence", "pass", "each sample's output depends on that sample only", ev)


def check_loss_input(model, tr, ds) -> C.Check:
    out = E.predict(model, tr.x[:256]).float()
    ev: dict[str, Any] = {}
    if ds.task == "classification":
        rowsum = out.sum(1)
        prob_like = bool((out >= 0).all() and (out <= 1).all() and torch.allclose(rowsum, torch.ones_like(rowsum), atol=1e-3))
        logprob_like = bool((out <= 1e-6).all() and torch.allclose(torch.logsumexp(out, 1), torch.zeros_like(rowsum), atol=1e-3))
        ev.update(min=float(out.min()), max=float(out.max()), mean_row_sum=float(rowsum.mean()))
        if prob_like:
            return C.make("baseline.loss-input", "fail", "model outputs are probabilities (rows sum to 1) but the loss "
                          "is cross-entropy on logits", ev,
                          "Remove the final softmax: CrossEntropyLoss applies log-softmax itself; a softmax before it "
                          "squashes gradients and slows or stalls learning.")
        if logprob_like:
            return C.make("baseline.loss-input", "warn", "model outputs are log-probabilities; cross-entropy applies "
                          "log-softmax again (harmless but redundant)", ev, "Return raw logits from the model.")
        return C.make("baseline.loss-input", "pass", "model outputs are unnormalized logits, as the loss expects", ev)
    flat = out.reshape(len(out), -1)[:, 0]
    ev.update(min=float(flat.min()), max=float(flat.max()))
    if bool((flat > 0).all() and (flat < 1).all()) and float(flat.std()) < 0.5 and (tr.y < 0).any():
        return C.make("baseline.loss-input", "fail", "regression outputs all lie in (0, 1), like a sigmoid, "
                      "but standardized targets are negative too", ev, "Remove the output activation for regression.")
    return C.make("baseline.loss-input", "pass", "regression output is unbounded", ev)


def check_grad_flow(model, tr, ds) -> C.Check:
    m = copy.deepcopy(model).train()
    m.zero_grad(set_to_none=True)
    x, y = tr.x[:64], tr.y[:64]
    out = m(x)
    out = out if ds.task == "classification" else out.reshape(len(x), -1)[:, 0]
    E.loss_fn(ds.task)(out.float(), y).backward()
    frozen, unused, zero = [], [], []
    for name, p in m.named_parameters():
        if not p.requires_grad:
            frozen.append(name)
        elif p.grad is None:
            unused.append(name)
        elif float(p.grad.abs().max()) == 0.0:
            zero.append(name)
    total = sum(1 for _ in m.parameters())
    ev = {"parameters": total, "frozen": frozen[:8], "no_gradient": unused[:8], "zero_gradient": zero[:8]}
    if frozen or unused or zero:
        parts = [f"{len(v)} {k}" for k, v in (("frozen", frozen), ("without gradient (unused)", unused),
                                               ("with all-zero gradient", zero)) if v]
        return C.make("baseline.grad-flow", "fail", "parameters that will not learn: " + ", ".join(parts), ev,
                      "Unfreeze (requires_grad=True) or remove those layers; unused ones are not in forward().")
    return C.make("baseline.grad-flow", "pass", f"all {total} parameter tensors receive a gradient", ev)


def _custom_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n or type(m).__name__, m) for n, m in model.named_modules()
            if not type(m).__module__.startswith("torch.") and not type(m).__module__.startswith("recipe.")
            and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]


def check_gradcheck(model, tr) -> C.Check:
    custom = _custom_modules(model)
    custom = [(n, m) for n, m in custom if not any(n.startswith(o + ".") for o, _ in custom if o != n)] or custom
    if not custom:
        return C.make("baseline.gradcheck", "skip", "no custom modules (only torch.nn layers, whose gradients are tested)")
    inputs: dict[str, torch.Tensor] = {}
    def keep(name):
        def hook(module, args, out):   # returns None: a forward hook that returns a value replaces the output
            if args and isinstance(args[0], torch.Tensor):
                inputs.setdefault(name, args[0].detach())
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in custom]
    with torch.no_grad():
        model.eval()(tr.x[:2].float())
    for h in hooks:
        h.remove()
    results, wrong = {}, []
    for name, module in custom[:8]:
        if name not in inputs or not torch.is_floating_point(inputs[name]):
            results[name] = "skipped (no float input seen)"
            continue
        m64 = copy.deepcopy(module).double().eval()
        x = inputs[name][:2].double().clone().requires_grad_(True)
        try:
            ok = torch.autograd.gradcheck(lambda t: m64(t), (x,), eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
        except Exception as e:  # a module that cannot run in float64 is reported, not fatal
            results[name] = f"skipped ({type(e).__name__})"
            continue
        results[name] = "ok" if ok else "WRONG"
        if not ok:
            wrong.append(name)
    ev = {"modules": results}
    if wrong:
        return C.make("baseline.gradcheck", "fail", f"analytic and numeric gradients disagree in {', '.join(wrong)}",
                      ev, "Fix the custom backward (or drop the custom autograd.Function and let autograd derive it).")
    return C.make("baseline.gradcheck", "pass", f"float64 gradcheck agrees on {len(results)} custom module(s)", ev)


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
    report = ctx.upstream_json("inspect", "data_report.json")
    th = ctx.thresholds
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    t = cfg.train
    kwargs = dict(task=ds.task, num_classes=ds.num_classes, optimizer=t.optimizer, lr=t.lr,
                  weight_decay=t.weight_decay, batch_size=t.batch_size, seed=cfg.seed, precision=t.precision,
                  health_thresholds=cfg.checks)
    checks: list[C.Check] = []
    with ctx.progress("baseline", 6) as bar:
        model = create(cfg, ds, cfg.seed).to(ctx.device)
        init_check, init_loss, expected = check_init_loss(model, tr, ds, report, th("baseline.init-loss"))
        checks += [check_seed(cfg, ds, tr, kwargs), init_check, check_bias_init(model, tr, ds, th("baseline.bias-init"))]
        checks += [check_loss_input(model, tr, ds), check_batch_independence(model, tr, th("baseline.batch-independence")),
                   check_grad_flow(model, tr, ds), check_gradcheck(model, tr)]
        bar.update(1)
        dumb = dumb_baselines(ds, cfg.seed)
        checks.append(check_dumb(dumb, ds))
        bar.update(2)
        epochs = min(t.epochs, SHORT_EPOCHS)
        probe_idx = torch.arange(min(16, len(va)), device=va.x.device)
        dynamics: list[list[float]] = []

        def watch(epoch, row, m=model):
            out = E.predict(m, va.x[probe_idx], precision=t.precision).float()
            if ds.task == "classification":
                dynamics.append(torch.softmax(out, 1).gather(1, va.y[probe_idx][:, None]).reshape(-1).cpu().tolist())
            else:
                dynamics.append(out.reshape(-1).cpu().tolist())

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
        checks.append(check_input_independent(real_score, float(zero_run.best.get("score", float("nan"))), ds,
                                              th("baseline.input-independent")))
        checks.append(check_loss_decreases(init_loss, real, th("baseline.loss-decreases")))
        checks += real.health
        bar.update(6)
    _batch_dump(ctx, ds, tr)
    from recipe import plots

    ctx.artifacts.figure("prediction_dynamics.png", plots.curves(
        {f"val sample {i}": [d[i] for d in dynamics] for i in range(min(8, len(probe_idx)))}, "epoch",
        "p(true class)" if ds.task == "classification" else "prediction (standardized)",
        "predictions on a fixed val batch over training"))
    ctx.artifacts.json("prediction_dynamics.json", dynamics)
    best_name = max(dumb, key=lambda k: dumb[k]["val"])
    baselines = {"task": ds.task, "metric": "accuracy" if ds.task == "classification" else "r2",
                 "dumb": dumb, "best_dumb": best_name, "best_dumb_val": dumb[best_name]["val"],
                 "best_dumb_train": dumb[best_name]["train"],
                 "expected_init_loss": expected, "init_loss": init_loss,
                 "skeleton": {"val_score": real_score, "epochs": len(real.history), **real.summary()}}
    ctx.artifacts.json("baselines.json", baselines)
    summary = (f"best dumb baseline {best_name} val {dumb[best_name]['val']:.4f}; skeleton net val {real_score:.4f} "
               f"after {len(real.history)} epochs; init loss {init_loss:.3f} (expected {expected:.3f})")
    return StageResult(checks, metrics={"best_dumb_val": dumb[best_name]["val"], "skeleton_val": real_score,
                                        "init_loss": init_loss}, summary=summary)
