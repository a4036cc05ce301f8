"""data.memory_budget and the in-memory / stream decision (recipe/data/streaming.py): sizes parsed, the default
budget from the available RAM, the size estimates from Parquet metadata and a CSV's first block, and the
decision printed and recorded by a stage."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from recipe.config import load as load_config
from recipe.config.schema import Config
from recipe.config.sizes import parse_size
from recipe.data import streaming
from recipe.errors import ConfigError
from tests.conftest import invoke, record


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """sklearn digits as Parquet (row groups of 200 rows) and as CSV."""
    root = tmp_path_factory.mktemp("digits")
    frame = load_digits(as_frame=True).frame
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), root / "digits.parquet", row_group_size=200)
    frame.to_csv(root / "digits.csv", index=False)
    return root


def _cfg(root, source, budget=None, **data):
    cfg = Config.model_validate({"name": "s", "data": {"source": source, "target": "target",
                                                        "memory_budget": budget, **data}})
    cfg._base_dir = root
    return cfg


def test_sizes_parse_in_powers_of_1000_and_1024():
    assert parse_size("2GB") == 2_000_000_000
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5 gib") == int(1.5 * 2**30)
    assert parse_size("1000") == 1000


def test_a_bad_budget_names_its_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {source: builtin:iris, memory_budget: lots}\n")
    with pytest.raises(ConfigError, match=r"data\.memory_budget.*'512MB'"):
        load_config(path)
    path.write_text("name: x\ndata: {source: builtin:iris, memory_budget: -5}\n")
    with pytest.raises(ConfigError, match=r"data\.memory_budget.*> 0"):
        load_config(path)


def test_default_budget_is_half_the_available_ram(digits_files):
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    limit, origin = streaming.budget(_cfg(digits_files, "digits.parquet"))
    assert "50% of available RAM" in origin
    assert abs(limit - available / 2) < 0.1 * available      # RAM moves between the two reads


def test_parquet_estimate_comes_from_the_footer(digits_files):
    rows, features, need = streaming.estimate([digits_files / "digits.parquet"], _cfg(digits_files, "x"))
    assert (rows, features) == (1797, 64)
    # 65 int64 columns as read, plus the float32 matrix and its split copies
    assert need == 1797 * 65 * 8 + 2 * 1797 * 64 * 4


def test_csv_estimate_scales_the_first_block(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60_000, 10)).round(4)
    path = tmp_path / "big.csv"
    np.savetxt(path, np.column_stack([x, rng.integers(0, 2, 60_000)]), delimiter=",", fmt="%.4f",
               header=",".join([f"f{i}" for i in range(10)] + ["target"]), comments="")
    assert path.stat().st_size > 2 * streaming.CSV_HEAD_BYTES        # the estimate really extrapolates
    rows, features, need = streaming.csv_size(path, _cfg(tmp_path, "big.csv"))
    true = pa.csv.read_csv(path).nbytes
    assert abs(rows - 60_000) < 600 and features == 10
    assert abs(need - true) < 0.02 * true


def test_the_decision_and_its_reason(digits_files):
    small = streaming.decide(_cfg(digits_files, "digits.parquet", "100KB"))
    assert small.mode == "stream" and small.budget == 100_000 and small.budget_from == "data.memory_budget"
    assert "1797 rows x 64 features" in small.reason and "over the budget of 100 KB" in small.reason
    roomy = streaming.decide(_cfg(digits_files, "digits.csv", "1GB"))
    assert roomy.mode == "memory" and "fits the budget" in roomy.reason
    builtin = streaming.decide(_cfg(digits_files, "builtin:digits", "1KB"))
    assert builtin.mode == "memory" and builtin.estimate is None and "not a CSV/Parquet" in builtin.reason


def test_a_stage_prints_and_records_the_decision(digits_files, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"name: s\ndata: {{source: {digits_files / 'digits.parquet'}, target: target}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    assert r.exit_code in (0, 1), r
    assert "data: in memory" in r.stderr and "fits the budget (1797 rows x 64 features)" in r.stderr
    rec = record(tmp_path / "runs", "s", "inspect")
    assert rec["data_loading"]["mode"] == "memory" and rec["data_loading"]["rows"] == 1797
    report = json.loads((tmp_path / "runs" / "s" / "inspect" / "data_report.json").read_text())
    assert report["loading"]["mode"] == "memory"


# ----------------------------------------------------------------------------- inspect on streamed data

STREAMED_CHECKS = ("data.load", "data.non-finite", "data.constant", "data.duplicates", "data.leak",
                   "data.label-conflict", "data.imbalance", "data.split-shift", "data.order", "data.size")
IN_MEMORY_ONLY = ("data.scale", "data.outliers", "data.signal", "data.label-noise", "data.images")


def _inspect(tmp_path, source, budget, name):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"name: {name}\ndata: {{source: {source}, target: target, memory_budget: {budget}}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    return r, record(tmp_path / "runs", name, "inspect")


def _by_id(rec):
    return {c["id"]: c for c in rec["checks"]}


def test_streamed_inspect_judges_like_the_in_memory_one(digits_files, tmp_path):
    r, streamed = _inspect(tmp_path, digits_files / "digits.parquet", "100KB", "s")
    _, in_memory = _inspect(tmp_path, digits_files / "digits.parquet", "10GB", "m")
    assert r.exit_code == 0, r
    assert "data: streamed from disk" in r.stderr
    assert streamed["data_loading"]["mode"] == "stream" and "over the budget of 100 KB" in \
        streamed["data_loading"]["reason"]
    s, m = _by_id(streamed), _by_id(in_memory)
    for cid in STREAMED_CHECKS:
        assert s[cid]["status"] == m[cid]["status"], cid
    assert s["data.constant"]["evidence"]["examples"] == m["data.constant"]["evidence"]["examples"]
    assert s["data.non-finite"]["evidence"]["checked_rows"] == 1797
    assert s["data.imbalance"]["evidence"]["counts"] == m["data.imbalance"]["evidence"]["counts"]
    # a check that needs the matrix is a skip that says why, and the stage does not count it as passed
    for cid in IN_MEMORY_ONLY:
        assert s[cid]["status"] == "skip" and "streamed (over data.memory_budget)" in s[cid]["title"], cid
    assert m["data.scale"]["status"] == "pass" and m["data.signal"]["status"] == "pass"
    passed = [c for c in streamed["checks"] if c["status"] == "pass"]
    assert len(passed) == len(STREAMED_CHECKS) and f"({len(passed)} pass" in " ".join(r.stderr.split())
    report = json.loads((tmp_path / "runs" / "s" / "inspect" / "data_report.json").read_text())
    assert report["loading"]["mode"] == "stream" and report["fingerprint"] == streamed["data_fingerprint"]
    assert np.allclose(report["train_feature_mean"], json.loads(
        (tmp_path / "runs" / "m" / "inspect" / "data_report.json").read_text())["train_feature_mean"])


def test_streamed_inspect_catches_planted_nan_rows_and_copies_across_splits(tmp_path):
    """Planted: 7 rows with NaN cells and 250 copied rows. Streamed, data.non-finite and data.leak fail
    with the counts the in-memory inspect finds."""
    frame = load_digits(as_frame=True).frame
    frame = pd.concat([frame, frame.iloc[:250]], ignore_index=True)
    frame = frame.astype({c: "float64" for c in frame.columns if c != "target"})
    frame.loc[[3, 40, 41, 500, 900, 1200, 1700], "pixel_0_3"] = np.nan
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "bad.parquet", row_group_size=300)
    _, streamed = _inspect(tmp_path, tmp_path / "bad.parquet", "100KB", "s")
    _, in_memory = _inspect(tmp_path, tmp_path / "bad.parquet", "10GB", "m")
    assert streamed["data_loading"]["mode"] == "stream" and in_memory["data_loading"]["mode"] == "memory"
    s, m = _by_id(streamed), _by_id(in_memory)
    assert s["data.non-finite"]["status"] == m["data.non-finite"]["status"] == "fail"
    nan_rows = sum(v["rows"] for k, v in s["data.non-finite"]["evidence"].items() if isinstance(v, dict))
    assert nan_rows == 7 and s["data.non-finite"]["evidence"] == m["data.non-finite"]["evidence"]
    assert s["data.leak"]["status"] == m["data.leak"]["status"] == "fail"
    for key in ("val_in_train", "test_in_train", "worst_fraction", "train_repeat_rate"):
        assert s["data.leak"]["evidence"][key] == m["data.leak"]["evidence"][key], key
    assert s["data.duplicates"]["evidence"]["copied_rows"] == m["data.duplicates"]["evidence"]["copied_rows"] > 0
    assert streamed["status"] == "failed"
