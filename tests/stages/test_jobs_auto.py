"""issue 20 item 3, one worker per GPU: `tune --jobs N|auto` and `regularize --jobs N|auto` pin worker i to GPU i
(CUDA_VISIBLE_DEVICES in the worker's environment before it touches CUDA), and the record says what was chosen
and why. This machine has no GPU: RECIPE_FAKE_GPUS fakes the device list, and each worker records the
CUDA_VISIBLE_DEVICES it saw (training itself then runs on the CPU)."""
from __future__ import annotations

import os

import pytest

from recipe.devices import FAKE_GPUS_ENV
from tests.conftest import IRIS, invoke, record, write_config
from tests.stages.test_tune import load_study, make, trials_csv, tune


def _said(r) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(r.stderr.split())


def _pinned_attrs(study) -> dict[int, dict]:
    """The placement each worker process wrote as it joined the study, by worker number."""
    return {v["worker"]: v for k, v in study.user_attrs.items() if k.startswith("recipe:pinned:")}


def test_spawned_workers_start_with_their_own_gpu_visible(tmp_path, monkeypatch):
    """start_workers with a GPU per worker: each spawned process sees exactly its GPU (CUDA_VISIBLE_DEVICES) and
    says so in the study; this process's environment is left as it was."""
    import optuna

    from recipe.config import validate
    from recipe.data import load
    from recipe.stages import tune as T
    from recipe.stages.tune import jobs as W

    cfg = validate({"name": "w", "seed": 0, "data": {"source": "builtin:iris"}, "model": {"kind": "mlp",
                    "hidden": [8]}, "train": {"epochs": 1}})
    cfg._base_dir = tmp_path
    storage = str(tmp_path / "j.log")
    optuna.create_study(study_name="w", storage=T.open_storage(storage), direction="maximize")
    # a budget of 0 trials: each worker joins, writes where it runs, finds the study done and exits
    plan = T.Plan(storage=storage, study_name="w", method="random", trials=0, pruner="none", seed=0, chosen={},
                  space={"train.lr": {"low": 1e-3, "high": 1e-2}}, checkpoints=str(tmp_path), lock=str(tmp_path / "l"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    procs, _ = W.start_workers(cfg, load(cfg), plan, [1, 2], jobs=3, device_name="auto", gpus=["3", "5", "7"])
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5,7"
    pinned = _pinned_attrs(optuna.load_study(study_name="w", storage=T.open_storage(storage)))
    assert {w: (a["gpu"], a["cuda_visible_devices"], a["device"]) for w, a in pinned.items()} == \
        {1: ("5", "5", "cpu"), 2: ("7", "7", "cpu")}


def test_tune_jobs_auto_one_worker_per_fake_gpu_printed_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv(FAKE_GPUS_ENV, "3,5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg, runs = make(tmp_path)
    r = invoke("tune", cfg, "--runs", runs, "--force", "--jobs", "auto", "--trials", "3")
    assert r.exit_code in (0, 1), r
    assert "tune: 2 workers (--jobs auto: one worker per visible GPU (2: 3,5))" in _said(r)
    assert record(runs, "tn", "tune")["jobs"] == {
        "requested": "auto", "jobs": 2, "gpus": ["3", "5"], "reason": "--jobs auto: one worker per visible GPU (2: 3,5)"}
    study = load_study(runs)
    # worker 0 is this process: it trains on cuda:0 of what it sees (GPU 3) and its environment stays unpinned
    for t in study.get_trials():
        w = t.system_attrs["recipe:worker"]
        assert (t.system_attrs["recipe:gpu"], t.system_attrs["recipe:cuda_visible_devices"]) == \
            (("3", None) if w == 0 else ("5", "5")), t.system_attrs
    assert _pinned_attrs(study)[0]["gpu"] == "3" and len(trials_csv(runs)) == 3


def test_tune_cpu_jobs_auto_is_a_worker_per_two_cores(tmp_path, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    cfg, runs = make(tmp_path)
    r = tune(cfg, runs, "--jobs", "auto", "--trials", "2", "--device", "cpu")
    assert r.exit_code in (0, 1), r
    jobs = record(runs, "tn", "tune")["jobs"]
    assert jobs == {"requested": "auto", "jobs": max(1, cores // 2), "gpus": [],
                    "reason": f"--jobs auto: --device cpu: one worker per two usable cores ({cores} usable)"}
    assert all("recipe:gpu" not in t.system_attrs for t in load_study(runs).get_trials())   # nothing pinned


@pytest.mark.slow
def test_tune_three_workers_on_two_fake_gpus_share_round_robin(tmp_path, monkeypatch):
    # trials of about a second: the spawned workers are up (torch imported) long before the budget is met
    monkeypatch.setenv(FAKE_GPUS_ENV, "3,5")
    cfg, runs = make(tmp_path, epochs=60)
    r = invoke("tune", cfg, "--runs", runs, "--force", "--jobs", "3", "--trials", "15")
    assert r.exit_code in (0, 1), r
    assert "--jobs 3 on 2 GPU(s): shared round-robin, worker i on GPU i mod 2 (GPU 3: 2 workers, GPU 5: 1 worker)" \
        in _said(r)
    study = load_study(runs)
    seen = {}
    for t in study.get_trials():
        seen.setdefault(t.system_attrs["recipe:worker"], set()).add(
            (t.system_attrs["recipe:pid"], t.system_attrs["recipe:gpu"], t.system_attrs["recipe:cuda_visible_devices"]))
    assert set(seen) == {0, 1, 2}, seen                      # every worker took trials
    assert seen[0] == {(os.getpid(), "3", None)}
    (p1, *g1), = seen[1]
    (p2, *g2), = seen[2]
    assert g1 == ["5", "5"] and g2 == ["3", "3"] and len({os.getpid(), p1, p2}) == 3


@pytest.mark.slow
def test_regularize_jobs_auto_pins_each_pool_process_to_its_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv(FAKE_GPUS_ENV, "0,1")
    cfg = write_config(tmp_path, IRIS, name="ri")
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch"):
        assert invoke(stage, cfg, "--runs", runs, "-q").exit_code == 0, stage
    r = invoke("regularize", cfg, "--runs", runs, "--jobs", "auto")
    assert r.exit_code in (0, 1), r
    assert "regularize: 2 workers (--jobs auto: one worker per visible GPU (2: 0,1))" in _said(r)
    jobs = record(runs, "ri", "regularize")["jobs"]
    assert (jobs["requested"], jobs["jobs"], jobs["gpus"]) == ("auto", 2, ["0", "1"])
    placements = jobs["workers"]
    assert all(p["cuda_visible_devices"] == p["gpu"] for p in placements), placements
    assert sorted(p["gpu"] for p in placements) == ["0", "1"], placements     # two processes, one GPU each
    assert len({p["pid"] for p in placements}) == 2 and os.getpid() not in {p["pid"] for p in placements}


@pytest.mark.slow
def test_sim_workers_table_for_two_workers_on_postgres(tmp_path):
    """scripts/sim_workers.py, K=2 on a throwaway PostgreSQL: the table's columns, every trial counted, and
    round-trip counts a real tune produces (each trial asks, sets its params and attrs, reports, tells: tens of
    statements, each BEGIN ... COMMIT pair a transaction)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does it)")
    pytest.importorskip("psycopg")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, str(root / "scripts" / "sim_workers.py"), "--workers", "2", "--trials", "6",
                        "--journal", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("load before: ") and lines[-1].startswith("load after: ")
    header = lines[1]
    columns = ["storage", "K", "trials", "trials/min", "s in trial", "statements/trial", "reads/trial",
               "writes/trial", "other/trial", "xacts/trial", "server ms/trial", "lock ms/trial", "hold ms/take",
               "SQL/take", "join stmts/worker", "span s"]
    at = [header.find(c) for c in columns]
    assert -1 not in at and at == sorted(at), header                # every column, in this order
    pg, journal = json.loads(out.read_text())
    assert [lines[2].split()[0], lines[3].split()[0]] == ["postgresql", "journal"]
    assert (pg["storage"], pg["K"], pg["trials"]) == ("postgresql", 2, 6) and (journal["K"], journal["trials"]) == (2, 6)
    for row in (pg, journal):
        assert 0 < row["s in trial"] < row["span s"] and row["trials/min"] == pytest.approx(
            6 / row["span s"] * 60, rel=0.02)
    # every trial: BEGIN/COMMIT around each storage call, so 'other' holds at least two per transaction ...
    assert pg["statements/trial"] == pytest.approx(pg["reads/trial"] + pg["writes/trial"] + pg["other/trial"],
                                                   abs=0.15)
    assert 20 <= pg["statements/trial"] <= 1000 and pg["writes/trial"] >= 5      # ask, params, attrs, tell
    assert 5 <= pg["xacts/trial"] <= pg["statements/trial"] / 2
    assert pg["join stmts/worker"] >= 3 and pg["lock ms/trial"] >= 0 and 0 < pg["server ms/trial"]
    # a take (ask, attributes, parameters) sends tens of statements under the lock, held for longer than 0
    assert 10 <= pg["SQL/take"] <= pg["statements/trial"] and pg["hold ms/take"] > 0 and journal["hold ms/take"] > 0
    assert "statements/trial" not in journal and "SQL/take" not in journal
    assert lines[3].split()[5] == "-"                        # the journal has no server to count
