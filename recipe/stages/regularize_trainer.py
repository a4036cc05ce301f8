"""regularize's runs: each (variant, seed) trained through the one engine, in worker processes with --jobs, and kept
on disk as it finishes (regularize/cache/), so a rerun after Ctrl-C or a kill reuses every finished run.

A run is reused only when everything it reads is the same: the config sections it trains with (task, data, model,
train after the rung's overrides, and the health checks' settings), its seed and train subset, the data
fingerprint, the device type and the torch version. A changed config or data trains anew."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from recipe import tasks
from recipe.config import digest_json
from recipe.engine import train as E
from recipe.engine.monitors import compact
from recipe.engine.runlog import run_folder
from recipe.models import create

CACHE = "cache"          # the stage folder's child that survives reruns (regularize.PRESERVE)


@dataclass
class Variant:
    """One row of the ablation table: a rung's overrides trained with every seed."""

    name: str
    overrides: dict[str, Any]
    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    history: list[list[dict]] = field(default_factory=list)
    health: list[list[dict]] = field(default_factory=list)   # per seed: the run's health checks, compact
    models: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    note: str = ""
    delta: float = 0.0
    noise: float = 0.0                       # seed noise of the delta: a rung is kept only when delta > noise
    kept: bool = False
    task: str = "classification"             # whose direction the scores have (a language model's are losses)

    @property
    def val_mean(self) -> float:
        return float(np.mean(self.val)) if self.val else math.nan

    @property
    def val_std(self) -> float:
        return float(np.std(self.val)) if len(self.val) > 1 else 0.0

    @property
    def train_mean(self) -> float:
        return float(np.mean(self.train)) if self.train else math.nan

    @property
    def train_error(self) -> float:
        """Mean train score as an error (lower is better): 1 - accuracy, or the loss itself."""
        return tasks.get(self.task).error(self.train_mean)

    @property
    def val_error(self) -> float:
        return tasks.get(self.task).error(self.val_mean)

    def gain_over(self, other: "Variant") -> float:
        """How much better this variant's mean val score is than `other`'s (> 0: better), in the task's direction."""
        return tasks.get(self.task).gain(self.val_mean, other.val_mean)

    def row(self) -> dict[str, Any]:
        return {"variant": self.name, "overrides": self.overrides, "train": round(self.train_mean, 4),
                "train_std": round(float(np.std(self.train)) if len(self.train) > 1 else 0.0, 4),
                "val": round(self.val_mean, 4), "val_std": round(self.val_std, 4), "seeds": len(self.val),
                "delta": round(self.delta, 4), "noise": round(self.noise, 4), "kept": self.kept, "note": self.note}


@dataclass
class Spec:
    """A variant to train with every seed: overrides, plus an optional train subset (learning curve)."""

    name: str
    overrides: dict[str, Any]
    subset: Optional[np.ndarray] = None      # row positions in train (learning curve)
    keep: bool = False                       # return the trained models
    seeds: Optional[list[int]] = None        # default: the trainer's seeds


def _fit_one(cfg, ds, tr, va, device, task: dict) -> dict[str, Any]:
    """One (variant, seed) run through the one engine; the unit of work of a worker process."""
    from recipe.stages.overfit import engine_classes

    vcfg = cfg.with_overrides(task["overrides"])
    train = tr if task["subset"] is None else tr.subset(torch.as_tensor(task["subset"], device=tr.x.device))
    model = create(vcfg, ds, task["seed"]).to(device)
    r = E.fit_from_config(model, train, va, vcfg, ds, seed=task["seed"], metrics_path=task.get("metrics_path"),
                          num_classes=engine_classes(ds))
    # the weights always come back: the run cache keeps them, so a later variant that needs the model reuses it
    return {"train": r.final_train.get("score", math.nan), "val": r.best.get("score", math.nan),
            "history": r.history, "health": compact(r.health),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


_WORKER: dict[str, Any] = {}


def _init_worker(raw: dict, base_dir: str, device: str, jobs: int, gpus=None, started=None) -> None:
    """A pool process: its GPU (the next of `gpus`, round-robin by the shared start counter, pinned before
    anything here touches CUDA: importing torch does not, pick_device below does), its thread share, the data."""
    from recipe import threads
    from recipe.devices import pin_this_process

    if gpus:
        with started.get_lock():
            slot, started.value = started.value, started.value + 1
        pin_this_process(gpus[slot % len(gpus)])
        _WORKER["gpu"] = gpus[slot % len(gpus)]
    from recipe.config import validate
    from recipe.data import load

    threads.set_share(jobs)      # each of the jobs processes gets its share of the cores, not all of them
    threads.apply_default()
    cfg = validate(raw)
    cfg._base_dir = Path(base_dir)
    ds = load(cfg)
    dev = E.pick_device(device)
    _WORKER.update(cfg=cfg, ds=ds, device=dev, tr=E.to_tensors(ds, ds.train, dev), va=E.to_tensors(ds, ds.val, dev))


def _worker_task(task: dict) -> dict[str, Any]:
    w = _WORKER
    res = _fit_one(w["cfg"], w["ds"], w["tr"], w["va"], w["device"], task)
    # where the run trained, as this process saw it (the record lists every pool process's GPU)
    res["placement"] = {"pid": os.getpid(), "gpu": w.get("gpu"),
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return res


class RunCache:
    """Finished runs on disk, one file per run, named by the digest of what the run depends on."""

    def __init__(self, folder: Path, cfg, fingerprint: str, device: torch.device):
        self.folder, self.cfg = folder, cfg
        self.fixed = {"data_fingerprint": fingerprint, "device": device.type, "torch": torch.__version__}
        self.used: set[str] = set()

    def key(self, task: dict) -> str:
        raw = self.cfg.with_overrides(task["overrides"]).model_dump(mode="json")
        subset = None if task["subset"] is None else digest_json(np.asarray(task["subset"]).tolist())
        return digest_json({**self.fixed, "seed": task["seed"], "subset": subset,
                            **{s: raw[s] for s in ("task", "data", "model", "train")},
                            "health": {k: v for k, v in raw["checks"].items() if k.startswith("health.")}})

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, key: str, metrics_path: Optional[str]) -> Optional[dict[str, Any]]:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
            res = {k: entry[k] for k in ("train", "val", "history", "health", "state_dict")}
        except Exception:     # a torn or foreign file: train that run again
            return None
        if metrics_path and entry.get("metrics"):     # the run's curve, as the report draws every run's
            Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
            Path(metrics_path).write_text(entry["metrics"])
        self.used.add(key)
        return res

    def save(self, key: str, res: dict[str, Any], metrics_path: Optional[str]) -> None:
        from recipe.workspace import atomic_path

        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = Path(metrics_path).read_text() if metrics_path and Path(metrics_path).exists() else ""
        entry = {**res, "history": json.loads(json.dumps(res["history"], default=float)), "metrics": metrics}
        with atomic_path(self.path(key)) as tmp:     # a kill mid-write leaves no half file under the key
            torch.save(entry, tmp)
        self.used.add(key)

    def prune(self) -> int:
        """After a finished stage: drop runs this configuration no longer uses (older configs' runs)."""
        gone = 0
        for p in self.folder.glob("*.pt") if self.folder.exists() else ():
            if p.stem not in self.used:
                p.unlink(missing_ok=True)
                gone += 1
        return gone


class Trainer:
    """Runs variants of the base config with every seed on the same data and budget; `jobs` worker
    processes train independent (variant, seed) runs in parallel, each with its share of the threads."""

    def __init__(self, cfg, ctx, base: dict[str, Any], progress, jobs: int = 1, gpus=None):
        self.cfg, self.ctx, self.base, self.progress = cfg, ctx, base, progress
        self.ds = ctx.data()
        self.tr, self.va = ctx.tensors("train"), ctx.tensors("val")
        self.seeds = [cfg.seed + i for i in range(cfg.regularize.seeds)]
        self.runs = 0
        self.reused = 0                      # runs read back from the cache instead of trained
        self.health_runs: list[tuple[str, list[dict]]] = []      # every run's health checks, for the record
        self.jobs = jobs
        self.gpus = list(gpus or [])         # pool process k is pinned to gpus[k] (recipe/devices.py plan_jobs)
        self.placements: dict[int, dict] = {}    # pool process pid -> the GPU it was pinned to and saw
        self.pool = None
        self.cache = RunCache(ctx.dir / CACHE, cfg, self.ds.fingerprint, ctx.device)

    def __enter__(self):
        if self.jobs > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            from recipe import threads

            threads.configure_env()      # the spawned workers import torch with OpenMP told not to spin
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                            initargs=(self.cfg.model_dump(mode="json"), str(self.cfg.base_dir),
                                                      self.ctx.options.device, self.jobs, self.gpus,
                                                      mp.get_context("spawn").Value("i", 0)))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def config(self, overrides: dict[str, Any]):
        return self.cfg.with_overrides({**self.base, **overrides})

    def run_all(self, specs: list[Spec]) -> list[Variant]:
        work = [(i, {"overrides": {**self.base, **sp.overrides}, "seed": seed, "subset": sp.subset,
                      "metrics_path": str(self.ctx.dir / "runs" / run_folder(f"{sp.name}_seed{seed}")
                                          / "metrics.jsonl")})
                 for i, sp in enumerate(specs) for seed in (sp.seeds or self.seeds)]
        keys = [self.cache.key(t) for _, t in work]
        results: list[Optional[dict]] = [self.cache.load(k, t["metrics_path"]) for k, (_, t) in zip(keys, work)]
        todo = [j for j, r in enumerate(results) if r is None]
        self.reused += len(work) - len(todo)
        self.progress.advance(len(work) - len(todo))

        def finished(j: int, res: dict) -> None:     # on disk the moment it is done: Ctrl-C loses only runs under way
            self.cache.save(keys[j], res, work[j][1]["metrics_path"])
            results[j] = res
            self.progress.advance()

        if self.pool is None:
            for j in todo:
                finished(j, _fit_one(self.cfg, self.ds, self.tr, self.va, self.ctx.device, work[j][1]))
        else:
            from concurrent.futures import as_completed

            futures = {self.pool.submit(_worker_task, work[j][1]): j for j in todo}
            for f in as_completed(futures):
                res = f.result()
                placement = res.pop("placement", None)
                if placement:
                    self.placements[placement["pid"]] = placement
                finished(futures[f], res)
        variants = [Variant(sp.name, sp.overrides, task=self.ds.task) for sp in specs]
        for (i, t), res in zip(work, results):
            v = variants[i]
            v.seeds.append(t["seed"])
            v.train.append(res["train"])
            v.val.append(res["val"])
            v.history.append(res["history"])
            v.health.append(res["health"])
            self.health_runs.append((f"{v.name} seed {t['seed']}", res["health"]))
            if specs[i].keep:
                model = create(self.config(v.overrides), self.ds, t["seed"])
                model.load_state_dict(res["state_dict"])
                v.models.append(model.to(self.ctx.device))
            self.runs += 1
        return variants

    def run(self, name: str, overrides: dict[str, Any], subset=None, keep_models: bool = False,
            seeds: Optional[list[int]] = None) -> Variant:
        return self.run_all([Spec(name, overrides, subset, keep_models, seeds)])[0]

    def fresh_seeds(self) -> list[int]:
        """As many seeds again, none used by the ladder: a re-run on them is an independent replicate."""
        return [s + len(self.seeds) for s in self.seeds]


def continue_command(cfg, stage: str, runs: Path) -> str:
    """The exact command that reruns `stage` with this configuration: the config file plus, as -o overrides, every
    key where the configuration differs from the file (the -o options it was started with)."""
    import shlex

    from recipe.config import load

    parts = ["recipe", stage]
    if cfg.path is not None:
        parts.append(str(cfg.path))
        try:
            on_file = load(cfg.path).model_dump(mode="json")
        except Exception:       # the file changed or vanished since: the command still names it
            on_file = None
        if on_file is not None:
            for key, value in _differences(on_file, cfg.model_dump(mode="json")):
                parts += ["-o", f"{key}={json.dumps(value)}"]
    if Path(runs) != Path("runs"):
        parts += ["--runs", str(runs)]
    return " ".join(shlex.quote(p) for p in parts)


def _differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in b.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(a.get(k), dict) and k != "checks":
            out += _differences(a[k], v, key + ".")
        elif a.get(k) != v:
            out.append((key, v))
    return out
