"""Stale-trial recovery: which trials count toward --trials, and failing the trials a dead process left running.

A trial whose process died (kill -9: its pid is gone on this host, or its PostgreSQL heartbeat stopped) or was
interrupted is marked FAIL with `recipe:retry` and does not count: the next worker retries its slot.
"""
from __future__ import annotations

import os

from recipe.stages.tune import optuna_private as P

RETRY = "recipe:retry"      # on a FAIL trial: why it does not count toward --trials (killed, interrupted)


def counted(t) -> bool:
    """Trials that use the budget: all but those failed by a killed or interrupted process."""
    from optuna.trial import TrialState

    return not (t.state == TrialState.FAIL and t.system_attrs.get(RETRY))


def fail_stale(study) -> list[int]:
    """Mark RUNNING trials whose process is gone FAIL (+ recipe:retry): this host's dead pids, and trials whose
    RDB heartbeat stopped. Returns their numbers. Call under the study lock."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = P.storage_of(study)
    host = os.uname().nodename
    stale = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, where = t.system_attrs.get("recipe:pid"), t.system_attrs.get("recipe:host")
        if pid is not None and where == host and not _alive(int(pid)):
            stale[P.trial_id(t)] = (t.number, f"process {pid} on {host} died mid-trial")
    silent = P.stale_trial_ids(study)
    if silent:
        numbers = {P.trial_id(t): t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for tid in silent:
            stale.setdefault(tid, (numbers.get(tid, -1), "no heartbeat: its process or machine died"))
    out = []
    for tid, (number, why) in stale.items():
        try:
            storage.set_trial_system_attr(tid, RETRY, why)
            if storage.set_trial_state_values(tid, state=TrialState.FAIL):
                out.append(number)
        except UpdateFinishedTrialError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (killed child not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
