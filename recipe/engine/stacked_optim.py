"""Optimizers over stacked (K, ...) parameters with a per-member learning rate, weight decay and Adam betas.

torch.optim takes one lr per param group, and a group is a list of whole tensors: K members stacked in one
tensor cannot have K learning rates there. Every optimizer recipe offers is element-wise, so the update is
written out here with lr, weight decay and betas as (K, 1, ..., 1) tensors. The formulas follow torch.optim's
single-tensor implementations (same defaults: momentum 0.9, RMSprop alpha 0.99, eps 1e-8 / Adagrad 1e-10), so a
member's trajectory matches the engine's torch.optim run up to float rounding (tests/engine/test_stacked.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from recipe.errors import RecipeError

KINDS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
MOMENTUM = 0.9
RMSPROP_ALPHA = 0.99


class StackedOptimizer:
    """One `kind` optimizer per member of a stack; `keep(idx)` drops the others' state (the stack shrinks)."""

    def __init__(self, kind: str, params: dict[str, torch.Tensor], lr: Sequence[float],
                 weight_decay: Sequence[float], betas: Optional[Sequence[tuple[float, float]]] = None):
        if kind not in KINDS:
            raise RecipeError(f"train.optimizer: unknown optimizer '{kind}'")
        self.kind = kind
        self.params = params
        device = next(iter(params.values())).device
        k = len(lr)
        betas = list(betas) if betas is not None else [(0.9, 0.999)] * k
        vec = lambda xs: torch.tensor(list(xs), dtype=torch.float32, device=device)  # noqa: E731   (K,)
        self.hyper = {"lr": vec(lr), "wd": vec(weight_decay), "b1": vec(b for b, _ in betas),
                      "b2": vec(b for _, b in betas)}
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}
        self._views: dict = {}          # (hyperparameter, ndim) -> broadcastable view; per step: bias corrections
        self.steps = 0
        self.eps = 1e-10 if kind == "adagrad" else 1e-8

    def _h(self, name: str, ndim: int) -> torch.Tensor:   # (K,) -> (K, 1, ..., 1) to broadcast over a parameter
        key = (name, ndim)
        if key not in self._views:
            self._views[key] = self.hyper[name].view(-1, *([1] * (ndim - 1)))
        return self._views[key]

    def keep(self, idx: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        """Keep members `idx` (in that order); `params` are the already shrunk parameters."""
        self.params = params
        self.hyper = {k: v[idx] for k, v in self.hyper.items()}
        self._views = {}
        self.state = {name: {k: v[idx] for k, v in s.items()} for name, s in self.state.items()}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        t = self.steps
        if self.kind in ("adam", "adamw"):   # per member: lr / (1 - b1^t) and sqrt(1 - b2^t), once a step
            h = self.hyper
            self.hyper = {**h, "step": h["lr"] / (1 - h["b1"] ** t), "bc2": (1 - h["b2"] ** t).sqrt(),
                          "decay": 1 - h["lr"] * h["wd"], "1-b1": 1 - h["b1"], "1-b2": 1 - h["b2"]}
            self._views = {k: v for k, v in self._views.items() if k[0] in ("lr", "wd", "b1", "b2")}
        for name, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            s, nd = self.state[name], p.ndim
            lr, wd = self._h("lr", nd), self._h("wd", nd)
            if self.kind == "adamw":
                p.mul_(self._h("decay", nd))  # decoupled decay, before the moment update (as torch.optim.AdamW)
            else:
                g = g + wd * p
            if self.kind in ("adam", "adamw"):
                if not s:
                    s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
                s["m"].lerp_(g, self._h("1-b1", nd))
                s["v"].mul_(self._h("b2", nd)).add_(self._h("1-b2", nd) * g * g)
                denom = (s["v"].sqrt() / self._h("bc2", nd)).add_(self.eps)
                p.sub_(self._h("step", nd) * s["m"] / denom)
            elif self.kind in ("momentum", "nesterov"):
                if not s:
                    s["buf"] = g.clone()
                else:
                    s["buf"].mul_(MOMENTUM).add_(g)
                d = g + MOMENTUM * s["buf"] if self.kind == "nesterov" else s["buf"]
                p.sub_(lr * d)
            elif self.kind == "sgd":
                p.sub_(lr * g)
            elif self.kind == "adagrad":
                if not s:
                    s["sum"] = torch.zeros_like(p)
                s["sum"].add_(g * g)
                p.sub_(lr * g / (s["sum"].sqrt() + self.eps))
            else:   # rmsprop
                if not s:
                    s["sq"] = torch.zeros_like(p)
                s["sq"].mul_(RMSPROP_ALPHA).add_((1 - RMSPROP_ALPHA) * g * g)
                p.sub_(lr * g / (s["sq"].sqrt() + self.eps))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None
