"""Stacked runs (recipe/engine/stacked.py): each member behaves as the same run trained alone by the engine.

The oracle is the engine itself: a member's loss curve, val curve and final weights must match E.fit on the same
configuration within float tolerance (no dropout), for every optimizer; dropout rates, pruning, early stopping
and non-finite losses act per member, and a member that stops leaves the stack.
"""
from __future__ import annotations


import pytest
import torch

from recipe.engine import train as E
from recipe.engine.stacked import (Member, MemberDropout, fit_stacked, fit_stacked_from_configs, stack_key,
                                   why_not_stacked)
from recipe.models import create


def _alone(c, ds, tr, va):
    model = create(c, ds, c.seed)
    return E.fit_from_config(model, tr, va, c, ds), model


def _assert_same_run(r, model, r_alone, model_alone):
    assert len(r.history) == len(r_alone.history)
    for a, b in zip(r.history, r_alone.history):
        assert a["epoch"] == b["epoch"] and a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-6)
    assert r.best["score"] == pytest.approx(r_alone.best["score"], abs=1.5 / 270)   # at most one val sample
    assert r.first_loss == pytest.approx(r_alone.first_loss, rel=1e-5)
    assert r.samples == r_alone.samples and r.steps == r_alone.steps and r.stopped == r_alone.stopped
    for p, q in zip(model.parameters(), model_alone.parameters()):
        assert torch.allclose(p, q, atol=2e-4), (p - q).abs().max()


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "momentum", "nesterov", "adagrad", "rmsprop"])
def test_each_member_reproduces_its_run_alone(digits, optimizer):
    cfg, ds, tr, va = digits
    points = [(1e-3, 0.0, 0), (2e-2, 1e-2, 1), (5e-3, 1e-3, 0)]    # per-member lr, weight decay and seed
    cfgs = [cfg.with_overrides({"train.optimizer": optimizer, "train.lr": lr, "train.weight_decay": wd, "seed": s})
            for lr, wd, s in points]
    models = [create(c, ds, c.seed) for c in cfgs]
    results = fit_stacked_from_configs(models, cfgs, ds, tr, va)
    alone = [_alone(c, ds, tr, va) for c in cfgs]
    for r, m, (ra, ma) in zip(results, models, alone):
        _assert_same_run(r, m, ra, ma)
    # the learning rates did act per member: the members' curves differ as the separate runs' do
    finals = [r.history[-1]["train_loss"] for r in results]
    assert len({round(f, 4) for f in finals}) == 3
    assert [h.status for h in results[1].health] == [h.status for h in alone[1][0].health]


def test_member_adam_betas_match_torch_adam():
    from recipe.engine.stacked_optim import StackedOptimizer

    torch.manual_seed(0)
    w = torch.randn(3, 5, 4)                                    # 3 members of a (5, 4) weight
    betas = [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]
    stacked = {"w": w.clone().requires_grad_()}
    opt = StackedOptimizer("adam", stacked, [1e-2, 3e-2, 1e-3], [0.0, 1e-2, 0.0], betas)
    alone = [w[j].clone().requires_grad_() for j in range(3)]
    refs = [torch.optim.Adam([a], lr=lr, weight_decay=wd, betas=b)
            for a, lr, wd, b in zip(alone, [1e-2, 3e-2, 1e-3], [0.0, 1e-2, 0.0], betas)]
    for step in range(20):
        target = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        ((stacked["w"] - target) ** 2).sum().backward()
        opt.step()
        for a, ref in zip(alone, refs):
            ref.zero_grad()
            ((a - target) ** 2).sum().backward()
            ref.step()
    for j in range(3):
        assert torch.allclose(stacked["w"][j], alone[j], atol=1e-6)
    assert not torch.allclose(stacked["w"][0], stacked["w"][2], atol=1e-2)


def test_member_dropout_draws_each_members_rate():
    from torch.func import functional_call, vmap

    layer = MemberDropout()
    p = torch.tensor([0.0, 0.25, 0.5])
    x = torch.ones(40_000)
    out = vmap(lambda b, xx: functional_call(layer, ({}, {"p": b}), (xx,)), in_dims=(0, None),
               randomness="different")(p, x)                                                   # (3, N)
    zeros = (out == 0).float().mean(1)
    assert zeros[0] == 0 and torch.equal(out[0], x)                  # p = 0: the input, exactly
    assert zeros[1] == pytest.approx(0.25, abs=0.015) and zeros[2] == pytest.approx(0.5, abs=0.015)
    assert torch.allclose(out[1][out[1] != 0], torch.full((), 1 / 0.75)) and torch.all(out[2][out[2] != 0] == 2.0)
    assert not torch.equal(out[1] == 0, out[2] == 0)
    layer.eval()
    assert torch.equal(functional_call(layer, ({}, {"p": torch.tensor(0.5)}), (x,)), x)


def test_dropout_rates_per_member_and_p0_member_equals_undropped_run(digits):
    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"model.dropout": p}) for p in (0.0, 0.5, 0.2)]
    models = [create(c, ds, c.seed) for c in cfgs]
    assert why_not_stacked(models, cfgs[0], torch.device("cpu")) is None
    assert len({stack_key(c) for c in cfgs}) == 1                    # the rate does not split the group
    results = fit_stacked_from_configs(models, cfgs, ds, tr, va)
    r0, m0 = _alone(cfgs[0], ds, tr, va)
    _assert_same_run(results[0], models[0], r0, m0)                  # p = 0 member == engine run without dropout
    # dropout slows fitting the train split: the higher the rate, the higher the train loss
    train_loss = [r.history[-1]["train_loss"] for r in results]
    assert train_loss[1] > train_loss[2] > train_loss[0] * 1.02, train_loss
    # the members keep their own architecture: the p = 0.5 member's model has its Dropout(0.5) back
    assert [d.p for d in models[1].modules() if isinstance(d, torch.nn.Dropout)] == [0.5]


def test_pruned_member_leaves_the_stack_and_the_rest_still_match(digits, monkeypatch):
    from recipe.engine import stacked_optim

    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"train.lr": lr, "train.epochs": 4}) for lr in (1e-3, 3e-3, 1e-2)]
    models = [create(c, ds, c.seed) for c in cfgs]
    widths, finished = [], []
    step = stacked_optim.StackedOptimizer.step

    def counting(self):
        widths.append(len(self.hyper["lr"]))
        step(self)

    monkeypatch.setattr(stacked_optim.StackedOptimizer, "step", counting)

    def prune_at_2(epoch, row):
        if epoch == 2:
            raise E.Pruned()

    results = fit_stacked_from_configs(models, cfgs, ds, tr, va, on_epoch=[None, prune_at_2, None],
                                       on_finish=lambda m: finished.append((models.index(m.model), len(widths))))
    per_epoch = -(-len(tr) // 64)
    assert widths == [3] * (2 * per_epoch) + [2] * (2 * per_epoch)     # the stack shrank after epoch 2
    assert finished[0] == (1, 2 * per_epoch)                           # the pruned member left first, at once
    pruned = results[1]
    assert pruned.stopped == "pruned" and len(pruned.history) == 2 and pruned.samples == 2 * len(tr)
    assert pruned.final_train["score"] > 0                             # its train score is recorded (trials.csv)
    for j in (0, 2):
        _assert_same_run(results[j], models[j], *_alone(cfgs[j], ds, tr, va))


def test_early_stopping_per_member(digits):
    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"train.lr": lr, "train.epochs": 12, "train.early_stopping": {"patience": 2}})
            for lr in (3e-2, 1e-3)]                                     # a high rate overfits: stops early
    models = [create(c, ds, c.seed) for c in cfgs]
    results = fit_stacked_from_configs(models, cfgs, ds, tr, va)
    for r, m, c in zip(results, models, cfgs):
        _assert_same_run(r, m, *_alone(c, ds, tr, va))
    assert results[0].stopped == "early_stopping" and len(results[0].history) < 12
    assert results[1].stopped == "completed" and len(results[1].history) == 12


def test_non_finite_member_stops_alone_and_says_so(digits):
    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"train.optimizer": "sgd", "train.lr": lr}) for lr in (1e-2, 1e30)]
    models = [create(c, ds, c.seed) for c in cfgs]
    results = fit_stacked_from_configs(models, cfgs, ds, tr, va)
    bad, alone_bad = results[1], _alone(cfgs[1], ds, tr, va)[0]
    assert bad.stopped == alone_bad.stopped == "non_finite"
    check = {c.id: c for c in bad.health}["health.non-finite"]
    alone_check = {c.id: c for c in alone_bad.health}["health.non-finite"]
    assert check.status == "fail" and check.evidence["step"] == alone_check.evidence["step"]
    assert check.evidence["first_bad_parameter"] == alone_check.evidence["first_bad_parameter"]
    assert len(bad.history) == len(alone_bad.history)
    good = results[0]
    assert good.stopped == "completed" and {c.id: c for c in good.health}["health.non-finite"].status == "pass"
    _assert_same_run(good, models[0], *_alone(cfgs[0], ds, tr, va))


def test_different_widths_or_batch_sizes_are_other_groups(digits):
    cfg, ds, tr, va = digits
    base = stack_key(cfg)
    assert stack_key(cfg.with_overrides({"train.lr": 0.1, "train.weight_decay": 0.1, "seed": 3})) == base
    for other in ({"model.hidden": [32]}, {"train.batch_size": 32}, {"train.optimizer": "sgd"}):
        assert stack_key(cfg.with_overrides(other)) != base, other
    resnet = cfg.with_overrides({"model.kind": "resnet", "model.hidden": [4], "data.shape": [1, 8, 8]})
    models = [create(resnet, ds, s) for s in (0, 1)]
    assert why_not_stacked(models, resnet, torch.device("cpu")) == "the model has buffers (BatchNorm running statistics)"


def test_member_seconds_share_the_stack(digits):
    cfg, ds, tr, va = digits
    members = [Member(model=create(cfg, ds, 0), lr=1e-3), Member(model=create(cfg, ds, 0), lr=2e-3)]
    results = fit_stacked(members, tr, va, task=ds.task, num_classes=ds.num_classes, optimizer="adam", epochs=2)
    assert all(r.seconds > 0 for r in results)
    assert results[0].seconds == pytest.approx(results[1].seconds)       # the stack's time, split between them
