"""One streaming pass over a streamed table's row groups: train-only normalization statistics (running shifted
moments in float64, as recipe/data/hashing.py's column_moments computes them in memory; min/max) and the
content hash of each split's features, so the fingerprint costs no second read."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from recipe.data.dataset import SPLITS

CHUNK = 4096


class Moments:
    """Per-column count, mean and std of finite values, summed in float64 around a first-batch shift so that
    large offsets do not cancel; min and max of the finite values."""

    def __init__(self, d: int):
        self.shift = None
        self.n, self.s1, self.s2 = np.zeros(d), np.zeros(d), np.zeros(d)
        self.lo, self.hi = np.full(d, np.inf), np.full(d, -np.inf)

    def add(self, x: np.ndarray) -> None:
        for i in range(0, len(x), CHUNK):          # float64 copies of CHUNK rows at a time, not of a row group
            self._add(x[i:i + CHUNK])

    def _add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        finite = np.isfinite(x)
        if self.shift is None:
            with np.errstate(invalid="ignore"):
                first = np.where(finite, x, 0).sum(0, dtype=np.float64) / np.maximum(finite.sum(0), 1)
            self.shift = first
        c = np.where(finite, x.astype(np.float64) - self.shift, 0.0)      # (B, D)
        self.n += finite.sum(0)
        self.s1 += c.sum(0)
        self.s2 += np.einsum("ij,ij->j", c, c)
        self.lo = np.minimum(self.lo, np.where(finite, x, np.inf).min(0))
        self.hi = np.maximum(self.hi, np.where(finite, x, -np.inf).max(0))

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.s1 / self.n
            shift = self.shift if self.shift is not None else np.zeros_like(m)
            return shift + m, np.sqrt(np.maximum(self.s2 / self.n - m * m, 0.0))


def norm_from(mom: Moments, kind: str, shape: tuple) -> dict[str, Any]:
    """recipe/data/normalize.py's norm_stats, from running moments: per feature, or per channel ([C, H, W])."""
    if kind == "none" or not len(mom.n):
        return {"kind": "none"}
    mean, std = mom.mean_std()
    per_channel = len(shape) == 3
    if kind == "standard":
        shift, scale = mean, std
        if per_channel:        # pool the pixels of each channel: mean of means, variance within + between
            c = shape[0]
            n, m, v = mom.n.reshape(c, -1), mean.reshape(c, -1), std.reshape(c, -1) ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                mc = np.nansum(n * m, 1) / n.sum(1)
                vc = np.nansum(n * (v + (m - mc[:, None]) ** 2), 1) / n.sum(1)
            shift, scale = mc, np.sqrt(vc)
    else:
        lo = np.where(np.isfinite(mom.lo), mom.lo, np.nan)
        hi = np.where(np.isfinite(mom.hi), mom.hi, np.nan)
        if per_channel:
            c = shape[0]
            lo, hi = np.nanmin(lo.reshape(c, -1), 1), np.nanmax(hi.reshape(c, -1), 1)
        shift, scale = lo.astype(np.float64), (hi - lo).astype(np.float64)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    if per_channel:
        per = int(np.prod(shape[1:]))
        shift, scale = np.repeat(shift, per), np.repeat(scale, per)
    return {"kind": kind, "per": "channel" if per_channel else "feature", "shift": shift.tolist(),
            "scale": scale.tolist()}


def scan(sources, columns: list[str], kind: str, shape: tuple) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(normalization from train's rows, per-split SHA-256 of the float32 feature rows in stream order)."""
    from recipe.data.stream_table import CODE, read_piece

    mom = Moments(len(columns))
    hashes = {s: hashlib.sha256() for s in SPLITS}
    cache: dict = {}
    for src in sources:
        for piece in src.pieces:
            x, _ = read_piece(piece, columns, cache=cache)
            codes = src.codes[piece.start:piece.start + piece.rows]
            for s in SPLITS:
                rows = x[codes == CODE[s]]
                if len(rows):
                    hashes[s].update(np.ascontiguousarray(rows).data)
                    if s == "train":
                        mom.add(rows)
        cache.clear()
    return norm_from(mom, kind, shape), {s: h.digest() for s, h in hashes.items()}
