"""Config settings reach every run: health thresholds, train.precision in every forward pass, data.augment only
where regularize kept it; every run leaves metrics.jsonl and its health checks in the stage's record."""
from __future__ import annotations

import json
import re
import traceback
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import check, invoke, record, write_config

STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")
HEALTH = {"health.non-finite", "health.exploding", "health.vanishing", "health.dead-units", "health.saturation",
          "health.update-ratio", "health.loss-curve", "health.symmetry"}

CONFIG = """\
name: {name}
seed: 0
data: {{source: builtin:iris, augment: [noise]}}
model: {{kind: mlp, hidden: [32]}}
train: {{lr: 1.0e-2, batch_size: 16, epochs: 12, precision: bf16}}
overfit: {{samples: 16, steps: 150}}
regularize: {{seeds: 2, ladder: [augment, fewer_features, dropout]}}
tune: {{trials: 2}}
ensemble: {{top_k: 2, seeds: 1, distill: true}}
checks:
  health.update-ratio: {{high: 1.0e-9, severity: warn, reason: "planted: every run's updates exceed this"}}
  ensemble.gain: {{severity: warn, reason: "iris: 22 val rows"}}
  ensemble.test: {{severity: warn, reason: "iris: 22 test rows"}}
  regularize.beats-baselines: {{severity: warn, reason: "iris: the linear baseline can tie"}}
  tune.improves: {{severity: warn, reason: "2 trials"}}
"""

# forward passes that are not model evaluations: the output-shape probe of every new model, the thread policy's
# multiply-accumulate count (recipe/threads.py), and baseline's numerical checks of the model as built
# (gradcheck runs in float64 on purpose)
EXEMPT = ("_check_output_shape", "macs_per_sample", "check_gradcheck", "check_batch_independence", "check_grad_flow",
          "check_loss_input", "check_init_loss", "check_bias_init", "_loss")


@pytest.fixture(scope="module")
def spied(tmp_path_factory):
    """All six stages and `recipe predict`, recording every fit call and every forward pass outside autocast."""
    from recipe.engine import train as E
    from recipe import models

    root = tmp_path_factory.mktemp("settings")
    cfg = write_config(root, CONFIG, name="iris")
    runs = root / "runs"
    fits, plain = [], set()
    real_fit, real_build = E.fit, models.build

    def fit(*args, **kwargs):
        path = kwargs.get("metrics_path")
        fits.append({"run": Path(path).parent.name if path else None, "augment": kwargs.get("augment") is not None,
                     "stack": [f.name for f in traceback.extract_stack()],
                     "thresholds": kwargs.get("health_thresholds"), "precision": kwargs.get("precision")})
        return real_fit(*args, **kwargs)

    def hook(module, args):
        if not torch.is_autocast_enabled("cpu"):
            names = [f.name for f in traceback.extract_stack()]
            if not any(n in EXEMPT for n in names):
                plain.add(" > ".join(n for n in names if not n.startswith("_") or n in ("_fit_one", "_memorize"))[-160:])

    def build(*args, **kwargs):
        m = real_build(*args, **kwargs)
        m.register_forward_pre_hook(hook)
        return m

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "fit", fit)
        mp.setattr(models, "build", build)
        results = {s: invoke(s, cfg, "--runs", runs, "-q") for s in STAGES}
        np_rows = root / "rows.csv"
        np_rows.write_text("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n")
        results["predict"] = invoke("predict", cfg, np_rows, "--runs", runs, "--json")
    return cfg, runs, results, fits, plain


def test_all_stages_ran(spied):
    _, _, results, _, _ = spied
    for stage, r in results.items():
        assert r.exit_code == 0, (stage, r)


def test_health_thresholds_reach_every_fit(spied):
    _, runs, _, fits, _ = spied
    assert fits and all((f["thresholds"] or {}).get("health.update-ratio") for f in fits), \
        [f["run"] for f in fits if not (f["thresholds"] or {}).get("health.update-ratio")]
    for stage in ("baseline", "overfit-batch"):
        ur = check(record(runs, "iris", stage), "health.update-ratio")
        assert ur["evidence"]["high"] == 1e-9 and ur["status"] == "warn", (stage, ur)    # fail, capped at warn


def test_precision_reaches_every_forward_pass(spied):
    _, _, _, fits, plain = spied
    assert {f["precision"] for f in fits} == {"bf16"}
    assert not plain, sorted(plain)


def test_reference_is_unregularized_and_augmentation_follows_regularize(spied):
    _, runs, _, fits, _ = spied
    by_run = {f["run"]: f["augment"] for f in fits if f["run"]}
    assert by_run["train_fit_config"] is False
    assert by_run["reference_seed0"] is False and by_run["reference_seed1"] is False
    assert by_run["augment_seed0"] is True and by_run["dropout_seed0"] is False
    fit = json.loads((runs / "iris" / "overfit-batch" / "train_fit.json").read_text())
    assert fit["overrides"]["data.augment"] == []
    chosen = yaml.safe_load((runs / "iris" / "regularize" / "chosen.yaml").read_text())
    kept_augment = bool(chosen["data.augment"])
    trials = [f for f in fits if f["run"] and f["run"].startswith("iris-")]
    assert trials and all(f["augment"] is kept_augment for f in trials)


def test_every_run_writes_its_curve(spied):
    _, runs, _, fits, _ = spied
    d = runs / "iris"
    expected = ["overfit-batch/runs/memorize", "overfit-batch/runs/train_fit_config", "regularize/runs/reference_seed0",
                "regularize/runs/augment_seed1", "regularize/runs/dropout_seed0", "tune/study/runs/iris-*-0", "baseline/runs/zero_input",
                "ensemble/runs/seed_1", "ensemble/runs/student", "baseline/runs/seed_run1", "baseline/runs/seed_run2"]
    for rel in expected:
        found = sorted(d.glob(rel + "/metrics.jsonl"))
        assert len(found) == 1, rel
        path = found[0]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        epochs = [r for r in rows if "epoch" in r]
        assert epochs and all({"train_loss", "step"} <= set(r) for r in epochs), rel
        if "memorize" not in rel and "seed_run" not in rel:   # memorize and baseline.seed's runs have no val split
            assert all(len(r["val_per_class"]) == 3 and "val_accuracy" in r for r in epochs), rel
        assert any("epoch" not in r for r in rows), rel     # lines at the logged steps too
    assert [f["stack"] for f in fits if f["run"] is None] == []          # no training run goes without one


def test_health_of_every_run_is_kept(spied):
    _, runs, _, _, _ = spied
    names = {"regularize": r"^(reference|augment|fewer_features|dropout|chosen|.+\+.+).* seed \d+$",
             "tune": r"^trial \d+$", "ensemble": r"^(student|best config, seed 1)$"}
    for stage, pattern in names.items():
        rows = {r["id"]: r for r in record(runs, "iris", stage)["health"]}
        assert set(rows) == HEALTH, stage
        ur = rows["health.update-ratio"]      # the planted threshold: every run's updates are above it
        assert ur["worst"] == "warn" and ur["runs"].get("warn", 0) >= 2, (stage, ur)
        assert all(re.match(pattern, r["run"]) for r in rows.values()), (stage, [r["run"] for r in rows.values()])


def test_report_plots_every_stage_curves(spied):
    cfg, runs, _, _, _ = spied
    r = invoke("report", cfg, "--runs", runs, "--json")
    assert r.exit_code == 0, r
    html = Path(r.json["report"]).read_text()
    assert html.count("Every run's curve") == 5                        # baseline .. ensemble; inspect trains none
    assert "regularize run curves" in html and "Health of every run" in html
