"""ensemble's members: the top tuned trials, regularize's model, seed re-trains and the long run; twins dropped."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from recipe.errors import RecipeError

SAME_OUTPUTS = 1e-6      # members whose val outputs differ by less than this are the same model


@dataclass
class Member:
    name: str
    source: str                      # tune | regularize | seed | long | retrained
    overrides: dict[str, Any]
    seed: int
    model: nn.Module
    origin: Optional[str] = None     # the upstream checkpoint it was loaded from
    info: dict[str, Any] = field(default_factory=dict)
    val_out: Optional[torch.Tensor] = None
    val: float = math.nan
    val_loss: float = math.nan
    health: list = field(default_factory=list)   # the health checks of the run that trained it here (if any)


def _load_member(cfg, ds, overrides: dict, path, device) -> nn.Module:
    from recipe.engine import train as E
    from recipe.models import create

    model = create(cfg.with_overrides(overrides), ds, cfg.seed)
    state = E.load_checkpoint(path)
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise RecipeError(f"{path}: the checkpoint does not fit the model its overrides describe "
                          f"({str(e).splitlines()[0][:160]}); rerun the stage that wrote it") from None
    return model.to(device)


def gather_members(cfg, ctx, ds) -> list[Member]:
    """Top-k tuned trials, regularize's model, seed re-trains and the long run of the best configuration."""
    from recipe.engine import train as E
    from recipe.models import create
    from recipe.stages.tune.artifacts import member_checkpoint

    tune_art = ctx.upstream_json("tune", "tune.json")
    chosen = ctx.upstream_json("regularize", "chosen.json")
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    members: list[Member] = []
    for entry in tune_art["top"][: cfg.ensemble.top_k]:
        overrides = entry["overrides"]
        with member_checkpoint(cfg, ctx, entry) as found:    # tune/top/, else the artifact store (tune.artifacts)
            if found.path is not None:
                model = _load_member(cfg, ds, overrides, found.path, ctx.device)
                members.append(Member(f"trial {entry['trial']}", "tune", overrides, cfg.seed, model, found.origin))
                continue
        # truly missing (or failing its digest): retrain from its overrides and seed, and say so
        ctx.log(f"ensemble: trial {entry['trial']} retrained: {found.reason}")
        mcfg = cfg.with_overrides(overrides)
        model = create(mcfg, ds, cfg.seed).to(ctx.device)
        r = E.fit_from_config(model, tr, va, mcfg, ds, metrics_path=_curve(ctx, f"trial_{entry['trial']}"))
        members.append(Member(f"trial {entry['trial']}", "retrained", overrides, cfg.seed, model,
                              info={"retrained_because": found.reason}, health=r.health))
    members.append(Member(f"regularize ({chosen.get('variant', 'chosen')})", "regularize", chosen["overrides"],
                          (chosen.get("seeds") or [cfg.seed])[0],   # chosen.pt holds the first seed's model
                          _load_member(cfg, ds, chosen["overrides"], ctx.upstream_path("regularize",
                                                                                                "chosen.pt"),
                                                 ctx.device), "regularize/chosen.pt"))
    best = tune_art.get("best_overrides") or tune_art["top"][0]["overrides"]   # tune.noise's choice among the top
    bcfg = cfg.with_overrides(best)
    for i in range(cfg.ensemble.seeds):
        seed = cfg.seed + 1 + i
        model = create(bcfg, ds, seed).to(ctx.device)
        r = E.fit_from_config(model, tr, va, bcfg, ds, seed=seed, metrics_path=_curve(ctx, f"seed_{seed}"))
        members.append(Member(f"best config, seed {seed}", "seed", best, seed, model,
                              info={"epochs": len(r.history), "seconds": round(r.seconds, 2)}, health=r.health))
    if cfg.ensemble.long_epochs > 1:
        epochs = bcfg.train.epochs * cfg.ensemble.long_epochs
        patience = max(5, bcfg.train.epochs // 2)
        long = cfg.with_overrides({**best, "train.epochs": epochs,
                                   "train.early_stopping": {"patience": patience, "metric": "val_loss"}})
        model = create(long, ds, cfg.seed).to(ctx.device)
        r = E.fit_from_config(model, tr, va, long, ds, metrics_path=_curve(ctx, "long"))
        members.append(Member(f"best config, {cfg.ensemble.long_epochs}x epochs", "long",
                              {**best, "train.epochs": epochs}, cfg.seed, model,
                              info={"max_epochs": epochs, "epochs_run": len(r.history), "best_epoch": r.best_epoch,
                                    "stopped": r.stopped, "patience": patience}, health=r.health))
    return members


def _curve(ctx, run: str):
    """Where a run trained here writes its curve: ensemble/runs/<run>/metrics.jsonl."""
    return ctx.dir / "runs" / run / "metrics.jsonl"


def drop_duplicates(members: list[Member]) -> tuple[list[Member], dict[str, str]]:
    """Members whose val outputs match an earlier member's are the same model: keep the first."""
    kept: list[Member] = []
    same: dict[str, str] = {}
    for m in members:
        twin = next((k for k in kept if k.val_out.shape == m.val_out.shape
                     and float((k.val_out - m.val_out).abs().max()) < SAME_OUTPUTS), None)
        if twin is None:
            kept.append(m)
        else:
            same[m.name] = twin.name
    return kept, same
