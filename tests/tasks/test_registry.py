"""The task registry and the built-in tasks' numbers (the values the stages used to compute inline)."""
import math

import numpy as np
import pytest
import torch

from recipe import tasks
from recipe.errors import ModelError, RecipeError


def test_built_in_tasks_are_registered_and_unknown_names_are_a_clear_error():
    assert tasks.names() == ["classification", "language-model", "regression", "text-classification"]
    assert tasks.get("classification").metric == "accuracy" and tasks.get("regression").metric == "r2"
    with pytest.raises(RecipeError, match="task: unknown task 'ordinal' .known: classification, language-model, "
                                          "regression, text-classification"):
        tasks.get("ordinal")


def test_built_in_tasks_are_their_modules_and_asking_what_they_are_imports_no_torch():
    """Loading data asks the task whether its targets are class ids; only computing a loss imports torch."""
    import subprocess
    import sys

    code = ("import sys; from recipe import tasks; names = tasks.names(); print(names, 'torch' in sys.modules); "
            "print([tasks.get(n).has_classes for n in names], 'torch' in sys.modules); "
            "print(tasks.get('regression').expected_init_loss({}), 'torch' in sys.modules); "
            "print(tasks.get('regression').output_bias(None).tolist(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.splitlines()
    names = "['classification', 'language-model', 'regression', 'text-classification']"
    assert out == [f"{names} False", "[True, False, False, True] False", "1.0 False", "[0.0] True"]


def test_registering_a_second_class_under_a_taken_name_is_refused():
    class Impostor(tasks.Task):
        name = "classification"

    with pytest.raises(ValueError, match="registered twice"):
        tasks.register(Impostor)
    assert type(tasks.get("classification")).__name__ == "Classification"


def test_classification_numbers():
    c = tasks.get("classification")
    out = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 0, 0])
    s = c.score(out, y, 3)
    assert s["accuracy"] == pytest.approx(0.75) and s["per_class"][:2] == [pytest.approx(2 / 3), 1.0]
    assert math.isnan(s["per_class"][2])
    assert c.row_score(out, y).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert float(c.row_loss(out, y).mean()) == pytest.approx(s["loss"], rel=1e-6)
    # an ensemble of one is the model itself, in log-probabilities
    assert torch.allclose(c.combine([out], [1.0]), c.as_output(out), atol=1e-6)
    assert c.expected_init_loss({"class_priors": [0.5, 0.5, 0.0]}) == pytest.approx(math.log(2))
    assert c.acceptable_init_losses({"class_priors": [0.5, 0.5]}, 3)[1] == pytest.approx(math.log(3))
    assert torch.allclose(c.output_bias([0.25, 0.75]), torch.log(torch.tensor([0.25, 0.75])))
    with pytest.raises(ModelError, match=r"expected \(4, 3\) logits for 3 classes"):
        c.shape_output(torch.zeros(4, 2), 4, 3)


def test_regression_numbers():
    r = tasks.get("regression")
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = torch.tensor([[1.0], [-1.0], [0.0], [0.0]])
    s = r.score(out, y)
    assert s["loss"] == pytest.approx(0.5) and s["r2"] == pytest.approx(0.5)
    assert r.shape_output(out, 4, 1).shape == (4,)
    assert r.row_score(out, y).tolist() == [0.0, 0.0, -1.0, -1.0]
    assert float(r.combine([out, out * 0], [0.5, 0.5])[0]) == pytest.approx(0.5)
    assert r.disagreement(out, out * 0) == pytest.approx(0.5)
    assert r.expected_init_loss({}) == 1.0
    with pytest.raises(ModelError, match=r"regression expects \(4,\) or \(4, 1\)"):
        r.shape_output(torch.zeros(4, 2), 4, 1)


def test_classification_answers_what_baseline_and_predict_ask():
    c = tasks.get("classification")
    out = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    assert c.unreduced_loss(out, y).tolist() == pytest.approx(c.row_loss(out, y).tolist(), rel=1e-6)
    # stacked members (K=2, B=3, C=2): the same per-row losses, member by member
    stacked = torch.stack([out, out * 0])
    assert c.flat_members(stacked).shape == (2, 3, 2)
    assert c.balanced_score(out, y, 2) == pytest.approx(0.75)            # recalls 1 and 1/2
    assert c.balanced_score(torch.tensor([[1.0, 0.0]] * 3), y, 2) == 0.5   # a constant prediction: 1/C
    assert c.probe_value(out, y).tolist() == pytest.approx([0.8808, 0.9526, 0.2689], abs=1e-4)
    status, title, ev, _ = c.loss_input(torch.softmax(out, 1), y)
    assert status == "fail" and "probabilities" in title and ev["mean_row_sum"] == pytest.approx(1.0)
    assert c.loss_input(torch.log_softmax(out, 1), y)[0] == "warn" and c.loss_input(out, y)[0] == "pass"
    m = c.init_prediction(torch.zeros(4, 2), torch.zeros(4, 2), [0.9, 0.1], 2, {"max_tv": 0.05})
    assert m["bad"] and not m["bad_built"] and m["gap"] == pytest.approx(0.4)     # uniform: fine as built only
    assert m["evidence"]["as_built"]["tv_from_uniform"] == 0.0 and m["evidence"]["max_tv"] == 0.05
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert c.labels(probs, ["cat", "dog"]) == ["dog", "cat"]
    assert c.csv_lines(probs, "row", ["0", "1"], ["cat", "d,og"], lambda v: f'"{v}"' if "," in str(v) else str(v)) == [
        'row,prediction,p_cat,"p_d,og"', '0,"d,og",0.2,0.8', "1,cat,0.6,0.4"]
    rows = c.baseline_rows(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), np.array([0, 1]))
    assert rows["net"].tolist() == [True, True] and rows["base"].tolist() == [True, False]
    assert (c.trivial, c.paired_test, c.memorize_loss_key, c.memorize_min_score) == ("majority", "mcnemar", "max_loss", 1.0)


def test_regression_answers_what_baseline_and_predict_ask():
    r = tasks.get("regression")
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = torch.tensor([[1.0], [-1.0], [0.0], [0.0]])
    assert r.flat_members(out.reshape(1, 4, 1)).shape == (1, 4)
    assert r.unreduced_loss(r.flat(out), y).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert r.balanced_score(out, y, 0) == pytest.approx(0.5)
    assert r.balanced_score(torch.zeros(4, 1), y, 0) == 0.0               # the mean: R² 0
    assert r.loss_input(torch.sigmoid(torch.randn(8, 1) * 0.1), y.repeat(2))[0] == "fail"
    assert r.loss_input(out, y)[0] == "pass"
    m = r.init_prediction(torch.full((4, 1), 0.3), torch.zeros(4, 1), None, 0, {"max_mean_offset": 0.25})
    assert m["bad"] and not m["bad_built"] and m["evidence"]["after_recipe_init"] == {"mean_output": 0.3}
    assert r.in_target_units(np.array([0.0, 1.0]), {"mean": 10.0, "std": 2.0}).tolist() == [10.0, 12.0]
    assert r.csv_lines(np.array([1.5, 2.25]), "file", ["a.png", "b.png"], None, str) == [
        "file,prediction", "a.png,1.5", "b.png,2.25"]
    rows = r.baseline_rows(np.array([[1.0], [0.0]]), np.array([0.0, 0.0]), np.array([1.0, 2.0]))
    assert rows["net"].tolist() == [0.0, 4.0] and rows["base"].tolist() == [1.0, 4.0]
    assert (r.trivial, r.paired_test, r.memorize_loss_key, r.memorize_min_score) == ("mean", "bootstrap",
                                                                                     "regression_max_loss", None)


def test_config_accepts_registered_tasks_only_and_the_schema_lists_them():
    from recipe.config import ConfigError, json_schema, validate

    raw = {"name": "x", "data": {"source": "builtin:iris"}}
    with pytest.raises(ConfigError, match=r"task: must be one of classification, language-model, regression, "
                                          r"text-classification \(got 'regresion'\); did you mean 'regression'\?"):
        validate({**raw, "task": "regresion"})

    @tasks.register
    class Toy(tasks.Task):
        name = "toy"

    try:
        assert validate({**raw, "task": "toy"}).task == "toy"
        assert json_schema()["properties"]["task"]["anyOf"][0]["enum"] == ["classification", "language-model", "regression",
                                                                          "text-classification", "toy"]
    finally:
        tasks.unregister("toy")
    with pytest.raises(ConfigError, match="task: must be one of classification, language-model, regression, "
                                          "text-classification .got .toy.."):
        validate({**raw, "task": "toy"})


def test_targets_as_the_network_sees_them():
    c, r = tasks.get("classification"), tasks.get("regression")
    ids = c.network_target(np.array([2, 0, 1]), {})
    assert ids.dtype == np.int64 and ids.tolist() == [2, 0, 1]
    z = r.network_target(np.array([3.0, 5.0], np.float32), {"mean": 3.0, "std": 0.5})
    assert z.dtype == np.float32 and z.tolist() == [0.0, 4.0]


def test_tasks_sit_below_the_engine_and_stages():
    from tests.test_layers import PKG, _offenders

    assert _offenders((PKG / "tasks").rglob("*.py"), ("recipe.stages", "recipe.runner", "recipe.cli", "recipe.engine",
                                                       "recipe.data", "recipe.models", "recipe.stage")) == []


def test_loading_data_follows_a_registered_task_s_kind_of_target_not_its_name():
    """A new real-valued task needs no edit in recipe/data: targets are real values because the task says so."""
    from recipe.data.targets import real_valued
    from recipe.tasks.regression import Regression

    class Quantile(Regression):
        name = "toy-quantile"

    tasks.register(Quantile)
    try:
        assert real_valued("toy-quantile") and real_valued("regression") and not real_valued("classification")
    finally:
        tasks.unregister("toy-quantile")
