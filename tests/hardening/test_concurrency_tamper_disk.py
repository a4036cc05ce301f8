"""Two processes on one run folder, tampered artifacts, and a full disk: refuse clearly, keep earlier work intact."""
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe.errors import LockedError, RecipeError
from recipe.workspace import Workspace, atomic_write_bytes, file_digest
from tests.conftest import IRIS, invoke, record, write_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _recipe(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recipe", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ----------------------------------------------------------------------------- locks


def test_exclusive_lock_refuses_a_second_holder_naming_its_pid(tmp_path):
    ws = Workspace(tmp_path / "runs", "exp")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from recipe.workspace import Workspace\n"
        f"ws = Workspace(Path({str(tmp_path / 'runs')!r}), 'exp')\n"
        "with ws.lock():\n    print('held', flush=True); time.sleep(60)\n")], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for shared in (False, True):
            with pytest.raises(LockedError) as e:
                with ws.lock(shared=shared):
                    pass
            assert f"pid {holder.pid}" in str(e.value) and str(ws.dir) in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    with ws.lock():            # the kernel dropped the dead holder's lock
        pass


def test_shared_locks_coexist_but_exclude_a_stage(tmp_path):
    ws = Workspace(tmp_path / "runs", "exp")
    with ws.lock(shared=True), ws.lock(shared=True):        # tune workers share their study by design
        with pytest.raises(LockedError):
            with ws.lock(shared=False):
                pass


def test_second_stage_on_same_run_folder_exits_2_at_once(tmp_path):
    cfg = write_config(tmp_path, IRIS.replace("epochs: 30", "epochs: 100000"))
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    first = _recipe("baseline", cfg, "--runs", runs, "-o", "train.max_seconds=60")
    try:
        rec = runs / "exp" / "baseline" / "record.json"
        deadline = time.time() + 120
        while time.time() < deadline and not (rec.exists() and f'"pid": {first.pid}' in rec.read_text()):
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()
        start = time.perf_counter()
        second = invoke("inspect", cfg, "--runs", runs)
        elapsed = time.perf_counter() - start
        assert second.exit_code == 2, second
        message = " ".join(second.stderr.split())
        assert f"pid {first.pid}" in message and "another recipe process" in message
        assert elapsed < 30          # it refuses at once rather than waiting for the first run
        assert record(runs, "exp", "inspect")["status"] == "passed"      # the refused run touched nothing
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------- tampering


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path: Path, marker: Path) -> None:
    payload = _RunsCode()
    payload.marker = marker
    path.write_bytes(pickle.dumps({"state_dict": payload}))


def test_checkpoint_that_runs_code_is_refused_directly(tmp_path):
    from recipe.engine.train import load_checkpoint

    ckpt, marker = tmp_path / "model.pt", tmp_path / "pwned"
    _evil_pickle(ckpt, marker)
    with pytest.raises(RecipeError) as e:
        load_checkpoint(ckpt)
    assert "model.pt" in str(e.value) and "refusing" in str(e.value)
    assert not marker.exists()


@pytest.mark.slow
def test_ensemble_refuses_a_tampered_tune_checkpoint(tmp_path):
    cfg = write_config(tmp_path, IRIS + "checks: {{regularize.beats-baselines: {{severity: warn, reason: test}}}}\n")
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch", "regularize", "tune"):
        r = invoke(stage, cfg, "--runs", runs)
        assert r.exit_code in (0, 1), (stage, r)
    top = sorted((runs / "exp" / "tune" / "top").glob("*.pt"))
    assert top
    marker = tmp_path / "pwned"
    for ckpt in top:
        _evil_pickle(ckpt, marker)
    r = invoke("ensemble", cfg, "--runs", runs)           # the gate names the edited file first
    assert r.exit_code == 3 and "modified" in r.stderr and ".pt" in r.stderr, r
    r = invoke("ensemble", cfg, "--runs", runs, "--force")  # past the gate, loading still refuses to unpickle
    assert r.exit_code == 2, r
    assert "refusing to load checkpoint" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    assert not marker.exists()
    assert record(runs, "exp", "ensemble")["status"] == "failed"


def test_artifact_edited_after_record_is_named_by_gate_and_status(experiment):
    cfg, runs = experiment
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    report = runs / "exp" / "inspect" / "data_report.json"
    data = json.loads(report.read_text())
    data["class_priors"] = [1.0, 0.0, 0.0]
    report.write_text(json.dumps(data))
    st = {s["stage"]: s for s in invoke("status", cfg, "--runs", runs, "--json").json["stages"]}
    assert st["inspect"]["state"] == "stale"
    assert any("data_report.json" in why and "modified" in why for why in st["inspect"]["reasons"])
    r = invoke("baseline", cfg, "--runs", runs)
    assert r.exit_code == 3 and "data_report.json" in r.stderr


def test_record_corrupted_by_hand_reads_as_missing(experiment):
    cfg, runs = experiment
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    (runs / "exp" / "inspect" / "record.json").write_text('{"stage": "inspect", "status": "pas')
    r = invoke("baseline", cfg, "--runs", runs)
    assert r.exit_code == 3 and "recipe inspect" in r.stderr


# ----------------------------------------------------------------------------- disk full


def test_atomic_write_failure_names_path_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    atomic_write_bytes(target, b"old")

    def full(fd):       # a full disk often surfaces only when the data is flushed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RecipeError) as e:
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.undo()
    assert str(target) in str(e.value) and "No space left" in str(e.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]       # no temp file left behind


def _limit_file_size(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails with EFBIG instead
    return preexec


def test_disk_full_during_stage_exits_nonzero_naming_path_earlier_work_intact(tmp_path):
    cfg = write_config(tmp_path, IRIS)
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    before = {p: file_digest(p) for p in (runs / "exp" / "inspect").rglob("*") if p.is_file()}
    # baseline writes its record first (small), then artifacts; a 4 KiB file-size limit stops the larger ones
    p = _recipe("baseline", cfg, "--runs", runs, preexec_fn=_limit_file_size(4096))
    out, err = p.communicate(timeout=600)
    assert p.returncode not in (0, 130), err
    assert "Traceback" not in err, err
    message = " ".join(err.split())
    assert "cannot write" in message and str(runs / "exp" / "baseline") in message, message
    assert {p: file_digest(p) for p in (runs / "exp" / "inspect").rglob("*") if p.is_file()} == before
    assert record(runs, "exp", "inspect")["status"] == "passed"
    rec = Workspace(runs, "exp").read_record("baseline")
    assert rec is None or rec["status"] in ("failed", "interrupted")
    st = {s["stage"]: s["state"] for s in invoke("status", cfg, "--runs", runs, "--json").json["stages"]}
    assert st["inspect"] == "passed" and st["baseline"] != "passed"
    assert invoke("baseline", cfg, "--runs", runs).exit_code == 0      # space back: the rerun passes
