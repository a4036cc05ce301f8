"""Every run's curve: metrics.jsonl lines per epoch and at logged steps; TensorBoard only where it is installed."""
from __future__ import annotations

import json
import sys
import types

import torch
from torch import nn

from recipe.engine import train as E
from recipe.engine.runlog import read_metrics


def _fit(path, epochs=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()                   # 3 classes
    t = E.Tensors(x, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return E.fit(model, t, t, task="classification", num_classes=3, optimizer="adam", lr=1e-2, epochs=epochs,
                 batch_size=32, monitor_every=4, metrics_path=path)


class _FakeWriter:
    made = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_metrics_lines_per_epoch_and_step_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # import fails: tensorboard absent
    path = tmp_path / "run" / "metrics.jsonl"
    r = _fit(path)
    epochs, steps = read_metrics(path)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for row, hist in zip(epochs, r.history):
        assert row["train_loss"] == hist["train_loss"] and row["val_loss"] == hist["val_loss"]
        assert row["val_accuracy"] == row["val_score"] and len(row["val_per_class"]) == 3
        assert all(0 <= v <= 1 for v in row["val_per_class"])
    # 10 steps an epoch, logged every 4 steps and at each epoch's end
    assert len(steps) >= 6 and all(s["train_loss"] > 0 for s in steps)
    assert [s["step"] for s in steps] == sorted(s["step"] for s in steps)
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.jsonl"]     # no event files


def test_tensorboard_mirrors_the_scalars_when_installed(tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _FakeWriter.made.clear()
    path = tmp_path / "runs" / "exp" / "regularize" / "runs" / "reference_seed0" / "metrics.jsonl"
    _fit(path, epochs=2)
    (w,) = _FakeWriter.made
    assert w.log_dir == str(path.parent) and w.closed
    tags = {t for t, _, _ in w.scalars}
    assert {"epoch/train_loss", "epoch/val_loss", "epoch/val_accuracy", "epoch/val_per_class/2",
            "step/train_loss"} <= tags
    epochs, _ = read_metrics(path)
    val = [(v, s) for t, v, s in w.scalars if t == "epoch/val_loss"]
    assert val == [(e["val_loss"], e["epoch"]) for e in epochs]


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n" + '{"epoch": 2, "train_lo')
    epochs, steps = read_metrics(path)
    assert epochs == [{"epoch": 1, "train_loss": 1.0}] and steps == []
