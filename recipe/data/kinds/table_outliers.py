"""The table kind's data.outliers: values beyond robust standard deviations, and a heavy-tailed real target."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.hashing import all_finite
from recipe.data.kinds.look import EXAMPLES, rows_of as _rows


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
    if not ds.has_classes:     # a real target: is its tail heavy?
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


