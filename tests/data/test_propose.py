"""`recipe init DIR --data FILE`: the proposed config names target, task, dropped columns and missing-value
handling, and passes `recipe inspect` on that file without edits when the data is clean."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from tests.conftest import invoke, record


def wine_table(path, with_nan: bool = True):
    """sklearn's wine measurements (real data) as a user's CSV: an ID, a date, a free-text note, string labels."""
    from sklearn.datasets import load_wine

    d = load_wine()
    n = len(d.target)
    cols = {"sample_id": pa.array(np.arange(1000, 1000 + n))}
    for j, name in enumerate(d.feature_names):
        values = d.data[:, j].tolist()
        if with_nan and j == 0:
            values[5] = None
        cols[name] = pa.array(values, pa.float64())
    cols["measured_on"] = pa.array([f"2024-03-{1 + i % 28:02d}" for i in range(n)])
    cols["lab_note"] = pa.array([f"sample {i} measured by the night shift team" for i in range(n)])
    cols["cultivar"] = pa.array([["barolo", "grignolino", "barbera"][t] for t in d.target])
    pacsv.write_csv(pa.table(cols), path)
    return path


def test_init_from_data_proposes_a_config_that_inspect_accepts(tmp_path):
    data = wine_table(tmp_path / "wine.csv")
    r = invoke("init", tmp_path / "exp", "--data", data)
    assert r.exit_code == 0, r
    assert "target 'cultivar' (classification), 13 features, data.missing: impute" in r.stderr
    assert "dropped 'sample_id': one distinct value per row, counting up: an identifier" in r.stderr
    assert "dropped 'measured_on': a date/time (date32[day])" in r.stderr
    assert "dropped 'lab_note': free text" in r.stderr
    cfg_path = tmp_path / "exp" / "exp.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["data"]["source"] == "../wine.csv" and cfg["data"]["target"] == "cultivar"
    assert cfg["task"] == "classification" and cfg["data"]["missing"] == "impute"
    assert "sample_id" not in cfg["data"]["features"] and len(cfg["data"]["features"]) == 13
    r = invoke("inspect", cfg_path, "--runs", tmp_path / "runs")
    assert r.exit_code == 0, r
    assert record(tmp_path / "runs", "exp", "inspect")["status"] == "passed"


def test_init_from_data_guesses_the_target_and_infers_regression(tmp_path):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    cols = {name: pa.array(d.data[:, j]) for j, name in enumerate(d.feature_names)}
    cols["progression"] = pa.array(d.target)
    pacsv.write_csv(pa.table(cols), tmp_path / "diabetes.csv")
    r = invoke("init", tmp_path / "exp", "--data", tmp_path / "diabetes.csv")
    assert r.exit_code == 0, r
    assert "target 'progression' (regression), 10 features, data.missing: fail" in r.stderr
    assert "guessed from the column names; pass --target COL" in r.stderr
    cfg = yaml.safe_load((tmp_path / "exp" / "exp.yaml").read_text())
    assert "features" not in cfg["data"] and "stratify" not in cfg["data"]["split"]


def test_init_from_data_refuses_bad_input_and_writes_nothing(tmp_path):
    data = wine_table(tmp_path / "wine.csv")
    r = invoke("init", tmp_path / "exp", "--data", data, "--target", "cultivr")
    assert r.exit_code == 2 and "target column 'cultivr' not found (--target); did you mean 'cultivar'?" in r.stderr
    assert not (tmp_path / "exp").exists()
    r = invoke("init", tmp_path / "exp", "--data", tmp_path / "nope.csv")
    assert r.exit_code == 2 and "nope.csv: no such file (--data)" in r.stderr
    r = invoke("init", tmp_path / "exp", "--target", "cultivar")
    assert r.exit_code == 2 and "--target goes with --data" in r.stderr
