"""Fast one-pass array statistics: 64-bit row hashes (duplicates, leaks, label conflicts) and per-column
mean/std, both computed in cache-sized row chunks so that a 1M x 50 matrix never gets a float64 copy."""
from __future__ import annotations

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)
CHUNK = 1 << 14   # rows per chunk: 16k x 50 x 8 bytes stays in L2


def row_hashes(x: np.ndarray) -> np.ndarray:
    """(N,) uint64 hash of each row's float32 bits; -0.0 and 0.0 hash alike, NaNs alike."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    out = np.zeros(n, np.uint64)
    if d == 0:
        return out
    weights = np.random.default_rng(12345).integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        for i in range(0, n, CHUNK):
            c = x[i:i + CHUNK] + np.float32(0.0)                       # folds -0.0 into 0.0
            c[np.isnan(c)] = np.float32(np.nan)                        # one NaN bit pattern
            bits = c.view(np.uint32).astype(np.uint64)
            bits ^= bits >> np.uint64(15)
            bits *= _MULT
            bits *= weights
            h = bits.sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(29)
            h *= _MULT
            out[i:i + CHUNK] = h
    return out


def column_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std with float64 accumulators; NaN/inf are ignored. Finite data (the common case)
    is summed in row chunks, shifted by a first-chunk estimate of the mean so that large offsets do not
    cancel (Welford-quality on real data); otherwise a float64 copy with NaN for the non-finite cells."""
    with np.errstate(invalid="ignore"):
        if not np.isfinite(x).all():
            v = np.where(np.isfinite(x), x.astype(np.float64), np.nan)
            return np.nanmean(v, axis=0), np.nanstd(v, axis=0)
    n, d = x.shape
    if n == 0:
        return np.full(d, np.nan), np.full(d, np.nan)
    shift = x[:CHUNK].mean(axis=0, dtype=np.float64)
    s1, s2 = np.zeros(d), np.zeros(d)
    for i in range(0, n, CHUNK):
        c = x[i:i + CHUNK].astype(np.float64) - shift
        s1 += c.sum(axis=0)
        s2 += np.einsum("ij,ij->j", c, c)
    m = s1 / n
    return shift + m, np.sqrt(np.maximum(s2 / n - m * m, 0.0))
