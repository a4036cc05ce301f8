"""Health monitors run inside the one training loop (health.* checks of DESIGN §5).

The engine calls `on_batch_end` after every optimizer step with the loss tensor (no sync);
monitors sample expensive statistics every `every` steps so their cost stays small.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from recipe import checks as C


class NonFiniteLoss(Exception):
    """Raised inside the loop to stop at once; carries the step and the first bad layer."""

    def __init__(self, step: int, layer: Optional[str], what: str):
        self.step, self.layer, self.what = step, layer, what
        super().__init__(f"non-finite {what} at step {step}" + (f" (first in {layer})" if layer else ""))


def first_non_finite_parameter(model: nn.Module) -> tuple[Optional[str], str]:
    """Name of the first parameter (in module order) whose gradient or value is NaN/inf."""
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name, "gradient"
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return name, "weight"
    return None, "loss"


class Health:
    """Collects per-run health evidence and turns it into health.* checks."""

    def __init__(self, model: nn.Module, every: int = 50, thresholds: Optional[dict] = None):
        self.model = model
        self.every = every
        self.overrides = thresholds or {}
        self.pending: list[torch.Tensor] = []
        self.first_step = 0
        self.epoch_losses: list[float] = []
        self.non_finite: Optional[NonFiniteLoss] = None

    # -- called by the engine ------------------------------------------------------------
    def on_batch_end(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())
        if len(self.pending) >= self.every:
            self.flush(step)

    def flush(self, step: int) -> None:
        """One device sync for the pending losses: stop at the first non-finite one."""
        if not self.pending:
            return
        buf = torch.stack(self.pending).float()
        first = self.first_step
        self.pending, self.first_step = [], step + 1
        finite = torch.isfinite(buf)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            layer, what = first_non_finite_parameter(self.model)
            self.non_finite = NonFiniteLoss(first + bad, layer, "loss" if what == "loss" else what)
            raise self.non_finite

    def on_epoch_end(self, train_loss: float) -> None:
        self.epoch_losses.append(train_loss)

    # -- verdicts ------------------------------------------------------------------------
    def checks(self) -> list[C.Check]:
        out = []
        if self.non_finite is not None:
            e = self.non_finite
            out.append(C.make(
                "health.non-finite", "fail", f"training produced a non-finite {e.what} at step {e.step}",
                {"step": e.step, "first_bad_parameter": e.layer, "what": e.what},
                "Lower the learning rate, check the data for NaN/inf (recipe inspect), and look for log(0) or "
                "division by zero in custom layers.",
            ))
        else:
            out.append(C.make("health.non-finite", "pass", "loss stayed finite",
                              {"epochs": len(self.epoch_losses)}))
        out.append(self._loss_curve())
        return out

    def _loss_curve(self) -> C.Check:
        losses = [v for v in self.epoch_losses if math.isfinite(v)]
        if len(losses) < 4:
            return C.make("health.loss-curve", "skip", "too few epochs to judge the loss curve",
                          {"epochs": len(losses)})
        first, last, best = losses[0], losses[-1], min(losses)
        ev = {"first": first, "last": last, "best": best, "epochs": len(losses)}
        if last > first * 1.05:
            return C.make("health.loss-curve", "warn", "training loss went up over the run", ev,
                          "The learning rate is probably too high: lower it (overfit.lr-range suggests one).")
        return C.make("health.loss-curve", "pass", "training loss went down", ev)
