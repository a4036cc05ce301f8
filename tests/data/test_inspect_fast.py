"""inspect's fast paths conclude what the slow ones did: data.leak's repeat rates and discreteness from sorted
hashes and column heads, equal to the np.unique definitions they replace."""
import math

import numpy as np

from recipe.data import leak as L


def _old_repeat_rate(h):
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def test_repeat_rate_and_dedup_share_from_sorted_hashes_equal_the_unique_counts():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 500, 2000).astype(np.uint64)       # many repeats, groups of all sizes
    assert L._repeat_rate(np.sort(h)) == _old_repeat_rate(h)
    assert L._dedup_share(h) == 1.0 - len(np.unique(h)) / len(h)
    distinct = np.arange(100, dtype=np.uint64)
    assert L._repeat_rate(distinct) == 0.0 and L._dedup_share(distinct) == 0.0
    twice = np.repeat(distinct, 2)
    assert L._repeat_rate(twice) == 1.0 and L._dedup_share(twice) == 0.5
    assert L._repeat_rate(np.array([3], np.uint64)) == 0.0


def test_discreteness_counts_every_column_in_full_until_one_has_many_values():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(10_000, 4)).astype(np.float32)
    ev, bits = L._levels_and_bits(x, ["a", "b", "c", "d"])
    assert ev == {"max_levels_per_column": 3}
    assert math.isclose(bits, 4 * math.log2(3), rel_tol=1e-3)
    # a 21st value far below the head (row 9000) is still found: discrete columns are counted in full
    x[9000, 2] = 7.0
    for v in range(8, 26):
        x[9000 + v, 2] = v
    ev, bits = L._levels_and_bits(x, ["a", "b", "c", "d"])
    assert ev == {"max_levels_per_column": None, "many_levels_column": "c", "many_levels_column_levels": 22}
    assert bits == math.inf


def test_a_continuous_column_is_named_with_its_exact_level_count():
    rng = np.random.default_rng(2)
    amount = rng.permutation(np.repeat(np.arange(25_000) * 0.25, 2))   # every value twice: 25,000 distinct
    x = np.column_stack([rng.integers(0, 2, 50_000), amount]).astype(np.float32)
    ev, bits = L._levels_and_bits(x, ["flag", "amount"])
    assert ev == {"max_levels_per_column": None, "many_levels_column": "amount",
                  "many_levels_column_levels": len(np.unique(x[:, 1]))}
    assert ev["many_levels_column_levels"] == 25_000 and bits == math.inf
    # NaNs count as one value and -0.0 as 0.0, as np.unique counts them
    y = np.array([[0.0], [-0.0], [np.nan], [np.nan], [1.0]], np.float32)
    assert L._levels_and_bits(y, ["z"])[0] == {"max_levels_per_column": 3}


def _signal(tmp_path, x, y):
    from recipe import checks as C
    from recipe.config import load as load_config
    from recipe.data import load as load_data
    from recipe.data.kinds.table_probes import check_signal
    from tests.conftest import write_config

    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_data(load_config(write_config(tmp_path, "name: s\nseed: 0\ndata:\n  source: d.npz\n")))
    return check_signal(ds, C.thresholds("data.signal"), 0)


def test_signal_runs_the_trees_only_when_the_linear_probe_does_not_already_clear_min_gain(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    c = _signal(tmp_path, x, y)
    lin = c.evidence["linear"]
    assert c.status == "pass" and lin["score"] - lin["shuffled"] > 0.5
    assert c.evidence["trees"].startswith("not run: the linear probe's gain already clears min_gain 0.02")
    assert abs(c.evidence["gain"] - (lin["score"] - lin["shuffled"])) < 2e-4
    # XOR of two signs: no line separates it, so the trees must run, and they find the signal
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(8000, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    c = _signal(tmp_path, x, y)
    assert c.evidence["linear"]["score"] - c.evidence["linear"]["shuffled"] < 0.02
    assert c.status == "pass" and c.evidence["trees"]["score"] > 0.9 and c.evidence["gain"] > 0.3, c.evidence
