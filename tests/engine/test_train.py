"""The engine's CUDA path, tested on CPU where torch allows it: float32 loss under autocast, fp16 gradient
unscaling before the monitors, bf16 fallback, device names, deterministic kernels, memory-sized evaluation."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from recipe.engine import train as E
from recipe.devices import check_device_name
from recipe.errors import RecipeError


def _data(n=256, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return E.Tensors(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())


def _model(d=12, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 2))


def _fit(precision, t, **kw):
    return E.fit(_model(), t, t, task="classification", num_classes=2, optimizer="adam", lr=1e-3, epochs=2,
                 batch_size=64, precision=precision, monitor_every=1, **kw)


def test_loss_is_float32_under_bf16_autocast(monkeypatch):
    seen = []
    real = E.loss_fn

    def spy(task):
        f = real(task)
        return lambda out, y: (seen.append(out.dtype), f(out, y))[1]

    monkeypatch.setattr(E, "loss_fn", spy)
    r = _fit("bf16", _data())
    assert r.precision == "bf16" and r.stopped == "completed"
    assert seen and set(seen) == {torch.float32}, set(seen)


def test_fp16_monitors_read_unscaled_gradients():
    t = _data()
    plain = _fit("fp32", t)
    half = _fit("fp16", t)
    assert half.precision == "fp16"
    g32 = next(c for c in plain.health if c.id == "health.exploding").evidence["max_grad_norm"]
    g16 = next(c for c in half.health if c.id == "health.exploding")
    # the GradScaler multiplies the loss by 65536: without unscale_ the monitor would see ~4e4x the norm
    assert g16.status == "pass"
    assert g16.evidence["max_grad_norm"] == pytest.approx(g32, rel=0.05)


def test_bf16_falls_back_where_the_gpu_lacks_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    cuda = torch.device("cuda")
    used, note = E.resolve_precision(cuda, "bf16")
    assert used == "fp16" and "Tesla V100 has no bf16" in note and "gradient scaler" in note
    assert E.resolve_precision(cuda, "auto")[0] == "fp16"
    assert E.resolve_precision(cuda, "fp32") == ("fp32", "")
    assert E.resolve_precision(torch.device("cpu"), "auto") == ("fp32", "")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert E.resolve_precision(cuda, "auto") == ("bf16", "")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_device_names_accepted(name):
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda1", "cpu:0", ""])
def test_device_names_refused(name):
    with pytest.raises(RecipeError, match="auto, cpu, cuda or cuda:N"):
        check_device_name(name)


def test_cuda_index_needs_that_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RecipeError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\)"):
        E.pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert E.pick_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecipeError, match="--device cuda:1: no CUDA device"):
        E.pick_device("cuda:1")


def test_deterministic_block_on_cuda_only(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with E.deterministic(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()
    with E.deterministic(torch.device("cuda")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


class _SmallMemory(nn.Module):
    """Raises CUDA's out-of-memory error on chunks above `limit` rows, like a GPU that is nearly full."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.lin, self.sizes = limit, nn.Linear(4, 3), []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.lin(x)


def test_predict_halves_its_chunk_on_out_of_memory():
    x = torch.randn(20000, 4)
    m = _SmallMemory(limit=3000)
    out = E.predict(m, x)
    assert out.shape == (20000, 3)
    assert torch.allclose(out, m.lin(x), atol=1e-6)
    assert max(s for s in m.sizes[-4:]) <= 3000
    with pytest.raises(RuntimeError, match="mat1 and mat2"):     # other errors are raised, not retried
        E.predict(nn.Linear(5, 2), torch.randn(100, 4))


def test_eval_chunk_from_what_a_row_costs_on_cpu():
    from recipe.engine import hardware

    small = torch.zeros(100000, 64)                       # an MLP on 64 features: the whole split in one chunk
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    assert E.eval_batch_size(mlp, small) == 100000
    images = torch.zeros(20000, 3 * 32 * 32)             # 12 KB a row, but 256 KB of conv output a row
    conv = nn.Sequential(nn.Unflatten(1, (3, 32, 32)), nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 32 * 32, 10))
    assert E.eval_batch_size(conv, images) == hardware.CPU_EVAL_BYTES // (2 * 64 * 32 * 32 * 4) == 512
    out = E.predict(conv, images[:1500])
    assert out.shape == (1500, 10)


def test_cli_accepts_cuda_index_and_refuses_nonsense(experiment, cli):
    cfg, runs = experiment
    bad = cli("inspect", cfg, "--runs", runs, "--device", "gpu1")
    assert bad.exit_code == 2 and "must be auto, cpu, cuda or cuda:N (got 'gpu1')" in bad.stderr
    r = cli("inspect", cfg, "--runs", runs, "--device", "cuda:1", "-q")
    assert r.exit_code == 0, r                 # inspect trains nothing: the device is not needed
    if not torch.cuda.is_available():
        r = cli("baseline", cfg, "--runs", runs, "--device", "cuda:1", "-q")
        assert r.exit_code == 2 and "--device cuda:1: no CUDA device is available here" in r.stderr
