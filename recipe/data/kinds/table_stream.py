"""The streamed table kind: inspect on a table over data.memory_budget in one streaming pass over its row
groups (row hashes for duplicates, leaks and label conflicts; non-finite cells; running train moments and
min/max; a fixed uniform sample of train rows), plus the label checks that need only the targets. A check
that needs the whole feature matrix in memory is a `skip` that says so, never a pass."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.kinds import table_checks as T
from recipe.data.kinds.base import DataCheck
from recipe.data.kinds.look import EXAMPLES
from recipe.data.kinds.registry import register
from recipe.data.kinds.table import TableKind

SAMPLE_ROWS = 20_000      # train rows kept for what judges a sample (data.leak's discreteness of the inputs)
NOT_STREAMED = ("not run: this check needs the whole feature matrix in memory, and the data is streamed (over "
                "data.memory_budget)")
RAISE_BUDGET = "Raise data.memory_budget (or inspect a sample of the data in memory) to run it."


class _Sample:
    """train as data.leak reads it: every target and row number, and a uniform sample of its feature rows."""

    def __init__(self, split, x: np.ndarray):
        self.y, self.rows, self.x = split.y, split.rows, x


def scan(ds) -> dict[str, Any]:
    """One pass over every row group: per split row hashes (in the splits' row order) and non-finite cells;
    train moments, min/max and a sample. Cached on the dataset: the checks of one inspect share it."""
    if "_inspect_scan" in ds.__dict__:
        return ds.__dict__["_inspect_scan"]
    from recipe.data.hashing import row_hashes
    from recipe.data.stream_stats import Moments
    from recipe.data.stream_table import CODE, read_piece

    splits = {"train": ds.train, "val": ds.val, "test": ds.raw_test()}
    n_train = len(ds.train.y)
    keep = np.sort(np.random.default_rng(0).choice(n_train, min(SAMPLE_ROWS, n_train), replace=False))
    hashes = {s: [] for s in splits}
    bad = {s: {"rows": 0, "examples": [], "columns": np.zeros(ds.num_features, bool), "nan": 0, "inf": 0}
           for s in splits}
    seen = {s: 0 for s in splits}
    mom, sample = Moments(ds.num_features), []
    cache: dict = {}
    for src in ds.sources:
        for piece in src.pieces:
            x, _ = read_piece(piece, ds.columns, cache=cache)
            codes = src.codes[piece.start:piece.start + piece.rows]
            for s in splits:
                at = np.flatnonzero(codes == CODE[s])
                if not len(at):
                    continue
                rows = x[at]
                hashes[s].append(row_hashes(rows))
                finite = np.isfinite(rows)
                row_bad = ~finite.all(1)
                if row_bad.any():
                    b = bad[s]
                    b["rows"] += int(row_bad.sum())
                    b["examples"] += [int(src_row) for src_row in (piece.start + at[row_bad])[:EXAMPLES]]
                    b["columns"] |= ~finite.all(0)
                    b["nan"] += int(np.isnan(rows).sum())
                    b["inf"] += int(np.isinf(rows).sum())
                if s == "train":
                    mom.add(rows)
                    lo = np.searchsorted(keep, seen[s])
                    hi = np.searchsorted(keep, seen[s] + len(rows))
                    sample.append(rows[keep[lo:hi] - seen[s]])
                seen[s] += len(rows)
        cache.clear()
    out = {"hashes": {s: np.concatenate(h) if h else np.zeros(0, np.uint64) for s, h in hashes.items()},
           "bad": bad, "moments": mom,
           "sample": np.concatenate(sample) if sample else np.zeros((0, ds.num_features), np.float32)}
    ds.__dict__["_inspect_scan"] = out
    return out


def check_non_finite(ds) -> C.Check:
    """recipe/data/kinds/table_checks.py's check_non_finite, from the streaming pass's counts."""
    ev: dict[str, Any] = {}
    total = 0
    for s, b in scan(ds)["bad"].items():
        if b["rows"]:
            total += b["rows"]
            ev[s] = {"rows": b["rows"], "example_rows": b["examples"][:EXAMPLES],
                     "columns": [ds.feature_names[j] for j in np.flatnonzero(b["columns"])[:EXAMPLES]],
                     "nan": b["nan"], "inf": b["inf"]}
        y = (ds.raw_test() if s == "test" else getattr(ds, s)).y
        if not ds.has_classes and (~np.isfinite(y)).any():
            ybad = ~np.isfinite(y)
            total += int(ybad.sum())
            ev[f"{s}_target"] = {"rows": int(ybad.sum()), "example_rows": [int(r) for r in
                                                                          getattr(ds, s).rows[ybad][:EXAMPLES]]}
    if total:
        where = "; ".join(f"{s}: {v['rows']} rows" + (f" in {', '.join(v['columns'])}" if "columns" in v else "")
                          for s, v in ev.items())
        return C.make("data.non-finite", "fail", f"NaN/inf values: {where}", ev,
                      "Fix or drop those rows at the source, or set data.missing: impute (train medians) for NaN.")
    return C.make("data.non-finite", "pass", "no NaN or inf in inputs or targets",
                  {"checked_rows": len(ds.train.y) + len(ds.val.y) + len(ds.raw_test().y), "streamed": True})


def check_constant(ds, th) -> C.Check:
    """check_constant from the running train min/max: a column is constant when its finite min equals its max."""
    mom = scan(ds)["moments"]
    d = ds.num_features
    const = np.flatnonzero(mom.lo == mom.hi)
    zero = [j for j in const if mom.lo[j] == 0]
    return T.constant_verdict(ds, const, zero, d, th)


def check_leak(ds, th) -> C.Check:
    """check_leak on the full row hashes; only its guess whether the inputs are few and discrete reads a
    uniform sample of train rows (said in the evidence)."""
    from recipe.data.leak import check_leak as judge

    found = scan(ds)
    splits = {"train": _Sample(ds.train, found["sample"]), "val": ds.val, "test": ds.raw_test()}
    check = judge(ds, th, found["hashes"], splits)
    check.evidence["discreteness_from_sample_rows"] = len(found["sample"])
    return check


def _in_memory_only(check_id: str):
    def judge(look, th):
        if check_id == "data.outliers":     # its robust z on every row is not streamed yet
            return C.make("data.outliers", "skip", NOT_STREAMED, {"streamed": True}, RAISE_BUDGET)
        return C.make(check_id, "skip", NOT_STREAMED, {"streamed": True}, RAISE_BUDGET)
    return judge


@register
class StreamedTableKind(TableKind):
    """Tables streamed from Parquet row groups (recipe/data/stream_table.py); never chosen from a config:
    recipe/data/streaming.py names it for the data it streams."""

    name = "table-streamed"
    priority = -100

    def claims(self, cfg) -> bool:
        return False

    def fits(self, ds) -> bool:
        return getattr(ds, "streamed", False)

    def fingerprint(self, ds) -> str:
        return ds.fingerprint       # hashed while the data loaded (recipe/data/stream_stats.py)

    def checks(self) -> list[DataCheck]:
        streamed = {
            "data.load": lambda look, th: T.check_load(look.ds),
            "data.non-finite": lambda look, th: check_non_finite(look.ds),
            "data.constant": lambda look, th: check_constant(look.ds, th),
            "data.duplicates": lambda look, th: T.check_duplicates(look.ds, th, scan(look.ds)["hashes"]),
            "data.leak": lambda look, th: check_leak(look.ds, th),
            "data.label-conflict": lambda look, th: T.check_label_conflict(look.ds, th, scan(look.ds)["hashes"]),
            "data.imbalance": lambda look, th: T.check_imbalance(look.ds, th),
            "data.order": lambda look, th: T.check_order(look.ds, th, look.cfg.train.batch_size),
            "data.size": lambda look, th: T.check_size(look.ds, th),
            "data.split-shift": lambda look, th: T.check_split_shift(look.ds, th),      # labels only
        }
        return [DataCheck(c.id, streamed.get(c.id) or _in_memory_only(c.id)) for c in super().checks()]

    def pictures(self, look) -> list[str]:
        from recipe.data.kinds.table_pictures import target_picture

        return target_picture(look)      # feature histograms need the matrix

    def report(self, look) -> dict[str, Any]:
        look.__dict__["moments"] = scan(look.ds)["moments"].mean_std()    # Look.moments would read the matrix
        return super().report(look)
