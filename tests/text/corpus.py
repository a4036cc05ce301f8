"""Real text that ships with Python: the language reference's topics held in pydoc_data.topics (never a download).

As shipped, the topics overlap: 'specialnames' holds 'attribute-access' whole, 'compound' holds 'if' and
'while'. data.leak finds that (tests/text/test_real_text.py); `clean_topics` keeps, longest first, each topic
that shares no 50-character passage with a topic already kept, which is the deduplication its advice asks for."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recipe.data.text.ngrams import ngram_hashes


def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as all_topics

    return dict(all_topics)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)


def clean_topics(n: int = 50) -> dict[str, str]:
    t = topics()
    names = sorted(t, key=lambda k: (-len(t[k]), k))
    h, d, _ = ngram_hashes([_codes(t[k]) for k in names], n)
    pairs = np.unique(np.stack([h.view(np.int64), d]), axis=1)      # each (hash, topic) once
    shared_h, counts = np.unique(pairs[0], return_counts=True)
    shared = set(shared_h[counts > 1].tolist())
    by_topic: dict[int, set] = {}
    for hv, di in pairs.T.tolist():
        if hv in shared:
            by_topic.setdefault(di, set()).add(hv)
    kept, taken = [], set()
    for i, k in enumerate(names):
        mine = by_topic.get(i, set())
        if mine & taken:
            continue
        kept.append(k)
        taken |= mine
    return {k: t[k] for k in sorted(kept)}


def write_folder(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in docs.items():
        (folder / f"{k}.txt").write_text(v, encoding="utf-8")
    return folder


def write_file(path: Path, docs: dict[str, str]) -> Path:
    path.write_text("".join(docs.values()), encoding="utf-8")
    return path
