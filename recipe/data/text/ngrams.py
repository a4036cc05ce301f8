"""Exact duplicate documents and long n-grams shared across splits, for text's data.duplicates and data.leak.

An n-gram is hashed as a sum of its token ids times fixed random odd 64-bit multipliers (one per position), over
a sliding-window view in blocks, so a 1M-token split costs a few vectorized passes; every example reported is
confirmed on the tokens themselves, so a hash collision can never stand as evidence."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

BLOCK = 1 << 16        # n-gram positions hashed per step: bounds the (block, n) temporary
_MULT = (np.random.default_rng(20240607).integers(1, 2**62, size=4096, dtype=np.uint64) * np.uint64(2) + np.uint64(1))


def ngram_hashes(docs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every n-gram inside each document (none across a document boundary), with the document and the
    start position of each."""
    mult = _MULT[:n] if n <= len(_MULT) else np.resize(_MULT, n)
    hs, ds, ps = [], [], []
    for d, a in enumerate(docs):
        if len(a) < n:
            continue
        view = np.lib.stride_tricks.sliding_window_view(a.astype(np.uint64, copy=False), n)
        out = np.empty(len(view), np.uint64)
        for i in range(0, len(view), BLOCK):   # unsigned products and sums wrap modulo 2**64, as meant
            out[i:i + BLOCK] = (view[i:i + BLOCK] * mult).sum(axis=1, dtype=np.uint64)
        hs.append(out)
        ds.append(np.full(len(out), d, np.int64))
        ps.append(np.arange(len(out), dtype=np.int64))
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
