"""Models: linear, mlp, cnn, resnet and import-path factories; init helpers. Sequence models (gpt, lstm, gru) live
in recipe/models_seq.py and are re-exported here."""
from __future__ import annotations

import importlib
import math
from typing import Optional, Sequence

import torch
from torch import nn

from recipe import tasks
from recipe.errors import ModelError
from recipe.models_seq import GPT, SEQUENCE_KINDS, Recurrent, build_sequence, create_sequence  # noqa: F401  (API)

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def mlp(in_features: int, hidden: Sequence[int], out: int, activation: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class CNN(nn.Module):
    """conv3x3-act(-pool) blocks, then a linear head; pools while the map is at least 4 wide."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], out: int, activation: str, dropout: float):
        super().__init__()
        c, h, w = _chw(shape)
        blocks: list[nn.Module] = []
        for ch in channels:
            blocks += [nn.Conv2d(c, ch, 3, padding=1), ACTIVATIONS[activation]()]
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = ch
        self.shape = _chw(shape)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                  nn.Linear(c * h * w, out))

    def forward(self, x):  # x: (B, C*H*W) or (B, C, H, W)
        x = x.reshape(x.shape[0], *self.shape)  # (B, C, H, W)
        return self.head(self.features(x))


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convs; `stride` 2 halves the map and a 1x1 strided projection matches the
    shortcut (He et al. 2016, option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                  ACTIVATIONS[activation](), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else \
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x):
        return self.act(self.shortcut(x) + self.body(x))


class ResNet(nn.Module):
    """A small ResNet (the CIFAR-style ResNet-18 layout): 3x3 stem, one basic block per entry of `channels`,
    every stage after the first strided by 2 while the map is at least 4 wide, global average pooling, linear head.
    On 8x8 digits with channels [16, 32, 64] the maps are 8x8, 4x4, 2x2."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], out: int, activation: str, dropout: float):
        super().__init__()
        c, h, w = _chw(shape)
        self.shape = _chw(shape)
        width = channels[0]
        stages: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   ACTIVATIONS[activation]()]
        for i, ch in enumerate(channels):
            stride = 2 if i > 0 and min(h, w) >= 4 else 1
            stages.append(_Block(width, ch, stride, activation))
            h, w, width = (h + stride - 1) // stride, (w + stride - 1) // stride, ch
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(width, out))

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.shape)  # (B, C, H, W)
        return self.head(self.features(x))


class DropInputs(nn.Module):
    """Sets the given input columns to 0 (the train mean after standardization) before `net` (model.drop_inputs,
    kept by regularize's fewer_features rung): the columns stay in the data, the model cannot use them."""

    def __init__(self, net: nn.Module, columns: Sequence[int]):
        super().__init__()
        self.net = net
        self.register_buffer("columns", torch.as_tensor(list(columns), dtype=torch.long), persistent=False)

    def forward(self, x):  # x: (B, D)
        x = x.reshape(x.shape[0], -1).clone()
        x[:, self.columns] = 0.0
        return self.net(x)


def _chw(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    raise ModelError(f"model.kind cnn/resnet needs image-shaped data: set data.shape to [C, H, W] (got {list(shape)})")


def build(model_cfg, input_shape: Sequence[int], num_outputs: int) -> nn.Module:
    """Build the configured network (not yet initialised beyond PyTorch's default), behind DropInputs when
    model.drop_inputs names columns."""
    net = _build(model_cfg, input_shape, num_outputs)
    drop = list(getattr(model_cfg, "drop_inputs", None) or [])
    if not drop:
        return net
    in_features = int(math.prod(input_shape))
    if max(drop) >= in_features:
        raise ModelError(f"model.drop_inputs: column {max(drop)} does not exist (the input has {in_features} columns)")
    return DropInputs(net, drop)


def _build(model_cfg, input_shape: Sequence[int], num_outputs: int) -> nn.Module:
    kind = model_cfg.kind
    in_features = int(math.prod(input_shape))
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_outputs))
    if kind == "mlp":
        return mlp(in_features, model_cfg.hidden, num_outputs, model_cfg.activation, model_cfg.dropout)
    if kind == "cnn":
        return CNN(input_shape, model_cfg.hidden, num_outputs, model_cfg.activation, model_cfg.dropout)
    if kind == "resnet":
        return ResNet(input_shape, model_cfg.hidden, num_outputs, model_cfg.activation, model_cfg.dropout)
    if kind in SEQUENCE_KINDS:
        raise ModelError(f"model.kind {kind} is a sequence model: it needs token windows from text data (a .txt "
                         f"source or data.text), not rows of per-sample shape {list(input_shape)}")
    return _from_import_path(kind, input_shape, num_outputs, model_cfg.args)


def call_factory(path: str, kwargs: dict, called_as: str) -> nn.Module:
    """Import 'package.module:Factory' and call it; every failure is a ModelError naming model.kind."""
    module_name, attr = path.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ModelError(f"model.kind: cannot import '{path}' ({e})") from None
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ModelError(f"model.kind: '{path}' rejected its arguments ({e}); {called_as}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.kind: '{path}' returned {type(model).__name__}, not an nn.Module")
    return model


def _from_import_path(path: str, input_shape, num_outputs: int, args: dict) -> nn.Module:
    return call_factory(path, dict(input_shape=tuple(input_shape), num_outputs=num_outputs, **args),
                        "it is called as Factory(input_shape=..., num_outputs=..., **model.args)")


def init_weights(model: nn.Module, scheme: str, activation: str = "relu") -> None:
    if scheme == "default":
        return
    nonlinearity = "relu" if activation in ("relu", "gelu") else ("leaky_relu" if activation == "leaky_relu" else "tanh")
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
            else:
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain(nonlinearity))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def final_layer(model: nn.Module, num_outputs: int) -> Optional[nn.Linear]:
    """The last nn.Linear producing `num_outputs` values, or None if the model has no such layer."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == num_outputs:
            last = m
    return last


def set_output_bias(model: nn.Module, task: str, priors: Optional[Sequence[float]], num_outputs: int) -> bool:
    """The final layer's bias from the task (log class priors, the standardized target mean); False: no such layer."""
    layer = final_layer(model, num_outputs)
    if layer is None or layer.bias is None:
        return False
    with torch.no_grad():
        layer.bias.copy_(tasks.get(task).output_bias(priors).to(layer.bias))
    return True


def create(cfg, ds, seed: int, overrides=None) -> nn.Module:
    """The experiment's model, seeded, initialised, output bias set to the priors. Token inputs (text data) get a
    sequence model (models_seq.create_sequence: gpt, lstm, gru or an import path called with the vocabulary)."""
    if ds.inputs == "tokens":
        return create_sequence(cfg.model, ds.vocab_size, ds.block_size, ds.num_outputs, task=ds.task, seed=seed,
                               pad_id=ds.pad_id, priors=ds.class_priors())
    torch.manual_seed(seed)
    model_cfg = cfg.model
    model = build(model_cfg, ds.shape, ds.num_outputs)
    init_weights(model, model_cfg.init, model_cfg.activation)
    set_output_bias(model, ds.task, ds.class_priors(), ds.num_outputs)
    _check_output_shape(model, ds)
    return model


def _check_output_shape(model: nn.Module, ds) -> None:
    """One forward pass on two zero samples: a wrong output shape is a clear error (exit 2), not a crash later."""
    from recipe.engine.train import check_output

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, int(torch.tensor(ds.shape).prod())))
    except Exception as e:
        raise ModelError(f"model.kind: the model fails on a batch of shape (2, {int(torch.tensor(ds.shape).prod())}) "
                         f"(per-sample shape {list(ds.shape)}): {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    finally:
        model.train(was)
    check_output(out, 2, ds.task, ds.num_outputs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
