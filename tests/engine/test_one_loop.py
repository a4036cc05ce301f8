"""One epoch loop (recipe/engine/loop.py): fit and fit_stacked both run it, so a stacked member stops, spends its
time budget and writes its curve (metrics.jsonl, TensorBoard) by the same rules as a single run."""
from __future__ import annotations

import sys

import pytest
import torch

from recipe.engine import loop
from recipe.engine import train as E
from recipe.engine.runlog import read_metrics
from recipe.engine.stacked import Member, Stack, fit_stacked, fit_stacked_from_configs
from recipe.models import create
from tests.engine.test_runlog import _FakeWriter


def _fit(model, tr, va, ds, **kw):
    return E.fit(model, tr, va, task=ds.task, num_classes=ds.num_classes, optimizer="adam", lr=1e-3, **kw)


def _stack(models, tr, va, ds, **kw):
    members = [Member(model=m, lr=1e-3, seed=i, on_epoch=(kw.pop(f"on_epoch{i}", None)))
               for i, m in enumerate(models)]
    return fit_stacked(members, tr, va, task=ds.task, num_classes=ds.num_classes, optimizer="adam", **kw)


def test_fit_fit_stacked_and_fit_seeds_all_run_the_one_epoch_loop(digits, monkeypatch):
    from recipe.engine.batched import fit_seeds

    cfg, ds, tr, va = digits
    calls = []
    real = loop.run_epochs

    def counting(strategy, **kw):
        calls.append((type(strategy).__name__, len(strategy.active), kw["epochs"]))
        return real(strategy, **kw)

    monkeypatch.setattr(loop, "run_epochs", counting)
    _fit(create(cfg, ds, 0), tr, va, ds, epochs=2)
    _stack([create(cfg, ds, s) for s in (0, 1, 2)], tr, va, ds, epochs=2)
    fit_seeds(cfg, ds, tr, va, [0, 1], torch.device("cpu"))
    assert calls == [("Single", 1, 2), ("Stack", 3, 2), ("Stack", 2, 3)]


CURVE_A = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.6, 0.5]      # best at epoch 2, then 2 epochs worse: stops at 4
CURVE_B = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]        # always better: runs all 8


def _scripted(monkeypatch, curves):
    """Both strategies' per-epoch val metrics replaced by fixed curves (one per active run, by its epoch)."""
    def evaluate(self):
        return [{"loss": curves[r.seed][len(r.result.history)], "score": -curves[r.seed][len(r.result.history)]}
                for r in self.active]
    monkeypatch.setattr(E.Single, "evaluate", evaluate)
    monkeypatch.setattr(Stack, "evaluate", evaluate)


def test_same_curve_same_early_stop_for_fit_and_a_stacked_member(digits, monkeypatch):
    cfg, ds, tr, va = digits
    _scripted(monkeypatch, {0: CURVE_A, 1: CURVE_B})
    es = {"patience": 2, "metric": "val_loss"}
    single = _fit(create(cfg, ds, 0), tr, va, ds, epochs=8, seed=0, early_stopping=es)
    a, b = _stack([create(cfg, ds, 0), create(cfg, ds, 1)], tr, va, ds, epochs=8, early_stopping=es)
    for r in (single, a):
        assert (r.stopped, r.best_epoch, len(r.history)) == ("early_stopping", 2, 4)
        assert [h["val_loss"] for h in r.history] == CURVE_A[:4]
    assert (b.stopped, b.best_epoch, len(b.history)) == ("completed", 8, 8)
    assert a.steps == single.steps == 4 * 20            # 1257 rows / 64: 20 steps an epoch
    # val_score as the metric: the same curve read as scores stops at the same epoch for both
    es = {"patience": 3, "metric": "val_score"}
    single = _fit(create(cfg, ds, 0), tr, va, ds, epochs=8, seed=0, early_stopping=es)
    a, _ = _stack([create(cfg, ds, 0), create(cfg, ds, 1)], tr, va, ds, epochs=8, early_stopping=es)
    assert (single.stopped, len(single.history)) == (a.stopped, len(a.history)) == ("early_stopping", 5)


def test_time_budget_is_the_same_rule_for_fit_and_a_stacked_member(digits, monkeypatch):
    cfg, ds, tr, va = digits
    now = [0.0]
    monkeypatch.setattr(loop, "_clock", lambda: now[0])

    def tick(seconds):
        def on_epoch(epoch, row):
            now[0] += seconds
        return on_epoch

    single = _fit(create(cfg, ds, 0), tr, va, ds, epochs=10, max_seconds=2.5, on_epoch=tick(1.0))
    assert (single.stopped, len(single.history), single.seconds) == ("max_seconds", 3, 3.0)
    assert [h["seconds"] for h in single.history] == [0.0, 1.0, 2.0]
    # a stack of two: 2 s of wall time an epoch, split between them, is 1 s each: the same stop
    a, b = _stack([create(cfg, ds, 0), create(cfg, ds, 1)], tr, va, ds, epochs=10, max_seconds=2.5,
                  on_epoch0=tick(2.0), on_epoch1=tick(0.0))
    for r in (a, b):
        assert (r.stopped, len(r.history), r.seconds) == ("max_seconds", 3, 3.0)


def test_each_stacked_member_writes_the_curve_its_run_alone_writes(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # tensorboard absent
    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"train.lr": lr, "train.epochs": 4, "seed": s}) for lr, s in ((1e-3, 0), (5e-3, 1))]
    paths = [tmp_path / "stack" / f"m{i}" / "metrics.jsonl" for i in range(3)]
    cfgs.append(cfgs[0].with_overrides({"train.lr": 2e-3}))

    def prune_at_2(epoch, row):
        if epoch == 2:
            raise E.Pruned()

    models = [create(c, ds, c.seed) for c in cfgs]
    results = fit_stacked_from_configs(models, cfgs, ds, tr, va, on_epoch=[None, None, prune_at_2],
                                       metrics_paths=paths)
    for i, (c, r) in enumerate(zip(cfgs[:2], results)):
        alone = tmp_path / "alone" / f"m{i}" / "metrics.jsonl"
        E.fit_from_config(create(c, ds, c.seed), tr, va, c, ds, metrics_path=alone)
        (epochs, steps), (a_epochs, a_steps) = read_metrics(paths[i]), read_metrics(alone)
        assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
        assert [e["val_loss"] for e in epochs] == [h["val_loss"] for h in r.history]
        assert sorted(epochs[0]) == sorted(a_epochs[0])                 # the same line format
        for e, ae in zip(epochs, a_epochs):
            assert e["val_loss"] == pytest.approx(ae["val_loss"], rel=1e-4)
            assert e["train_loss"] == pytest.approx(ae["train_loss"], rel=1e-4)
            assert e["val_per_class"] == pytest.approx(ae["val_per_class"], abs=1.01 / 20)   # one sample of a class
        assert [s["step"] for s in steps] == [s["step"] for s in a_steps] and len(steps) >= 4
        assert [s["train_loss"] for s in steps] == pytest.approx([s["train_loss"] for s in a_steps], rel=1e-4)
    pruned_epochs, _ = read_metrics(paths[2])
    assert results[2].stopped == "pruned" and [e["epoch"] for e in pruned_epochs] == [1, 2]   # its file ends there


def test_stacked_members_write_tensorboard_events_when_installed(digits, tmp_path, monkeypatch):
    import types

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _FakeWriter.made.clear()
    cfg, ds, tr, va = digits
    cfgs = [cfg.with_overrides({"train.epochs": 2, "seed": s}) for s in (0, 1)]
    paths = [tmp_path / f"m{i}" / "metrics.jsonl" for i in range(2)]
    results = fit_stacked_from_configs([create(c, ds, c.seed) for c in cfgs], cfgs, ds, tr, va, metrics_paths=paths)
    assert [w.log_dir for w in _FakeWriter.made] == [str(p.parent) for p in paths]
    for w, r in zip(_FakeWriter.made, results):
        assert w.closed
        assert [(v, s) for t, v, s in w.scalars if t == "epoch/val_loss"] == \
            [(h["val_loss"], h["epoch"]) for h in r.history]
        assert {"epoch/val_accuracy", "epoch/val_per_class/9", "step/train_loss"} <= {t for t, _, _ in w.scalars}
