"""Shared fixtures: small but real experiments on sklearn's digits, run through the real CLI."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recipe import threads

threads.configure_env()     # as `recipe` itself does, before torch is imported: the suite runs on busy machines

from recipe.cli import app

# digits with a small MLP and tiny budgets: every stage runs for real in a few seconds
FAST = """\
name: {name}
seed: 0
data:
  source: builtin:digits
  shape: [1, 8, 8]
model: {{kind: mlp, hidden: [128, 128]}}
train: {{lr: 1.0e-3, batch_size: 64, epochs: 15}}
overfit: {{samples: 16, steps: 150}}
regularize: {{seeds: 2, ladder: [dropout, weight_decay, early_stopping]}}
tune: {{trials: 3}}
ensemble: {{top_k: 2}}
checks:
  ensemble.gain: {{severity: warn, reason: "3 tuned trials on 270 val rows: no gain can be shown beyond noise"}}
"""


# iris (150 rows) for tests of the gate and the CLI: the stages run in about a second each
IRIS = """\
name: {name}
seed: 0
data: {{source: builtin:iris}}
model: {{kind: mlp, hidden: [32]}}
train: {{lr: 1.0e-2, batch_size: 16, epochs: 30}}
overfit: {{samples: 16, steps: 150}}
regularize: {{seeds: 2, ladder: [dropout, weight_decay]}}
tune: {{trials: 2}}
ensemble: {{top_k: 2}}
"""


class Result:
    def __init__(self, r):
        self.exit_code, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr
        self.exception = r.exception

    @property
    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"<exit {self.exit_code}>\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-4000:]}"


def invoke(*args: str) -> Result:
    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r)


def write_config(folder: Path, text: str = FAST, name: str = "exp", **fmt) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).format(name=name, **fmt))
    return path


def record(runs: Path, name: str, stage: str) -> dict:
    return json.loads((runs / name / stage / "record.json").read_text())


def check(rec: dict, check_id: str) -> dict:
    return next(c for c in rec["checks"] if c["id"] == check_id)


def run_stages(cfg: Path, runs: Path, stages, may_fail=("ensemble",)) -> None:
    """Run stages in order; those in may_fail may end with exit 1 (a failed check), the rest must pass."""
    for stage in stages:
        r = invoke(stage, cfg, "--runs", runs, "-q")
        assert r.exit_code in (0, 1) if stage in may_fail else r.exit_code == 0, (stage, r)


@pytest.fixture
def cli():
    return invoke


@pytest.fixture
def experiment(tmp_path):
    """A fresh fast iris config and its runs folder."""
    cfg = write_config(tmp_path, IRIS)
    return cfg, tmp_path / "runs"


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """All six stages run once on the fast digits config; tests read what they wrote."""
    root = tmp_path_factory.mktemp("pipeline")
    cfg = write_config(root, name="digits")
    runs = root / "runs"
    results = {}
    for stage in ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble"):
        results[stage] = invoke(stage, cfg, "--runs", runs, "--json")
    return cfg, runs, results
