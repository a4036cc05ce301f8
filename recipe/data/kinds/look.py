"""What one inspect shares between a kind's checks, pictures and report: the data, the config, the task, and
facts computed once on first use (row hashes, train moments); plus the evidence helpers every check uses."""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable

import numpy as np

EXAMPLES = 5  # example rows / columns shown in evidence


def rows_of(split, mask_or_idx) -> list[int]:
    """Source row numbers (as in the user's file) for a mask or positional indices."""
    idx = np.flatnonzero(mask_or_idx) if np.asarray(mask_or_idx).dtype == bool else np.asarray(mask_or_idx)
    return [int(r) for r in split.rows[idx[:EXAMPLES]]]


def splits_of(ds) -> dict[str, Any]:
    """train, val and the raw test split: data checks may count test rows, no model sees them here."""
    return {"train": ds.train, "val": ds.val, "test": ds.raw_test()}


class Look:
    """One inspect of one Dataset. `found` carries what checks leave for pictures (label-noise suspects)."""

    def __init__(self, ds, cfg, thresholds: Callable[[str], dict[str, Any]], artifacts):
        self.ds, self.cfg, self.thresholds, self.artifacts = ds, cfg, thresholds, artifacts
        self.seed = cfg.seed
        self.found: dict[str, Any] = {}

    @cached_property
    def splits(self) -> dict[str, Any]:
        return splits_of(self.ds)

    @cached_property
    def hashes(self) -> dict[str, np.ndarray]:
        """Each split's input row hashes, with the with-target and sorted ones data.leak and data.duplicates share."""
        from recipe.data.hashing import row_hashes
        from recipe.data.leak import derive

        hashes = {s: row_hashes(sp.x) for s, sp in self.splits.items()}
        return derive(hashes, self.splits)

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Train feature mean and std recomputed from train alone: data.scale compares them with ds.norm."""
        from recipe.data.hashing import column_moments

        return column_moments(self.ds.train.x)
