"""Stage 2's model checks on the cases they must get right: imbalanced data, the model as the user built it."""
import numpy as np
import torch

from recipe.stages import baseline as B
from tests.conftest import check, invoke, record, write_config

IMBALANCED = """\
name: {name}
seed: 0
data: {{source: d.npz}}
model: {{kind: {model}}}
train: {{lr: 3.0e-3, batch_size: 64, epochs: 10}}
"""


def _imbalanced_npz(path, n=3000, seed=0):
    """95% / 5%: the rare class is a learnable region of feature space (x0 + x1 large)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    score = x[:, 0] + x[:, 1]
    y = (score > np.quantile(score, 0.95)).astype(int)
    np.savez(path, x=x, y=y)
    return path


def test_imbalanced_95_5_correct_mlp_passes_and_input_ignoring_model_fails(tmp_path):
    _imbalanced_npz(tmp_path / "d.npz")
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, IMBALANCED, name="rare", model="mlp")
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    r = invoke("baseline", cfg, "--runs", runs)
    c = check(record(runs, "rare", "baseline"), "baseline.input-independent")
    assert c["status"] == "pass", c
    ev = c["evidence"]
    assert ev["metric"] == "balanced accuracy" and ev["val_score_zeroed_inputs"] == 0.5   # constant prediction
    assert ev["gap"] > 0.2 and ev["val_loss_real_inputs"] < ev["val_loss_zeroed_inputs"]
    assert r.exit_code == 0, r
    cfg = write_config(tmp_path, IMBALANCED, name="rare", model='"tests.bugs.models.zoo:IgnoresInput"')
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    c = check(record(runs, "rare", "baseline"), "baseline.input-independent")
    assert r.exit_code == 1 and c["status"] == "fail" and "zeroed inputs" in c["title"], c


def test_input_independent_compares_balanced_accuracy_and_loss():
    th = {"min_gap": 0.05, "min_loss_gain": 0.05}

    class DS:
        task, num_classes = "classification", 2

    y = torch.tensor([0] * 190 + [1] * 10)
    majority = torch.log(torch.tensor([[0.95, 0.05]] * 200))
    # accuracy 0.99 vs 0.95: a gap of 0.04 that an accuracy rule calls "as good as zeroed inputs"
    good = majority.clone()
    good[190:198] = torch.log(torch.tensor([0.1, 0.9]))
    c = B.check_input_independent(good, majority, y, DS, th, seed=0)
    assert c.status == "pass" and c.evidence["gap"] == 0.4
    c = B.check_input_independent(majority, majority, y, DS, th, seed=0)
    assert c.status == "fail" and c.evidence["gap"] == 0 and c.evidence["relative_loss_gain"] == 0


def test_as_built_is_create_without_the_output_bias(tmp_path):
    """baseline measures the model as built by repeating create's steps: they must not drift apart."""
    from recipe.config import load
    from recipe.data import load as load_data
    from recipe.models import create, final_layer

    for kind in ("mlp", '"tests.bugs.models.zoo:HugeOutputBias"'):
        cfg = load(write_config(tmp_path, "name: x\nseed: 3\ndata: {{source: 'builtin:iris'}}\n"
                                "model: {{kind: " + kind + "}}\n", name="x"))
        ds = load_data(cfg)
        made, built = create(cfg, ds, 3), B.as_built(cfg, ds, 3)
        bias = final_layer(made, ds.num_outputs).bias
        differ = [k for k, v in built.state_dict().items() if not torch.equal(v, made.state_dict()[k])]
        assert all(made.state_dict()[k] is bias or torch.equal(made.state_dict()[k], bias) for k in differ), differ
        assert len(differ) <= 1


def test_batch_independence_is_skip_when_the_output_has_no_input_gradient():
    from recipe.engine.train import Tensors

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.bias.expand(len(x), 3) + 0 * x.sum()    # depends on x only through a zero weight

    tr = Tensors(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))
    c = B.check_batch_independence(Constant(), tr, {"tolerance": 1e-7})
    assert c.status == "skip" and c.evidence["max_grad_on_own_sample"] == 0.0
    mixing = torch.nn.Linear(5, 3)
    assert B.check_batch_independence(mixing, tr, {"tolerance": 1e-7}).status == "pass"


def test_tune_boundary_is_skip_when_no_parameter_has_a_range():
    from types import SimpleNamespace

    from recipe import checks as C
    from recipe.stages.tune import check_boundary

    trial = SimpleNamespace(params={"train.batch_size": 32}, value=0.9, number=0)
    c = check_boundary([trial], {"train.batch_size": {"choices": [32]}}, C.thresholds("tune.boundary"))
    assert c.status == "skip" and c.evidence["params"] == {}


def test_data_signal_scores_balanced_accuracy_so_95_5_data_passes(tmp_path):
    from tests.conftest import invoke, record, write_config

    _imbalanced_npz(tmp_path / "d.npz")
    cfg = write_config(tmp_path, IMBALANCED, name="sig", model="mlp")
    assert invoke("inspect", cfg, "--runs", tmp_path / "runs").exit_code == 0
    c = next(c for c in record(tmp_path / "runs", "sig", "inspect")["checks"] if c["id"] == "data.signal")
    assert c["status"] == "pass" and c["evidence"]["metric"] == "balanced_accuracy", c
