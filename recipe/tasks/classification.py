"""Classification: one label per row; cross-entropy on logits, accuracy, class priors."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recipe.errors import ModelError
from recipe.tasks.base import Task
from recipe.tasks.registry import register


@register
class Classification(Task):
    name = "classification"
    metric = "accuracy"
    metric_label = "accuracy"
    loss_label = "log-loss"
    loss_unit = "nll per row"
    stratify = True
    has_classes = True

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def shape_output(self, out, batch, num_outputs):
        if tuple(out.shape) != (batch, num_outputs):
            raise ModelError(f"model output has shape {tuple(out.shape)}; expected ({batch}, {num_outputs}) logits "
                             f"for {num_outputs} classes (labels are mapped to 0..{num_outputs - 1})")
        return out

    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def row_loss(self, out, y):
        return F.cross_entropy(out.float(), y, reduction="none").double()

    def row_score(self, out, y):
        return (out.argmax(1) == y).double()

    def score(self, out, y, num_classes=0):
        loss = F.cross_entropy(out, y).item()
        pred = out.argmax(1)
        acc = (pred == y).float().mean().item()
        k = max(num_classes, int(y.max().item()) + 1 if len(y) else 0)
        total = torch.bincount(y, minlength=k).float()
        right = torch.bincount(y[pred == y], minlength=k).float()
        per_class = torch.where(total > 0, right / total.clamp_min(1), torch.full_like(total, float("nan"))).tolist()
        return {"loss": loss, "score": acc, "accuracy": acc,
                "per_class": per_class[:num_classes] if num_classes else per_class}

    def prediction(self, out):
        return torch.softmax(out, 1)

    def combine(self, outputs, weights):
        w = [float(v) for v in weights]
        probs = sum(wi * torch.softmax(o.float(), 1) for wi, o in zip(w, outputs) if wi > 0)
        return torch.log(probs.clamp_min(1e-12))

    def as_output(self, out):
        return torch.log_softmax(out.float(), 1)

    def disagreement(self, a, b):
        return float((a.argmax(1) != b.argmax(1)).float().mean())

    def output_bias(self, priors: Optional[Sequence[float]]):
        return torch.log(torch.tensor(priors, dtype=torch.float32).clamp_min(1e-8))

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        """Cross-entropy of predicting the class priors: their entropy."""
        p = np.asarray(report["class_priors"], float)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def acceptable_init_losses(self, report, num_classes):
        # a model built without prior-matched bias may start at the uniform guess: ln C is fine for it too
        return [self.expected_init_loss(report), math.log(num_classes)]

    def dumb_models(self, seed: int) -> dict[str, Any]:
        from sklearn.dummy import DummyClassifier
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        return {"majority": DummyClassifier(strategy="most_frequent"), "linear": LogisticRegression(max_iter=500),
                "gradient_boosting": HistGradientBoostingClassifier(max_iter=60, random_state=seed,
                                                                    early_stopping=False)}
