"""inspect for text data: recipe/data/text/checks.py's checks, then for text-classification the table's label
checks (data.label-conflict on document hashes, data.imbalance, data.split-shift, from recipe/data/kinds)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from recipe import checks as C
from recipe.data.text import ngrams
from recipe.data.text.checks import SPLITS, text_checks
from recipe.data.kinds.table_checks import check_imbalance, check_label_conflict, check_split_shift


class _Labels:
    """A text-classification dataset as the table label checks read it: class ids per split (rows = document
    numbers) under the table task name."""

    task = "classification"
    has_classes = True

    def __init__(self, ds):
        self.classes, self.num_classes = ds.classes, ds.num_classes
        self.train, self.val, self._test = ds.train, ds.val, ds.raw_test()

    def raw_test(self):
        return self._test


def label_checks(ds, th: Callable[[str], dict]) -> list[C.Check]:
    view = _Labels(ds)
    hashes = {s: np.array([int(h[:16], 16) for h in ngrams.doc_hashes(ds.docs[s].texts)], dtype=np.uint64)
              for s in SPLITS}
    return [check_label_conflict(view, th("data.label-conflict"), hashes), check_imbalance(view, th("data.imbalance")),
            check_split_shift(view, th("data.split-shift"))]


def inspect_checks(ds, th: Callable[[str], dict], files: Optional[list[str]] = None) -> tuple[list[C.Check], dict]:
    """Every inspect check for text data in report order, and the figures (name -> matplotlib Figure)."""
    checks, figures = text_checks(ds, th, files)
    if ds.task == "text-classification":
        checks += label_checks(ds, th)
    return checks, figures
