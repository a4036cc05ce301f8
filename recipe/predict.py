"""Apply the final model (the ensemble, or its distilled student) to new rows with the recorded preprocessing.

Everything a prediction needs is in runs/<name>/ensemble/ensemble.json: feature names and their encoding
(one-hot levels, imputed values), the train-only normalization, the label mapping and the member weights.
The ensemble's record must be passing and fresh: a member checkpoint changed on disk is refused by name.
Table rows are also flagged where they hold inputs train never saw (recipe.data.seen).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from recipe.errors import DataError, GateError, RecipeError


def load_final(ws, config_now: dict) -> dict[str, Any]:
    """ensemble.json of a passing, fresh ensemble record (GateError names what is wrong)."""
    from recipe.workspace import PASSING, stage_state

    state, reasons = stage_state(ws, "ensemble", config_now)
    if state not in PASSING:
        if state == "missing":
            raise GateError("ensemble has not run: run 'recipe ensemble' first (predict applies its final model)")
        if state == "failed":
            rec = ws.read_record("ensemble") or {}
            stale = _stale(ws, config_now)
            if stale:
                raise GateError(f"ensemble is stale: {'; '.join(stale)}: rerun 'recipe ensemble --force'")
            failed = [c.get("id") for c in rec.get("checks") or [] if c.get("status") == "fail"]
            if rec.get("artifacts", {}).get("ensemble.json") and failed and not rec.get("error") \
                    and set(failed) == {"ensemble.gain"}:
                # a failed ensemble.gain still leaves a checked final model (the best single one); the record says why
                return _read(ws)
            what = ", ".join(failed) or rec.get("error") or "; ".join(reasons)
            hint = (f"or, to ship what val chose, cap it (checks: {{{failed[0]}: {{severity: warn, reason: ...}}}}) "
                    "and rerun 'recipe ensemble'" if failed else "and rerun 'recipe ensemble'")
            raise GateError(f"ensemble failed ({what}): predict serves only a final model whose checks passed; "
                            f"fix that {hint}")
        raise GateError(f"ensemble is {state}: {'; '.join(reasons)}: rerun 'recipe ensemble --force'")
    return _read(ws)


def _stale(ws, config_now: dict) -> list[str]:
    from recipe.workspace import staleness

    return staleness(ws, "ensemble", ws.read_record("ensemble") or {}, config_now)


def _read(ws) -> dict[str, Any]:
    path = ws.stage_dir("ensemble") / "ensemble.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"{path}: cannot read ({e}); rerun 'recipe ensemble --force'") from None


# ----------------------------------------------------------------------------- reading rows


def raw_columns(art: dict[str, Any]) -> list[str]:
    """The input columns the model was trained on, in order (one-hot features map back to their column)."""
    categorical = (art.get("encoding") or {}).get("categorical", {})
    cols: list[str] = []
    for name in art["feature_names"]:
        col = name
        if "=" in name:
            head = name.split("=", 1)[0]
            if head in categorical:
                col = head
        if col not in cols:
            cols.append(col)
    return cols


def read_rows(path: Path, art: dict[str, Any]):
    """Rows of INPUT encoded exactly as the train split was: (N, D) float32, the target if present, and the
    per-row flags of inputs train never saw (recipe.data.seen; unchecked for arrays, images, old records).
    An image folder (images, or one sub-folder of images per class) gives one row per image."""
    from recipe.data.seen import Flags

    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        x, y, _ = read_images(path, art)
        return x, y, Flags.unchecked(len(x), "images are not checked against train")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y = _npz(path, art)
        return x, y, Flags.unchecked(len(x), "an NPZ holds encoded arrays, not the columns train recorded")
    if suffix in (".csv", ".tsv"):
        from recipe.data.sources import _read_csv

        table = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        from recipe.data.sources import _read_parquet

        table = _read_parquet(path)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv, .parquet or .npz)")
    return _encode(table, path, art)


def read_images(root: Path, art: dict[str, Any]) -> tuple[np.ndarray, Optional[np.ndarray], list[str]]:
    """Every image under root (directly, or in one sub-folder per class: then the folder is the label), read as
    training read them (recipe.data.images); (N, C*H*W) float32, labels or None, file names relative to root."""
    from PIL import UnidentifiedImageError

    from recipe.data.images import image_array, to_chw
    from recipe.data.sources import IMAGE_SUFFIXES

    def images_in(folder: Path) -> list[Path]:
        return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                      and not f.name.startswith("."))

    files = images_in(root)
    labels: Optional[list[str]] = None
    if not files:      # the training layout: root/<class>/<image>
        pairs = [(f, d.name) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                 for f in images_in(d)]
        files, labels = [f for f, _ in pairs], [c for _, c in pairs]
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder or its sub-folders")
    want = tuple(art["shape"])
    arrays = []
    for f in files:
        try:
            arr, _ = image_array(f)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{f}: unreadable image ({e.__class__.__name__})") from None
        chw = (1, *arr.shape) if arr.ndim == 2 else (arr.shape[2], *arr.shape[:2])
        if chw != want:
            raise DataError(f"{f}: image is {'x'.join(map(str, chw))} (CxHxW); the model was trained on "
                            f"{'x'.join(map(str, want))} images: resize them the same way first")
        arrays.append(arr)
    x = to_chw(arrays).reshape(len(arrays), -1)
    y = np.array(labels, dtype=object) if labels is not None else None
    return x, y, [str(f.relative_to(root)) for f in files]


def _npz(path: Path, art: dict[str, Any]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{path}: NPZ must hold an array 'x' (found {', '.join(z.files) or 'none'})")
            x = z["x"]
            y = z["y"] if "y" in z.files else None
    except DataError:
        raise
    except Exception as e:   # bad zip, pickled objects: refuse
        raise DataError(f"{path}: unreadable NPZ ({e.__class__.__name__}: {e})") from None
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x.shape[1] != len(art["feature_names"]):
        raise DataError(f"{path}: 'x' has {x.shape[1]} values per sample; the model was trained on "
                        f"{len(art['feature_names'])} (shape {art['shape']})")
    return x, y


def _encode(table, path: Path, art: dict[str, Any]):
    from recipe.data import seen as S

    enc = art.get("encoding") or {}
    categorical, imputed = enc.get("categorical", {}), enc.get("imputed", {})
    facts = (enc.get("seen") or {}).get("columns")
    flags = S.Flags(table.num_rows) if facts is not None else S.Flags.unchecked(
        table.num_rows, "this model's record predates the train facts predict checks against (levels, ranges, "
        "missing values); rerun the stages from inspect to record them")
    cols = raw_columns(art)
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise DataError(f"{path}: missing column(s) {shown}; the model needs every training column "
                        f"({len(cols)} in all)")
    blocks = []
    for col in cols:
        values = table.column(col).to_pylist()
        if col in categorical:
            levels = {lv: i for i, lv in enumerate(categorical[col])}
            if flags.checked:
                S.check_levels(flags, col, values, categorical[col], facts.get(col))
            block = np.zeros((len(values), len(levels)), np.float32)
            for r, v in enumerate(values):
                v = imputed.get(col) if v is None else v
                if v is None:
                    raise DataError(f"{path}: column '{col}' is empty in row {r} and the model has no fill value")
                if str(v) in levels:
                    block[r, levels[str(v)]] = 1.0   # an unseen level encodes as all zeros, as in training
            blocks.append(block)
            continue
        try:
            v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: column '{col}' holds text; the model was trained on numbers there") from None
        if flags.checked:
            S.check_numbers(flags, col, v, facts.get(col))
        if col in imputed:
            v = np.where(np.isnan(v), float(imputed[col]), v)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise DataError(f"{path}: column '{col}' has {bad.size} missing/non-finite value(s) (rows "
                            f"{bad[:5].tolist()}) and the model was trained without imputing it")
        blocks.append(v.astype(np.float32)[:, None])
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((table.num_rows, 0), np.float32)
    target = art.get("target_column")
    y = np.array(table.column(target).to_pylist(), dtype=object) if target and target in table.column_names else None
    return x, y, flags


# ----------------------------------------------------------------------------- applying the model


def normalize(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    if norm.get("kind", "none") == "none":
        return x.astype(np.float32)
    shift = np.asarray(norm["shift"], dtype=np.float32)
    scale = np.asarray(norm["scale"], dtype=np.float32)
    return ((x - shift) / scale).astype(np.float32)


def _model(cfg, art: dict[str, Any], overrides: dict, path: Path):
    from recipe import tasks
    from recipe.models import build

    mcfg = cfg.with_overrides(overrides)
    outputs = tasks.get(art["task"]).num_outputs(len(art.get("classes") or ()))
    return with_weights(build(mcfg.model, tuple(art["shape"]), outputs), path)


def with_weights(model, path: Path):
    """`model` with the checkpoint's weights, in eval mode; a checkpoint that does not fit it is a RecipeError."""
    from recipe.engine.train import load_checkpoint

    try:
        model.load_state_dict(load_checkpoint(path)["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise RecipeError(f"{path}: does not fit its recorded model ({str(e).splitlines()[0][:160]}); "
                          "rerun 'recipe ensemble --force'") from None
    return model.eval()


def apply(cfg, art: dict[str, Any], stage_dir: Path, x_raw: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The task's predictions: probabilities (N, C) for classification, values in target units (N,) for regression."""
    import torch

    from recipe import tasks
    from recipe.engine.train import pick_device, predict

    dev = pick_device(device)
    x = torch.from_numpy(np.ascontiguousarray(normalize(x_raw, art["normalization"]))).to(dev)
    task = tasks.get(art["task"])
    precision = cfg.train.precision       # the precision the stages evaluated with
    if art.get("final") == "best_single":
        b = art["best"]
        out = predict(_model(cfg, art, b["overrides"], stage_dir / b["checkpoint"]).to(dev), x, precision=precision)
        result = task.prediction(out)
    elif art.get("final") == "student":
        st = art["student"]
        out = predict(_model(cfg, art, st["overrides"], stage_dir / st["checkpoint"]).to(dev), x, precision=precision)
        result = task.prediction(out)
    else:
        result = 0
        for m in art["members"]:
            out = predict(_model(cfg, art, m["overrides"], stage_dir / m["checkpoint"]).to(dev), x, precision=precision)
            result = result + m["weight"] * task.prediction(out)
    return task.in_target_units(result.cpu().numpy().astype(np.float64), art.get("target_stats") or {})


def to_csv(out: np.ndarray, art: dict[str, Any], names: Optional[list[str]] = None,
           warnings: Optional[list[list[str]]] = None) -> str:
    """One row per input row (named by its file for images): the prediction (original label / target units),
    then class probabilities, then (when the inputs were checked) `recipe_warnings`: the row's `col:reason`
    items joined by ';', empty for a row inside what train saw."""
    from recipe import tasks

    key, rows = ("file", [_cell(n) for n in names]) if names is not None else ("row", [str(i) for i in range(len(out))])
    lines = tasks.get(art["task"]).csv_lines(out, key, rows, art.get("classes"), _cell)
    if warnings is not None:
        lines = [lines[0] + ",recipe_warnings"] + [line + "," + _cell(";".join(w)) for line, w in zip(lines[1:], warnings)]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def labels(out: np.ndarray, art: dict[str, Any]) -> list:
    """One prediction per row as the user reads it (the task says how: the original label, the target value)."""
    from recipe import tasks

    return tasks.get(art["task"]).labels(out, art.get("classes"))
