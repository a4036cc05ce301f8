"""Exact duplicate documents and long n-grams shared across splits, for text's data.duplicates and data.leak.

An n-gram's hash is the polynomial sum_k (t[i+k] + 1) * B^-k modulo 2**64 for a fixed random odd B (odd numbers
are invertible modulo 2**64): with prefix sums Q[i] = sum_{j<i} (t[j] + 1) * B^-j, the hash of the n tokens at
i is (Q[i+n] - Q[i]) * B^i, so every n-gram of a document costs a few vectorized passes whatever n is. Every
example reported is confirmed on the tokens themselves, so a hash collision can never stand as evidence."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

_B = np.uint64(0x9E3779B97F4A7C15)            # odd, so B^-1 exists modulo 2**64
_B_INV = np.uint64(pow(int(_B), -1, 2**64))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)       # unsigned products wrap modulo 2**64, as meant


def ngram_hashes(docs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every n-gram inside each document (none across a document boundary), with the document and the
    start position of each."""
    hs, ds, ps = [], [], []
    longest = max((len(a) for a in docs), default=0)
    if longest >= n:
        inv, fwd = _powers(_B_INV, longest + 1), _powers(_B, longest + 1)
    for d, a in enumerate(docs):
        if len(a) < n:
            continue
        q = np.zeros(len(a) + 1, np.uint64)
        np.cumsum((a.astype(np.uint64) + np.uint64(1)) * inv[:len(a)], dtype=np.uint64, out=q[1:])
        k = len(a) - n + 1
        hs.append((q[n:n + k] - q[:k]) * fwd[:k])
        ds.append(np.full(k, d, np.int64))
        ps.append(np.arange(k, dtype=np.int64))
    if not hs:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(hs), np.concatenate(ds), np.concatenate(ps)


def shared_ngrams(a_docs: list[np.ndarray], b_docs: list[np.ndarray], n: int, examples: int = 5) -> dict[str, Any]:
    """How much of b's n-gram positions also occur in a: the share, the documents of b touched, and confirmed
    examples (b document, a document, start positions)."""
    ha, da, pa = ngram_hashes(a_docs, n)
    hb, db, pb = ngram_hashes(b_docs, n)
    if not len(hb) or not len(ha):
        return {"positions": int(len(hb)), "shared": 0, "fraction": 0.0, "docs": 0, "examples": []}
    order = np.argsort(ha, kind="stable")
    sorted_a = ha[order]
    at = np.minimum(np.searchsorted(sorted_a, hb), len(sorted_a) - 1)
    hit = sorted_a[at] == hb
    out: dict[str, Any] = {"positions": int(len(hb)), "shared": int(hit.sum()),
                           "fraction": float(hit.mean()), "docs": int(len(np.unique(db[hit]))), "examples": []}
    seen_docs: set[int] = set()
    for i in np.flatnonzero(hit):
        if len(out["examples"]) >= examples:
            break
        if int(db[i]) in seen_docs:
            continue
        j = order[at[i]]
        if np.array_equal(b_docs[db[i]][pb[i]:pb[i] + n], a_docs[da[j]][pa[j]:pa[j] + n]):
            seen_docs.add(int(db[i]))
            out["examples"].append((int(db[i]), int(pb[i]), int(da[j]), int(pa[j])))
    return out


def doc_hashes(texts: list[str]) -> list[str]:
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def blank(text: str) -> bool:
    return not text.strip()
