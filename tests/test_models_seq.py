"""Sequence models (recipe/models_seq.py): output shapes, weight tying, GPT-2 init, causality, padding-invariant
pooling, parameter counts in closed form, import-path factories and the model config's key-path errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recipe.config import validate
from recipe.errors import ConfigError, ModelError
from recipe.models import GPT, build, build_sequence

V, T = 37, 16


def _cfg(**model):
    return validate({"name": "x", "data": {"source": "text.txt"}, "model": model}).model


def _tokens(b=3, t=T, seed=0, low=1):
    return torch.randint(low, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["gpt", "lstm", "gru"])
def test_language_model_gives_logits_per_position_and_classifier_per_sequence(kind):
    torch.manual_seed(0)
    lm = build_sequence(_cfg(kind=kind, n_layer=2, n_head=4, n_embd=32), V, T, V)
    x = _tokens()
    assert lm(x).shape == (3, T, V)
    assert lm(x[:, :5]).shape == (3, 5, V)                 # shorter windows work (generation)
    for pool in ("last", "mean"):
        clf = build_sequence(_cfg(kind=kind, n_embd=32, pool=pool), V, T, 4, task="text-classification", pad_id=0)
        assert clf(x).shape == (3, 4)


@pytest.mark.parametrize("kind", ["gpt", "lstm", "gru"])
def test_untrained_language_model_loss_is_ln_v(kind):
    torch.manual_seed(0)
    lm = build_sequence(_cfg(kind=kind, n_embd=64), V, T, V)
    x, y = _tokens(64, seed=1), _tokens(64, seed=2)
    loss = F.cross_entropy(lm(x).reshape(-1, V), y.reshape(-1)).item()
    assert abs(loss - math.log(V)) < 0.05, loss


def test_weight_tying_shares_one_tensor_and_is_optional():
    tied = build_sequence(_cfg(kind="gpt", n_embd=32), V, T, V)
    assert tied.lm_head.weight is tied.wte.weight
    untied = build_sequence(_cfg(kind="gpt", n_embd=32, tie_weights=False), V, T, V)
    assert untied.lm_head.weight is not untied.wte.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == V * 32
    # one tensor: a step on the head's gradient moves the embedding too
    before = tied.wte.weight.detach().clone()
    opt = torch.optim.SGD(tied.parameters(), lr=1.0)
    F.cross_entropy(tied(_tokens()).reshape(-1, V), _tokens(seed=3).reshape(-1)).backward()
    opt.step()
    assert not torch.equal(before, tied.wte.weight) and tied.lm_head.weight is tied.wte.weight
    lstm = build_sequence(_cfg(kind="lstm", n_embd=32), V, T, V)
    assert lstm.lm_head.weight is lstm.embed.weight
    assert build_sequence(_cfg(kind="gru", n_embd=32, tie_weights=False), V, T, V).lm_head.weight is not None


def test_gpt_parameter_count_is_the_nanogpt_closed_form():
    c, L = 64, 2
    m = build_sequence(_cfg(kind="gpt", n_layer=L, n_head=4, n_embd=c), V, T, V)
    per_block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
    expected = V * c + T * c + L * per_block + 2 * c + V          # tied head: only its bias is extra
    assert sum(p.numel() for p in m.parameters()) == expected == 103525


def test_gpt_init_is_gpt2s_with_scaled_residual_projections():
    torch.manual_seed(0)
    n_layer = 4
    m = GPT(V, 64, V, n_layer=n_layer, n_head=4, n_embd=256)
    blocks = list(m.h)
    attn = torch.cat([b.attn.c_attn.weight.flatten() for b in blocks])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in blocks])
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in blocks] + [b.mlp.c_proj.weight.flatten() for b in blocks])
    assert attn.std().item() == pytest.approx(0.02, rel=0.02)
    assert fc.std().item() == pytest.approx(0.02, rel=0.02)
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.02)      # 0.00707
    assert m.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    biases = [p for n, p in m.named_parameters() if n.endswith(".bias") and "ln_" not in n]    # Linear biases
    assert biases and all(float(b.detach().abs().max()) == 0.0 for b in biases)
    assert all(torch.equal(b.ln_1.weight, torch.ones(256)) for b in blocks)


def _leaks(model, t: int) -> tuple[bool, bool]:
    """(logits at positions <= t changed, logits at t + 1 changed) when token t + 1 changes."""
    model.eval()
    x = _tokens(2, seed=5)
    y = x.clone()
    y[:, t + 1] = (y[:, t + 1] % (V - 1)) + 1
    with torch.no_grad():
        a, b = model(x), model(y)
    return not torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=0, rtol=0), not torch.allclose(a[:, t + 1], b[:, t + 1])


@pytest.mark.parametrize("kind", ["gpt", "lstm", "gru"])
def test_changing_token_t_plus_1_leaves_logits_up_to_t_unchanged(kind):
    torch.manual_seed(0)
    model = build_sequence(_cfg(kind=kind, n_layer=2, n_head=4, n_embd=32), V, T, V)
    for t in (0, 6, T - 2):
        assert _leaks(model, t) == (False, True), (kind, t)


def test_a_gpt_without_its_causal_mask_leaks_the_future():
    torch.manual_seed(0)
    model = build_sequence(_cfg(kind="gpt", n_layer=2, n_head=4, n_embd=32), V, T, V)
    for block in model.h:
        block.attn.causal = False
    assert _leaks(model, 6) == (True, True)


@pytest.mark.parametrize("kind", ["gpt", "lstm", "gru"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_pooled_classifier_ignores_right_padding(kind, pool):
    torch.manual_seed(0)
    clf = build_sequence(_cfg(kind=kind, n_embd=32, pool=pool), V, T, 3, task="text-classification", pad_id=0).eval()
    x = _tokens(2, t=10)                                            # no pad tokens (ids from 1)
    padded = torch.cat([x, torch.zeros(2, 6, dtype=torch.long)], 1)  # (2, 16), 6 pads at the end
    with torch.no_grad():
        assert torch.allclose(clf(x), clf(padded), atol=1e-5)
        # without pad_id the pads are tokens like any other: the output moves
        plain = build_sequence(_cfg(kind=kind, n_embd=32, pool=pool), V, T, 3, task="text-classification").eval()
        plain.load_state_dict(clf.state_dict())
        assert not torch.allclose(plain(x), plain(padded), atol=1e-5)


def test_mean_pool_is_the_mean_of_the_real_positions():
    torch.manual_seed(0)
    clf = build_sequence(_cfg(kind="lstm", n_embd=16, pool="mean"), V, T, 3, task="text-classification", pad_id=0)
    x = torch.tensor([[5, 6, 7, 0, 0]])
    with torch.no_grad():
        h, _ = clf.rnn(clf.embed(x))
        expected = clf.classifier.head(h[0, :3].mean(0, keepdim=True))
        assert torch.allclose(clf(x), expected, atol=1e-6)


def test_size_errors_are_model_errors():
    with pytest.raises(ModelError, match="num_outputs must equal vocab_size"):
        build_sequence(_cfg(kind="gpt", n_embd=32), V, T, 5)
    gpt = build_sequence(_cfg(kind="gpt", n_embd=32), V, T, V)
    with pytest.raises(ModelError, match="17 tokens is longer than the model's block_size 16"):
        gpt(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ModelError, match="model.kind gpt is a sequence model: it needs token windows from text data"):
        build(_cfg(kind="gpt"), (64,), 10)


def test_model_config_keys_and_key_path_errors():
    m = _cfg(kind="gpt", n_layer=3, n_head=6, n_embd=96)
    assert (m.n_layer, m.n_head, m.n_embd, m.tie_weights, m.pool) == (3, 6, 96, True, "last")
    assert _cfg(kind="lstm", n_head=3, n_embd=64).n_embd == 64       # heads mean nothing to an LSTM
    with pytest.raises(ConfigError) as e:
        _cfg(kind="gpt", n_head=3, n_embd=64)
    assert "model.n_embd: must be divisible by model.n_head (got n_embd 64, n_head 3); try n_embd 63" in str(e.value)
    with pytest.raises(ConfigError, match=r"model.kind: must be linear, mlp, cnn, resnet, gpt, lstm, gru or "
                                          r"'package.module:Factory' \(got 'gtp'\); did you mean 'gpt'\?"):
        _cfg(kind="gtp")
    with pytest.raises(ConfigError, match="model.n_layer: must be >= 1"):
        _cfg(kind="gpt", n_layer=0)
    with pytest.raises(ConfigError, match="model.pool: must be one of last, mean"):
        _cfg(kind="gru", pool="max")


class TinyLM(nn.Module):
    def __init__(self, vocab_size, block_size, num_outputs, width=8):
        super().__init__()
        self.seen = (vocab_size, block_size, num_outputs, width)
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, idx):
        return self.head(self.embed(idx))


def tiny_lm(vocab_size, block_size, num_outputs, **args):
    return TinyLM(vocab_size, block_size, num_outputs, **args)


def test_import_path_factory_gets_vocab_block_outputs_and_args():
    model = build_sequence(_cfg(kind="tests.test_models_seq:tiny_lm", args={"width": 4}), V, T, V)
    assert model.seen == (V, T, V, 4) and model(_tokens()).shape == (3, T, V)
    with pytest.raises(ModelError, match=r"rejected its arguments .*Factory\(vocab_size=..., block_size=..., "
                                         r"num_outputs=..., \*\*model.args\)"):
        build_sequence(_cfg(kind="tests.test_models_seq:tiny_lm", args={"depth": 4}), V, T, V)
    with pytest.raises(ModelError, match="cannot import 'tests.test_models_seq:nothing'"):
        build_sequence(_cfg(kind="tests.test_models_seq:nothing"), V, T, V)


def test_create_sequence_seeds_sets_the_unigram_bias_and_checks_the_output_shape():
    from recipe.models_seq import create_sequence

    cfg = _cfg(kind="gpt", n_layer=1, n_embd=32)
    priors = [0.5] + [0.5 / (V - 1)] * (V - 1)
    a = create_sequence(cfg, V, T, V, task="language-model", seed=3, priors=priors)
    b = create_sequence(cfg, V, T, V, task="language-model", seed=3, priors=priors)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.allclose(a.lm_head.bias, torch.log(torch.tensor(priors)))
    assert float(create_sequence(cfg, V, T, V, task="language-model", seed=3).lm_head.bias.detach().abs().max()) == 0
    with pytest.raises(ModelError, match=r"model output has shape \(2, 16, 8\); a language model returns"):
        create_sequence(_cfg(kind="tests.test_models_seq:eight_wide_lm"), V, T, V, task="language-model", seed=0)
    with pytest.raises(ModelError, match=r"fails on a batch of token windows of shape \(2, 16\): RuntimeError"):
        create_sequence(_cfg(kind="tests.test_models_seq:broken_lm"), V, T, V, task="language-model", seed=0)


def eight_wide_lm(vocab_size, block_size, num_outputs):
    return TinyLM(vocab_size, block_size, 8)


def broken_lm(vocab_size, block_size, num_outputs):
    class Broken(nn.Module):
        def forward(self, idx):
            raise RuntimeError("shapes do not line up")
    return Broken()


@pytest.mark.parametrize("kind", ["gpt", "lstm", "gru"])
def test_the_built_in_models_pass_the_sequence_checks_and_planted_variants_fail_them(kind):
    from recipe import checks as C
    from recipe import tasks
    from recipe.engine import sequence_checks as S
    from recipe.engine import sequence_targets as TG
    from recipe.tasks.language_model import mask_pad_targets

    torch.manual_seed(0)
    model = build_sequence(_cfg(kind=kind, n_layer=2, n_head=4, n_embd=32), V, T, V)
    x = _tokens(8, seed=7)
    y = x.roll(-1, 1)
    lm = tasks.get("language-model")
    assert S.check_causal(model, x, C.thresholds("baseline.causal")).status == "pass"
    assert S.check_grad_flow(model, x, y, lm.loss).status == "pass"
    padded = y.clone()
    padded[:, -4:] = 0
    with torch.no_grad():
        logits = model(x)
    c = TG.check_padding(lambda lo, t: lm.loss(lo, mask_pad_targets(t, 0)), logits, padded, 0,
                         C.thresholds("baseline.padding"))
    assert c.status == "pass", c.title
    if kind == "gpt":
        for block in model.h:
            block.attn.causal = False
        leak = S.check_causal(model, x, C.thresholds("baseline.causal"))
        assert leak.status == "fail" and leak.title.startswith("position 0 sees the future")
        for block in model.h:
            block.attn.causal = True
        model.use_positions = False
        flow = S.check_grad_flow(model, x, y, lm.loss)
        assert flow.status == "fail" and "wpe.weight" in flow.title
