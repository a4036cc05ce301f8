"""Classification: one label per row; cross-entropy on logits, accuracy, class priors."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from recipe.tasks._torch import F, torch

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
    distribution = True
    trivial = "majority"
    balanced_label = "balanced accuracy"
    probe_label = "p(true class)"
    paired_test = "mcnemar"
    memorize_loss_key = "max_loss"
    memorize_min_score = 1.0           # memorizing a few rows means every one of them classified right

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def shape_output(self, out, batch, num_outputs):
        if tuple(out.shape) != (batch, num_outputs):
            raise ModelError(f"model output has shape {tuple(out.shape)}; expected ({batch}, {num_outputs}) logits "
                             f"for {num_outputs} classes (labels are mapped to 0..{num_outputs - 1})")
        return out

    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def unreduced_loss(self, out, y):
        return F.cross_entropy(out, y, reduction="none")

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

    def score_sums(self, out, y):
        """Correctness over a count of 1 per row: the ratio of sums over any rows is their accuracy."""
        right = (out.argmax(1) == y).double().cpu().numpy()
        return right, np.ones_like(right)

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

    def csv_lines(self, pred, key, rows, classes, cell):
        lines = [",".join(cell(h) for h in [key, "prediction"] + [f"p_{c}" for c in classes])]
        for r, p in zip(rows, pred):
            lines.append(",".join([r, cell(classes[int(p.argmax())])] + [f"{v:.6g}" for v in p]))
        return lines

    def labels(self, pred, classes):
        return [classes[int(i)] for i in pred.argmax(1)]

    def baseline_rows(self, net_out, base_pred, y):
        return {"net": net_out.argmax(1) == y, "base": base_pred == y}

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

    def init_loss_evidence(self, num_classes):
        return {"uniform_guess": round(math.log(num_classes), 5)}

    def init_prediction(self, out, out_built, priors, num_classes, th):
        """Total variation between the mean predicted distribution and the priors (and, as evidence, uniform)."""
        def gap(o):
            mean_p = torch.softmax(o.float(), 1).mean(0).cpu().numpy()
            p = np.asarray(priors)
            tv = 0.5 * float(np.abs(mean_p - p).sum())
            tv_uniform = 0.5 * float(np.abs(mean_p - 1 / num_classes).sum())
            return tv, {"mean_predicted": [round(float(v), 4) for v in mean_p[:10]], "tv_distance": round(tv, 4),
                        "tv_from_uniform": round(tv_uniform, 4)}

        (tv, after), (tv_built, before) = gap(out), gap(out_built)
        # as built, a near-uniform start is ordinary (recipe then sets the priors); far from both is broken
        return {"gap": tv, "bad": tv > th["max_tv"],
                "bad_built": tv_built > th["max_tv"] and before["tv_from_uniform"] > th["max_tv"],
                "what": f"mean prediction at init is {tv:.3f} (total variation) away from the class priors",
                "built_what": (f"as built, the mean prediction at init is {tv_built:.3f} from the priors and "
                               f"{before['tv_from_uniform']:.3f} from uniform"),
                "evidence": {"after_recipe_init": after, "as_built": before,
                             "priors": [round(float(v), 4) for v in priors[:10]], "max_tv": th["max_tv"]}}

    def loss_input(self, out, y):
        rowsum = out.sum(1)
        prob_like = bool((out >= 0).all() and (out <= 1).all() and torch.allclose(rowsum, torch.ones_like(rowsum), atol=1e-3))
        logprob_like = bool((out <= 1e-6).all() and torch.allclose(torch.logsumexp(out, 1), torch.zeros_like(rowsum), atol=1e-3))
        ev = {"min": float(out.min()), "max": float(out.max()), "mean_row_sum": float(rowsum.mean())}
        if prob_like:
            return ("fail", "model outputs are probabilities (rows sum to 1) but the loss is cross-entropy on logits",
                    ev, "Remove the final softmax: CrossEntropyLoss applies log-softmax itself; a softmax before it "
                        "squashes gradients and slows or stalls learning.")
        if logprob_like:
            return ("warn", "model outputs are log-probabilities; cross-entropy applies log-softmax again (harmless "
                    "but redundant)", ev, "Return raw logits from the model.")
        return "pass", "model outputs are unnormalized logits, as the loss expects", ev, ""

    def balanced_score(self, out, y, num_classes):
        """Mean recall over the classes present: 1/C for any constant prediction, whatever the imbalance."""
        pred = out.argmax(1)
        recalls = [float((pred[y == c] == c).float().mean()) for c in range(num_classes) if bool((y == c).any())]
        return float(np.mean(recalls)) if recalls else float("nan")

    def probe_value(self, out, y):
        return torch.softmax(out, 1).gather(1, y[:, None]).reshape(-1)

    def dumb_models(self, seed: int) -> dict[str, Any]:
        from sklearn.dummy import DummyClassifier
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        return {"majority": DummyClassifier(strategy="most_frequent"), "linear": LogisticRegression(max_iter=500),
                "gradient_boosting": HistGradientBoostingClassifier(max_iter=60, random_state=seed,
                                                                    early_stopping=False)}

    def network_target(self, y, target_stats):
        return y.astype(np.int64, copy=False)
