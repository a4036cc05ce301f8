"""K seeds of one configuration trained as one stacked model (the stacked engine); sequential fallback.

Each seed keeps its own initialisation (models.create with that seed), its own batch order (a generator
seeded like the engine's) and its own optimizer state: every optimizer recipe offers is element-wise,
so one optimizer over the stacked (K, ...) parameters is K independent optimizers. Without dropout the
batched run reproduces the sequential engine run up to float rounding (tests/stages/test_tune.py checks it),
and each seed's health checks come back in its RunResult as from fit.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from recipe.engine import schedule as lr_schedule
from recipe.engine import train as E

# Leaf modules whose forward is a pure function of (params, input): safe under vmap.
_VMAP_SAFE = (nn.Linear, nn.Conv2d, nn.Flatten, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.ReLU,
              nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU)


def why_sequential(model: nn.Module, cfg, device: torch.device) -> Optional[str]:
    """None when the K seeds can train as one stacked model; otherwise the reason they cannot."""
    if any(True for _ in model.buffers()):
        return "the model has buffers (BatchNorm running statistics)"
    for m in model.modules():
        if not list(m.children()) and not isinstance(m, _VMAP_SAFE):
            return f"layer {type(m).__name__} is not known to be vmap-safe"
    if cfg.data.augment:
        return "data augmentation draws per-batch randomness"
    if E.resolve_precision(device, cfg.train.precision)[0] == "fp16":   # asked for, or bf16's fallback
        return "fp16 needs a gradient scaler per model"
    return unstackable_train_keys(cfg)


def unstackable_train_keys(cfg) -> Optional[str]:
    """The stacked engine does not clip gradients or schedule the lr: configs that ask for either train one by
    one (in fit, which does both) rather than silently without them."""
    t = cfg.train
    if t.grad_clip is not None:
        return "train.grad_clip is set (the stacked engine does not clip gradients)"
    if lr_schedule.from_config(t) is not None:
        return f"train.schedule {t.schedule} with warmup {t.warmup_fraction or t.warmup_steps} is set " \
               "(the stacked engine keeps the lr constant)"
    return None


# fit_seeds' keyword overrides and the config keys they stand for (the stack takes its settings from configs)
_OVERRIDE_KEYS = {"epochs": "train.epochs", "lr": "train.lr", "weight_decay": "train.weight_decay",
                  "batch_size": "train.batch_size"}


def fit_seeds(cfg, ds, train: E.Tensors, val: E.Tensors, seeds: list[int], device: torch.device,
              batched: bool = True, curves: Optional[list] = None,
              **overrides: Any) -> tuple[list[E.RunResult], list[nn.Module], str]:
    """Train cfg once per seed. Returns (results, models, how) where how is 'batched' or 'sequential: why'.
    `curves`: one metrics.jsonl path per seed (each run's curve, stacked or not).
    Batched seeds are members of one stack in the stacked engine (recipe/engine/stacked.py), which keeps fit's
    rules per member: batch order, early stopping, time budget, restore-best and health monitors."""
    from recipe.engine.stacked import fit_stacked_from_configs, too_big_to_stack, why_not_stacked
    from recipe.models import create

    models = [create(cfg, ds, s).to(device) for s in seeds]
    unknown = sorted(set(overrides) - set(_OVERRIDE_KEYS))
    reason = "batching turned off" if not batched else \
        (f"overrides {unknown} have no config key" if unknown else why_not_stacked(models, cfg, device)
         or too_big_to_stack(models[0], overrides.get("batch_size", cfg.train.batch_size), device))
    if reason is None and len(seeds) > 1:
        base = cfg.with_overrides({_OVERRIDE_KEYS[k]: v for k, v in overrides.items()})
        cfgs = [base.with_overrides({"seed": s}) for s in seeds]
        return fit_stacked_from_configs(models, cfgs, ds, train, val, metrics_paths=curves), models, "batched"
    curves = curves or [None] * len(seeds)
    results = [E.fit_from_config(m, train, val, cfg, ds, seed=s, metrics_path=c, **overrides)
               for m, s, c in zip(models, seeds, curves)]
    return results, models, f"sequential: {reason or 'one seed'}"
