"""In memory or streamed: the memory budget (data.memory_budget, or half of the RAM available now), the size a
table source would take in memory (Parquet metadata, or a CSV's size times the expansion its first block shows),
and the decision with its reason, printed by the stage and recorded in its record and data report."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from recipe.errors import DataError

DEFAULT_FRACTION = 0.5       # of the available RAM: the training process, its workers and the OS page cache share it
CSV_HEAD_BYTES = 1 << 20     # the block of a CSV whose parse measures bytes in memory per byte on disk
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Decision:
    """How a table loads: 'memory' (the in-memory path) or 'stream' (recipe/data/stream_table.py), and why."""

    mode: str
    reason: str
    budget: int                      # bytes
    budget_from: str                 # data.memory_budget | psutil | /proc/meminfo | sysconf
    estimate: Optional[int] = None   # bytes the in-memory path would hold at its peak
    rows: Optional[int] = None
    features: Optional[int] = None
    files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        return d

def describe(loading: dict[str, Any]) -> str:
    """The one line a stage prints about a decision (Decision.as_dict())."""
    size = f"~{_human(loading['estimate'])}" if loading.get("estimate") is not None else "size unknown"
    how = "streamed from disk" if loading["mode"] == "stream" else "in memory"
    return f"data: {how} ({size}; budget {_human(loading['budget'])}, {loading['budget_from']}): {loading['reason']}"


def _human(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def available_ram() -> tuple[int, str]:
    """Bytes of RAM available now and where the number came from: psutil where it is installed, else the
    kernel's MemAvailable (/proc/meminfo), else free pages (sysconf)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available), "psutil"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "sysconf"


def budget(cfg) -> tuple[int, str]:
    """The memory budget in bytes and its origin."""
    if cfg.data.memory_budget is not None:
        return int(cfg.data.memory_budget), "data.memory_budget"
    ram, where = available_ram()
    return int(ram * DEFAULT_FRACTION), f"{DEFAULT_FRACTION:.0%} of available RAM ({where})"


def table_paths(cfg) -> Optional[list[Path]]:
    """The table files the config names (a folder of Parquet files counts as its files); None where a source
    is not a table file (builtin:, module:function, .npz, an image folder): those always load in memory."""
    d = cfg.data
    specs = [d.source] if d.train is None else [s for s in (d.train, d.val, d.test) if s is not None]
    out: list[Path] = []
    for spec in specs:
        if spec.startswith("builtin:"):
            return None
        p = cfg.resolve(spec)
        if p.is_dir():
            files = parquet_files(p)
            if not files:
                return None
            out.extend(files)
        elif p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
            out.append(p)
        else:
            return None
    return out


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files of a folder (recursively, sorted): a Parquet dataset as pyarrow.dataset reads it."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)


def is_parquet_folder(cfg, spec: Optional[str]) -> bool:
    if spec is None or spec.startswith("builtin:"):
        return False
    p = cfg.resolve(spec)
    return p.is_dir() and bool(parquet_files(p))


def _feature_count(names: list[str], cfg) -> int:
    if cfg.data.features is not None:
        return len(cfg.data.features)
    return len([n for n in names if n != cfg.data.target])


def parquet_size(path: Path, cfg) -> tuple[int, int, int]:
    """(rows, features, bytes of the columns read) from a Parquet file's footer, reading no data: fixed-width
    columns are rows x their width, others their uncompressed size in the footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read Parquet ({e})") from None
    wanted = set(cfg.data.features or [n for n in schema.names if n != cfg.data.target]) | {cfg.data.target}
    rows = meta.num_rows
    var_bytes: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            var_bytes[col.path_in_schema] = var_bytes.get(col.path_in_schema, 0) + col.total_uncompressed_size
    total = 0
    for field in schema:
        if field.name not in wanted:
            continue
        try:
            width = field.type.bit_width // 8
        except ValueError:                   # strings and other variable-width types
            width = 0
        total += rows * max(width, 1) if width else var_bytes.get(field.name, 0) + 8 * rows
    return rows, _feature_count(schema.names, cfg), total


def csv_size(path: Path, cfg) -> tuple[int, int, int]:
    """(rows, features, bytes) of a CSV estimated from its first block: the Arrow table it parses to, per
    byte of text, times the file's size (and rows likewise)."""
    import pyarrow as pa
    from pyarrow import csv

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(CSV_HEAD_BYTES)
    whole = len(head) >= size
    head = head if whole else head[:head.rfind(b"\n") + 1]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = csv.read_csv(pa.py_buffer(head), parse_options=csv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowException, OSError, ValueError):
        # the reader that loads the file names the problem (ragged line, encoding, empty): size it as text
        return 0, 0, size
    scale = 1.0 if whole or not head else size / len(head)
    return int(table.num_rows * scale), _feature_count(table.column_names, cfg), int(table.nbytes * scale)


def estimate(paths: list[Path], cfg) -> tuple[int, int, int]:
    """(rows, features, bytes at the in-memory path's peak): the Arrow table as read, plus the float32 matrix and
    its split copies (2 x rows x features x 4) built from it (recipe/data/sources.py, kinds/table.py)."""
    rows = features = arrow = 0
    for p in paths:
        r, f, b = parquet_size(p, cfg) if p.suffix.lower() in PARQUET_SUFFIXES else csv_size(p, cfg)
        rows, features, arrow = rows + r, max(features, f), arrow + b
    return rows, features, arrow + 2 * rows * features * 4


def decide(cfg) -> Decision:
    """In memory or streamed, and why: streamed when the in-memory path's peak would exceed the budget."""
    limit, origin = budget(cfg)
    paths = table_paths(cfg)
    if paths is None:
        return Decision("memory", "not a CSV/Parquet table source: it loads in memory", limit, origin)
    rows, features, need = estimate(paths, cfg)
    files = tuple(str(p) for p in paths)
    if need <= limit:
        return Decision("memory", f"the table fits the budget ({rows} rows x {features} features)", limit, origin,
                        need, rows, features, files)
    return Decision("stream", f"the table ({rows} rows x {features} features) would need ~{_human(need)} in memory, "
                    f"over the budget of {_human(limit)}", limit, origin, need, rows, features, files)


def load(cfg, workdir: Path):
    """The experiment's data, in memory where it fits the budget and streamed where it does not; the decision
    rides along in ds.extra['loading'] (the stage record and data report carry it)."""
    from recipe.data import kinds

    d = cfg.data
    folder = any(is_parquet_folder(cfg, s) for s in (d.source, d.train, d.val, d.test))
    kind = kinds.get("table") if folder else kinds.choose(cfg)
    decision = decide(cfg) if isinstance(kind, type(kinds.get("table"))) else None     # tables and images
    if decision is not None and decision.mode == "memory" and folder:
        # the in-memory reader takes files, not a Parquet folder: it streams whatever its size
        decision.mode, decision.reason = "stream", decision.reason + "; a Parquet folder is always streamed"
    if decision is not None and decision.mode == "stream":
        from recipe.data import stream_table

        ds = stream_table.load(cfg, decision, workdir)
    else:
        ds = kinds.load(cfg)       # the in-memory path, as before
    if decision is not None:
        ds.extra["loading"] = decision.as_dict()
    return ds
