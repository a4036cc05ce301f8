"""Data sources: each returns a Table (named columns) or arrays, naming the file in every error."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from recipe.errors import DataError

BUILTINS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class Table:
    """Rows from one source: feature columns (or a matrix), a target, where it came from."""

    origin: str                         # file path or description, for messages
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # tabular sources
    matrix: Optional[np.ndarray] = None  # array sources: (N, ...) samples; all-numeric tables: (N, D) float32
    names: Optional[list[str]] = None    # the matrix's column names when it holds a table's numeric columns
    target: Optional[np.ndarray] = None
    target_name: str = "label"
    shape: Optional[tuple[int, ...]] = None  # natural per-sample shape (images)
    files: list[str] = field(default_factory=list)  # files read, for the gate's data digests
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. image-folder findings

    @property
    def n_rows(self) -> int:
        if self.matrix is not None:
            return len(self.matrix)
        return len(self.target) if self.target is not None else 0

    def take(self, idx: np.ndarray) -> "Table":
        return Table(
            origin=self.origin,
            columns={k: v[idx] for k, v in self.columns.items()},
            matrix=None if self.matrix is None else self.matrix[idx],
            names=self.names,
            target=None if self.target is None else self.target[idx],
            target_name=self.target_name,
            shape=self.shape,
            files=self.files,
            extra=self.extra,
        )


def read_source(spec: str, resolve, target: str, features: Optional[list[str]]) -> Table:
    """Dispatch on the source string: builtin:, module:function, or a path."""
    if spec.startswith("builtin:"):
        return _builtin(spec.split(":", 1)[1])
    path = resolve(spec)
    if not path.exists() and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        return _callable(spec)
    if path.is_dir():
        from recipe.data.images import read_image_folder

        return read_image_folder(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found (data.source)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return _columns(_read_csv(path, float32_except=target), path, target, features)
    if suffix in (".parquet", ".pq"):
        return _columns(_read_parquet(path), path, target, features)
    raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv, .parquet, .npz or an image folder)")


def _builtin(name: str) -> Table:
    if name not in BUILTINS:
        raise DataError(f"builtin:{name}: unknown builtin dataset (choose from {', '.join(BUILTINS)})")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    shape = (1, 8, 8) if name == "digits" else None
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(x.shape[1])]
    cols = {n: x[:, i] for i, n in enumerate(names)}
    return Table(origin=f"builtin:{name}", columns=cols, target=np.asarray(bunch.target),
                 target_name="target", shape=shape)


def _callable(spec: str) -> Table:
    module_name, func_name = spec.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"{spec}: cannot import data function ({e})") from None
    out = func()
    if isinstance(out, dict):
        x, y = out.get("x"), out.get("y")
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        x, y = out
    else:
        raise DataError(f"{spec}: the data function must return (x, y) or {{'x': ..., 'y': ...}}")
    return arrays(np.asarray(x), np.asarray(y), spec)


def _npz(path: Path) -> Table:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{path}: NPZ must hold arrays 'x' and 'y' (missing {', '.join(missing)}; "
                                f"found {', '.join(z.files) or 'none'})")
            x, y = z["x"], z["y"]
    except DataError:
        raise
    except ValueError as e:
        raise DataError(f"{path}: cannot load NPZ without pickle ({e}); store numeric arrays") from None
    except (OSError, EOFError, Exception) as e:  # zipfile.BadZipFile and friends
        raise DataError(f"{path}: unreadable NPZ ({e.__class__.__name__}: {e})") from None
    t = arrays(x, y, str(path))
    t.files = [str(path)]
    return t


def arrays(x: np.ndarray, y: np.ndarray, origin: str) -> Table:
    """Samples `x` (N, ...) and one label or value per sample `y` as a Table; a kind that reads arrays uses it."""
    if x.dtype == object or y.dtype == object:
        raise DataError(f"{origin}: 'x' and 'y' must be numeric arrays (got {x.dtype} and {y.dtype})")
    if x.ndim < 2:
        x = x.reshape(-1, 1)
    if len(x) != len(y):
        raise DataError(f"{origin}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    if y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        else:
            raise DataError(f"{origin}: 'y' must be one label or value per sample (got shape {y.shape})")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise DataError(f"{origin}: 'x' must be numeric (got dtype {x.dtype})")
    shape = tuple(x.shape[1:]) if x.ndim > 2 else None
    return Table(origin=origin, matrix=x.reshape(len(x), -1).astype(np.float32), target=y, shape=shape)


# ----------------------------------------------------------------------------- columnar files


TYPED_READ_BYTES = 8 << 20   # files from this size up parse their numeric columns straight to float32
HEAD_BYTES = 1 << 20         # the head whose inferred types decide which columns those are


def _float32_types(path: Path, delimiter: str, keep: str) -> dict:
    """float32 for every column the file's head reads as int or float (all but `keep`, the target): parsing
    to float32 writes half the memory of float64 and leaves nothing to convert. {} for small files, which
    read fast anyway and keep the plain inference."""
    import pyarrow as pa
    from pyarrow import csv

    if path.stat().st_size < TYPED_READ_BYTES:
        return {}
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    head = head[:head.rfind(b"\n") + 1]
    try:
        sample = csv.read_csv(pa.py_buffer(head), parse_options=csv.ParseOptions(delimiter=delimiter),
                              convert_options=csv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowException, OSError):   # the full read reports the problem
        return {}
    return {f.name: pa.float32() for f in sample.schema
            if f.name != keep and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))}


def _read_csv(path: Path, float32_except: Optional[str] = None):
    """The CSV as an Arrow table. With float32_except (the target's name), a large file parses its numeric
    columns to float32; if one holds text further down than its head, the file is read again untyped."""
    import pyarrow as pa
    from pyarrow import csv

    try:
        head = path.open("rb").read(4096)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not head.strip():
        raise DataError(f"{path}: the file is empty")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte char cut at the block edge is fine
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    types = _float32_types(path, delimiter, float32_except) if float32_except is not None else {}

    def read(column_types: dict):
        return csv.read_csv(path, parse_options=csv.ParseOptions(delimiter=delimiter),
                            convert_options=csv.ConvertOptions(strings_can_be_null=True, column_types=column_types),
                            memory_pool=_memory_pool())

    try:
        try:
            table = read(types)
        except pa.ArrowInvalid:
            if not types:
                raise
            table = read({})   # text below the head, or a ragged row: the plain read finds which and where
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0]
        if "UTF8" in msg or "utf8" in msg.lower():
            raise DataError(f"{path}: not UTF-8 text ({msg}); re-save the file as UTF-8") from None
        ragged = re.search(r"Expected (\d+) columns, got (\d+)", msg)
        if ragged:
            line = _ragged_line(path, delimiter, int(ragged.group(1)))
            raise DataError(f"{path}: malformed CSV: line {line} has {ragged.group(2)} fields but the header has "
                            f"{ragged.group(1)} (ragged rows)") from None
        raise DataError(f"{path}: malformed CSV ({msg})") from None
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read CSV ({e})") from None
    names = table.column_names
    for name, col in zip(names, table.columns):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            raise DataError(f"{path}: column '{name}' holds bytes that are not UTF-8 text; re-save the file as UTF-8")
    if names and names[0].startswith("\ufeff"):
        table = table.rename_columns([names[0][1:], *names[1:]])
    if table.num_rows == 0:
        raise DataError(f"{path}: header only, no data rows")
    if table.num_columns == 1 and delimiter == "," and any(d in table.column_names[0] for d in (";", "\t", "|")):
        raise DataError(f"{path}: only one column '{table.column_names[0][:40]}' was found; "
                        "the file seems to use another delimiter than ','")
    return table


def small_pages() -> None:
    """numpy asks the kernel for huge pages on large arrays; where the kernel compacts memory to find them
    (defrag=madvise, the common default), fresh arrays stalled: 800 MB of new matrices took 1.2-2.4 s with
    huge pages and 0.3-0.7 s without on a 2-core VM. Data arrays are written once and streamed, so huge
    pages buy little here. (Private numpy switch, hence the guard; NUMPY_MADVISE_HUGEPAGE=1 keeps them.)"""
    import os

    if os.environ.get("NUMPY_MADVISE_HUGEPAGE") == "1":
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        return
    _set_madvise_hugepage(False)


def _memory_pool():
    """jemalloc where this pyarrow has it, else the default pool. Reading a 1M x 50 CSV with the default
    (mimalloc) spent 2.4 s in the kernel, faulting in pages it had just given back; jemalloc 0.5 s (a 6.0 s
    read became 4.0 s on 2 cores, measured with scripts/bench_inspect.py's file)."""
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return None


def _ragged_line(path: Path, delimiter: str, expected: int) -> str:
    """1-based line number of the first row whose field count differs from the header's."""
    import csv as pycsv

    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = pycsv.reader(f, delimiter=delimiter)
        for row in reader:
            if row and len(row) != expected:
                return str(reader.line_num)
    return "?"


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read Parquet ({e})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    return table


def _columns(table, path: Path, target: str, features: Optional[list[str]]) -> Table:
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column names: {', '.join(dupes)}")
    if target not in names:
        import difflib

        close = difflib.get_close_matches(target, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (columns: {', '.join(names[:12])})"
        raise DataError(f"{path}: target column '{target}' not found (data.target){hint}")
    wanted = features if features is not None else [n for n in names if n != target]
    missing = [f for f in wanted if f not in names]
    if missing:
        raise DataError(f"{path}: feature column(s) {', '.join(map(repr, missing))} not found (data.features)")
    if target in wanted:
        raise DataError(f"{path}: the target column '{target}' is also listed in data.features")
    target_col = table.column(target)
    if all(_plain_number(table.column(n)) for n in wanted):
        # the common case, all features numbers: one float32 matrix, filled a record batch at a time, so that
        # splitting takes rows of one array instead of gathering every column once per split
        y = _column_array(target_col, path, target)
        return Table(origin=str(path), matrix=_numeric_matrix(table, wanted), names=list(wanted), target=y,
                     target_name=target, files=[str(path)])
    cols: dict[str, np.ndarray] = {}
    for name in wanted + [target]:
        cols[name] = _column_array(table.column(name), path, name, is_target=name == target)
    y = cols.pop(target)
    return Table(origin=str(path), columns=cols, target=y, target_name=target, files=[str(path)])


def _plain_number(col) -> bool:
    """Integers, floats, and booleans without nulls: float32 as they are (a null is NaN)."""
    import pyarrow.types as pt

    typ = col.type
    return pt.is_integer(typ) or pt.is_floating(typ) or (pt.is_boolean(typ) and col.null_count == 0)


def _numeric_matrix(table, names: list[str]) -> np.ndarray:
    """Numeric columns as a C-ordered (N, D) float32 matrix: each record batch (about 2k rows of a CSV) is
    stacked into its rows while its columns are still in cache; 3x faster than writing column by column."""
    out = np.empty((table.num_rows, len(names)), np.float32)
    if not names:
        return out
    i = 0
    for batch in table.select(names).to_batches():
        n = batch.num_rows
        if n:
            np.stack([c.to_numpy(zero_copy_only=False) for c in batch.columns], axis=1, out=out[i:i + n],
                     casting="unsafe")
        i += n
    return out


def _column_array(col, path: Path, name: str, is_target: bool = False) -> np.ndarray:
    """One column as numbers (float or int), or as objects for text; refuses types recipe cannot encode."""
    import pyarrow as pa
    import pyarrow.types as pt

    typ = col.type
    if pt.is_nested(typ) or pt.is_struct(typ) or pt.is_map(typ):
        raise DataError(f"{path}: column '{name}' holds nested values ({typ}); flatten it or drop it with data.features")
    if pt.is_temporal(typ):
        raise DataError(f"{path}: column '{name}' is a date/time ({typ}); derive numeric features from it "
                        "or drop it with data.features")
    if pt.is_binary(typ) or pt.is_large_binary(typ):
        raise DataError(f"{path}: column '{name}' holds binary values; drop it with data.features")
    if pt.is_dictionary(typ):
        col = col.cast(pa.string())
        typ = col.type
    if pt.is_boolean(typ):
        arr = np.array([np.nan if v is None else float(v) for v in col.to_pylist()], dtype=np.float32) \
            if col.null_count else col.to_numpy(zero_copy_only=False).astype(np.float32)
    elif pt.is_integer(typ) or pt.is_floating(typ) or pt.is_decimal(typ):
        arr = col.to_numpy(zero_copy_only=False)
        arr = arr.astype(np.float64) if pt.is_decimal(typ) else arr
    elif pt.is_string(typ) or pt.is_large_string(typ) or pt.is_null(typ):
        arr = np.array(col.to_pylist(), dtype=object)
        if not is_target:
            _refuse_dates_and_text(arr, path, name)
    else:
        raise DataError(f"{path}: column '{name}' has unsupported type {typ}; drop it with data.features")
    return arr


# date/time written as text: 2024-01-31, 31/01/2024, 1.2.24, 10:30, "Jan 5 2024", optionally with a time part
_DATE = re.compile(
    r"\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2}:\d{2}(:\d{2})?"
    r"|(\d{1,2}\s+)?(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(,?\s+\d{4})?)"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2}|[ap]\.?m\.?)?\s*",
    re.IGNORECASE)


def _refuse_dates_and_text(values: np.ndarray, path: Path, name: str) -> None:
    """Text columns recipe cannot encode as categories: dates/times and free text. Refuse, naming the column."""
    present = [v for v in values if isinstance(v, str) and v.strip()]
    if len(present) < 5:
        return
    sample = present[:2000]
    if sum(bool(_DATE.fullmatch(v)) for v in sample) >= 0.9 * len(sample):
        raise DataError(f"{path}: column '{name}' holds dates/times (e.g. '{sample[0]}'); derive numeric features "
                        "from it or drop it with data.features")
    words = sorted(len(v.split()) for v in sample)
    distinct = len(set(sample)) / len(sample)
    if words[len(words) // 2] >= 3 and distinct >= 0.5:
        raise DataError(f"{path}: column '{name}' looks like free text ({len(set(sample))} distinct values, e.g. "
                        f"'{sample[0][:40]}'); recipe does not featurize text: drop it with data.features")
