"""train.grad_clip and train.schedule in the one loop: the lr of every step (numbers), the gradient norm the
optimizer really steps with, defaults that change nothing, and a stack that refuses configs using either."""
from __future__ import annotations

import math

import pytest
import torch

from recipe.config import validate
from recipe.engine import train as E
from recipe.engine.batched import fit_seeds, why_sequential
from recipe.engine.schedule import Schedule, from_config
from recipe.engine.stacked import fit_stacked_from_configs
from recipe.errors import ConfigError
from recipe.models import create


def test_cosine_lr_factors_at_given_steps():
    s = Schedule(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    total = 110                                       # cosine over steps 10..109 (99 intervals)
    assert s.factor(0, total) == pytest.approx(0.1)   # (0 + 1) / 10
    assert s.factor(4, total) == pytest.approx(0.5)
    assert s.factor(9, total) == 1.0                  # the 10th update uses the full lr
    assert s.factor(10, total) == 1.0                 # cosine starts at the top
    assert s.factor(59, total) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 49 / 99)))  # 0.5571...
    assert s.factor(59, total) == pytest.approx(0.557140, abs=1e-6)
    assert s.factor(109, total) == pytest.approx(0.1)  # the last step sits on the floor
    assert s.factor(500, total) == pytest.approx(0.1)
    no_warmup = Schedule(kind="cosine", min_lr_ratio=0.0)
    assert [round(no_warmup.factor(i, 5), 6) for i in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]
    frac = Schedule(kind="cosine", warmup_fraction=0.1)
    assert frac.warmup(200) == 20 and frac.factor(19, 200) == 1.0 and frac.factor(9, 200) == pytest.approx(0.5)
    warm_constant = Schedule(kind="constant", warmup_steps=4)
    assert [warm_constant.factor(i, 100) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert Schedule().is_constant and not warm_constant.is_constant


class _StepSpy:
    """Every optimizer step of the run: its lr and the global gradient norm it steps with."""

    def __init__(self):
        self.lrs, self.norms = [], []

    def __call__(self, opt, args, kwargs):
        self.lrs.append(opt.param_groups[0]["lr"])
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


@pytest.fixture
def spy():
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    s = _StepSpy()
    handle = register_optimizer_step_pre_hook(s)
    yield s
    handle.remove()


def _fit(ds, tr, va, cfg, **kw):
    return E.fit(create(cfg, ds, 0), tr, va, task=ds.task, num_classes=ds.num_classes, optimizer="adam", lr=1e-2,
                 epochs=2, batch_size=64, **kw)


def test_fit_steps_with_the_scheduled_lr(digits, spy):
    cfg, ds, tr, va = digits
    s = Schedule(kind="cosine", warmup_steps=5, min_lr_ratio=0.1)
    r = _fit(ds, tr, va, cfg, schedule=s)
    per_epoch = E.steps_per_epoch(len(tr), 64)
    assert per_epoch == 20 and r.steps == 40 == len(spy.lrs)        # 1257 rows / 64
    assert spy.lrs == pytest.approx([1e-2 * s.factor(i, 40) for i in range(40)], rel=1e-12)
    assert spy.lrs[0] == pytest.approx(2e-3) and spy.lrs[4] == pytest.approx(1e-2)
    assert spy.lrs[-1] == pytest.approx(1e-3)


def test_steps_per_epoch_counts_the_skipped_one_row_tail():
    assert [E.steps_per_epoch(n, 64) for n in (64, 65, 66, 128, 129, 1, 30)] == [1, 1, 2, 2, 2, 1, 1]


def test_grad_clip_caps_the_norm_the_optimizer_steps_with(digits, spy):
    cfg, ds, tr, va = digits
    raw = _fit(ds, tr, va, cfg, monitor_every=1)
    raw_norms = list(spy.norms)
    spy.norms.clear()
    clipped = _fit(ds, tr, va, cfg, grad_clip=0.05, monitor_every=1)
    assert min(raw_norms) > 0.05                      # the cap binds on every step of this run
    assert len(spy.norms) == 40 and max(spy.norms) == pytest.approx(0.05, rel=1e-4)
    assert all(n <= 0.05 * (1 + 1e-5) for n in spy.norms)
    assert raw.steps == clipped.steps == 40


def test_health_sees_the_gradient_norm_before_clipping(digits, monkeypatch):
    cfg, ds, tr, va = digits
    seen = []
    real = E.Health.before_step

    def spy_health(self, step):
        real(self, step)
        seen.extend(self.grad_norms[len(seen):])

    monkeypatch.setattr(E.Health, "before_step", spy_health)
    _fit(ds, tr, va, cfg, grad_clip=0.05)
    assert seen and seen[0][0] == 0 and seen[0][1] > 0.05


def test_defaults_leave_the_loop_bit_identical(digits, spy):
    cfg, ds, tr, va = digits
    t = cfg.train
    assert (t.grad_clip, t.schedule, t.warmup_steps, t.warmup_fraction) == (None, "constant", 0, None)
    assert from_config(t) is None
    a, b = create(cfg, ds, 0), create(cfg, ds, 0)
    E.fit_from_config(a, tr, va, cfg, ds, epochs=2)
    lrs_default = list(spy.lrs)
    E.fit(b, tr, va, task=ds.task, num_classes=ds.num_classes, optimizer=t.optimizer, lr=t.lr, epochs=2,
          batch_size=t.batch_size, schedule=Schedule(), grad_clip=None)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert set(lrs_default) == {t.lr}


def test_train_keys_validate_with_key_paths():
    def train(**keys):
        return validate({"name": "x", "data": {"source": "builtin:digits"}, "train": keys}).train

    assert from_config(train(schedule="cosine")) == Schedule(kind="cosine")
    assert from_config(train(warmup_fraction=0.05)) == Schedule(warmup_fraction=0.05)
    with pytest.raises(ConfigError, match=r"train: set train.warmup_steps or train.warmup_fraction, not both"):
        train(warmup_steps=10, warmup_fraction=0.1)
    with pytest.raises(ConfigError, match=r"train.grad_clip: must be > 0 \(got 0\)"):
        train(grad_clip=0)
    with pytest.raises(ConfigError, match=r"train.schedule: must be one of constant, cosine \(got 'cosin'\); "
                                          r"did you mean 'cosine'\?"):
        train(schedule="cosin")
    with pytest.raises(ConfigError, match=r"train.warmup_fraction: must be < 1"):
        train(warmup_fraction=1.0)


def test_stacks_refuse_configs_that_clip_or_schedule(digits):
    cfg, ds, tr, va = digits
    dev = torch.device("cpu")
    model = create(cfg, ds, 0)
    assert why_sequential(model, cfg, dev) is None
    clip = cfg.with_overrides({"train.grad_clip": 1.0})
    cosine = cfg.with_overrides({"train.schedule": "cosine"})
    assert why_sequential(model, clip, dev) == "train.grad_clip is set (the stacked engine does not clip gradients)"
    assert why_sequential(model, cosine, dev).startswith("train.schedule cosine with warmup 0 is set")
    results, _, how = fit_seeds(clip, ds, tr, va, [0, 1], dev, epochs=1)
    assert how == "sequential: train.grad_clip is set (the stacked engine does not clip gradients)"
    assert [r.steps for r in results] == [20, 20]
    with pytest.raises(ValueError, match="cannot stack these configs: train.schedule cosine"):
        fit_stacked_from_configs([create(cfg, ds, s) for s in (0, 1)], [cosine, cosine], ds, tr, va)
