"""What a loaded experiment's data is: the splits (test sealed inside), names, encoding and fingerprint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from recipe.errors import RecipeError

SPLITS = ("train", "val", "test")


class SealedTestError(RecipeError):
    """Raised when a stage other than ensemble reaches for the test split."""


@dataclass
class Split:
    x: np.ndarray        # (N, D) float32, raw (encoded but not normalized)
    y: np.ndarray        # (N,) int64 class index, or float32 target
    rows: np.ndarray     # row numbers in the source (for evidence)


@dataclass
class Dataset:
    task: str
    feature_names: list[str]
    shape: tuple[int, ...]
    classes: Optional[list[Any]]          # original label values, index = class id
    train: Split
    val: Split
    _test: Split
    norm: dict[str, Any]                  # {"kind", "shift": [...], "scale": [...]} from train only
    target_stats: dict[str, float]        # regression: train mean/std of the target
    encoding: dict[str, Any]              # one-hot levels, imputed values, unseen levels, label mapping
    files: dict[str, str]                 # file -> digest, for the gate
    origin: str
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    test_opened: bool = False
    kind: str = "table"                   # the data kind that read it and owns its checks (recipe.data.kinds)
    inputs = "features"                   # what x holds: "features" (float rows, images) or "tokens" (int ids)

    @property
    def task_object(self):
        """The Task that owns what differs between tasks (recipe.tasks): output width, network targets."""
        from recipe import tasks

        return tasks.get(self.task)

    @property
    def has_classes(self) -> bool:
        """The targets are class ids with a label mapping (the task has classes), not real values."""
        return self.classes is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def num_outputs(self) -> int:
        return self.task_object.num_outputs(self.num_classes)

    @property
    def num_features(self) -> int:
        return self.train.x.shape[1]

    def open_test(self, reason: str) -> Split:
        """The sealed test split: only the ensemble stage calls this, once per record."""
        self.test_opened = True
        self.extra.setdefault("test_opened_for", []).append(reason)
        return self._test

    def raw_test(self) -> Split:
        """Test rows for data checks only (NaN, leaks, label counts); no model ever sees them here."""
        return self._test

    @property
    def test(self) -> Split:
        raise SealedTestError("the test split is sealed: only 'recipe ensemble' evaluates it")

    def test_summary(self) -> dict[str, Any]:
        """What inspect may know of test without evaluating anything on it: size, labels, row hashes."""
        from recipe.data.hashing import row_hashes

        t = self._test
        summary = {"n": len(t.y), "row_hashes": row_hashes(t.x), "non_finite_rows": int((~np.isfinite(t.x)).any(1).sum())}
        if self.has_classes:
            summary["label_counts"] = np.bincount(t.y, minlength=self.num_classes).tolist()
        return summary

    def normalize(self, x: np.ndarray) -> np.ndarray:
        if self.norm["kind"] == "none":
            return x.astype(np.float32, copy=False)
        shift = np.asarray(self.norm["shift"], dtype=np.float32)
        scale = np.asarray(self.norm["scale"], dtype=np.float32)
        return ((x - shift) / scale).astype(np.float32, copy=False)

    def target(self, y: np.ndarray) -> np.ndarray:
        """Targets as the network sees them: class ids, or standardized regression values."""
        return self.task_object.network_target(y, self.target_stats)

    def class_priors(self) -> Optional[list[float]]:
        if not self.has_classes:
            return None
        counts = np.bincount(self.train.y, minlength=self.num_classes).astype(float)
        return (counts / counts.sum()).tolist()

