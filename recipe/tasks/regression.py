"""Regression: one real target per row, standardized with train statistics; squared error, R²."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recipe.errors import ModelError
from recipe.tasks.base import Task
from recipe.tasks.registry import register


@register
class Regression(Task):
    name = "regression"
    metric = "r2"
    metric_label = "R²"
    loss_label = "squared error"
    loss_unit = "squared error per row (std units)"

    def num_outputs(self, num_classes: int) -> int:
        return 1

    def shape_output(self, out, batch, num_outputs):
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if tuple(out.shape) != (batch,):
            raise ModelError(f"model output has shape {tuple(out.shape)}; regression expects ({batch},) or ({batch}, 1)")
        return out

    def flat(self, out):
        return out[:, 0] if out.ndim == 2 else out

    def loss(self, out, y):
        return F.mse_loss(out.float(), y)

    def row_loss(self, out, y):
        return ((out.reshape(len(out), -1)[:, 0] - y) ** 2).double()

    def row_score(self, out, y):
        return -self.row_loss(out, y)

    def score(self, out, y, num_classes=0):
        out = out[:, 0] if out.ndim == 2 else out
        mse = F.mse_loss(out, y).item()
        var = y.var(unbiased=False).item()
        r2 = 1.0 - mse / var if var > 0 else float("nan")
        return {"loss": mse, "score": r2, "r2": r2, "mse_std_units": mse}

    def prediction(self, out):
        return out.reshape(-1)

    def combine(self, outputs, weights):
        return sum(float(wi) * o.reshape(len(o), -1)[:, 0] for wi, o in zip(weights, outputs) if float(wi) > 0)

    def disagreement(self, a, b):
        return float((a.reshape(-1) - b.reshape(-1)).abs().mean())

    def output_bias(self, priors):
        return torch.zeros(1)          # standardized targets: the train mean is 0

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        return 1.0                     # predicting the mean of standardized targets: their variance

    def dumb_models(self, seed: int) -> dict[str, Any]:
        from sklearn.dummy import DummyRegressor
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge

        return {"mean": DummyRegressor(), "linear": Ridge(),
                "gradient_boosting": HistGradientBoostingRegressor(max_iter=60, random_state=seed,
                                                                   early_stopping=False)}
