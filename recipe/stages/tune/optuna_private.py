"""Every Optuna private name tune uses, in one place (tests/stages/test_optuna_private.py fails if one vanishes).

Optuna 5.0 has no public way to name a trial by its storage id (Trial and FrozenTrial keep it as `_trial_id`),
to reach a Study's storage (`_storage`; a live Trial has the public `trial.storage`, a FrozenTrial has none), to
write a system attribute on a trial (Trial.set_system_attr was removed in 3.x), to keep a heartbeat going for a
trial taken with ask() (study.optimize does it internally) or to list the trials whose heartbeat stopped without
failing them first (storages.fail_stale_trials fails them, then the `recipe:retry` note comes too late). If an
upgrade breaks one of these, that test names it: change only this module.
"""
from __future__ import annotations

from typing import Any


def trial_id(trial) -> int:
    """The storage's id of a trial (an optuna.Trial or a FrozenTrial)."""
    return trial._trial_id


def storage_of(study):
    """The storage a Study reads and writes (for RDB: Optuna's cached wrapper, which every write must go through)."""
    return study._storage


def set_system_attr(study, trial, key: str, value: Any) -> None:
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def heartbeat(study, trial):
    """A context manager that records the trial's heartbeat while it runs (a no-op without RDB heartbeats)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial_id(trial), storage_of(study))


def stale_trial_ids(study) -> list[int]:
    """Storage ids of RUNNING trials whose heartbeat stopped (empty where the storage keeps no heartbeats)."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = storage_of(study)
    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        return []
    return list(storage._get_stale_trial_ids(study._study_id))
