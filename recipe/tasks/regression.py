"""Regression: one real target per row, standardized with train statistics; squared error, R²."""
from __future__ import annotations

from typing import Any

import numpy as np
from recipe.tasks._torch import F, torch

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
    trivial = "mean"
    balanced_label = "R²"
    probe_label = "prediction (standardized)"
    paired_test = "bootstrap"
    row_loss_key = "mse"
    row_loss_label = "MSE"
    memorize_loss_key = "regression_max_loss"

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

    def unreduced_loss(self, out, y):
        return (out - y) ** 2

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

    def in_target_units(self, pred, target_stats):
        return pred * target_stats["std"] + target_stats["mean"]

    def baseline_rows(self, net_out, base_pred, y):
        out = net_out.reshape(len(net_out), -1)[:, 0]
        return {"net": (out - y) ** 2, "base": (base_pred - y) ** 2}

    def output_bias(self, priors):
        return torch.zeros(1)          # standardized targets: the train mean is 0

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        return 1.0                     # predicting the mean of standardized targets: their variance

    def init_loss_evidence(self, num_classes):
        return {"target": "standardized (variance 1)"}

    def init_prediction(self, out, out_built, priors, num_classes, th):
        """Mean output in target standard deviations (standardized targets: the train mean is 0)."""
        gap, gap_built = float(out.float().reshape(-1).mean()), float(out_built.float().reshape(-1).mean())
        limit = th["max_mean_offset"]
        return {"gap": gap, "bad": abs(gap) > limit, "bad_built": abs(gap_built) > limit,
                "what": f"mean output at init is {gap:+.3f} target standard deviations from the target mean",
                "built_what": f"as built, the mean output at init is {gap_built:+.3f} target standard deviations off",
                "evidence": {"after_recipe_init": {"mean_output": round(gap, 4)},
                             "as_built": {"mean_output": round(gap_built, 4)}, "max_mean_offset": limit}}

    def loss_input(self, out, y):
        flat = out.reshape(len(out), -1)[:, 0]
        ev = {"min": float(flat.min()), "max": float(flat.max())}
        if bool((flat > 0).all() and (flat < 1).all()) and float(flat.std()) < 0.5 and (y < 0).any():
            return ("fail", "regression outputs all lie in (0, 1), like a sigmoid, but standardized targets are "
                    "negative too", ev, "Remove the output activation for regression.")
        return "pass", "regression output is unbounded", ev, ""

    def balanced_score(self, out, y, num_classes):
        """R²: a constant prediction scores at most 0 whatever the targets' spread."""
        var = float(y.double().var(unbiased=False))
        return 1 - float(self.row_loss(out, y).mean()) / var if var > 0 else float("nan")

    def probe_value(self, out, y):
        return out.reshape(-1)

    def dumb_models(self, seed: int) -> dict[str, Any]:
        from sklearn.dummy import DummyRegressor
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge

        return {"mean": DummyRegressor(), "linear": Ridge(),
                "gradient_boosting": HistGradientBoostingRegressor(max_iter=60, random_state=seed,
                                                                   early_stopping=False)}

    def network_target(self, y, target_stats):
        return ((y - target_stats["mean"]) / target_stats["std"]).astype(np.float32)
