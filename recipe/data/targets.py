"""Targets: the task a target column implies, class ids with the label mapping, or real values."""
from __future__ import annotations

from typing import Optional

import numpy as np

from recipe.data.sources import Table
from recipe.errors import DataError


def real_valued(task: str) -> bool:
    """Whether the task's targets are real values rather than class ids (the task says; no torch is imported)."""
    from recipe import tasks

    return not tasks.get(task).has_classes


def _infer_task(y: np.ndarray) -> str:
    """The task a table's target implies when the config names none: labels (text, booleans, few integers)
    or real values."""
    if y.dtype == object or y.dtype == bool or np.issubdtype(y.dtype, np.str_):
        return "classification"
    finite = y if np.issubdtype(y.dtype, np.integer) else y[np.isfinite(y.astype(float))]
    if finite.size and np.all(np.mod(finite, 1) == 0):
        distinct = len(np.unique(finite))
        if distinct <= max(20, int(np.sqrt(len(y)) / 2)) and (np.issubdtype(y.dtype, np.integer) or distinct <= 20):
            return "classification"
    return "regression"


def _is_missing(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in a], dtype=bool)
    return np.isnan(a.astype(float))


def _encode_target(tables: dict[str, Table], task: Optional[str]) -> tuple[str, dict[str, np.ndarray], Optional[list]]:
    ys = {s: t.target for s, t in tables.items()}
    train_y = ys["train"]
    task = task or _infer_task(np.concatenate([np.asarray(y) for y in ys.values()]) if train_y.dtype != object
                               else train_y)
    if real_valued(task):
        out = {}
        for s, y in ys.items():
            try:
                out[s] = np.array([np.nan if v is None else float(v) for v in y], dtype=np.float32) \
                    if y.dtype == object else y.astype(np.float32)
            except (TypeError, ValueError):
                raise DataError(f"{tables[s].origin}: target '{tables[s].target_name}' is not numeric; "
                                "set task: classification") from None
        return task, out, None
    by_file: dict[str, list[tuple[str, np.ndarray]]] = {}    # one file may hold every split: count over all of it
    for s, y in ys.items():
        miss = _is_missing(y) if y.dtype == object or np.issubdtype(y.dtype, np.floating) else np.zeros(len(y), bool)
        if miss.any():
            by_file.setdefault(str(tables[s].origin), []).append((s, np.flatnonzero(miss)))
    for origin, found in by_file.items():
        total = sum(len(rows) for _, rows in found)
        where = ", ".join(f"{len(rows)} in {s} (rows {rows[:5].tolist()})" for s, rows in found)
        s = found[0][0]
        raise DataError(f"{origin}: target column '{tables[s].target_name}' has {total} missing labels ({where}); "
                        "drop those rows")
    if train_y.dtype != object and all(y.dtype != object for y in ys.values()):
        return task, *_class_ids(tables, ys)
    as_key = (lambda y: np.array([str(v) for v in y], dtype=object)) if train_y.dtype == object else (lambda y: y)
    classes = sorted(set(as_key(train_y).tolist()), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise DataError(f"{tables['train'].origin}: target '{tables['train'].target_name}' has a single class "
                        f"({classes[0] if classes else 'none'}) in train; classification needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for s, y in ys.items():
        keys = as_key(y).tolist()
        unseen = sorted({k for k in keys if k not in index}, key=str)
        if unseen:
            raise DataError(f"{tables[s].origin}: label(s) {unseen[:5]} appear in the {s} split but never in train; "
                            "the model cannot learn them (fix the split or drop those rows)")
        out[s] = np.array([index[k] for k in keys], dtype=np.int64)
    plain = [c.item() if hasattr(c, "item") else c for c in classes]
    return task, out, plain


def _class_ids(tables: dict[str, Table], ys: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
    """Numeric labels: classes are train's distinct values in order, ids found by binary search."""
    classes = np.unique(ys["train"])
    if len(classes) < 2:
        raise DataError(f"{tables['train'].origin}: target '{tables['train'].target_name}' has a single class "
                        f"({classes[0] if len(classes) else 'none'}) in train; classification needs two or more")
    out = {}
    for s, y in ys.items():
        ids = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
        unseen = classes[ids] != y
        if unseen.any():
            raise DataError(f"{tables[s].origin}: label(s) {np.unique(y[unseen])[:5].tolist()} appear in the {s} "
                            "split but never in train; the model cannot learn them (fix the split or drop those rows)")
        out[s] = ids.astype(np.int64)
    return out, classes.tolist()

