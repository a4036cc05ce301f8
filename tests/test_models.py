"""Built-in models: the ResNet downsamples like a small-image ResNet-18 and has image-model channel defaults."""
from __future__ import annotations

import torch

from recipe.config import validate
from recipe.models import ResNet, build, count_parameters
from tests.conftest import check, invoke, record, write_config


def _model_cfg(**model):
    return validate({"name": "x", "data": {"source": "builtin:digits", "shape": [1, 8, 8]}, "model": model}).model


def test_image_models_get_channel_defaults_and_mlp_keeps_its_widths():
    assert _model_cfg(kind="resnet").hidden == [16, 32, 64]
    assert _model_cfg(kind="cnn").hidden == [32, 64]
    assert _model_cfg(kind="mlp").hidden == [256, 256]
    assert _model_cfg(kind="resnet", hidden=[8, 8]).hidden == [8, 8]          # an explicit setting wins


def test_resnet_stages_are_strided():
    net = build(_model_cfg(kind="resnet"), (1, 8, 8), 10)
    sizes = []
    for block in net.features[3:]:
        block.register_forward_hook(lambda m, a, out: sizes.append(tuple(out.shape[1:])))
    assert net(torch.zeros(2, 64)).shape == (2, 10)
    assert sizes == [(16, 8, 8), (32, 4, 4), (64, 2, 2)]
    assert count_parameters(net) == 77754
    big = ResNet((3, 32, 32), [64, 128, 256, 512], 10, "relu", 0.0)               # the CIFAR ResNet-18 layout
    sizes.clear()
    for block in big.features[3:]:
        block.register_forward_hook(lambda m, a, out: sizes.append(tuple(out.shape[1:])))
    big(torch.zeros(1, 3 * 32 * 32))
    assert sizes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


RESNET = """\
name: {name}
seed: 0
data: {{source: builtin:digits, shape: [1, 8, 8]}}
model: {{kind: resnet}}
train: {{lr: 3.0e-3, batch_size: 64, epochs: 3}}
overfit: {{samples: 16, steps: 60}}
"""


def test_resnet_goes_through_overfit_batch(tmp_path):
    cfg = write_config(tmp_path, RESNET, name="rn")
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch"):
        r = invoke(stage, cfg, "--runs", runs, "-q")
        assert r.exit_code == 0, (stage, r)
    rec = record(runs, "rn", "overfit-batch")
    assert check(rec, "overfit.memorize")["status"] == "pass"
    fit = check(rec, "overfit.train-fit")
    assert fit["status"] == "pass" and fit["evidence"]["parameters"] == 77754
    assert fit["evidence"]["train_score"] > 0.97
    assert check(record(runs, "rn", "baseline"), "baseline.seed")["status"] == "pass"
