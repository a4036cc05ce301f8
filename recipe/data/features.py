"""Table features as float32 matrices: one-hot levels, imputed values and numeric parsing, from train only."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from recipe.data import seen
from recipe.data.sources import Table
from recipe.errors import DataError


def encode_tables(tables: dict[str, Table], cfg) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """Turn each split's columns into a float32 matrix with levels/medians from train only."""
    train = tables["train"]
    if train.matrix is not None and train.names is not None:
        return _encode_numeric(tables, cfg)
    if train.matrix is not None:
        return {s: t.matrix for s, t in tables.items()}, [f"x{i}" for i in range(train.matrix.shape[1])], {}
    names, blocks, encoding = [], {s: [] for s in tables}, {"categorical": {}, "imputed": {}, "unseen": {}}
    facts: dict[str, dict] = {}     # what train showed of each column, for predict's warnings (recipe.data.seen)
    encoding["seen"] = seen.seen_block(facts)
    for col, values in train.columns.items():
        if values.dtype == object:
            present = [v for v in values if v is not None]
            if present and all(isinstance(v, str) for v in present):
                numeric = _try_numeric(values)
            else:
                numeric = None
            if numeric is None:
                _refuse_mostly_numeric(train.origin, col, present)
                levels = sorted({str(v) for v in present})
                if len(levels) > cfg.data.max_categories:
                    raise DataError(
                        f"{train.origin}: column '{col}' has {len(levels)} distinct text values, more than "
                        f"data.max_categories={cfg.data.max_categories}; drop it with data.features or encode it"
                    )
                fill = None
                if cfg.data.missing == "impute" and not present:
                    raise _nothing_to_impute(train.origin, col)
                if cfg.data.missing == "impute" and present:
                    vals, counts = np.unique([str(v) for v in present], return_counts=True)
                    fill = str(vals[counts.argmax()])
                    encoding["imputed"][col] = fill
                encoding["categorical"][col] = levels
                facts[col] = seen.record_levels(values)
                for s, t in tables.items():
                    block, unseen = _one_hot(t.columns[col], levels, fill)
                    blocks[s].append(block)
                    if unseen and s != "train":
                        encoding["unseen"][f"{s}:{col}"] = unseen
                names += [f"{col}={lv}" for lv in levels]
                continue
            for t in tables.values():
                t.columns[col] = _try_numeric(t.columns[col], origin=t.origin, col=col)
        names.append(col)
        facts[col] = seen.record_numeric(train.columns[col].astype(np.float32))   # the values the model sees
        fill = None
        if cfg.data.missing == "impute":
            tr = train.columns[col].astype(np.float64)
            finite = tr[np.isfinite(tr)]
            if not finite.size:
                raise _nothing_to_impute(train.origin, col)
            fill = float(np.median(finite))
            encoding["imputed"][col] = fill
        for s, t in tables.items():
            v = t.columns[col].astype(np.float32)
            if fill is not None:
                v = np.where(np.isnan(v), np.float32(fill), v)
            blocks[s].append(v[:, None])
    out = {s: _assemble(b, tables[s].n_rows) for s, b in blocks.items()}
    return out, names, encoding


def _encode_numeric(tables: dict[str, Table], cfg) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """A table whose features are all numbers arrives as one float32 matrix per split: only imputation is
    left to do (train medians, as for separate columns)."""
    train = tables["train"]
    names = list(train.names)
    encoding: dict[str, Any] = {"categorical": {}, "imputed": {}, "unseen": {}}
    xs = {s: t.matrix for s, t in tables.items()}
    encoding["seen"] = seen.seen_block({col: seen.record_numeric(train.matrix[:, j]) for j, col in enumerate(names)})
    if cfg.data.missing != "impute":
        return xs, names, encoding
    fills = np.empty(len(names), np.float32)
    for j, col in enumerate(names):
        v = train.matrix[:, j]
        finite = v[np.isfinite(v)].astype(np.float64)
        if not finite.size:
            raise _nothing_to_impute(train.origin, col)
        fills[j] = np.median(finite)
        encoding["imputed"][col] = float(str(fills[j]))   # the value written, as its shortest decimal
    for x in xs.values():   # each split's matrix is its own (rows taken from the file's): fill in place
        np.copyto(x, fills, where=np.isnan(x))
    return xs, names, encoding


def _assemble(blocks: list[np.ndarray], n: int, rows: int = 8192) -> np.ndarray:
    """Columns side by side as one float32 (n, d) matrix, a block of rows at a time: 5x faster than one
    concatenate, which writes each column across the whole matrix."""
    out = np.empty((n, sum(b.shape[1] for b in blocks)), np.float32)
    if out.shape[1]:
        for i in range(0, n, rows):
            out[i:i + rows] = np.concatenate([b[i:i + rows] for b in blocks], axis=1)
    return out


def _refuse_mostly_numeric(origin: str, col: str, present: list) -> None:
    """A numeric column with a few text cells ('unknown', '?') is a typo or a missing marker, not a category."""
    text = []
    for v in present:
        try:
            float(v)
        except (TypeError, ValueError):
            text.append(v)
    if present and len(text) <= 0.1 * len(present):
        examples = ", ".join(repr(v) for v in sorted(set(map(str, text)))[:3])
        raise DataError(f"{origin}: column '{col}' mixes numbers and text ({len(text)} text cell(s): {examples}); "
                        "write missing values as empty or NA, or drop the column with data.features")


def _nothing_to_impute(origin: str, col: str) -> DataError:
    return DataError(f"{origin}: column '{col}' has no value in the train split, so there is nothing to impute "
                     "from (data.missing: impute); drop it with data.features")


def _try_numeric(values: np.ndarray, origin: str = "", col: str = "") -> Optional[np.ndarray]:
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        if origin:
            raise DataError(f"{origin}: column '{col}' mixes numbers and text") from None
        return None


def _one_hot(values: np.ndarray, levels: list[str], fill: Optional[str]) -> tuple[np.ndarray, int]:
    index = {lv: i for i, lv in enumerate(levels)}
    out = np.zeros((len(values), len(levels)), np.float32)
    unseen = 0
    for r, v in enumerate(values):
        if v is None and fill is not None:
            v = fill
        if v is None:
            out[r, :] = np.nan   # data.non-finite reports it (data.missing: fail)
            continue
        i = index.get(str(v))
        if i is None:
            unseen += 1
        else:
            out[r, i] = 1.0
    return out, unseen

