"""regularize's checks on its chosen model (too-strong, mode, still-improving), seed noise, and its pictures."""
from __future__ import annotations

import math

import numpy as np
import torch

from recipe import checks as C
from recipe.engine import train as E
from recipe.models_seq import SEQUENCE_KINDS


def noise(a, b) -> float:
    """Seed noise of the difference of two variants' mean val scores."""
    return math.sqrt(a.val_std ** 2 + b.val_std ** 2)


def beats(a, b) -> bool:
    """a's mean val score beats b's beyond their seed noise, in the task's direction (a lower loss beats)."""
    return a.gain_over(b) > max(noise(a, b), 1e-4)


UNDERFIT_MARGIN = 0.02   # train error must exceed the dumb baseline's val error by this much (or its noise)


def configured_rungs(cfg) -> tuple[str, ...]:
    """The regularizers the experiment config sets itself (the ladder's rung names): their strengths are the user's."""
    out = []
    if cfg.data.augment:
        out.append("augment")
    if cfg.model.dropout > 0:
        out.append("dropout")
    if cfg.train.weight_decay > 0:
        out.append("weight_decay")
    if cfg.train.early_stopping is not None:
        out.append("early_stopping")
    return tuple(out)


NAMES = {"weight_decay": "weight decay", "dropout": "dropout", "augment": "augmentation",
         "smaller_model": "the smaller model", "smaller_batch": "the smaller batch", "early_stopping": "early stopping",
         "fewer_features": "dropping inputs"}


def weaken(rung: str, ccfg) -> str:
    """What makes this rung milder, with the chosen config's value where it has one."""
    if ccfg is None:
        return "a smaller value in the config"
    t, m = ccfg.train, ccfg.model
    return {
        "weight_decay": f"lower train.weight_decay (chosen {t.weight_decay:g})",
        "dropout": f"lower model.dropout (chosen {m.dropout:g})",
        "augment": f"use fewer or milder data.augment transforms (chosen {', '.join(ccfg.data.augment)})",
        "early_stopping": "raise train.early_stopping.patience (chosen "
                          f"{t.early_stopping.patience if t.early_stopping else '-'}) or drop early stopping",
        "smaller_model": (f"keep the wider model.n_embd (the smaller one, {m.n_embd}, cannot fit train)"
                          if m.kind in SEQUENCE_KINDS else
                          f"keep the larger model.hidden (the smaller one, {m.hidden}, cannot fit train)"),
        "smaller_batch": f"keep the larger train.batch_size (chosen {t.batch_size})",
        "fewer_features": "keep the inputs the fewer_features rung zeroed (model.drop_inputs)",
    }.get(rung, f"weaken {NAMES.get(rung, rung)}")


def check_too_strong(variants, ref, chosen, rungs, dumb_error, n_val: int = 0, chosen_rungs: tuple = (),
                     configured: tuple = (), chosen_cfg=None) -> C.Check:
    """Fails only for the chosen settings (`chosen_rungs`: the rungs the shipped choice is made of), and blames only
    those of them that restrict the fit, with advice for that rung. A rung that underfit but was not chosen cost
    nothing: it warns when its strength is the user's own setting (`configured`), which later stages would use, and
    is only reported when it is recipe's default strength."""
    p = min(max(dumb_error, 1 / max(n_val, 1)), 1 - 1e-6)    # a perfect dumb score on a small val split is noisy too
    margin = max(UNDERFIT_MARGIN, math.sqrt(p * (1 - p) / n_val) if n_val else 0.0)
    underfit = {v.name: round(v.train_error, 4) for v in variants[1:]
                if v.name in rungs and v.train_error > dumb_error + margin}
    worse = [v.name for v in variants[1:] if v.name in rungs and beats(ref, v)]
    chosen_error = chosen.train_error
    blamed = [r for r in chosen_rungs if r in NAMES]       # larger_model, train_longer add fit: never to blame
    ev = {"best_dumb_val_error": round(dumb_error, 4), "margin": round(margin, 4), "train_error_of_underfitting_rungs": underfit,
          "val_worse_rungs": worse, "chosen": list(chosen_rungs) or "reference", "chosen_train_error": round(chosen_error, 4)}
    names = NAMES
    if blamed and chosen_error > dumb_error + margin:
        which = " + ".join(names[k] for k in blamed)
        advice = "; ".join(weaken(k, chosen_cfg) for k in blamed)
        return C.make("regularize.too-strong", "fail", f"too strong: the chosen {which} leaves train error "
                      f"{chosen_error:.3f}, worse than the best dumb baseline on val ({dumb_error:.3f}, margin "
                      f"{margin:.3f})", ev,
                      f"Weaken {which}: {advice}. The model no longer fits the train set.")
    unchosen = ", ".join(f"{k} (train error {v:.3f})" for k, v in underfit.items())
    mine = [k for k in underfit if k in configured]
    if mine:
        which = ", ".join(f"{names.get(k, k)} ({k}, train error {underfit[k]:.3f})" for k in mine)
        return C.make("regularize.too-strong", "warn", f"not kept, too strong as configured: {which} is worse on "
                      f"train than the best dumb baseline on val ({dumb_error:.3f}, margin {margin:.3f})", ev,
                      "Weaken it in the config (a smaller value): at this strength the model no longer fits train.")
    if worse:
        return C.make("regularize.too-strong", "warn", "made val worse beyond noise, not kept: " + ", ".join(worse), ev,
                      "Those rungs cost more train fit than they gave back on val; try milder settings.")
    if underfit:
        return C.make("regularize.too-strong", "pass", f"the chosen settings fit train; not kept because they "
                      f"underfit: {unchosen}", ev)
    return C.make("regularize.too-strong", "pass", "no rung pushed the model into underfitting", ev)


def check_mode(cfg, chosen, trainer, ds, th) -> C.Check:
    from torch import nn

    from recipe import tasks
    from recipe.stages.overfit import engine_classes

    model = chosen.models[0]
    precision = trainer.config(chosen.overrides).train.precision
    classes = engine_classes(ds)
    ev_mode = E.evaluate(model, trainer.va, ds.task, classes, precision=precision)["score"]
    torch.manual_seed(cfg.seed)
    tr_mode = E.evaluate(model, trainer.va, ds.task, classes, train_mode=True, precision=precision)["score"]
    mods = list(model.modules())
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mods)
    has_do = any(isinstance(m, nn.Dropout) and m.p > 0 for m in mods)
    bs = trainer.config(chosen.overrides).train.batch_size
    ev = {"val_eval_mode": round(ev_mode, 4), "val_train_mode": round(tr_mode, 4), "gap": round(ev_mode - tr_mode, 4),
          "batchnorm": has_bn, "dropout": has_do, "batch_size": bs, "max_gap": th["max_gap"]}
    problems = []
    if tasks.get(ds.task).gain(tr_mode, ev_mode) > th["max_gap"]:
        problems.append("eval mode scores worse than train mode (BatchNorm running statistics off?)")
    if has_bn and bs < 8:
        problems.append(f"BatchNorm with batches of {bs}")
    if has_bn and has_do:
        problems.append("dropout next to BatchNorm (variance shift between train and eval)")
    if problems:
        return C.make("regularize.mode", "warn", "; ".join(problems), ev,
                      "Evaluate in model.eval(); use larger batches with BatchNorm or drop one of dropout/BatchNorm.")
    return C.make("regularize.mode", "pass", f"eval-mode val {ev_mode:.4f} vs train-mode {tr_mode:.4f}: consistent", ev)


def check_still_improving(chosen, th) -> C.Check:
    from recipe import tasks

    task = tasks.get(chosen.task)
    best = max if task.higher_is_better else min
    gains = []
    for hist in chosen.history:
        scores = [h["val_score"] for h in hist if "val_score" in h]
        if len(scores) >= 5:
            k = max(2, len(scores) // 5)
            gains.append(task.gain(best(scores[-k:]), best(scores[:-k])))
    if not gains:
        return C.make("regularize.still-improving", "skip", "too few epochs to judge")
    gain = float(np.mean(gains))
    ev = {"val_gain_last_fifth": round(gain, 4), "min_recent_gain": th["min_recent_gain"],
          "epochs": [len(h) for h in chosen.history]}
    if gain > th["min_recent_gain"]:
        return C.make("regularize.still-improving", "warn", f"val score still improved {gain:.4f} in the last fifth "
                      "of training", ev, "Train longer (raise train.epochs): the model has not converged.")
    return C.make("regularize.still-improving", "pass", f"val score flat at the end (last-fifth gain {gain:+.4f})", ev)


def pictures(ctx, ds, variants, ref, diagnostics, model, ccfg) -> None:
    from recipe import plots

    from recipe import tasks

    metric = tasks.get(ref.task).metric
    rows = [v for v in variants if v.val]
    ctx.artifacts.figure("ablation.png", plots.bars([v.name for v in rows], [v.val_mean for v in rows],
                                                    [v.val_std for v in rows], f"val {metric} per variant (± seed std)",
                                                    f"val {metric}", reference=ref.val_mean))
    lc = diagnostics.get("learning_curve")
    if lc:
        sized = all(isinstance(n, int) for n in lc.get("train_size", [None]))
        ctx.artifacts.figure("learning_curve.png", plots.curves(
            {"val error": lc["val_error"]}, f"train {lc['unit']}" if sized else "fraction of train",
            "val error" if tasks.get(ref.task).higher_is_better else f"val loss ({metric})",
            "learning curve" + (": more data would help" if lc["more_data_helps"] else ""),
            x={"val error": lc["train_size"] if sized else lc["fractions"]}))
    _look_at_the_net(ctx, ds, model, ccfg.train.precision)


def _look_at_the_net(ctx, ds, model, precision: str) -> None:
    """First-layer weights as images (image-shaped data) and per-layer activation histograms on val."""
    import matplotlib.pyplot as plt
    from torch import nn

    from recipe import plots

    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if first is not None and len(ds.shape) == 3:
        w = first.weight.detach().float().cpu().numpy()
        if isinstance(first, nn.Linear) and w.shape[1] == int(np.prod(ds.shape)):
            ctx.artifacts.figure("first_layer.png", plots.image_grid(w[:32], ds.shape, [str(i) for i in range(min(32, len(w)))],
                                                                     "first-layer weights (noisy = warning sign)"))
        elif isinstance(first, nn.Conv2d):
            f = w[:32, :1]
            ctx.artifacts.figure("first_layer.png", plots.image_grid(f.reshape(len(f), -1), (1, *f.shape[2:]),
                                                                     [str(i) for i in range(len(f))], "first conv filters"))
    acts: dict[str, torch.Tensor] = {}
    def keep(name):
        def hook(module, args, out):   # returns None: a forward hook that returns a value replaces the output
            acts.setdefault(name, out.detach().float().reshape(-1).cpu())
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU))]
    va = ctx.tensors("val")
    E.predict(model, va.x[:512], precision=precision)
    for h in hooks:
        h.remove()
    if acts:
        fig, axes = plt.subplots(1, len(acts), figsize=(2.6 * len(acts), 2.2), squeeze=False)
        for ax, (name, a) in zip(axes[0], acts.items()):
            ax.hist(a.numpy(), bins=40)
            ax.set_title(f"{name}: {float((a == 0).float().mean()):.0%} zero", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.suptitle("activations of the chosen model on val", fontsize=9)
        fig.tight_layout()
        ctx.artifacts.figure("activations.png", fig)
