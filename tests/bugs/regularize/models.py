"""Planted regularize cases: a net with dropout right next to BatchNorm."""
from torch import nn


class DropoutBesideBatchNorm(nn.Module):
    def __init__(self, input_shape, num_outputs):
        super().__init__()
        d = 1
        for s in input_shape:
            d *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(32, num_outputs))

    def forward(self, x):
        return self.net(x)
