"""Messy tables: categories, string and sparse labels, missing values, booleans, dates and text (DESIGN §3 data.*)."""
import csv
import json
import re

import numpy as np
import pytest

from recipe.config import load as load_config
from recipe.data import load as load_data
from recipe.errors import DataError
from tests.conftest import check, invoke, record, write_config
from tests.data.penguins import CONFIG, ISLANDS, SPECIES, write_penguins


def _config(folder, source="data.csv", extra="", name="t", **data):
    keys = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in data.items())
    text = f"name: {name}\nseed: 0\n{extra}data:\n  source: {source}\n{keys}"
    return write_config(folder, text.replace("{", "{{").replace("}", "}}"), name=name)


def _dataset(folder, **data):
    return load_data(load_config(_config(folder, **data)))


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------- categories


def test_string_columns_one_hot_with_levels_from_train_only(tmp_path):
    _csv(tmp_path / "train.csv", ["color", "x", "label"], [[("red", "blue")[i % 2], i, i % 2] for i in range(30)])
    _csv(tmp_path / "val.csv", ["color", "x", "label"],
         [["red", 1, 0], ["green", 2, 1], ["green", 3, 0], ["blue", 4, 1]])
    ds = load_data(load_config(write_config(tmp_path, "name: t\ndata: {{train: train.csv, val: val.csv}}\n")))
    assert ds.feature_names == ["color=blue", "color=red", "x"]
    assert ds.encoding["categorical"] == {"color": ["blue", "red"]}     # green is only in val: not a level
    assert ds.encoding["unseen"] == {"val:color": 2}
    green = ds.val.x[1]
    assert green[:2].tolist() == [0.0, 0.0] and green[2] == 2.0          # an unseen level is all-zero, not NaN
    assert ds.val.x[0, :2].tolist() == [0.0, 1.0]


def test_unseen_levels_reported_by_inspect(tmp_path):
    _csv(tmp_path / "train.csv", ["color", "x", "label"], [[("red", "blue")[i % 2], i % 7, i % 2] for i in range(40)])
    _csv(tmp_path / "val.csv", ["color", "x", "label"], [[("red", "pink")[i % 2], i % 5, i % 2] for i in range(10)])
    cfg = write_config(tmp_path, "name: t\ndata: {{train: train.csv, val: val.csv}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    assert r.exit_code in (0, 1), r
    report = json.loads((tmp_path / "runs" / "t" / "inspect" / "data_report.json").read_text())
    assert report["encoding"]["unseen"] == {"val:color": 5}


def test_too_many_levels_names_column_and_keys(tmp_path):
    _csv(tmp_path / "data.csv", ["zip", "x", "label"], [[f"Z{i}", i % 3, i % 2] for i in range(60)])
    with pytest.raises(DataError) as e:
        _dataset(tmp_path, max_categories=20)
    msg = str(e.value)
    assert "'zip'" in msg and "data.max_categories=20" in msg and "data.features" in msg
    ds = _dataset(tmp_path, max_categories=60)                 # raising the cap accepts it
    assert len([n for n in ds.feature_names if n.startswith("zip=")]) == len(ds.encoding["categorical"]["zip"])


def test_numeric_text_column_stays_numeric(tmp_path):
    (tmp_path / "data.csv").write_text("a,label\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(30)) + "unknown,1\n")
    with pytest.raises(DataError) as e:       # 'unknown' is not a null marker: the column mixes numbers and text
        _dataset(tmp_path)
    assert "'a'" in str(e.value) and "mixes numbers and text" in str(e.value) and "'unknown'" in str(e.value)


def test_boolean_columns_become_0_1(tmp_path):
    _csv(tmp_path / "data.csv", ["flag", "x", "label"], [[("true", "false")[i % 3 == 0], i, i % 2] for i in range(30)])
    ds = _dataset(tmp_path)
    col = ds.feature_names.index("flag")
    assert set(np.unique(ds.train.x[:, col]).tolist()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- labels


def test_string_labels_mapping_recorded(tmp_path):
    _csv(tmp_path / "data.csv", ["x", "label"], [[i, ("cat", "dog", "emu")[i % 3]] for i in range(60)])
    ds = _dataset(tmp_path)
    assert ds.task == "classification" and ds.classes == ["cat", "dog", "emu"]
    assert ds.encoding["labels"] == ["cat", "dog", "emu"]
    x_of = {int(x): int(y) for x, y in zip(ds.train.x[:, 0], ds.train.y)}
    assert all(y == x % 3 for x, y in x_of.items())


def test_non_contiguous_integer_labels_are_reindexed(tmp_path):
    _csv(tmp_path / "data.csv", ["x", "label"], [[i, (3, 7, 10)[i % 3]] for i in range(60)])
    ds = _dataset(tmp_path)
    assert ds.classes == [3, 7, 10] and ds.num_outputs == 3
    assert set(np.unique(ds.train.y).tolist()) == {0, 1, 2}


@pytest.mark.slow
def test_label_mapping_reused_by_every_stage(tmp_path):
    rng = np.random.default_rng(0)
    xz = rng.normal(size=(90, 2)).round(3)
    _csv(tmp_path / "data.csv", ["x", "z", "label"], [[x, z, "b" if x + z > 0 else "a"] for x, z in xz])
    cfg = _config(tmp_path, extra="model: {kind: mlp, hidden: [8]}\ntrain: {epochs: 5}\n")
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    r = invoke("baseline", cfg, "--runs", runs)
    assert r.exit_code in (0, 1), r
    report = json.loads((runs / "t" / "inspect" / "data_report.json").read_text())
    assert report["classes"] == ["a", "b"] and report["encoding"]["labels"] == ["a", "b"]
    # baseline reloads the data; its fingerprint covers the mapping, so a different mapping would be stale
    assert record(runs, "t", "baseline")["data_fingerprint"] == record(runs, "t", "inspect")["data_fingerprint"]


def test_missing_labels_name_rows(tmp_path):
    (tmp_path / "data.csv").write_text("x,label\n" + "".join(f"{i},{('a', 'b')[i % 2]}\n" for i in range(30)) + "5,\n")
    with pytest.raises(DataError) as e:
        _dataset(tmp_path)
    assert "'label'" in str(e.value) and "missing labels" in str(e.value)


# ----------------------------------------------------------------------------- missing values


def _holes(tmp_path):
    rows = [[float(i), float(i % 5), ("p", "q")[i % 2], i % 2] for i in range(60)]
    for r in (3, 10, 41):
        rows[r][0] = ""
    rows[7][2] = ""
    return _csv(tmp_path / "data.csv", ["a", "b", "kind", "label"], rows)


def test_missing_fail_reports_rows_and_columns(tmp_path):
    _holes(tmp_path)
    cfg = _config(tmp_path)
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    assert r.exit_code == 1, r
    nf = check(record(tmp_path / "runs", "t", "inspect"), "data.non-finite")
    assert nf["status"] == "fail" and "data.missing: impute" in nf["advice"]
    flagged = {c for split in nf["evidence"].values() if isinstance(split, dict) for c in split.get("columns", [])}
    assert "a" in flagged
    rows = sorted(r for split in nf["evidence"].values() if isinstance(split, dict)
                  for r in split.get("example_rows", []))
    assert set(rows) <= {3, 7, 10, 41} and {3, 10, 41} & set(rows)


def test_impute_uses_train_statistics_only(tmp_path):
    _holes(tmp_path)
    ds = _dataset(tmp_path, missing="impute")
    for split in (ds.train, ds.val, ds.raw_test()):
        assert np.isfinite(split.x).all()
    a = ds.feature_names.index("a")
    observed_train = [float(r) for r in ds.train.rows if r not in (3, 10, 41)]
    assert ds.encoding["imputed"]["a"] == pytest.approx(np.median(observed_train))
    assert ds.encoding["imputed"]["kind"] in ("p", "q")
    holes = [i for i, r in enumerate(ds.train.rows) if r in (3, 10, 41)]
    assert all(ds.train.x[i, a] == pytest.approx(ds.encoding["imputed"]["a"]) for i in holes)


def test_all_missing_column_in_train_is_refused_under_impute(tmp_path):
    _csv(tmp_path / "data.csv", ["a", "b", "label"], [["", i, i % 2] for i in range(30)])
    with pytest.raises(DataError) as e:
        _dataset(tmp_path, missing="impute")
    assert "'a'" in str(e.value) and "no value" in str(e.value) and "data.features" in str(e.value)


# ----------------------------------------------------------------------------- refused columns


@pytest.mark.parametrize("cells, needle", [
    (lambda i: f"2024-02-{i % 28 + 1:02d}", "date"),
    (lambda i: f"2024-02-{i % 28 + 1:02d}T10:{i % 60:02d}:00", "date"),
    (lambda i: f"{i % 12 + 1}/{i % 28 + 1}/24", "date"),
    (lambda i: f"Mar {i % 28 + 1}, 2024", "date"),
    (lambda i: f"this was a quite long remark number {i}", "free text"),
])
def test_dates_and_free_text_refused_naming_column_and_key(tmp_path, cells, needle):
    _csv(tmp_path / "data.csv", ["when", "x", "label"], [[cells(i), i, i % 2] for i in range(40)])
    with pytest.raises(DataError) as e:
        _dataset(tmp_path)
    msg = str(e.value)
    assert "'when'" in msg and needle in msg and "data.features" in msg and "data.csv" in msg
    ds = _dataset(tmp_path, features=["x"])          # dropping it as the message says works
    assert ds.feature_names == ["x"]


def test_short_categories_with_spaces_are_not_free_text(tmp_path):
    _csv(tmp_path / "data.csv", ["city", "x", "label"],
         [[("New York", "Los Angeles", "San Jose")[i % 3], i, i % 2] for i in range(40)])
    ds = _dataset(tmp_path)
    assert ds.encoding["categorical"]["city"] == ["Los Angeles", "New York", "San Jose"]


def test_bom_header_is_stripped(tmp_path):
    (tmp_path / "data.csv").write_bytes("\ufeffa,label\n".encode() + b"".join(f"{i},{i % 2}\n".encode()
                                                                             for i in range(30)))
    assert _dataset(tmp_path).feature_names == ["a"]


# ----------------------------------------------------------------------------- penguins


def test_penguins_needs_exactly_the_impute_line(tmp_path):
    write_penguins(tmp_path / "penguins.csv")
    runs = tmp_path / "runs"
    strict = write_config(tmp_path, CONFIG, name="strict", extra="")
    r = invoke("inspect", strict, "--runs", runs)
    assert r.exit_code == 1, r
    assert check(record(runs, "strict", "inspect"), "data.non-finite")["status"] == "fail"
    cfg = write_config(tmp_path, CONFIG, name="penguins", extra="  missing: impute\n")
    r = invoke("inspect", cfg, "--runs", runs)
    assert r.exit_code == 0, r
    report = json.loads((runs / "penguins" / "inspect" / "data_report.json").read_text())
    assert report["classes"] == list(SPECIES)
    assert report["encoding"]["categorical"]["island"] == sorted(ISLANDS)
    assert set(report["encoding"]["imputed"]) >= {"bill_length_mm", "sex"}


@pytest.mark.slow
def test_penguins_runs_through_every_stage(tmp_path):
    write_penguins(tmp_path / "penguins.csv")
    cfg = write_config(tmp_path, CONFIG, name="penguins", extra="  missing: impute\n")
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble"):
        r = invoke(stage, cfg, "--runs", runs)
        assert r.exit_code == 0, (stage, r)
        assert record(runs, "penguins", stage)["status"] == "passed"
    fingerprints = {record(runs, "penguins", s)["data_fingerprint"] for s in ("inspect", "tune", "ensemble")}
    assert len(fingerprints) == 1


def test_missing_label_count_covers_the_whole_file(tmp_path):
    """issue 17 item 10: the count is over every split of the file, not the first split that has one."""
    rows = "".join(f"{i},{('a', 'b')[i % 2] if i % 10 else ''}\n" for i in range(100))     # 10 empty labels
    (tmp_path / "data.csv").write_text("x,label\n" + rows)
    with pytest.raises(DataError) as e:
        _dataset(tmp_path)
    text = str(e.value)
    assert "has 10 missing labels" in text and " in train (rows " in text, text
    counts = [int(n) for n in re.findall(r"(\d+) in (?:train|val|test) \(rows", text)]
    assert sum(counts) == 10 and len(counts) >= 2
