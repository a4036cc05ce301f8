"""The n-gram baselines: exact interpolated Kneser-Ney numbers on a corpus small enough to count by hand,
proper distributions, document boundaries, and the order ranking on real order-dependent text."""
import math

import numpy as np
import pytest

from recipe.baselines.ngram import NGram, fit_baselines, windows
from recipe.errors import RecipeError
from tests.bugs.sequence.zoo import pydoc_corpus

TRAIN, VAL = [np.array([0, 1, 0, 1, 2])], [np.array([1, 0, 2])]     # V = 3, targets 1 0 1 2 and 0 2


def test_unigram_by_hand():
    # counts of the targets 1 0 1 2: c(0)=1 c(1)=2 c(2)=1, N=4, 3 types, D=0.5:
    # p(w) = (c(w) - 0.5) / 4 + 0.5 * 3/4 * 1/3  ->  p = (1/4, 1/2, 1/4)
    m = NGram(1, 3).fit(TRAIN, discount=0.5)
    assert m.next_distribution([]) == pytest.approx([0.25, 0.5, 0.25], abs=1e-12)
    assert m.evaluate(VAL)["loss"] == pytest.approx(math.log(4), abs=1e-12)     # val targets 0, 2
    assert m.evaluate(VAL)["perplexity"] == pytest.approx(4.0, abs=1e-12)


def test_bigram_by_hand():
    # bigrams (0,1) x2, (1,0), (1,2); the lower order uses continuation counts: each token ends one distinct
    # bigram, so p1 = 1/3 each. p(.|0) = 1.5/2 + 0.5 * 1/2 * 1/3 = 5/6 for 1, 1/12 for 0 and 2;
    # p(.|1) = 0.5/2 + 0.5 * 2/2 * 1/3 = 5/12 for 0 and 2, 1/6 for 1.
    m = NGram(2, 3).fit(TRAIN, discount=0.5)
    assert m.next_distribution([0]) == pytest.approx([1 / 12, 5 / 6, 1 / 12], abs=1e-12)
    assert m.next_distribution([1]) == pytest.approx([5 / 12, 1 / 6, 5 / 12], abs=1e-12)
    assert m.next_distribution([2]) == pytest.approx([1 / 3] * 3, abs=1e-12)      # context never seen: back off
    assert m.evaluate(VAL)["loss"] == pytest.approx(-(math.log(5 / 12) + math.log(1 / 12)) / 2, abs=1e-12)


def test_trigram_by_hand_with_the_document_start():
    # trigrams (B,0,1) (0,1,0) (1,0,1) (0,1,2), B the begin symbol. Val (B,1)->0: context never seen, so the
    # bigram's 5/12; (1,0)->2: c=0, total 1, 1 type: 0.5 * 1/1 * p2(2|0); p2 from continuation counts
    # (0,1): 2 (after B and after 1), so p2(2|0) = 0.5 * 1/2 * 1/3 = 1/12, and p3 = 1/24.
    m = NGram(3, 3).fit(TRAIN, discount=0.5)
    assert m.evaluate(VAL)["loss"] == pytest.approx(-(math.log(5 / 12) + math.log(1 / 24)) / 2, abs=1e-12)
    # (B, 0) was seen once, followed by 1: 0.5 + 0.5 * p2(.|0) = (1/24, 11/12, 1/24)
    assert m.next_distribution([0]) == pytest.approx([1 / 24, 11 / 12, 1 / 24], abs=1e-12)
    assert m.next_distribution([0, 1]) == pytest.approx([11 / 24, 1 / 12, 11 / 24], abs=1e-12)


def test_documents_are_boundaries():
    rows = windows([np.array([0, 1]), np.array([2, 0])], 2, bos=3)
    assert rows.tolist() == [[0, 1], [2, 0]]                  # no (1, 2) pair across the two documents
    joined = NGram(2, 3).fit([np.array([0, 1, 2, 0])], 0.5)
    split = NGram(2, 3).fit([np.array([0, 1]), np.array([2, 0])], 0.5)
    assert joined.next_distribution([1])[2] > 0.5 > split.next_distribution([1])[2]


@pytest.fixture(scope="module")
def pydoc():
    train, val, chars = pydoc_corpus()
    return train, val, chars, fit_baselines(train, val, len(chars))


def test_kneser_ney_beats_bigram_beats_unigram_on_real_text(pydoc):
    train, val, chars, r = pydoc
    loss = {k: v["val"]["loss"] for k, v in r.items()}
    assert loss["kn5gram"] < loss["kn3gram"] < loss["bigram"] < loss["unigram"] < math.log(len(chars))
    assert loss["kn5gram"] < 0.6 * loss["unigram"]            # measured 1.23 vs 3.27 nats/char
    assert r["kn5gram"]["val"]["perplexity"] == pytest.approx(math.exp(loss["kn5gram"]))
    assert r["kn5gram"]["val"]["tokens"] == sum(len(d) - 1 for d in val)
    assert all(0.1 <= d <= 0.9 for d in r["kn5gram"]["discounts"])


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_distribution_sums_to_one(pydoc, order):
    train, val, chars, _ = pydoc
    m = NGram(order, len(chars)).fit(train)
    rng = np.random.default_rng(0)
    contexts = [[], list(val[0][:7]), list(train[3][100:110]), list(rng.integers(0, len(chars), 6))]
    for ctx in contexts:          # seen, unseen (random) and document-start contexts
        p = m.next_distribution(ctx)
        assert p.shape == (len(chars),) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_token_ids_out_of_range_name_the_document():
    with pytest.raises(RecipeError, match="train document 1: token ids must lie in 0..2, found 0..3"):
        NGram(2, 3).fit([np.array([0, 1]), np.array([3, 0])])
    with pytest.raises(RecipeError, match="no document has 2 or more tokens"):
        NGram(2, 3).fit([np.array([1])])
