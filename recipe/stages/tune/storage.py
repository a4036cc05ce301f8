"""Where tune's study lives: Optuna's journal file (one machine) or PostgreSQL (several), and the study lock.

The journal file is Optuna's JournalFileBackend format and lock (a plain Optuna process can open the same study),
written without an fsync per record: Optuna syncs every record to disk, 12 records a trial at ~5 ms each on this
machine's disk, a tenth of a small trial. What a killed process (kill -9, Ctrl-C) wrote is in the page cache and
survives it; only a power cut can lose the last records, and then those trials are simply run again.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

from recipe.errors import ConfigError


def _append_only_file_class():
    from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileSymlinkLock

    class AppendOnlyFile(BaseJournalBackend):
        """JournalFileBackend's file and lock; appends without fsync (see the module docstring)."""

        def __init__(self, path: str):
            self.path = path
            self.lock = JournalFileSymlinkLock(path)    # the lock JournalFileBackend takes by default
            self.reader = JournalFileBackend(path, lock_obj=self.lock)

        def read_logs(self, log_number_from: int):
            return self.reader.read_logs(log_number_from)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            self.lock.acquire()
            try:
                with open(self.path, "ab") as f:    # one write: a reader sees whole lines or waits for them
                    f.write(text.encode("utf-8"))
            finally:
                self.lock.release()

    return AppendOnlyFile


def AppendOnlyFile(path: str):   # noqa: N802  (a class made on first use: optuna is imported lazily)
    global _APPEND_ONLY
    if _APPEND_ONLY is None:
        _APPEND_ONLY = _append_only_file_class()
    return _APPEND_ONLY(path)


_APPEND_ONLY = None


def _public(url: str) -> str:
    """The storage URL without credentials (for records and messages)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('@')[-1]}"


def open_storage(url: str):
    import optuna
    from optuna.storages import JournalStorage

    if "://" in url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        for attempt in range(5):   # machines starting together race to create the schema: the loser retries
            try:   # heartbeats let another machine see that a trial's process died
                return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
            except Exception as e:
                if attempt == 4 or "already exists" not in str(e):
                    raise ConfigError(f"tune.storage: cannot open {_public(url)} ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:200]})") from None
                time.sleep(1.0 + attempt)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(AppendOnlyFile(url))


class StudyLock:
    """Serializes 'count the trials, then ask for one' across processes and machines."""

    def __init__(self, url: str, study_name: str, local: Path):
        self.url, self.key, self.local = url, zlib.crc32(study_name.encode()) & 0x7FFFFFFF, local
        self.conn, self.fd = None, None

    def __enter__(self):
        if self.url.startswith("postgresql"):
            import psycopg

            if self.conn is None:
                self.conn = psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"),
                                            autocommit=True)
            self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        else:
            import fcntl

            self.local.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.local, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        if self.fd is not None:
            os.close(self.fd)   # closing releases the flock
            self.fd = None
        return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def storage_url(cfg, ctx) -> str:
    url = ctx.options.tune.get("storage") or cfg.tune.storage
    if url:
        return url
    return str(ctx.dir / "study" / "journal.log")
