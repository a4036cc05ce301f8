"""data.memory_budget and the in-memory / stream decision (recipe/data/streaming.py): sizes parsed, the default
budget from the available RAM, the size estimates from Parquet metadata and a CSV's first block, and the
decision printed and recorded by a stage."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from recipe.config import load as load_config
from recipe.config.schema import Config, parse_size
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
