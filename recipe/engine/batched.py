"""K seeds of one configuration trained as one stacked model (torch.func + vmap); sequential fallback.

Each seed keeps its own initialisation (models.create with that seed), its own batch order (a generator
seeded like the engine's) and its own optimizer state: every optimizer recipe offers is element-wise,
so one optimizer over the stacked (K, ...) parameters is K independent optimizers. Without dropout the
batched run reproduces the sequential engine run up to float rounding (tests/stages/test_tune.py checks it).
Health monitors are not run here: these are reruns of configurations the engine already trained.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

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
    return None


def fit_seeds(cfg, ds, train: E.Tensors, val: E.Tensors, seeds: list[int], device: torch.device,
              batched: bool = True, **overrides: Any) -> tuple[list[E.RunResult], list[nn.Module], str]:
    """Train cfg once per seed. Returns (results, models, how) where how is 'batched' or 'sequential: why'."""
    from recipe.models import create

    models = [create(cfg, ds, s).to(device) for s in seeds]
    reason = why_sequential(models[0], cfg, device) if batched else "batching turned off"
    if reason is None and len(seeds) > 1:
        return _fit_stacked(models, cfg, ds, train, val, seeds, device, **overrides), models, "batched"
    results = [E.fit_from_config(m, train, val, cfg, ds, seed=s, **overrides) for m, s in zip(models, seeds)]
    return results, models, f"sequential: {reason or 'one seed'}"


def _fit_stacked(models: list[nn.Module], cfg, ds, train: E.Tensors, val: E.Tensors, seeds: list[int],
                 device: torch.device, **overrides: Any) -> list[E.RunResult]:
    from torch.func import functional_call, stack_module_state, vmap

    t = cfg.train
    epochs = overrides.get("epochs", t.epochs)
    lr = overrides.get("lr", t.lr)
    weight_decay = overrides.get("weight_decay", t.weight_decay)
    batch_size = overrides.get("batch_size", t.batch_size)
    early = t.early_stopping.model_dump() if t.early_stopping else None
    restore_best = early is not None
    metric = (early or {}).get("metric", "val_loss")
    patience = (early or {}).get("patience")
    max_seconds = t.max_seconds
    task, num_classes = ds.task, ds.num_classes
    k = len(models)

    params, _ = stack_module_state(models)          # name -> (K, *shape), leaf tensors
    base = copy.deepcopy(models[0]).to("meta")     # the architecture; its weights come from `params`

    def call(p, x):
        return functional_call(base, (p,), (x,))

    forward = vmap(call, in_dims=(0, 0), randomness="different")          # x: (K, B, D) -> (K, B, C)
    forward_shared = vmap(call, in_dims=(0, None), randomness="different")  # x: (N, D)   -> (K, N, C)
    opt = E.make_optimizer(t.optimizer, params.values(), lr, weight_decay)
    autocast = E._autocast(device, t.precision)
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(s)
        gens.append(g)
    n = len(train)
    bs = min(batch_size, n)
    results = [E.RunResult() for _ in range(k)]
    best_value = [math.inf] * k
    since_best = [0] * k
    best_state: list[Optional[dict]] = [None] * k
    finite = torch.ones(k, dtype=torch.bool, device=device)
    start = time.perf_counter()
    step = 0

    def outputs(x_stacked=None, x_shared=None):
        ctx = autocast if autocast is not None else torch.autocast(device.type, enabled=False)
        with ctx:
            out = forward(params, x_stacked) if x_stacked is not None else forward_shared(params, x_shared)
        out = out.float()
        return out[..., 0] if task == "regression" and out.ndim == 3 else out

    def per_model_loss(out, y):  # out (K, B, C) or (K, B); y (K, B) -> (K,)
        if task == "classification":
            kk, b, c = out.shape
            return F.cross_entropy(out.reshape(kk * b, c), y.reshape(-1), reduction="none").view(kk, b).mean(1)
        return ((out - y) ** 2).mean(1)

    for epoch in range(epochs):
        base.train()
        perms = torch.stack([torch.randperm(n, generator=g, device=device) for g in gens])   # (K, N)
        epoch_loss = torch.zeros(k, device=device)
        batches = 0
        for i in range(0, n, bs):
            idx = perms[:, i:i + bs]                                                           # (K, B)
            if idx.shape[1] < 2 and batches:
                continue
            loss = per_model_loss(outputs(x_stacked=train.x[idx]), train.y[idx])             # (K,)
            if step == 0:
                for r, v in zip(results, loss.detach().tolist()):
                    r.first_loss = v
            finite &= torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            # a diverged seed must not poison the others: its loss leaves the sum (grads are per model anyway)
            torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
            opt.step()
            epoch_loss += loss.detach()
            step += 1
            batches += 1
        base.eval()
        with torch.no_grad():
            val_out = outputs(x_shared=val.x)                                                 # (K, N, C)
        for j in range(k):
            r = results[j]
            r.samples += n
            if not bool(finite[j]):
                r.stopped = "non_finite"
                continue
            v = E.score_outputs(val_out[j], val.y, task, num_classes)
            row = {"epoch": epoch + 1, "step": step, "train_loss": float(epoch_loss[j]) / max(batches, 1),
                   "val_loss": v["loss"], "val_score": v["score"], "seconds": round(time.perf_counter() - start, 4)}
            if patience is not None and since_best[j] >= patience:
                continue                      # this seed has stopped: its later epochs do not exist
            r.history.append(row)
            value = row["val_loss"] if metric == "val_loss" else -row["val_score"]
            if value < best_value[j] - 1e-9:
                best_value[j], since_best[j], r.best_epoch = value, 0, epoch + 1
                r.best = dict(v)
                if restore_best:
                    best_state[j] = {name: p[j].detach().clone() for name, p in params.items()}
            else:
                since_best[j] += 1
            if not restore_best:
                r.best = dict(v)              # without early stopping the last epoch is the model
            if patience is not None and since_best[j] >= patience:
                r.stopped = "early_stopping"
        active = [j for j in range(k) if bool(finite[j]) and (patience is None or since_best[j] < patience)]
        if not active:
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            for j in active:
                results[j].stopped = "max_seconds"
            break
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for j, (model, r) in enumerate(zip(models, results)):
            state = best_state[j] if best_state[j] is not None else {name: p[j].detach() for name, p in params.items()}
            model.load_state_dict({name: w.clone() for name, w in state.items()})
            r.steps, r.seconds = step, seconds / k
            if r.stopped != "non_finite":
                r.best = E.evaluate(model, val, task, num_classes, precision=t.precision)
                r.final_train = E.evaluate(model, train, task, num_classes, precision=t.precision)
    return results
