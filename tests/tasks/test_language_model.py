"""The language-model task: cross-entropy over real targets only, nats/perplexity/bits, ensembles of next-token
probabilities, the init-loss expectation in closed form, and the one loop training a GPT with it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recipe import tasks
from recipe.config import validate
from recipe.engine import train as E
from recipe.errors import ModelError
from recipe.models import build_sequence
from recipe.tasks.language_model import IGNORE_INDEX, mask_pad_targets

LM = tasks.get("language-model")


def _logits(b=3, t=5, v=7, seed=0):
    return torch.randn(b, t, v, generator=torch.Generator().manual_seed(seed))


def _targets(b=3, t=5, v=7, seed=1):
    return torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(seed))


def test_registered_with_lower_is_better_score():
    assert LM.name == "language-model" and LM.metric == "nats" and LM.higher_is_better is False
    assert LM.num_outputs(65) == 65 and not LM.has_classes and not LM.stratify


def test_uniform_logits_cost_ln_v_and_the_loss_is_the_token_mean():
    y = _targets()
    assert float(LM.loss(torch.zeros(3, 5, 7), y)) == pytest.approx(math.log(7), rel=1e-6)
    out = _logits()
    manual = -torch.log_softmax(out, -1).gather(-1, y.unsqueeze(-1)).mean()
    assert float(LM.loss(out, y)) == pytest.approx(float(manual), rel=1e-6)


def test_pad_targets_never_count():
    out, y = _logits(), _targets()
    masked = mask_pad_targets(y, pad_id=int(y[0, 0]))
    pad = masked == IGNORE_INDEX
    assert int(pad.sum()) >= 1 and torch.equal(y, _targets())               # y itself untouched
    real = -torch.log_softmax(out, -1).gather(-1, y.unsqueeze(-1))[..., 0][~pad].mean()
    assert float(LM.loss(out, masked)) == pytest.approx(float(real), rel=1e-6)
    moved = out + 50.0 * torch.randn(out.shape) * pad.unsqueeze(-1)         # only pad positions' logits change
    assert float(LM.loss(moved, masked)) == pytest.approx(float(LM.loss(out, masked)), rel=1e-6)
    longer_out = torch.cat([out, _logits(3, 4, seed=9)], 1)                 # four more pad positions per row
    longer_y = torch.cat([masked, torch.full((3, 4), IGNORE_INDEX)], 1)
    assert float(LM.loss(longer_out, longer_y)) == pytest.approx(float(LM.loss(out, masked)), rel=1e-6)
    assert mask_pad_targets(y, None) is y


def test_score_is_nats_with_perplexity_bits_and_token_accuracy():
    v = 4
    out = torch.full((2, 3, v), -10.0)
    y = torch.tensor([[0, 1, 2], [3, 0, IGNORE_INDEX]])
    out[0, 0, 0] = out[0, 1, 1] = out[1, 0, 3] = 10.0                       # 3 confident hits
    out[0, 2, 3] = 10.0                                                     # a confident miss (target 2)
    out[1, 1] = torch.tensor([0.0, 0.0, 0.5, 0.0])                          # unsure, and wrong (target 0)
    s = LM.score(out, y)
    per = F.cross_entropy(out.reshape(-1, v), y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    expected = float(per.sum() / 5)
    assert s["tokens"] == 5 and s["loss"] == s["score"] == s["nats"] == pytest.approx(expected, rel=1e-6)
    assert s["perplexity"] == pytest.approx(math.exp(expected)) and s["bits_per_token"] == pytest.approx(
        expected / math.log(2))
    assert s["token_accuracy"] == pytest.approx(3 / 5)
    rows = LM.row_loss(out, y)
    assert rows.dtype == torch.float64
    assert rows.tolist() == pytest.approx([float(per[:3].mean()), float(per[3:5].mean())])
    assert torch.equal(LM.row_score(out, y), -rows)


def test_shape_errors_name_the_expected_shape():
    assert LM.shape_output(torch.zeros(2, 5, 7), 2, 7).shape == (2, 5, 7)
    with pytest.raises(ModelError, match=r"model output has shape \(2, 7\); a language model returns \(batch, time, "
                                         r"vocab\) = \(2, T, 7\) logits"):
        LM.shape_output(torch.zeros(2, 7), 2, 7)
    with pytest.raises(ModelError, match=r"shape \(2, 5, 6\)"):
        LM.shape_output(torch.zeros(2, 5, 6), 2, 7)


def test_ensembles_average_next_token_probabilities():
    a, b = _logits(seed=2), _logits(seed=3)
    assert torch.allclose(LM.combine([a], [1.0]), LM.as_output(a), atol=1e-6)
    mix = LM.combine([a, b], [0.5, 0.5])
    assert torch.allclose(mix.exp(), 0.5 * (torch.softmax(a, -1) + torch.softmax(b, -1)), atol=1e-6)
    assert torch.allclose(LM.prediction(a).sum(-1), torch.ones(3, 5))
    assert LM.disagreement(a, a) == 0.0
    flipped = a.clone()
    flipped[0, 0] = -a[0, 0]
    assert LM.disagreement(a, flipped) == pytest.approx(1 / 15)


def test_init_loss_expectations_are_the_unigram_entropy_and_ln_v():
    priors = [0.5, 0.25, 0.25, 0.0]
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert LM.expected_init_loss({"class_priors": priors}) == pytest.approx(entropy)         # 1.0397
    assert LM.acceptable_init_losses({"class_priors": priors}, 4) == [pytest.approx(entropy),
                                                                      pytest.approx(math.log(4))]
    bias = LM.output_bias(priors)
    # a model whose logits are this bias at every position scores exactly the unigram entropy on unigram data
    y = torch.tensor([[0, 0, 1, 2]])
    assert float(LM.loss(bias.expand(1, 4, 4), y)) == pytest.approx(entropy, rel=1e-6)


def _cycle_windows(n=96, t=16, v=5, seed=0):
    """Windows of the cycle 0 1 2 3 4 0 1 ... at random phases: the next token is a function of the current one."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, v, (n, 1), generator=g)
    s = (start + torch.arange(t + 1)) % v
    return E.Tensors(s[:, :-1].contiguous(), s[:, 1:].contiguous())


def test_the_one_loop_trains_a_gpt_language_model():
    cfg = validate({"name": "x", "data": {"source": "t.txt"},
                    "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32}}).model
    torch.manual_seed(0)
    model = build_sequence(cfg, 5, 16, 5)
    tr, va = _cycle_windows(seed=0), _cycle_windows(32, seed=1)
    r = E.fit(model, tr, va, task="language-model", num_classes=5, optimizer="adamw", lr=3e-3, batch_size=16,
              epochs=6, early_stopping={"patience": 3, "metric": "val_score"})
    assert r.first_loss == pytest.approx(math.log(5), abs=0.1)
    first, last = r.history[0], r.history[-1]
    assert set(first) >= {"val_loss", "val_score", "val_nats"} and "val_accuracy" not in first
    assert last["val_loss"] < 0.1 * math.log(5)                             # the cycle is learnt
    assert r.best["perplexity"] == pytest.approx(math.exp(r.best["loss"]))
    # lower is better: the best epoch under val_score is the one with the lowest val loss
    assert r.best_epoch == 1 + min(range(len(r.history)), key=lambda i: r.history[i]["val_score"])
    assert r.final_train["tokens"] == 96 * 16


def test_val_score_early_stopping_minimises_a_lower_is_better_score(monkeypatch):
    curve = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0]                 # best at epoch 2; patience 3 stops at epoch 5

    def evaluate(self):
        k = len(self.active[0].result.history)
        return [{"loss": curve[k], "score": curve[k]}]

    monkeypatch.setattr(E.Single, "evaluate", evaluate)
    torch.manual_seed(0)
    model = build_sequence(validate({"name": "x", "data": {"source": "t.txt"},
                                     "model": {"kind": "lstm", "n_layer": 1, "n_embd": 8}}).model, 5, 16, 5)
    tr = _cycle_windows(32)
    r = E.fit(model, tr, tr, task="language-model", num_classes=5, optimizer="adam", lr=1e-3, batch_size=16,
              epochs=6, early_stopping={"patience": 3, "metric": "val_score"})
    assert (r.best_epoch, len(r.history), r.stopped) == (2, 5, "early_stopping")


def test_the_lr_range_test_runs_a_language_model():
    from recipe.engine.lr_find import lr_range_test

    cfg = validate({"name": "x", "data": {"source": "t.txt"},
                    "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}}).model
    torch.manual_seed(0)
    rt = lr_range_test(build_sequence(cfg, 5, 16, 5), _cycle_windows(), task="language-model", num_classes=5,
                       optimizer="adam", batch_size=16, seed=0, steps=60)
    assert len(rt.losses) >= 20 and rt.losses[0] == pytest.approx(math.log(5), abs=0.15)
    assert min(rt.losses) < 0.8 * rt.losses[0] and 1e-6 < rt.recommended < 0.1
