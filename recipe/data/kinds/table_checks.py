"""The table kind's array and label checks: load, non-finite, constant, duplicates, leak, label
conflicts, imbalance, split shift, order and size. Task-specific parts ask whether the targets are class ids (ds.has_classes)."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.hashing import all_finite
from recipe.data.kinds.look import EXAMPLES, rows_of as _rows, splits_of as _splits


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
        if not ds.has_classes:     # real targets can be NaN/inf too
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
    return constant_verdict(ds, const, zero, x.shape[1], th)


def constant_verdict(ds, const, zero, d: int, th) -> C.Check:
    """data.constant from the constant columns `const` (all-zero ones `zero`) of the d train features: in memory
    or from a streamed pass's running min/max (table_stream.py)."""
    frac = len(const) / max(d, 1)
    ev = {"constant": len(const), "all_zero": len(zero), "features": d, "fraction": round(frac, 4),
          "examples": [ds.feature_names[j] for j in const[:EXAMPLES]], "max_constant_fraction": th["max_constant_fraction"]}
    if len(const) == d:
        return C.make("data.constant", "fail", "every feature is constant in train: there is nothing to learn", ev,
                      "Check that the right columns were read (data.features) and that the file is not truncated.")
    if frac > th["max_constant_fraction"]:
        return C.make("data.constant", "warn", f"{len(const)} of {d} features are constant in train", ev,
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
    if not ds.has_classes:
        return C.make("data.label-conflict", "skip", f"{ds.task}: identical inputs may have different targets")
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


def label_counts(ds) -> dict[str, list[int]]:
    return {s: np.bincount(sp.y.astype(np.int64), minlength=ds.num_classes).tolist() for s, sp in _splits(ds).items()}


def check_imbalance(ds, th) -> C.Check:
    if not ds.has_classes:
        y = ds.train.y[np.isfinite(ds.train.y)]
        return C.make("data.imbalance", "skip", f"{ds.task}: see data.outliers for the target's tails",
                      {"target_mean": float(y.mean()) if y.size else None, "target_std": float(y.std()) if y.size else None})
    counts = label_counts(ds)
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
    if ds.has_classes:
        counts = label_counts(ds)
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


def check_order(ds, th, batch_size: int) -> C.Check:
    if not ds.has_classes:
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
    if ds.has_classes:
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
        return C.make("data.size", "warn", f"only {n} train rows for a {ds.task}", ev,
                      "Prefer a small model (linear) and strong regularization.")
    if n < ds.num_features:
        return C.make("data.size", "warn", f"fewer train rows ({n}) than features ({ds.num_features})", ev,
                      "Use a linear model or reduce the features; a network will memorize.")
    return C.make("data.size", "pass", f"{n} train rows for {ds.num_features} features", ev)


