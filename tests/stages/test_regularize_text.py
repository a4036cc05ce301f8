"""recipe regularize on text (issue 19 item 6): the ladder for a GPT (dropout, AdamW decay, half/double n_embd,
early stopping), augmentation and fewer_features skipped with their reason in the record, the learning curve in
train tokens, and regularize.beats-baselines as a paired bootstrap of per-window losses against the best n-gram on
the very val windows; an input-blind network fails it against the Kneser-Ney 5-gram on real text, and a text
classifier is tested against the bag-of-words model with McNemar."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from recipe import config
from recipe.baselines import ngram
from recipe.checks import thresholds
from recipe.data import load
from recipe.stages.regularize_checks import beats, check_still_improving
from recipe.stages.regularize_trainer import Variant
from recipe.stages.regularize_verdicts import bias_variance, check_beats_baselines, dumb_val_rows, reachable_error
from tests.conftest import check, invoke, record
from tests.stages.test_overfit_text import copy_corpus, lm_config
from tests.text import corpus

@functools.lru_cache(maxsize=1)
def _clean_topics() -> dict[str, str]:
    return corpus.clean_topics()


LADDER = ["learning_curve", "augment", "fewer_features", "smaller_model", "dropout", "weight_decay"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copyreg")
    cfg = lm_config(tmp, copy_corpus(tmp / "docs"), regularize={"seeds": 1, "ladder": LADDER})
    runs = tmp / "runs"
    for stage in ("inspect", "baseline", "overfit-batch", "regularize"):
        r = invoke(stage, cfg, "--runs", runs, "-q")
        assert r.exit_code == 0, (stage, r)
    return cfg, runs


@pytest.mark.slow
def test_regularize_on_text_records_its_ladder_and_beats_the_ngram(chain):
    cfg, runs = chain
    rec = record(runs, "lm", "regularize")
    assert rec["status"] == "passed"
    ladder = check(rec, "regularize.ladder")["evidence"]
    # augmentation is off for text, and said so: not a silent pass
    assert "augment: augmentation is off for text (token ids cannot be shifted or noised like floats)" in ladder["skipped"]
    assert any(s.startswith("fewer_features: token positions are not features") for s in ladder["skipped"])
    d = runs / "lm" / "regularize"
    table = {r["variant"]: r for r in json.loads((d / "ablation.json").read_text())["table"]}
    assert table["smaller_model"]["overrides"] == {"model.n_embd": 16}          # half of 32, a multiple of n_head
    assert table["dropout"]["overrides"] == {"model.dropout": 0.2}
    assert table["weight_decay"]["overrides"] == {"train.weight_decay": 0.1}     # AdamW: decoupled decay
    assert "augment" not in table and "fewer_features" not in table
    # the learning curve counts train tokens: fractions of the windows, 16 tokens each
    ds = load(config.load(cfg))
    n = len(ds.train.x)
    lc = json.loads((d / "ablation.json").read_text())["diagnostics"]["learning_curve"]
    assert lc["unit"] == "tokens" and lc["train_size"] == [int(0.25 * n) * 16, int(0.5 * n) * 16, n * 16]
    assert (d / "learning_curve.png").exists()
    # bias vs variance in nats: the reachable loss is the best n-gram's val loss
    base = json.loads((runs / "lm" / "baseline" / "baselines.json").read_text())
    bv = check(rec, "regularize.bias-variance")["evidence"]
    assert bv["target_error"] == round(base["best_dumb_val"], 4) and bv["verdict"] in ("fine", "high variance")
    assert bv["target_error_source"] == "unigram val error (baseline)"
    beat = check(rec, "regularize.beats-baselines")
    ev = beat["evidence"]
    assert beat["status"] == "pass" and ev["best_dumb"] == "unigram" and ev["val_rows"] == len(ds.val.x)
    assert ev["test"] == "paired bootstrap of per-row differences in nats per token"
    assert ev["shipped_nats"] < ev["baseline_nats"] - 0.5 and ev["nats_difference_lower_95"] < 0
    # the n-gram is scored on the network's own val windows: its per-window mean is its val loss
    assert abs(ev["baseline_nats"] - base["best_dumb_val"]) < 0.01
    assert ev["documents"]["n"] == len(ds.doc_tokens["val"]) and ev["documents"]["network_ahead"] >= 0.9 * ev["documents"]["n"]
    chosen = json.loads((d / "chosen.json").read_text())
    assert chosen["variant"] == ladder["chosen"] and chosen["overrides"]["train.lr"] > 0


def test_ngram_window_losses_score_the_windows_targets():
    m = ngram.NGram(1, 3).fit([np.array([0, 1, 2, 1, 2, 2])])
    docs = [np.array([0, 1, 2]), np.array([1, 2])]
    tok = ngram.stream_token_losses(m, docs)                  # stream 0 1 2 | 1 2: position 0 is no one's target
    assert np.isnan(tok[0]) and np.allclose(tok[1:], -m.log_probs(np.array([[1], [2], [1], [2]])))
    w = ngram.window_losses(m, docs, 2)                       # windows' targets (1, 2) and (1, 2)
    assert w.shape == (2,) and np.allclose(w, tok[1:].reshape(2, 2).mean(1))
    # on real text the windows' mean is the model's val loss (the only difference: each document's first token)
    t = _clean_topics()
    topics = {k: t[k] for k in sorted(t)[:10]}
    docs = [np.frombuffer(v.encode("utf-8"), np.uint8).astype(np.int64) for v in topics.values()]
    m5 = ngram.NGram(5, 256).fit(docs[:7])
    w5 = ngram.window_losses(m5, docs[7:], 32)
    assert w5.shape == ((sum(len(d) for d in docs[7:]) - 1) // 32,)
    assert abs(w5.mean() - m5.evaluate(docs[7:])["loss"]) < 0.01


def _topics_dataset(tmp_path, n=14):
    t = _clean_topics()
    cfg = lm_config(tmp_path, corpus.write_folder(tmp_path / "topics", {k: t[k] for k in sorted(t)[:n]}))
    return load(config.load(cfg))


def test_an_input_blind_network_fails_beats_baselines_against_the_5gram(tmp_path):
    ds = _topics_dataset(tmp_path)
    res = ngram.fit_baselines(ds.doc_tokens["train"], ds.doc_tokens["val"], ds.vocab_size)
    best = min(res, key=lambda k: res[k]["val"]["loss"])
    baselines = {"best_dumb": best, "best_dumb_val": res[best]["val"]["loss"],
                 "ngram": {k: {"order": v["order"]} for k, v in res.items()}}
    assert best == "kn5gram"
    # the planted network: the train unigram at every position, whatever the tokens (N, T, V) logits
    prior = np.log(np.maximum(np.asarray(ds.class_priors()), 1e-8))
    out = np.broadcast_to(prior, (*ds.val.y.shape, ds.vocab_size)).astype(np.float32)
    rows = dumb_val_rows(ds, baselines, out, ds.val.y, 0)
    c = check_beats_baselines(rows, "language-model", baselines, thresholds("regularize.beats-baselines"), 0,
                              float(rows["net"].mean()))
    assert c.status == "fail" and c.id == "regularize.beats-baselines"
    assert c.title.startswith("the chosen model is worse than the best dumb baseline beyond noise: val loss "
                              "(nats/token) ")
    assert c.evidence["nats_difference_lower_95"] > 1.0                       # unigram ~3.2 vs 5-gram ~1.6
    assert abs(c.evidence["baseline_nats"] - res["kn5gram"]["val"]["loss"]) < 0.02
    # the 5-gram itself, fed as the network (its log-probabilities per position), ties the 5-gram
    same = dict(rows, net=rows["base"].copy())
    assert check_beats_baselines(same, "language-model", baselines, thresholds("regularize.beats-baselines"), 0,
                                 0.0).status == "warn"


def test_text_classifier_rows_are_judged_against_bag_of_words(tmp_path):
    from tests.stages.test_baseline_text import _class_config

    ds = load(config.load(_class_config(tmp_path)))
    baselines = {"best_dumb": "bag_of_words", "best_dumb_val": 0.7}
    perfect = np.eye(ds.num_classes, dtype=np.float32)[ds.val.y] * 10        # logits that are always right
    rows = dumb_val_rows(ds, baselines, perfect, ds.val.y, 0)
    assert rows["net"].all() and rows["net"].shape == rows["base"].shape == (len(ds.val.y),)
    c = check_beats_baselines(rows, "text-classification", baselines, thresholds("regularize.beats-baselines"), 0, 1.0)
    assert c.evidence["test"] == "exact McNemar" and c.evidence["shipped_val"] == 1.0
    assert c.status == ("pass" if not rows["base"].all() else "warn")
    assert c.evidence["rows_only_baseline_right"] == 0


def _lm(name, train, val, history=None):
    return Variant(name, {}, train=[train], val=[val], task="language-model", history=history or [])


def test_a_lower_loss_beats_and_errors_are_the_loss():
    ref, better, worse = _lm("reference", 1.0, 1.2), _lm("dropout", 1.1, 1.1), _lm("smaller_model", 1.5, 1.6)
    assert beats(better, ref) and not beats(ref, better) and beats(ref, worse)
    assert better.val_error == 1.1 and better.train_error == 1.1
    reach = reachable_error(0.0, {"dumb": {"unigram": {"val": 3.2}, "kn5gram": {"val": 1.46}}}, None,
                            "language-model")
    assert reach.error == 1.46 and reach.source == "kn5gram val error (baseline)"
    c, verdict = bias_variance(_lm("reference", 2.4, 2.42), reach, thresholds("regularize.bias-variance"))
    assert verdict == "high bias" and c.evidence["avoidable_bias"] == round(2.4 - 1.46, 4)
    th = thresholds("regularize.still-improving")
    falling = [{"val_score": 2.0 - 0.1 * e} for e in range(10)]              # val loss still falling
    assert check_still_improving(_lm("c", 1, 1, [falling]), th).status == "warn"
    flat = [{"val_score": v} for v in (2.0, 1.5, 1.2, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1)]
    assert check_still_improving(_lm("c", 1, 1, [flat]), th).status == "pass"
    rising = [{"val_score": 1.0 + 0.05 * e} for e in range(10)]              # overfitting: no improvement at all
    assert check_still_improving(_lm("c", 1, 1, [rising]), th).status == "pass"


@pytest.mark.slow
def test_text_classifier_chain_through_regularize(tmp_path):
    import yaml

    from tests.stages.test_baseline_text import _class_config

    cfg = _class_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["regularize"] = {"seeds": 1, "ladder": ["learning_curve", "augment", "smaller_model", "dropout"]}
    cfg.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch"):
        assert invoke(stage, cfg, "--runs", runs, "-q").exit_code == 0, stage
    fit = check(record(runs, "tc", "overfit-batch"), "overfit.train-fit")
    assert fit["evidence"]["must_beat"] == "best_dumb_val" and fit["evidence"]["higher_is_better"] is True
    assert invoke("regularize", cfg, "--runs", runs, "-q").exit_code in (0, 1)
    rec = record(runs, "tc", "regularize")
    beat = check(rec, "regularize.beats-baselines")["evidence"]
    assert beat["test"] == "exact McNemar" and beat["best_dumb"] in ("majority", "bag_of_words")
    assert beat["val_rows"] == len(load(config.load(cfg)).val.y)
    assert "augment: augmentation is off for text" in " ".join(check(rec, "regularize.ladder")["evidence"]["skipped"])
    lc = json.loads((runs / "tc" / "regularize" / "ablation.json").read_text())["diagnostics"]["learning_curve"]
    ds = load(config.load(cfg))
    assert lc["unit"] == "tokens" and lc["train_size"][-1] == int((ds.train.x != ds.pad_id).sum())
