"""Digests of an experiment's data: the source files' bytes (data_files, for the gate) and the loaded splits'
content (the fingerprint). The file digests start before the read, on a side thread: parsing a CSV keeps
about one core busy, so on two cores the SHA-256 of a 500 MB file costs almost no wall time."""
from __future__ import annotations

import hashlib
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def source_files(cfg) -> list[Path]:
    """The plain files the config names as data (folders, builtins and callables are found by the read)."""
    d = cfg.data
    specs = [d.source] if d.train is None else [d.train, d.val, d.test]
    out = []
    for spec in specs:
        if spec is None or spec.startswith("builtin:"):
            continue
        p = cfg.resolve(spec)
        if p.is_file() and p not in out:
            out.append(p)
    return out


def start(pool: Executor, paths: list[Path]) -> dict[str, Future]:
    """Begin digesting `paths` on `pool`, keyed as tables name their files (str of the resolved path)."""
    return {str(p): pool.submit(file_digest, p) for p in paths}


def file_digests(tables: dict, early: dict[str, Future]) -> dict[str, str]:
    """file -> digest for every file the tables were read from, in their order; `early` ones are reused."""
    files: dict[str, str] = {}
    for t in tables.values():
        for f in t.files:
            if f not in files:
                files[f] = early[f].result() if f in early else file_digest(Path(f))
    return files


def file_digest(path: Path) -> str:
    from recipe.workspace import file_digest as digest

    return digest(path)


def content_digest(splits: dict, meta: tuple) -> str:
    """SHA-256 of each split's features and targets (the buffers themselves: no 200 MB bytes copy) and meta."""
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(np.ascontiguousarray(splits[s].x).data)
        h.update(np.ascontiguousarray(splits[s].y).data)
    h.update(repr(meta).encode())
    return h.hexdigest()[:16]
