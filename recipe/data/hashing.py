"""Fast one-pass array statistics: 64-bit row hashes (duplicates, leaks, label conflicts) and per-column
mean/std, both computed in cache-sized row chunks so that a 1M x 50 matrix never gets a float64 copy."""
from __future__ import annotations

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)
CHUNK = 1 << 14   # rows per chunk of the finiteness test and of the first estimate of the mean
MOMENT_CHUNK = 1 << 12   # rows per float64 block of the moments: 4k x 50 x 8 bytes
HASH_CHUNK = 1 << 12   # rows per chunk for hashes: 4k x 25 words x 8 bytes


def row_hashes(x: np.ndarray) -> np.ndarray:
    """(N,) uint64 hash of each row's float32 bits; -0.0 and 0.0 hash alike, NaNs alike.

    Each pair of float32 cells is read as one 64-bit word, mixed (x ^ x >> 29: high bits reach the low ones)
    and summed with random odd weights: a multiply-add hash over half as many words as cells."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    out = np.zeros(n, np.uint64)
    if d == 0:
        return out
    words = (d + 1) // 2
    weights = np.random.default_rng(12345).integers(1, 2**63, size=words, dtype=np.uint64) | np.uint64(1)
    rows = HASH_CHUNK
    buf = np.zeros((min(rows, n), 2 * words), np.float32)    # an odd column count gets a zero column
    tmp = np.empty((min(rows, n), words), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, n, rows):
            r = min(rows, n - i)
            c = buf[:r]
            np.add(x[i:i + r], np.float32(0.0), out=c[:, :d])                # folds -0.0 into 0.0
            nan = np.isnan(c)
            if nan.any():
                c[nan] = np.float32(np.nan)                                  # one NaN bit pattern
            w = c.view(np.uint64)
            t = tmp[:r]
            np.right_shift(w, np.uint64(29), out=t)
            np.bitwise_xor(t, w, out=t)
            t *= weights
            h = t.sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(31)
            h *= _MULT
            out[i:i + r] = h
    return out


def column_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std with float64 accumulators; NaN/inf are ignored. Finite data (the common case)
    is summed in row chunks, shifted by a first-chunk estimate of the mean so that large offsets do not
    cancel (Welford-quality on real data); otherwise a float64 copy with NaN for the non-finite cells."""
    with np.errstate(invalid="ignore"):
        if not all_finite(x):
            v = np.where(np.isfinite(x), x.astype(np.float64), np.nan)
            return np.nanmean(v, axis=0), np.nanstd(v, axis=0)
    n, d = x.shape
    if n == 0:
        return np.full(d, np.nan), np.full(d, np.nan)
    shift = x[:CHUNK].mean(axis=0, dtype=np.float64)
    s1, s2 = np.zeros(d), np.zeros(d)
    rows = MOMENT_CHUNK
    buf = np.empty((min(rows, n), d), np.float64)
    for i in range(0, n, rows):
        c = buf[:len(x[i:i + rows])]
        np.subtract(x[i:i + rows], shift, out=c)     # cast and shift in one pass, into a reused buffer
        s1 += c.sum(axis=0)
        s2 += np.einsum("ij,ij->j", c, c)
    m = s1 / n
    return shift + m, np.sqrt(np.maximum(s2 / n - m * m, 0.0))


def all_finite(x: np.ndarray) -> bool:
    """True when no cell is NaN or inf, in cache-sized row chunks (no (N, D) boolean array)."""
    x = np.asarray(x)
    if x.ndim < 2:
        return bool(np.isfinite(x).all())
    return all(bool(np.isfinite(x[i:i + CHUNK]).all()) for i in range(0, len(x), CHUNK))
