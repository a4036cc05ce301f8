"""The one epoch loop: `fit` (one model) and `fit_stacked` (K members of one stack) both run `run_epochs`, so early
stopping, the time budget, progress, health monitors, restore-best and metrics.jsonl act alike for both.

What differs between a single model and a stack is a strategy (train.Single, stacked.Stack): how one epoch of steps
runs, how the active runs are evaluated, how a run's weights are snapshot and put back, and how a run leaves
(a stack shrinks). Everything a run decides on its own curve lives here, once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from recipe import tasks

_clock = time.perf_counter      # the loop's clock (a test may replace it)


@dataclass
class RunResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best: dict[str, Any] = field(default_factory=dict)      # val metrics at the best epoch
    final_train: dict[str, Any] = field(default_factory=dict)
    stopped: str = "completed"
    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    health: list = field(default_factory=list)
    first_loss: float = float("nan")
    precision: str = "fp32"                                  # what the run really used (resolve_precision)
    devices: int = 1                                         # ranks that trained it (train.devices)
    rank_samples: list = field(default_factory=list)         # with devices > 1: the samples each rank trained on

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "val": _plain(self.best), "train": _plain(self.final_train),
                "stopped": self.stopped, "steps": self.steps, "seconds": round(self.seconds, 3),
                "epochs": len(self.history)}


def _plain(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "per_class"} | ({"per_class": d["per_class"]} if "per_class" in d else {})


class Pruned(Exception):
    """Raised by an on_epoch callback to end a run early (tune pruning)."""


@dataclass(eq=False)      # runs are compared by identity (a stack's members may be equal field by field)
class Run:
    """One run's state in the loop: its result, monitors, curve file, callbacks and early-stopping state."""

    result: RunResult
    health: Any                                             # monitors.Health
    log: Any                                                # runlog.RunLog
    model: Any = None
    on_epoch: Optional[Callable[[int, dict], None]] = None  # may raise Pruned
    progress: Optional[Callable[[int, dict], None]] = None
    on_finish: Optional[Callable[[], None]] = None          # called once the run has left and is finished
    gen: Any = None                                         # its batch-order generator
    seed: int = 0
    best_value: float = math.inf
    since_best: int = 0
    best_state: Any = None
    last_eval: Optional[dict] = None
    seconds: float = 0.0


class Strategy(Protocol):
    active: list[Run]
    step: int
    task: str

    def train_epoch(self, epoch: int, leave: Callable[[list[int]], None]) -> list[float]:
        """One epoch of steps; runs that go non-finite mid-epoch get stopped = 'non_finite' and are passed to
        `leave` (positions in `active`) at once. Returns the mean train loss of each run still active."""

    def evaluate(self) -> list[dict]:
        """Val metrics (score_outputs) of each active run."""

    def snapshot(self, j: int) -> Any:
        """A copy of active run j's weights (its best epoch so far)."""

    def release(self, positions: list[int]) -> list[Any]:
        """Take these runs out of `active` (and the stack); returns each one's current weights (or None)."""

    def load(self, run: Run, weights: Any) -> None:
        """Put `weights` into run.model (None: the model already holds them)."""

    def evaluate_run(self, run: Run, split: str) -> dict:
        """Metrics of run.model on 'train' or 'val', as the engine's evaluate."""


def run_epochs(strategy: Strategy, *, epochs: int, early_stopping: Optional[dict] = None,
               max_seconds: Optional[float] = None, restore_best: bool = True, has_val: bool = True,
               eval_train: bool = True) -> None:
    """Train every run of `strategy` for up to `epochs`; each ends with its RunResult filled in (run.result).

    Per run and epoch: a history row (epoch, step, train loss, val loss/score, val_<the task's metric>, per-class
    accuracy, seconds) into metrics.jsonl and progress; the best epoch by early_stopping.metric; on_epoch (Pruned stops the
    run); patience; max_seconds on the run's own seconds (a stack's wall time is split among its members)."""
    _Loop(strategy, epochs, early_stopping or {}, max_seconds, restore_best, has_val, eval_train).run()


class _Loop:
    def __init__(self, s: Strategy, epochs, early_stopping: dict, max_seconds, restore_best, has_val, eval_train):
        self.s, self.epochs, self.max_seconds = s, epochs, max_seconds
        self.metric = early_stopping.get("metric", "val_loss")
        self.patience = early_stopping.get("patience")
        self.restore_best, self.has_val, self.eval_train = restore_best, has_val, eval_train
        self.task = tasks.get(s.task)
        self.score_key = f"val_{self.task.metric}"
        self.t_last = _clock()

    def _charge(self) -> None:
        """The wall time since the last charge, split among the runs active now."""
        now = _clock()
        if self.s.active:
            share = (now - self.t_last) / len(self.s.active)
            for run in self.s.active:
                run.seconds += share
        self.t_last = now

    def run(self) -> None:
        s = self.s
        try:
            for epoch in range(self.epochs):
                if not s.active:
                    break
                losses = s.train_epoch(epoch, self.leave)
                if not s.active:
                    break
                evals = s.evaluate() if self.has_val else [None] * len(s.active)
                self._charge()
                gone = [j for j, (run, loss, v) in enumerate(zip(s.active, losses, evals))
                        if self._end_epoch(run, epoch + 1, loss, v)]
                self._charge()          # on_epoch's time (the pruner's journal writes) is the runs' time too
                if self.max_seconds is not None:
                    for j, run in enumerate(s.active):
                        if j not in gone and run.seconds > self.max_seconds:
                            run.result.stopped = "max_seconds"
                            gone.append(j)
                agree = getattr(s, "agree", None)   # one run across devices: rank 0's decision holds on every rank
                if agree is not None:
                    gone = agree(sorted(gone))
                if gone:
                    self.leave(sorted(gone))
            if s.active:
                self.leave(list(range(len(s.active))))
        except BaseException:
            for run in s.active:        # runs in flight get no result; their caller says why
                run.result.stopped = "interrupted"
                run.log.close()
            raise

    def _end_epoch(self, run: Run, epoch: int, train_loss: float, v: Optional[dict]) -> bool:
        """The epoch's row, best-epoch bookkeeping, on_epoch and patience; True when the run stops here."""
        r = run.result
        run.health.on_epoch_end(train_loss)
        row: dict[str, Any] = {"epoch": epoch, "step": self.s.step, "train_loss": train_loss}
        if v is not None:
            run.last_eval = v
            row.update(val_loss=v["loss"], val_score=v["score"])
            row[self.score_key] = v["score"]          # val_accuracy, val_r2: the task's metric
            if "per_class" in v:
                row["val_per_class"] = v["per_class"]
        row["seconds"] = round(run.seconds, 4)
        r.history.append(row)
        run.log.epoch(row)
        if run.progress is not None:
            run.progress(epoch, row)
        if v is not None:
            value = row["val_loss"] if self.metric == "val_loss" else \
                (-row["val_score"] if self.task.higher_is_better else row["val_score"])
            if value < run.best_value - 1e-9:
                run.best_value, run.since_best, r.best_epoch = value, 0, epoch
                r.best = {"loss": row["val_loss"], "score": row["val_score"]}
                if self.restore_best:
                    run.best_state = self.s.snapshot(self.s.active.index(run))
            else:
                run.since_best += 1
        try:
            if run.on_epoch is not None:
                run.on_epoch(epoch, row)
        except Pruned:
            r.stopped = "pruned"
            return True
        if self.patience is not None and run.since_best >= self.patience:
            r.stopped = "early_stopping"
            return True
        return False

    def leave(self, positions: list[int]) -> None:
        """Runs at `positions` stop: out of the strategy, best epoch restored, final metrics, health, log closed."""
        self._charge()
        runs = [self.s.active[j] for j in positions]
        for run, current in zip(runs, self.s.release(positions)):
            self._finish(run, current)
        self.t_last = _clock()          # finishing a run is not training time of the others

    def _finish(self, run: Run, current: Any) -> None:
        r = run.result
        restored = self.restore_best and run.best_state is not None and r.stopped != "non_finite" and \
            r.best_epoch != len(r.history)
        self.s.load(run, run.best_state if restored else current)
        r.steps, r.seconds = self.s.step, run.seconds
        if self.has_val and r.stopped != "non_finite":
            # the weights are those of the last evaluation unless the best epoch was restored: reuse it
            r.best = dict(run.last_eval) if (run.last_eval is not None and not restored and r.stopped != "pruned") \
                else self.s.evaluate_run(run, "val")
        if self.eval_train and r.stopped != "non_finite":
            r.final_train = self.s.evaluate_run(run, "train")
        r.health = run.health.checks()
        run.log.close()
        if run.on_finish is not None:
            run.on_finish()
