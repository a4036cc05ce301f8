"""A table above the memory budget, streamed from Parquet row groups: the same split (split_indices on the target
column, read alone), the same label mapping and train-only normalization as the in-memory path (statistics from
one streaming pass over the files, which also hashes the fingerprint), and a CSV converted once to Parquet under
runs/<name>/data/. Only targets and row numbers stay in memory; features are read a row group at a time."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from recipe.data import digests
from recipe.data.dataset import SPLITS, Dataset
from recipe.data.sources import Table
from recipe.data.splitting import split_indices, strat_key
from recipe.data.streaming import PARQUET_SUFFIXES, Decision, parquet_files
from recipe.data.targets import _encode_target, _infer_task, real_valued
from recipe.errors import DataError, RecipeError

CONVERT_ROWS = 65_536          # rows per row group of a converted CSV: ~13 MB of float32 at 50 features
CODE = {s: i for i, s in enumerate(SPLITS)}


@dataclass
class Piece:
    """One row group of one Parquet file and where its rows start in its source's row numbering."""

    file: str
    group: int
    start: int
    rows: int


@dataclass
class Source:
    """One named source (data.source, or data.train/val/test): its Parquet row groups and each row's split."""

    origin: str
    pieces: list[Piece]
    codes: np.ndarray           # (rows,) int8: CODE of the split each row belongs to

    @property
    def rows(self) -> int:
        return len(self.codes)


class StreamedRows:
    """A streamed split as stages see it: targets and row numbers in memory, features only through the engine's
    streamed batches (ctx.tensors). What needs the feature matrix in memory is refused by name."""

    def __init__(self, split: str, y: np.ndarray, rows: np.ndarray):
        self.split, self.y, self.rows = split, y, rows

    @property
    def x(self):
        raise RecipeError(f"the {self.split} split is streamed from disk (it is over data.memory_budget): this step "
                          "needs its feature matrix in memory; raise data.memory_budget to load it, or use the steps "
                          "that stream (training and evaluation)")


@dataclass
class StreamedDataset(Dataset):
    """A Dataset whose splits stream: `sources` hold the row groups, `features`/`target` the columns to read."""

    sources: list[Source] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    target_name: str = "label"
    streamed = True

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


# ----------------------------------------------------------------------------- files


def parquet_of(cfg, spec: str, workdir: Path, converted: dict[str, str]) -> list[Path]:
    """The Parquet files of one source: itself, a folder's files, or a CSV converted once (reused while the
    CSV's digest is unchanged)."""
    p = cfg.resolve(spec)
    if p.is_dir():
        return parquet_files(p)
    if p.suffix.lower() in PARQUET_SUFFIXES:
        return [p]
    digest = digests.file_digest(p)
    out = workdir / "data" / f"{p.stem}-{digest[:16]}.parquet"
    if not out.exists():
        convert_csv(p, out, cfg.data.target)
    converted[str(p)] = str(out)
    return [out]


def convert_csv(path: Path, out: Path, target: str) -> None:
    """CSV -> Parquet in blocks (pyarrow's streaming CSV reader), numeric columns as float32, written to a temp
    name and renamed so that a crash never leaves a half file that looks converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".parquet.tmp")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        head = csv.open_csv(path, parse_options=csv.ParseOptions(delimiter=delimiter))
        numeric = {f.name: pa.float32() for f in head.schema
                   if f.name != target and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))}
        head.close()
        reader = csv.open_csv(path, parse_options=csv.ParseOptions(delimiter=delimiter),
                              convert_options=csv.ConvertOptions(column_types=numeric, strings_can_be_null=True),
                              read_options=csv.ReadOptions(block_size=8 << 20))
        with pq.ParquetWriter(tmp, reader.schema) as writer:
            pending, rows = [], 0
            for batch in reader:
                pending.append(batch)
                rows += batch.num_rows
                if rows >= CONVERT_ROWS:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=CONVERT_ROWS)
                    pending, rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=CONVERT_ROWS)
    except (pa.ArrowException, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot convert the CSV to Parquet for streaming "
                        f"({str(e).splitlines()[0][:200]})") from None
    tmp.replace(out)


def pieces_of(files: list[Path]) -> list[Piece]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, start = [], 0
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{f}: cannot read Parquet ({e})") from None
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n:
                out.append(Piece(str(f), g, start, n))
                start += n
    return out


def _columns(files: list[Path], cfg, origin: str) -> list[str]:
    """The feature columns, checked as the in-memory reader checks them; streaming takes numeric ones only."""
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    schema = pq.read_schema(files[0])
    names, target = schema.names, cfg.data.target
    if target not in names:
        raise DataError(f"{origin}: target column '{target}' not found (data.target) (columns: "
                        f"{', '.join(names[:12])})")
    wanted = cfg.data.features if cfg.data.features is not None else [n for n in names if n != target]
    missing = [f for f in wanted if f not in names]
    if missing:
        raise DataError(f"{origin}: feature column(s) {', '.join(map(repr, missing))} not found (data.features)")
    for f in files[1:]:         # a folder's files must all hold the columns (footers only)
        lacking = [n for n in [*wanted, target] if n not in pq.read_schema(f).names]
        if lacking:
            raise DataError(f"{f}: column(s) {', '.join(map(repr, lacking[:5]))} missing (the other files of "
                            f"{origin} have them)")
    for n in wanted:
        typ = schema.field(n).type
        if not (pt.is_integer(typ) or pt.is_floating(typ) or pt.is_boolean(typ)):
            raise DataError(f"{origin}: column '{n}' is {typ}: a streamed table (over data.memory_budget) takes "
                            "numeric feature columns only; drop it with data.features or raise data.memory_budget")
    return list(wanted)


def _target(files: list[Path], name: str, origin: str) -> np.ndarray:
    """The target column alone, in file order: what the split and the label mapping need."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipe.data.sources import _column_array

    try:
        # one Array, not a ChunkedArray: ChunkedArray.to_numpy imports pandas (seconds per process)
        col = pa.concat_arrays([c for f in files for c in pq.ParquetFile(f).read(columns=[name]).column(name).chunks])
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{origin}: cannot read the target column '{name}' ({str(e).splitlines()[0]})") from None
    return _column_array(col, Path(origin), name, is_target=True)


# ----------------------------------------------------------------------------- load


def load(cfg, decision: Decision, workdir: Path) -> StreamedDataset:
    """Split, encode and fingerprint a table too big for memory, reading its features a row group at a time."""
    d = cfg.data
    if d.missing == "impute":
        raise DataError("data.missing: impute needs train medians over the whole table, which streaming does not "
                        "compute; use data.missing: fail (non-finite rows are reported), or raise "
                        "data.memory_budget")
    converted: dict[str, str] = {}
    specs = {"source": d.source} if d.train is None else {s: getattr(d, s) for s in SPLITS if getattr(d, s)}
    files = {k: parquet_of(cfg, spec, workdir, converted) for k, spec in specs.items()}
    origins = {k: str(cfg.resolve(spec)) for k, spec in specs.items()}
    columns = _columns(files[next(iter(files))], cfg, origins[next(iter(files))])
    for k in files:
        if _columns(files[k], cfg, origins[k]) != columns:
            raise DataError(f"{origins[k]}: its feature columns differ from {origins[next(iter(files))]}'s")
    targets = {k: _target(files[k], d.target, origins[k]) for k in files}
    sources = [Source(origins[k], pieces_of(files[k]), _codes(cfg, k, targets[k], "val" not in files,
                                                             "test" not in files)) for k in files]
    parts = {s: [] for s in SPLITS}
    for src, y in zip(sources, targets.values()):
        for s in SPLITS:
            rows = np.flatnonzero(src.codes == CODE[s])
            parts[s].append((src.origin, y[rows], rows))
    tables = {s: Table(origin=parts[s][0][0] if len(parts[s]) == 1 else origins[next(iter(files))],
                       target=np.concatenate([y for _, y, _ in parts[s]]) if parts[s] else np.zeros(0),
                       target_name=d.target) for s in SPLITS}
    for s, t in tables.items():
        if t.n_rows == 0:
            raise DataError(f"{t.origin}: the {s} split is empty (data.split.{s} too small?)")
    rows = {s: np.concatenate([r for _, _, r in parts[s]]) for s in SPLITS}
    del targets, parts          # the raw labels: the encoded ones below are what stays
    task, ys, classes = _encode_target(tables, cfg.task)
    del tables
    shape = tuple(int(v) for v in d.shape) if d.shape else (len(columns),)
    if int(np.prod(shape)) != len(columns):
        raise DataError(f"data.shape {list(shape)} holds {int(np.prod(shape))} values per sample, "
                        f"but the data has {len(columns)} features")
    from recipe.data.stream_stats import scan

    norm, content = scan(sources, columns, d.normalize, shape)
    meta = (task, columns, classes, shape)
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(content[s])
        h.update(np.ascontiguousarray(ys[s]).data)
    h.update(repr(meta).encode())
    target_stats: dict[str, float] = {}
    if classes is None:
        fin = ys["train"][np.isfinite(ys["train"])].astype(np.float64)
        target_stats = {"mean": float(fin.mean()) if fin.size else 0.0,
                        "std": float(fin.std()) if fin.size and fin.std() > 1e-12 else 1.0}
    encoding: dict[str, Any] = {"streamed": True}
    if classes is not None:
        encoding["labels"] = classes
    split = {s: StreamedRows(s, ys[s], rows[s]) for s in SPLITS}
    every = [Path(p.file) for src in sources for p in src.pieces]
    file_list = list(dict.fromkeys([*converted, *map(str, every)]))
    ds = StreamedDataset(task=task, feature_names=columns, shape=shape, classes=classes, train=split["train"],
                         val=split["val"], _test=split["test"], norm=norm, target_stats=target_stats,
                         encoding=encoding, files={f: digests.file_digest(Path(f)) for f in file_list},
                         origin=sources[0].origin, kind="table-streamed", sources=sources, columns=columns,
                         target_name=d.target)
    ds.fingerprint = h.hexdigest()[:16]
    decision.files = tuple(file_list)
    if converted:
        ds.extra["converted"] = converted
    return ds


def _codes(cfg, key: str, y: np.ndarray, split_val: bool, split_test: bool) -> np.ndarray:
    """Each row's split: the seeded split of one source, or a given file's own split (the missing ones split
    off train), with split_indices exactly as the in-memory path calls it."""
    d = cfg.data
    n = len(y)
    codes = np.full(n, CODE[key] if key in CODE else CODE["train"], np.int8)
    if key == "source":
        if n < 3:
            raise DataError(f"{cfg.resolve(d.source)}: {n} row(s) cannot be split into train/val/test")
        by_labels = d.split.stratify and not real_valued(cfg.task or _infer_task(
            y if y.dtype != object else np.array(["a"], dtype=object)))
        parts = split_indices(n, strat_key(y) if by_labels else None, d.split.val, d.split.test, cfg.seed,
                              d.split.stratify)
    elif key == "train" and (split_val or split_test):
        fr = {"val": d.split.val if split_val else 0.0, "test": d.split.test if split_test else 0.0}
        yy = y if d.split.stratify else None
        parts = split_indices(n, strat_key(yy), fr["val"], fr["test"], cfg.seed, d.split.stratify)
    else:
        return codes
    for s, idx in zip(SPLITS, parts):
        codes[idx] = CODE[s]
    return codes


def read_piece(piece: Piece, columns: list[str], target: Optional[str] = None, cache: Optional[dict] = None):
    """One row group's features as a (rows, D) float32 matrix (and its raw target column). pyarrow.parquet reads
    it; pyarrow.dataset would too, but importing it imports pandas (1.2 s per process).
    `cache` keeps each file open for its next row group."""
    import pyarrow.parquet as pq

    from recipe.data.sources import _numeric_matrix

    cache = {} if cache is None else cache
    if piece.file not in cache:
        cache[piece.file] = pq.ParquetFile(piece.file)
    table = cache[piece.file].read_row_group(piece.group, columns=columns + ([target] if target else []))
    x = _numeric_matrix(table, columns)
    return x, (table.column(target).to_numpy(zero_copy_only=False) if target else None)
