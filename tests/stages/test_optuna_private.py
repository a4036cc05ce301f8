"""tune's Optuna private names live in recipe/stages/tune/optuna_private.py only, and they still work on the
installed Optuna: after an upgrade these tests say which one broke and where to change it."""
from __future__ import annotations

import ast
import time
from pathlib import Path

import optuna
import pytest

from recipe.stages.tune import optuna_private as P

PKG = Path(__file__).resolve().parents[2] / "recipe"
WRAPPER = PKG / "stages" / "tune" / "optuna_private.py"
# attributes tune reads on Optuna objects that Optuna does not publish
PRIVATE_ATTRS = {"_storage", "_trial_id", "_study_id", "_get_stale_trial_ids", "_rng", "_random_sampler",
                 "_cached_frozen_trial"}


def _fix(what: str) -> str:
    return (f"Optuna {optuna.__version__}: {what}. Fix recipe/stages/tune/optuna_private.py (the one module that "
            f"uses Optuna private names), or replace it with the public API this version offers.")


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def test_trial_id_names_the_storage_row_of_a_live_and_a_frozen_trial(study):
    trial = study.ask()
    try:
        tid = P.trial_id(trial)
        frozen_tid = P.trial_id(study.get_trials(deepcopy=False)[0])
    except AttributeError as e:
        pytest.fail(_fix(f"Trial/FrozenTrial._trial_id is gone ({e})"))
    assert isinstance(tid, int) and tid == frozen_tid, _fix("Trial._trial_id and FrozenTrial._trial_id differ")


def test_system_attrs_written_through_the_study_storage_are_read_back(study):
    trial = study.ask()
    try:
        P.set_system_attr(study, trial, "recipe:probe", 7)
        storage = P.storage_of(study)
    except AttributeError as e:
        pytest.fail(_fix(f"Study._storage is gone ({e})"))
    assert storage is trial.storage, _fix("Study._storage is not the storage its trials write to")
    assert storage.get_trial(P.trial_id(trial)).system_attrs["recipe:probe"] == 7
    assert study.get_trials()[0].system_attrs["recipe:probe"] == 7


def test_heartbeats_and_stale_trial_ids_on_rdb_storage(tmp_path):
    """A trial whose heartbeat stopped is listed (not failed: recovery notes why first); a journal has none."""
    try:
        from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled  # noqa: F401
    except ImportError as e:
        pytest.fail(_fix(f"optuna.storages._heartbeat no longer has what heartbeat()/stale_trial_ids() use ({e})"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, direction="maximize")
    beating, silent = study.ask(), study.ask()
    with P.heartbeat(study, silent):
        time.sleep(0.2)         # records one heartbeat, then stops with the block
    with P.heartbeat(study, beating):
        time.sleep(2.5)         # `silent` is now past its grace period; `beating` is alive
        stale = P.stale_trial_ids(study)
    assert stale == [P.trial_id(silent)], _fix(f"stale_trial_ids found {stale}, not trial {silent.number} alone")
    assert study.get_trials()[silent.number].state == optuna.trial.TrialState.RUNNING   # listed, not failed
    journal = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))), direction="maximize")
    journal.ask()
    assert P.stale_trial_ids(journal) == []


def test_asha_rung_key_is_the_name_optunas_halving_pruner_records():
    """Resumed studies recorded by Optuna's halving pruner (and earlier recipe) keep their rung values."""
    from recipe.stages.tune.asha import rung_key

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    trial = study.ask()
    trial.report(0.5, 1)
    trial.should_prune()
    assert study.get_trials()[0].system_attrs.get(rung_key(0)) == 0.5, study.get_trials()[0].system_attrs


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = [f"{path.name}:{n.lineno} .{n.attr}" for n in ast.walk(tree)
           if isinstance(n, ast.Attribute) and n.attr in PRIVATE_ATTRS]
    out += [f"{path.name}:{n.lineno} from {n.module}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and n.module and n.module.startswith("optuna") and any(p.startswith("_") for p in n.module.split("."))]
    return out


def test_no_module_but_the_wrapper_uses_optuna_private_names():
    found = [u for f in PKG.rglob("*.py") if f != WRAPPER for u in _private_uses(f)]
    assert found == [], f"Optuna private names outside recipe/stages/tune/optuna_private.py: {found}"


def test_the_private_name_detector_sees_a_planted_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from optuna.storages._heartbeat import get_heartbeat_thread\n"
                   "def f(study, t):\n    return study._storage, t._trial_id\n")
    assert _private_uses(bad) == ["bad.py:3 ._storage", "bad.py:3 ._trial_id",
                                  "bad.py:1 from optuna.storages._heartbeat"]
