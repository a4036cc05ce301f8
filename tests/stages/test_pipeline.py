"""Every stage on real digits: exit 0, record passed, artifacts present, numbers sane."""
import json

import pytest

from tests.conftest import check, invoke, record

STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")
ARTIFACTS = {
    "inspect": ["data_report.json", "class_balance.png", "samples.png", "features.png"],
    "baseline": ["baselines.json", "batch.png", "prediction_dynamics.png", "metrics.jsonl"],
    "overfit-batch": ["train_fit.pt", "lr.json", "curves.png", "lr_range.png", "memorize.png"],
    "regularize": ["chosen.yaml", "chosen.json", "ablation.csv", "ablation.png", "chosen.pt"],
    "tune": ["trials.csv", "best.yaml", "tune.json", "top/0.pt", "top/1.pt"],
    "ensemble": ["ensemble.json"],
}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_passes_with_artifacts(pipeline, stage):
    cfg, runs, results = pipeline
    r = results[stage]
    assert r.exit_code == 0, r
    summary = r.json
    assert summary["stage"] == stage and summary["status"] == "passed" and summary["exit_code"] == 0
    rec = record(runs, "digits", stage)
    assert rec["status"] == "passed"
    for rel in ARTIFACTS[stage]:
        assert (runs / "digits" / stage / rel).exists(), rel
        assert rel in rec["artifacts"], rel
    assert set(rec["config_digests"]) >= {"data", "seed"}
    assert rec["data_fingerprint"] and rec["versions"]["python"]
    if stage != "inspect":              # inspect imports no torch at all
        assert rec["versions"]["torch"]


def test_records_chain_upstream_digests(pipeline):
    cfg, runs, _ = pipeline
    from recipe.workspace import Workspace

    ws = Workspace(runs, "digits")
    for i, stage in enumerate(STAGES[1:], 1):
        rec = record(runs, "digits", stage)
        assert list(rec["upstream"]) == list(STAGES[:i])
        for up, digest in rec["upstream"].items():
            assert digest == ws.record_digest(up)


def test_baseline_numbers(pipeline):
    _, runs, _ = pipeline
    rec = record(runs, "digits", "baseline")
    init = check(rec, "baseline.init-loss")
    assert init["status"] == "pass"
    assert abs(init["evidence"]["expected"] - 2.302) < 0.01      # entropy of near-uniform 10-class priors
    base = json.loads((runs / "digits" / "baseline" / "baselines.json").read_text())
    assert base["dumb"]["majority"]["val"] < 0.15
    assert base["dumb"]["linear"]["val"] > 0.9
    for cid in ("baseline.seed", "baseline.input-independent", "baseline.loss-decreases", "baseline.batch-independence",
                "baseline.loss-input", "baseline.grad-flow", "baseline.bias-init"):
        assert check(rec, cid)["status"] == "pass", cid
    assert check(rec, "baseline.gradcheck")["status"] == "skip"   # built-in layers only


def test_overfit_memorizes_and_fits(pipeline):
    _, runs, _ = pipeline
    rec = record(runs, "digits", "overfit-batch")
    memo = check(rec, "overfit.memorize")
    assert memo["status"] == "pass" and memo["evidence"]["final_loss"] <= 0.05
    fit = check(rec, "overfit.train-fit")
    assert fit["evidence"]["train_score"] > fit["evidence"]["best_dumb_val"]
    lr = json.loads((runs / "digits" / "overfit-batch" / "lr.json").read_text())
    assert lr["used"] > 0 and lr["recommended"] > 0


def test_regularize_table_and_choice(pipeline):
    _, runs, _ = pipeline
    d = runs / "digits" / "regularize"
    chosen = json.loads((d / "chosen.json").read_text())
    assert len(chosen["val"]) == 2                       # two seeds: the delta comes with its noise
    rows = (d / "ablation.csv").read_text().splitlines()
    assert rows[0].startswith("variant,seeds,train_mean,train_std,val_mean,val_std,delta,kept")
    names = [r.split(",")[0] for r in rows[1:]]
    assert names[:4] == ["reference", "dropout", "weight_decay", "early_stopping"]
    rec = record(runs, "digits", "regularize")
    assert check(rec, "regularize.beats-baselines")["status"] == "pass"


def test_tune_and_ensemble(pipeline):
    _, runs, _ = pipeline
    t = json.loads((runs / "digits" / "tune" / "tune.json").read_text())
    assert t["states"]["complete"] == 3 and len(t["top"]) == 2
    assert (runs / "digits" / "tune" / "trials.csv").read_text().count("\n") == 4
    rec = record(runs, "digits", "ensemble")
    test = check(rec, "ensemble.test")
    assert test["evidence"]["test_score"] >= 0.9
    lo, hi = test["evidence"]["ci95"]
    assert lo <= test["evidence"]["test_score"] <= hi


def test_test_split_is_looked_at_once(pipeline, tmp_path):
    import shutil

    cfg, runs, _ = pipeline
    before = (runs / "digits" / "ensemble" / "record.json").read_text()
    r = invoke("ensemble", cfg, "--runs", runs, "-o", "ensemble.method=average")    # other models: a new look
    assert r.exit_code == 3, r
    assert "already evaluated" in r.stderr and "config changed since that look" in r.stderr and "--force" in r.stderr
    assert (runs / "digits" / "ensemble" / "record.json").read_text() == before   # nothing lost
    # an unchanged rerun rebuilds the same models: the recorded look is reported again, not a new one
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    r = invoke("ensemble", cfg, "--runs", copy, "-q")
    assert r.exit_code == 0, r
    old, new = json.loads(before), record(copy, "digits", "ensemble")
    assert new["test_looks"] == old["test_looks"] == 1 and new["test_reused"]["look"] == 0
    assert new["metrics"]["test"] == old["metrics"]["test"]


def test_status_lists_every_stage(pipeline):
    cfg, runs, _ = pipeline
    r = invoke("status", cfg, "--runs", runs, "--json")
    assert r.exit_code == 0
    assert [(s["stage"], s["state"]) for s in r.json["stages"]] == [(s, "passed") for s in STAGES]
