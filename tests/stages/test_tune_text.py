"""Stage 5 on text: the sequence-model space, a "minimize" study over val nats, direction-aware checks, ASHA on
val loss, and tune.batch for models the stacked engine cannot stack.

As tests/stages/test_tune.py does, the stage runs on its own: `write_chosen` writes regularize's chosen.json
(and, for ensemble, chosen.pt) and `recipe tune --force` goes past the gate. The corpus is order-dependent: each
document repeats a random 8-letter word, so a context of 8 predicts every later letter while no n-gram model
fitted on other documents can (tests/stages/test_ensemble_text.py relies on that).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import check, invoke, record

TEXT = """\
name: {name}
seed: 0
task: language-model
data: {{source: {source}, block_size: 32, split: {{val: 0.2, test: 0.2}}}}
model: {{kind: gpt, n_layer: 1, n_head: 2, n_embd: 32}}
train: {{optimizer: adamw, lr: 1.0e-2, batch_size: 8, epochs: {epochs}}}
tune: {{trials: {trials}}}
ensemble: {{top_k: 2}}
checks:
  tune.noise: {{seeds: 2, top: 2, reason: "fast test: two extra seeds of the top two"}}
"""


def copy_corpus(folder: Path, docs: int = 60, seed: int = 0) -> Path:
    """`docs` documents, each a random 8-letter word (10 letters) repeated to 96 characters."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghij"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (folder / f"d{i:03d}.txt").write_text(("".join(rng.choice(letters, 8)) * 12)[:96])
    return folder


def text_config(tmp: Path, name: str = "tt", epochs: int = 2, trials: int = 4) -> Path:
    source = copy_corpus(tmp / "docs")
    path = tmp / f"{name}.yaml"
    path.write_text(TEXT.format(name=name, source=source, epochs=epochs, trials=trials))
    return path


def write_chosen(cfg_path: Path, runs: Path, val_mean: float | None = None, model: bool = False) -> dict:
    """regularize's artifacts: chosen.json (val_mean: the given one, or the trained model's val loss) and, with
    `model`, chosen.pt trained through the engine with the config as it is."""
    from recipe.config import load as load_config
    from recipe.data import load
    from recipe.engine import train as E
    from recipe.models import create

    cfg = load_config(cfg_path)
    folder = runs / cfg.name / "regularize"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {"model.dropout": 0.0}
    art = {"overrides": overrides, "val_mean": val_mean, "val_std": 0.01, "reference_val_std": 0.01,
           "seeds": [cfg.seed]}
    if model:
        ds = load(cfg)
        vcfg = cfg.with_overrides(overrides)
        net = create(vcfg, ds, cfg.seed)
        r = E.fit_from_config(net, E.to_tensors(ds, ds.train, "cpu"), E.to_tensors(ds, ds.val, "cpu"), vcfg, ds)
        E.save_checkpoint(folder / "chosen.pt", net, {"overrides": overrides})
        art["val_mean"] = r.best["score"] if val_mean is None else val_mean
    (folder / "chosen.json").write_text(json.dumps(art))
    return art


def tune(cfg: Path, runs: Path, *args: str):
    return invoke("tune", cfg, "--runs", runs, "--force", "-q", *args)


def trials_csv(runs: Path, name: str = "tt") -> list[dict]:
    with open(runs / name / "tune" / "trials.csv") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the study on val nats


def test_text_tune_minimizes_val_nats_and_the_best_trial_has_the_lowest_loss(tmp_path):
    import optuna

    cfg, runs = text_config(tmp_path), tmp_path / "runs"
    write_chosen(cfg, runs, val_mean=50.0)          # a regularized loss every trial beats
    r = tune(cfg, runs)
    assert r.exit_code == 0, r.stdout + r.stderr
    art = json.loads((runs / "tt" / "tune" / "tune.json").read_text())
    assert art["direction"] == "minimize" and art["metric"] == "nats"
    study = optuna.load_study(study_name=art["study"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "tt" / "tune" / "study" / "journal.log"))))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    rows = [t for t in trials_csv(runs) if t["state"] == "COMPLETE"]
    assert len(rows) == 4
    vals = sorted(float(t["val"]) for t in rows)
    assert all(0 < v < np.log(10) + 0.5 for v in vals)            # nats per token of a 10-letter alphabet
    top = [t["val"] for t in art["top"]]
    assert top == sorted(top) and top[0] == pytest.approx(vals[0], rel=1e-5)     # the lowest loss ranks first
    assert art["top"][0]["checkpoint"] == "top/0.pt"
    assert study.best_value == pytest.approx(vals[0], rel=1e-5)
    # the sequence space (no config space): lr, warmup, weight decay, dropout, width and depth
    assert set(art["space"]) == {"train.lr", "train.warmup_fraction", "train.weight_decay", "model.dropout",
                                 "model.n_embd", "model.n_layer"}
    assert art["space"]["model.n_embd"]["choices"] == [16, 32, 64] and art["space"]["model.n_layer"]["choices"] == [1, 2]
    # trials train one by one: the stacked engine cannot stack a GPT, and tune.json says why
    assert art["batch"]["size"] == 1 and "cannot stack" in art["batch"]["why"] and "Embedding" in art["batch"]["why"]
    rec = record(runs, "tt", "tune")
    improves = check(rec, "tune.improves")
    assert improves["status"] == "pass" and improves["evidence"]["direction"] == "minimize"
    assert rec["metrics"]["direction"] == "minimize" and rec["metrics"]["batch"] == 1
    assert rec["metrics"]["best_single_val"] == pytest.approx(vals[0], rel=1e-5)


def test_text_tune_worse_than_regularize_warns_the_lower_loss_way(tmp_path):
    cfg, runs = text_config(tmp_path, trials=2), tmp_path / "runs"
    write_chosen(cfg, runs, val_mean=0.01)          # a regularized loss no 2-epoch trial reaches
    r = tune(cfg, runs)
    assert r.exit_code == 0, r.stdout + r.stderr
    c = check(record(runs, "tt", "tune"), "tune.improves")
    assert c["status"] == "warn" and "worse than the regularized model (0.0100)" in c["title"]


def test_explicit_tune_batch_on_a_sequence_model_is_a_config_error(tmp_path):
    cfg, runs = text_config(tmp_path), tmp_path / "runs"
    write_chosen(cfg, runs, val_mean=3.0)
    r = tune(cfg, runs, "-o", "tune.batch=4")
    assert r.exit_code == 2
    assert "tune.batch: 4 asks for 4 trials trained as one stacked model" in r.stderr
    assert "model.kind gpt" in r.stderr and "set tune.batch: 1" in r.stderr and "Traceback" not in r.stderr
    assert tune(cfg, runs, "-o", "tune.batch=1", "--trials", "1").exit_code in (0, 1)    # 1 is allowed


def test_asha_prunes_on_val_loss_in_a_text_study(tmp_path):
    """ASHA over val nats through the CLI: the first trials are references pruned at rung 1; every complete
    trial ran all epochs; the study's best (lowest loss) trial is complete."""
    cfg, runs = text_config(tmp_path, epochs=3, trials=6), tmp_path / "runs"
    write_chosen(cfg, runs, val_mean=50.0)
    r = tune(cfg, runs, "--pruner", "asha")
    assert r.exit_code == 0, r.stdout + r.stderr
    rows = trials_csv(runs)
    states = [t["state"] for t in rows]
    assert states[:3] == ["PRUNED"] * 3 and all(int(t["epochs"]) == 1 for t in rows[:3])
    complete = [t for t in rows if t["state"] == "COMPLETE"]
    assert complete and all(int(t["epochs"]) == 3 for t in complete)
    art = json.loads((runs / "tt" / "tune" / "tune.json").read_text())
    assert art["top"][0]["val"] == pytest.approx(min(float(t["val"]) for t in complete), rel=1e-5)


# ----------------------------------------------------------------------------- units: direction everywhere


def _minimize_study(budget: int, curves: list[list[float]]):
    import optuna

    from recipe.stages.tune.asha import ASHAPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", pruner=ASHAPruner(len(curves[0]), budget))
    for curve in curves:
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < len(curve) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
    return [(t.state.name, t.last_step) for t in study.get_trials()]


def test_asha_in_a_minimize_study_keeps_the_lowest_losses():
    """The same field as test_tune.py's maximize study, as losses (1 - score): the same trials climb."""
    scores = (0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.9, 0.75, 0.85, 0.05)
    states = _minimize_study(10, [[1 - v] * 18 for v in scores])
    assert states[:3] == [("PRUNED", 1)] * 3
    assert states[3] == ("COMPLETE", 18) and states[6] == ("COMPLETE", 18)      # losses 0.2 and 0.1 climb
    assert states[4] == ("PRUNED", 1) and states[9] == ("PRUNED", 1)            # losses 0.9 and 0.95 stop
    from recipe.stages.tune.asha import rung_value

    # a loss tie-break adds: a lower val loss ranks first in a minimize study too
    assert rung_value(2.0, 2.0, higher_is_better=False) < rung_value(2.0, 3.0, higher_is_better=False)


def test_can_reach_top_ranks_the_lowest_loss_first_in_a_minimize_study():
    import optuna

    from recipe.stages.tune import can_reach_top

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for v in (1.0, 1.2, 1.4):
        study.add_trial(optuna.trial.create_trial(value=v))
    assert can_reach_top(study, 3, 1.1, 2) and not can_reach_top(study, 3, 1.3, 2)


def test_tune_checks_compare_the_task_way():
    from recipe import checks as C
    from recipe import tasks
    from recipe.stages.tune.checks import check_boundary, check_improves

    lm, clf = tasks.get("language-model"), tasks.get("text-classification")
    assert (lm.direction, clf.direction) == ("minimize", "maximize")
    assert lm.signed(2.0) == -2.0 and clf.signed(0.9) == 0.9
    assert check_improves(2.0, 2.5, 0.01, {}, lm).status == "pass"           # a lower loss beats regularize
    assert check_improves(2.5, 2.0, 0.01, {}, lm).status == "warn"
    assert check_improves(0.9, 0.8, 0.01, {}, clf).status == "pass"

    class T:     # a frozen trial as summarize passes them, best first
        def __init__(self, number, lr, value):
            self.number, self.params, self.value = number, {"train.lr": lr}, value

    space = {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}}
    # val loss falls toward the high end of lr, and the best trial sits there: the optimum lies outside
    trials = [T(i, lr, loss) for i, (lr, loss) in enumerate([(9e-2, 1.0), (3e-2, 1.5), (1e-2, 2.0), (1e-3, 2.5),
                                                             (2e-4, 3.0)])]
    th = C.thresholds("tune.boundary")
    assert check_boundary(trials, space, th, lm).status == "fail"
    assert check_boundary(trials, space, th).status == "warn"      # read as scores, val falls toward the edge


def test_sequence_space_defaults():
    from recipe.config import validate
    from recipe.stages.tune.space import space_of

    def cfg(**model):
        return validate({"name": "s", "task": "language-model", "data": {"source": "x.txt"},
                         "model": model, "train": {"lr": 1e-3}})

    gpt = space_of(cfg(kind="gpt", n_head=3, n_embd=48, n_layer=2), {})
    assert gpt["train.lr"] == {"low": pytest.approx(1e-4), "high": pytest.approx(1e-2), "log": True}
    assert gpt["model.n_embd"]["choices"] == [24, 48, 96]          # every width divisible by 3 heads
    assert gpt["model.n_layer"]["choices"] == [1, 2, 3] and gpt["train.warmup_fraction"] == {"low": 0.0,
                                                                                              "high": 0.2}
    assert gpt["train.weight_decay"]["low"] == pytest.approx(0.01 / 30)     # AdamW-sized when none is set
    lstm = space_of(cfg(kind="lstm", n_embd=32), {"model.n_embd": 64})      # centred on regularize's choice
    assert lstm["model.n_embd"]["choices"] == [32, 64, 128] and "model.n_layer" not in lstm
    steps = validate({"name": "s", "task": "language-model", "data": {"source": "x.txt"},
                      "model": {"kind": "gru"}, "train": {"warmup_steps": 50}})
    assert space_of(steps, {})["train.warmup_steps"] == {"low": 0, "high": 100}     # the config counts in steps
