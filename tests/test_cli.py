"""The command line as a shell or Makefile sees it: exit codes, stdout JSON, fast start-up, signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe.checks import CATALOG
from tests.conftest import IRIS, invoke, record, write_config

ROOT = Path(__file__).resolve().parents[1]


def py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["checks"], ["schema"]])
def test_commands_that_train_nothing_import_no_torch(args, tmp_path):
    code = ("import sys, time; t = time.perf_counter()\n"
            "from typer.testing import CliRunner\nfrom recipe.cli import app\n"
            f"r = CliRunner().invoke(app, {args!r})\n"
            "print(r.exit_code, 'torch' in sys.modules, 'sklearn' in sys.modules, round(time.perf_counter() - t, 3))")
    out = py(code).stdout.split()
    assert out[:3] == ["0", "False", "False"], out


def test_help_answers_fast():
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "recipe", "--help"], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    assert r.returncode == 0 and "overfit-batch" in r.stdout
    assert elapsed < 1.5, elapsed     # half a second on a warm machine; CI machines are slower


def test_checks_lists_the_catalog():
    r = invoke("checks", "--json")
    ids = [c["id"] for c in r.json]
    assert ids == list(CATALOG)
    assert {"data.leak", "baseline.batch-independence", "tune.boundary", "health.non-finite"} <= set(ids)


def test_schema_is_json_schema():
    s = invoke("schema").json
    assert s["type"] == "object" and {"data", "model", "train", "tune"} <= set(s["properties"])


def test_init_writes_starter_and_refuses_to_overwrite(tmp_path):
    r = invoke("init", tmp_path / "proj")
    assert r.exit_code == 0, r
    cfg = tmp_path / "proj" / "proj.yaml"
    assert cfg.exists() and (tmp_path / "proj" / "recipe.mk").exists()
    from recipe.config import load

    assert load(cfg).name == "proj"
    r = invoke("init", tmp_path / "proj")
    assert r.exit_code == 2 and "already exists" in r.stderr


def test_json_goes_to_stdout_only(tmp_path):
    cfg = write_config(tmp_path, IRIS)
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["stage"] == "inspect" and d["status"] == "passed"
    assert "inspect checks" in r.stderr


def test_two_search_flags_is_usage_error(tmp_path):
    cfg = write_config(tmp_path, IRIS)
    r = invoke("tune", cfg, "--runs", tmp_path / "runs", "--tpe", "--grid-search")
    assert r.exit_code == 2 and "choose one" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_record_says_interrupted(tmp_path, sig):
    cfg = write_config(tmp_path, IRIS.replace("epochs: 30", "epochs: 100000"))
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    assert invoke("baseline", cfg, "--runs", runs).exit_code == 0     # its skeleton run is capped at 10 epochs
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "recipe", "overfit-batch", str(cfg), "--runs", str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    rec_path = runs / "exp" / "overfit-batch" / "record.json"
    deadline = time.time() + 60
    while time.time() < deadline and not (rec_path.exists() and "interrupted" in rec_path.read_text()):
        time.sleep(0.2)
    time.sleep(3)        # inside the training loop by now
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    rec = record(runs, "exp", "overfit-batch")
    assert rec["status"] == "interrupted" and rec.get("finished")
