"""ensemble's statistics: scores and per-row losses, and bootstrap intervals drawn in bounded-memory chunks."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recipe import tasks

BOOTSTRAP = 1000


def row_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> np.ndarray:
    """The task's per-row loss (negative log-likelihood, squared error), as float64."""
    return tasks.get(task).row_loss(out, y).cpu().numpy()


def row_correct(out: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (out.argmax(1) == y).double().cpu().numpy()


def _score(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int) -> dict[str, Any]:
    from recipe.engine.train import score_outputs

    return score_outputs(out, y, task, num_classes)


BOOTSTRAP_CHUNK = 2 ** 22    # resampled row indices held at once (32 MB of int64), whatever the split's size


def resampled(n_rows: int, seed: int, stat, n: int = BOOTSTRAP) -> np.ndarray:
    """stat(idx) for n bootstrap resamples of n_rows rows: idx is (k, n_rows), stat returns (k,).

    The resamples are drawn in chunks of BOOTSTRAP_CHUNK indices, so 1M test rows need tens of MB rather than
    the 8 GB of one (n, n_rows) index array; the random stream, and so every interval, is the same either way."""
    rng = np.random.default_rng(seed)
    per = max(1, BOOTSTRAP_CHUNK // max(n_rows, 1))
    return np.concatenate([stat(rng.integers(0, n_rows, (min(per, n - start), n_rows)))
                           for start in range(0, n, per)])


def paired_bootstrap(delta: np.ndarray, seed: int, n: int = BOOTSTRAP) -> tuple[float, float, float]:
    """Mean of per-row differences with its 95% bootstrap interval (rows resampled together)."""
    means = resampled(len(delta), seed, lambda idx: delta[idx].mean(1), n)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(delta.mean()), float(lo), float(hi)


def _lower(delta: np.ndarray, seed: int) -> float:
    """One-sided 95% lower bound of the mean difference: "the ensemble is better" is a one-sided claim."""
    means = resampled(len(delta), seed, lambda idx: delta[idx].mean(1))
    return float(np.percentile(means, 5))


def bootstrap_score(out: torch.Tensor, y: torch.Tensor, task: str, seed: int) -> tuple[float, float]:
    """95% bootstrap interval of accuracy (tasks with classes) or R² on a split."""
    if tasks.get(task).has_classes:
        correct = row_correct(out, y)
        stats = resampled(len(y), seed, lambda idx: correct[idx].mean(1))
    else:
        loss, yv = row_loss(out, y, task), y.double().cpu().numpy()

        def r2(idx):
            sq, var = loss[idx].mean(1), yv[idx].var(1)
            return np.where(var > 0, 1 - sq / np.where(var > 0, var, 1), np.nan)

        stats = resampled(len(y), seed, r2)
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)
