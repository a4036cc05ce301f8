"""Did the user scale the data with statistics of val/test rows before handing it to recipe? (37 reasons #15)

A file standardized with the statistics of all its rows has, over train+val+test together, a mean of 0 and a
standard deviation of 1 to float precision, while the train rows alone do not; a file min-max scaled over
all rows spans exactly [0, 1] overall with some extreme held only by a val/test row. Natural data lands on
those values to 1e-6 with vanishing probability, so the rule is exact-match, not a threshold on "close":
rounding (a CSV written with few digits) can hide the pattern, which makes it miss, never false-alarm.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

MEAN_TOL = 1e-6     # |pooled mean| / pooled std: float32 storage keeps a recomputed mean within ~1e-7
STD_TOL = 1e-5      # |pooled std - 1| (population or sample convention)
RANGE_TOL = 1e-6    # pooled min 0 / max 1
CHUNK = 1 << 15


def _moments(x: np.ndarray) -> dict[str, np.ndarray]:
    """Count, sum, sum of squares, min and max per column in float64, NaN/inf left out, a block at a time."""
    d = x.shape[1]
    out = {"n": np.zeros(d), "s": np.zeros(d), "ss": np.zeros(d), "min": np.full(d, np.inf), "max": np.full(d, -np.inf)}
    for i in range(0, len(x), CHUNK):
        raw = x[i:i + CHUNK]
        if np.isfinite(raw).all():          # the usual case: no masks to build
            z = raw.astype(np.float64)
            out["n"] += len(z)
            lo, hi = raw.min(0), raw.max(0)
        else:
            ok = np.isfinite(raw)
            z = np.where(ok, raw, 0).astype(np.float64)
            out["n"] += ok.sum(0)
            lo, hi = np.where(ok, raw, np.inf).min(0), np.where(ok, raw, -np.inf).max(0)
        out["s"] += z.sum(0)
        out["ss"] += np.einsum("ij,ij->j", z, z)
        out["min"], out["max"] = np.minimum(out["min"], lo), np.maximum(out["max"], hi)
    return out


def _mean_std(m: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n = np.maximum(m["n"], 1)
    mean = m["s"] / n
    return mean, np.sqrt(np.maximum(m["ss"] / n - mean ** 2, 0.0))


def _standardized(mean, std, n) -> np.ndarray:
    """Mean 0 and std 1 to float precision, with either n or n-1 in the variance (numpy vs pandas)."""
    sample = np.sqrt(np.maximum(n - 1, 0) / np.maximum(n, 1))       # population std of data scaled with ddof=1
    unit = (np.abs(std - 1) < STD_TOL) | (np.abs(std - sample) < STD_TOL)
    return (np.abs(mean) < MEAN_TOL * np.maximum(std, 1e-12)) & unit & (std > 0)


def prescaled(train: np.ndarray, others: dict[str, np.ndarray], names: list[str]) -> Optional[dict[str, Any]]:
    """The evidence that features arrived scaled with statistics of rows outside train, or None."""
    parts = {"train": _moments(train), **{k: _moments(v) for k, v in others.items() if len(v)}}
    tr_mean, tr_std = _mean_std(parts["train"])
    train_std = _standardized(tr_mean, tr_std, parts["train"]["n"])
    train_centered = np.abs(tr_mean) < MEAN_TOL * np.maximum(tr_std, 1e-12)
    varying = (tr_std > 0) & (parts["train"]["n"] > 1)
    if not varying.any() or len(parts) < 2:
        return None
    rest = [k for k in parts if k != "train"]
    pools = [["train"] + rest] + ([["train", k] for k in rest] if len(rest) > 1 else [])
    for pool in pools:                        # the widest pool first: "all rows" is the usual case
        m = {k: sum(parts[p][k] for p in pool) for k in ("n", "s", "ss")}
        mean, std = _mean_std(m)
        std_feats = np.flatnonzero(varying & _standardized(mean, std, m["n"]) & ~train_std)
        centered = np.flatnonzero(varying & (np.abs(mean) < MEAN_TOL * np.maximum(std, 1e-12)) & ~train_centered)
        lo = np.minimum.reduce([parts[p]["min"] for p in pool])
        hi = np.maximum.reduce([parts[p]["max"] for p in pool])
        unit_range = (np.abs(lo) < RANGE_TOL) & (np.abs(hi - 1) < RANGE_TOL)
        outside = (parts["train"]["min"] > lo + RANGE_TOL) | (parts["train"]["max"] < hi - RANGE_TOL)
        minmax = np.flatnonzero(varying & unit_range & outside) if unit_range[varying].all() else np.array([], int)
        if not (len(std_feats) or len(centered) or len(minmax)):
            continue
        kind = "standardized" if len(std_feats) else ("min-max scaled" if len(minmax) else "centered")
        feats = std_feats if len(std_feats) else (minmax if len(minmax) else centered)
        # how far train-only statistics are from the pooled ones: the size of what leaked, in pooled std units
        shift = np.abs(tr_mean[feats] - mean[feats]) / np.maximum(std[feats], 1e-12)
        return {"kind": kind, "pool": "+".join(pool), "features": len(feats), "varying_features": int(varying.sum()),
                "examples": [names[j] for j in feats[:5]],
                "train_mean_offset_in_pooled_std": round(float(shift.max()), 6),
                "train_std_over_pooled": [round(float(v), 6) for v in (tr_std[feats] / np.maximum(std[feats], 1e-12))[:5]],
                "extremes_outside_train": int(len(minmax)) if kind == "min-max scaled" else None}
    return None
