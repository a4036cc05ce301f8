"""A test-only task, `ordinal`, registered by one class here, runs through `recipe inspect` and `recipe baseline`.

Ordered classes (0 < 1 < ... < 4): the network learns them with cross-entropy as classification does, but the
score is accuracy within one class (predicting 3 for a 2 counts). Nothing outside this module names it: the
config says `task: ordinal`, the registry hands the stages this object, and the record shows its metric.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recipe import tasks
from recipe.tasks.classification import Classification
from tests.conftest import check, invoke, record, write_config

CLASSES = 5


@pytest.fixture
def ordinal():
    @tasks.register
    class Ordinal(Classification):
        """Ordered classes: cross-entropy to learn, accuracy within one class to judge."""
        name = "ordinal"
        metric = "within_one"
        metric_label = "accuracy within one class"

        def row_score(self, out, y):
            return ((out.argmax(1) - y).abs() <= 1).double()

        def score(self, out, y, num_classes=0):
            s = super().score(out, y, num_classes)
            within = float(self.row_score(out, y).mean()) if len(y) else float("nan")
            return {**s, "score": within, "within_one": within}

        def dumb_models(self, seed):
            models = super().dumb_models(seed)
            for m in models.values():     # sklearn's .score is plain accuracy: judge them as the network is
                m.score = lambda x, y, m=m: float(np.mean(np.abs(m.predict(x) - y) <= 1))
            return models

    yield tasks.get("ordinal")
    tasks.unregister("ordinal")


def _ordered_npz(path, n=900, seed=0):
    """Five ordered bins of a noisy linear score: neighbours are easy to confuse, far classes are not."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    score = x @ np.array([1.0, -0.8, 0.6, 0.0, 0.3, 0.0]) + 0.3 * rng.normal(size=n)
    y = np.digitize(score, np.quantile(score, [0.2, 0.4, 0.6, 0.8])).astype(int)
    np.savez(path, x=x, y=y)


CONFIG = """\
name: {name}
seed: 0
task: ordinal
data: {{source: d.npz}}
model: {{kind: mlp, hidden: [64]}}
train: {{lr: 3.0e-3, batch_size: 64, epochs: 10}}
"""


def test_the_toy_task_scores_within_one_class(ordinal):
    out = torch.tensor([[5.0, 0, 0, 0, 0], [0, 0, 0, 5.0, 0], [0, 0, 0, 0, 5.0]])
    y = torch.tensor([0, 2, 1])
    s = ordinal.score(out, y, CLASSES)
    assert s["score"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(1 / 3)
    assert ordinal.name in tasks.names() and tasks.get("ordinal") is ordinal


# data loading and inspect need no change either: the data reads class ids as classes (ds.has_classes), and the
# network's targets come from the task (Dataset.target -> Task.network_target)
def test_the_toy_task_runs_through_inspect_and_baseline(ordinal, tmp_path):
    _ordered_npz(tmp_path / "d.npz")
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, CONFIG, name="ord")
    r = invoke("inspect", cfg, "--runs", runs)
    assert r.exit_code == 0, r
    assert record(runs, "ord", "inspect")["checks"]
    r = invoke("baseline", cfg, "--runs", runs, "--json")
    rec = record(runs, "ord", "baseline")
    statuses = {c["id"]: c["status"] for c in rec["checks"]}
    assert r.exit_code == 0, (r, statuses)
    for cid in ("baseline.seed", "baseline.init-loss", "baseline.bias-init", "baseline.loss-input",
                "baseline.batch-independence", "baseline.grad-flow", "baseline.dumb", "baseline.input-independent",
                "baseline.loss-decreases"):
        assert statuses[cid] == "pass", (cid, check(rec, cid))
    dumb = check(rec, "baseline.dumb")["evidence"]
    assert dumb["metric"] == "accuracy within one class"
    # five balanced bins: a constant guess is right for 1/5 of rows, within one for 2/5 (an end class) or 3/5
    assert 0.35 < dumb["majority"]["val"] < 0.65 and dumb["linear"]["val"] > 0.95
    init = check(rec, "baseline.init-loss")["evidence"]
    assert init["expected"] == pytest.approx(np.log(CLASSES), abs=0.01)     # balanced bins: entropy ln 5
    assert init["uniform_guess"] == pytest.approx(np.log(CLASSES), abs=1e-4)
    import json

    baselines = json.loads((runs / "ord" / "baseline" / "baselines.json").read_text())
    assert baselines["task"] == "ordinal" and baselines["metric"] == "within_one"
    assert baselines["skeleton"]["val_score"] > 0.9
    curve = [json.loads(line) for line in (runs / "ord" / "baseline" / "metrics.jsonl").read_text().splitlines()]
    epochs = [row for row in curve if "val_within_one" in row]
    assert len(epochs) == baselines["skeleton"]["epochs"] and "val_accuracy" not in epochs[0]
