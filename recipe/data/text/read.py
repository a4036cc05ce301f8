"""Read text documents: a .txt file (cut into contiguous chunks), a folder of .txt files (one document each), or a
CSV/Parquet/JSONL file with a text column (and an optional label column). Every error names file and place."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from recipe.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")
BOM = "\ufeff"


@dataclass
class Docs:
    """Documents from one source, in source order: text, a name each (file, file#chunk or file:row), labels."""

    origin: str
    texts: list[str]
    names: list[str]
    labels: Optional[list[Any]] = None
    files: list[str] = field(default_factory=list)
    chunked: bool = False          # one long file cut into data.chunk_chars pieces

    def take(self, idx) -> "Docs":
        idx = [int(i) for i in idx]
        return Docs(self.origin, [self.texts[i] for i in idx], [self.names[i] for i in idx],
                    None if self.labels is None else [self.labels[i] for i in idx], self.files, self.chunked)


@dataclass
class BadBytes:
    """Where a file stops being UTF-8: the byte offset, the bytes there, and the line they sit on."""

    file: str
    offset: int
    line: int
    bytes: str

    def __str__(self) -> str:
        return f"{self.file}: byte offset {self.offset} (line {self.line}) is not UTF-8 ({self.bytes})"


def is_text_source(path: Path) -> bool:
    """A .txt file, or a folder that holds .txt files: data read as documents, not as a table or images."""
    if path.is_dir():
        return any(path.glob("*.txt"))
    return path.suffix.lower() == ".txt"


def scan_bytes(path: Path, limit: int = 20) -> list[BadBytes]:
    """Every place (up to `limit`) where the file's bytes are not valid UTF-8."""
    raw = path.read_bytes()
    found: list[BadBytes] = []
    start = 0
    while len(found) < limit:
        try:
            raw[start:].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            at = start + e.start
            found.append(BadBytes(str(path), at, raw.count(b"\n", 0, at) + 1, raw[at:at + max(e.end - e.start, 1)].hex(" ")))
            start = start + e.end
    return found


def decode(path: Path, errors: str = "strict") -> str:
    """The file's text (UTF-8, a leading BOM dropped). Undecodable bytes are a DataError naming file and offset;
    with errors="replace" (what inspect loads with, so that data.decode can list every place) they become U+FFFD."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace" if errors == "replace" else "strict")
    except UnicodeDecodeError:
        bad = scan_bytes(path, limit=5)
        where = "; ".join(f"byte offset {b.offset} (line {b.line}: {b.bytes})" for b in bad)
        raise DataError(f"{path}: not UTF-8 text at {where}; re-save the file as UTF-8 or remove those bytes") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return text[1:] if text.startswith(BOM) else text


def chunk(text: str, size: int) -> list[str]:
    """Contiguous pieces of `size` characters (the last may be shorter), never interleaved: splitting pieces
    instead of characters keeps each stretch of text in one split."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def read_documents(path: Path, text_column: Optional[str], label_column: Optional[str], chunk_chars: int,
                   need_label: bool = False, errors: str = "strict") -> Docs:
    """The documents of one source. `label_column` is read when the table has it (required if `need_label`);
    `errors` as for decode()."""
    if not path.exists():
        raise DataError(f"{path}: data file not found (data.source)")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: the folder holds no .txt files (one document per file)")
        return Docs(str(path), [decode(p, errors) for p in files], [p.name for p in files], files=[str(p) for p in files])
    suffix = path.suffix.lower()
    if suffix == ".txt" and text_column is None:
        pieces = chunk(decode(path, errors), chunk_chars)
        return Docs(str(path), pieces, [f"{path.name}#{i}" for i in range(len(pieces))], files=[str(path)],
                    chunked=True)
    if suffix not in TABLE_SUFFIXES + (".txt",):
        raise DataError(f"{path}: unsupported file type '{suffix}' for text (use .txt, a folder of .txt files, "
                        ".csv, .parquet or .jsonl with data.text naming the text column)")
    if text_column is None:
        raise DataError(f"{path}: a {suffix} file needs data.text, the name of the column that holds the text")
    rows = _table(path, suffix, text_column, errors)
    names = list(rows)
    if text_column not in rows:
        raise DataError(f"{path}: data.text column '{text_column}' not found (columns: {', '.join(names[:20])})")
    texts = rows[text_column]
    for i, t in enumerate(texts):
        if t is not None and not isinstance(t, str):
            raise DataError(f"{path}: column '{text_column}' row {i} holds {type(t).__name__} {t!r}, not text")
    labels = None
    if label_column is not None and label_column in rows:
        labels = rows[label_column]
        missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)]
        if missing:
            raise DataError(f"{path}: label column '{label_column}' has {len(missing)} missing labels (rows "
                            f"{missing[:5]}); drop those rows")
    elif need_label:
        raise DataError(f"{path}: text-classification needs a label column; data.target '{label_column}' not found "
                        f"(columns: {', '.join(names[:20])})")
    return Docs(str(path), ["" if t is None else t for t in texts], [f"{path.name}:{i}" for i in range(len(texts))],
                labels, files=[str(path)])


def _table(path: Path, suffix: str, text_column: str, errors: str) -> dict[str, list]:
    """Columns of a CSV/Parquet/JSONL file as Python lists; text files are checked for UTF-8 first, so a bad
    byte is named by offset rather than by a parser's message."""
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path, errors)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:   # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise DataError(f"{path}: unreadable Parquet ({e})") from None
        return {n: table.column(n).to_pylist() for n in table.column_names}
    import io

    import pyarrow as pa
    import pyarrow.csv as pcsv

    text = decode(path, errors)
    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        table = pcsv.read_csv(io.BytesIO(text.encode()), parse_options=pcsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={text_column: pa.string()}, strings_can_be_null=False))
    except Exception as e:   # pyarrow.lib.ArrowInvalid names the row
        raise DataError(f"{path}: unreadable CSV ({e})") from None
    return {n: table.column(n).to_pylist() for n in table.column_names}


def _jsonl(path: Path, errors: str) -> dict[str, list]:
    rows = []
    for i, line in enumerate(decode(path, errors).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i} is not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {i} is a JSON {type(obj).__name__}, not an object with named fields")
        rows.append(obj)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in rows] for k in keys}
