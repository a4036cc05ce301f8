"""Count-based n-gram language models on token ids (numpy): the dumb baselines a sequence model must beat.

Every order is interpolated Kneser-Ney (Chen & Goodman 1998, section 3.5) with one absolute discount per
order, D = n1 / (n1 + 2 n2) from the count-of-counts (Ney et al. 1994), clipped to [0.1, 0.9]:

    p_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .) + D_k * N1+(h .) / c_k(h .) * p_{k-1}(w | h')

with raw counts at the highest order, continuation counts N1+(. g) below it, and the uniform 1/V under the
unigram; a context never seen in train backs off to the next order whole. Order 1 is the discounted unigram
interpolated with uniform, order 2 the KN bigram.

Documents (or chunks) are boundaries: each is scored on its tokens 1.. (its first token is no one's target, as
for a model fed windows of one document), and contexts reaching before a document's start are padded with a
begin symbol (id V) that is never predicted. n-grams are identified by numbering suffixes one token at a time
(np.unique, then np.searchsorted for val), so no code ever needs V**n to fit in 64 bits.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from recipe.errors import RecipeError

DISCOUNT_RANGE = (0.1, 0.9)     # an estimate outside it (n2 = 0, or almost no singletons) is not trusted


def _documents(docs, vocab_size: int, what: str) -> list[np.ndarray]:
    if isinstance(docs, np.ndarray) and docs.ndim == 1:
        docs = [docs]
    out = [np.asarray(d, dtype=np.int64).reshape(-1) for d in docs]
    for i, d in enumerate(out):
        if len(d) and (d.min() < 0 or d.max() >= vocab_size):
            raise RecipeError(f"{what} document {i}: token ids must lie in 0..{vocab_size - 1}, found "
                              f"{int(d.min())}..{int(d.max())}")
    return out


def windows(docs: Sequence[np.ndarray], order: int, bos: int) -> np.ndarray:
    """(M, order) rows [context..., target] for every target (tokens 1.. of each document)."""
    rows = []
    for d in docs:
        if len(d) < 2:
            continue
        padded = np.concatenate([np.full(order - 1, bos, np.int64), d])          # (order-1+L,)
        view = np.lib.stride_tricks.sliding_window_view(padded, order)           # (L, order)
        rows.append(view[1:])                                                    # target = d[1:]
    return np.concatenate(rows) if rows else np.zeros((0, order), np.int64)


@dataclass
class Order:
    """One order k of the model: the k-grams seen in train, numbered, and the statistics per context."""

    keys: np.ndarray          # sorted codes of every k-token suffix seen (grams and contexts)
    count: np.ndarray         # per suffix id: raw count (highest order) or continuation count, as a gram
    ctx_total: np.ndarray     # per (k-1)-suffix id: sum of counts of the grams that follow it
    ctx_types: np.ndarray     # per (k-1)-suffix id: how many distinct grams follow it
    discount: float


@dataclass
class NGram:
    order: int
    vocab_size: int
    orders: list[Order] = field(default_factory=list)     # index k-1 for order k
    train_tokens: int = 0
    seconds: float = 0.0

    @property
    def bos(self) -> int:
        return self.vocab_size

    # -------------------------------------------------------------------- numbering

    def _number(self, rows: np.ndarray, end: int, k: int, prev: np.ndarray, fit_keys: list | None) -> np.ndarray:
        """Id of the k-token suffix ending at column `end` of each row, from the (k-1)-suffix ids `prev`
        (-1 where unseen). Fitting: collect the codes; scoring: look them up in train's keys."""
        size = len(self.orders[k - 2].keys) if k > 1 else 1
        code = rows[:, end - k + 1] * size + np.maximum(prev, 0)
        if fit_keys is not None:
            fit_keys.append(code)
            return code
        keys = self.orders[k - 1].keys
        at = np.minimum(np.searchsorted(keys, code), len(keys) - 1)
        found = (keys[at] == code) & (prev >= 0)
        return np.where(found, at, -1)

    def _suffix_ids(self, rows: np.ndarray, end: int, k: int, prev: np.ndarray) -> np.ndarray:
        return self._number(rows, end, k, prev, None)

    # -------------------------------------------------------------------- fit

    def fit(self, docs: Iterable[np.ndarray], discount: float | None = None) -> "NGram":
        t0 = time.perf_counter()
        docs = _documents(docs, self.vocab_size, "train")
        rows = windows(docs, self.order, self.bos)                   # (M, n)
        if not len(rows):
            raise RecipeError("train: no document has 2 or more tokens; an n-gram model needs targets")
        n = self.order
        self.train_tokens = len(rows)
        self.orders = []
        # rows are sliding windows: a row's context suffix is the previous row's gram suffix, except on the
        # first row of each document, so only those few contexts are numbered on their own
        lengths = np.array([len(d) - 1 for d in docs if len(d) >= 2])
        first = np.zeros(len(rows), bool)
        first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
        gram_ids, ctx_ids = [], []       # per order k: id of the gram ending at the target / context ending before it
        g_prev = np.zeros(len(rows), np.int64)
        c_first = np.zeros(int(first.sum()), np.int64)
        for k in range(1, n + 1):
            codes: list[np.ndarray] = []
            g_code = self._number(rows, n - 1, k, g_prev, codes)
            c_code = self._number(rows[first], n - 2, k, c_first, codes) if k < n else None
            keys = np.unique(np.concatenate(codes))         # hashed: faster than a sort on repetitive text
            self.orders.append(Order(keys, np.zeros(0), np.zeros(0), np.zeros(0), 0.0))
            g_prev = np.searchsorted(keys, g_code)
            c_prev = None
            if c_code is not None:
                c_first = np.searchsorted(keys, c_code)
                c_prev = np.empty_like(g_prev)
                c_prev[1:] = g_prev[:-1]
                c_prev[first] = c_first
            gram_ids.append(g_prev)
            ctx_ids.append(c_prev)
        for k in range(n, 0, -1):
            size = len(self.orders[k - 1].keys)
            g = gram_ids[k - 1]
            if k == n:
                count = np.bincount(g, minlength=size).astype(np.float64)
            else:   # continuation count: distinct (k+1)-grams that end in this k-gram (no sort: mark, then count)
                upper = gram_ids[k]
                suffix_of = np.full(len(self.orders[k].keys), -1, np.int64)
                suffix_of[upper] = g                                     # one k-suffix per (k+1)-gram
                count = np.bincount(suffix_of[suffix_of >= 0], minlength=size).astype(np.float64)
            seen = count > 0
            n1, n2 = int((count == 1).sum()), int((count == 2).sum())
            d = discount if discount is not None else (n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
            d = float(np.clip(d, *DISCOUNT_RANGE)) if discount is None else float(d)
            # the context of each gram (k-1 tokens before the target); order 1 has one empty context
            ctx_of = np.zeros(size, np.int64)
            if k > 1:
                ctx_of[g] = ctx_ids[k - 2]
            ctx_size = len(self.orders[k - 2].keys) if k > 1 else 1
            total = np.bincount(ctx_of[seen], weights=count[seen], minlength=ctx_size)
            types = np.bincount(ctx_of[seen], minlength=ctx_size).astype(np.float64)
            self.orders[k - 1] = Order(self.orders[k - 1].keys, count, total, types, d)
        self.seconds = time.perf_counter() - t0
        return self

    # -------------------------------------------------------------------- score

    def log_probs(self, rows: np.ndarray) -> np.ndarray:
        """ln p(target | context) for rows (M, n) of [context..., target], context padded with bos."""
        rows = np.asarray(rows, np.int64)
        n = self.order
        p = np.full(len(rows), 1.0 / self.vocab_size)
        g_prev = c_prev = np.zeros(len(rows), np.int64)
        for k in range(1, n + 1):
            o = self.orders[k - 1]
            g = self._suffix_ids(rows, n - 1, k, g_prev)
            h = c_prev if k > 1 else np.zeros(len(rows), np.int64)      # (k-1)-suffix ending before the target
            h_seen = h >= 0
            hh = np.maximum(h, 0)
            total = np.where(h_seen, o.ctx_total[hh], 0.0)
            c = np.where(g >= 0, o.count[np.maximum(g, 0)], 0.0)
            has = total > 0
            safe = np.where(has, total, 1.0)
            mixed = np.maximum(c - o.discount, 0.0) / safe + o.discount * o.ctx_types[hh] / safe * p
            p = np.where(has, mixed, p)
            if k < n:
                c_prev = self._suffix_ids(rows, n - 2, k, c_prev)
            g_prev = g
        return np.log(p)

    def next_distribution(self, context: Sequence[int]) -> np.ndarray:
        """p(w | context) for every w in the vocabulary (V,), the context as a document prefix."""
        ctx = np.concatenate([np.full(self.order - 1, self.bos, np.int64), np.asarray(context, np.int64)])
        ctx = ctx[len(ctx) - (self.order - 1):] if self.order > 1 else ctx[:0]
        rows = np.concatenate([np.tile(ctx, (self.vocab_size, 1)),
                               np.arange(self.vocab_size, dtype=np.int64)[:, None]], axis=1)
        return np.exp(self.log_probs(rows))

    def evaluate(self, docs: Iterable[np.ndarray]) -> dict[str, float]:
        """Mean loss in nats per target token, perplexity and bits per token over the documents."""
        docs = _documents(docs, self.vocab_size, "val")
        rows = windows(docs, self.order, self.bos)
        if not len(rows):
            raise RecipeError("val: no document has 2 or more tokens to score")
        loss = float(-self.log_probs(rows).mean())
        return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
                "tokens": int(len(rows))}


def stream_token_losses(model: NGram, docs: Iterable[np.ndarray]) -> np.ndarray:
    """-ln p of every token of a split's stream (its documents end to end, as data/text/windows.stream joins
    them), each predicted from the tokens before it in its own document: a document's first token from begin
    symbols alone. Position 0 of the stream is no one's target (nan)."""
    docs = _documents(docs, model.vocab_size, "val")
    parts = []
    for d in docs:
        if not len(d):          # an empty document adds nothing to the stream
            continue
        padded = np.concatenate([np.full(model.order - 1, model.bos, np.int64), d])
        rows = np.lib.stride_tricks.sliding_window_view(padded, model.order)     # (L, order): row j predicts d[j]
        parts.append(-model.log_probs(rows))
    out = np.concatenate(parts) if parts else np.zeros(0)
    if len(out):
        out[0] = np.nan
    return out


def window_losses(model: NGram, docs: Iterable[np.ndarray], block: int) -> np.ndarray:
    """(N,) the model's mean loss (nats) on each language-model window's targets: window i holds targets
    stream[i*T+1 : (i+1)*T+1] (data/text/windows.lm_windows), so this scores exactly what a network is scored on
    over the same windows, for a paired comparison."""
    tok = stream_token_losses(model, docs)
    n = (len(tok) - 1) // block
    return tok[1:n * block + 1].reshape(n, block).mean(1)


NAMES = {1: "unigram", 2: "bigram"}
MAX_ORDER = 8


def orders_from(th: dict) -> tuple[int, ...]:
    """baseline.dumb's `orders` threshold, checked: whole numbers 1..MAX_ORDER holding 1 and 2 (the unigram is
    the masked-input reference, the bigram the first model that sees order)."""
    raw = th.get("orders", [1, 2, 3, 5])
    ok = isinstance(raw, (list, tuple)) and all(isinstance(k, int) and not isinstance(k, bool) for k in raw)
    if not ok or not {1, 2} <= set(raw) or not all(1 <= k <= MAX_ORDER for k in raw):
        from recipe.errors import ConfigError

        raise ConfigError(f"checks.baseline.dumb.orders: a list of n-gram orders between 1 and {MAX_ORDER} that "
                          f"holds 1 and 2, e.g. [1, 2, 3, 5] (got {raw!r})")
    return tuple(sorted(set(raw)))


def name(order: int) -> str:
    return NAMES.get(order, f"kn{order}gram")


def fit_baselines(train_docs, val_docs, vocab_size: int, orders: Sequence[int] = (1, 2, 3, 5),
                  discount: float | None = None) -> dict[str, dict]:
    """Each order fitted on train, scored on train and val: {name: {order, val: {...}, train: {...}, seconds}}."""
    train_docs = _documents(train_docs, vocab_size, "train")
    val_docs = _documents(val_docs, vocab_size, "val")
    out = {}
    for k in orders:
        m = NGram(k, vocab_size).fit(train_docs, discount)
        t0 = time.perf_counter()
        val = m.evaluate(val_docs)
        out[name(k)] = {"order": k, "smoothing": "interpolated Kneser-Ney",
                        "discounts": [round(o.discount, 4) for o in m.orders],
                        "train": m.evaluate(train_docs), "val": val, "fit_seconds": round(m.seconds, 4),
                        "score_seconds": round(time.perf_counter() - t0, 4)}
    return out
