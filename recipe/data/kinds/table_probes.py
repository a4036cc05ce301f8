"""The table kind's probes: data.signal (do quick models beat shuffled labels?) and data.label-noise, on
bounded samples of normalized train rows."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C


def _probe_data(ds, th):
    """Normalized train rows for a probe: all of them, or a seeded sample of th['sample'] (taken before
    normalizing, so that 1M rows cost what the sample costs)."""
    y = ds.train.y
    idx = np.flatnonzero(np.isfinite(y)) if not ds.has_classes else np.arange(len(y))
    if len(idx) > th["sample"]:
        idx = idx[np.random.default_rng(0).choice(len(idx), th["sample"], replace=False)]
    x = np.nan_to_num(ds.normalize(ds.train.x[idx]), nan=0.0, posinf=0.0, neginf=0.0)
    return x, y[idx], idx


def check_signal(ds, th, seed: int) -> C.Check:
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.model_selection import cross_val_score

    x, y, _ = _probe_data(ds, th)
    if len(y) < 10:
        return C.make("data.signal", "skip", f"only {len(y)} usable train rows for a cross-validated probe")
    cls = ds.has_classes
    folds = min(3, int(np.bincount(y).min())) if cls else 3
    if folds < 2:
        return C.make("data.signal", "skip", "a class has a single train sample: no cross-validation possible")
    # classes weighted equally and scored on balanced accuracy: on imbalanced data (95/5) plain probes predict the
    # majority for real and shuffled labels alike, and accuracy cannot tell them apart
    weights = {"class_weight": "balanced"} if cls else {}
    probes = {"linear": RidgeClassifier(**weights) if cls else Ridge(),   # closed form: fast on shuffled labels too
              "trees": (ExtraTreesClassifier if cls else ExtraTreesRegressor)(n_estimators=20, random_state=seed,
                                                                                n_jobs=1, min_samples_leaf=5,
                                                                                max_depth=12, **weights)}
    shuffled = np.random.default_rng(seed).permutation(y)
    scoring = "balanced_accuracy" if cls else "r2"
    ev: dict[str, Any] = {"metric": scoring, "min_gain": th["min_gain"], "rows": len(y), "folds": folds,
                          "sampled": len(y) < len(ds.train.y), "train_rows": len(ds.train.y)}
    best_gain = -np.inf
    for name, probe in probes.items():
        if best_gain >= th["min_gain"]:
            # the verdict is the best probe's gain: once one clears min_gain, another can only raise it
            # (the trees were 2/3 of this check's time at 1M rows)
            ev[name] = f"not run: the linear probe's gain already clears min_gain {th['min_gain']}"
            continue
        real = float(cross_val_score(probe, x, y, cv=folds, scoring=scoring).mean())
        fake = float(cross_val_score(probe, x, shuffled, cv=folds, scoring=scoring).mean())
        ev[name] = {"score": round(real, 4), "shuffled": round(fake, 4)}
        best_gain = max(best_gain, real - fake)
    ev["gain"] = round(best_gain, 4)
    if best_gain < th["min_gain"]:
        return C.make("data.signal", "fail", f"probes do no better on real labels than on shuffled ones "
                      f"(gain {best_gain:+.3f})", ev,
                      "Check that inputs and labels are aligned (row order, join keys); the input carries no signal.")
    return C.make("data.signal", "pass", f"probes beat shuffled labels by {best_gain:.3f} {scoring}", ev)


def check_label_noise(ds, th, seed: int) -> tuple[C.Check, np.ndarray]:
    """Label errors vs a hard problem: recipe/data/label_noise.py."""
    from recipe.data.label_noise import check_label_noise as judge

    return judge(ds, th, seed, lambda: _probe_data(ds, th))


