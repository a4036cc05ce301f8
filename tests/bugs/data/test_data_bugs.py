"""Planted data bugs: each is caught by its inspect check with the rows/columns that prove it."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.conftest import check, invoke, record, write_config


def inspect(tmp_path, data_yaml: str, name="bug"):
    cfg = write_config(tmp_path, "name: {name}\ndata: " + data_yaml.replace("{", "{{").replace("}", "}}") + "\n",
                       name=name)
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    return r, (record(tmp_path / "runs", name, "inspect") if (tmp_path / "runs" / name / "inspect").exists() else None)


def digits_npz(path, x=None, y=None):
    dx, dy = load_digits(return_X_y=True)
    np.savez(path, x=dx if x is None else x, y=dy if y is None else y)
    return path


def test_nan_in_csv_fails_with_row_and_column(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["a,b,c,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f},{i % 2}" for i in range(200)]
    rows[58] = "0.1,,0.3,1"            # row 57 of the data: empty cell in column b
    rows[121] = "0.1,0.2,inf,0"
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    r, rec = inspect(tmp_path, "{source: d.csv, split: {val: 0.2, test: 0.2}}")
    assert r.exit_code == 1, r
    c = check(rec, "data.non-finite")
    assert c["status"] == "fail"
    found = {k: v for k, v in c["evidence"].items()}
    rows_all = sum((v["example_rows"] for v in found.values()), [])
    cols_all = sum((v["columns"] for v in found.values()), [])
    assert 57 in rows_all or 120 in rows_all
    assert "b" in cols_all or "c" in cols_all
    assert "data.non-finite" in r.stderr


def test_train_val_files_sharing_rows_leak(tmp_path):
    x, y = load_digits(return_X_y=True)
    tr = np.arange(0, 1200)
    va = np.concatenate([np.arange(1200, 1450), np.arange(0, 50)])   # 50 train rows copied into val
    te = np.arange(1450, 1797)
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        np.savez(tmp_path / f"{name}.npz", x=x[idx], y=y[idx])
    r, rec = inspect(tmp_path, "{train: train.npz, val: val.npz, test: test.npz}")
    assert r.exit_code == 1
    c = check(rec, "data.leak")
    assert c["status"] == "fail" and c["evidence"]["val_in_train"] == 50
    assert len(c["evidence"]["val_in_train_rows"]) == 5


def test_noisy_labels_are_estimated(tmp_path):
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.3
    y = np.where(flip, (y + rng.integers(1, 10, len(y))) % 10, y)
    digits_npz(tmp_path / "d.npz", x, y)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.label-noise")
    assert c["status"] == "fail", c
    assert c["evidence"]["estimated_noise_rate"] > 0.1
    assert len(c["evidence"]["most_suspicious_rows"]) == 10


def test_random_labels_have_no_signal(tmp_path):
    x, y = load_digits(return_X_y=True)
    digits_npz(tmp_path / "d.npz", x, np.random.default_rng(1).permutation(y))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    assert r.exit_code == 1
    c = check(rec, "data.signal")
    assert c["status"] == "fail" and c["evidence"]["gain"] < 0.02


def test_severe_imbalance_fails(tmp_path):
    x, y = load_digits(return_X_y=True)
    keep = (y != 1) | (np.cumsum(y == 1) <= 4)     # 4 ones (3 in train at most) against ~180 of each other digit
    digits_npz(tmp_path / "d.npz", x[keep], np.where(y[keep] == 1, 1, 0))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.imbalance")
    assert c["status"] == "fail", c
    assert c["evidence"]["min_over_max"] < 0.01


def test_constant_features_fail_when_all_constant(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((300, 5)), y=np.arange(300) % 3)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    assert check(rec, "data.constant")["status"] == "fail"


def test_unnormalized_scales_warn(tmp_path):
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=400), 1e4 * rng.normal(size=400)]
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(int))
    r, rec = inspect(tmp_path, "{source: d.npz, normalize: none}")
    c = check(rec, "data.scale")
    assert c["status"] == "warn" and c["evidence"]["std_ratio"] > 1000


def test_sorted_file_and_duplicates_and_conflicts(tmp_path):
    x, y = load_digits(return_X_y=True)
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    x = np.concatenate([x, x[:200]])        # 200 repeated rows
    y2 = np.concatenate([y, y[:200]])
    y2[-30:] = 9                            # 30 of the repeats now disagree with their originals
    np.savez(tmp_path / "d.npz", x=x, y=y2)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    assert check(rec, "data.order")["status"] == "warn"
    assert check(rec, "data.duplicates")["status"] == "warn"
    assert check(rec, "data.label-conflict")["status"] == "fail"
    assert check(rec, "data.leak")["status"] == "fail"     # repeats land in different splits too


def test_clean_real_data_passes(tmp_path):
    for name in ("iris", "wine", "breast_cancer", "diabetes"):
        r, rec = inspect(tmp_path, f"{{source: 'builtin:{name}'}}", name=name)
        assert r.exit_code == 0, (name, r)
        assert not [c["id"] for c in rec["checks"] if c["status"] == "fail"]


def test_missing_target_column_names_file_and_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,lable\n1,2,0\n3,4,1\n")
    r, rec = inspect(tmp_path, "{source: d.csv}")
    assert r.exit_code == 2
    assert "d.csv" in r.stderr and "label" in r.stderr and "lable" in r.stderr


def _save_splits(tmp_path, parts):
    for name, (x, y) in parts.items():
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    return "{train: train.npz, val: val.npz, test: test.npz}"


def test_class_missing_from_val_and_label_shift(tmp_path):
    x, y = load_digits(return_X_y=True)
    tr = np.arange(0, 1200)
    va = np.flatnonzero((np.arange(len(y)) >= 1200) & (np.arange(len(y)) < 1500) & (y != 3))   # no 3s in val
    te = np.flatnonzero((np.arange(len(y)) >= 1500) & (y < 5))                                 # only 0-4 in test
    spec = _save_splits(tmp_path, {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])})
    r, rec = inspect(tmp_path, spec)
    imb = check(rec, "data.imbalance")
    assert imb["status"] == "warn" and "3" in imb["evidence"]["absent"]["val"]
    shift = check(rec, "data.split-shift")
    assert shift["status"] == "warn" and shift["evidence"]["tv_train_test"] > 0.4


def test_ten_samples_for_ten_classes(tmp_path):
    x, y = load_digits(return_X_y=True)
    tr = np.array([np.flatnonzero(y == c)[0] for c in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), tr)
    spec = _save_splits(tmp_path, {"train": (x[tr], y[tr]), "val": (x[rest[:300]], y[rest[:300]]),
                                   "test": (x[rest[300:600]], y[rest[300:600]])})
    r, rec = inspect(tmp_path, spec)
    c = check(rec, "data.size")
    assert c["status"] == "fail" and c["evidence"]["fewest"] == 1


def test_extreme_outliers_warn(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5))
    x[rng.choice(2000, 40, replace=False), 2] = 1e4          # a unit slip: 40 values ten thousand times too large
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(int))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.outliers")
    assert c["status"] == "warn" and c["evidence"]["columns"][0] == "x2"


def test_inf_in_npz_is_non_finite(tmp_path):
    x, y = load_digits(return_X_y=True)
    x = x.copy()
    x[5, 10] = np.inf
    digits_npz(tmp_path / "d.npz", x, y)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.non-finite")
    assert c["status"] == "fail"
    found = [v for v in c["evidence"].values() if isinstance(v, dict) and v.get("inf")]
    assert found and "x10" in found[0]["columns"] and 5 in found[0]["example_rows"]


def _digits_folder(root, corrupt=0, mode="L", size=(8, 8), mixed=True):
    from PIL import Image

    x, y = load_digits(return_X_y=True)
    for i in range(300):
        d = root / str(y[i])
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray((x[i].reshape(8, 8) * 15).astype(np.uint8), mode="L").convert(mode)
        img.resize(size if i % 7 or not mixed else (size[0] + 2, size[1])).save(d / f"{i}.png")
    for j in range(corrupt):
        (root / "0" / f"broken{j}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")


def test_image_folder_from_digits_is_clean_then_corrupt_and_mixed(tmp_path):
    _digits_folder(tmp_path / "real", mixed=False)
    r, rec = inspect(tmp_path, "{source: real, split: {val: 0.2, test: 0.2}}", name="real")
    assert r.exit_code == 0, r
    assert check(rec, "data.images")["status"] == "pass"
    assert not [c["id"] for c in rec["checks"] if c["status"] == "fail"]
    _digits_folder(tmp_path / "clean", size=(8, 8))
    r, rec = inspect(tmp_path, "{source: clean, split: {val: 0.2, test: 0.2}}", name="clean")
    imgs = check(rec, "data.images")
    # every 7th image has another size: listed, dropped, warned
    assert imgs["status"] == "warn" and "mixed image sizes" in imgs["title"]
    _digits_folder(tmp_path / "broken", corrupt=3)
    r, rec = inspect(tmp_path, "{source: broken, split: {val: 0.2, test: 0.2}}", name="broken")
    imgs = check(rec, "data.images")
    assert imgs["status"] == "warn" and imgs["evidence"]["corrupt_count"] == 3


def test_channels_last_shape_and_raw_pixels_warn(tmp_path):
    x, y = load_digits(return_X_y=True)
    rgb = np.repeat(x.reshape(-1, 8, 8, 1), 3, axis=3) * 16          # HWC, 0..255
    np.savez(tmp_path / "d.npz", x=rgb.reshape(len(x), -1), y=y)
    r, rec = inspect(tmp_path, "{source: d.npz, shape: [8, 8, 3], normalize: none}")
    c = check(rec, "data.images")
    assert c["status"] == "warn"
    assert "channels-last" in c["title"] and "not normalized" in c["title"]


# ----------------------------------------------------------------------------- data.scale: scaled with all rows


def _scaled_all(x, how):
    if how == "standard":
        return (x - x.mean(0)) / x.std(0)
    return (x - x.min(0)) / (x.max(0) - x.min(0))


@pytest.mark.parametrize("how,kind", [("standard", "standardized"), ("minmax", "min-max scaled")])
def test_data_scaled_with_all_splits_statistics_fails(tmp_path, how, kind):
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    np.savez(tmp_path / "d.npz", x=_scaled_all(x, how), y=y)      # the leak of 37 reasons #15, done by the user
    r, rec = inspect(tmp_path, "{source: d.npz, normalize: none}")
    c = check(rec, "data.scale")
    assert r.exit_code == 1 and c["status"] == "fail", c
    found = c["evidence"]["prescaled"]
    assert found["kind"] == kind and found["pool"] == "train+val+test" and found["features"] >= 1
    assert "val/test rows shaped the scaling" in c["title"] and "data.normalize: standard" in c["advice"]


def test_split_files_scaled_with_pooled_statistics_fail_and_train_only_scaling_passes(tmp_path):
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    parts = {"train": idx[:120], "val": idx[120:150], "test": idx[150:]}
    mean, std = x.mean(0), x.std(0)                                   # statistics of every row
    spec = _save_splits(tmp_path, {k: ((x[i] - mean) / std, y[i]) for k, i in parts.items()})
    r, rec = inspect(tmp_path, spec.replace("}", ", normalize: none}"))
    assert check(rec, "data.scale")["status"] == "fail"
    tr = x[parts["train"]]
    mean, std = tr.mean(0), tr.std(0)                                 # train only: what recipe itself does
    spec = _save_splits(tmp_path, {k: ((x[i] - mean) / std, y[i]) for k, i in parts.items()})
    r, rec = inspect(tmp_path, spec.replace("}", ", normalize: none}"), name="clean")
    c = check(rec, "data.scale")
    assert c["status"] == "pass" and "prescaled" not in c["evidence"], c


def test_scaled_with_all_rows_but_renormalized_by_recipe_passes_and_says_so(tmp_path):
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    np.savez(tmp_path / "d.npz", x=_scaled_all(x, "standard"), y=y)
    r, rec = inspect(tmp_path, "{source: d.npz}")                     # data.normalize: standard (the default)
    c = check(rec, "data.scale")
    assert c["status"] == "pass" and c["evidence"]["prescaled"]["kind"] == "standardized", c
    assert "undoes exactly" in c["title"]


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
def test_raw_bundled_sets_show_no_prescaling(tmp_path, name):
    r, rec = inspect(tmp_path, f"{{source: 'builtin:{name}', normalize: none}}", name=name)
    c = check(rec, "data.scale")
    assert c["status"] in ("pass", "warn") and "prescaled" not in c["evidence"], c


def test_provider_centered_diabetes_warns_only_when_recipe_does_not_normalize(tmp_path):
    r, rec = inspect(tmp_path, "{source: 'builtin:diabetes', normalize: none}", name="none")
    c = check(rec, "data.scale")
    assert c["status"] == "warn" and c["evidence"]["prescaled"]["kind"] == "centered", c
    r, rec = inspect(tmp_path, "{source: 'builtin:diabetes'}", name="standard")
    c = check(rec, "data.scale")
    assert c["status"] == "pass" and c["evidence"]["prescaled"]["undone_by"].startswith("data.normalize: standard")


# ----------------------------------------------------------------------------- data.outliers: found means said


def _outlier_npz(path, column_values, rows, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x[rows, 2] = column_values
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(int))


def test_five_extreme_values_warn_naming_column_and_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5))
    y = (x[:, 0] > 0).astype(int)
    x[[3, 17, 404, 1200, 1399], 2] = 50.0                # five values 50 sd out, all in the train file
    spec = _save_splits(tmp_path, {"train": (x[:1400], y[:1400]), "val": (x[1400:1700], y[1400:1700]),
                                   "test": (x[1700:], y[1700:])})
    r, rec = inspect(tmp_path, spec)
    c = check(rec, "data.outliers")
    assert c["status"] == "warn", c
    col = c["evidence"]["per_column"]["x2"]
    assert col["count"] == 5 and sorted(col["rows"]) == [3, 17, 404, 1200, 1399] and col["max_z"] > 40
    assert "'x2'" in c["title"] and "rows" in c["title"]


def test_sentinel_in_ten_percent_of_a_column_fails(tmp_path):
    _outlier_npz(tmp_path / "d.npz", -999.0, np.arange(0, 2000, 10))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.outliers")
    assert r.exit_code == 1 and c["status"] == "fail", c
    assert c["evidence"]["fraction"] > c["evidence"]["max_fraction"] and c["evidence"]["columns"] == ["x2"]


def test_rare_one_hot_level_is_no_outlier_but_a_value_outside_it_is(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    x[:, 3] = 0.0
    x[::500, 3] = 1.0                                  # a flag set on 0.2% of rows: a category, not an outlier
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(int))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.outliers")
    assert c["status"] == "pass" and c["evidence"]["two_valued_columns"] == 1, c
    sentinel = np.arange(1, 3000, 150)                 # 20 rows where the flag reads -999: those are outliers
    x[sentinel, 3] = -999.0
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(int))
    r, rec = inspect(tmp_path, "{source: d.npz}", name="sentinel")
    c = check(rec, "data.outliers")
    col = c["evidence"]["per_column"]["x3"]
    assert c["status"] == "warn" and col["count"] >= 5 and set(col["rows"]) <= set(sentinel.tolist()), c


def test_rows_that_share_inputs_but_not_the_target_are_not_called_duplicates(tmp_path):
    """The same PC configuration sold at different prices: real samples (was: 'Deduplicate train')."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(900, 3)).astype(float)         # 27 configurations: nearly every row repeats
    y = x @ np.array([1.0, 2.0, 3.0]) + rng.normal(0, 0.5, 900)    # a price: never the same twice
    x[-60:], y[-60:] = x[:60], y[:60]                                # 60 exact copies, inputs and target
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = write_config(tmp_path, "name: pc\ntask: regression\ndata: {{source: d.npz}}\n", name="pc")
    assert invoke("inspect", cfg, "--runs", tmp_path / "runs").exit_code in (0, 1)
    c = check(record(tmp_path / "runs", "pc", "inspect"), "data.duplicates")
    train_copies = c["evidence"]["copied_rows"]
    assert 0 < train_copies <= 60 and c["evidence"]["same_inputs_other_target"] > 500
    assert "share their inputs with another row but not its target" in c["title"]
    assert c["status"] == ("warn" if train_copies / (0.7 * 900) > 0.05 else "pass")
