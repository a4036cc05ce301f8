"""Planted model bugs, each built as an import-path factory: Factory(input_shape=, num_outputs=)."""
import time

import torch
from torch import nn


def _mlp(d, k, hidden=64):
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))


def _d(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class IgnoresInput(nn.Module):
    """forward() never uses x: the output is a function of the parameters only."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)

    def forward(self, x):
        return self.net(torch.zeros_like(x).flatten(1))


class SoftmaxOutput(nn.Module):
    """Returns probabilities, which CrossEntropyLoss then log-softmaxes again."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class MixesBatch(nn.Module):
    """A `view` where a `transpose` was meant: hidden features of different samples get mixed."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.a = nn.Linear(_d(input_shape), 32)
        self.b = nn.Linear(32, num_outputs)

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))          # (B, 32)
        h = h.reshape(h.shape[1], h.shape[0]).t()     # the bug: view as (32, B), then transpose back
        return self.b(h)


class FrozenLayer(nn.Module):
    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        for p in self.net[1].parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


class UnusedLayer(nn.Module):
    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        self.extra = nn.Linear(64, 64)               # defined, never called

    def forward(self, x):
        return self.net(x)


class _BadReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * 2.0                     # the bug: twice the true gradient


class BadReLU(nn.Module):
    def forward(self, x):
        return _BadReLU.apply(x)


class WrongBackward(nn.Module):
    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.a = nn.Linear(_d(input_shape), 64)
        self.act = BadReLU()
        self.b = nn.Linear(64, num_outputs)

    def forward(self, x):
        return self.b(self.act(self.a(x.flatten(1))))


class Unseeded(nn.Module):
    """Noise from a generator seeded by the clock: two runs with one seed differ."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        self.gen = torch.Generator().manual_seed(time.perf_counter_ns())

    def forward(self, x):
        if self.training:
            x = x + 0.1 * torch.randn(x.shape, generator=self.gen)
        return self.net(x)


class Overconfident(nn.Module):
    """Logits scaled by 50 at init: the initial loss is far above -log(1/C)."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)

    def forward(self, x):
        return 50.0 * self.net(x)


class ShiftedOutput(nn.Module):
    """A constant added after the final layer: the output bias no longer matches the class priors."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        shift = torch.zeros(num_outputs)
        shift[0] = 4.0
        self.register_buffer("shift", shift)

    def forward(self, x):
        return self.net(x) + self.shift


class DeepSigmoid(nn.Module):
    """Twelve sigmoid layers: the gradient reaching the first layer vanishes."""

    def __init__(self, input_shape, num_outputs, depth=12, width=64):
        super().__init__()
        layers, d = [nn.Flatten()], _d(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.Sigmoid()]
            d = width
        layers.append(nn.Linear(d, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class NegativeBiasReLU(nn.Module):
    """Hidden biases of -20: every ReLU unit is dead from the first step."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        with torch.no_grad():
            self.net[1].bias.fill_(-20.0)

    def forward(self, x):
        return self.net(x)


class ZeroInit(nn.Module):
    """All weights zero: hidden units start identical and stay identical."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        for p in self.net.parameters():
            nn.init.zeros_(p)

    def forward(self, x):
        return self.net(x)


class WrongShape(nn.Module):
    """Returns (B, C, 1) instead of (B, C)."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)

    def forward(self, x):
        return self.net(x)[:, :, None]


class OutputsForLabelsOneToC(nn.Module):
    """Sized for labels 1..C as if they were indices: C + 1 outputs for C classes."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs + 1)

    def forward(self, x):
        return self.net(x)


class HugeOutputBias(nn.Module):
    """The factory's own init is broken: an output bias of 1000 on class 0 (initial loss ~900 against ln 10).
    recipe's output-bias init repairs it for recipe's runs; the checks must still report it."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.net = _mlp(_d(input_shape), num_outputs)
        with torch.no_grad():
            self.net[-1].bias.zero_()
            self.net[-1].bias[0] = 1000.0

    def forward(self, x):
        return self.net(x)


class _Float32Matmul(nn.Module):
    """Holds its weight as a plain float32 tensor (not a parameter or buffer): it cannot run in float64."""

    def __init__(self, d):
        super().__init__()
        self.w = torch.eye(d)

    def forward(self, x):
        return x @ self.w


class _Lookup(nn.Module):
    """Receives integer indices only: no float input to gradcheck."""

    def __init__(self, n, k):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(n, k))

    def forward(self, idx):
        return self.table[idx.clamp(0, len(self.table) - 1)]


class Uncheckable(nn.Module):
    """Two custom modules gradcheck cannot verify (and the model itself, which contains the float32 one)."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        d = _d(input_shape)
        self.fixed = _Float32Matmul(d)
        self.lookup = _Lookup(4, num_outputs)
        self.net = _mlp(d, num_outputs)

    def forward(self, x):
        x = x.flatten(1)
        bucket = (x[:, 0] > 0).long()
        return self.net(self.fixed(x)) + self.lookup(bucket)


class _Scale(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.gain


class NinthCustomIsWrong(nn.Module):
    """Nine custom layers in a row, the ninth with a wrong backward, inside a model that cannot run in float64:
    checking "the first 8" custom modules misses it."""

    def __init__(self, input_shape, num_outputs, width=32):
        super().__init__()
        self.fixed = _Float32Matmul(_d(input_shape))
        self.inp = nn.Linear(_d(input_shape), width)
        self.layers = nn.ModuleList([_Scale(width) for _ in range(8)] + [BadReLU()])
        self.out = nn.Linear(width, num_outputs)

    def forward(self, x):
        h = self.inp(self.fixed(x.flatten(1)))
        for layer in self.layers:
            h = layer(h)
        return self.out(h)


# the zoo: factory -> (check ids that must fail (any of), words in the failing check's title)
ZOO = {
    "IgnoresInput": (("baseline.input-independent",), "zeroed inputs"),
    "SoftmaxOutput": (("baseline.loss-input",), "probabilities"),
    "MixesBatch": (("baseline.batch-independence",), "mixes the batch"),
    "FrozenLayer": (("baseline.grad-flow",), "frozen"),
    "UnusedLayer": (("baseline.grad-flow",), "unused"),
    "WrongBackward": (("baseline.gradcheck",), "act"),
    "NinthCustomIsWrong": (("baseline.gradcheck",), "layers.8"),
    "Unseeded": (("baseline.seed",), "differ"),
    "Overconfident": (("baseline.init-loss",), "too high"),
    "ShiftedOutput": (("baseline.bias-init",), "priors"),
    "DeepSigmoid": (("health.vanishing",), "barely learns"),
    "NegativeBiasReLU": (("health.dead-units",), "never fired"),
    "ZeroInit": (("health.symmetry",), "identical units"),
}
# bugs that must stop with exit 2 and a clear message
ZOO_ERRORS = {
    "WrongShape": "expected (",
    "OutputsForLabelsOneToC": "labels are mapped to 0..9",
}
