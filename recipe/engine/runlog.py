"""Every run's curve: metrics.jsonl (one line per epoch, plus lines at logged steps) and, where the optional
`tensorboard` package is installed (`pip install recipe[tensorboard]`), TensorBoard event files beside it."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional


def _summary_writer(folder: Path):
    """A torch SummaryWriter when tensorboard is importable, else None (nothing else changes)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:      # torch.utils.tensorboard imports the tensorboard package, which is optional
        return None
    return SummaryWriter(log_dir=str(folder))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RunLog:
    """Appends a run's rows to <folder>/metrics.jsonl and mirrors the scalars to TensorBoard."""

    def __init__(self, path: Optional[Path]):
        self.path = Path(path) if path else None
        self.file = None
        self.writer = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a")
            self.writer = _summary_writer(self.path.parent)

    def step(self, step: int, train_loss: float) -> None:
        """A logged step: the mean train loss of the steps since the last one."""
        self._write({"step": step, "train_loss": train_loss})
        if self.writer is not None and _finite(train_loss):
            self.writer.add_scalar("step/train_loss", train_loss, step)

    def epoch(self, row: dict[str, Any]) -> None:
        self._write(row)
        if self.writer is not None:
            for key, value in row.items():
                if key in ("epoch", "step", "seconds"):
                    continue
                if _finite(value):
                    self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
                elif isinstance(value, list):       # per-class metric: one scalar per class
                    for i, v in enumerate(value):
                        if _finite(v):
                            self.writer.add_scalar(f"epoch/{key}/{i}", v, row["epoch"])

    def _write(self, row: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(epoch rows, step rows) of a metrics.jsonl; a torn last line (a killed run) is skipped."""
    epochs, steps = [], []
    try:
        text = Path(path).read_text()
    except OSError:
        return epochs, steps
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            (epochs if "epoch" in row else steps).append(row)
    return epochs, steps


def run_folder(name: str) -> str:
    """A run's name as one safe path component: 'chosen (weight_decay)' -> 'chosen_weight_decay'."""
    import re

    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_.") or "run"
