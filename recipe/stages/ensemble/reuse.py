"""The sealed test's recorded result, reused: a rerun that would score the same model on the same rows reports
the look on record instead of opening the test split again (issue 17 item 4).

Two digests decide it:
- `inputs`, known before any work: the config keys the shipped model depends on (a severity override or its
  reason changes a status, never a model, so `checks:` counts only thresholds) and the artifacts of tune and
  regularize (the member checkpoints). The gate lets a rerun through without --force only when a scored look
  has the same inputs, so a changed model is refused at once, not after minutes of training.
- `model_key`, known just before the test split would be opened: the weights of every model evaluated on test
  (digests of their state dicts), the ensemble weights, the final choice, the data fingerprint (which covers
  the test rows), the evaluation settings (precision, device type, bootstrap seed) and the code versions. The
  same key means the same forward passes on the same rows: the same test numbers, bit for bit, so the
  recorded result is reused. A different key with looks on record needs --force (a new, counted look).

Each scored look keeps its result under runs/<name>/test_results/<look>/ (result.json and the test figures),
with their digests in the ledger: a tampered result is never reused.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from recipe.config import digest_json
from recipe.workspace import atomic_write_json, config_read, file_digest

RESULTS = "test_results"
FIGURES = ("confusion.png", "reliability.png", "predicted_vs_true.png")
MODEL_SECTIONS = ("seed", "task", "data", "model", "train", "ensemble")   # tune/regularize reach it as artifacts
NOT_INPUTS = ("severity", "reason")
UPSTREAM = ("regularize", "tune")


def inputs(config: dict, ws) -> dict[str, Optional[str]]:
    """Digests of what the shipped model is built from, by name, so a refusal can say which one changed."""
    read = config_read("ensemble", config)
    part = {k: read.get(k) for k in MODEL_SECTIONS}
    part["checks"] = {cid: rest for cid, o in sorted((read.get("checks") or {}).items())
                      if (rest := {k: v for k, v in (o or {}).items() if k not in NOT_INPUTS})}
    out: dict[str, Optional[str]] = {"config": digest_json(part)}
    for up in UPSTREAM:
        rec = ws.read_record(up) or {}
        out[f"{up} artifacts"] = digest_json(rec.get("artifacts")) if rec.get("artifacts") else None
        out[f"{up} data"] = rec.get("data_fingerprint")
    return out


def changed(old: Optional[dict], new: dict) -> list[str]:
    """Which inputs differ between a recorded look and now ('config', 'tune artifacts', ...)."""
    if not old:
        return ["the look was recorded without input digests"]
    return [k for k in new if old.get(k) != new[k]]


def state_digest(model) -> str:
    """sha256 of a module's state dict: names, dtypes, shapes and the bytes of every tensor."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.view(torch.uint8) if t.numel() else t).numpy().tobytes())
    return h.hexdigest()[:16]


def model_key(cfg, ctx, ds, final: str, used, best, student) -> str:
    """Everything the test numbers are a function of, besides the test rows (covered by the fingerprint)."""
    import torch

    from recipe import __version__

    facts = {"recipe": __version__, "torch": torch.__version__, "device": ctx.device.type,
             "precision": cfg.train.precision, "seed": cfg.seed, "task": ds.task, "data": ds.fingerprint,
             "final": final, "members": [[m.name, repr(float(w)), state_digest(m.model)] for m, w in used],
             "best": state_digest(best.model), "student": state_digest(student) if student is not None else None}
    return digest_json(facts)


def find(ctx, looks: list[dict], key: str) -> Optional[tuple[int, dict[str, Any]]]:
    """(look index, recorded result) of a scored look of this exact model whose files are intact, else None."""
    for index in range(len(looks) - 1, -1, -1):
        look = looks[index]
        if look.get("status") != "scored" or look.get("model_key") != key:
            continue
        folder = ctx.workspace.dir / RESULTS / str(index)
        files = {"result.json": look.get("result_digest"), **(look.get("figures") or {})}
        if all((folder / f).is_file() and file_digest(folder / f) == d for f, d in files.items()):
            return index, json.loads((folder / "result.json").read_text())
    return None


def save(ctx, index: int, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a scored look's result and figures beside the ledger; returns the ledger fields that vouch for them."""
    folder = ctx.workspace.dir / RESULTS / str(index)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "result.json", result)
    figures = {}
    for name in FIGURES:
        if name in ctx.artifacts.files:
            shutil.copyfile(ctx.dir / name, folder / name)
            figures[name] = file_digest(folder / name)
    return {"result": f"{RESULTS}/{index}/result.json", "result_digest": file_digest(folder / "result.json"),
            "figures": figures}


def restore(ctx, index: int, look: dict) -> None:
    """The reused look's figures become this record's artifacts again."""
    folder: Path = ctx.workspace.dir / RESULTS / str(index)
    for name in look.get("figures") or {}:
        shutil.copyfile(folder / name, ctx.artifacts.path(name))
        ctx.artifacts.add(name)
