"""Stage 1: become one with the data. Every data.* check of DESIGN §5, with the rows that prove it."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.hashing import all_finite, column_moments, row_hashes
from recipe.data.leak import derive
from recipe.stage import StageResult

EXAMPLES = 5  # example rows / columns shown in evidence


def _rows(split, mask_or_idx) -> list[int]:
    """Source row numbers (as in the user's file) for a mask or positional indices."""
    idx = np.flatnonzero(mask_or_idx) if np.asarray(mask_or_idx).dtype == bool else np.asarray(mask_or_idx)
    return [int(r) for r in split.rows[idx[:EXAMPLES]]]


def _splits(ds) -> dict[str, Any]:
    return {"train": ds.train, "val": ds.val, "test": ds.raw_test()}


# ----------------------------------------------------------------------------- checks


def check_load(ds) -> C.Check:
    sizes = {s: int(len(sp.y)) for s, sp in _splits(ds).items()}
    ev = {"rows": sizes, "features": ds.num_features, "shape": list(ds.shape), "task": ds.task, "source": ds.origin}
    if ds.classes is not None:
        ev["classes"] = len(ds.classes)
    return C.make("data.load", "pass", f"loaded {sum(sizes.values())} rows x {ds.num_features} features", ev)


def check_non_finite(ds) -> C.Check:
    ev: dict[str, Any] = {}
    total = 0
    for s, sp in _splits(ds).items():
        rows = np.zeros(len(sp.x), bool) if all_finite(sp.x) else ~np.isfinite(sp.x).all(axis=1)
        if rows.any():
            bad = ~np.isfinite(sp.x)
            cols = np.flatnonzero(bad.any(axis=0))
            total += int(rows.sum())
            ev[s] = {"rows": int(rows.sum()), "example_rows": _rows(sp, rows),
                     "columns": [ds.feature_names[j] for j in cols[:EXAMPLES]],
                     "nan": int(np.isnan(sp.x).sum()), "inf": int(np.isinf(sp.x).sum())}
        if ds.task == "regression":
            ybad = ~np.isfinite(sp.y)
            if ybad.any():
                total += int(ybad.sum())
                ev[f"{s}_target"] = {"rows": int(ybad.sum()), "example_rows": _rows(sp, ybad)}
    if total:
        where = "; ".join(f"{s}: {v['rows']} rows" + (f" in {', '.join(v['columns'])}" if "columns" in v else "")
                          for s, v in ev.items())
        return C.make("data.non-finite", "fail", f"NaN/inf values: {where}", ev,
                      "Fix or drop those rows at the source, or set data.missing: impute (train medians) for NaN.")
    return C.make("data.non-finite", "pass", "no NaN or inf in inputs or targets", {"checked_rows": sum(
        len(sp.y) for sp in _splits(ds).values())})


def check_constant(ds, th) -> C.Check:
    x = ds.train.x
    finite = all_finite(x)
    with np.errstate(invalid="ignore"):
        hi, lo = (x.max(0), x.min(0)) if finite else (np.nanmax(x, 0), np.nanmin(x, 0))
        const = np.flatnonzero(hi == lo) if len(x) else np.array([], int)
    zero = [j for j in const if np.nanmax(np.abs(x[:, j])) == 0]
    frac = len(const) / max(x.shape[1], 1)
    ev = {"constant": len(const), "all_zero": len(zero), "features": x.shape[1], "fraction": round(frac, 4),
          "examples": [ds.feature_names[j] for j in const[:EXAMPLES]], "max_constant_fraction": th["max_constant_fraction"]}
    if len(const) == x.shape[1]:
        return C.make("data.constant", "fail", "every feature is constant in train: there is nothing to learn", ev,
                      "Check that the right columns were read (data.features) and that the file is not truncated.")
    if frac > th["max_constant_fraction"]:
        return C.make("data.constant", "warn", f"{len(const)} of {x.shape[1]} features are constant in train", ev,
                      "Drop the constant columns with data.features; they carry no information.")
    return C.make("data.constant", "pass", f"{len(const)} constant feature(s) in train (harmless, listed)", ev)


def check_duplicates(ds, th, hashes) -> C.Check:
    """Copies (inputs and target) vs rows that only share inputs: recipe/data/duplicates.py."""
    from recipe.data.duplicates import check_duplicates as judge

    return judge(ds.train, th, hashes)


def check_leak(ds, th, hashes) -> C.Check:
    """Copies across splits vs equal inputs with other targets vs coincidences: recipe/data/leak.py."""
    from recipe.data.leak import check_leak as judge

    return judge(ds, th, hashes, _splits(ds))


def check_label_conflict(ds, th, hashes) -> C.Check:
    if ds.task != "classification":
        return C.make("data.label-conflict", "skip", "regression: identical inputs may have different targets")
    h = np.concatenate([hashes["train"], hashes["val"]])
    y = np.concatenate([ds.train.y, ds.val.y])
    order = np.argsort(h)
    hs, ys = h[order], y[order]
    same = hs[1:] == hs[:-1]
    # inside a group of equal inputs, labels all agree exactly when every neighbouring pair agrees, whatever
    # the order within the group: no need to sort by label too
    differ = same & (ys[1:] != ys[:-1])
    conflicted = set(hs[1:][differ].tolist())
    mask = np.isin(h, list(conflicted)) if conflicted else np.zeros(len(h), bool)
    n = int(mask.sum())
    frac = n / max(len(h), 1)
    ntr = len(ds.train.y)
    ev = {"rows": n, "groups": len(conflicted), "fraction": round(frac, 4), "max_fraction": th["max_fraction"],
          "example_train_rows": _rows(ds.train, mask[:ntr]), "example_val_rows": _rows(ds.val, mask[ntr:])}
    if frac > th["max_fraction"]:
        return C.make("data.label-conflict", "fail", f"{n} rows share identical inputs but have different labels", ev,
                      "Relabel or drop the conflicting rows: no model can get them all right.")
    if n:
        return C.make("data.label-conflict", "warn", f"{len(conflicted)} input(s) appear with different labels", ev,
                      "Look at those rows: they cap the achievable accuracy.")
    return C.make("data.label-conflict", "pass", "no identical inputs with different labels", ev)


def _counts(ds) -> dict[str, list[int]]:
    return {s: np.bincount(sp.y.astype(np.int64), minlength=ds.num_classes).tolist() for s, sp in _splits(ds).items()}


def check_imbalance(ds, th) -> C.Check:
    if ds.task != "classification":
        y = ds.train.y[np.isfinite(ds.train.y)]
        return C.make("data.imbalance", "skip", "regression: see data.outliers for the target's tails",
                      {"target_mean": float(y.mean()) if y.size else None, "target_std": float(y.std()) if y.size else None})
    counts = _counts(ds)
    tr = np.asarray(counts["train"], float)
    ratio = float(tr.min() / tr.max())
    absent = {s: [str(ds.classes[i]) for i, c in enumerate(cs) if c == 0] for s, cs in counts.items() if s != "train"}
    absent = {s: v for s, v in absent.items() if v}
    ev = {"counts": counts, "min_over_max": round(ratio, 4), "rarest": str(ds.classes[int(tr.argmin())]),
          "min_ratio": th["min_ratio"], "fail_ratio": th["fail_ratio"]}
    if absent:
        ev["absent"] = absent
    if ratio < th["fail_ratio"]:
        return C.make("data.imbalance", "fail", f"rarest class is {ratio:.2%} the size of the largest", ev,
                      "Collect more of the rare class, or reweight/resample it; accuracy will hide it otherwise.")
    if ratio < th["min_ratio"] or absent:
        what = f"rarest class is {ratio:.1%} the size of the largest" if ratio < th["min_ratio"] else \
            "classes absent from a split: " + "; ".join(f"{s}: {v[:EXAMPLES]}" for s, v in absent.items())
        return C.make("data.imbalance", "warn", what, ev,
                      "Use per-class metrics and consider class weights; stratify the split.")
    return C.make("data.imbalance", "pass", f"classes balanced within {ratio:.2f}x", ev)


def check_split_shift(ds, th) -> C.Check:
    ev: dict[str, Any] = {"max_tv_distance": th["max_tv_distance"]}
    if ds.task == "classification":
        counts = _counts(ds)
        p = np.asarray(counts["train"], float) / max(sum(counts["train"]), 1)
        worst = 0.0
        for s in ("val", "test"):
            q = np.asarray(counts[s], float) / max(sum(counts[s]), 1)
            tv = 0.5 * float(np.abs(p - q).sum())
            ev[f"tv_train_{s}"] = round(tv, 4)
            worst = max(worst, tv)
        measure = "total-variation distance of label distributions"
    else:
        tr = ds.train.y[np.isfinite(ds.train.y)]
        worst = 0.0
        for s, sp in (("val", ds.val), ("test", ds.raw_test())):
            v = sp.y[np.isfinite(sp.y)]
            d = abs(float(v.mean()) - float(tr.mean())) / (float(tr.std()) + 1e-12) if v.size and tr.size else 0.0
            ev[f"mean_shift_{s}_in_train_std"] = round(d, 4)
            worst = max(worst, d / 2)  # half a std of mean shift ~ the same alarm as TV 0.25
        measure = "mean shift of the target in train standard deviations"
    if worst > th["max_tv_distance"]:
        return C.make("data.split-shift", "warn", f"splits differ: {measure} up to {worst:.3f}", ev,
                      "Use a stratified/random split so val and test come from the train distribution.")
    return C.make("data.split-shift", "pass", f"splits share one distribution ({measure} <= {worst:.3f})", ev)


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
    from recipe.stages.prescaled import prescaled

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
        from recipe.data import norm_stats

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


def check_order(ds, th, batch_size: int) -> C.Check:
    if ds.task != "classification":
        y = ds.train.y[np.argsort(ds.train.rows)]
        sorted_frac = float(np.mean(np.diff(y) >= 0)) if len(y) > 1 else 0.0
        ev = {"non_decreasing_steps": round(sorted_frac, 4)}
        if sorted_frac > 0.95:
            return C.make("data.order", "warn", "the file is sorted by its target", ev,
                          "recipe shuffles every epoch; shuffle in any other loader you use on this file.")
        return C.make("data.order", "pass", "targets are not sorted in file order", ev)
    y = ds.train.y[np.argsort(ds.train.rows)]
    change = np.flatnonzero(np.diff(y) != 0)
    bounds = np.concatenate([[-1], change, [len(y) - 1]])
    runs = np.diff(bounds)
    longest = int(runs.max()) if runs.size else 0
    bs = max(1, min(batch_size, len(y)))
    starts = np.arange(0, len(y), bs)                                      # unshuffled batches, in file order
    single = (np.minimum.reduceat(y, starts) == np.maximum.reduceat(y, starts)) if len(y) else np.array([], bool)
    single = single[np.minimum(starts + bs, len(y)) - starts > 1]          # a batch of one row says nothing
    frac = float(np.mean(single)) if len(single) else 0.0
    expected = len(y) / max(ds.num_classes, 1)
    ev = {"longest_run": longest, "runs": int(runs.size), "single_class_batches": round(frac, 4),
          "batch_size": bs, "max_single_class_batches": th["max_single_class_batches"]}
    if frac > th["max_single_class_batches"]:
        return C.make("data.order", "warn",
                      f"rows are grouped by label: {frac:.0%} of unshuffled batches of {bs} hold a single class", ev,
                      "recipe shuffles every epoch; shuffle in any other loader you use, or batches will hold one class.")
    if longest > max(50, expected / 2):
        return C.make("data.order", "warn", f"a run of {longest} rows of one label in file order", ev,
                      "Shuffle before splitting by position; recipe's own splits and batches are shuffled.")
    return C.make("data.order", "pass", f"labels are mixed in file order (longest run {longest})", ev)


def check_size(ds, th) -> C.Check:
    n = len(ds.train.y)
    ev: dict[str, Any] = {"train_rows": n, "features": ds.num_features, "min_per_class": th["min_per_class"]}
    if ds.task == "classification":
        counts = np.bincount(ds.train.y, minlength=ds.num_classes)
        small = [str(ds.classes[i]) for i in np.flatnonzero(counts < th["min_per_class"])]
        ev.update(fewest=int(counts.min()), classes_below=small[:EXAMPLES])
        if counts.min() < 2:
            return C.make("data.size", "fail", f"class {small[0]} has {int(counts.min())} train sample(s)", ev,
                          "Collect more samples of that class or merge it; a model cannot learn from one example.")
        if small:
            return C.make("data.size", "warn", f"{len(small)} class(es) have fewer than {th['min_per_class']} train samples",
                          ev, "Expect noisy per-class scores; collect more data for those classes.")
    elif n < th["min_per_class"] * 5:
        return C.make("data.size", "warn", f"only {n} train rows for a regression", ev,
                      "Prefer a small model (linear) and strong regularization.")
    if n < ds.num_features:
        return C.make("data.size", "warn", f"fewer train rows ({n}) than features ({ds.num_features})", ev,
                      "Use a linear model or reduce the features; a network will memorize.")
    return C.make("data.size", "pass", f"{n} train rows for {ds.num_features} features", ev)


def check_outliers(ds, th) -> C.Check:
    """Values beyond `z` robust standard deviations: any one is a warning that names its column and rows;
    more than `max_fraction` of all train cells fails (sentinels such as -999, unit slips, corrupt columns)."""
    x = ds.train.x
    finite = all_finite(x)
    fin = x if finite else np.where(np.isfinite(x), x, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        # robust z (median / MAD) so that many outliers cannot hide each other by inflating the std;
        # columns with MAD 0 (mostly-constant, e.g. image borders) fall back to mean / std
        ref = fin if len(fin) <= 100_000 else fin[np.random.default_rng(0).choice(len(fin), 100_000, replace=False)]
        # centre and spread from (a sample of) train, z on every row; one column per contiguous row of ref.T:
        # a median along axis 0 partitions strided columns, 5x slower
        ref = np.ascontiguousarray(ref.T)
        median, mean, std, lo, hi = (np.median, np.mean, np.std, np.min, np.max) if finite else \
            (np.nanmedian, np.nanmean, np.nanstd, np.nanmin, np.nanmax)
        med = median(ref, 1)
        mad = 1.4826 * median(np.abs(ref - med[:, None]), 1)
        mean, sd = mean(ref, 1), std(ref, 1)
        lo, hi = lo(ref, 1), hi(ref, 1)
        # a column of two values (a one-hot level, a flag) has no outliers in its rare value, which is a
        # category; only a value outside its two (a -999 in a 0/1 column) counts
        binary = np.all((ref == lo[:, None]) | (ref == hi[:, None]) | np.isnan(ref), 1) & (hi > lo)
        center = np.where(binary, (lo + hi) / 2, np.where(mad > 1e-12, med, mean))
        spread = np.where(mad > 1e-12, mad, np.where(sd > 1e-12, sd, np.inf))
        spread = np.where(binary, (hi - lo) * (0.5 + 1e-6) / th["z"], spread)
        limit = (th["z"] * spread).astype(np.float32)      # |x - centre| > z * spread, a block of rows at a time
        center = center.astype(np.float32)
        rows = np.zeros(len(fin), bool)
        per_col = np.zeros(fin.shape[1], np.int64)
        step = 1 << 13
        buf = np.empty((min(step, len(fin)), fin.shape[1]), np.float32)
        cells = np.empty(buf.shape, bool)
        for i in range(0, len(fin), step):
            b, c = buf[:len(fin[i:i + step])], cells[:len(fin[i:i + step])]
            np.subtract(fin[i:i + step], center, out=b)
            np.abs(b, out=b)
            np.greater(b, limit, out=c)                        # NaN compares False: not an outlier
            hit = c.any(1)
            if hit.any():
                rows[i:i + step] = hit
                per_col += c[hit].sum(0)
        flagged = np.flatnonzero(rows)                    # a second look at the flagged rows only: rows per column
        cells = np.abs(fin[flagged] - center) > limit
        zmax = np.where(cells, np.abs(fin[flagged] - center) / spread.astype(np.float32), 0)
    n_cells = int(per_col.sum())
    frac = n_cells / fin.size if fin.size else 0.0
    worst = [int(j) for j in np.argsort(-per_col, kind="stable")[:EXAMPLES] if per_col[j]]
    per_column = {ds.feature_names[j]: {"count": int(per_col[j]), "rows": _rows(ds.train, flagged[cells[:, j]]),
                                        "max_z": round(float(zmax[:, j].max()), 1)} for j in worst}
    ev: dict[str, Any] = {"cells": n_cells, "fraction": round(frac, 6), "z": th["z"], "rows_checked": len(fin),
                          "centre_and_spread_from_rows": ref.shape[1],
                          "scale": "robust (median/MAD; mean/std where MAD is 0; two-valued columns exempt)",
                          "max_fraction": th["max_fraction"], "example_rows": _rows(ds.train, rows),
                          "columns": [ds.feature_names[j] for j in worst], "per_column": per_column,
                          "columns_with_outliers": int((per_col > 0).sum()), "two_valued_columns": int(binary.sum())}
    status, title, advice = "pass", f"no value beyond {th['z']:.0f} robust standard deviations", ""
    if n_cells:
        first = ds.feature_names[worst[0]]
        more = int((per_col > 0).sum()) - 1
        title = (f"{n_cells} values ({frac:.3%} of train cells) beyond {th['z']:.0f} robust standard deviations: "
                 f"{per_column[first]['count']} in '{first}' (rows {', '.join(map(str, per_column[first]['rows']))})"
                 + (f" and {more} more column(s)" if more else ""))
        status = "fail" if frac > th["max_fraction"] else "warn"
        advice = ("Look at those rows: clip, log-transform or fix the values if they are errors (a sentinel such as "
                  "-999, a unit slip); heavy but genuine tails can stay.")
    if ds.task == "regression":
        y = ds.train.y[np.isfinite(ds.train.y)].astype(np.float64)
        if y.size > 3 and y.std() > 0:
            kurt = float(np.mean(((y - y.mean()) / y.std()) ** 4) - 3)
            ev.update(target_excess_kurtosis=round(kurt, 3), target_mean=float(y.mean()), target_std=float(y.std()))
            if kurt > 10:
                heavy = f"the target is heavy-tailed (excess kurtosis {kurt:.1f})"
                title = heavy if status == "pass" else f"{title}; {heavy}"
                status = "warn" if status == "pass" else status
                advice = (advice + " " if advice else "") + \
                    "Consider a log transform of the target or a robust loss; MSE will chase the tail."
    return C.make("data.outliers", status, title, ev, advice)


def _probe_data(ds, th):
    """Normalized train rows for a probe: all of them, or a seeded sample of th['sample'] (taken before
    normalizing, so that 1M rows cost what the sample costs)."""
    y = ds.train.y
    idx = np.flatnonzero(np.isfinite(y)) if ds.task == "regression" else np.arange(len(y))
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
    cls = ds.task == "classification"
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


def check_images(ds) -> C.Check:
    info = ds.extra.get("images")
    shape = ds.shape
    if info is None and len(shape) != 3:
        return C.make("data.images", "skip", "not image-shaped data")
    ev: dict[str, Any] = {"shape": list(shape)}
    problems, advice = [], []
    if info:
        ev.update(corrupt=info["corrupt"][:EXAMPLES], corrupt_count=len(info["corrupt"]),
                  sizes=info["sizes"], dropped_other_size=len(info["dropped_other_size"]))
        if info["corrupt"]:
            problems.append(f"{len(info['corrupt'])} unreadable file(s)")
            advice.append("remove or re-export the unreadable files")
        if len(info["sizes"]) > 1:
            problems.append(f"mixed image sizes {info['sizes']} ({len(info['dropped_other_size'])} dropped)")
            advice.append("resize all images to one size")
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        problems.append(f"data.shape {list(shape)} looks channels-last (HWC); models expect CHW")
        advice.append("give data.shape as [C, H, W]")
    x = ds.train.x
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    ev["value_range"] = [lo, hi]
    if hi > 2.0 and ds.norm["kind"] == "none":
        problems.append(f"pixel values span [{lo:.0f}, {hi:.0f}] and are not normalized")
        advice.append("set data.normalize: standard or scale to [0, 1]")
    if problems:
        return C.make("data.images", "warn", "; ".join(problems), ev, "; ".join(advice).capitalize() + ".")
    return C.make("data.images", "pass", f"images {list(shape)} CHW, range [{lo:.3g}, {hi:.3g}]", ev)


# ----------------------------------------------------------------------------- pictures and report


def _pictures(ctx, ds) -> list[str]:
    """class_balance.png (or target.png), samples.png for images, features.png."""
    from recipe import plots

    out = []
    if ds.task == "classification":
        ctx.artifacts.figure("class_balance.png", plots.class_balance(_counts(ds), ds.classes))
        out.append("class_balance.png")
    else:
        ctx.artifacts.figure("target.png", plots.target_histogram({"train": ds.train.y, "val": ds.val.y}))
        out.append("target.png")
    if len(ds.shape) == 3:
        idx = np.random.default_rng(0).choice(len(ds.train.y), min(32, len(ds.train.y)), replace=False)
        labels = [ds.classes[v] if ds.classes else f"{v:.3g}" for v in ds.train.y[idx]]
        ctx.artifacts.figure("samples.png", plots.image_grid(ds.train.x[idx], ds.shape, labels, "train samples"))
        out.append("samples.png")
    # features by problem first: non-finite, outliers, then most variable
    x = ds.train.x
    if len(x) > 20000:   # histograms of a 20k-row sample look the same and draw 50x faster at 1M rows
        x = x[np.random.default_rng(0).choice(len(x), 20000, replace=False)]
    with np.errstate(invalid="ignore"):
        score = np.nan_to_num(np.nanstd(np.where(np.isfinite(x), x, np.nan), 0))
    score = score + 1e6 * (~np.isfinite(x)).any(0)
    cols = [int(j) for j in np.argsort(-score)[:8]]
    ctx.artifacts.figure("features.png", plots.feature_histograms(x, ds.feature_names, cols, "train features (raw)"),
                         tight=False)
    out.append("features.png")
    return out


def _suspects_picture(ctx, ds, suspects: np.ndarray) -> list[str]:
    """label_noise_suspects.png: the images whose labels confident learning doubts most (train positions)."""
    if len(ds.shape) != 3 or not len(suspects):
        return []
    from recipe import plots

    s = suspects[:16]
    ctx.artifacts.figure("label_noise_suspects.png", plots.image_grid(
        ds.train.x[s], ds.shape, [f"row {ds.train.rows[i]}: {ds.classes[ds.train.y[i]]}" for i in s],
        "most suspicious labels (given label shown)"))
    return ["label_noise_suspects.png"]


def _probes(ds, th, seed: int) -> tuple[C.Check, C.Check, np.ndarray]:
    """data.signal and data.label-noise, on bounded samples of train."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the probes' matrices are small, and OpenBLAS threads that spin while another
    # process holds the cores made these two checks up to 20x slower on a busy 2-core machine
    with threadpool_limits(1, user_api="blas"):
        signal = check_signal(ds, th("data.signal"), seed)
        noise, suspects = check_label_noise(ds, th("data.label-noise"), seed)
    return signal, noise, suspects


def before(cfg, ctx) -> None:
    """The runner calls this before it loads the data: the imports start during the read."""
    _warm_imports()


def _warm_imports() -> None:
    """Import the probes' and pictures' libraries on a side thread while the main thread reads the data:
    pyarrow and numpy release the GIL and the CSV parser keeps about one core busy, so a second of
    sklearn/matplotlib imports costs almost nothing."""
    import threading

    def work():
        try:
            import sklearn.ensemble  # noqa: F401
            import sklearn.linear_model  # noqa: F401
            import sklearn.model_selection  # noqa: F401

            import recipe.plots  # noqa: F401
        except Exception:   # the main thread imports them again and reports any real problem
            pass

    threading.Thread(target=work, name="recipe-warm-imports", daemon=True).start()


def run(cfg, ctx) -> StageResult:
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    warnings.filterwarnings("ignore", module="sklearn")   # probe warnings (ill-conditioned, convergence) are noise here
    ds = ctx.data()
    th = ctx.thresholds
    with ctx.progress("inspect", 15) as bar, ThreadPoolExecutor(2, thread_name_prefix="recipe-inspect") as pool:
        non_finite = check_non_finite(ds)
        # the probes (sklearn: tree building and BLAS release the GIL) and the pictures (matplotlib, Agg, on
        # one thread only) run on side threads while this one runs the array checks, whose numpy loops
        # release the GIL too: two cores busy instead of one
        probes = pool.submit(_probes, ds, th, cfg.seed) if non_finite.status != "fail" else None
        drawn = pool.submit(_pictures, ctx, ds)
        hashes = {s: row_hashes(sp.x) for s, sp in _splits(ds).items()}
        derive(hashes, _splits(ds))     # with-target and sorted hashes, shared by data.leak and data.duplicates
        moments = column_moments(ds.train.x)   # recomputed from train alone: data.scale compares them with ds.norm
        checks = [check_load(ds), non_finite, check_constant(ds, th("data.constant")),
                  check_duplicates(ds, th("data.duplicates"), hashes), check_leak(ds, th("data.leak"), hashes),
                  check_label_conflict(ds, th("data.label-conflict"), hashes), check_imbalance(ds, th("data.imbalance")),
                  check_split_shift(ds, th("data.split-shift")), check_scale(ds, th("data.scale"), moments),
                  check_order(ds, th("data.order"), cfg.train.batch_size), check_size(ds, th("data.size")),
                  check_outliers(ds, th("data.outliers"))]
        bar.update(12)
        report = data_report(ds, moments)
        ctx.artifacts.json("data_report.json", report)
        pictures = drawn.result()
        bar.update(13)
        if probes is not None:
            signal, noise, suspects = probes.result()
            checks += [signal, noise]
        else:
            suspects = np.array([], int)
            for cid in ("data.signal", "data.label-noise"):
                checks.append(C.make(cid, "skip", "skipped: the data holds NaN/inf (see data.non-finite)"))
        checks.append(check_images(ds))
        pictures[-1:-1] = _suspects_picture(ctx, ds, suspects)   # before features.png, as listed in the report
        bar.update(15)
    sizes = report["rows"]
    summary = (f"{sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test rows, {ds.num_features} features, "
               f"{ds.task}" + (f", {ds.num_classes} classes" if ds.classes else ""))
    return StageResult(checks, metrics={"rows": sizes, "features": ds.num_features}, summary=summary,
                       extra={"pictures": pictures})


def data_report(ds, moments=None) -> dict[str, Any]:
    """What later stages read: priors / target stats, train feature stats, sizes, fingerprint."""
    mean, std = moments if moments is not None else column_moments(ds.train.x)
    report: dict[str, Any] = {
        "fingerprint": ds.fingerprint, "task": ds.task, "shape": list(ds.shape),
        "rows": {"train": len(ds.train.y), "val": len(ds.val.y), "test": len(ds.raw_test().y)},
        "feature_names": ds.feature_names, "classes": ds.classes, "normalization": ds.norm,
        "train_feature_mean": np.nan_to_num(mean).tolist(), "train_feature_std": np.nan_to_num(std).tolist(),
        "encoding": ds.encoding,
    }
    if ds.task == "classification":
        report["class_priors"] = ds.class_priors()
        report["class_counts"] = _counts(ds)
    else:
        report["target_mean"], report["target_std"] = ds.target_stats["mean"], ds.target_stats["std"]
    return report
