"""Health monitors for a stack: each member's Health (recipe/engine/monitors.py) gets that member's own facts.

Losses arrive as (K,) tensors buffered like Health.on_batch_end does and are split per member at each flush;
gradient norms and update ratios are per-member norms of the stacked tensors; activations are watched by each
member's own hooks on an extra forward pass of its own model (hooks cannot read batched tensors inside vmap).
All of it on the steps Health samples, so it costs what the monitors cost in fit.
"""
from __future__ import annotations

from typing import Optional

import torch

from recipe.engine.monitors import NonFiniteLoss


def flush_losses(pending: list[torch.Tensor], first_step: int, active: list, params: dict,
                 names: list[str]) -> list[int]:
    """Buffered (K,) losses: each member's Health sees its own (and its metrics.jsonl gets the step line, as
    Health.flush writes it in fit); returns positions that went non-finite. `active`: the stack's loop.Runs."""
    if not pending:
        return []
    buf = torch.stack(pending).float().cpu()                                              # (S, K)
    bad = []
    for j, m in enumerate(active):
        h, col = m.health, buf[:, j]
        finite = torch.isfinite(col)
        if not bool(finite.all()):
            at = int((~finite).nonzero()[0, 0])
            layer, what = first_bad(params, names, j)
            if layer is not None:   # the member's own parameter name (its model may lack dropout layers)
                layer = [nm for nm, _ in m.model.named_parameters()][names.index(layer)]
            h.non_finite = NonFiniteLoss(first_step + at, layer, what)
            m.result.stopped = "non_finite"
            bad.append(j)
            continue
        if h.on_flush is not None:
            h.on_flush(first_step + len(col) - 1, float(col.mean()))
        h.observe_losses(col, first_step)      # raw and smoothed extremes, as Health.flush records them
    return bad


def first_bad(params: dict[str, torch.Tensor], names: list[str], j: int) -> tuple[Optional[str], str]:
    """Member j's first parameter (module order) with a non-finite gradient, else value (as the monitors say)."""
    for name in names:
        g = params[name].grad
        if g is not None and not torch.isfinite(g[j]).all():
            return name, "gradient"
    for name in names:
        if not torch.isfinite(params[name][j]).all():
            return name, "weight"
    return None, "loss"


def activation_stats(params, names, active, step, batches: list[torch.Tensor], autocast=None) -> None:
    """Health.before_forward for each member: its own model's activation hooks watch a forward pass of its batch
    with its current weights (views into the stack). Hooks cannot read batched tensors inside vmap, hence this
    extra pass, on sampled steps only."""
    import contextlib

    from torch.func import functional_call

    # the probe sees the precision the training forward runs in (train.precision)
    with torch.no_grad(), autocast if autocast is not None else contextlib.nullcontext():
        for j, (m, xb) in enumerate(zip(active, batches)):
            h = m.health
            h.before_forward(step)
            if not h._hooks:
                continue
            own = [nm for nm, _ in m.model.named_parameters()]
            try:
                functional_call(m.model, {own[i]: params[n][j] for i, n in enumerate(names)}, (xb,))
            finally:
                for hook in h._hooks:
                    hook.remove()
                h._hooks = []


def grad_stats(params, names, weights, active, step) -> list[torch.Tensor]:
    """Per-member gradient norms of the weight layers (Health.before_step for each member); returns a snapshot."""
    with torch.no_grad():
        norms = torch.stack([params[names[i]].grad.detach().float().flatten(1).norm(dim=1)
                             if params[names[i]].grad is not None else
                             torch.zeros(len(active), device=params[names[i]].device) for i in weights]).cpu()  # (L, K)
    for j, m in enumerate(active):
        h, col = m.health, norms[:, j]
        h.grad_norms.append((step, float(col.norm())))
        if len(col) >= 2 and float(col[-1]) > 0:
            h.layer_ratio.append(float(col[0]) / float(col[-1]))
    return [params[names[i]].detach().clone() for i in weights]


def update_stats(params, names, weights, snapshot, active) -> None:
    """Per-member |update| / |weight| of each weight layer (Health.after_step for each member)."""
    with torch.no_grad():
        pairs = torch.stack([torch.stack([(params[names[i]].detach() - old).float().flatten(1).norm(dim=1),
                                          old.float().flatten(1).norm(dim=1)])
                             for i, old in zip(weights, snapshot)]).cpu()                        # (L, 2, K)
    for j, m in enumerate(active):
        h = m.health
        for (layer, _), (delta, denom) in zip(h.weights, pairs[:, :, j].tolist()):
            if denom > 0:
                h.update_ratios.setdefault(layer, []).append(delta / denom)
