"""The Optuna private names tune relies on, in one place (tests/stages/test_tune.py fails loudly if one vanishes).

Optuna has no public way to write a system attribute on a running trial (Trial.set_system_attr was removed), to
name a trial by its storage id, or to read SuccessiveHalvingPruner's per-rung records; tune needs all three.
"""
from __future__ import annotations

from typing import Any

from optuna.pruners._successive_halving import _completed_rung_key


def rung_key(rung: int) -> str:
    """The system attribute where SuccessiveHalvingPruner records a trial's value at `rung` (0 = the first)."""
    return _completed_rung_key(rung)


def storage_of(study):
    return study._storage


def trial_id(trial) -> int:
    """The storage's id of a trial (an optuna.Trial or a FrozenTrial)."""
    return trial._trial_id


def set_system_attr(study, trial, key: str, value: Any) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, key, value)
