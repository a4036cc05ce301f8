"""tune's search space: the default ranges around regularize's choice, Optuna suggestions, and the grid."""
from __future__ import annotations

import json
import random
from typing import Any

GRID_POINTS = 3             # points per continuous range in a grid search


SEQUENCE_KINDS = ("gpt", "lstm", "gru")     # recipe.models_seq.SEQUENCE_KINDS (not imported: that needs torch)
WARMUP_FRACTION = 0.2       # the top of the warmup range: nanoGPT-sized runs warm up over a few % of their steps
SEQUENCE_DROPOUT = 0.3      # the top of the dropout range for sequence models (GPT-2 used 0.1; small data more)
SEQUENCE_WD = 0.01          # AdamW's usual decay, the centre of the range when the config sets none


def default_space(chosen: dict[str, Any], cfg) -> dict[str, dict[str, Any]]:
    """Wide ranges centred on regularize's choice (lr ±10x, weight decay ±100x, batch x/2..x2, width x/2..x2);
    for a sequence model (gpt, lstm, gru) the space of sequence_space."""
    if cfg.model.kind in SEQUENCE_KINDS:
        return sequence_space(chosen, cfg)
    lr = chosen.get("train.lr", cfg.train.lr)
    wd = chosen.get("train.weight_decay", cfg.train.weight_decay) or 1e-5
    bs = chosen.get("train.batch_size", cfg.train.batch_size)
    hidden = chosen.get("model.hidden", cfg.model.hidden)
    space = {
        "train.lr": {"low": lr / 10, "high": min(lr * 10, 1.0), "log": True},
        "train.weight_decay": {"low": wd / 100, "high": wd * 100, "log": True},
        "model.dropout": {"low": 0.0, "high": 0.5},
        "train.batch_size": {"choices": sorted({max(8, bs // 2), bs, bs * 2})},
    }
    if cfg.model.kind in ("mlp", "cnn", "resnet") and hidden:
        space["model.hidden"] = {"choices": [[max(4, h // 2) for h in hidden], list(hidden), [h * 2 for h in hidden],
                                             list(hidden) + [hidden[-1]]]}      # narrower, same, wider, deeper
    return space


def sequence_space(chosen: dict[str, Any], cfg) -> dict[str, dict[str, Any]]:
    """A transformer's or RNN's space around regularize's choice: lr ±10x, warmup, AdamW-sized weight decay
    (±30x around 0.01 when none is set), dropout up to SEQUENCE_DROPOUT, and the size: width x/2, x1, x2 (every
    choice divisible by n_head for gpt) and, for gpt, one block fewer or more. The batch size stays: a window
    count per step changes the tokens per step, which the lr is tuned against."""
    def get(key: str):
        section, name = key.split(".")
        return chosen.get(key, getattr(getattr(cfg, section), name))

    lr, wd = get("train.lr"), get("train.weight_decay") or SEQUENCE_WD
    space: dict[str, dict[str, Any]] = {"train.lr": {"low": lr / 10, "high": min(lr * 10, 1.0), "log": True}}
    steps = get("train.warmup_steps")
    if steps:       # the config counts warmup in steps: tune it in steps (the two keys exclude each other)
        space["train.warmup_steps"] = {"low": 0, "high": 2 * int(steps)}
    else:
        space["train.warmup_fraction"] = {"low": 0.0, "high": WARMUP_FRACTION}
    space["train.weight_decay"] = {"low": wd / 30, "high": wd * 30, "log": True}
    space["model.dropout"] = {"low": 0.0, "high": max(SEQUENCE_DROPOUT, float(get("model.dropout")))}
    width, heads = int(get("model.n_embd")), int(get("model.n_head"))
    divides = (lambda w: w % heads == 0) if cfg.model.kind == "gpt" else (lambda w: True)   # heads split width
    widths = sorted({w for w in (width // 2, width, width * 2) if w >= 8 and divides(w)})
    if len(widths) > 1:
        space["model.n_embd"] = {"choices": widths}
    if cfg.model.kind == "gpt":
        layers = int(get("model.n_layer"))
        space["model.n_layer"] = {"choices": sorted({max(1, layers - 1), layers, layers + 1})}
    return space


def space_of(cfg, chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if cfg.tune.space:
        return {k: v.model_dump(exclude_defaults=True) for k, v in cfg.tune.space.items()}
    return default_space(chosen, cfg)


def _encode(v: Any) -> Any:
    """Optuna choices must be scalars: lists/dicts travel as JSON strings."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _decode(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v


def _is_int(p: dict) -> bool:
    return bool(p.get("integer")) or (isinstance(p.get("low"), int) and isinstance(p.get("high"), int)
                                      and not p.get("log"))


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, p in space.items():
        if "choices" in p:
            out[key] = _decode(trial.suggest_categorical(key, [_encode(c) for c in p["choices"]]))
        elif _is_int(p):
            out[key] = trial.suggest_int(key, int(p["low"]), int(p["high"]), log=bool(p.get("log")))
        else:
            out[key] = trial.suggest_float(key, float(p["low"]), float(p["high"]), log=bool(p.get("log")))
    return out


def grid_of(space: dict[str, dict[str, Any]]) -> dict[str, list]:
    import numpy as np

    grid = {}
    for key, p in space.items():
        if "choices" in p:
            grid[key] = [_encode(c) for c in p["choices"]]
        elif _is_int(p):
            grid[key] = sorted({int(round(v)) for v in np.linspace(p["low"], p["high"], GRID_POINTS)})
        elif p.get("log"):
            grid[key] = [float(v) for v in np.geomspace(p["low"], p["high"], GRID_POINTS)]
        else:
            grid[key] = [float(v) for v in np.linspace(p["low"], p["high"], GRID_POINTS)]
    return grid


def grid_points(space: dict[str, dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Every grid point once, in a seeded order (so a short budget still spreads over the grid)."""
    import itertools

    grid = grid_of(space)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    random.Random(seed).shuffle(points)
    return points


def max_epochs(cfg, space: dict) -> int:
    """The longest a trial trains: train.epochs, or the top of its range when tune.space searches it."""
    p = space.get("train.epochs")
    if not p:
        return int(cfg.train.epochs)
    return int(max(p["choices"]) if "choices" in p else p["high"])
