"""Run one stage: gate, lock, load data, write an honest record whatever happens."""
from __future__ import annotations

import importlib
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from recipe import __version__
from recipe import checks as C
from recipe import interrupts, threads
from recipe.errors import GateError, RecipeError
from recipe.config import digest_json
from recipe.stage import Context, Options, StageResult, now
from recipe.workspace import Workspace, config_read, gate, remember_config, upstream_of

TRAINS = ("baseline", "overfit-batch", "regularize", "tune", "ensemble")   # stages that build torch optimizers
MODULES = {
    "inspect": "recipe.stages.inspect",
    "baseline": "recipe.stages.baseline",
    "overfit-batch": "recipe.stages.overfit",
    "regularize": "recipe.stages.regularize",
    "tune": "recipe.stages.tune",
    "ensemble": "recipe.stages.ensemble",
}


def _versions() -> dict[str, str]:
    import sys

    out = {"recipe": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def _clear_stage_dir(path: Path, keep: tuple[str, ...]) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def execute(stage: str, cfg, options: Options, console) -> tuple[dict, int]:
    """Run `stage` end to end; returns (record, exit code). Raises RecipeError for exit 2/3."""
    interrupts.arm()     # `recipe run`: the previous stage held interrupts while it finished
    with interrupts.deferred():
        module = importlib.import_module(MODULES[stage])
        if stage in TRAINS:      # the first optimizer step imports torch._dynamo (800 modules): do it here, whole
            importlib.import_module("torch._dynamo")
    threads.apply_default()
    ws = Workspace(options.runs, cfg.name)
    config_now = cfg.model_dump(mode="json")
    problems = gate(ws, stage, config_now)
    if problems and not options.force:
        force = " (or pass --force)" if all(p.forceable for p in problems) else ""
        raise GateError([p.message for p in problems] + [f"run '{problems[0].command}'{force}"])
    created = [d for d in (options.runs, ws.dir) if not d.exists()]
    try:
        return _locked(stage, module, cfg, ws, options, console, problems, config_now)
    except BaseException:
        _remove_if_empty(created)     # a config whose data cannot load leaves no empty runs/<name>/ behind
        raise


def _remove_if_empty(created: list[Path]) -> None:
    """Folders this run created, removed again when they hold nothing but the lock file."""
    for d in reversed(created):
        try:
            if {c.name for c in d.iterdir()} <= {".lock"}:
                (d / ".lock").unlink(missing_ok=True)
                d.rmdir()
        except OSError:
            pass        # something else is in it, or it is gone already: leave it


def _locked(stage, module, cfg, ws, options, console, problems, config_now) -> tuple[dict, int]:
    shared = getattr(module, "SHARED_LOCK", False)
    with ws.lock(shared=shared):
        ctx = Context(stage, cfg, ws, options, console)
        pre = getattr(module, "before", None)
        if pre is not None:
            pre(cfg, ctx)
        ds = ctx.data()
        fp_problems = [f"data changed since {up} ran (fingerprint {rec.get('data_fingerprint')} -> {ds.fingerprint}): "
                       f"rerun 'recipe {up}'"
                       for up in upstream_of(stage)
                       if (rec := ws.read_record(up)) and rec.get("data_fingerprint") not in (None, ds.fingerprint)]
        if fp_problems and not options.force:
            raise GateError(fp_problems)
        forced_reasons = [p.message for p in problems] + fp_problems
        read = config_read(stage, config_now)
        record: dict[str, Any] = {
            "stage": stage,
            "status": "interrupted",       # until the stage finishes, a kill leaves an honest record
            "started": now(),
            "pid": os.getpid(),
            "versions": _versions(),
            "seed": cfg.seed,
            "config_path": str(cfg.path) if cfg.path else None,
            "config": read,
            "config_digests": {s: digest_json(v) for s, v in read.items()},
            "data_fingerprint": ds.fingerprint,
            "data_files": ds.files,
            "data_loading": ds.extra.get("loading"),    # in memory or streamed, and why (recipe/data/streaming.py)
            "upstream": {up: ws.record_digest(up) for up in upstream_of(stage)},
        }
        prior = ws.read_record(stage)
        if prior and prior.get("force_history"):
            record["force_history"] = prior["force_history"]
        if forced_reasons:
            record.setdefault("force_history", []).append({"at": now(), "reasons": forced_reasons})
        _clear_stage_dir(ws.stage_dir(stage), getattr(module, "PRESERVE", ()))
        ws.write_record(stage, record)
        remember_config(options.runs, cfg.path) if cfg.path else None
        start = time.perf_counter()
        record["device"] = ctx.options.device       # the resolved device is recorded when the stage used one
        record["versions"] = _versions()
        if stage in TRAINS:      # where this stage's runs use train.devices, and why (recipe/engine/distributed.py)
            from recipe.engine import distributed

            record["devices"] = distributed.begin(stage, cfg, options)
        interrupts.begin()
        try:
            result: StageResult = module.run(cfg, ctx)
            if interrupts.swallowed():     # raised inside a destructor or a library's except: still a Ctrl-C
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            record.update(status="interrupted", finished=now(), seconds=round(time.perf_counter() - start, 3),
                          artifacts=ctx.artifacts.files)
            ws.write_record(stage, record)
            raise
        except RecipeError as e:
            record.update(status="failed", finished=now(), error=str(e), artifacts=ctx.artifacts.files,
                          seconds=round(time.perf_counter() - start, 3), checks=[])
            ws.write_record(stage, record)
            raise
        except Exception as e:   # a bug in recipe or in a user's model: the record says so, the traceback shows
            record.update(status="failed", finished=now(), error=f"internal error: {type(e).__name__}: {e}",
                          artifacts=ctx.artifacts.files, seconds=round(time.perf_counter() - start, 3), checks=[])
            ws.write_record(stage, record)
            raise
        finally:
            if stage in TRAINS:
                distributed.end()
        interrupts.hold()    # the stage's work is done: writing its outcome must not be cut short
        if ctx._device is not None:
            record["device"] = str(ctx._device)
        result.checks = C.apply_overrides(result.checks, cfg.checks)
        failed = any(c.status == "fail" for c in result.checks)
        status = "failed" if failed else ("forced" if forced_reasons else "passed")
        record.update(
            status=status,
            finished=now(),
            seconds=round(time.perf_counter() - start, 3),
            versions=_versions(),
            artifacts=ctx.artifacts.files,
            checks=[c.to_dict() for c in result.checks],
            metrics=result.metrics,
            summary=result.summary,
            **result.extra,
        )
        ws.write_record(stage, record)
    return record, (1 if failed else 0)
