"""Stage 5: methods, pruning, worker processes, resume, kill -9, Ctrl-C, PostgreSQL, the tune.* checks, batched seeds.

The tune stage is exercised on its own: the fixture writes regularize's chosen.json (the one artifact tune
reads) and runs `recipe tune --force`, so these tests neither wait for nor depend on stages 1-4 (the
pipeline test covers the real chain). Digits with a tiny MLP keeps a trial well under a second.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import check, invoke, record, write_config

ROOT = Path(__file__).resolve().parents[2]
RECIPE = [sys.executable, "-m", "recipe"]

TUNE = """\
name: {name}
seed: 0
data: {{source: builtin:digits}}
model: {{kind: mlp, hidden: [16]}}
train: {{lr: 3.0e-3, batch_size: 64, epochs: {epochs}}}
tune:
  trials: 3
  space: {space}
ensemble: {{top_k: 2}}
"""
SMALL_SPACE = "{train.lr: {low: 1.0e-3, high: 3.0e-2, log: true}, train.batch_size: {choices: [32, 64]}}"


def make(tmp: Path, space: str = SMALL_SPACE, epochs: int = 3, name: str = "tn", val_mean: float = 0.5,
         val_std: float = 0.01) -> tuple[Path, Path]:
    """A config plus the regularize artifact tune builds on; returns (config, runs)."""
    cfg = write_config(tmp, TUNE, name=name, space=space, epochs=epochs)
    runs = tmp / "runs"
    chosen = runs / name / "regularize" / "chosen.json"
    chosen.parent.mkdir(parents=True)
    chosen.write_text(json.dumps({"overrides": {"model.dropout": 0.0}, "val_mean": val_mean, "val_std": val_std,
                                  "reference_val_std": val_std}))
    return cfg, runs


def tune(cfg: Path, runs: Path, *args: str):
    return invoke("tune", cfg, "--runs", runs, "--force", "-q", *args)


def trials_csv(runs: Path, name: str = "tn") -> list[dict]:
    with open(runs / name / "tune" / "trials.csv") as f:
        return list(csv.DictReader(f))


def tune_json(runs: Path, name: str = "tn") -> dict:
    return json.loads((runs / name / "tune" / "tune.json").read_text())


def load_study(runs: Path, name: str = "tn"):
    import optuna

    from recipe.stages.tune import open_storage

    storage = open_storage(str(runs / name / "tune" / "study" / "journal.log"))
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("flag", ["--random-search", "--quasi-random", "--tpe"])
def test_method_runs_exact_trials_and_writes_artifacts(tmp_path, flag):
    cfg, runs = make(tmp_path)
    r = tune(cfg, runs, flag, "--trials", "3")
    assert r.exit_code in (0, 1), r
    rows = trials_csv(runs)
    assert [int(x["number"]) for x in rows] == [0, 1, 2]
    assert {x["state"] for x in rows} == {"COMPLETE"}
    assert all(int(x["epochs"]) == 3 and float(x["seconds"]) > 0 and x["worker"] == "0" for x in rows)
    assert len({(x["train.lr"], x["train.batch_size"]) for x in rows}) == 3       # three different points
    t = tune_json(runs)
    assert t["method"] == flag[2:].replace("-search", "")
    assert [e["rank"] for e in t["top"]] == [0, 1] and t["top"][0]["val"] >= t["top"][1]["val"]
    assert t["top"][0]["checkpoint"] == "top/0.pt" and (runs / "tn" / "tune" / "top" / "0.pt").exists()
    assert max(float(x["val"]) for x in rows) == pytest.approx(t["top"][0]["val"], rel=1e-5)
    d = runs / "tn" / "tune"
    # top_k 2: a trial's checkpoint is written only when it could still rank in the top 2 as it ended; the top 2
    # always have theirs, a trial without one ranks below two others
    written = {int(p.stem.rsplit("-", 1)[1]) for p in (d / "study" / "checkpoints").glob("*.pt")}
    rank = {int(x["number"]): (-float(x["val"]), int(x["number"])) for x in rows}
    assert {e["trial"] for e in t["top"]} <= written and [e["checkpoint"] for e in t["top"]] == ["top/0.pt", "top/1.pt"]
    assert all(sum(rank[o] < rank[n] for o in rank) >= 2 for n in set(rank) - written)
    for rel in ("best.yaml", "history.png", "params/train.lr.png", "params/train.batch_size.png", "importances.json"):
        assert (d / rel).exists(), rel
    imp = json.loads((d / "importances.json").read_text())
    assert set(imp["importances"]) <= {"train.lr", "train.batch_size"} and (imp["importances"] or imp["error"])
    rec = record(runs, "tn", "tune")
    assert rec["status"] in ("forced", "failed")
    assert {c["id"] for c in rec["checks"]} == {"tune.boundary", "tune.noise", "tune.improves"}
    assert "infeasible_fraction" in check(rec, "tune.improves")["evidence"]


def test_grid_stops_when_exhausted(tmp_path):
    cfg, runs = make(tmp_path)
    r = tune(cfg, runs, "--grid-search", "--trials", "50")
    assert r.exit_code in (0, 1), r
    rows = trials_csv(runs)
    points = [(float(x["train.lr"]), int(x["train.batch_size"])) for x in rows]
    assert len(rows) == 6                                    # 3 lr points x 2 batch sizes, not 50
    expected = sorted((lr, bs) for lr in (1e-3, (1e-3 * 3e-2) ** 0.5, 3e-2) for bs in (32, 64))
    assert [bs for _, bs in sorted(points)] == [bs for _, bs in expected]
    assert [lr for lr, _ in sorted(points)] == pytest.approx([lr for lr, _ in expected], rel=1e-9)
    assert abs(min(p[0] for p in points) - 1e-3) < 1e-12 and abs(max(p[0] for p in points) - 3e-2) < 1e-12


def test_jobs_2_grid_shares_one_study_without_repeats(tmp_path):
    cfg, runs = make(tmp_path)
    r = tune(cfg, runs, "--grid-search", "--jobs", "2", "--trials", "50")
    assert r.exit_code in (0, 1), r
    rows = trials_csv(runs)
    assert len(rows) == 6 and len({(x["train.lr"], x["train.batch_size"]) for x in rows}) == 6
    assert sorted(int(x["number"]) for x in rows) == list(range(6))
    assert {x["worker"] for x in rows} <= {"0", "1"} and {x["state"] for x in rows} == {"COMPLETE"}
    by_worker = {}
    for t in load_study(runs).get_trials():
        by_worker.setdefault(t.system_attrs["recipe:worker"], set()).add(t.system_attrs["recipe:pid"])
    assert by_worker[0] == {os.getpid()}                     # worker 0 is this process: torch and data already up
    assert os.getpid() not in by_worker.get(1, set())        # worker 1 is another process, not a thread
    assert "crashed" not in record(runs, "tn", "tune")["summary"]   # a worker stopped while starting is no crash


@pytest.mark.slow
def test_jobs_2_both_processes_take_trials(tmp_path):
    # trials of about a second: the spawned worker is up (torch imported) long before this process runs out
    cfg, runs = make(tmp_path, epochs=60)
    r = tune(cfg, runs, "--jobs", "2", "--trials", "8")
    assert r.exit_code in (0, 1), r
    rows = trials_csv(runs)
    assert len(rows) == 8 and {x["state"] for x in rows} == {"COMPLETE"}
    assert sorted(int(x["number"]) for x in rows) == list(range(8))
    assert {x["worker"] for x in rows} == {"0", "1"}, rows
    pids = {t.system_attrs["recipe:pid"] for t in load_study(runs).get_trials()}
    assert len(pids) == 2 and os.getpid() in pids


def test_jobs_2_spawned_worker_takes_its_share_and_imports_torch_passive(tmp_path, monkeypatch):
    """--jobs 2: the spawned worker is one of 2 processes sharing the cores (on 2 cores: one torch thread even
    for large work, small work one anyway), and OMP_WAIT_POLICY=PASSIVE is in its environment before it imports
    torch."""
    import optuna

    from recipe import threads
    from recipe.config import validate
    from recipe.data import load
    from recipe.stages import tune as T
    from recipe.stages.tune import jobs as W

    cfg = validate({"name": "w", "seed": 0, "data": {"source": "builtin:digits"}, "model": {"kind": "mlp",
                    "hidden": [8]}, "train": {"epochs": 1}})
    cfg._base_dir = tmp_path
    storage = str(tmp_path / "j.log")
    optuna.create_study(study_name="w", storage=T.open_storage(storage), direction="maximize")
    # a budget of 0 trials: the worker starts, reports its set-up through its gate, finds the study done, exits
    plan = T.Plan(storage=storage, study_name="w", method="random", trials=0, pruner="none", seed=0, chosen={},
                  space={"train.lr": {"low": 1e-3, "high": 1e-2}}, checkpoints=str(tmp_path), lock=str(tmp_path / "l"))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)     # run_jobs sets it for the workers, not the user
    for name in ("RECIPE_THREADS", "OMP_NUM_THREADS"):       # the share, not a user's own count
        monkeypatch.delenv(name, raising=False)
    procs, gates = W.start_workers(cfg, load(cfg), plan, [1], jobs=2, device_name="cpu")
    procs[0].join(120)
    assert procs[0].exitcode == 0
    share = max(1, threads.usable_cores() // 2)
    assert list(gates[0]) == [W.JOINED, share, 1]   # joined; cores/2 threads for large work; PASSIVE before torch
    if threads.usable_cores() == 2:
        assert share == 1


def test_journal_appends_without_fsync_and_plain_optuna_reads_it(tmp_path, monkeypatch):
    """tune's journal skips Optuna's fsync per record (12 records a trial) but keeps its format and lock."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from recipe.stages.tune import open_storage

    def no_fsync(fd):
        raise AssertionError("fsync called")

    path = str(tmp_path / "journal.log")
    monkeypatch.setattr(os, "fsync", no_fsync)
    study = optuna.create_study(study_name="s", storage=open_storage(path), direction="maximize")
    for value in (0.25, 0.75):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("epochs", 3)
        study.tell(trial, value)
    assert not os.path.exists(path + ".lock")          # the lock is released after each append
    monkeypatch.undo()
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    assert [t.value for t in plain.trials] == [0.25, 0.75] and plain.trials[1].user_attrs == {"epochs": 3}


# ----------------------------------------------------------------------------- pruning and resume


@pytest.mark.parametrize("batch", [1, 8])
def test_asha_prunes_and_spends_fewer_epochs(tmp_path, batch):
    space = "{train.lr: {low: 1.0e-5, high: 3.0e-2, log: true}}"
    cfg, runs = make(tmp_path, space=space, epochs=8)
    r = tune(cfg, runs, "--pruner", "asha", "--trials", "8", "-o", f"tune.batch={batch}")
    assert r.exit_code in (0, 1), r
    rows = trials_csv(runs)
    assert len(rows) == 8
    pruned = [x for x in rows if x["state"] == "PRUNED"]
    assert pruned, rows
    assert {int(x["epochs"]) for x in pruned} <= {1, 3}       # 8 epochs: rungs at 1 and 3
    assert [(x["state"], x["epochs"]) for x in rows[:3]] == [("PRUNED", "1")] * 3   # rung-0 references
    assert any(x["state"] == "COMPLETE" for x in rows)
    assert sum(int(x["epochs"]) for x in rows) < 8 * 8
    assert tune_json(runs)["states"]["pruned"] == len(pruned)
    # batch 8: all eight trials were members of one stack, pruned members left it at rung 3
    assert [t.system_attrs.get("recipe:stacked") for t in load_study(runs).get_trials()] == \
        [None] * 8 if batch == 1 else [8] * 8


def test_asha_rungs_fit_the_epoch_budget():
    from recipe.stages.tune.asha import rungs

    assert rungs(18) == [1, 3, 9]         # then 18: every promotion at least doubles the epochs
    assert rungs(30) == [1, 3, 9]         # not 27 of 30
    assert rungs(54) == [1, 3, 9, 27]
    assert rungs(8) == [1, 3]
    assert rungs(3) == [1] and rungs(2) == [1] and rungs(1) == []


def _asha_study(budget: int, curves: list[list[float]]):
    """Run trials one after another on an in-memory study; each reports its curve until pruned."""
    import optuna

    from recipe.stages.tune.asha import ASHAPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = len(curves[0])
    study = optuna.create_study(direction="maximize", pruner=ASHAPruner(epochs, budget))
    for curve in curves:
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < epochs and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
    return [(t.state.name, t.last_step) for t in study.get_trials()]


def test_asha_first_trials_are_references_then_top_third_climbs():
    flat = lambda v: [v] * 18   # noqa: E731  (rungs at 1, 3 and 9)
    states = _asha_study(10, [flat(v) for v in (0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.9, 0.75, 0.85, 0.05)])
    assert states[:3] == [("PRUNED", 1)] * 3                 # references: stopped at rung 0, never promoted blindly
    assert states[3] == ("COMPLETE", 18)                     # best of 4 at rung 0, first at rungs 1 and 2
    assert states[4:6] == [("PRUNED", 1)] * 2                # not in the top third at rung 0
    assert states[6] == ("COMPLETE", 18)                     # 0.9: top 2 of 7 at rung 0, best of 2 at rungs 1, 2
    assert states[7] == ("PRUNED", 1)                        # 0.75: below the top 2 of 8 (0.9, 0.8)
    assert states[8] == ("PRUNED", 3)                        # 0.85: top 3 of 9 at rung 0, not best of 3 at rung 1
    assert states[9] == ("PRUNED", 1)


def test_asha_never_leaves_the_study_without_a_complete_trial():
    flat = lambda v: [v] * 18   # noqa: E731
    # two of the three references are the best: by the rule every later trial is pruned, but the last one of the budget
    # would then leave no trial that completed, so it runs to the end
    states = _asha_study(5, [flat(0.9), flat(0.8), flat(0.1), flat(0.2), flat(0.3)])
    assert states == [("PRUNED", 1)] * 4 + [("COMPLETE", 18)]


def test_asha_replay_spends_a_fifth_of_the_epochs_and_keeps_the_best():
    """48 learning curves (quality q in a seeded order, val = q * (1 - 0.5^epoch) + a small wobble): the shape of
    a digits study. Trials stop only at rungs 1, 3, 9; at most a third (plus the first arrivals) climbs rungs 1 and
    3, at most half (9 -> 18 epochs) the last one; the whole study spends at most 0.18 of the unpruned epochs and
    the best trial completes. (0.17; 0.12 when the last rung kept a third too: on curves whose ranks never cross
    the half costs epochs for nothing, on recorded ones it keeps the best, test_asha_on_recorded_curves.)"""
    import random

    rng = random.Random(7)
    qualities = [0.5 + 0.5 * i / 47 for i in range(48)]
    rng.shuffle(qualities)
    curves = [[q * (1 - 0.5 ** e) + 0.004 * ((e * 7 + int(q * 1000)) % 3 - 1) for e in range(1, 19)]
              for q in qualities]
    states = _asha_study(48, curves)
    epochs = sum(step for _, step in states)
    assert {step for state, step in states if state == "PRUNED"} <= {1, 3, 9}
    reached = {r: sum(step >= r for _, step in states) for r in (1, 3, 9, 18)}
    assert reached[1] == 48
    assert reached[3] <= 48 // 3 + 2 and reached[9] <= reached[3] // 3 + 2 and reached[18] <= -(-reached[9] // 2) + 2
    assert epochs / (48 * 18) <= 0.18, (epochs, states)      # 0.17; the former rungs [2, 6] spent 0.20
    best = qualities.index(max(qualities))
    assert states[best] == ("COMPLETE", 18)


def _replay_recorded(name: str, **pruner) -> tuple[float, list[int]]:
    """Replay ASHA on tests/data/asha_curves.json (recipe's unpruned study, 48 trials x 18 epochs, seeds 0 1 2):
    (fraction of the unpruned epochs spent, best-val gap per seed in val samples)."""
    import json

    import optuna

    from recipe.stages.tune.asha import ASHAPruner, rung_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    recorded = json.loads((Path(__file__).parents[1] / "data" / "asha_curves.json").read_text())[name]
    spent, gaps = 0, []
    for entry in recorded.values():
        curves, n_val = entry["curves"], entry["n_val"]
        study = optuna.create_study(direction="maximize", pruner=ASHAPruner(18, 48, **pruner))
        for curve in curves:
            trial = study.ask()
            for epoch, (right, loss) in enumerate(curve, 1):
                spent += 1
                trial.report(rung_value(right / n_val, loss), epoch)
                if epoch < 18 and trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                study.tell(trial, curve[-1][0] / n_val)
        gaps.append(max(c[-1][0] for c in curves) - round(study.best_value * n_val))
    return spent / (len(recorded) * 48 * 18), gaps


@pytest.mark.parametrize("name,fraction", [("digits", 0.192), ("breast_cancer", 0.186), ("wine", 0.183)])
def test_asha_on_recorded_curves(name, fraction):
    """Issue 15.3's goal on recorded studies: <= 0.20 of the unpruned epochs, the best val within one val sample
    of the unpruned best on every seed. Optuna's halving as tune used it before (references 3, a third kept at
    every rung, ties all climbing) spent 0.212 / 0.262 / 0.299 at the same gaps."""
    spent, gaps = _replay_recorded(name)
    assert spent == pytest.approx(fraction, abs=0.0015) and spent <= 0.20
    assert max(gaps) <= 1, gaps


def test_asha_ranks_ties_by_val_loss_and_keeps_half_at_the_last_rung():
    from recipe.stages.tune.asha import ASHAPruner, references, rung_value

    assert rung_value(0.9, 0.2) > rung_value(0.9, 0.3) > rung_value(0.9 - 1e-6, 0.0)   # below one sample in 1e6
    assert rung_value(0.9, float("nan")) == 0.9
    assert references(48) == 6 and references(24) == 3 and references(8) == 3
    assert ASHAPruner(18, 48).keep == [1 / 3, 1 / 3, 1 / 2]     # 1 -> 3 -> 9 -> 18 epochs
    assert ASHAPruner(30, 48).keep == [1 / 3, 1 / 3, 9 / 30]
    # trials tied at 0.9 at every rung rank by loss: 0.4 leads; 0.6 is last of 5; 0.45 is 2nd of 6 at rung 0 (the
    # top 2 climb), then 2nd of 2 at rung 1 (the best climbs). Tied values all climbed Optuna's halving.
    flat = lambda v, loss: [rung_value(v, loss)] * 18   # noqa: E731
    states = _asha_study(10, [flat(0.9, 0.5)] * 3 + [flat(0.9, 0.4), flat(0.9, 0.6), flat(0.9, 0.45)])
    assert states == [("PRUNED", 1)] * 3 + [("COMPLETE", 18), ("PRUNED", 1), ("PRUNED", 3)]


def test_only_trials_that_can_reach_the_top_k_write_a_checkpoint():
    import optuna

    from recipe.stages.tune import can_reach_top

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for v in (0.9, 0.8, 0.7):
        study.add_trial(optuna.trial.create_trial(value=v))
    assert can_reach_top(study, 3, 0.75, 3)          # third so far (0.9, 0.8, 0.75)
    assert not can_reach_top(study, 3, 0.75, 2)      # two complete trials already above it
    assert not can_reach_top(study, 3, 0.8, 2)       # a tie ranks the earlier trial first, as summarize does
    assert can_reach_top(study, 3, 0.85, 2)
    assert can_reach_top(study, 0, 0.9, 1)           # itself does not count


def test_eval_batch_size_probes_a_model_once_per_input_shape():
    import torch
    from torch import nn

    from recipe.engine import hardware as H

    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    x = torch.zeros(1000, 8)
    first = H.eval_batch_size(model, x)
    assert H.eval_batch_size(model, x) == first == 1000 and len(calls) == 1
    assert H.eval_batch_size(model, torch.zeros(500, 8)) == 500 and len(calls) == 1     # same row shape
    H.eval_batch_size(model, x, precision="bf16")                                      # another precision
    assert len(calls) == 2


def test_asha_past_the_last_rung_never_prunes():
    from recipe.stages.tune.asha import ASHAPruner

    # 30 epochs: Optuna's halving would compare at 27 too; ours stops at 9 (27 -> 30 would save 3 epochs)
    assert ASHAPruner(30, 10).rungs == [1, 3, 9]
    flat = lambda v: [v] * 30   # noqa: E731
    # the last trial leads every rung, then drops at epoch 27: Optuna would prune it there (below the other
    # complete trial's 0.9 at 27); past our last rung it completes
    states = _asha_study(5, [flat(0.5), flat(0.6), flat(0.7), flat(0.9), [0.95] * 26 + [0.5] * 4])
    assert states[3:] == [("COMPLETE", 30), ("COMPLETE", 30)]


def test_rerun_continues_to_total(tmp_path):
    cfg, runs = make(tmp_path)
    assert tune(cfg, runs, "--trials", "2").exit_code in (0, 1)
    first = trials_csv(runs)
    assert tune(cfg, runs, "--trials", "4").exit_code in (0, 1)
    second = trials_csv(runs)
    assert [int(x["number"]) for x in second] == [0, 1, 2, 3]
    assert second[:2] == first                                  # the finished trials were kept, not rerun
    assert (second[2]["train.lr"], second[3]["train.lr"]) != (first[0]["train.lr"], first[1]["train.lr"])
    assert tune(cfg, runs, "--trials", "4").exit_code in (0, 1)  # budget reached: nothing new
    assert len(trials_csv(runs)) == 4


# ----------------------------------------------------------------------------- batched trials (tune.batch)


def _tune_with_batch(tmp: Path, batch: int, space: str, trials: int, epochs: int = 3, *args: str):
    folder = tmp / f"batch{batch}"
    folder.mkdir()
    cfg, runs = make(folder, space=space, epochs=epochs)
    r = tune(cfg, runs, "--trials", str(trials), "-o", f"tune.batch={batch}", *args)
    assert r.exit_code in (0, 1), r
    return trials_csv(runs), load_study(runs).get_trials()


def test_batched_trials_record_what_unbatched_trials_record(tmp_path):
    # no dropout: a stacked member trains exactly as the trial alone, so the records agree trial by trial
    space = "{train.lr: {low: 1.0e-3, high: 3.0e-2, log: true}, train.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}}"
    alone, alone_trials = _tune_with_batch(tmp_path, 1, space, 4)
    stacked, stacked_trials = _tune_with_batch(tmp_path, 4, space, 4)
    assert [t.system_attrs.get("recipe:stacked") for t in alone_trials] == [None] * 4
    assert [t.system_attrs.get("recipe:stacked") for t in stacked_trials] == [4] * 4
    assert list(alone[0]) == list(stacked[0])                               # the same trials.csv columns
    for a, b in zip(alone, stacked):
        assert (a["number"], a["train.lr"], a["train.weight_decay"], a["state"], a["epochs"], a["worker"]) == \
            (b["number"], b["train.lr"], b["train.weight_decay"], b["state"], b["epochs"], b["worker"])
        assert float(a["val"]) == pytest.approx(float(b["val"]), abs=1.5 / 270)   # at most one val sample apart
        assert float(a["train_score"]) == pytest.approx(float(b["train_score"]), abs=2 / 1257)
        assert float(b["seconds"]) > 0 and b["note"] == a["note"] == ""


def test_batched_and_unbatched_tuning_reach_the_same_best_val(tmp_path):
    # dropout in the space: members draw their own masks, so trials differ by dropout noise only
    space = "{train.lr: {low: 1.0e-3, high: 3.0e-2, log: true}, model.dropout: {low: 0.0, high: 0.5}}"
    alone, _ = _tune_with_batch(tmp_path, 1, space, 6, 6)
    stacked, trials = _tune_with_batch(tmp_path, 6, space, 6, 6)
    assert {t.system_attrs.get("recipe:stacked") for t in trials} == {6}
    best_alone, best_stacked = max(float(x["val"]) for x in alone), max(float(x["val"]) for x in stacked)
    noise = 2 * (best_alone * (1 - best_alone) / 270) ** 0.5               # two binomial std of a 270-row val
    assert abs(best_alone - best_stacked) <= max(noise, 2 / 270), (best_alone, best_stacked)
    assert [x["model.dropout"] for x in alone] == [x["model.dropout"] for x in stacked]


def test_batched_trials_are_grouped_by_batch_size(tmp_path):
    _, trials = _tune_with_batch(tmp_path, 6, SMALL_SPACE, 6)
    sizes = {}
    for t in trials:
        sizes.setdefault(t.params["train.batch_size"], []).append(t.system_attrs.get("recipe:stacked"))
    for bs, stacked in sizes.items():     # one stack per batch size (a lone trial trains unstacked)
        assert stacked == ([None] if len(stacked) == 1 else [len(stacked)] * len(stacked)), sizes


def test_tune_batch_is_validated_and_defaults_from_the_model_size():
    import torch

    from recipe.config import validate
    from recipe.errors import ConfigError
    from recipe.stages.tune.batch import batch_size

    with pytest.raises(ConfigError, match="tune.batch"):
        validate({"name": "b", "data": {"source": "builtin:digits"}, "tune": {"batch": 0}})
    cfg, ds = _digits([16])
    cpu = torch.device("cpu")
    assert batch_size(cfg, ds, {}, cpu) == 32                       # a small model: stack the most
    assert batch_size(cfg, ds, {"model.hidden": [512, 512]}, cpu) == 1   # CPU-bound already: no stacking
    assert batch_size(cfg, ds, {}, cpu, jobs=2, trials=12) == 6     # each worker's share of the trials
    assert batch_size(cfg.with_overrides({"tune.batch": 1}), ds, {}, cpu) == 1
    assert batch_size(cfg.with_overrides({"tune.batch": 5}), ds, {}, cpu, trials=3) == 3


# ----------------------------------------------------------------------------- crashes


def _spawn(cfg: Path, runs: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(RECIPE + ["tune", str(cfg), "--runs", str(runs), "--force", "-q", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(runs: Path, predicate, proc: subprocess.Popen, timeout: float = 120):
    from optuna.trial import TrialState  # noqa: F401

    journal = runs / "tn" / "tune" / "study" / "journal.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if journal.exists():
            trials = load_study(runs).get_trials(deepcopy=False)
            hit = predicate(trials)
            if hit:
                return hit
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the study")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_kill_9_mid_trial_then_resume_retries_it(tmp_path, batch):
    from optuna.trial import TrialState

    cfg, runs = make(tmp_path, epochs=60)       # long trials, so the kill lands mid-trial
    proc = _spawn(cfg, runs, "--trials", "3", "-o", f"tune.batch={batch}")
    running = _wait_for(runs, lambda ts: [t for t in ts if t.state == TrialState.RUNNING
                                          and "recipe:pid" in t.system_attrs], proc)
    victim = running[0]
    assert victim.system_attrs["recipe:pid"] == proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    orphans = [t.number for t in load_study(runs).get_trials() if t.state == TrialState.RUNNING]
    assert victim.number in orphans and len(orphans) <= batch       # orphaned, as after a crash: a whole stack
    r = tune(cfg, runs, "--trials", "3")
    assert r.exit_code in (0, 1), r
    trials = load_study(runs).get_trials()
    for number in orphans:
        killed = trials[number]
        assert killed.state == TrialState.FAIL and "died mid-trial" in killed.system_attrs["recipe:retry"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(trials) == 3 + len(orphans)   # exactly --trials, plus those retried
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    t = tune_json(runs)
    assert t["states"]["complete"] == 3 and t["states"]["retried"] == len(orphans) and t["states"]["fail"] == 0
    assert record(runs, "tn", "tune")["status"] in ("forced", "failed")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
def test_ctrl_c_exits_130_keeps_finished_trials(tmp_path, batch):
    from optuna.trial import TrialState

    cfg, runs = make(tmp_path, epochs=25)
    proc = _spawn(cfg, runs, "--trials", "20", "-o", f"tune.batch={batch}")
    _wait_for(runs, lambda ts: [t for t in ts if t.state == TrialState.COMPLETE]
              and [t for t in ts if t.state == TrialState.RUNNING], proc)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    rec = record(runs, "tn", "tune")
    assert rec["status"] == "interrupted"
    trials = load_study(runs).get_trials()
    assert [t for t in trials if t.state == TrialState.COMPLETE]                     # kept
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]      # the trial (or stack) in flight
    assert 1 <= len(interrupted) <= batch and all("interrupted" in t.system_attrs["recipe:retry"] for t in interrupted)


# ----------------------------------------------------------------------------- planted cases for the checks


def test_boundary_fails_when_best_lr_sits_on_upper_edge(tmp_path):
    # three epochs of plain SGD on digits: the larger the lr in [1e-3, 1e-1], the better, so the optimum is outside;
    # the grid puts trials on both ends of the range (and two batch sizes give the 6 trials the rule needs)
    space = "{train.lr: {low: 1.0e-3, high: 1.0e-1, log: true}, train.batch_size: {choices: [32, 64]}}"
    cfg, runs = make(tmp_path, space=space, epochs=3)
    r = tune(cfg, runs, "--grid-search", "--trials", "6", "-o", "train.optimizer=sgd")
    assert r.exit_code == 1, r
    c = check(record(runs, "tn", "tune"), "tune.boundary")
    assert c["status"] == "fail"
    assert "train.lr" in c["title"] and "high end" in c["title"] and "raise high of tune.space.train.lr" in c["title"]
    ev = c["evidence"]["params"]["train.lr"]
    assert ev["side"] == "high" and ev["position"] >= 0.9 and ev["rho"] >= 0.5
    assert "fails when val also rises toward that edge" in c["advice"]


def test_noise_says_seed_only_differences_are_noise(tmp_path):
    cfg, runs = make(tmp_path, space="{seed: {choices: [0, 1, 2, 3]}}", epochs=3)
    r = tune(cfg, runs, "--grid-search")
    assert r.exit_code in (0, 1), r
    c = check(record(runs, "tn", "tune"), "tune.noise")
    assert c["status"] == "warn" and "are noise" in c["title"], c
    confs = c["evidence"]["configurations"]
    assert len(confs) == 3 and len({x["mean"] for x in confs}) == 1   # same config, same extra seeds: same result
    assert c["evidence"]["how"] == "batched" and len(c["evidence"]["extra_seeds"]) == 3
    assert tune_json(runs)["best_trial"] == c["evidence"]["chosen_trial"]


def _frozen(values: list[tuple[float, float]]):
    import optuna
    from optuna.distributions import FloatDistribution

    dist = {"train.lr": FloatDistribution(1e-4, 1e-1, log=True)}
    trials = [optuna.trial.create_trial(params={"train.lr": lr}, distributions=dist, value=v) for lr, v in values]
    for i, t in enumerate(trials):
        t.number = i
    return sorted(trials, key=lambda t: -t.value)


def test_boundary_rule_warn_fail_pass():
    from recipe import checks as C
    from recipe.stages.tune import check_boundary

    th = C.thresholds("tune.boundary")
    space = {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}}
    rising = _frozen([(1e-4, 0.1), (1e-3, 0.4), (3e-3, 0.5), (1e-2, 0.6), (9e-2, 0.7)])
    assert check_boundary(rising, space, th).status == "fail"
    lone_edge = _frozen([(1e-4, 0.62), (1e-3, 0.5), (3e-3, 0.6), (1e-2, 0.55), (9e-2, 0.63)])   # rho 0.3
    assert check_boundary(lone_edge, space, th).status == "warn"
    inside = _frozen([(1e-4, 0.1), (1e-3, 0.4), (3e-3, 0.7), (1e-2, 0.6), (9e-2, 0.2)])
    c = check_boundary(inside, space, th)
    assert c.status == "pass" and 0.1 < c.evidence["params"]["train.lr"]["position"] < 0.9
    low = check_boundary(_frozen([(1.1e-4, 0.9), (1e-3, 0.5), (1e-2, 0.3), (5e-2, 0.2), (9e-2, 0.1)]), space, th)
    assert low.status == "fail" and "lower low of tune.space.train.lr" in low.title


# ----------------------------------------------------------------------------- batched seeds


def _digits(hidden, **train):
    from recipe.config import validate
    from recipe.data import load

    cfg = validate({"name": "b", "seed": 0, "data": {"source": "builtin:digits"},
                    "model": {"kind": "mlp", "hidden": hidden}, "train": {"lr": 1e-3, "epochs": 2, **train}})
    cfg._base_dir = Path(".")
    return cfg, load(cfg)


def test_batched_seeds_reproduce_sequential_runs():
    import torch

    from recipe.engine import train as E
    from recipe.engine.batched import fit_seeds

    cfg, ds = _digits([32])
    dev = torch.device("cpu")
    tr, va = E.to_tensors(ds, ds.train, dev), E.to_tensors(ds, ds.val, dev)
    batched, models_b, how = fit_seeds(cfg, ds, tr, va, [0, 1, 2], dev)
    sequential, models_s, how_s = fit_seeds(cfg, ds, tr, va, [0, 1, 2], dev, batched=False)
    assert how == "batched" and how_s.startswith("sequential")
    for b, s in zip(batched, sequential):
        assert b.best["score"] == pytest.approx(s.best["score"], abs=2e-3)
        assert b.history[-1]["train_loss"] == pytest.approx(s.history[-1]["train_loss"], rel=1e-4)
        assert len(b.history) == len(s.history) == 2
        # one engine's rules: each stacked seed gets the health checks its run alone gets, with the same verdicts
        assert [(c.id, c.status) for c in b.health] == [(c.id, c.status) for c in s.health] and b.health
    assert batched[0].best["score"] != batched[1].best["score"] or batched[0].history != batched[1].history
    w_b, w_s = models_b[1].state_dict(), models_s[1].state_dict()
    assert all(torch.allclose(w_b[k], w_s[k], atol=1e-4) for k in w_s)


def test_batched_falls_back_to_sequential_with_reason():
    import torch

    from recipe.engine import train as E
    from recipe.engine.batched import fit_seeds

    cfg, ds = _digits([16])
    cfg = cfg.with_overrides({"data.augment": ["noise"]})
    dev = torch.device("cpu")
    tr, va = E.to_tensors(ds, ds.train, dev), E.to_tensors(ds, ds.val, dev)
    results, _, how = fit_seeds(cfg, ds, tr, va, [0, 1], dev)
    assert how == "sequential: data augmentation draws per-batch randomness"
    assert len(results) == 2 and all(0 < r.best["score"] <= 1 for r in results)


# ----------------------------------------------------------------------------- PostgreSQL, two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server from Debian's packages, on loopback, in a temp folder."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does it)")
    bin_dir = bins[-1].parent
    pytest.importorskip("psycopg")
    folder = Path(tempfile.mkdtemp(prefix="recipe-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:     # initdb refuses root: run the server as nobody
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(folder, "nobody")
    port = _free_port()
    data = folder / "data"
    run = lambda *cmd: subprocess.run(as_user + [str(c) for c in cmd], check=True, capture_output=True)  # noqa: E731
    run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust")
    run(bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "recipe")
        yield f"postgresql://postgres@127.0.0.1:{port}/recipe"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_postgres_two_processes_share_one_study(tmp_path, postgres):
    import optuna

    from recipe.stages.tune import open_storage

    cfg, runs_a = make(tmp_path)
    runs_b = tmp_path / "runs-b"        # a second machine: its own runs folder, the same study
    shutil.copytree(runs_a, runs_b)
    procs = [_spawn(cfg, runs, "--trials", "7", "--storage", postgres) for runs in (runs_a, runs_b)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode in (0, 1), err.decode()[-3000:]
    storage = open_storage(postgres)
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == 7 and sorted(numbers) == list(range(7))            # exact count, no duplicate numbers
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert {t.system_attrs["recipe:pid"] for t in trials} <= {procs[0].pid, procs[1].pid}
    a, b = tune_json(runs_a), tune_json(runs_b)
    assert a["top"][0]["trial"] == b["top"][0]["trial"] and a["top"][0]["val"] == b["top"][0]["val"]
    assert a["best_overrides"] == b["best_overrides"]
    assert a["storage"] == postgres.replace("postgres@", "")                # no credentials in artifacts


def _dropout_trials(values: list[tuple[float, float]], low: float, high: float):
    import optuna
    from optuna.distributions import FloatDistribution

    dist = {"model.dropout": FloatDistribution(low, high)}
    trials = [optuna.trial.create_trial(params={"model.dropout": d}, distributions=dist, value=v) for d, v in values]
    for i, t in enumerate(trials):
        t.number = i
    return sorted(trials, key=lambda t: -t.value)


def test_boundary_never_suggests_an_invalid_value():
    """issue 17 item 2: no negative dropout, no dropout >= 1, no lr <= 0; a best value on a valid bound is said."""
    import re

    from recipe import checks as C
    from recipe.stages.tune import check_boundary
    from recipe.stages.tune.bounds import valid_bounds, widen

    th = C.thresholds("tune.boundary")
    assert valid_bounds("model.dropout") == (0.0, True, 1.0, False)
    assert valid_bounds("train.lr") == (0.0, False, None, True)
    # dropout range starting at 0, best at 0, val rising toward 0: nothing lies below 0, so no fail and no advice
    falling = [(0.0, 0.9), (0.1, 0.8), (0.2, 0.7), (0.35, 0.6), (0.5, 0.5)]
    c = check_boundary(_dropout_trials(falling, 0.0, 0.5), {"model.dropout": {"low": 0.0, "high": 0.5}}, th)
    assert c.status == "pass", c
    assert "at the edge of what is valid" in c.title and "lowest valid value of model.dropout" in c.title
    assert c.evidence["params"]["model.dropout"]["valid_edge"] is True and "-0." not in c.title
    # range 0.1..0.5 with the best at 0.1: lowering low is advised, but to 0 at most (it was -0.1)
    c = check_boundary(_dropout_trials([(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.4, 0.6), (0.5, 0.5)], 0.1, 0.5),
                       {"model.dropout": {"low": 0.1, "high": 0.5}}, th)
    assert c.status == "fail" and "lower low of tune.space.model.dropout to about 0 " in c.title, c.title
    assert "model.dropout must be >= 0" in c.title
    # best at 0.9 of 0.5..0.9: raising high is advised below 1 (it was 1.1)
    text, edge = widen("model.dropout", {"low": 0.5, "high": 0.9}, "high")
    assert not edge and "to about 0.95" in text and "must be < 1" in text
    assert widen("model.dropout", {"low": 0.5, "high": 1.0}, "high")[1] is True
    # a linear learning-rate range never goes to or below 0: halfway to 0 instead
    text, _ = widen("train.lr", {"low": 1e-3, "high": 1e-2}, "low")
    assert float(re.search(r"about ([0-9.e-]+)", text).group(1)) > 0 and "must be > 0" in text
    # unbounded on that side: the unchanged rule (log range: high x sqrt(high / low)), no limit named
    text, edge = widen("train.lr", {"low": 1e-3, "high": 1e-2, "log": True}, "high")
    assert text == "raise high of tune.space.train.lr to about 0.0316" and not edge
