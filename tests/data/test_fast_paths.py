"""The fast data paths give what the general ones gave: numeric tables as one matrix, numeric labels by binary
search, stratified groups by a stable sort, 64-bit row hashes, and probes that sample before normalizing."""
import csv

import numpy as np
import pytest

from recipe.config import load as load_config
from recipe.data import _encode_target, load as load_data, split_indices
from recipe.data import sources as S
from recipe.data.hashing import all_finite, row_hashes
from recipe.errors import DataError
from tests.conftest import write_config


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _load(folder, extra=""):
    return load_data(load_config(write_config(folder, f"name: t\nseed: 0\ndata:\n  source: data.csv\n{extra}")))


def _mixed_rows(n=300, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = "" if i % 37 == 5 else f"{rng.normal():.6f}"       # a float column with holes
        b = int(rng.integers(-50, 50))                          # an integer column
        c = "true" if i % 3 else "false"                        # a boolean column
        rows.append([a, b, c, f"{rng.normal() * 1e4:.3f}", i % 4])
    return rows


def test_numeric_table_is_one_matrix_equal_to_the_column_path(tmp_path, monkeypatch):
    _write(tmp_path / "data.csv", ["a", "b", "c", "d", "label"], _mixed_rows())
    fast = _load(tmp_path)
    assert fast.feature_names == ["a", "b", "c", "d"]
    monkeypatch.setattr(S, "_plain_number", lambda col: False)        # force the per-column path
    slow = _load(tmp_path)
    for a, b in ((fast.train, slow.train), (fast.val, slow.val), (fast.raw_test(), slow.raw_test())):
        assert a.x.dtype == np.float32 and a.x.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(a.x, b.x)        # NaN in the same cells, same values
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.rows, b.rows)
    assert int(np.isnan(fast.train.x[:, 0]).sum()) > 0
    assert fast.fingerprint == slow.fingerprint
    assert fast.norm == slow.norm and fast.classes == slow.classes == [0, 1, 2, 3]
    assert fast.encoding == slow.encoding              # the train facts predict checks against (seen) included
    assert {k: v for k, v in fast.encoding.items() if k != "seen"} == {"categorical": {}, "imputed": {}, "unseen": {},
                                                                       "labels": [0, 1, 2, 3]}
    assert set(fast.encoding["seen"]["columns"]) == {"a", "b", "c", "d"}


def test_numeric_matrix_imputes_train_medians_like_the_column_path(tmp_path, monkeypatch):
    _write(tmp_path / "data.csv", ["a", "b", "c", "d", "label"], _mixed_rows())
    fast = _load(tmp_path, "  missing: impute\n")
    monkeypatch.setattr(S, "_plain_number", lambda col: False)
    slow = _load(tmp_path, "  missing: impute\n")
    assert set(fast.encoding["imputed"]) == {"a", "b", "c", "d"}
    for col in "abcd":
        assert fast.encoding["imputed"][col] == pytest.approx(slow.encoding["imputed"][col], rel=1e-6)
    for a, b in ((fast.train, slow.train), (fast.val, slow.val), (fast.raw_test(), slow.raw_test())):
        assert np.isfinite(a.x).all()
        np.testing.assert_array_equal(a.x, b.x)


def test_matrix_builder_handles_many_record_batches_and_zero_features():
    import pyarrow as pa

    parts = [pa.table({"a": pa.array([1.5, None, 3.0]), "b": pa.array([1, 2, None], pa.int64())}) for _ in range(4)]
    table = pa.concat_tables(parts)
    assert table.column("a").num_chunks == 4
    m = S._numeric_matrix(table, ["b", "a"])
    expect = np.tile(np.array([[1, 1.5], [2, np.nan], [np.nan, 3.0]], np.float32), (4, 1))
    np.testing.assert_array_equal(m, expect)
    assert S._numeric_matrix(table, []).shape == (12, 0)


class _T:
    def __init__(self, y, origin="f.csv"):
        self.target, self.origin, self.target_name = np.asarray(y), origin, "label"


def test_numeric_labels_by_binary_search_match_sorted_classes():
    tables = {"train": _T([7, 3, 3, 9, 7]), "val": _T([9, 3]), "test": _T([7.0, 3.0])}
    task, ys, classes = _encode_target(tables, None)
    assert task == "classification" and classes == [3, 7, 9]
    assert ys["train"].tolist() == [1, 0, 0, 2, 1] and ys["val"].tolist() == [2, 0] and ys["test"].tolist() == [1, 0]
    assert all(v.dtype == np.int64 for v in ys.values())
    with pytest.raises(DataError) as e:
        _encode_target({"train": _T([1, 2, 1]), "val": _T([1, 5]), "test": _T([2, 4])}, "classification")
    assert "[5]" in str(e.value) and "val" in str(e.value) and "never in train" in str(e.value)
    with pytest.raises(DataError) as e:
        _encode_target({"train": _T([4, 4]), "val": _T([4]), "test": _T([4])}, "classification")
    assert "single class (4)" in str(e.value)


def test_stratified_split_groups_are_the_classes_in_row_order():
    y = np.random.default_rng(3).integers(0, 5, 2000)
    got = split_indices(len(y), y, 0.1, 0.2, seed=11, stratify=True)
    # the same split as drawing each class's rows from flatnonzero, the definition before the stable sort
    rng = np.random.default_rng(11)
    parts = {"train": [], "val": [], "test": []}
    for k in range(5):
        g = rng.permutation(np.flatnonzero(y == k))
        n_test, n_val = int(round(len(g) * 0.2)), int(round(len(g) * 0.1))
        parts["test"].append(g[:n_test])
        parts["val"].append(g[n_test:n_test + n_val])
        parts["train"].append(g[n_test + n_val:])
    for split, idx in zip(("train", "val", "test"), got):
        np.testing.assert_array_equal(idx, np.sort(np.concatenate(parts[split])))


@pytest.mark.parametrize("d", [1, 2, 7, 50])
def test_row_hashes_separate_distinct_rows_and_join_equal_ones(d):
    rng = np.random.default_rng(d)
    x = rng.integers(0, 3, size=(20000, d)).astype(np.float32)       # many exact repeats
    h = row_hashes(x)
    assert len(np.unique(h)) == len(np.unique(x, axis=0))             # equal rows alike, distinct rows apart
    y = rng.normal(size=(5000, d)).astype(np.float32)
    z = y.copy()
    z[::2, d - 1] = np.nextafter(z[::2, d - 1], np.float32(np.inf))    # one ulp in the last column
    assert (row_hashes(z)[::2] != row_hashes(y)[::2]).all() and (row_hashes(z)[1::2] == row_hashes(y)[1::2]).all()


def test_row_hashes_fold_signed_zero_and_nan_payloads():
    a = np.array([[0.0, 1.0, np.nan], [-0.0, 1.0, -np.nan], [1.0, 0.0, np.nan]], np.float32)
    h = row_hashes(a)
    assert h[0] == h[1] != h[2]
    assert row_hashes(np.zeros((3, 0), np.float32)).tolist() == [0, 0, 0]


def test_all_finite_sees_one_bad_cell_in_any_chunk():
    x = np.zeros((40000, 3), np.float32)
    assert all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        x[39999, 2] = bad
        assert not all_finite(x)
        x[39999, 2] = 0


def test_large_csv_parses_numbers_to_float32_and_rereads_when_text_hides_below_the_head(tmp_path, monkeypatch):
    rows = _mixed_rows(400)
    _write(tmp_path / "data.csv", ["a", "b", "c", "d", "label"], rows)
    plain = _load(tmp_path)
    monkeypatch.setattr(S, "TYPED_READ_BYTES", 0)          # every file counts as large
    monkeypatch.setattr(S, "HEAD_BYTES", 2000)             # the head: the first ~50 rows
    table = S._read_csv(tmp_path / "data.csv", float32_except="label")
    assert [str(table.schema.field(n).type) for n in ("a", "b", "c", "d", "label")] == \
        ["float", "float", "bool", "float", "int64"]        # booleans and the target keep their inferred type
    typed = _load(tmp_path)
    np.testing.assert_array_equal(typed.train.x, plain.train.x)
    assert typed.fingerprint == plain.fingerprint
    rows[350][3] = "unknown"                                # text far below the head: the typed read fails
    _write(tmp_path / "data.csv", ["a", "b", "c", "d", "label"], rows)
    table = S._read_csv(tmp_path / "data.csv", float32_except="label")
    assert str(table.schema.field("d").type) == "string" and str(table.schema.field("a").type) == "double"
    with pytest.raises(DataError) as e:                     # ... and the plain read's message names the column
        _load(tmp_path)
    assert "'d'" in str(e.value) and "mixes numbers and text" in str(e.value)
