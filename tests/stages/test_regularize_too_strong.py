"""regularize.too-strong judges the chosen settings only; unchosen rungs that underfit are reported, not blamed."""
from __future__ import annotations

from recipe.stages.regularize import Variant, check_too_strong


def _v(name, train, val):
    return Variant(name, {}, train=[train, train], val=[val, val])


def test_an_unchosen_rung_that_underfits_does_not_fail():
    ref, augment = _v("reference", 1.0, 0.98), _v("augment", 0.95, 0.98)     # plain digits: augment underfit
    c = check_too_strong([ref, augment], ref, ref, ["augment"], dumb_error=0.019, n_val=270, chosen_rungs=())
    assert c.status == "pass"
    assert "augment (train error 0.050)" in c.title
    assert c.evidence["train_error_of_underfitting_rungs"] == {"augment": 0.05}


def test_chosen_settings_that_underfit_fail_and_name_the_regularizer():
    ref, wd = _v("reference", 0.6, 0.6), _v("weight_decay", 0.55, 0.58)
    chosen = _v("chosen (weight_decay)", 0.55, 0.58)
    c = check_too_strong([ref, wd, chosen], ref, chosen, ["weight_decay"], dumb_error=0.05, n_val=30,
                         chosen_rungs=("weight_decay",))
    assert c.status == "fail"
    assert "the chosen weight decay leaves train error 0.450" in c.title
    assert c.advice.startswith("Weaken weight decay")


def test_an_unchosen_rung_at_the_users_own_strength_warns():
    ref, wd = _v("reference", 1.0, 0.96), _v("weight_decay", 0.5, 0.96)
    c = check_too_strong([ref, wd], ref, ref, ["weight_decay"], dumb_error=0.04, n_val=30, chosen_rungs=(),
                         configured=("weight_decay",))
    assert c.status == "warn"
    assert c.title.startswith("not kept, too strong as configured: weight decay (weight_decay, train error 0.500)")
