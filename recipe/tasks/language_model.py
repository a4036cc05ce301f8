"""Language modelling: next-token prediction; cross-entropy over the real (non-pad) target positions, scored as
val loss in nats per token (lower is better), with perplexity and bits per token beside it."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from recipe.tasks._torch import F, torch

from recipe.errors import ModelError
from recipe.tasks.base import Task
from recipe.tasks.registry import register

# Targets at padded positions carry this id and never count in the loss: PyTorch's own default ignore_index, so a
# pad token that is also a real token id (a char vocabulary's space) cannot be confused with it.
IGNORE_INDEX = -100
SCORE_ROWS = 1024        # windows per cross-entropy chunk on a whole split: its log-softmax is (rows, T, V)


def mask_pad_targets(y: torch.Tensor, pad_id: Optional[int]) -> torch.Tensor:
    """Targets as the loss sees them: pad_id positions become IGNORE_INDEX (y itself is left alone)."""
    return y if pad_id is None else y.masked_fill(y == pad_id, IGNORE_INDEX)


@register
class LanguageModel(Task):
    name = "language-model"
    metric = "nats"
    metric_label = "val loss (nats/token)"
    loss_label = "cross-entropy (nats/token)"
    loss_unit = "nats per token"
    distribution = True               # next-token logits: a student distils the ensemble's soft next tokens
    higher_is_better = False          # the score is the loss itself
    stratify = False
    has_classes = False               # tokens have unigram priors, but no per-class scores or confusion
    paired_test = "bootstrap"         # regularize.beats-baselines: a paired bootstrap of per-window losses
    row_loss_key = "nats"
    row_loss_label = "loss (nats/token)"
    memorize_loss_key = "lm_max_loss"  # a threshold per token (checks.py says why it is not classification's)
    # overfit.train-fit: the best n-gram's loss on train. Counting reaches it on the very text the network fits, so
    # a network that cannot fit train as well as a 5-gram table is too small or trained too briefly.
    train_fit_baseline = "best_dumb_train"

    def num_outputs(self, num_classes: int) -> int:
        return num_classes            # the vocabulary size: one logit per token

    def shape_output(self, out, batch, num_outputs):
        if out.ndim != 3 or out.shape[0] != batch or out.shape[2] != num_outputs:
            raise ModelError(f"model output has shape {tuple(out.shape)}; a language model returns (batch, time, "
                             f"vocab) = ({batch}, T, {num_outputs}) logits, one next-token distribution per position")
        return out

    def loss(self, out, y):  # out: (B, T, V), y: (B, T) next tokens, or (B, T, V) soft targets (distillation)
        if y.is_floating_point():
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1, y.shape[-1]))
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)

    def _token_losses(self, out, y):
        """(N, T) float64 cross-entropy per position (0 at ignored ones) and (N, T) bool: the position counts."""
        losses, keep = [], []
        for i in range(0, len(out), SCORE_ROWS):
            o, t = out[i:i + SCORE_ROWS].float(), y[i:i + SCORE_ROWS]
            losses.append(F.cross_entropy(o.transpose(1, 2), t, ignore_index=IGNORE_INDEX, reduction="none").double())
            keep.append(t != IGNORE_INDEX)
        if not losses:      # an empty split
            return torch.zeros(y.shape, dtype=torch.float64), torch.zeros(y.shape, dtype=torch.bool)
        return torch.cat(losses), torch.cat(keep)

    def row_loss(self, out, y):
        """Mean nats per real target of each window (N,); a window without real targets has loss 0."""
        tok, keep = self._token_losses(out, y)
        return tok.sum(1) / keep.sum(1).clamp_min(1)

    def baseline_rows(self, net_out, base_pred, y):
        """Per val window: the network's mean loss (nats per real target) and the n-gram's on the same targets;
        `base_pred` is already that n-gram loss per window (N,) (recipe/baselines/ngram.py window_losses)."""
        out = torch.as_tensor(net_out)
        return {"net": self.row_loss(out, torch.as_tensor(y, device=out.device)).cpu().numpy(),
                "base": np.asarray(base_pred, np.float64)}

    def row_score(self, out, y):
        return -self.row_loss(out, y)

    def score(self, out, y, num_classes=0):
        tok, keep = self._token_losses(out, y)
        n = int(keep.sum())
        loss = float(tok.sum()) / n if n else float("nan")
        hits = sum(int(((out[i:i + SCORE_ROWS].argmax(-1) == y[i:i + SCORE_ROWS]) & keep[i:i + SCORE_ROWS]).sum())
                   for i in range(0, len(out), SCORE_ROWS))
        return {"loss": loss, "score": loss, "nats": loss, "perplexity": math.exp(loss) if n else float("nan"),
                "bits_per_token": loss / math.log(2) if n else float("nan"),
                "token_accuracy": hits / n if n else float("nan"), "tokens": n}

    def score_sums(self, out, y):
        """Nats summed over each window's real targets, over their count: the ratio of sums over any windows (all
        the windows of a resampled set of documents) is their loss in nats per token."""
        tok, keep = self._token_losses(out, y)
        return tok.sum(1).cpu().numpy(), keep.sum(1).double().cpu().numpy()

    def prediction(self, out):
        return torch.softmax(out.float(), -1)                                      # (N, T, V) next-token probs

    def combine(self, outputs, weights):
        w = [float(v) for v in weights]
        probs = sum(wi * torch.softmax(o.float(), -1) for wi, o in zip(w, outputs) if wi > 0)
        return torch.log(probs.clamp_min(1e-12))

    def as_output(self, out):
        return torch.log_softmax(out.float(), -1)

    def disagreement(self, a, b):
        """Share of positions where the two models' most likely next token differs."""
        return float((a.argmax(-1) != b.argmax(-1)).float().mean())

    def output_bias(self, priors: Optional[Sequence[float]]):
        """Log unigram frequencies of the train targets: the untrained model predicts the unigram model."""
        return torch.log(torch.tensor(priors, dtype=torch.float32).clamp_min(1e-8))

    def expected_init_loss(self, report: dict[str, Any]) -> float:
        """Cross-entropy of the unigram model on the train targets: their entropy (report['class_priors'] holds
        the unigram frequencies, as for classes)."""
        p = np.asarray(report["class_priors"], float)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def acceptable_init_losses(self, report, num_classes):
        # a model whose output bias is not set starts at the uniform guess over the vocabulary: ln V
        return [self.expected_init_loss(report), math.log(num_classes)]

    def dumb_models(self, seed: int) -> dict[str, Any]:
        raise NotImplementedError("language-model baselines are count-based n-gram models over token streams, "
                                  "not sklearn estimators on rows (recipe/baselines/ngram.py)")
