"""data.leak: rows shared between splits, told apart as copies (a leak), equal inputs with other targets
(irreducible noise, not a leak) and coincidences that the data's own few, discrete inputs make expected.

Comparing inputs alone calls two survey respondents with the same answers, or two sales of the same PC at
different prices, a leak. A copy of a train row in val shares its target too, so the verdict counts rows equal
in inputs AND target, and compares that rate with how often train repeats its own rows: a val row drawn from
the same data meets its twin in train about as often as a train row meets one among the other train rows.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from recipe import checks as C

EXAMPLES = 5
PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
DISCRETE_LEVELS = 20       # a column with at most this many distinct train values counts as discrete
PREFIX_ROWS = 4096         # rows of each column looked at first for more than DISCRETE_LEVELS values
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def with_target(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row hashes of (inputs, target): the input hash mixed with the target's float64 bits."""
    yb = np.ascontiguousarray(np.asarray(y, dtype=np.float64) + 0.0).view(np.uint64)   # + 0.0 folds -0.0
    with np.errstate(over="ignore"):
        t = (yb ^ (yb >> np.uint64(29))) * _MIX
        return h ^ (t ^ (t >> np.uint64(32)))


def _member(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    if not len(ordered) or not len(values):
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return ordered[pos] == values


def _repeat_rate(ordered: np.ndarray) -> float:
    """Fraction of rows whose hash equals another row's in the same split (leave-one-out match rate), from
    the split's sorted hashes: a row has a twin exactly when a neighbour in sorted order equals it."""
    if len(ordered) < 2:
        return 0.0
    eq = ordered[1:] == ordered[:-1]
    twin = np.zeros(len(ordered), bool)
    twin[1:] |= eq
    twin[:-1] |= eq
    return float(twin.mean())


def later_repeats(ordered: np.ndarray) -> int:
    """Rows equal to an earlier row, from sorted hashes: in sorted order, every row equal to its predecessor."""
    return int(np.count_nonzero(ordered[1:] == ordered[:-1])) if len(ordered) > 1 else 0


def _dedup_share(all_xy: np.ndarray) -> float:
    """Share of all rows that deduplicating (keeping one row per identical inputs+target) would discard."""
    return later_repeats(np.sort(all_xy)) / len(all_xy) if len(all_xy) > 1 else 0.0


def derive(hashes: dict[str, np.ndarray], splits: dict[str, Any]) -> dict[str, np.ndarray]:
    """Adds, once, each split's (inputs, target) hashes `<s>_xy` and the sorted `<s>_sorted` / `<s>_xy_sorted` of
    train and val: data.leak and data.duplicates read the same arrays instead of hashing and sorting twice."""
    for s, sp in splits.items():
        if f"{s}_xy" not in hashes:
            hashes[f"{s}_xy"] = with_target(hashes[s], sp.y)
    for s in ("train", "val"):
        for k in (s, f"{s}_xy"):
            if k in hashes and f"{k}_sorted" not in hashes:
                hashes[f"{k}_sorted"] = np.sort(hashes[k])
    return hashes


def _levels(col: np.ndarray) -> tuple[int, np.ndarray]:
    """Distinct values of one column (NaNs count as one value, -0.0 as 0.0) and their counts."""
    _, counts = np.unique(col, return_counts=True)
    return len(counts), counts


def _many_levels_column(x: np.ndarray, rows: int = PREFIX_ROWS) -> int | None:
    """A column that holds more than DISCRETE_LEVELS distinct values within its first `rows` rows, if any:
    more values in a part means more in the whole, so this proves it without reading the whole column."""
    head = np.ascontiguousarray(x[:rows].T)
    for j in range(head.shape[0]):
        if _levels(head[j])[0] > DISCRETE_LEVELS:
            return j
    return None


def _levels_and_bits(x: np.ndarray, names: list[str]) -> tuple[dict[str, Any], float]:
    """Evidence on how discrete the inputs are, and the sum of the columns' entropies in bits (inf once a
    column has more than DISCRETE_LEVELS values). Exact either way: every column is counted in full until one
    shows many values (its head is looked at first, so continuous data costs one column's count)."""
    if not len(x) or not x.shape[1]:
        return {"max_levels_per_column": 0}, 0.0
    many = _many_levels_column(x)
    if many is None:
        bits, top = 0.0, 0
        for j in range(x.shape[1]):
            n, counts = _levels(x[:, j])
            if n > DISCRETE_LEVELS:
                many = j
                break
            top = max(top, n)
            p = counts / counts.sum()
            bits += float(-(p * np.log2(p)).sum())
        else:
            return {"max_levels_per_column": top}, bits
    # one column with many values decides it: not few and discrete (the other columns are not counted)
    return {"max_levels_per_column": None, "many_levels_column": names[many],
            "many_levels_column_levels": _levels(x[:, many])[0]}, math.inf


def _rows(split, mask) -> list[int]:
    return [int(r) for r in split.rows[np.flatnonzero(mask)[:EXAMPLES]]]


def check_leak(ds, th, hashes, splits: dict[str, Any]) -> C.Check:
    """`hashes` holds each split's input row hashes (derive() adds the rest); `splits` maps names to Split."""
    max_fraction = th["max_fraction"]
    derive(hashes, splits)
    hxy = {s: hashes[f"{s}_xy"] for s in splits}
    sorted_x = {s: hashes[f"{s}_sorted"] for s in ("train", "val")}
    sorted_xy = {s: hashes[f"{s}_xy_sorted"] for s in ("train", "val")}
    ev: dict[str, Any] = {"max_fraction": max_fraction}
    worst_exact, worst_pair, inputs_only = 0.0, None, []
    for a, b in PAIRS:
        same_x = _member(hashes[b], sorted_x[a])
        exact = _member(hxy[b], sorted_xy[a])
        other = same_x & ~exact                          # inputs seen in `a`, but only with other targets
        n_b = max(len(hashes[b]), 1)
        ev[f"{b}_in_{a}"] = int(exact.sum())             # identical rows, inputs and target
        ev[f"{b}_inputs_in_{a}_other_target"] = int(other.sum())
        if exact.any():
            ev[f"{b}_in_{a}_rows"] = _rows(splits[b], exact)
        if other.any():
            ev[f"{b}_inputs_in_{a}_rows"] = _rows(splits[b], other)
            inputs_only.append((float(other.sum() / n_b), f"{int(other.sum())} {b} rows ({other.sum() / n_b:.1%}) "
                                f"share inputs with {a} rows but not their target"))
        if exact.sum() / n_b > worst_exact or worst_pair is None:
            worst_exact, worst_pair = float(exact.sum() / n_b), (a, b, int(exact.sum()), n_b)
    a, b, n_exact, n_b = worst_pair
    # how often distinct train rows coincide on their own: the rate a fresh row from the same data meets a twin
    repeat_xy, repeat_x = _repeat_rate(sorted_xy["train"]), _repeat_rate(sorted_x["train"])
    x = splits["train"].x
    levels, bits = _levels_and_bits(x, ds.feature_names)
    top = levels["max_levels_per_column"]
    # few and discrete: every column has few values and, by the columns' own entropies, there are at most
    # 16x as many likely input combinations as train rows, so equal inputs are expected by chance alone
    discrete = top is not None and 0 < top <= DISCRETE_LEVELS and bits <= math.log2(max(len(x), 2)) + 4
    # distinct samples demonstrably share inputs when train repeats inputs with other targets at least as often
    # as it repeats whole rows (a copied row repeats both)
    natural = discrete or (repeat_x > 0 and repeat_x - repeat_xy >= repeat_xy)
    margin = 3 * math.sqrt(max(repeat_xy * (1 - repeat_xy), 1e-12) / n_b) + 1 / n_b   # binomial noise, 3 sd
    explained = natural and worst_exact <= repeat_xy + margin
    everything = np.concatenate([hxy[s] for s in splits])
    ev.update(worst=f"{b}_in_{a}", worst_fraction=round(worst_exact, 4), train_repeat_rate=round(repeat_xy, 4),
              train_input_repeat_rate=round(repeat_x, 4), **levels,
              input_entropy_bits=round(bits, 1) if math.isfinite(bits) else None, discrete_inputs=discrete, dedup_would_discard=round(_dedup_share(everything), 4))
    # the largest such share speaks for all pairs (each pair's count is in the evidence)
    noise_note = (f"; {max(inputs_only)[1]} (irreducible noise, not a leak)") if inputs_only else ""
    if worst_exact > max_fraction and not explained:
        discard = ev["dedup_would_discard"]
        advice = ("Deduplicate before splitting (or split by group) so val/test measure generalization."
                  if discard <= 0.2 else
                  f"Split by group (all copies of one sample in one split): deduplicating would discard {discard:.0%} "
                  "of the rows.")
        return C.make("data.leak", "fail", f"identical rows (inputs and target) across splits: {n_exact} {b} rows "
                      f"({worst_exact:.1%}) also in {a}, while train repeats its own rows at {repeat_xy:.1%}"
                      + noise_note, ev, advice)
    if worst_exact > 0:
        why = (f"below {max_fraction:.0%}" if worst_exact <= max_fraction else
               f"as often as train repeats its own rows ({repeat_xy:.1%}): the inputs are few and discrete "
               f"(at most {top} values per column)" if discrete else
               f"as often as train repeats its own rows ({repeat_xy:.1%}), and train repeats inputs with other "
               f"targets at {repeat_x - repeat_xy:.1%}: distinct samples share inputs here")
        return C.make("data.leak", "warn", f"{n_exact} {b} rows ({worst_exact:.1%}) equal a {a} row in inputs and "
                      f"target, {why}" + noise_note, ev,
                      "Likely distinct samples that coincide; if they are copies of one sample, split by group.")
    if inputs_only:
        return C.make("data.leak", "warn", "no row appears in two splits with its target" + noise_note, ev,
                      "Not a leak: a model can at best predict the average target of such inputs.")
    return C.make("data.leak", "pass", "no sample appears in two splits", ev)
