"""Models for tests/engine/test_distributed.py that the child ranks must import by name (pickled by reference)."""
import os

from torch import nn


class FailsOnRankOne(nn.Module):
    """An MLP whose forward raises on rank 1 from its third training step: a crash, not a kill."""

    def __init__(self, d_in: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, classes))
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if os.environ.get("RANK") == "1" and self.calls >= 3:
                raise ValueError("planted failure on rank 1")
        return self.net(x)
