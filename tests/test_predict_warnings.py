"""recipe predict flags inputs train never saw: unseen levels, far values, new holes (recipe.data.seen)."""
import csv
import json

import numpy as np
import pytest

from recipe import predict as P
from recipe.config import load as load_config
from recipe.data import load as load_data
from recipe.data.seen import FAR_SPREADS
from tests.conftest import invoke, run_stages, write_config
from tests.data.test_messy_tables import _csv
from tests.data.penguins import CONFIG, write_penguins

STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")
HEADER = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "tagged"]
CLEAN = ["Adelie", "Dream", "44.0", "18.0", "200.0", "5000.0", "male", "true"]


def _row(**cells):
    row = list(CLEAN)
    for k, v in cells.items():
        row[HEADER.index(k)] = v
    return row


@pytest.fixture(scope="module")
def penguins_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seen")
    write_penguins(root / "penguins.csv")
    cfg = write_config(root, CONFIG, name="penguins", extra="  missing: impute\n")
    ds = load_data(load_config(cfg, []))
    return root, cfg, ds


# ----------------------------------------------------------------------------- what is recorded


def test_seen_facts_come_from_the_train_split_only(tmp_path):
    train = [[float(i % 11), ("a", "b")[i % 2], i % 2] for i in range(40)]           # x in [0, 10], no holes
    val = [[1000.0, "c", 0], ["", "", 1]] + [[1.0, "a", i % 2] for i in range(10)]    # extremes, a new level, holes
    test = [[-500.0, "zzz", 1]] + [[2.0, "b", i % 2] for i in range(10)]
    for name, rows in (("train", train), ("val", val), ("test", test)):
        _csv(tmp_path / f"{name}.csv", ["x", "kind", "label"], rows)
    (tmp_path / "t.yaml").write_text("name: t\nseed: 0\ndata: {train: train.csv, val: val.csv, test: test.csv, "
                                     "missing: impute}\n")
    ds = load_data(load_config(tmp_path / "t.yaml", []))
    seen = ds.encoding["seen"]
    assert seen["far_spreads"] == FAR_SPREADS and set(seen["columns"]) == {"x", "kind"}
    x = seen["columns"]["x"]
    assert (x["min"], x["max"], x["missing"], x["n"]) == (0.0, 10.0, 0, 40)
    spread = max(np.subtract(*np.quantile([float(i % 11) for i in range(40)], [0.75, 0.25])),
                 np.std([float(i % 11) for i in range(40)]))
    assert x["spread"] == pytest.approx(spread) and x["high"] == pytest.approx(10 + FAR_SPREADS * spread, abs=1e-4)
    assert seen["columns"]["kind"] == {"kind": "text", "n": 40, "missing": 0}
    assert ds.encoding["categorical"]["kind"] == ["a", "b"]


def test_an_all_numeric_table_records_its_ranges_too(tmp_path):
    rows = [[float(i), float(i % 7) if i % 9 else "", i % 2] for i in range(90)]
    _csv(tmp_path / "num.csv", ["a", "b", "label"], rows)
    (tmp_path / "n.yaml").write_text("name: n\nseed: 0\ndata: {source: num.csv, missing: impute}\n")
    ds = load_data(load_config(tmp_path / "n.yaml", []))
    cols = ds.encoding["seen"]["columns"]
    a_train = sorted(float(r) for r in ds.train.rows)           # column a is the row number
    assert (cols["a"]["min"], cols["a"]["max"], cols["a"]["missing"]) == (a_train[0], a_train[-1], 0)
    assert cols["b"]["missing"] == sum(1 for r in ds.train.rows if r % 9 == 0) > 0


# ----------------------------------------------------------------------------- flagging rows


def test_each_row_is_flagged_by_column_and_reason(penguins_ds):
    root, _, ds = penguins_ds
    art = {"feature_names": ds.feature_names, "encoding": ds.encoding, "target_column": "species"}
    mass = ds.encoding["seen"]["columns"]["body_mass_g"]
    inside = mass["max"] + (FAR_SPREADS - 0.1) * mass["spread"]
    outside = mass["max"] + (FAR_SPREADS + 0.1) * mass["spread"]
    rows = [CLEAN, _row(island="Atlantis"), _row(body_mass_g=f"{outside:.3f}"), _row(body_mass_g=f"{inside:.3f}"),
            _row(island=""), _row(bill_length_mm=""), _row(tagged="", island="Mars"),
            _row(body_mass_g=f"{mass['min'] - (FAR_SPREADS + 0.1) * mass['spread']:.3f}")]
    x, y, flags = P.read_rows(_csv(root / "new.csv", HEADER, rows), art)
    assert x.shape == (8, len(ds.feature_names)) and flags.checked
    assert flags.per_row == [[], ["island:unseen"], ["body_mass_g:far"], [], ["island:missing"],
                             [],                    # train had holes in bill_length_mm: imputed as in training
                             ["island:unseen", "tagged:missing"], ["body_mass_g:far"]]
    assert flags.counts == {"island": {"unseen": 2, "missing": 1}, "body_mass_g": {"far": 2},
                            "tagged": {"missing": 1}}
    assert flags.rows_flagged == 5
    assert flags.summary() == ("input warnings: 5 of 8 rows hold inputs train never saw: island:unseen 2 rows, "
                               "island:missing 1 row, body_mass_g:far 2 rows, tagged:missing 1 row "
                               "(column recipe_warnings)")
    assert flags.detail["island:unseen"] == "train levels: Biscoe, Dream, Torgersen"


def test_a_record_without_train_facts_is_read_but_not_checked(penguins_ds):
    root, _, ds = penguins_ds
    enc = {k: v for k, v in ds.encoding.items() if k != "seen"}
    art = {"feature_names": ds.feature_names, "encoding": enc, "target_column": "species"}
    x, _, flags = P.read_rows(_csv(root / "old.csv", HEADER, [CLEAN, _row(island="Atlantis")]), art)
    assert x.shape[0] == 2 and not flags.checked and flags.per_row == [] and flags.counts == {}
    assert flags.summary().startswith("input checks: not done (this model's record predates the train facts")
    assert flags.to_json() == {"checked": False, "why": flags.why_unchecked}


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def trained(penguins_ds):
    root, cfg, _ = penguins_ds
    runs = root / "runs"
    run_stages(cfg, runs, STAGES)
    rows = [CLEAN, _row(island="Atlantis"), _row(body_mass_g="90000"), _row(tagged=""), _row(island="Mars"), CLEAN]
    return cfg, runs, _csv(root / "flagged.csv", HEADER, rows), _csv(root / "clean.csv", HEADER, [CLEAN] * 3)


def test_predict_adds_the_warnings_column_and_a_summary_line(trained, tmp_path):
    cfg, runs, flagged, _ = trained
    out = tmp_path / "pred.csv"
    r = invoke("predict", cfg, flagged, "--runs", runs, "--out", out, "--json")
    assert r.exit_code == 0, r
    with open(out, newline="") as f:
        table = list(csv.reader(f))
    assert table[0][:2] == ["row", "prediction"] and table[0][-1] == "recipe_warnings" and len(table) == 7
    assert [row[-1] for row in table[1:]] == ["", "island:unseen", "body_mass_g:far", "tagged:missing",
                                              "island:unseen", ""]
    assert ("input warnings: 4 of 6 rows hold inputs train never saw: island:unseen 2 rows, body_mass_g:far 1 row, "
            "tagged:missing 1 row (column recipe_warnings)") in " ".join(r.stderr.split())
    w = r.json["input_warnings"]
    assert w["checked"] and w["rows_flagged"] == 4
    assert w["counts"] == {"island": {"unseen": 2}, "body_mass_g": {"far": 1}, "tagged": {"missing": 1}}
    assert r.json["row_warnings"] == [[], ["island:unseen"], ["body_mass_g:far"], ["tagged:missing"],
                                      ["island:unseen"], []]


def test_strict_exits_2_naming_columns_and_counts_and_writes_nothing(trained, tmp_path):
    cfg, runs, flagged, clean = trained
    out = tmp_path / "pred.csv"
    r = invoke("predict", cfg, flagged, "--runs", runs, "--out", out, "--strict")
    assert r.exit_code == 2, r
    err = " ".join(r.stderr.split())
    assert "--strict: 4 of 6 rows hold inputs train never saw, in 3 column(s); nothing was written" in err
    assert "'island': level never seen in train: 2 rows (train levels: Biscoe, Dream, Torgersen)" in err
    assert "'body_mass_g': far outside the train range: 1 row (train range [" in err
    assert "'tagged': missing, and train had no missing value there: 1 row" in err
    assert not out.exists() and r.stdout == ""
    j = invoke("predict", cfg, flagged, "--runs", runs, "--strict", "--json")
    assert j.exit_code == 2 and j.json["status"] == "error" and "4 of 6 rows" in j.json["errors"][0]
    ok = invoke("predict", cfg, clean, "--runs", runs, "--out", out, "--strict", "--json")
    assert ok.exit_code == 0 and out.exists() and ok.json["input_warnings"]["rows_flagged"] == 0
    assert "input checks: all 3 rows inside what train saw" in ok.stderr


def test_an_old_record_predicts_says_it_cannot_check_and_strict_refuses(trained, monkeypatch):
    cfg, runs, flagged, _ = trained
    real = P._read

    def old_record(ws):      # ensemble.json as written before encoding["seen"] existed
        art = real(ws)
        art["encoding"].pop("seen")
        return art

    monkeypatch.setattr(P, "_read", old_record)
    r = invoke("predict", cfg, flagged, "--runs", runs, "--json")
    assert r.exit_code == 0, r
    assert "input checks: not done (this model's record predates" in " ".join(r.stderr.split())
    assert r.json["input_warnings"]["checked"] is False and "row_warnings" not in r.json
    s = invoke("predict", cfg, flagged, "--runs", runs)
    assert s.exit_code == 0 and s.stdout.splitlines()[0].split(",")[-1] != "recipe_warnings"
    strict = invoke("predict", cfg, flagged, "--runs", runs, "--strict")
    assert strict.exit_code == 2 and "cannot be checked against train" in " ".join(strict.stderr.split())
