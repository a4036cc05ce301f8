"""The sealed test split fails closed (issue 16 item 1) and a distilled student ships only when checked (item 7)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipe.stages import ensemble as S
from recipe.stages.ensemble import stage as ES
from tests.conftest import check, invoke, record, run_stages, write_config
from tests.stages.test_ensemble import IRIS_OK, STAGES

ROOT = Path(__file__).resolve().parents[2]

# runs `recipe ensemble` in a child process that SIGKILLs itself right after the look is on disk
KILL_AFTER_LOOK = """
import os, signal, sys
import recipe.stages.ensemble.sealed_test as T
recorded = T.record_look
def record_then_die(ctx, ds):
    recorded(ctx, ds)
    os.kill(os.getpid(), signal.SIGKILL)
T.record_look = record_then_die
from recipe.cli import main
sys.argv = ["recipe"] + sys.argv[1:]
main()
"""


@pytest.fixture(scope="module")
def _tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("sealed")
    cfg = write_config(root, IRIS_OK, name="iris")
    runs = root / "runs"
    run_stages(cfg, runs, STAGES[:-1], may_fail=())
    return cfg, runs


@pytest.fixture
def tuned(_tuned, tmp_path):
    """iris up to tune, a fresh copy of its runs folder per test (no look at test yet)."""
    cfg, runs = _tuned
    shutil.copytree(runs, tmp_path / "runs")
    return cfg, tmp_path / "runs"


def test_sigkill_after_the_look_leaves_it_recorded_and_the_rerun_needs_force(tuned):
    cfg, runs = tuned
    ledger = runs / "iris" / "test_looks.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_LOOK, "ensemble", str(cfg), "--runs", str(runs), "-q"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    looks = json.loads(ledger.read_text())
    assert len(looks) == 1 and looks[0]["status"] == "opened" and "test_score" not in looks[0]
    d = runs / "iris" / "ensemble"
    assert not (d / "confusion.png").exists() and not (d / "ensemble.json").exists()   # look first, artifacts after
    r = invoke("ensemble", cfg, "--runs", runs)
    assert r.exit_code == 3, r
    assert "ended before it recorded a score" in r.stderr and "--force" in r.stderr
    r = invoke("ensemble", cfg, "--runs", runs, "--force", "-q")
    assert r.exit_code in (0, 1), r
    looks = json.loads(ledger.read_text())
    assert [k["status"] for k in looks] == ["opened", "scored"] and looks[1]["forced"] is True
    rec = record(runs, "iris", "ensemble")
    assert rec["second_look"] is True and rec["test_looks"] == 2
    assert "second look" in check(rec, "ensemble.test")["title"]


def test_the_look_is_on_disk_before_the_test_rows_are_handed_out(tuned, monkeypatch):
    from recipe.data import Dataset

    cfg, runs = tuned
    ledger = runs / "iris" / "test_looks.json"
    seen = []
    real_open = Dataset.open_test

    def spy(self, reason):
        seen.append(json.loads(ledger.read_text()) if ledger.exists() else None)
        return real_open(self, reason)

    monkeypatch.setattr(Dataset, "open_test", spy)
    assert invoke("ensemble", cfg, "--runs", runs, "-q").exit_code in (0, 1)
    assert seen and seen[0] is not None and seen[0][-1]["status"] == "opened"


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', "[1, 2]"])
def test_corrupt_ledger_refuses_naming_the_file_and_force_keeps_it(tuned, content):
    cfg, runs = tuned
    ledger = runs / "iris" / "test_looks.json"
    ledger.write_text(content)
    r = invoke("ensemble", cfg, "--runs", runs)
    assert r.exit_code == 3, r
    assert "test_looks.json" in r.stderr and "cannot tell whether the test split was already evaluated" in r.stderr
    assert not (runs / "iris" / "ensemble" / "record.json").exists()     # refused before anything ran
    r = invoke("ensemble", cfg, "--runs", runs, "--force", "-q")
    assert r.exit_code in (0, 1), r
    kept = list(ledger.parent.glob("test_looks.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == content
    looks = json.loads(ledger.read_text())
    assert [k["status"] for k in looks] == ["unknown", "scored"]
    assert record(runs, "iris", "ensemble")["second_look"] is True


def test_unreadable_ledger_is_never_no_looks(tmp_path):
    from recipe.stages.ensemble import sealed_test as T

    path = tmp_path / "test_looks.json"
    assert T.read_looks(path) == []                       # only a missing file means "never looked"
    path.mkdir()
    with pytest.raises(T.UnreadableLedger) as e:
        T.read_looks(path)
    assert e.value.exit_code == 3 and str(path) in str(e.value)


# ----------------------------------------------------------------------------- item 7: the student is checked


def _logits(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_student_worse_beyond_noise_does_not_ship():
    y = torch.tensor([0, 1] * 100)
    good = _logits([[0.9, 0.1], [0.1, 0.9]] * 100)          # right on every row
    bad = _logits([[0.9, 0.1], [0.9, 0.1]] * 100)           # wrong on every class-1 row
    c = S.check_student(bad, good, "ensemble", y, "classification", 2, seed=0)
    assert c.id == "ensemble.distill" and c.status == "warn"
    assert "the ensemble ships" in c.title and c.evidence["shortfall"]["lower_bound_95"] > 0
    c = S.check_student(good, good, "best_single", y, "classification", 2, seed=0)
    assert c.status == "pass" and "the student ships" in c.title
    # one row worse in 200 is within noise
    close = _logits([[0.9, 0.1], [0.1, 0.9]] * 99 + [[0.9, 0.1], [0.9, 0.1]])
    assert S.check_student(close, good, "ensemble", y, "classification", 2, seed=0).status == "pass"


def test_regression_student_is_judged_on_squared_error():
    y = torch.linspace(-1, 1, 200)
    c = S.check_student(y[:, None] + 1.0, y, "ensemble", y, "regression", 0, seed=0)
    assert c.status == "warn" and c.evidence["shortfall"]["unit"].startswith("squared error")
    g = torch.Generator().manual_seed(0)
    replaced = y + 0.3 * torch.randn(200, generator=g)
    student = y + 0.3 * torch.randn(200, generator=g)        # as good, different errors: within noise
    assert S.check_student(student[:, None], replaced, "ensemble", y, "regression", 0, seed=0).status == "pass"


def test_a_broken_student_is_not_shipped_and_the_stage_says_why(tuned, monkeypatch):
    cfg, runs = tuned
    real = S.distill

    def broken(cfg, ctx, ds, best, members, weights):
        student, info = real(cfg, ctx, ds, best, members, weights)
        with torch.no_grad():
            for p in student.parameters():
                p.zero_()                                  # predicts one class for every row
        return student, info

    monkeypatch.setattr(ES, "distill", broken)   # the name the stage calls
    r = invoke("ensemble", cfg, "--runs", runs, "-o", "ensemble.distill=true", "-q")
    assert r.exit_code in (0, 1), r
    art = json.loads((runs / "iris" / "ensemble" / "ensemble.json").read_text())
    rec = record(runs, "iris", "ensemble")
    verdict = check(rec, "ensemble.distill")
    assert verdict["status"] == "warn" and "ships" in verdict["title"]
    assert art["final"] in ("ensemble", "best_single") and art["student"]["shipped"] is False
    assert art["final_reason"].startswith("ensemble.distill:") and art["student"]["not_shipped_because"]
    assert check(rec, "ensemble.test")["evidence"]["final_model"] == art["final"]


def test_predict_refuses_an_ensemble_that_failed_on_more_than_gain(tuned, tmp_path):
    cfg, runs = tuned
    invoke("ensemble", cfg, "--runs", runs, "-q")
    path = runs / "iris" / "ensemble" / "record.json"
    rec = json.loads(path.read_text())
    rec["status"] = "failed"
    rec["checks"] = [c | ({"status": "fail"} if c["id"] == "ensemble.test" else {}) for c in rec["checks"]]
    path.write_text(json.dumps(rec))
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n")
    r = invoke("predict", cfg, rows, "--runs", runs)
    assert r.exit_code == 3, r
    assert "ensemble failed (ensemble.test)" in r.stderr
    # a failed ensemble.gain alone still serves the best single model it shipped
    rec["checks"] = [c | {"status": "fail" if c["id"] == "ensemble.gain" else "pass"} for c in rec["checks"]]
    path.write_text(json.dumps(rec))
    r = invoke("predict", cfg, rows, "--runs", runs)
    assert r.exit_code == 0, r
