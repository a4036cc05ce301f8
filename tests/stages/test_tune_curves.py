"""Every tune run leaves its curve: stacked trials (tune.batch) and tune.noise's seed reruns write metrics.jsonl
where an unbatched trial writes it, line for line what the study recorded, and `recipe report` draws them."""
from __future__ import annotations

import math

import pytest

from recipe.engine.runlog import read_metrics
from tests.conftest import invoke
from tests.stages.test_tune import load_study, make, trials_csv, tune


def test_stacked_trials_write_the_curve_the_study_recorded(tmp_path):
    space = "{train.lr: {low: 1.0e-5, high: 3.0e-2, log: true}}"
    cfg, runs = make(tmp_path, space=space, epochs=8)
    r = tune(cfg, runs, "--pruner", "asha", "--trials", "8", "-o", "tune.batch=8")
    assert r.exit_code in (0, 1), r
    study = load_study(runs)
    rows = {int(x["number"]): x for x in trials_csv(runs)}
    trials = study.get_trials()
    assert [t.system_attrs.get("recipe:stacked") for t in trials] == [8] * 8     # all eight in one stack
    assert any(t.state.name == "PRUNED" for t in trials)
    folder = runs / "tn" / "tune" / "study" / "runs"
    for t in trials:
        epochs, steps = read_metrics(folder / f"{study.study_name}-{t.number}" / "metrics.jsonl")
        # one line per epoch the trial trained, a pruned trial's file ends at the epoch it was pruned
        assert [e["epoch"] for e in epochs] == list(range(1, int(rows[t.number]["epochs"]) + 1))
        # the pruner's value is the val score less a 1e-9 loss tie-break (tune/asha.py rung_value)
        assert {e["epoch"]: e["val_score"] for e in epochs} == pytest.approx(t.intermediate_values, abs=1e-8)
        assert all(len(e["val_per_class"]) == 10 and math.isfinite(e["val_loss"]) for e in epochs)
        assert steps and all(s["train_loss"] > 0 for s in steps)
        if t.state.name == "COMPLETE":    # restore-best is off (no early stopping): the value is the last epoch's
            assert float(rows[t.number]["val"]) == pytest.approx(epochs[-1]["val_score"])
    # tune.noise's seed reruns (stacked too) leave theirs in tune/runs/
    noise = sorted(p.parent.name for p in (runs / "tn" / "tune" / "runs").glob("*/metrics.jsonl"))
    assert noise and all(n.startswith("noise-") for n in noise)
    for name in noise:
        epochs, _ = read_metrics(runs / "tn" / "tune" / "runs" / name / "metrics.jsonl")
        assert [e["epoch"] for e in epochs] == list(range(1, 9))
    # recipe report draws every one of them
    from recipe.report import _run_curves

    html, n = _run_curves(runs / "tn" / "tune")
    assert n == 1 and f"curves of {8 + len(noise)} run(s)" in html
    assert invoke("report", cfg, "--runs", runs).exit_code == 0
