"""tune.batch: trials asked together are grouped by architecture, and each group trains as one stacked model.

Members of a group differ only in what the stack holds per member (learning rate, weight decay, dropout rate,
seed); a different width, batch size, optimizer or epoch budget makes another group (groups are not padded).
Each member is still its own Optuna trial: it reports every epoch to the pruner, which may stop it alone (the
stack shrinks), and it is told with the same value, state and user attrs as an unbatched trial, through the
same Objective.finish and _run_trial, so trials.csv and the tune.* checks cannot tell the difference.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

from recipe import interrupts

from recipe.engine.stacked import CPU_MEMBER_WORK, CPU_STACK_WORK, GPU_STACK_WORK, MAX_BATCH  # noqa: F401

STACKED = "recipe:stacked"  # system attr on a trial trained in a stack: the stack's size when it started


def batch_size(cfg, ds, chosen: dict, device, jobs: int = 1, trials: Optional[int] = None) -> int:
    """tune.batch, or (unset) a size from the chosen model's parameters x batch size and the device. Never more
    than each worker's share of the trials: a worker asking for more would leave the others nothing to do."""
    return batch_plan(cfg, ds, chosen, device, jobs, trials)[0]


def batch_plan(cfg, ds, chosen: dict, device, jobs: int = 1, trials: Optional[int] = None) -> tuple[int, str]:
    """(trials asked at once, why that many), for tune.json. Unset, a model the stacked engine cannot stack (a
    sequence model: embeddings, attention and recurrent layers are not vmap-safe) gets 1 and the engine's reason.
    Set above 1 for token inputs, whose models never stack, it is a ConfigError naming tune.batch: on tables an
    unstackable group falls back to one by one (documented), but a sequence model would never stack at all."""
    from recipe.engine.stacked import why_not_stacked
    from recipe.errors import ConfigError
    from recipe.models import count_parameters, create

    k = cfg.tune.batch
    vcfg = cfg.with_overrides(chosen)
    model = create(vcfg, ds, 0)
    unstackable = why_not_stacked([model], vcfg, device)
    if k is not None and k > 1 and unstackable and ds.inputs == "tokens":
        raise ConfigError(f"tune.batch: {k} asks for {k} trials trained as one stacked model, but the stacked "
                          f"engine cannot stack model.kind {vcfg.model.kind} ({unstackable}); set tune.batch: 1 or "
                          "leave it unset (then trials train one by one)")
    if k is not None:
        why = "tune.batch"
    elif unstackable:
        k, why = 1, f"the stacked engine cannot stack this model: {unstackable}"
    else:
        work = count_parameters(model) * vcfg.train.batch_size
        if device.type == "cuda":
            k = int(min(MAX_BATCH["cuda"], GPU_STACK_WORK // work))
        else:
            k = 1 if work > CPU_MEMBER_WORK else int(min(MAX_BATCH["cpu"], CPU_STACK_WORK // work))
        why = f"from the stacked work per step on {device.type} (parameters x batch size = {work})"
    if trials is not None and k > math.ceil(trials / max(jobs, 1)):
        k, why = math.ceil(trials / max(jobs, 1)), why + f"; capped at each worker's share of {trials} trials"
    return max(1, k), why


def run_batch(study, trials: list, objective, tick=None) -> None:
    """Train `trials` (asked by this worker) stacked by architecture; tell each as it finishes."""
    from recipe.engine.stacked import fit_stacked_from_configs, stack_key, why_not_stacked
    from recipe.stages.tune import optuna_private as P
    from recipe.stages.tune.worker import _run_trial

    told: set[int] = set()
    with contextlib.ExitStack() as beats:
        for t in trials:
            beats.enter_context(P.heartbeat(study, t))
        try:
            prepared = [(t, *objective.prepare(t)) for t in trials]      # (trial, overrides, vcfg, model)
            groups: dict[str, list] = {}
            for entry in prepared:
                groups.setdefault(stack_key(entry[2]), []).append(entry)
            for group in groups.values():
                models = [model for _, _, _, model in group]
                reason = why_not_stacked(models, group[0][2], objective.device) if len(group) > 1 else "one trial"
                if reason is not None:
                    for trial, *_ in group:
                        _run_trial(study, trial, objective)      # prepare's suggestions are kept by the trial
                        told.add(trial.number)
                    continue
                by_model = {id(model): (trial, overrides) for trial, overrides, _, model in group}
                for trial, *_ in group:    # not a user attr: trials.csv stays as unbatched
                    P.set_system_attr(study, trial, STACKED, len(group))

                def finished(member, by_model=by_model) -> None:
                    trial, overrides = by_model[id(member.model)]
                    # held: a Ctrl-C inside a journal write leaves its lock file half released
                    with interrupts.deferred():
                        _run_trial(study, trial, lambda t: objective.finish(t, member.result, member.model,
                                                                            overrides))
                        told.add(trial.number)
                    if tick is not None:
                        tick(study)

                fit_stacked_from_configs(models, [vcfg for _, _, vcfg, _ in group], objective.ds, objective.tr,
                                         objective.va, on_finish=finished,
                                         on_epoch=[_held(objective.reporter(t, c)) for t, _, c, _ in group],
                                         metrics_paths=[objective.curve(t) for t, *_ in group])
        except BaseException as e:      # the trials not told yet end as _run_trial ends a trial that raised
            _fail_untold(study, [t for t in trials if t.number not in told], e)
            raise


def _held(report):
    """The pruner's per-epoch report with interrupts held: K members write the journal K times an epoch."""
    def held(epoch: int, row: dict) -> None:
        with interrupts.deferred():
            report(epoch, row)
    return held


def _fail_untold(study, trials: list, error: BaseException) -> None:
    from recipe.stages.tune.worker import _run_trial

    def reraise(_trial):
        raise error

    for t in trials:
        try:
            _run_trial(study, t, reraise)
        except BaseException:   # noqa: BLE001  -- recorded on the trial; the caller raises the error once
            pass
