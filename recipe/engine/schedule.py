"""The learning-rate schedule of the one training loop (train.schedule, train.warmup_steps/warmup_fraction,
train.min_lr_ratio): constant, or linear warmup then cosine decay to a floor (nanoGPT's get_lr)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"                   # "constant" | "cosine"
    warmup_steps: int = 0
    warmup_fraction: Optional[float] = None  # of all steps; used instead of warmup_steps when set
    min_lr_ratio: float = 0.1                # cosine's floor, as a fraction of the base lr

    @property
    def is_constant(self) -> bool:
        """The lr never changes: the loop leaves the optimizer's lr alone (today's numbers, bit for bit)."""
        return self.kind == "constant" and self.warmup_steps == 0 and not self.warmup_fraction

    def warmup(self, total_steps: int) -> int:
        if self.warmup_fraction is not None:
            return int(round(self.warmup_fraction * total_steps))
        return self.warmup_steps

    def factor(self, step: int, total_steps: int) -> float:
        """The lr multiplier for update `step` (0-based) of a run of `total_steps` updates.

        Warmup: (step + 1) / w for the first w steps, so the w-th update uses the full lr. Cosine: from the
        full lr at step w down to min_lr_ratio at the last step (total_steps - 1), the floor after that."""
        w = self.warmup(total_steps)
        if step < w:
            return (step + 1) / w
        if self.kind == "constant":
            return 1.0
        ratio = min(1.0, (step - w) / max(1, total_steps - 1 - w))
        floor = self.min_lr_ratio
        return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - floor)


def from_config(train_cfg) -> Optional[Schedule]:
    """The train section's schedule, or None when the lr stays constant."""
    s = Schedule(kind=train_cfg.schedule, warmup_steps=train_cfg.warmup_steps,
                 warmup_fraction=train_cfg.warmup_fraction, min_lr_ratio=train_cfg.min_lr_ratio)
    return None if s.is_constant else s
