"""The table kind's data.scale: is the input normalized as the model will see it, with train-only statistics,
and did someone scale it with val/test statistics before recipe saw it (recipe/data/prescaled.py)?"""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.hashing import column_moments


def _prescaled_verdict(ds, found) -> C.Check | None:
    """The user-side leak of 37 reasons #15: data scaled with statistics of val/test rows before recipe saw it.

    Where recipe normalizes per feature (standard/minmax), its train-only statistics undo any earlier
    per-feature affine scaling exactly, so no val/test statistic reaches the model: the finding is reported,
    the check does not fail. Where the model sees the data as given (normalize: none, or per-channel image
    statistics), data standardized or min-max scaled over all splits fails: someone normalized in recipe's
    place with the statistics recipe refuses to use. Centering alone over all rows (what data providers
    ship, e.g. sklearn's diabetes) warns: common, small, and fixed by data.normalize."""
    undone = ds.norm["kind"] != "none" and ds.norm.get("per", "feature") == "feature"
    if found is None or undone:
        return None
    what = (f"{found['features']} of {found['varying_features']} features arrive {found['kind']} with statistics "
            f"of {found['pool']} (train alone is not): val/test rows shaped the scaling the model sees")
    advice = ("Set data.normalize: standard (recipe's train-only statistics undo any earlier per-feature scaling "
              "exactly), or scale with train statistics before handing the data over. If a data provider scaled "
              "it and you accept that, cap the check with a reason (checks: data.scale: {severity: warn}).")
    ev = {"normalize": ds.norm["kind"], "prescaled": found}
    status = "warn" if found["kind"] == "centered" else "fail"
    return C.make("data.scale", status, what, ev, advice)


def check_scale(ds, th, moments) -> C.Check:
    from recipe.data.prescaled import prescaled

    x = ds.train.x
    kind = ds.norm["kind"]
    _, std = moments
    live = np.flatnonzero(np.isfinite(std) & (std > 1e-12))
    found = prescaled(x, {"val": ds.val.x, "test": ds.raw_test().x}, ds.feature_names)
    leak = _prescaled_verdict(ds, found)
    if leak is not None:
        return leak
    ev: dict[str, Any] = {"normalize": kind}
    if found is not None:      # reported; recipe's per-feature normalization undid it (see _prescaled_verdict)
        ev["prescaled"] = {**found, "undone_by": f"data.normalize: {kind} (train-only, per feature)"}
    if kind == "none":
        absmax = float(np.nanmax(np.abs(np.where(np.isfinite(x), x, np.nan)))) if live.size else 0.0
        if live.size < 2:     # no scales to compare; magnitude is still judged
            ev["max_abs"] = absmax
            if absmax > 1e3:
                return C.make("data.scale", "warn", f"unnormalized values reach {absmax:.3g}", ev,
                              "Set data.normalize: standard (statistics from train only).")
            return C.make("data.scale", "skip", f"{live.size} varying feature(s): no scales to compare, values "
                          f"within ±{absmax:.3g}", ev)
        ratio = float(std[live].max() / std[live].min())
        ev.update(std_ratio=round(ratio, 2), largest=ds.feature_names[int(live[std[live].argmax()])],
                  smallest=ds.feature_names[int(live[std[live].argmin()])], max_abs=absmax,
                  max_range_ratio=th["max_range_ratio"])
        if ratio > th["max_range_ratio"] or absmax > 1e3:
            return C.make("data.scale", "warn", f"features are not normalized and their scales span {ratio:.0f}x", ev,
                          "Set data.normalize: standard (statistics from train only).")
        return C.make("data.scale", "pass", f"unnormalized, but feature scales span only {ratio:.1f}x", ev)
    # mean 0 / std 1 after normalization, judged on up to 100k train rows (standard error 0.003, tolerance 0.05)
    rows = np.random.default_rng(1).choice(len(x), 100_000, replace=False) if len(x) > 100_000 else slice(None)
    z = ds.normalize(x[rows])
    ev["rows_checked"] = len(z)
    with np.errstate(invalid="ignore"):
        # statistics recomputed here from train alone must equal those the pipeline uses
        from recipe.data.normalize import norm_stats

        if kind == "standard" and ds.norm.get("per") == "feature":
            m, sd = moments
            again = {"shift": np.where(np.isfinite(m), m, 0.0),
                     "scale": np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)}
        else:
            again = norm_stats(ds.train.x, kind, ds.shape)
        same = np.allclose(again["shift"], ds.norm["shift"]) and np.allclose(again["scale"], ds.norm["scale"])
        # what the statistics would be had val been pooled in (on a sample: it only sizes the difference)
        rng = np.random.default_rng(0)
        tr_s = ds.train.x if len(ds.train.x) <= 100_000 else ds.train.x[rng.choice(len(ds.train.x), 100_000, replace=False)]
        va_s = ds.val.x if len(ds.val.x) <= 100_000 else ds.val.x[rng.choice(len(ds.val.x), 100_000, replace=False)]
        pooled = norm_stats(np.concatenate([tr_s, va_s]), kind, ds.shape)
        pooled_diff = float(np.max(np.abs(np.asarray(pooled["shift"]) - np.asarray(ds.norm["shift"])))) if len(live) else 0.0
    ev.update(stats_from_train_only=bool(same), shift_diff_if_val_were_pooled=round(pooled_diff, 6),
              per=ds.norm.get("per", "feature"))
    if ds.norm.get("per") == "channel":   # images: judge each channel, not each pixel
        c = ds.shape[0]
        z = z.reshape(len(z), c, -1).transpose(1, 0, 2).reshape(c, -1).T
        live = np.flatnonzero(np.nanstd(z, axis=0) > 1e-12)
    if not same:   # internal consistency: recipe's own statistics must be the train split's (a bug otherwise)
        return C.make("data.scale", "fail", "internal: recipe's normalization statistics do not match the train "
                      "split's", ev, "This is a bug in recipe: report it with the record; do not trust the run.")
    if kind == "standard" and live.size:
        mean, sd = column_moments(z)
        mean, sd = mean[live], sd[live]
        ev.update(max_abs_mean=float(np.abs(mean).max()), max_std_error=float(np.abs(sd - 1).max()),
                  mean_tolerance=th["mean_tolerance"], std_tolerance=th["std_tolerance"])
        if np.abs(mean).max() > th["mean_tolerance"] or np.abs(sd - 1).max() > th["std_tolerance"]:
            j = int(live[np.argmax(np.abs(mean) + np.abs(sd - 1))])
            ev["worst_feature"] = ds.feature_names[j]
            return C.make("data.scale", "fail", "normalized train features are not mean 0 / std 1", ev,
                          "Check the normalization step: a feature was not standardized.")
        return C.make("data.scale", "pass", "train features standardized (mean ~0, std ~1) with train-only statistics"
                      + _undone_note(found), ev)
    if kind == "minmax" and live.size:
        lo, hi = float(np.nanmin(z[:, live])), float(np.nanmax(z[:, live]))
        ev.update(min=lo, max=hi)
        if lo < -1e-4 or hi > 1 + 1e-4:
            return C.make("data.scale", "fail", f"min-max normalized train spans [{lo:.3g}, {hi:.3g}], not [0, 1]", ev,
                          "Check the normalization step.")
    return C.make("data.scale", "pass", f"train features normalized ({kind}) with train-only statistics"
                  + _undone_note(found), ev)


def _undone_note(found) -> str:
    if found is None:
        return ""
    return (f"; the input arrived {found['kind']} over {found['pool']}, which recipe's per-feature train-only "
            "normalization undoes exactly")


