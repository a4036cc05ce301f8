"""Each planted model bug is caught by its baseline check, named, with advice; exit 1."""
import pytest

from tests.conftest import check, invoke, record, write_config

CONFIG = """\
name: {name}
seed: 0
data: {{source: builtin:digits}}
model: {{kind: "tests.bugs.zoo:{factory}"}}
train: {{lr: 1.0e-3, batch_size: 64, epochs: 5}}
"""


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    runs = root / "runs"
    cfg = write_config(root, CONFIG, name="zoo", factory="IgnoresInput")
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    return root, runs


def baseline_with(inspected, factory):
    root, runs = inspected
    cfg = write_config(root, CONFIG, name="zoo", factory=factory)
    r = invoke("baseline", cfg, "--runs", runs, "--force")   # model.* is not read by inspect: no force needed,
    return r, record(runs, "zoo", "baseline")                # but --force keeps the test independent of order


@pytest.mark.parametrize("factory, check_id, words", [
    ("IgnoresInput", "baseline.input-independent", "zeroed inputs"),
    ("SoftmaxOutput", "baseline.loss-input", "probabilities"),
    ("MixesBatch", "baseline.batch-independence", "mixes the batch"),
    ("FrozenLayer", "baseline.grad-flow", "frozen"),
    ("UnusedLayer", "baseline.grad-flow", "unused"),
    ("WrongBackward", "baseline.gradcheck", "act"),
    ("Unseeded", "baseline.seed", "differ"),
    ("Overconfident", "baseline.init-loss", "too high"),
    ("ShiftedOutput", "baseline.bias-init", "priors"),
])
def test_planted_bug_is_caught(inspected, factory, check_id, words):
    r, rec = baseline_with(inspected, factory)
    assert r.exit_code == 1, r
    c = check(rec, check_id)
    assert c["status"] == "fail", c
    assert words in c["title"], c["title"]
    assert c["advice"]
    assert check_id in r.stderr


def test_clean_model_passes_every_model_check(inspected):
    r, rec = baseline_with(inspected, "IgnoresInput".replace("IgnoresInput", "UnusedLayer"))
    # the same zoo file's healthy sibling: an MLP built by recipe itself
    root, runs = inspected
    cfg = write_config(root, CONFIG.replace('"tests.bugs.zoo:{factory}"', "mlp"), name="zoo", factory="")
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    assert r.exit_code == 0, r
    rec = record(runs, "zoo", "baseline")
    assert all(c["status"] != "fail" for c in rec["checks"])


def test_exploding_lr_stops_with_non_finite(inspected):
    root, runs = inspected
    cfg = write_config(root, CONFIG.replace('"tests.bugs.zoo:{factory}"', "mlp").replace("lr: 1.0e-3", "lr: 1.0e+6")
                       .replace("batch_size: 64", "batch_size: 64, optimizer: sgd"), name="zoo", factory="")
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    assert r.exit_code == 1, r
    rec = record(runs, "zoo", "baseline")
    c = check(rec, "health.non-finite")
    assert c["status"] == "fail" and "step" in c["evidence"]
