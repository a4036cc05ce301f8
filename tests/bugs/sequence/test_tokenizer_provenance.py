"""Planted bug (issue 19 item 8): a tokenizer fitted on all splits. Its provenance (`fitted_on`) is recorded in the
tokenizer artifact and the data report; inspect's data.vocab fails on it, the later stages' gate refuses the
failed inspect (and, when the failure was capped, the data fingerprint that differs from the train-only load),
and predict refuses to encode with a tokenizer artifact fitted on anything but train."""
import json

import pytest

from recipe.data import text as T
from tests.conftest import invoke, record
from tests.text import corpus
from tests.text import final_model as F

ALL = ("train", "val", "test")
CONFIG = """\
name: tok
seed: 0
task: language-model
data:
  source: topics
  tokenizer: char
  block_size: 64
  split: {{val: 0.15, test: 0.15}}
model: {{kind: gpt, n_layer: 1, n_head: 2, n_embd: 16}}
train: {{optimizer: adamw, lr: 1.0e-3, batch_size: 32, epochs: 1}}
{extra}"""
CAP = "checks: {data.vocab: {severity: warn, reason: val holds a few symbols train lacks}}\n"


@pytest.fixture(scope="module")
def topics():
    return corpus.clean_topics()


def _experiment(tmp_path, topics, extra=""):
    corpus.write_folder(tmp_path / "topics", topics)
    path = tmp_path / "tok.yaml"
    path.write_text(CONFIG.format(extra=extra))
    return path, tmp_path / "runs"


def _plant(monkeypatch):
    """text.load as the bug has it: the tokenizer learns from every split's text."""
    def leaky(cfg, errors="strict"):
        task, parts = T.split_documents(cfg, errors)
        return T.build(cfg, task, parts, fitted_on=ALL)
    monkeypatch.setattr(T, "load", leaky)


def _vocab(runs):
    return next(c for c in record(runs, "tok", "inspect")["checks"] if c["id"] == "data.vocab")


def test_clean_text_records_a_train_only_tokenizer_and_passes(tmp_path, topics):
    cfg, runs = _experiment(tmp_path, topics)
    r = invoke("inspect", cfg, "--runs", runs, "-q")
    assert r.exit_code == 0, r
    c = _vocab(runs)
    assert c["status"] == "pass" and c["evidence"]["fitted_on"] == ["train"]
    stage = runs / "tok" / "inspect"
    assert json.loads((stage / "tokenizer.json").read_text())["fitted_on"] == ["train"]
    assert json.loads((stage / "data_report.json").read_text())["encoding"]["fitted_on"] == ["train"]


def test_a_tokenizer_fitted_on_all_splits_fails_inspect_and_the_gate(tmp_path, topics, monkeypatch):
    cfg, runs = _experiment(tmp_path, topics)
    with monkeypatch.context() as m:
        _plant(m)
        r = invoke("inspect", cfg, "--runs", runs, "-q")
    assert r.exit_code == 1, r
    c = _vocab(runs)
    assert c["status"] == "fail" and c["evidence"]["fitted_on"] == list(ALL)
    assert c["title"] == "the char tokenizer was fitted on train+val+test: val/test text shaped the vocabulary"
    stage = runs / "tok" / "inspect"
    assert json.loads((stage / "tokenizer.json").read_text())["fitted_on"] == list(ALL)     # the provenance
    assert json.loads((stage / "data_report.json").read_text())["encoding"]["fitted_on"] == list(ALL)
    g = invoke("baseline", cfg, "--runs", runs, "-q")
    assert g.exit_code == 3, g
    assert "inspect failed (data.vocab: Fit the tokenizer on the train split only" in g.stderr


def test_capping_data_vocab_still_leaves_the_gate_the_fingerprint(tmp_path, topics, monkeypatch):
    """A severity cap on data.vocab (meant for a few unseen symbols) lets inspect pass, but the later stages load
    the data with a train-only tokenizer: the fingerprint differs from inspect's and the gate refuses."""
    cfg, runs = _experiment(tmp_path, topics, CAP)
    with monkeypatch.context() as m:
        _plant(m)
        r = invoke("inspect", cfg, "--runs", runs, "-q")
    assert r.exit_code == 0, r
    c = _vocab(runs)
    assert c["status"] == "warn" and c["evidence"]["overridden"]["from"] == "fail"
    g = invoke("baseline", cfg, "--runs", runs, "-q")
    assert g.exit_code == 3, g
    assert "data changed since inspect ran (fingerprint" in g.stderr


def test_predict_refuses_a_tokenizer_fitted_beyond_train(tmp_path):
    """Where the leak reached the final model (the bug in every stage's load, data.vocab capped), predict is the
    last gate: it encodes only with a tokenizer whose provenance is train."""
    cfg, runs, ds = F.make(tmp_path, name="leaky", epochs=1, fitted_on=ALL)
    assert ds.encoding["fitted_on"] == list(ALL)
    r = invoke("predict", cfg, "--runs", runs, "--prompt", "The ", "--tokens", "5")
    assert r.exit_code == 3, r
    assert "the tokenizer was fitted on train+val+test (val/test text shaped its vocabulary)" in r.stderr
    assert "predict encodes only with a tokenizer fitted on train" in r.stderr
    txt = tmp_path / "doc.txt"
    txt.write_text("The end.", encoding="utf-8")
    assert invoke("predict", cfg, txt, "--runs", runs).exit_code == 3
