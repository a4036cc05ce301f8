"""What every stage is given and returns: StageResult, the run Options, the Context (its workspace, data,
device, upstream records, thresholds, progress). Below the stages: they import this, never the runner."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from recipe import checks as C
from recipe.errors import GateError
from recipe.workspace import Artifacts, Workspace, read_artifact_json


@dataclass
class StageResult:
    """What a stage returns: its checks, metrics, a one-line summary, extra record fields."""

    checks: list[C.Check]
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    runs: Path = Path("runs")
    device: str = "auto"
    force: bool = False
    quiet: bool = False
    json: bool = False
    jobs: Optional[int | str] = None      # a count or "auto" (recipe/devices.py plan_jobs resolves it)
    devices: Optional[int] = None                        # --devices: train.devices for this run of the stage
    tune: dict[str, Any] = field(default_factory=dict)   # CLI-only tune options (method flags, storage)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Context:
    """The stage's view of its workspace (the `ws` of DESIGN's `run(cfg, ws)`)."""

    def __init__(self, stage: str, cfg, workspace: Workspace, options: Options, console):
        self.stage, self.cfg, self.workspace, self.options, self.console = stage, cfg, workspace, options, console
        self.dir = workspace.stage_dir(stage)
        self.artifacts = Artifacts(self.dir)
        self._data = None
        self._device = None
        self.upstream_digests: dict[str, str] = {}

    # data and device -------------------------------------------------------------------
    def data(self):
        if self._data is None:
            from recipe.data import streaming

            self._data = streaming.load(self.cfg, self.workspace.dir)     # in memory, or streamed above the budget
            if "loading" in self._data.extra:
                self.log(streaming.describe(self._data.extra["loading"]))
        return self._data

    @property
    def device(self):
        if self._device is None:
            from recipe.engine.train import pick_device

            self._device = pick_device(self.options.device)
        return self._device

    def tensors(self, split: str):
        """train or val as device-resident tensors (normalized), cached for the stage; a streamed split
        (recipe/engine/streamed.py) where the data is over data.memory_budget."""
        if split not in ("train", "val"):
            raise ValueError(f"ctx.tensors serves train and val only, not {split!r}: the test split is sealed")
        cache = self.__dict__.setdefault("_tensors", {})
        if split not in cache:
            from recipe.engine.train import to_tensors

            ds = self.data()
            if getattr(ds, "streamed", False):     # over data.memory_budget: batches come from disk
                from recipe.engine.streamed import StreamSplit

                cache[split] = StreamSplit(ds, split, self.device, seed=self.cfg.seed)
            else:
                cache[split] = to_tensors(ds, getattr(ds, split), self.device)
        return cache[split]

    # upstream --------------------------------------------------------------------------
    def upstream(self, stage: str) -> dict:
        rec = self.workspace.read_record(stage)
        if rec is None:
            raise GateError(f"{stage} has not run: run 'recipe {stage}' first")
        return rec

    def upstream_json(self, stage: str, rel: str) -> Any:
        return read_artifact_json(self.workspace, stage, rel)

    def upstream_path(self, stage: str, rel: str) -> Path:
        return self.workspace.stage_dir(stage) / rel

    # helpers ---------------------------------------------------------------------------
    def thresholds(self, check_id: str) -> dict[str, Any]:
        return C.thresholds(check_id, self.cfg.checks)

    def log(self, message: str) -> None:
        if not self.options.quiet:
            self.console.print(message)

    def progress(self, description: str, total: int):
        return _Progress(self.console, description, total, disabled=self.options.quiet)


class _Progress:
    """Progress on stderr; `update(done, row)` fits the engine's progress hook. In a terminal, a Rich bar with ETA;
    elsewhere (CI, `tee`, a log file, make) a plain line at most every LOG_EVERY seconds, since a bar that redraws
    in place prints nothing a log can show."""

    LOG_EVERY = 15.0

    def __init__(self, console, description: str, total: int, disabled: bool):
        self.console, self.description, self.total, self.disabled = console, description, total, disabled
        self.bar = None
        self.plain = not disabled and not console.is_terminal
        self.done, self.info = 0, ""
        self.start = self.last = time.monotonic()

    def __enter__(self):
        if not self.disabled and not self.plain:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=self.total, info="")
        return self

    def update(self, done: int, row: Optional[dict] = None) -> None:
        if self.disabled:
            return
        if row:
            self.info = "  ".join(f"{k} {v:.4g}" for k, v in row.items()
                                  if k in ("train_loss", "val_loss", "val_score") and isinstance(v, float))
        self.done = done
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=self.info)
        else:
            self._log()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def line(self, now: Optional[float] = None) -> str:
        """The plain progress line: stage, done/total, elapsed, ETA, the latest metrics."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        eta = elapsed / self.done * (self.total - self.done) if 0 < self.done < self.total else None
        text = f"{self.description}: {self.done}/{self.total}, {_clock(elapsed)} elapsed"
        if eta is not None:
            text += f", eta {_clock(eta)}"
        return text + (f"  {self.info}" if self.info else "")

    def _log(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.LOG_EVERY:
            self.last = now
            self.console.print(self.line(now), soft_wrap=True, markup=False, highlight=False)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
