"""runs/<name>/ layout, records, atomic writes, locks and the gate (DESIGN §4)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from recipe.errors import LockedError, RecipeError

STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")
_BASE = ("seed", "task", "data", "checks")
READS: dict[str, tuple[str, ...]] = {
    "inspect": _BASE,
    "baseline": _BASE + ("model", "train"),
    "overfit-batch": _BASE + ("model", "train", "overfit"),
    "regularize": _BASE + ("model", "train", "overfit", "regularize"),
    "tune": _BASE + ("model", "train", "overfit", "regularize", "tune"),
    "ensemble": _BASE + ("model", "train", "overfit", "regularize", "tune", "ensemble"),
}
PASSING = ("passed", "forced")
TRAINING = STAGES[1:]     # stages whose runs the health.* checks watch


def config_read(stage: str, config: dict) -> dict:
    """The part of the config `stage` reads: its sections, with `checks:` cut to the overrides of the checks it
    runs (its own ids, and health.* for stages that train). A severity override of ensemble.gain is no input of
    inspect, so it cannot make inspect stale."""
    from recipe.checks import CATALOG

    def runs_here(check_id: str) -> bool:
        spec = CATALOG.get(check_id)
        owner = spec.stage if spec is not None else check_id.split(".")[0]
        return owner == stage or (owner == "any" and stage in TRAINING)

    out = {s: config.get(s) for s in READS[stage]}
    out["checks"] = {k: v for k, v in (config.get("checks") or {}).items() if runs_here(k)}
    return out


CONTENT_KEYS = ("stage", "status", "config_digests", "data_fingerprint", "upstream", "artifacts")


def content_digest(record: dict) -> str:
    """What downstream stages built on: the outcome, the inputs (config section digests, data fingerprint,
    upstream content) and the outputs (artifact digests, each check's status), never the times or the pid. A
    rerun that reads the same inputs and writes the same bytes keeps downstream fresh, as in DVC."""
    content = {k: record.get(k) for k in CONTENT_KEYS}
    content["checks"] = [(c.get("id"), c.get("status")) for c in record.get("checks") or []]
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def upstream_of(stage: str) -> tuple[str, ...]:
    return STAGES[: STAGES.index(stage)]


# ----------------------------------------------------------------------------- atomic files


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]   # one reused buffer, the GIL released


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)     # mkstemp makes 0600; records and reports are meant to be read
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise RecipeError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def atomic_path(path: Path):
    """Context manager yielding a temp path that is renamed onto `path` on success."""
    return _AtomicPath(path)


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(self.tmp, 0o666 & ~_UMASK)
                os.replace(self.tmp, self.path)
            except OSError as e:
                self.tmp.unlink(missing_ok=True)
                raise RecipeError(f"{self.path}: cannot write ({e.strerror or e})") from None
        else:
            self.tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError,)):
                raise RecipeError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        return False


# ----------------------------------------------------------------------------- workspace


@dataclass
class Workspace:
    """Everything one experiment writes: runs/<name>/<stage>/{record.json, artifacts}."""

    runs: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.runs / self.name

    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def record_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "record.json"

    def read_record(self, stage: str) -> Optional[dict]:
        path = self.record_path(stage)
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"stage": stage, "status": "corrupt"}
        return rec if isinstance(rec, dict) else {"stage": stage, "status": "corrupt"}

    def record_digest(self, stage: str) -> Optional[str]:
        """The digest of what a stage's record says, not of when it ran: see content_digest."""
        rec = self.read_record(stage)
        return None if rec is None else content_digest(rec)

    def write_record(self, stage: str, record: dict) -> None:
        atomic_write_json(self.record_path(stage), record)

    def lock(self, shared: bool = False) -> "RunLock":
        return RunLock(self.dir / ".lock", shared)


class RunLock:
    """An flock on runs/<name>/.lock: a second stage on the same folder refuses at once."""

    def __init__(self, path: Path, shared: bool):
        self.path, self.shared, self.fd = path, shared, None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self.fd)
            self.fd = None
            raise LockedError(
                f"{self.path.parent}: another recipe process ({holder}) is running a stage in this run folder; "
                "wait for it or stop it"
            ) from None
        if not self.shared:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"pid {os.getpid()}".encode())
        return self

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown pid"
        except OSError:
            return "unknown pid"

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


# ----------------------------------------------------------------------------- the gate


@dataclass
class Problem:
    stage: str          # the upstream stage at fault
    kind: str           # missing | failed | interrupted | stale
    message: str
    forceable: bool = True   # False where --force cannot help: no record, a run still going, artifacts never written


    @property
    def command(self) -> str:
        return f"recipe {self.stage}"


def _diff_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff_keys(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if old != new:
        return [f"{prefix}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []


def staleness(ws: Workspace, stage: str, record: dict, config_now: dict,
              fingerprint_now: Optional[str] = None) -> list[str]:
    """Why a finished record no longer describes the current config, data and artifacts."""
    reasons: list[str] = []
    old_cfg = record.get("config", {})
    read_now = config_read(stage, config_now)
    for section in READS[stage]:
        if section in old_cfg and old_cfg[section] != read_now.get(section):
            changed = _diff_keys(old_cfg[section], read_now.get(section), section)
            reasons.append("config changed: " + "; ".join(changed[:3]) + (" …" if len(changed) > 3 else ""))
    for rel, digest in (record.get("data_files") or {}).items():
        p = Path(rel)
        if not p.exists():
            reasons.append(f"data file {rel} is missing")
        elif file_digest(p) != digest:
            reasons.append(f"data file {rel} changed since {stage} ran")
    if fingerprint_now is not None and record.get("data_fingerprint") not in (None, fingerprint_now):
        reasons.append(f"data changed since {stage} ran (fingerprint {record['data_fingerprint']} -> {fingerprint_now})")
    sdir = ws.stage_dir(stage)
    for rel, digest in (record.get("artifacts") or {}).items():
        p = sdir / rel
        if not p.exists():
            reasons.append(f"artifact {p} is missing")
        elif file_digest(p) != digest:
            reasons.append(f"artifact {p} was modified after its record was written")
    for up, digest in (record.get("upstream") or {}).items():
        now = ws.record_digest(up)
        if now != digest:
            reasons.append(f"it was built on an earlier run of {up}, which has been rerun since with other "
                           "inputs or outputs")
    return reasons


def _recipe_alive(pid: Any) -> bool:
    """A live process with that pid that is a recipe command (a reused pid of another program is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"recipe" in f.read()
    except PermissionError:
        return True
    except OSError:
        return False


def stage_state(ws: Workspace, stage: str, config_now: dict,
                fingerprint_now: Optional[str] = None) -> tuple[str, list[str]]:
    """(state, reasons) with state in passed/forced/failed/running/interrupted/stale/missing."""
    rec = ws.read_record(stage)
    if rec is None:
        return "missing", [f"{stage} has not run"]
    status = rec.get("status")
    if status == "corrupt":
        return "missing", [f"{ws.record_path(stage)} is unreadable"]
    if status == "failed":
        failed = [c for c in rec.get("checks", []) if c.get("status") == "fail"]
        return "failed", [f"{c['id']}: {c.get('advice') or c.get('title')}" for c in failed] or ["stage failed"]
    if status == "interrupted" and not rec.get("finished") and _recipe_alive(rec.get("pid")):
        return "running", [f"running (pid {rec['pid']}, since {rec.get('started', '?')})"]
    if status not in PASSING:
        return "interrupted", [f"{stage} did not finish (status {status})"]
    reasons = staleness(ws, stage, rec, config_now, fingerprint_now)
    return ("stale", reasons) if reasons else (status, [])


def gate(ws: Workspace, stage: str, config_now: dict, fingerprint_now: Optional[str] = None) -> list[Problem]:
    """Problems with every upstream stage of `stage`, cheapest facts first."""
    problems = []
    for up in upstream_of(stage):
        state, reasons = stage_state(ws, up, config_now, fingerprint_now)
        if state in PASSING:
            continue
        if state == "missing":
            msg = f"{up} has not run: run 'recipe {up}' first"
        elif state == "failed":
            msg = f"{up} failed ({'; '.join(reasons)}): fix that and rerun 'recipe {up}'"
        elif state == "running":
            msg = f"{up} is still {reasons[0]}: wait for it to finish"
        elif state == "interrupted":
            msg = f"{up} was interrupted before it finished: rerun 'recipe {up}'"
        else:
            msg = f"{up} is stale: {'; '.join(reasons)}: rerun 'recipe {up}'"
        rec = ws.read_record(up) or {}
        # --force proceeds on the upstream artifacts as they are: only a stale record, or one that failed on its
        # checks (not on an error), still has them; a missing, running or interrupted stage has none to build on
        forceable = state == "stale" or (state == "failed" and not rec.get("error") and bool(rec.get("artifacts")))
        problems.append(Problem(up, state, msg, forceable))
    return problems


@dataclass
class Artifacts:
    """Files a stage wrote, with digests for its record."""

    dir: Path
    files: dict[str, str] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add(self, rel: str) -> Path:
        p = self.dir / rel
        self.files[rel] = file_digest(p)
        return p

    def json(self, rel: str, obj: Any) -> Path:
        atomic_write_json(self.path(rel), obj)
        return self.add(rel)

    def text(self, rel: str, text: str) -> Path:
        atomic_write_bytes(self.path(rel), text.encode())
        return self.add(rel)

    def figure(self, rel: str, fig, tight: bool = True) -> Path:
        """Save a PNG; tight=False for figures that set their own margins (a tight box draws twice)."""
        import matplotlib.pyplot as plt

        with atomic_path(self.path(rel)) as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight" if tight else None)
        plt.close(fig)
        return self.add(rel)

    def read_json(self, rel: str) -> Any:
        return json.loads((self.dir / rel).read_text())


def read_artifact_json(ws: Workspace, stage: str, rel: str) -> Any:
    path = ws.stage_dir(stage) / rel
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"{path}: cannot read artifact of {stage} ({e}); rerun 'recipe {stage}'") from None


LATEST = "LATEST"


def remember_config(runs: Path, config_path: Path) -> None:
    atomic_write_bytes(runs / LATEST, (str(config_path.resolve()) + "\n").encode())


def latest_config(runs: Path) -> Optional[Path]:
    try:
        text = (runs / LATEST).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


Callback = Callable[..., Any]
