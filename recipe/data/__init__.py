"""Load an experiment's data: the kind that reads the config's source (recipe/data/kinds/) reads, splits,
encodes with train-only statistics and fingerprints it; the test split is sealed inside the Dataset."""
from __future__ import annotations

from recipe.data.dataset import SPLITS, Dataset, SealedTestError, Split
from recipe.data.normalize import norm_stats
from recipe.data.splitting import split_indices
from recipe.data.targets import _encode_target, _infer_task  # noqa: F401 (imported from here by tests)

__all__ = ["SPLITS", "Dataset", "SealedTestError", "Split", "fingerprint", "load", "norm_stats", "split_indices"]


def load(cfg) -> Dataset:
    """Load, split, encode and fingerprint the experiment's data; test is sealed inside."""
    from recipe.data import kinds

    return kinds.load(cfg)


def fingerprint(ds: Dataset) -> str:
    """Content hash of the loaded splits, as the kind that read them computes it (the gate compares it)."""
    from recipe.data import kinds

    return kinds.get(ds.kind).fingerprint(ds)
