"""The thread policy: one thread for small work, the process's share of its usable cores for large work,
the user's OMP_NUM_THREADS / RECIPE_THREADS first, one thread under nice; the engine applies it per run."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from recipe import threads
from recipe.engine import train as E


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("RECIPE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "_low_priority", lambda: False)
    yield
    threads.set_share(1)


def test_small_work_gets_one_thread_large_work_the_cores():
    assert threads.for_work(5e6) == 1                      # digits MLP [256, 256] at batch 64
    assert threads.for_work(threads.SMALL_WORK_MACS) == 4
    threads.set_share(2)                                   # one of two --jobs processes
    assert threads.for_work(3e8) == 2
    threads.set_share(8)
    assert threads.for_work(3e8) == 1


def test_user_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.for_work(5e6) == 3 and threads.default() == 3
    monkeypatch.setenv("RECIPE_THREADS", "2")
    assert threads.for_work(5e9) == 2
    monkeypatch.setenv("RECIPE_THREADS", "zero")           # not a count: ignored, OMP_NUM_THREADS stands
    assert threads.for_work(5e9) == 3


def test_low_priority_large_work_gets_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "_low_priority", lambda: True)
    assert threads.for_work(5e9) == 1


def test_configure_env_sets_passive_wait_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_env()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_env()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_macs_per_sample_counts_linear_and_conv_layers():
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    assert threads.macs_per_sample(mlp, torch.randn(5, 64)) == 64 * 256 + 256 * 10
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 64, 10))
    assert threads.macs_per_sample(cnn, torch.randn(5, 1, 8, 8)) == 8 * 64 * 9 + 8 * 64 * 10
    broken = nn.Linear(3, 2)                               # wrong input width: falls back to the parameter count
    assert threads.macs_per_sample(broken, torch.randn(5, 7)) == 8


def _threads_during_fit(model, x, batch_size):
    y = torch.randint(0, 10, (len(x),))
    t = E.Tensors(x, y)
    seen = []
    E.fit(model, t, t, task="classification", num_classes=10, optimizer="adam", lr=1e-3, batch_size=batch_size,
          epochs=1, on_epoch=lambda epoch, row: seen.append(torch.get_num_threads()))
    return seen[0]


def test_fit_trains_small_models_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        assert _threads_during_fit(small, torch.randn(128, 64), 64) == 1
        assert torch.get_num_threads() == 2
        large = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 10))   # 1.5e8 MACs at batch 1024
        assert _threads_during_fit(large, torch.randn(1024, 64), 1024) == 4
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
