"""`recipe init DIR --data FILE`: read a table's header and a sample, propose target, task, features and
data.missing, and write a config that `recipe inspect` accepts on that file as it is."""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from recipe.errors import DataError

TARGET_NAMES = ("target", "label", "labels", "class", "y", "outcome", "species", "category", "diagnosis")
ID_NAME = re.compile(r"(^|_|\b)(id|uuid|guid|index|key|row)(_|$|\b)|^unnamed", re.IGNORECASE)
MAX_CLASSES = 30            # an integer target with at most this many values (and repeats) is a class label


@dataclass
class Proposal:
    target: str
    task: str
    features: list[str]
    dropped: dict[str, str] = field(default_factory=dict)        # column -> why
    missing: str = "fail"
    rows: int = 0
    notes: list[str] = field(default_factory=list)


def _read(path: Path):
    from recipe.data.sources import _read_csv, _read_parquet

    if not path.exists():
        raise DataError(f"{path}: no such file (--data)")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise DataError(f"{path}: --data takes a .csv, .tsv or .parquet table (got '{suffix or 'no suffix'}')")


def _why_drop(name: str, values: list, typ) -> Optional[str]:
    """Why a feature column cannot help a model: an ID, a date/time, free text, or nothing but missing values."""
    import pyarrow.types as pt

    from recipe.data.sources import _DATE

    present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not present:
        return "every value is missing"
    if pt.is_temporal(typ):
        return f"a date/time ({typ}): derive numeric features from it if they matter"
    if pt.is_nested(typ) or pt.is_binary(typ) or pt.is_large_binary(typ):
        return f"holds {typ} values"
    unique = len(set(present)) == len(present) and len(present) >= 20
    if isinstance(present[0], str):
        if sum(bool(_DATE.fullmatch(v)) for v in present) >= 0.9 * len(present):
            return f"dates/times as text (e.g. '{present[0]}')"
        words = sorted(len(v.split()) for v in present)
        if words[len(words) // 2] >= 3 and len(set(present)) >= 0.5 * len(present):
            return f"free text (e.g. '{present[0][:30]}'): recipe does not featurize text in tables"
        if unique:
            return "one distinct value per row: an identifier"
    elif unique and (ID_NAME.search(name) or _is_counter(present)):
        return "one distinct value per row, counting up: an identifier"
    return None


def _is_counter(values: list) -> bool:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(np.all(arr == np.round(arr))) and bool(np.all(np.diff(np.sort(arr)) == 1))


def _task(values: list) -> str:
    present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not present or isinstance(present[0], (str, bool)):
        return "classification"
    arr = np.asarray(present, dtype=float)
    distinct = np.unique(arr)
    if np.all(arr == np.round(arr)) and len(distinct) <= MAX_CLASSES and len(distinct) < 0.5 * len(arr):
        return "classification"
    return "regression"


def propose(path: Path, target: Optional[str] = None, sample_rows: int = 20000) -> Proposal:
    table = _read(path)
    names = table.column_names
    if target is None:
        lowered = {n.lower(): n for n in names}
        target = next((lowered[t] for t in TARGET_NAMES if t in lowered), names[-1])
        guessed = True
    else:
        guessed = False
        if target not in names:
            close = difflib.get_close_matches(target, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (columns: {', '.join(names[:12])})"
            raise DataError(f"{path}: target column '{target}' not found (--target){hint}")
    sample = table.slice(0, sample_rows)
    y = sample.column(target).to_pylist()
    out = Proposal(target=target, task=_task(y), features=[], rows=table.num_rows)
    if guessed:
        out.notes.append(f"target '{target}' guessed from the column names; pass --target COL to choose another")
    for name in names:
        if name == target:
            continue
        why = _why_drop(name, sample.column(name).to_pylist(), sample.schema.field(name).type)
        if why:
            out.dropped[name] = why
        else:
            out.features.append(name)
    if not out.features:
        raise DataError(f"{path}: no usable feature column: " + "; ".join(f"{k}: {v}" for k, v in out.dropped.items()))
    nulls = {n: table.column(n).null_count for n in out.features if table.column(n).null_count}
    if nulls:
        out.missing = "impute"
        out.notes.append("missing values in " + ", ".join(f"{n} ({c})" for n, c in list(nulls.items())[:6])
                         + ": data.missing: impute (train medians / most frequent)")
    missing_labels = table.column(target).null_count
    if missing_labels:
        out.notes.append(f"{missing_labels} rows have no '{target}': remove them from the file before inspect")
    return out


def _yaml_str(s: str) -> str:
    import json

    return json.dumps(s)     # a JSON string is a valid YAML scalar, quoting whatever needs it


def render(p: Proposal, name: str, data_path: str) -> str:
    """The config text, with a comment on every proposal recipe made."""
    hidden = "[64, 64]" if p.rows < 5000 else "[256, 256]"
    lines = [f"# recipe experiment config proposed from {data_path} ({p.rows} rows); check it, then",
             f"# `recipe inspect {name}.yaml` starts stage 1.",
             f"name: {name}",
             "seed: 0",
             f"task: {p.task}",
             "data:",
             f"  source: {_yaml_str(data_path)}",
             f"  target: {_yaml_str(p.target)}"]
    if p.dropped:
        lines.append("  features:               # all columns but the target, less these:")
        lines += [f"  #   dropped {k}: {v}" for k, v in p.dropped.items()]
        lines += [f"    - {_yaml_str(f)}" for f in p.features]
    lines += [f"  missing: {p.missing}",
              "  split: {val: 0.15, test: 0.15" + (", stratify: true}" if p.task == "classification" else "}"),
              "  normalize: standard     # statistics from the train split only",
              "model:",
              "  kind: mlp",
              f"  hidden: {hidden}",
              "train:",
              "  optimizer: adam",
              "  lr: 1.0e-3",
              "  batch_size: 64",
              "  epochs: 30",
              "tune:",
              "  trials: 20"]
    return "\n".join(lines) + "\n"


def relative_to(config_dir: Path, data: Path) -> str:
    """The data path as the config should hold it: relative paths resolve against the config's folder."""
    try:
        return os.path.relpath(data.resolve(), config_dir.resolve())
    except ValueError:          # another drive on Windows
        return str(data.resolve())
