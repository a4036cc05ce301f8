"""Planted regularize runs end to end: a choice that fails to replicate is not shipped, contradictory rungs are
not combined, a noisy task is not called high bias, and Ctrl-C keeps the finished runs for the rerun."""
from __future__ import annotations

import json
import shlex

import numpy as np
import yaml

from tests.conftest import IRIS, check, invoke, record, write_config


def _upstream(tmp_path, text, name):
    cfg = write_config(tmp_path, text, name=name)
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch"):
        r = invoke(stage, cfg, "--runs", runs, "-q")
        assert r.exit_code == 0, (stage, r)
    return cfg, runs


def test_a_choice_that_does_not_replicate_is_not_shipped(tmp_path, monkeypatch):
    from recipe.stages import regularize as R

    # planted: on the ladder's seeds every rung and every combination "wins"; on fresh seeds only single rungs do
    def planted(a, b):
        if a.name.startswith("chosen ("):
            return b.name == "reference" and "+" not in a.name
        return True

    monkeypatch.setattr(R, "beats", planted)
    text = IRIS.replace("ladder: [dropout, weight_decay]", "ladder: [smaller_model, larger_model, dropout]")
    cfg, runs = _upstream(tmp_path, text, "rep")
    r = invoke("regularize", cfg, "--runs", runs, "-q")
    assert r.exit_code in (0, 1), r
    d = runs / "rep" / "regularize"
    rec = record(runs, "rep", "regularize")
    ladder = check(rec, "regularize.ladder")
    ev = ladder["evidence"]
    assert set(ev["kept"]) == {"smaller_model", "larger_model", "dropout"}
    assert "+" in ev["best"] and "dropout" in ev["best"], ev
    single = ev["kept"][0]
    # the combination failed on fresh seeds: the best single rung, which replicated, ships instead
    assert ev["chosen"] == single and ev["verified"] is True
    assert list(ev["did_not_replicate"]) == [f"chosen ({ev['best']})"]
    assert "did not replicate on fresh seeds" in ladder["title"] and f"shipping {single} instead" in ladder["title"]
    chosen = json.loads((d / "chosen.json").read_text())
    assert chosen["variant"] == single
    # smaller_model and larger_model are never trained together
    combos = json.loads((d / "ablation.json").read_text())["combination"]
    assert not any("smaller_model" in c["variant"] and "larger_model" in c["variant"] and "skipped" not in c
                   for c in combos), combos
    assert any(c.get("skipped") == "contradictory rungs: same axis (model size)" for c in combos), combos


def test_nothing_replicates_so_the_reference_ships(tmp_path, monkeypatch):
    from recipe.stages import regularize as R

    monkeypatch.setattr(R, "beats", lambda a, b: a.name == "dropout" and b.name == "reference")
    text = IRIS.replace("ladder: [dropout, weight_decay]", "ladder: [dropout]")
    cfg, runs = _upstream(tmp_path, text, "norep")
    r = invoke("regularize", cfg, "--runs", runs, "-q")
    assert r.exit_code in (0, 1), r
    ladder = check(record(runs, "norep", "regularize"), "regularize.ladder")
    assert ladder["status"] == "warn", ladder
    assert ladder["title"].startswith("kept dropout; chosen (dropout) did not replicate on fresh seeds")
    assert "shipping the reference instead" in ladder["title"]
    assert ladder["evidence"]["chosen"] == "reference" and ladder["evidence"]["verified"] is False
    chosen = yaml.safe_load((runs / "norep" / "regularize" / "chosen.yaml").read_text())
    assert chosen.get("model.dropout", 0) == 0 and not chosen.get("train.weight_decay")


def test_noisy_labels_near_the_reachable_error_are_not_high_bias(tmp_path):
    from sklearn.datasets import make_classification

    # 45% of labels redrawn at random: no model gets far past 0.7 on val, however big
    x, y = make_classification(800, 8, n_informative=5, n_classes=3, flip_y=0.45, class_sep=1.5, random_state=0)
    np.savez(tmp_path / "noisy.npz", x=x.astype(np.float32), y=y)
    text = """\
name: {name}
seed: 0
data: {{source: noisy.npz}}
model: {{kind: mlp, hidden: [16]}}
train: {{lr: 1.0e-2, batch_size: 32, epochs: 8}}
overfit: {{samples: 16, steps: 200}}
regularize: {{seeds: 2, ladder: [dropout]}}
checks:
  data.label-noise: {{severity: warn, reason: "planted: the labels are noisy"}}
  overfit.train-fit: {{severity: warn, reason: "noisy labels cap train fit"}}
"""
    cfg, runs = _upstream(tmp_path, text, "noisy")
    r = invoke("regularize", cfg, "--runs", runs, "-q")
    assert r.exit_code in (0, 1), r
    bv = check(record(runs, "noisy", "regularize"), "regularize.bias-variance")
    ev = bv["evidence"]
    assert ev["target_error"] > 0.2 and ev["target_error_source"] != "regularize.target_error", ev
    assert ev["verdict"] not in ("high bias", "both"), bv
    assert f"estimated from the {ev['target_error_source']}" in bv["title"]
    # against target error 0 (the old verdict) the same train error is avoidable bias: "high bias"
    assert ev["train_error"] > ev["high_bias"], ev


def test_ctrl_c_keeps_finished_runs_and_the_rerun_reuses_them(tmp_path, monkeypatch):
    from recipe.stages import regularize_trainer as T

    text = IRIS.replace("ladder: [dropout, weight_decay]", "ladder: [dropout, weight_decay]")
    cfg, runs = _upstream(tmp_path, text, "ctrlc")
    real, calls = T._fit_one, []

    def interrupted(*a, **k):       # Ctrl-C during the fourth run: three are finished
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "_fit_one", interrupted)
    r = invoke("regularize", cfg, "--runs", runs, "-o", "regularize.budget_seconds=900")
    assert r.exit_code == 130, r
    assert record(runs, "ctrlc", "regularize")["status"] == "interrupted"
    assert len(list((runs / "ctrlc" / "regularize" / "cache").glob("*.pt"))) == 3
    out = " ".join(r.stderr.split())
    assert "3 finished runs are kept in" in out, out
    command = out.split("Continue with: ", 1)[1]
    expected = f"recipe regularize {cfg.resolve()} -o regularize.budget_seconds=900.0 --runs {runs}"
    assert command.startswith(expected), command
    # the exact command continues: the three finished runs are reused, the rest trained
    monkeypatch.setattr(T, "_fit_one", real)
    r = invoke(*shlex.split(expected)[1:], "-q")
    assert r.exit_code == 0, r
    rec = record(runs, "ctrlc", "regularize")
    assert rec["metrics"]["reused_runs"] == 3 and rec["metrics"]["runs"] >= 6, rec["metrics"]
    assert "(3 reused from an earlier run)" in rec["summary"]
    assert check(rec, "regularize.ladder")["evidence"]["reused_runs"] == 3
    # content decides reuse: a stronger weight decay changes only the weight_decay rung's runs (retrained), and
    # the reference and dropout runs (4) come back from disk
    runs_before = rec["metrics"]["runs"]
    r = invoke("regularize", cfg, "--runs", runs, "-q", "--force", "-o", "train.weight_decay=0.01")
    assert r.exit_code in (0, 1), r
    rec = record(runs, "ctrlc", "regularize")
    wd = next(v for v in json.loads((runs / "ctrlc" / "regularize" / "ablation.json").read_text())["table"]
              if v["variant"] == "weight_decay")
    assert wd["overrides"] == {"train.weight_decay": 0.01}
    assert rec["metrics"]["reused_runs"] >= 4 and rec["metrics"]["reused_runs"] <= rec["metrics"]["runs"] - 2, \
        (rec["metrics"], runs_before)
