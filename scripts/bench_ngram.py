"""Time the n-gram baselines on ~1M char tokens of the Python language reference (pydoc_data.topics, repeated),
in one process: fit and score seconds per order, tokens/s, and the vectorized fit against a plain-Python
dict-of-counts bigram fit on the same tokens (the ratio is the point of numbering n-grams with numpy).

    python scripts/bench_ngram.py [--tokens 1000000] [--orders 1 2 3 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 5])
    args = ap.parse_args()

    from recipe.baselines.ngram import NGram, name
    from tests.bugs.sequence.zoo import pydoc_corpus

    train, val, chars = pydoc_corpus()
    per_copy = sum(len(d) for d in train)
    train = train * max(1, -(-args.tokens // per_copy))           # whole copies: documents stay documents
    n_train = sum(len(d) for d in train)
    print(f"train {n_train} tokens in {len(train)} documents, val {sum(len(d) for d in val)} tokens, "
          f"vocabulary {len(chars)}")
    for k in args.orders:
        t0 = time.perf_counter()
        m = NGram(k, len(chars)).fit(train)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = m.evaluate(val)
        score = time.perf_counter() - t0
        print(f"{name(k):>8}: fit {fit:6.2f} s ({n_train / fit / 1e6:5.2f} M tokens/s), score {score:5.2f} s, "
              f"val loss {r['loss']:.4f} nats/token, perplexity {r['perplexity']:.3f}")
    t0 = time.perf_counter()
    NGram(2, len(chars)).fit(train)
    vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs: Counter = Counter()
    for d in train:                                               # the plain-Python bigram counts only
        pairs.update(zip(d[:-1].tolist(), d[1:].tolist()))
    plain = time.perf_counter() - t0
    print(f"bigram fit: numpy {vec:.2f} s (counts, continuation counts, discounts) vs plain-Python counting "
          f"alone {plain:.2f} s: ratio {plain / vec:.1f}x")


if __name__ == "__main__":
    main()
