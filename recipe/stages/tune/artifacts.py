"""Where trials' checkpoints live so that every machine of a study finds them: the artifact store.

By default a checkpoint stays in the run folder of the machine that trained it (tune/study/checkpoints/, copied
to tune/top/ by the summary), and a machine that joined the study later cannot reach it. With `tune.artifacts:
FOLDER` (a folder on a filesystem every machine mounts) each checkpoint that may reach the top k is also
uploaded through Optuna's artifact API (FileSystemArtifactStore + upload_artifact): the trial keeps the
artifact's id, sha256 and size as the user attr `artifact`, in the study every machine shares, and tune.json's
top entries carry it. ensemble then downloads the member from the store, checks its digest, and retrains only
when the artifact is truly missing or fails its digest, saying which and why. Object storage would be Optuna's
Boto3ArtifactStore behind the same three calls; it is not wired up (tune.artifacts takes a folder only).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from recipe.errors import ConfigError, RecipeError
from recipe.workspace import file_digest

ATTR = "artifact"      # trial user attr: {"id", "digest", "bytes", "file"} of its checkpoint in the store


def folder_of(cfg) -> Optional[Path]:
    """tune.artifacts resolved against the config file's folder (normalized, symlinks kept: a mount point stays
    as the user named it), or None (the local run folder)."""
    return Path(os.path.normpath(cfg.resolve(cfg.tune.artifacts))) if cfg.tune.artifacts else None


def open_store(folder: Path):
    """The store tune writes to; a folder that cannot be created or written is a config error, said at once."""
    from optuna.artifacts import FileSystemArtifactStore

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"tune.artifacts: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"tune.artifacts: cannot create {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"tune.artifacts: {folder} is not writable by this process")
    return FileSystemArtifactStore(folder)


def publish(trial, path: Path, store) -> dict:
    """Upload a trial's checkpoint; the trial records where it is and what its bytes hash to. The user attr is
    set only after the upload finished, so a trial never points at a half-written artifact."""
    from optuna.artifacts import upload_artifact

    digest, size = file_digest(path), path.stat().st_size
    try:
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    except OSError as e:    # a full or unmounted share: said with the key, not a traceback from inside Optuna
        raise RecipeError(f"tune.artifacts: cannot upload trial {trial.number}'s checkpoint to "
                          f"{getattr(store, '_base_path', store)} ({e.strerror or e})") from None
    ref = {"id": artifact_id, "digest": digest, "bytes": size, "file": path.name}
    trial.set_user_attr(ATTR, ref)
    return ref


@dataclass
class Found:
    """A top trial's checkpoint as ensemble finds it: a verified file and where it came from, or why not."""

    path: Optional[Path]
    origin: str = ""          # tune/top/0.pt, or "artifact store FOLDER (id ...)"
    reason: str = ""          # why there is none (path is None): the member is retrained


@contextlib.contextmanager
def member_checkpoint(cfg, ctx, entry: dict) -> Iterator[Found]:
    """tune's local copy first (the gate has checked its digest), else the artifact store (downloaded to a
    temporary file beside ensemble's record and checked against the digest the trial recorded), else why not."""
    rel = entry.get("checkpoint")
    if rel and ctx.upstream_path("tune", rel).exists():
        yield Found(ctx.upstream_path("tune", rel), f"tune/{rel}")
        return
    ref = entry.get(ATTR)
    if not ref:
        yield Found(None, reason="no checkpoint on this machine (the trial ran elsewhere) and none in an "
                                 "artifact store (tune.artifacts was unset when it ran)")
        return
    folder = folder_of(cfg)
    if folder is None:
        yield Found(None, reason=f"its checkpoint is in an artifact store (id {ref['id']}) but this config sets "
                                 f"no tune.artifacts to reach it")
        return
    tmp = ctx.dir / f".artifact-{ref['id']}.pt"
    try:
        yield _download(folder, ref, tmp)
    finally:
        tmp.unlink(missing_ok=True)


def _download(folder: Path, ref: dict, tmp: Path) -> Found:
    from optuna.artifacts import FileSystemArtifactStore, download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    where = f"artifact {ref['id']} in {folder}"
    if not folder.is_dir():
        return Found(None, reason=f"{where}: the folder does not exist on this machine")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)            # download_artifact refuses to overwrite
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(folder), file_path=str(tmp), artifact_id=ref["id"])
    except (ArtifactNotFound, ValueError) as e:   # ValueError: an id that escapes the folder
        return Found(None, reason=f"{where} is missing ({e})")
    except OSError as e:
        return Found(None, reason=f"{where} cannot be read ({e.strerror or e})")
    got = file_digest(tmp)
    if got != ref.get("digest"):
        return Found(None, reason=f"{where} fails its digest (sha256 {got}, the trial recorded "
                                  f"{ref.get('digest')}): corrupt or overwritten")
    return Found(tmp, f"artifact store {folder} (id {ref['id']})")


def provenance(members) -> dict:
    """For the record: which tuned trials were loaded (and from where), which retrained and why."""
    loaded = {m.name: m.origin for m in members if m.source == "tune"}
    retrained = {m.name: m.info.get("retrained_because", "") for m in members if m.source == "retrained"}
    return {"loaded": loaded, "retrained": retrained, "loaded_count": len(loaded), "retrained_count": len(retrained)}
