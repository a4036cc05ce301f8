"""No trap around the sealed test (issue 17 item 4): a rerun that rebuilds the same models reuses the recorded
look instead of needing --force, a changed model is refused before any work, and nothing fails after test
was opened for a reason val already knew (the last part: tests/stages/test_ensemble.py, same-model members)."""
import json

import pytest

from recipe.config import load
from recipe.stages.ensemble import reuse as R
from recipe.workspace import Workspace, stage_state
from tests.conftest import check, invoke, record
from tests.stages.test_sealed_test import _tuned, tuned  # noqa: F401 (fixtures: iris up to tune, no look yet)


def _looks(runs):
    return json.loads((runs / "iris" / "test_looks.json").read_text())


@pytest.fixture
def looked(tuned, monkeypatch):
    """One scored look on record; `opened` counts every later call of Dataset.open_test."""
    from recipe.data import Dataset

    shared, runs = tuned
    cfg = runs.parent / "iris.yaml"          # a copy: the tests edit it
    cfg.write_text(shared.read_text())
    r = invoke("ensemble", cfg, "--runs", runs, "-q")
    assert r.exit_code == 0, r
    opened = []
    real = Dataset.open_test
    monkeypatch.setattr(Dataset, "open_test", lambda self, why: opened.append(why) or real(self, why))
    return cfg, runs, opened


def test_a_severity_override_reuses_the_recorded_look_without_force(looked):
    cfg, runs, opened = looked
    first = record(runs, "iris", "ensemble")
    d = runs / "iris" / "ensemble"
    figure = (d / "confusion.png").read_bytes()
    # a change that cannot alter the shipped model: the reason of ensemble.gain's cap, and a cap of ensemble.distill
    cfg.write_text(cfg.read_text().replace("ship the best", "ship the best single model") +
                   '  ensemble.distill: {severity: warn, reason: "not distilling"}\n')
    state, why = stage_state(Workspace(runs, "iris"), "ensemble", load(cfg, []).model_dump(mode="json"))
    assert state == "stale" and "checks.ensemble.distill" in why[0]                # ensemble is stale...
    r = invoke("ensemble", cfg, "--runs", runs)                                 # ...and reruns without --force
    assert r.exit_code == 0, r
    assert opened == []                                                         # test was not opened again
    rec = record(runs, "iris", "ensemble")
    assert rec["test_looks"] == 1 and rec["second_look"] is False and rec["test_reused"]["look"] == 0
    assert rec["metrics"]["test"] == first["metrics"]["test"]                   # bit for bit
    assert rec["metrics"]["test_ci95"] == first["metrics"]["test_ci95"]
    assert rec["status"] == "passed" and not rec.get("force_history")
    t = check(rec, "ensemble.test")
    assert "recorded result of look 1" in t["title"] and "test not opened again" in t["title"]
    assert t["evidence"]["reused_look"]["look"] == 0 and t["evidence"]["looks_before"] == 0
    assert "reused: same models, no new look" in rec["summary"]
    assert "gain judged on log-loss and accuracy" in rec["summary"]     # the metric the verdict used
    assert (d / "confusion.png").read_bytes() == figure and "confusion.png" in rec["artifacts"]
    looks = _looks(runs)
    assert [k["status"] for k in looks] == ["scored"] and len(looks[0]["reused_at"]) == 1


def test_a_change_to_the_model_is_refused_before_any_work_and_names_what_changed(looked):
    cfg, runs, opened = looked
    before = (runs / "iris" / "ensemble" / "record.json").read_text()
    r = invoke("ensemble", cfg, "--runs", runs, "-o", "ensemble.top_k=1")
    assert r.exit_code == 3, r
    assert "already evaluated" in r.stderr and "cannot be reused: config changed since that look" in r.stderr
    assert "--force" in r.stderr and opened == []
    assert (runs / "iris" / "ensemble" / "record.json").read_text() == before
    # past the gate, content decides: iris's members are one model, so top_k=1 rebuilds the models already scored
    r = invoke("ensemble", cfg, "--runs", runs, "-o", "ensemble.top_k=1", "--force", "-q")
    assert r.exit_code == 0, r
    assert opened == [] and record(runs, "iris", "ensemble")["test_reused"]["look"] == 0
    # a student is a new model: a new, counted look
    r = invoke("ensemble", cfg, "--runs", runs, "-o", "ensemble.distill=true", "--force", "-q")
    assert r.exit_code == 0, r
    assert len(opened) == 1 and [k["status"] for k in _looks(runs)] == ["scored", "scored"]
    rec = record(runs, "iris", "ensemble")
    assert rec["second_look"] is True and rec["test_looks"] == 2 and "test_reused" not in rec


def test_same_inputs_but_other_weights_are_refused_before_test_is_opened(looked, monkeypatch):
    cfg, runs, opened = looked
    real = R.state_digest
    monkeypatch.setattr(R, "state_digest", lambda model: real(model) + "x")     # as if training were nondeterministic
    r = invoke("ensemble", cfg, "--runs", runs)
    assert r.exit_code == 3, r
    assert "did not rebuild the same models" in r.stderr and "test split was not opened" in r.stderr
    assert opened == [] and len(_looks(runs)) == 1
    assert record(runs, "iris", "ensemble")["status"] == "failed"


def test_a_tampered_recorded_result_is_never_reused(looked):
    cfg, runs, opened = looked
    path = runs / "iris" / "test_results" / "0" / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "score": 1.0}))
    r = invoke("ensemble", cfg, "--runs", runs)
    assert r.exit_code == 3, r
    assert "recorded result of look 1 was modified or removed" in r.stderr and opened == []


def test_inputs_ignore_severity_and_reason_but_not_thresholds(tmp_path):
    from recipe.workspace import Workspace

    ws = Workspace(tmp_path, "x")
    base = {"seed": 0, "model": {"kind": "mlp"}, "ensemble": {"top_k": 2}, "checks": {}}
    capped = {**base, "checks": {"ensemble.gain": {"severity": "warn", "reason": "r"}}}
    assert R.inputs(base, ws) == R.inputs(capped, ws)
    tuned = {**base, "checks": {"health.exploding": {"reason": "r", "loss_factor": 20}}}
    assert R.changed(R.inputs(base, ws), R.inputs(tuned, ws)) == ["config"]
    assert R.changed(R.inputs(base, ws), R.inputs({**base, "ensemble": {"top_k": 3}}, ws)) == ["config"]
    assert R.changed(None, R.inputs(base, ws)) == ["the look was recorded without input digests"]
