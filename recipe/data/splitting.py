"""Seeded (stratified) train/val/test splits of a source's rows, and the tables each split gets."""
from __future__ import annotations

from typing import Optional

import numpy as np

from recipe.data.dataset import SPLITS


def split_indices(n: int, y: Optional[np.ndarray], val: float, test: float, seed: int,
                  stratify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (stratified) split of range(n) into train/val/test index arrays."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if stratify and y is not None:
        _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        # a stable sort lists each class's rows in ascending order: the same groups as flatnonzero(inverse == k)
        groups = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for g in groups:
        g = rng.permutation(g)
        n_test = int(round(len(g) * test))
        n_val = int(round(len(g) * val))
        parts["test"].append(g[:n_test])
        parts["val"].append(g[n_test:n_test + n_val])
        parts["train"].append(g[n_test + n_val:])
    return tuple(np.sort(np.concatenate(parts[s])).astype(np.int64) for s in SPLITS)  # type: ignore



def strat_key(y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Labels as split_indices groups them: text labels as str (None and "None" alike, as they always were)."""
    if y is None:
        return None
    return np.array([str(v) for v in y], dtype=object) if y.dtype == object else y
