"""health.* checks never pass on what they did not observe (issue 16 item 2)."""
import torch
from torch import nn

from recipe.engine.monitors import Health


class OnlyBias(nn.Module):
    """No weight matrix at all: nothing to sample gradient norms or unit symmetry from."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x[:, :3] + self.shift


def test_nothing_observed_is_skip_not_pass():
    checks = {c.id: c for c in Health(OnlyBias()).checks()}
    assert checks["health.symmetry"].status == "skip" and checks["health.symmetry"].evidence["layers_checked"] == 0
    assert checks["health.exploding"].status == "skip"


def test_loss_watched_without_weight_matrices_says_only_the_loss_was_watched():
    h = Health(OnlyBias(), every=1)
    for step, loss in enumerate([1.0, 0.9, 0.8]):
        h.on_batch_end(step, torch.tensor(loss))
    h.flush(2)
    c = next(c for c in h.checks() if c.id == "health.exploding")
    assert c.status == "pass" and "no gradient norms sampled" in c.title


def test_a_model_with_weights_still_passes_symmetry():
    checks = {c.id: c for c in Health(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))).checks()}
    assert checks["health.symmetry"].status == "pass" and checks["health.symmetry"].evidence["layers_checked"] == 2
