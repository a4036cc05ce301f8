"""The table kind's pictures: class balance (or the target's histogram) and the train features' histograms."""
from __future__ import annotations

import numpy as np


def target_picture(look) -> list[str]:
    """class_balance.png where the task has classes, else target.png."""
    from recipe import plots
    from recipe.data.kinds.table_checks import label_counts

    ds = look.ds
    if look.ds.has_classes:
        look.artifacts.figure("class_balance.png", plots.class_balance(label_counts(ds), ds.classes))
        return ["class_balance.png"]
    look.artifacts.figure("target.png", plots.target_histogram({"train": ds.train.y, "val": ds.val.y}))
    return ["target.png"]


def feature_histograms(look) -> list[str]:
    """features.png: the features with problems first (non-finite, then most variable), as read (raw)."""
    from recipe import plots

    ds = look.ds
    x = ds.train.x
    if len(x) > 20000:   # histograms of a 20k-row sample look the same and draw 50x faster at 1M rows
        x = x[np.random.default_rng(0).choice(len(x), 20000, replace=False)]
    with np.errstate(invalid="ignore"):
        score = np.nan_to_num(np.nanstd(np.where(np.isfinite(x), x, np.nan), 0))
    score = score + 1e6 * (~np.isfinite(x)).any(0)
    cols = [int(j) for j in np.argsort(-score)[:8]]
    look.artifacts.figure("features.png", plots.feature_histograms(x, ds.feature_names, cols, "train features (raw)"),
                          tight=False)
    return ["features.png"]
