"""data.leak tells copies from shared inputs; data.label-noise tells label errors from a hard problem (issue 17)."""
import numpy as np
from sklearn.datasets import load_digits, make_classification

from tests.bugs.data.test_data_bugs import _save_splits, digits_npz, inspect
from tests.conftest import check


def _survey(n=1500, seed=0, questions=5):
    """Questions with 3 answers each and a 2-class outcome that depends on them, with 10% of it random:
    distinct respondents often give the same answers (3^5 = 243 combinations for 1500 rows)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, questions)).astype(float)
    y = ((x[:, 0] + x[:, 1] - x[:, 2] > 1) ^ (rng.random(n) < 0.1)).astype(int)
    return x, y


def test_few_discrete_inputs_coincide_and_warn_with_counts(tmp_path):
    x, y = _survey()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.leak")
    assert c["status"] == "warn", c
    ev = c["evidence"]
    assert ev["discrete_inputs"] is True and ev["max_levels_per_column"] == 3
    assert ev["val_in_train"] > 0.5 * len(y) * 0.15 and ev["train_repeat_rate"] > 0.5
    assert "few and discrete" in c["title"] and "no sample appears" not in c["title"]
    assert "Deduplicate" not in c["advice"]


def test_copies_of_train_rows_in_val_still_fail_on_discrete_data(tmp_path):
    x, y = load_digits(return_X_y=True)   # 64 columns of 17 levels: discrete, but not few
    tr, va, te = np.arange(0, 1200), np.r_[np.arange(1200, 1450), np.arange(0, 30)], np.arange(1450, 1797)
    spec = _save_splits(tmp_path, {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])})
    r, rec = inspect(tmp_path, spec)
    c = check(rec, "data.leak")
    assert r.exit_code == 1 and c["status"] == "fail", c
    assert c["evidence"]["val_in_train"] == 30 and c["evidence"]["discrete_inputs"] is False
    assert c["title"].startswith("identical rows (inputs and target) across splits: 30 val rows (10.7%) also in train")
    assert "Deduplicate before splitting" in c["advice"]


def test_copies_beyond_the_data_s_own_repetition_fail_on_a_survey(tmp_path):
    x, y = _survey(seed=1, questions=7)      # 2187 combinations: twins are common, not the rule
    tr, va, te = np.arange(0, 1000), np.r_[np.arange(1000, 1250), np.arange(0, 250)], np.arange(1250, 1500)
    spec = _save_splits(tmp_path, {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])})
    r, rec = inspect(tmp_path, spec)
    c = check(rec, "data.leak")
    # train rows meet a twin among train at the survey's own rate; half of val copied from train beats it by far
    assert c["status"] == "fail" and c["evidence"]["val_in_train"] >= 250, c
    assert c["evidence"]["discrete_inputs"] is True
    assert c["evidence"]["worst_fraction"] > c["evidence"]["train_repeat_rate"] + 0.1


def test_equal_inputs_with_other_targets_are_noise_not_a_leak(tmp_path):
    rng = np.random.default_rng(0)
    configs = rng.integers(0, 4, size=(60, 3)).astype(float)          # 60 products, each sold many times
    pick = rng.integers(0, 60, 1200)
    x = configs[pick]
    price = x @ np.array([3.0, 2.0, 1.0]) + rng.normal(0, 1.0, 1200)   # each sale at its own price
    np.savez(tmp_path / "d.npz", x=x, y=price)
    r, rec = inspect(tmp_path, "{source: d.npz}")   # float targets: regression
    c = check(rec, "data.leak")
    assert r.exit_code == 0 and c["status"] == "warn", c
    assert c["evidence"]["val_in_train"] == 0 and c["evidence"]["val_inputs_in_train_other_target"] > 150
    assert c["title"].startswith("no row appears in two splits with its target;") and "not a leak" in c["title"]


def test_twenty_percent_flipped_digits_fail_on_confident_flags(tmp_path):
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.2
    digits_npz(tmp_path / "d.npz", x, np.where(flip, (y + rng.integers(1, 10, len(y))) % 10, y))
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.label-noise")
    assert c["status"] == "fail", c
    assert c["evidence"]["confident_rate"] > 0.1 and c["evidence"]["probe_error"] > 0.2
    assert c["title"].startswith("about ") and "confidently" in c["title"]


def test_hard_but_clean_problem_warns_that_it_looks_hard(tmp_path):
    x, y = make_classification(1500, 10, n_informative=5, n_classes=4, n_clusters_per_class=1, class_sep=0.5,
                               flip_y=0, random_state=0)             # every label is the generating one
    np.savez(tmp_path / "d.npz", x=x, y=y)
    r, rec = inspect(tmp_path, "{source: d.npz}")
    c = check(rec, "data.label-noise")
    assert r.exit_code == 0 and c["status"] == "warn", c
    ev = c["evidence"]
    assert ev["estimated_noise_rate"] > ev["max_noise_rate"] > ev["confident_rate"]   # the old rule failed here
    assert c["title"].startswith("the task looks noisy or hard, not mislabeled") and "probe error" in c["title"]
