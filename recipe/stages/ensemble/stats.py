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


def _means(delta: np.ndarray, seed: int, n: int, groups) -> np.ndarray:
    """Resampled means of per-row differences: rows resampled, or whole groups (documents) with their rows."""
    if groups is None:
        return resampled(len(delta), seed, lambda idx: delta[idx].mean(1), n)
    return ratio_bootstrap(*group_sums(delta, np.ones_like(delta), groups), seed, n)


def paired_bootstrap(delta: np.ndarray, seed: int, n: int = BOOTSTRAP, groups=None) -> tuple[float, float, float]:
    """Mean of per-row differences with its 95% bootstrap interval (rows resampled together; with `groups`, the
    rows' documents are resampled, each with all its rows)."""
    lo, hi = np.percentile(_means(delta, seed, n, groups), [2.5, 97.5])
    return float(delta.mean()), float(lo), float(hi)


def _lower(delta: np.ndarray, seed: int, groups=None) -> float:
    """One-sided 95% lower bound of the mean difference: "the ensemble is better" is a one-sided claim."""
    return float(np.percentile(_means(delta, seed, BOOTSTRAP, groups), 5))


def group_sums(num: np.ndarray, den: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-row numerators and denominators summed per group (a document's windows), groups in sorted order."""
    _, which = np.unique(np.asarray(groups), return_inverse=True)
    return np.bincount(which, num), np.bincount(which, den)


def ratio_bootstrap(num: np.ndarray, den: np.ndarray, seed: int, n: int = BOOTSTRAP) -> np.ndarray:
    """sum(num) / sum(den) over n resamples of the units (rows or documents) with replacement: a token-weighted
    loss over resampled documents, or the accuracy over resampled rows."""
    return resampled(len(num), seed, lambda idx: num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-300), n)


def bootstrap_score(out: torch.Tensor, y: torch.Tensor, task: str, seed: int, groups=None) -> tuple[float, float]:
    """95% bootstrap interval of the score on a split: of accuracy or loss per token (a task whose score is a
    ratio of row sums, Task.score_sums) over resampled rows, or over resampled groups when `groups` names each
    row's group (a language model's test windows: the document of each, so documents are resampled, not their
    correlated windows); of R² over resampled rows otherwise."""
    sums = tasks.get(task).score_sums(out, y)
    if sums is not None:
        num, den = sums if groups is None else group_sums(*sums, groups)
        stats = ratio_bootstrap(num, den, seed)
    else:
        loss, yv = row_loss(out, y, task), y.double().cpu().numpy()

        def r2(idx):
            sq, var = loss[idx].mean(1), yv[idx].var(1)
            return np.where(var > 0, 1 - sq / np.where(var > 0, var, 1), np.nan)

        stats = resampled(len(y), seed, r2)
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)
