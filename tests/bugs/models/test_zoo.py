"""Each planted model bug is caught by its baseline check, named, with advice; exit 1."""
import pytest

from tests.bugs.models.zoo import ZOO, ZOO_ERRORS
from tests.conftest import check, invoke, record, write_config

CONFIG = """\
name: {name}
seed: 0
data: {{source: builtin:digits}}
model: {{kind: "tests.bugs.models.zoo:{factory}"}}
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


@pytest.mark.parametrize("factory", list(ZOO))
def test_planted_bug_is_caught(inspected, factory):
    ids, words = ZOO[factory]
    r, rec = baseline_with(inspected, factory)
    assert r.exit_code == 1, r
    failed = [c for c in rec["checks"] if c["id"] in ids and c["status"] == "fail"]
    assert failed, [(c["id"], c["status"], c["title"]) for c in rec["checks"]]
    assert words in failed[0]["title"], failed[0]["title"]
    assert failed[0]["advice"]
    assert failed[0]["id"] in r.stderr


@pytest.mark.parametrize("factory", list(ZOO_ERRORS))
def test_wrong_output_shape_is_exit_2(inspected, factory):
    root, runs = inspected
    cfg = write_config(root, CONFIG, name="zoo", factory=factory)
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    assert r.exit_code == 2, r
    assert "model output has shape" in r.stderr and ZOO_ERRORS[factory] in r.stderr
    assert "Traceback" not in r.stderr
    assert record(runs, "zoo", "baseline")["status"] == "failed"


def test_labels_one_to_c_are_remapped(tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", x=x, y=y + 1)                 # labels 1..10
    cfg = write_config(tmp_path, CONFIG.replace("builtin:digits", "d.npz").replace('"tests.bugs.models.zoo:{factory}"',
                                                                                  "mlp"), name="one", factory="")
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 0
    assert invoke("baseline", cfg, "--runs", runs).exit_code == 0
    import json

    report = json.loads((runs / "one" / "inspect" / "data_report.json").read_text())
    assert report["classes"] == list(range(1, 11))             # class id i means label i + 1, recorded


def test_clean_model_passes_every_model_check(inspected):
    root, runs = inspected
    cfg = write_config(root, CONFIG.replace('"tests.bugs.models.zoo:{factory}"', "mlp"), name="zoo", factory="")
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    assert r.exit_code == 0, r
    rec = record(runs, "zoo", "baseline")
    assert all(c["status"] != "fail" for c in rec["checks"])


def test_lr_10_blows_up(inspected):
    root, runs = inspected
    cfg = write_config(root, CONFIG.replace('"tests.bugs.models.zoo:{factory}"', "mlp").replace("lr: 1.0e-3", "lr: 10.0"),
                       name="zoo", factory="")
    r = invoke("baseline", cfg, "--runs", runs, "--force")
    assert r.exit_code == 1, r
    rec = record(runs, "zoo", "baseline")
    failed = {c["id"] for c in rec["checks"] if c["status"] == "fail"}
    assert failed & {"health.non-finite", "health.exploding"}, failed


def test_broken_user_init_is_reported_with_the_numbers(inspected):
    """An output bias of 1000 on class 0: recipe's bias init repairs recipe's runs, the checks still say so."""
    r, rec = baseline_with(inspected, "HugeOutputBias")
    init = check(rec, "baseline.init-loss")
    assert init["status"] == "warn", init
    assert 800 < init["evidence"]["initial_loss_as_built"] < 1000
    assert abs(init["evidence"]["initial_loss"] - init["evidence"]["expected"]) < 0.3
    assert "as built" in init["title"] and f"{init['evidence']['initial_loss_as_built']:.4g}" in init["title"]
    bias = check(rec, "baseline.bias-init")
    assert bias["status"] == "warn" and bias["evidence"]["as_built"]["tv_distance"] > 0.8, bias
    assert bias["evidence"]["after_recipe_init"]["tv_distance"] < 0.1


def test_gradcheck_names_modules_it_could_not_verify(inspected):
    r, rec = baseline_with(inspected, "Uncheckable")
    g = check(rec, "baseline.gradcheck")
    assert g["status"] == "warn" and g["evidence"]["verified"] == 0, g
    why = g["evidence"]["not_verified"]
    assert "float64" in why["fixed"] and why["lookup"] == "saw no float input" and "float64" in why["Uncheckable"]
    assert "none of the 3 custom module(s)" in g["title"]
