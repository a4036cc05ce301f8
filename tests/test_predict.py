"""recipe predict: the final model with the recorded preprocessing, on CSV / NPZ rows."""
import json

import numpy as np
import pytest

from tests.conftest import invoke, write_config, run_stages
from tests.stages.test_ensemble import IRIS_OK, STAGES


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    cfg = write_config(root, IRIS_OK, name="iris")
    runs = root / "runs"
    run_stages(cfg, runs, STAGES)
    from recipe.config import load
    from recipe.data import load as load_data

    ds = load_data(load(cfg, []))
    art = json.loads((runs / "iris" / "ensemble" / "ensemble.json").read_text())
    return cfg, runs, ds, art, root


def _val_csv(ds, path, drop=None):
    cols = [c for c in ds.feature_names if c != drop]
    lines = [",".join(f'"{c}"' for c in cols + ["label"])]
    for x, y in zip(ds.val.x, ds.val.y):
        vals = [f"{v:.9g}" for c, v in zip(ds.feature_names, x) if c != drop]
        lines.append(",".join(vals + [str(ds.classes[y])]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_predictions_reproduce_the_recorded_val_score(done):
    cfg, runs, ds, art, root = done
    out = root / "pred.csv"
    r = invoke("predict", cfg, _val_csv(ds, root / "val.csv"), "--runs", runs, "--out", out, "--json")
    assert r.exit_code == 0, r
    summary = r.json
    assert summary["rows"] == len(ds.val.y) and summary["final"] == art["final"]
    expected = {"ensemble": art["val"], "best_single": art["best_single_val"]}[art["final"]]
    assert summary["accuracy"] == pytest.approx(expected, abs=1e-6)      # the stage's own number, recomputed
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:2] == ["row", "prediction"] and len(rows) == len(ds.val.y) + 1
    assert rows[0].split(",")[-1] == "recipe_warnings" and all(row.endswith(",") for row in rows[1:])   # val: none
    probs = np.array([[float(v) for v in row.split(",")[2:-1]] for row in rows[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert [str(ds.classes[i]) for i in probs.argmax(1)] == [row.split(",")[1] for row in rows[1:]]


def test_npz_gives_the_same_predictions_as_csv(done):
    cfg, runs, ds, art, root = done
    np.savez(root / "val.npz", x=ds.val.x)
    a = invoke("predict", cfg, _val_csv(ds, root / "val2.csv"), "--runs", runs, "--json")
    b = invoke("predict", cfg, root / "val.npz", "--runs", runs, "--json")
    assert a.exit_code == b.exit_code == 0, (a, b)
    assert a.json["predictions"] == b.json["predictions"] and len(b.json["predictions"]) == len(ds.val.y)
    assert "accuracy" not in b.json                                          # no labels in that file
    assert b.json["input_warnings"] == {"checked": False, "why": "an NPZ holds encoded arrays, not the columns "
                                                                 "train recorded"}
    s = invoke("predict", cfg, root / "val.npz", "--runs", runs, "--strict")
    assert s.exit_code == 2 and "--strict, but the inputs cannot be checked against train" in s.stderr


def test_iris_far_values_are_flagged(done):
    cfg, runs, ds, _, root = done
    path = _val_csv(ds, root / "far.csv")
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "70"                                   # petal length in cm: train's max is under 7
    path.write_text("\n".join([lines[0], ",".join(cells)] + lines[2:]) + "\n")
    r = invoke("predict", cfg, path, "--runs", runs, "--json")
    assert r.exit_code == 0, r
    name = ds.feature_names[2]
    assert r.json["input_warnings"]["counts"] == {name: {"far": 1}} and r.json["row_warnings"][0] == [f"{name}:far"]


def test_stdout_is_the_csv_when_no_out(done):
    cfg, runs, ds, _, root = done
    r = invoke("predict", cfg, _val_csv(ds, root / "val3.csv"), "--runs", runs)
    assert r.exit_code == 0, r
    assert r.stdout.startswith("row,prediction,p_0,p_1,p_2,recipe_warnings\n") and r.stdout.count("\n") == len(ds.val.y) + 1


def test_missing_column_is_named(done):
    cfg, runs, ds, _, root = done
    gone = ds.feature_names[2]
    r = invoke("predict", cfg, _val_csv(ds, root / "short.csv", drop=gone), "--runs", runs)
    assert r.exit_code == 2, r
    assert f"missing column(s) '{gone}'" in r.stderr and "Traceback" not in r.stderr


def test_changed_member_checkpoint_is_refused_by_name(done):
    cfg, runs, ds, art, root = done
    member = runs / "iris" / "ensemble" / art["members"][0]["checkpoint"]
    original = member.read_bytes()
    try:
        member.write_bytes(original[:-8] + b"tampered")
        r = invoke("predict", cfg, _val_csv(ds, root / "val4.csv"), "--runs", runs)
        assert r.exit_code == 3, r
        assert f"{art['members'][0]['checkpoint']} was modified" in r.stderr
    finally:
        member.write_bytes(original)
    assert invoke("predict", cfg, root / "val4.csv", "--runs", runs, "--json").exit_code == 0     # restored


def test_config_in_place_of_input_is_explained(done):
    cfg, runs, *_ = done
    r = invoke("predict", cfg, "--runs", runs)
    assert r.exit_code == 2 and "is a config" in r.stderr
