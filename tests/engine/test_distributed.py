"""train.devices: one run across 2 gloo processes on loopback (recipe/engine/distributed.py) against one process.

Tolerance: with the same global batches in the same order, DDP over 2 ranks averages the two shares' gradients,
each share's mean loss weighted by its rows, which is the one-process gradient of the batch mean summed in another
order. float32 sums in another order differ by a few ulp (~1e-7 relative) per step; over this run's 60 Adam steps
that drift stays below 1e-6 (measured: final losses equal to 7 digits, weights within 3e-8). The tests allow 1e-4
relative on losses and 1e-5 on weights: 100x the drift, while a 2x learning rate (gradients summed, not averaged)
or unweighted shares miss it by orders of magnitude (test_unequal_shares_are_weighted shows the second).
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time

import pytest
import torch
from torch import nn

from recipe.engine import distributed as D
from recipe.engine import train as E
from recipe.errors import RecipeError
from tests.engine.ddp_models import FailsOnRankOne

LOSS_RTOL, WEIGHT_ATOL = 1e-4, 1e-5


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def gap(a: nn.Module, b: nn.Module) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def run(digits, devices: int, tmp_path=None, epochs: int = 3, **kw):
    cfg, ds, tr, va = digits
    model = mlp()
    metrics = None if tmp_path is None else tmp_path / f"d{devices}" / "metrics.jsonl"
    params = dict(task="classification", num_classes=10, optimizer="adam", lr=1e-3, batch_size=64, epochs=epochs,
                  seed=0, metrics_path=metrics, devices=devices)
    params.update(kw)
    return E.fit(model, tr, va, **params), model


@pytest.mark.parametrize("optimizer, lr", [("momentum", 0.05), ("adam", 1e-3)])
def test_two_gloo_ranks_train_the_same_run_as_one_process(digits, tmp_path, optimizer, lr):
    """momentum SGD sees a wrong gradient scale (summed, or halved, shares); Adam, the default, nearly does not."""
    _, _, tr, _ = digits
    one, m1 = run(digits, 1, tmp_path, optimizer=optimizer, lr=lr)
    two, m2 = run(digits, 2, tmp_path, optimizer=optimizer, lr=lr)
    assert (two.devices, one.devices) == (2, 1)
    for key in ("train_loss", "val_loss"):
        a, b = one.history[-1][key], two.history[-1][key]
        assert math.isclose(a, b, rel_tol=LOSS_RTOL), (key, a, b)
    assert math.isclose(one.first_loss, two.first_loss, rel_tol=LOSS_RTOL)
    assert gap(m1, m2) < WEIGHT_ATOL
    assert one.best["score"] == pytest.approx(two.best["score"], abs=1e-6)
    # each rank trained on its contiguous half of every global batch: 43-row tail batches split 22 / 21
    n, bs = len(tr), 64
    full, tail = divmod(n, bs)
    assert tail == 43
    assert two.rank_samples == [3 * (full * 32 + 22), 3 * (full * 32 + 21)]
    assert sum(two.rank_samples) == two.samples == one.samples == 3 * n
    # the same records: history rows, health checks and metrics.jsonl lines with the same keys
    assert [sorted(r) for r in one.history] == [sorted(r) for r in two.history]
    assert [(c.id, c.status) for c in one.health] == [(c.id, c.status) for c in two.health]
    lines = [[sorted(json.loads(x)) for x in (tmp_path / f"d{d}" / "metrics.jsonl").read_text().splitlines()]
             for d in (1, 2)]
    assert lines[0] == lines[1] and len(lines[0]) >= 3
    assert sorted(p.name for p in tmp_path.rglob("metrics.jsonl")) == ["metrics.jsonl"] * 2   # rank 0 wrote it
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()


def test_monitors_merge_what_each_rank_saw(digits):
    """Dead units: a unit fired if it fired on any rank's share, so the merged never-active fractions equal one
    process's on the same global batches; saturation: the mean of equal shares' fractions. On 8 rows (shares of
    4) rank 0's half alone sees fewer units fire and another saturated fraction (checked by hand below)."""
    def model():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 10))
        with torch.no_grad():
            m[0].bias.copy_(torch.linspace(-2.0, 0.0, 48))     # from rarely firing to often
            m[2].bias.copy_(torch.linspace(-3.0, 3.0, 16))     # the outer tanh units near saturation
            m[2].weight.mul_(6.0)                              # ... and on some rows past it
        return m

    _, _, tr, _ = digits
    sub = tr.subset(torch.arange(8))
    kw = dict(task="classification", num_classes=10, optimizer="sgd", lr=1e-4, batch_size=8, epochs=1, seed=0,
              eval_train=False)
    one = E.fit(model(), sub, None, devices=1, **kw)
    two = E.fit(model(), sub, None, devices=2, **kw)
    ev = {d: {c.id: c.evidence for c in r.health} for d, r in ((1, one), (2, two))}
    dead1, dead2 = ev[1]["health.dead-units"]["never_active"], ev[2]["health.dead-units"]["never_active"]
    assert dead1 == dead2 and 0 < dead1["1"] < 1
    sat1, sat2 = ev[1]["health.saturation"]["saturated"], ev[2]["health.saturation"]["saturated"]
    assert sat1["3"] == pytest.approx(sat2["3"], abs=1e-3) and 0 < sat1["3"] < 1
    # what rank 0's own half (the first 4 rows of the batch order) shows: another dead fraction and saturation
    m = model()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        relu = m[1](m[0](sub.x[perm[:4]]))
        tanh = m[3](m[2](relu))
    half_dead = 1 - float((relu > 0).any(0).float().mean())
    half_saturated = float(((tanh <= -0.99) | (tanh >= 0.99)).float().mean())
    assert round(half_dead, 3) != dead1["1"] and abs(half_saturated - sat1["3"]) > 1e-3


def test_unequal_shares_are_weighted(digits):
    """7 rows in one batch split 4 / 3: one SGD step equals one process's; the plain mean of the two shares'
    mean gradients (what DDP gives without the weights) is measurably another step."""
    _, _, tr, _ = digits
    sub = tr.subset(torch.arange(7))
    kw = dict(task="classification", num_classes=10, optimizer="sgd", lr=0.5, batch_size=7, epochs=1, seed=0,
              eval_train=False)
    m1, m2 = mlp(), mlp()
    E.fit(m1, sub, None, devices=1, **kw)
    E.fit(m2, sub, None, devices=2, **kw)
    step_gap = gap(m1, m2)
    assert step_gap < 1e-6
    # the unweighted average, by hand: the batch order is torch.randperm(7) under seed 0
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(7, generator=gen)
    m3 = mlp()
    grads = []
    for part in torch.tensor_split(perm, 2):
        m3.zero_grad()
        nn.functional.cross_entropy(m3(sub.x[part]), sub.y[part]).backward()
        grads.append([p.grad.clone() for p in m3.parameters()])
    with torch.no_grad():
        for p, g0, g1 in zip(m3.parameters(), *grads):
            p -= 0.5 * (g0 + g1) / 2
    assert gap(m1, m3) > 100 * max(step_gap, 1e-8)


def test_rank_zero_decides_when_the_run_stops(digits):
    """Early stopping and a pruner (on_epoch) run on rank 0 only; the other rank stops at the same epoch, and
    the restored best epoch is one process's."""
    es = {"patience": 1, "metric": "val_loss"}
    one, m1 = run(digits, 1, epochs=60, lr=3e-2, early_stopping=es)
    two, m2 = run(digits, 2, epochs=60, lr=3e-2, early_stopping=es)
    assert one.stopped == two.stopped == "early_stopping"
    assert len(one.history) == len(two.history) < 60 and one.best_epoch == two.best_epoch
    assert gap(m1, m2) < WEIGHT_ATOL

    def prune_at_two(epoch, row):
        if epoch == 2:
            raise E.Pruned()

    pruned, _ = run(digits, 2, epochs=60, on_epoch=prune_at_two)
    assert pruned.stopped == "pruned" and len(pruned.history) == 2
    assert sum(pruned.rank_samples) == pruned.samples == 2 * len(digits[2])
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()


def test_a_killed_rank_interrupts_the_run_without_hanging(digits, tmp_path):
    killed = {}

    def kill_rank_one(epoch, row):
        if epoch == 2:
            os.kill(D.rank_pids()[0], signal.SIGKILL)
            killed["at"] = time.monotonic()

    with pytest.raises(D.RankLost, match=r"rank 1 of 2 \(pid \d+\) was killed by SIGKILL") as e:
        run(digits, 2, tmp_path, epochs=200, on_epoch=kill_rank_one)
    assert isinstance(e.value, KeyboardInterrupt)          # the stage's record says 'interrupted', exit 130
    assert time.monotonic() - killed["at"] < 20            # gloo reports the closed connection at once
    rows = [json.loads(x) for x in (tmp_path / "d2" / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert [r["epoch"] for r in rows][:2] == [1, 2] and len(rows) < 200
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()


def test_a_crashed_rank_fails_the_run_with_its_error(digits):
    _, _, tr, va = digits
    model = FailsOnRankOne(64, 10)
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 .* failed with exit code 1: .*planted failure on rank 1"):
        E.fit(model, tr, va, task="classification", num_classes=10, optimizer="adam", lr=1e-3, batch_size=64,
              epochs=2, devices=2)
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()


def test_a_model_that_cannot_travel_is_refused_with_the_key(digits):
    class Local(nn.Module):     # defined in a function: pickle cannot name it for the other ranks
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            return self.lin(x)

    _, _, tr, va = digits
    with pytest.raises(RecipeError, match=r"train.devices: 2: the model cannot be sent to the other ranks"):
        E.fit(Local(), tr, va, task="classification", num_classes=10, optimizer="adam", lr=1e-3, epochs=1, devices=2)


def test_more_ranks_than_gpus_is_refused_with_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RecipeError, match=r"train.devices: 2 ranks from cuda:0 need 2 GPUs, but 1 is visible"):
        D.backend_for(torch.device("cuda:0"), 2)
    assert D.backend_for(torch.device("cpu"), 3) == ("gloo", ["cpu"] * 3)


def test_schema_default_and_key_path_errors(tmp_path):
    from recipe.config import load, validate

    assert validate({"name": "x", "data": {"source": "builtin:iris"}}).train.devices == 1
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {source: builtin:iris}\ntrain: {devices: 0}\n")
    with pytest.raises(RecipeError, match=r"train\.devices") as e:
        load(path)
    assert e.value.exit_code == 2
    with pytest.raises(RecipeError, match=r"train\.devices"):
        load(path, ["train.devices=two"])
    assert load(path, ["train.devices=2"]).train.devices == 2


class _Opts:
    def __init__(self, devices=None, jobs=None):
        self.devices, self.jobs = devices, jobs


def test_which_stages_honour_train_devices(digits, monkeypatch):
    from recipe import threads

    cfg = digits[0].with_overrides({"train.devices": 2})
    try:
        assert D.begin("regularize", cfg, _Opts())["per_run"] == 2
        assert D.devices_for(cfg) == 2
        plan = D.begin("regularize", cfg, _Opts(jobs=2))
        assert plan["per_run"] == 1 and "--jobs 2" in plan["note"] and D.devices_for(cfg) == 1
        assert D.begin("ensemble", cfg, _Opts())["per_run"] == 2
        plan = D.begin("tune", cfg, _Opts())
        assert plan["per_run"] == 1 and "separate worker processes" in plan["note"]
        assert D.begin("baseline", cfg, _Opts())["per_run"] == 1
        assert D.begin("overfit-batch", cfg, _Opts())["per_run"] == 1
        assert D.begin("ensemble", digits[0], _Opts(devices=3))["per_run"] == 3     # --devices wins
        assert D.begin("ensemble", digits[0], _Opts())["note"].startswith("train.devices is 1")
    finally:
        D.end()
    assert D.devices_for(cfg) == 2                  # no stage under way: the config says
    monkeypatch.setattr(threads, "_share", 2)       # one of two --jobs worker processes: one device each
    assert D.devices_for(cfg) == 1


# ----------------------------------------------------------------------------- through the CLI: regularize

IRIS = """\
name: iris
seed: 0
data: {source: builtin:iris}
model: {kind: mlp, hidden: [32]}
train: {lr: 1.0e-2, batch_size: 16, epochs: 30}
overfit: {samples: 16, steps: 150}
regularize: {seeds: 1, ladder: [dropout]}
"""


@pytest.fixture(scope="module")
def iris_upstream(tmp_path_factory):
    """inspect, baseline and overfit-batch on iris, once: each test copies the runs folder."""
    from tests.conftest import invoke

    folder = tmp_path_factory.mktemp("iris")
    (folder / "iris.yaml").write_text(IRIS)
    for stage in ("inspect", "baseline", "overfit-batch"):
        r = invoke(stage, folder / "iris.yaml", "--runs", folder / "runs", "-q")
        assert r.exit_code == 0, r
    return folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src / "runs", dst / "runs")
    (dst / "iris.yaml").write_text(IRIS)
    return dst / "iris.yaml", dst / "runs"


def _shape(obj):
    """A record's structure: the keys of every mapping, recursively (lists by their first item)."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj else []
    return type(obj).__name__ if obj is not None else None


def test_regularize_trains_its_runs_across_two_ranks_with_the_same_record(iris_upstream, tmp_path):
    from tests.conftest import invoke, record

    out = {}
    for devices in (1, 2):
        config, runs = _copy(iris_upstream, tmp_path / f"d{devices}")
        r = invoke("regularize", config, "--runs", runs, "--devices", devices, "--json", "-q")
        assert r.exit_code == 0, r
        out[devices] = record(runs, "iris", "regularize")
    one, two = out[1], out[2]
    assert one["status"] == two["status"] == "passed"
    runs = two["metrics"]["runs"]
    assert runs >= 2
    assert two["devices"] == {"asked": 2, "per_run": 2, "runs_across_devices": runs, "child_ranks_started": 1,
                              "note": "each run trains across 2 ranks (DDP), this process rank 0"}
    assert one["devices"]["runs_across_devices"] == 0 and one["devices"]["note"].startswith("train.devices is 1")
    assert _shape({k: v for k, v in one.items() if k != "devices"}) == \
        _shape({k: v for k, v in two.items() if k != "devices"})
    assert set(_shape(one["devices"])) == set(_shape(two["devices"]))
    assert [(c["id"], c["status"]) for c in one["checks"]] == [(c["id"], c["status"]) for c in two["checks"]]
    # same runs up to float order: the reference's val accuracy on 23 rows agrees exactly
    assert two["metrics"]["reference_val"] == pytest.approx(one["metrics"]["reference_val"], abs=1e-6)
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()


def test_regularize_with_a_killed_rank_is_interrupted_and_exits_130(iris_upstream, tmp_path):
    """SIGKILL rank 1 while rank 0 trains: the record says 'interrupted' (never passed), the CLI exits 130."""
    from tests.conftest import invoke, record

    config, runs = _copy(iris_upstream, tmp_path)
    killed = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if D.current() is not None and D.rank_pids():     # rank 0 is inside a run across devices
                time.sleep(0.5)
                pids = D.rank_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    r = invoke("regularize", config, "--runs", runs, "--devices", "2", "-o", "train.epochs=2000",
               "--force", "--json")     # longer runs (past the gate) so the kill lands mid-training
    watcher.join(5)
    assert killed, "no child rank was seen"
    assert r.exit_code == 130, r
    assert r.json["status"] == "interrupted"
    rec = record(runs, "iris", "regularize")
    assert rec["status"] == "interrupted"
    assert time.monotonic() - killed[0] < 60 and time.monotonic() - t0 < 180     # no hang
    assert D.rank_pids() == [] and not torch.distributed.is_initialized()
