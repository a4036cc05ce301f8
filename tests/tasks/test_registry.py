"""The task registry and the built-in tasks' numbers (the values the stages used to compute inline)."""
import math

import pytest
import torch

from recipe import tasks
from recipe.errors import ModelError, RecipeError


def test_built_in_tasks_are_registered_and_unknown_names_are_a_clear_error():
    assert tasks.names() == ["classification", "regression"]
    assert tasks.get("classification").metric == "accuracy" and tasks.get("regression").metric == "r2"
    with pytest.raises(RecipeError, match="task: unknown task 'ordinal' .known: classification, regression"):
        tasks.get("ordinal")


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
