"""Combining members (weighted average of probabilities or predictions) and Caruana's greedy selection on val."""
from __future__ import annotations

import math

import numpy as np
import torch

from recipe import tasks
from recipe.stages.ensemble.stats import _score

GREEDY_STEPS = 25        # Caruana et al. 2004: forward selection with replacement, best prefix kept
GREEDY_INIT = 3          # ... initialised with (up to) the best few members ("sorted initialisation")


def combine(outputs: list[torch.Tensor], weights, task: str) -> torch.Tensor:
    """The task's weighted average (probabilities, returned as log-probs; or predictions)."""
    return tasks.get(task).combine(outputs, [float(v) for v in weights])


def _key(out: torch.Tensor, y: torch.Tensor, task: str, num_classes: int, floor: float = math.inf) -> tuple:
    """Higher is better: the task's score oriented by Task.signed (minus a language model's loss), then -loss."""
    s = _score(out, y, task, num_classes)
    return min(tasks.get(task).signed(s["score"]), floor), -s["loss"]


def greedy_select(outputs: list[torch.Tensor], y, task: str, num_classes: int) -> np.ndarray:
    """Caruana et al. 2004: start from the best few members, add members with replacement, keep the best prefix.

    The key is the loss (log-loss / squared error: smooth, and what averaging improves) among ensembles whose
    task score is at least the best member's; below that floor, the score decides. The start includes the
    best member alone, so the result is never below the best member on val.
    """
    m = len(outputs)
    keys = [_key(o, y, task, num_classes) for o in outputs]
    floor = max(k[0] for k in keys)
    order = sorted(range(m), key=lambda i: keys[i], reverse=True)
    counts, best_key = None, None
    for n in range(1, min(GREEDY_INIT, m) + 1):          # sorted initialisation: the best prefix of size <= 3
        trial = np.zeros(m)
        trial[order[:n]] = 1
        k = _key(combine(outputs, trial / trial.sum(), task), y, task, num_classes, floor)
        if best_key is None or k > best_key:
            counts, best_key = trial, k
    current = counts.copy()
    for _ in range(GREEDY_STEPS):
        step_i, step_key = None, None
        for i in range(m):
            trial = current.copy()
            trial[i] += 1
            k = _key(combine(outputs, trial / trial.sum(), task), y, task, num_classes, floor)
            if step_key is None or k > step_key:
                step_i, step_key = i, k
        current[step_i] += 1
        if step_key > best_key:
            counts, best_key = current.copy(), step_key
    return counts / counts.sum()
