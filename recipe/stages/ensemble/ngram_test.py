"""A language model's sealed test against the count-based n-gram models it must beat (ensemble.beats-ngram).

The best n-gram order is chosen on val (as baseline.dumb ranks them); a final model not below it on val fails
there and the test split stays sealed (check_on_val); otherwise every order is scored on the test documents
only inside the one look, so its test number is part of the look's recorded result and ledger entry like
every other test number. The comparison is paired by test document: a bootstrap resamples documents (each
with all its tokens) and recomputes both models' loss per token on the same resample.

The two losses cover the same text with one small difference: the network scores its windows' targets (a
document's first token predicted from the text before it in the split's stream, the stream's tail past the
last whole window left out), the n-gram model scores tokens 1.. of each document (its contexts never cross a
document boundary, recipe/baselines/ngram.py). Each is its own model's loss in nats per token.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from recipe import checks as C
from recipe.stages.ensemble.stats import BOOTSTRAP, group_sums, resampled

def fit_ngrams(train_docs: Sequence[np.ndarray], val_docs: Sequence[np.ndarray], vocab_size: int,
               orders: Sequence[int]) -> dict:
    """Each order (baseline.dumb's `orders`) fitted on the train documents and scored on val: {name: (model,
    val loss)}."""
    from recipe.baselines.ngram import NGram, name

    out = {}
    for k in orders:
        m = NGram(k, vocab_size).fit(train_docs)
        out[name(k)] = (m, m.evaluate(val_docs)["loss"])
    return out


def doc_sums(model, docs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per document: nats summed over its targets (tokens 1..) and their count; (0, 0) for a one-token document."""
    from recipe.baselines.ngram import windows

    docs = [np.asarray(d, np.int64).reshape(-1) for d in docs]
    lengths = np.array([max(len(d) - 1, 0) for d in docs], np.int64)
    rows = windows(docs, model.order, model.bos)                        # (sum(lengths), order)
    nats = -model.log_probs(rows) if len(rows) else np.zeros(0)
    which = np.repeat(np.arange(len(docs)), lengths)
    return np.bincount(which, nats, len(docs)), lengths.astype(np.float64)


def network_doc_sums(task, out, y, rows, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """The network's nats and target counts per test document (its windows grouped by `rows`, the document of
    each window's first target), over all n_docs documents (0 where no window starts)."""
    num, den = task.score_sums(out, y)
    ids = np.unique(np.asarray(rows))
    g_num, g_den = group_sums(num, den, rows)
    full_num, full_den = np.zeros(n_docs), np.zeros(n_docs)
    full_num[ids], full_den[ids] = g_num, g_den
    return full_num, full_den


def score_ngrams(fitted: dict, test_docs: Sequence[np.ndarray], net: tuple[np.ndarray, np.ndarray],
                 seed: int) -> dict[str, Any]:
    """At the look: every order's test loss and perplexity, and the paired per-document bootstrap of (best
    n-gram's loss - the network's loss): > 0 where the network is better."""
    best = min(fitted, key=lambda k: fitted[k][1])
    per, sums = {}, {}
    for key, (model, val_loss) in fitted.items():
        num, den = doc_sums(model, test_docs)
        sums[key] = (num, den)
        loss = float(num.sum() / max(den.sum(), 1))
        per[key] = {"order": model.order, "val_loss": round(val_loss, 5), "test_loss": round(loss, 5),
                    "test_perplexity": round(float(np.exp(loss)), 4), "test_tokens": int(den.sum())}
    b_num, b_den = sums[best]
    n_num, n_den = net

    def diff(idx):
        return b_num[idx].sum(1) / np.maximum(b_den[idx].sum(1), 1) - n_num[idx].sum(1) / np.maximum(
            n_den[idx].sum(1), 1)

    draws = resampled(len(b_num), seed + 3, diff, BOOTSTRAP)
    net_loss = float(n_num.sum() / max(n_den.sum(), 1))
    gain = per[best]["test_loss"] - net_loss
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"models": per, "best": best, "chosen_on": "val", "network_test_loss": round(net_loss, 5),
            "gain": {"mean": round(gain, 5), "ci95": [round(float(lo), 5), round(float(hi), 5)],
                     "lower_bound_95": round(float(np.percentile(draws, 5)), 5), "unit": "nats per token",
                     "resampled": "test documents", "n_documents": int(len(b_num))}}


def check_on_val(fitted: dict, final_val: float, final: str) -> Optional[C.Check]:
    """ensemble.beats-ngram decided on val, before the look: a final model whose val loss is not below the best
    n-gram model's would fail on test whatever test says (val chose it, so val flatters it), so the check fails
    here and the test split stays sealed. None when it is below: test decides."""
    best = min(fitted, key=lambda k: fitted[k][1])
    val = fitted[best][1]
    if final_val < val:
        return None
    who = final.replace("_", " ")
    return C.make("ensemble.beats-ngram", "fail", f"on val the {who}'s loss {final_val:.4f} is not below the best "
                  f"n-gram model's ({best}) {val:.4f} nats/token: it cannot beat it on test, so test stays sealed",
                  {"final_model": final, "final_val_loss": round(final_val, 5), "best_ngram": best,
                   "ngram_val": {k: round(v, 5) for k, (_, v) in fitted.items()}, "decided_on": "val"},
                  "The network has not learned more than n-gram statistics: train longer or larger (overfit "
                  "first), check regularize's ladder, or give it more text.")


def check_beats_ngram(ngram: dict[str, Any], final: str) -> C.Check:
    """ensemble.beats-ngram: the final model's test loss per token below the best n-gram model's (chosen on
    val) beyond the per-document bootstrap noise passes; below it but within noise warns; not below fails."""
    best, g = ngram["best"], ngram["gain"]
    b = ngram["models"][best]
    who = final.replace("_", " ")
    ev = {"final_model": final, "final_test_loss": ngram["network_test_loss"], "best_ngram": best,
          "best_ngram_test_loss": b["test_loss"], "best_ngram_test_perplexity": b["test_perplexity"],
          "chosen_on": "val", "gain": g, "ngram_test": {k: v["test_loss"] for k, v in ngram["models"].items()}}
    line = (f"the {who}'s test loss {ngram['network_test_loss']:.4f} vs the best n-gram model ({best}, chosen on "
            f"val) {b['test_loss']:.4f} nats/token: {g['mean']:+.4f} (95% CI {g['ci95'][0]:+.4f}–"
            f"{g['ci95'][1]:+.4f} over {g['n_documents']} test documents)")
    if g["mean"] <= 0:
        return C.make("ensemble.beats-ngram", "fail", line + ": a count-based model predicts the test text as "
                      "well or better", ev,
                      "The network has not learned more than n-gram statistics: train longer or larger (overfit "
                      "first), check regularize's ladder, or give it more text.")
    if g["lower_bound_95"] <= 0:
        return C.make("ensemble.beats-ngram", "warn", line + ": better, but not beyond the noise of which documents "
                      "were drawn", ev, "A larger test split (more documents) would settle it.")
    return C.make("ensemble.beats-ngram", "pass", line, ev)
