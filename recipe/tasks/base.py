"""The task interface: everything that differs between classification, regression and later tasks.

Stages, engine, predict and report ask the task object (`recipe.tasks.get(name)`) instead of branching on the
task's name. A new task is one module with one `Task` subclass, registered with `@register`; its tests go in
tests/tasks/. Methods take torch tensors as the engine holds them: `out` is a model's output on a split or batch,
`y` the targets as the network sees them (class ids, standardized values, token ids).
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import torch


class Task:
    name: ClassVar[str]
    metric: ClassVar[str]            # the score's key in records and curves: "accuracy", "r2"
    metric_label: ClassVar[str]      # the score as people read it: "accuracy", "R²"
    loss_label: ClassVar[str]        # "log-loss", "squared error"
    loss_unit: ClassVar[str]         # unit of a per-row loss difference, for evidence
    higher_is_better: ClassVar[bool] = True   # of the score; the loss is always lower-is-better
    stratify: ClassVar[bool] = False          # splits keep target ratios equal (needs discrete targets)
    has_classes: ClassVar[bool] = False       # targets are class ids with priors, per-class scores, confusion

    # ------------------------------------------------------------------ outputs and losses

    def num_outputs(self, num_classes: int) -> int:
        """Width of the model's output for this task."""
        raise NotImplementedError

    def shape_output(self, out: torch.Tensor, batch: int, num_outputs: int) -> torch.Tensor:
        """Validate a model's output shape (a clear ModelError otherwise) and bring it to the loss's shape."""
        raise NotImplementedError

    def flat(self, out: torch.Tensor) -> torch.Tensor:
        """A valid output in the loss's shape, without validation (the hot path after the first batch)."""
        return out

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training loss (float32) of outputs in the loss's shape."""
        raise NotImplementedError

    def row_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row loss (float64): the unit a paired bootstrap resamples."""
        raise NotImplementedError

    def row_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row contribution to the score, higher is better (float64): correctness, or minus squared error."""
        raise NotImplementedError

    def score(self, out: torch.Tensor, y: torch.Tensor, num_classes: int = 0) -> dict[str, Any]:
        """Loss and score of outputs on a whole split: {"loss", "score", self.metric: score, ...}."""
        raise NotImplementedError

    # ------------------------------------------------------------------ predictions

    def prediction(self, out: torch.Tensor) -> torch.Tensor:
        """What an ensemble averages and predict writes: probabilities (N, C), or predictions (N,)."""
        raise NotImplementedError

    def combine(self, outputs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        """Weighted average of members' outputs, returned in output space (log-probabilities or predictions)."""
        raise NotImplementedError

    def as_output(self, out: torch.Tensor) -> torch.Tensor:
        """One model's output in the space `combine` returns, so a single model and an ensemble compare."""
        return out

    def disagreement(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """How differently two models predict a split (0: the same predictions)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ expectations from the data report

    def output_bias(self, priors: Optional[Sequence[float]]) -> torch.Tensor:
        """The final layer's bias that makes the untrained model predict the train targets' mean or priors."""
        raise NotImplementedError

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        """The loss of a model whose output is the bias above, from inspect's data report."""
        raise NotImplementedError

    def acceptable_init_losses(self, report: dict[str, Any], num_classes: int) -> list[float]:
        """Initial losses that are fine for a model as built (before recipe sets the output bias)."""
        return [self.expected_init_loss(report)]

    # ------------------------------------------------------------------ dumb baselines

    def dumb_models(self, seed: int) -> dict[str, Any]:
        """The dumb baselines, unfitted (sklearn estimators whose `.score` is this task's score)."""
        raise NotImplementedError
