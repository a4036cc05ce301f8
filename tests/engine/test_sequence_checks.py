"""The sequence checks pass on models and data without the bug (the planted ones are in tests/bugs/sequence)."""
import numpy as np
import pytest
import torch

from recipe import checks as C
from recipe.baselines.ngram import fit_baselines
from recipe.engine import sequence_checks as S
from recipe.engine import sequence_targets as TG
from tests.bugs.sequence import zoo

V, T = 20, 16


@pytest.fixture
def tokens():
    return torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make", [lambda: zoo.TinyGPT(V, T), lambda: zoo.TinyLSTM(V),
                                  lambda: zoo.OneHotGPT(V, T)], ids=["gpt", "lstm", "one-hot-gpt"])
def test_causal_models_pass(tokens, make):
    torch.manual_seed(0)
    model = make().train()
    c = S.check_causal(model, tokens, C.thresholds("baseline.causal"))
    assert c.status == "pass" and c.evidence["leaks"] == []
    assert c.evidence["positions_checked"] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14]
    assert model.training                                          # the check put the model back as it was


def test_the_gpt_is_probed_through_its_token_embedding_not_the_position_one(tokens):
    out, leaf, name = S.tapped_forward(zoo.TinyGPT(V, T), tokens)
    assert name == "wte" and leaf.shape == (4, T, 32) and out.shape == (4, T, V)


def test_a_classifier_output_is_skipped_not_passed(tokens):
    c = S.check_causal(zoo.Classifier(V), tokens, C.thresholds("baseline.causal"))
    assert c.status == "skip" and "output shape (2, 3) is not per position" in c.title


@pytest.mark.parametrize("make", [lambda: zoo.TinyGPT(V, T), lambda: zoo.TinyLSTM(V)], ids=["gpt", "lstm"])
def test_batch_independent_models_pass(tokens, make):
    torch.manual_seed(0)
    c = S.check_batch_independence(make(), tokens, C.thresholds("baseline.batch-independence"))
    assert c.status == "pass" and c.evidence["max_effect_on_other_rows"] == 0.0 < c.evidence["max_effect_own_row"]


@pytest.fixture(scope="module")
def pydoc():
    return zoo.pydoc_corpus()


def test_next_token_targets_pass(pydoc):
    x, y = zoo.windows(pydoc[0], 32, 64, seed=0)
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"))
    assert c.status == "pass" and "y[t] == x[t+1] at 100.0% of positions" in c.title
    assert c.evidence["agreement_by_lag"]["0"] < 0.2         # repeated chars (indentation): lag 0 agrees by chance only


def test_padded_next_token_targets_pass_and_pads_are_not_counted(pydoc):
    x, y = zoo.windows(pydoc[0], 32, 64, seed=0)
    x[:, 20:], y[:, 19:] = 0, 0                              # a short document, padded with id 0
    c = TG.check_target_shift(x, y, C.thresholds("baseline.target-shift"), pad_id=0)
    assert c.status == "pass"


def test_a_loss_with_ignore_index_passes_and_no_pads_is_a_skip():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(4, T, V, generator=g), torch.randint(1, V, (4, T), generator=g)
    th = C.thresholds("baseline.padding")
    assert TG.check_padding(lambda lo, t: zoo.lm_loss(lo, t, 0), logits, y, 0, th).status == "skip"
    y[:, 10:] = 0
    c = TG.check_padding(lambda lo, t: zoo.lm_loss(lo, t, 0), logits, y, 0, th)
    assert c.status == "pass" and c.evidence["loss"] == pytest.approx(c.evidence["mean_over_real_targets"], abs=1e-5)
    ev = c.evidence
    assert ev["loss_with_pad_logits_changed"] == pytest.approx(ev["loss"], abs=1e-5)
    assert ev["loss_with_more_padding"] == pytest.approx(ev["loss"], abs=1e-5)


def test_ngram_dumb_baselines_pass_on_text_and_warn_on_shuffled_tokens(pydoc):
    train, val, chars = pydoc
    ok = TG.check_ngram_baselines(fit_baselines(train, val, len(chars), orders=(1, 2, 3)), len(chars))
    assert ok.id == "baseline.dumb" and ok.status == "pass" and ok.evidence["best"] == "kn3gram"
    assert "best n-gram baseline: kn3gram, val loss 1.898 nats/token" in ok.title
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(d) for d in train]               # same unigram, no order left
    bad = TG.check_ngram_baselines(fit_baselines(shuffled, [rng.permutation(d) for d in val], len(chars),
                                                 orders=(1, 2, 3)), len(chars))
    assert bad.status == "warn" and "no n-gram model beats the unigram" in bad.title


class Uniform(torch.nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, V)                       # every token 1/V


def test_window_losses_count_real_targets_only(tokens):
    y = tokens.clone()
    y[0, 4:] = -100                                              # a pad id outside the vocabulary
    rows = S.window_losses(Uniform(), tokens, y, pad_id=-100)
    assert rows == pytest.approx([np.log(V)] * 4, abs=1e-6)
    m = torch.nn.Sequential(torch.nn.Embedding(V, V))            # logits = a row per token: not uniform
    rows = S.window_losses(m, tokens, y, pad_id=-100)
    ce = torch.nn.functional.cross_entropy(m(tokens[0, :4]), y[0, :4])
    assert rows[0] == pytest.approx(ce.item(), abs=1e-6)


def test_unigram_window_losses_match_the_model_scored_directly(pydoc):
    from recipe.baselines.ngram import NGram

    train, val, chars = pydoc
    uni = NGram(1, len(chars)).fit(train)
    x, y = zoo.windows(val, 32, 16, seed=0)
    rows = S.unigram_window_losses(uni, y.numpy())
    p = uni.next_distribution([])
    assert rows[3] == pytest.approx(-np.log(p[y[3].numpy()]).mean(), abs=1e-12)


def test_grad_flow_and_loss_input_pass_on_a_gpt(tokens):
    from recipe.engine import sequence_init as SI

    torch.manual_seed(0)
    m = zoo.TinyGPT(V, T)
    g = S.check_grad_flow(m, tokens, tokens.roll(-1, 1), zoo.lm_loss)
    assert g.status == "pass" and g.evidence["parameters"] == len(list(m.parameters()))
    assert SI.check_loss_input(m, tokens).status == "pass"


def test_init_loss_and_bias_init_pass_at_uniform_and_at_the_unigram(pydoc):
    from recipe.baselines.ngram import NGram
    from recipe.engine import sequence_init as SI

    train, val, chars = pydoc
    unigram = NGram(1, len(chars)).fit(train)
    x, y = zoo.windows(train, 32, 32, seed=0)
    uni_loss = float(S.unigram_window_losses(unigram, y.numpy()).mean())
    th_loss, th_bias = C.thresholds("baseline.init-loss"), C.thresholds("baseline.bias-init")
    torch.manual_seed(0)
    m = zoo.TinyGPT(len(chars), 32)
    torch.nn.init.normal_(m.head.weight, std=0.02)
    torch.nn.init.zeros_(m.head.bias)                            # as built: uniform
    c = SI.check_init_loss(float(S.window_losses(m, x, y).mean()), len(chars), uni_loss, th_loss)
    assert c.status == "pass" and c.evidence["nearest"] == "uniform (ln V)"
    assert SI.check_bias_init(m, x, unigram, th_bias).title.endswith("from uniform")
    with torch.no_grad():
        m.head.bias.copy_(torch.as_tensor(SI.unigram_bias(unigram)))      # recipe's bias init: the unigram
    c = SI.check_init_loss(float(S.window_losses(m, x, y).mean()), len(chars), uni_loss, th_loss)
    assert c.status == "pass" and c.evidence["nearest"] == "unigram" and c.evidence["relative_error"] < 0.05
    b = SI.check_bias_init(m, x, unigram, th_bias)
    assert b.status == "pass" and b.title.endswith("from the unigram") and b.evidence["tv_from_unigram"] < 0.05


def test_a_model_that_ignores_its_tokens_is_a_causal_skip_not_a_pass(tokens):
    c = S.check_causal(Uniform(), tokens, C.thresholds("baseline.causal"))
    assert c.status == "skip" and "do not depend on the tokens" in c.title
