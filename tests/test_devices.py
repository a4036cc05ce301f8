"""--jobs N | auto resolved against --device: how many workers, which GPU each is pinned to, and the reason;
bad values exit 2 naming --jobs. GPUs are faked (RECIPE_FAKE_GPUS, or torch.cuda monkeypatched)."""
from __future__ import annotations

import os

import pytest

from recipe import devices as D
from recipe.errors import RecipeError
from tests.conftest import invoke, write_config


@pytest.fixture(autouse=True)
def _no_fake(monkeypatch):
    monkeypatch.delenv(D.FAKE_GPUS_ENV, raising=False)


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))


@pytest.mark.parametrize("text,value", [("auto", "auto"), ("AUTO", "auto"), ("1", 1), ("8", 8), (" 3 ", 3),
                                        (None, None)])
def test_parse_jobs_accepts_counts_and_auto(text, value):
    assert D.parse_jobs(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "banana", "2.5", "", "1e3"])
def test_parse_jobs_rejects_the_rest_naming_the_flag(text):
    with pytest.raises(RecipeError) as e:
        D.parse_jobs(text)
    assert str(e.value).startswith("--jobs: must be a whole number") and f"(got '{text}')" in str(e.value)


def test_auto_on_gpus_is_one_worker_per_gpu_pinned_in_order(monkeypatch):
    monkeypatch.setenv(D.FAKE_GPUS_ENV, "0,1,2,3")
    p = D.plan_jobs("auto", "auto")
    assert (p.jobs, p.gpus) == (4, ["0", "1", "2", "3"])
    assert p.reason == "--jobs auto: one worker per visible GPU (4: 0,1,2,3)"
    assert D.plan_jobs("auto", "cuda").gpus == ["0", "1", "2", "3"]        # --device cuda: the same


def test_more_workers_than_gpus_share_them_round_robin_and_say_so(monkeypatch):
    monkeypatch.setenv(D.FAKE_GPUS_ENV, "4,6")
    p = D.plan_jobs(5, "auto")
    assert p.jobs == 5 and p.gpus == ["4", "6", "4", "6", "4"]
    assert "on 2 GPU(s): shared round-robin, worker i on GPU i mod 2 (GPU 4: 3 workers, GPU 6: 2 workers)" in p.reason
    p = D.plan_jobs(2, "auto", "tune.jobs")
    assert p.gpus == ["4", "6"] and p.reason == "tune.jobs 2: one GPU per worker (GPU 4,6 of 2 visible)"
    assert D.plan_jobs(1, "auto").gpus == ["4"]                            # worker 0 alone: the first GPU


def test_cpu_auto_is_one_worker_per_two_usable_cores(monkeypatch):
    monkeypatch.setenv(D.FAKE_GPUS_ENV, "0,1")        # --device cpu: visible GPUs do not count
    for cores, jobs in ((1, 1), (2, 1), (3, 1), (8, 4), (16, 8)):
        _cores(monkeypatch, cores)
        p = D.plan_jobs("auto", "cpu")
        assert (p.jobs, p.gpus) == (jobs, []), cores
        assert p.reason == f"--jobs auto: --device cpu: one worker per two usable cores ({cores} usable)"
    monkeypatch.delenv(D.FAKE_GPUS_ENV)               # no GPU at all (this machine): the same rule, said so
    _cores(monkeypatch, 6)
    p = D.plan_jobs("auto", "auto")
    assert (p.jobs, p.gpus) == (3, []) and "no GPU visible: one worker per two usable cores (6 usable)" in p.reason
    p = D.plan_jobs(3, "auto")
    assert p.gpus == [] and p.reason == "--jobs 3; CPU workers, each with its share of the 6 usable cores"


def test_an_explicit_gpu_index_pins_nothing_and_auto_is_one_worker(monkeypatch):
    monkeypatch.setenv(D.FAKE_GPUS_ENV, "0,1,2")
    assert D.plan_jobs("auto", "cuda:1").record() == {
        "requested": "auto", "jobs": 1, "gpus": [], "reason": "--jobs auto: --device cuda:1 names one GPU: one worker"}
    p = D.plan_jobs(3, "cuda:2")
    assert p.gpus == [] and p.reason.endswith("every worker on cuda:2 (it names one GPU)")


def test_visible_gpus_follow_this_processes_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert D.visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")       # a worker pinned to "3" is the machine's GPU 3
    assert D.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb,GPU-cc")  # UUIDs pass through; count wins
    assert D.visible_gpus() == ["GPU-aa", "GPU-bb"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.visible_gpus() == []


def test_pinned_env_sets_and_restores_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with D.pinned_env("1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with D.pinned_env("0"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with D.pinned_env(None):                                 # not pinned: untouched
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


@pytest.mark.parametrize("stage", ["tune", "regularize"])
@pytest.mark.parametrize("value", ["0", "banana", "-2"])
def test_bad_jobs_exit_2_naming_jobs_before_any_work(tmp_path, stage, value):
    cfg = write_config(tmp_path)
    r = invoke(stage, cfg, "--runs", tmp_path / "runs", "--jobs", value)
    assert r.exit_code == 2, r
    assert "--jobs: must be a whole number of worker processes >= 1, or 'auto'" in r.stderr
    assert f"(got '{value}')" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()                 # refused before the stage started
