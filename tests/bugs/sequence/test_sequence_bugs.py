"""Each planted sequence bug is caught by its check id, and the title names what went wrong (positions,
lags, losses); the same models without the bug pass (tests/engine/test_sequence_checks.py)."""
import numpy as np
import pytest
import torch

from recipe import checks as C
from recipe.baselines.ngram import NGram, fit_baselines
from recipe.engine import sequence_checks as S
from recipe.engine import sequence_init as SI
from recipe.engine import sequence_targets as TG
from tests.bugs.sequence import zoo

V, T = 20, 16


@pytest.fixture
def tokens():
    return torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(0))


def causal(model, x):
    torch.manual_seed(0)
    return S.check_causal(model, x, C.thresholds("baseline.causal"))


def test_missing_causal_mask_names_the_first_leaking_position(tokens):
    torch.manual_seed(0)
    c = causal(zoo.TinyGPT(V, T, causal=False), tokens)
    assert c.id == "baseline.causal" and c.status == "fail"
    assert c.evidence["leaks"][0]["t"] == 0 and c.evidence["leaks"][0]["sees"] == 1
    assert "position 0 sees the future: its output depends on the token at position 1" in c.title
    assert f"{len(S.check_positions(T))} of {len(S.check_positions(T))} positions leak" in c.title
    assert "embedding 'wte'" in c.evidence["method"] and "causal" in c.advice


def test_a_leak_from_the_last_token_only_is_named_as_such(tokens):
    torch.manual_seed(0)
    c = causal(zoo.LastTokenGPT(V, T), tokens)
    assert c.status == "fail"
    assert c.evidence["leaks"][0] == {**c.evidence["leaks"][0], "t": 0, "sees": T - 1, "later_positions_seen": 1}
    assert f"depends on the token at position {T - 1}" in c.title


def test_bidirectional_lstm_reads_the_future(tokens):
    torch.manual_seed(0)
    c = causal(zoo.TinyLSTM(V, bidirectional=True), tokens)
    assert c.status == "fail" and c.evidence["leaks"][0]["t"] == 0 and c.evidence["leaks"][0]["sees"] == 1


def test_without_an_embedding_module_tokens_are_changed_instead(tokens):
    torch.manual_seed(0)
    c = causal(zoo.OneHotGPT(V, T, causal=False), tokens)
    assert c.status == "fail" and "changing one later token" in c.evidence["method"]
    assert (c.evidence["leaks"][0]["t"], c.evidence["leaks"][0]["sees"]) == (0, 1)
    n = len(S.check_positions(T))
    assert f"({n} of {n} positions leak)" in c.title


def test_batch_and_time_swapped_mixes_the_batch(tokens):
    torch.manual_seed(0)
    c = S.check_batch_independence(zoo.TinyLSTM(V, time_major=True), tokens,
                                   C.thresholds("baseline.batch-independence"))
    assert c.id == "baseline.batch-independence" and c.status == "fail"
    assert c.evidence["worst_row"] > 0          # row 0 is the LSTM's first 'time step': it alone looks clean
    assert f"sequence {c.evidence['worst_row']}'s output depends on other sequences'" in c.title


@pytest.fixture(scope="module")
def pydoc():
    train, val, chars = zoo.pydoc_corpus()
    return train, val, chars


@pytest.mark.parametrize("shift, words, lag", [
    (0, "targets equal the inputs (y[t] == x[t]) at 100.0% of positions: the model learns to copy", 0),
    (-1, "targets are the previous token (y[t] == x[t-1]) at 100.0% of positions: shifted the wrong way", -1),
    (2, "targets are 2 tokens ahead (y[t] == x[t+2]) at 100.0% of positions: off by 1", 2),
])
def test_wrong_targets_are_named_by_their_lag(pydoc, shift, words, lag):
    x, y = zoo.windows(pydoc[0], 32, 64, seed=0, shift=shift)
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"))
    assert c.id == "baseline.target-shift" and c.status == "fail"
    assert words in c.title and c.evidence["lag"] == lag
    assert c.evidence["agreement_by_lag"][str(lag)] == 1.0 and c.evidence["agreement_by_lag"]["1"] < 0.2


def test_targets_from_no_shift_at_all_fail(pydoc):
    x, _ = zoo.windows(pydoc[0], 32, 64, seed=0)
    y = torch.randint(0, len(pydoc[2]), x.shape, generator=torch.Generator().manual_seed(1))
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"))
    assert c.status == "fail" and "not the inputs shifted by any lag in -3..3" in c.title


@pytest.fixture(scope="module")
def copy_run(pydoc):
    """A small GPT trained 60 steps on copy targets, and the best n-gram model on the same data."""
    train, val, chars = pydoc
    best = fit_baselines(train, val, len(chars), orders=(5,))["kn5gram"]["val"]["loss"]
    x, y = zoo.windows(train, 32, 512, seed=0, shift=0)
    xv, yv = zoo.windows(val, 32, 64, seed=1, shift=0)
    torch.manual_seed(0)
    m = zoo.TinyGPT(len(chars), 32, n_layer=1)
    zoo.train(m, x, y, steps=60, lr=1e-2)
    return x, y, float(S.window_losses(m, xv, yv).mean()), best


def test_copy_targets_drive_the_loss_far_below_the_ngram_model(copy_run):
    x, y, loss, best = copy_run
    early = {"loss": loss, "steps": 60, "best_ngram": "kn5gram", "best_ngram_loss": best}
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"), early=early)
    assert c.status == "fail" and "targets equal the inputs" in c.title
    assert c.evidence["loss_ratio"] < 0.25 and loss < 0.3 < 1.0 < best      # the model learned to copy at once


def test_a_loss_far_below_the_ngram_model_fails_even_when_the_shift_looks_right(pydoc):
    x, y = zoo.windows(pydoc[0], 32, 64, seed=0)
    early = {"loss": 0.05, "steps": 60, "best_ngram": "kn5gram", "best_ngram_loss": 1.23}
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"), early=early)
    assert c.status == "fail" and "4% of the best n-gram model's (1.23)" in c.title


@pytest.mark.parametrize("loss, words, advice", [
    (zoo.loss_counting_pads, "pad positions count in the loss: changing only their logits", "ignore_index=0"),
    (zoo.loss_dividing_by_all, "pad positions count in the loss's denominator: four more pad columns",
     "number of real (non-pad) tokens"),
])
def test_padding_in_the_loss_is_caught(loss, words, advice):
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(4, T, V, generator=g), torch.randint(1, V, (4, T), generator=g)
    y[:, 10:] = 0                                                  # right-padded with pad id 0
    c = TG.check_padding(lambda lo, t: loss(lo, t, 0), logits, y, 0, C.thresholds("baseline.padding"))
    assert c.id == "baseline.padding" and c.status == "fail" and words in c.title
    assert c.evidence["pad_positions"] == 24 and advice in c.advice


def test_gpt_without_position_embedding_does_not_beat_the_unigram():
    """Order-dependent data: in (a, b, a) groups the next token is the one two back. Without positions attention
    sees a bag of tokens and cannot tell which is two back; with them the same GPT learns it in 150 steps."""
    x, y = zoo.triplet_copy(2000, 8, 16, seed=0)
    xv, yv = zoo.triplet_copy(300, 8, 16, seed=1)
    seqs = [np.concatenate([x[i, :1].numpy(), y[i].numpy()]) for i in range(len(x))]
    unigram = NGram(1, 16).fit(seqs)
    uni_rows = S.unigram_window_losses(unigram, yv.numpy())
    th = C.thresholds("baseline.input-independent")
    out = {}
    for positions in (False, True):
        torch.manual_seed(0)
        m = zoo.TinyGPT(16, x.shape[1], n_embd=24, n_layer=1, positions=positions)
        zoo.train(m, x, y, steps=150, lr=1e-2)
        out[positions] = S.check_beats_unigram(S.window_losses(m, xv, yv), uni_rows, th)
    bad, good = out[False], out[True]
    assert bad.id == "baseline.input-independent" and bad.status == "fail"
    assert "does no better than the unigram model" in bad.title and bad.evidence["relative_loss_gain"] < 0.05
    assert bad.evidence["val_loss_unigram"] == pytest.approx(np.log(16), abs=0.01)
    assert good.status == "pass" and good.evidence["relative_loss_gain"] > 0.25    # ideal: 1/3 (one token in 3)


def test_position_embedding_never_added_gets_no_gradient(tokens):
    torch.manual_seed(0)
    c = S.check_grad_flow(zoo.TinyGPT(V, T, positions=False), tokens, tokens.roll(-1, 1), zoo.lm_loss)
    assert c.id == "baseline.grad-flow" and c.status == "fail"
    assert c.evidence["no_gradient"] == ["wpe.weight"] and "1 without gradient (unused) (wpe.weight)" in c.title


def test_probabilities_fed_to_cross_entropy(tokens):
    torch.manual_seed(0)
    c = SI.check_loss_input(zoo.SoftmaxGPT(V, T), tokens)
    assert c.id == "baseline.loss-input" and c.status == "fail" and c.evidence["mean_row_sum"] == pytest.approx(1.0)


def test_an_overconfident_output_layer_fails_init_loss_and_bias_init(pydoc):
    train, val, chars = pydoc
    unigram = NGram(1, len(chars)).fit(train)
    x, y = zoo.windows(train, 32, 32, seed=0)
    torch.manual_seed(0)
    m = zoo.HotStartGPT(len(chars), 32)
    init = float(S.window_losses(m, x, y).mean())
    c = SI.check_init_loss(init, len(chars), float(S.unigram_window_losses(unigram, y.numpy()).mean()),
                           C.thresholds("baseline.init-loss"))
    assert c.status == "fail" and "is too high: expected ~4.635 (ln V) or ~3.2" in c.title and init > 8
    b = SI.check_bias_init(m, x, unigram, C.thresholds("baseline.bias-init"))
    assert b.id == "baseline.bias-init" and b.status == "fail"
    assert b.evidence["tv_from_unigram"] > 0.1 and b.evidence["tv_from_uniform"] > 0.1
