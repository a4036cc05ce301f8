"""recipe overfit-batch on text (issue 19 item 6): a GPT memorizes a batch of token windows to under
overfit.memorize's lm_max_loss nats/token and, on order-dependent text (each document a random string repeated),
fits train beyond the best n-gram model's TRAIN loss; a model blind to its input cannot memorize, and a GPT trained
two epochs on real pydoc text fails overfit.train-fit against the Kneser-Ney 5-gram's train loss."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from recipe import tasks
from recipe.checks import thresholds
from recipe.stages.overfit import check_train_fit
from tests.conftest import check, invoke, record
from tests.text import corpus

LETTERS = "abcdefghij"


def copy_corpus(folder: Path, docs: int = 200, seed: int = 0) -> Path:
    """Each document: a random 7-letter string and a space, four times. An n-gram of order <= 5 cannot predict
    the repeats of text it has not seen (the unigram wins on val); attention to the token 8 back can."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (folder / f"d{i:03d}.txt").write_text(("".join(rng.choice(list(LETTERS), 7)) + " ") * 4)
    return folder


def lm_config(tmp_path: Path, source: Path, name: str = "lm", model=None, train=None, **extra) -> Path:
    raw = {"name": name, "seed": 0, "task": "language-model",
           "data": {"source": str(source), "tokenizer": "char", "block_size": 16, "split": {"val": 0.2, "test": 0.2}},
           "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, **(model or {})},
           "train": {"optimizer": "adamw", "lr": 1.0e-2, "batch_size": 32, "epochs": 8, **(train or {})},
           "overfit": {"steps": 200}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class InputBlind(nn.Module):
    """A planted language model that ignores its tokens: one learned next-token distribution for every position."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.lm_head = nn.Linear(1, vocab_size)
        nn.init.normal_(self.lm_head.weight, std=0.01)     # it starts near recipe's output bias: the unigram

    def forward(self, idx):  # idx: (B, T) -> (B, T, V)
        return self.lm_head(torch.ones(*idx.shape, 1, device=idx.device))


def input_blind(vocab_size, block_size, num_outputs):
    return InputBlind(vocab_size)


def _chain(cfg: Path, runs: Path, until: str = "overfit-batch") -> int:
    for stage in ("inspect", "baseline"):
        assert invoke(stage, cfg, "--runs", runs, "-q").exit_code == 0, stage
    return invoke(until, cfg, "--runs", runs, "-q").exit_code


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copy")
    cfg = lm_config(tmp, copy_corpus(tmp / "docs"))
    code = _chain(cfg, tmp / "runs")
    return code, tmp / "runs"


def test_gpt_memorizes_windows_and_beats_the_best_ngram_on_train(copy_run):
    code, runs = copy_run
    assert code == 0
    rec = record(runs, "lm", "overfit-batch")
    assert rec["status"] == "passed"
    memo = check(rec, "overfit.memorize")
    limit = thresholds("overfit.memorize")["lm_max_loss"]
    assert memo["status"] == "pass" and memo["evidence"]["final_loss"] <= limit == 0.1
    assert memo["evidence"]["criterion"] == "loss <= 0.1 on 16 windows of 16 tokens within 200 steps"
    lr = check(rec, "overfit.lr-range")
    assert lr["status"] == "pass" and lr["evidence"]["recommended"] > 0
    fit = check(rec, "overfit.train-fit")
    base = json.loads((runs / "lm" / "baseline" / "baselines.json").read_text())
    ev = fit["evidence"]
    # the bar is the best n-gram (chosen on val: the unigram, since no context of this text repeats) on TRAIN
    assert base["best_dumb"] == "unigram" and ev["must_beat"] == "best_dumb_train"
    assert ev["bar"] == round(base["best_dumb_train"], 4) and ev["higher_is_better"] is False
    assert fit["status"] == "pass" and ev["train_score"] < ev["bar"] - 0.5, fit
    assert fit["title"].startswith("train score ") and "beats the best dumb baseline unigram's train score" in fit["title"]
    lr_json = json.loads((runs / "lm" / "overfit-batch" / "lr.json").read_text())
    assert lr_json["used"] == ev["lr"] and len(lr_json["range_test"]["lrs"]) > 10


def test_a_model_blind_to_its_tokens_cannot_memorize(tmp_path):
    # baseline already sees it (it is no better than the unigram, and starting there its loss cannot fall):
    # told to warn there, overfit-batch must catch it on its own
    blind = {"severity": "warn", "reason": "the planted model is input-blind; overfit-batch must catch it"}
    cfg = lm_config(tmp_path, copy_corpus(tmp_path / "docs"), model={"kind": f"{__name__}:input_blind"},
                    checks={"baseline.input-independent": blind, "baseline.loss-decreases": blind})
    assert _chain(cfg, tmp_path / "runs") == 1
    memo = check(record(tmp_path / "runs", "lm", "overfit-batch"), "overfit.memorize")
    assert memo["status"] == "fail" and memo["evidence"]["retry"]["passed"] is False
    # it can only learn the letters' frequencies: ~ln 10 nats on the random letters, far above 0.1
    assert memo["evidence"]["final_loss"] > 1.5
    assert memo["title"].startswith("could not memorize 16 windows of 16 tokens")


@pytest.mark.slow
def test_two_epochs_on_real_text_do_not_fit_train_as_well_as_the_5gram(tmp_path):
    t = corpus.clean_topics()
    cfg = lm_config(tmp_path, corpus.write_folder(tmp_path / "topics", {k: t[k] for k in sorted(t)[:14]}),
                    model={"n_embd": 16}, train={"lr": 3.0e-3, "epochs": 2})
    assert _chain(cfg, tmp_path / "runs") == 1
    rec = record(tmp_path / "runs", "lm", "overfit-batch")
    fit = check(rec, "overfit.train-fit")
    assert fit["status"] == "fail" and fit["evidence"]["best_dumb"] == "kn5gram"
    assert fit["evidence"]["train_score"] > fit["evidence"]["bar"] == fit["evidence"]["best_dumb_train"]
    assert "does not beat the best dumb baseline kn5gram's train score" in fit["title"]
    assert check(rec, "overfit.memorize")["status"] in ("pass", "warn")     # it is a fit problem, not a bug


def _result(train, val):
    return SimpleNamespace(final_train={"score": train}, best={"score": val}, stopped="completed")


def test_train_fit_compares_in_the_tasks_direction():
    baselines = {"best_dumb": "kn5gram", "best_dumb_val": 1.46, "best_dumb_train": 0.85}
    lm = tasks.get("language-model")
    assert check_train_fit(_result(0.80, 1.5), baselines, lm, {}).status == "pass"        # lower loss than 0.85
    worse = check_train_fit(_result(0.90, 1.4), baselines, lm, {})
    assert worse.status == "fail" and worse.evidence["bar"] == 0.85
    # a table task: higher is better, against the best dumb model's val score
    acc = {"best_dumb": "linear", "best_dumb_val": 0.9, "best_dumb_train": 1.0}
    cls = tasks.get("classification")
    assert check_train_fit(_result(0.95, 0.9), acc, cls, {}).status == "pass"
    assert check_train_fit(_result(0.85, 0.9), acc, cls, {}).status == "fail"
    assert check_train_fit(_result(float("nan"), 0.9), acc, cls, {}).status == "fail"
