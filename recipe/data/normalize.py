"""Normalization statistics from the train split: per feature, or per channel for images."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe.data.hashing import column_moments


def norm_stats(x: np.ndarray, kind: str, shape: tuple = ()) -> dict[str, Any]:
    """Normalization statistics from `x` (the train split): per feature, or per channel for images
    (data.shape [C, H, W]), so that shifting an image does not mix statistics of different pixels."""
    if kind == "none" or x.shape[1] == 0:
        return {"kind": "none"}
    per_channel = len(shape) == 3
    v = x
    if per_channel:
        c = shape[0]
        v = v.reshape(len(x), c, -1).transpose(1, 0, 2).reshape(c, -1).T   # (N*H*W, C)
    with np.errstate(invalid="ignore"):
        if kind == "standard":
            shift, scale = column_moments(v)
        elif np.isfinite(v).all():   # the common case: one pass each, no copies
            shift = v.min(axis=0).astype(np.float64)
            scale = v.max(axis=0).astype(np.float64) - shift
        else:
            v = np.where(np.isfinite(v), v.astype(np.float64), np.nan)
            shift = np.nanmin(v, axis=0)
            scale = np.nanmax(v, axis=0) - shift
    shift = np.where(np.isfinite(shift), shift, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    if per_channel:
        per = int(np.prod(shape[1:]))
        shift, scale = np.repeat(shift, per), np.repeat(scale, per)
    return {"kind": kind, "per": "channel" if per_channel else "feature", "shift": shift.tolist(), "scale": scale.tolist()}

