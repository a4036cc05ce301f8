"""Stage 6 on text: averaged next-token probabilities, the sealed-test loss and perplexity with an interval over
test documents, the n-gram models scored at the one look (ensemble.beats-ngram), distillation to soft next
tokens, and the choices on val made the lower-loss way.

The stage runs on its own past the gate (`--force`): the fixture trains regularize's model and two "tuned"
members through the engine and writes the artifacts ensemble reads (chosen.json/.pt, tune.json + top/*.pt).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import check, invoke, record
from tests.stages.test_tune_text import text_config, write_chosen

GAIN_CAP = """\
  ensemble.gain: {severity: warn, reason: "two members of one small corpus can tie; the test look is the point"}
"""


def write_tune(cfg_path: Path, runs: Path, lrs=(3e-3, 2e-2)) -> list[dict]:
    """tune's artifacts as ensemble reads them: tune.json's top entries and their checkpoints."""
    from recipe.config import load as load_config
    from recipe.data import load
    from recipe.engine import train as E
    from recipe.models import create

    cfg = load_config(cfg_path)
    ds = load(cfg)
    tr, va = E.to_tensors(ds, ds.train, "cpu"), E.to_tensors(ds, ds.val, "cpu")
    folder = runs / cfg.name / "tune"
    (folder / "top").mkdir(parents=True, exist_ok=True)
    top = []
    for rank, lr in enumerate(lrs):
        overrides = {"model.dropout": 0.0, "train.lr": lr}
        vcfg = cfg.with_overrides(overrides)
        net = create(vcfg, ds, cfg.seed)
        r = E.fit_from_config(net, tr, va, vcfg, ds)
        E.save_checkpoint(folder / "top" / f"{rank}.pt", net, {"overrides": overrides})
        top.append({"rank": rank, "trial": rank, "val": r.best["score"], "overrides": overrides, "params": {},
                    "checkpoint": f"top/{rank}.pt"})
    top.sort(key=lambda e: e["val"])
    (folder / "tune.json").write_text(json.dumps({"top": top, "best_overrides": top[0]["overrides"]}))
    return top


def test_text_ensemble_reports_test_nats_over_documents_and_beats_the_ngram_models(tmp_path):
    from recipe.config import load as load_config
    from recipe.data import load

    cfg = text_config(tmp_path, epochs=10)
    cfg.write_text(cfg.read_text() + GAIN_CAP)
    runs = tmp_path / "runs"
    write_chosen(cfg, runs, model=True)
    top = write_tune(cfg, runs)
    r = invoke("ensemble", cfg, "--runs", runs, "--force", "-q", "-o", "ensemble.distill=true")
    assert r.exit_code == 0, r.stdout + r.stderr
    rec = record(runs, "tt", "ensemble")
    ens = json.loads((runs / "tt" / "ensemble" / "ensemble.json").read_text())
    # the best member is the one with the lowest val loss, and the ensemble was chosen on val the same way
    best = min(ens["candidates"], key=lambda c: c["val"])
    assert ens["best_member"] == best["name"] and best["val"] <= min(t["val"] for t in top) + 1e-9
    test = check(rec, "ensemble.test")
    ds = load(load_config(cfg))
    n_docs = len(np.unique(ds.raw_test().rows))
    assert test["evidence"]["bootstrap"] == {"resampled": "documents", "n_documents": n_docs} and n_docs == 12
    lo, hi = ens["test_ci95"]
    assert lo < ens["test"] < hi and f"over {n_docs} test documents" in test["title"]
    assert rec["metrics"]["test_perplexity"] == pytest.approx(math.exp(ens["test"]))
    assert rec["metrics"]["test_perplexity_ci95"] == pytest.approx([math.exp(lo), math.exp(hi)])
    # the n-gram models: ranked on val, scored on test at the look; the order-dependent corpus defeats them
    beats = check(rec, "ensemble.beats-ngram")
    ev = beats["evidence"]
    assert beats["status"] == "pass" and ev["chosen_on"] == "val" and ev["final_test_loss"] == pytest.approx(
        ens["test"], abs=1e-5)
    assert set(ev["ngram_test"]) == {"unigram", "bigram", "kn3gram", "kn5gram"}
    assert ev["gain"]["mean"] == pytest.approx(ev["best_ngram_test_loss"] - ev["final_test_loss"], abs=1e-4)
    assert ev["gain"]["lower_bound_95"] > 0 and ev["gain"]["n_documents"] == n_docs
    assert ev["best_ngram_test_loss"] > 1.5 > ens["test"]          # letters of random words vs copying them
    # ... and every test number is on the ledger of the one look
    looks = json.loads((runs / "tt" / "test_looks.json").read_text())
    assert len(looks) == 1 and looks[0]["status"] == "scored"
    assert looks[0]["test_score"] == pytest.approx(ens["test"])
    assert looks[0]["ngram_test_loss"] == ev["ngram_test"]
    kept = json.loads((runs / "tt" / looks[0]["result"]).read_text())
    assert kept["ngram"]["models"]["kn5gram"]["test_loss"] == ev["ngram_test"]["kn5gram"]
    # distillation learns the ensemble's soft next tokens; its verdict is on val nats per token
    distill = check(rec, "ensemble.distill")
    assert distill["status"] in ("pass", "warn") and distill["evidence"]["shortfall"]["unit"] == "nats per token"
    assert ens["student"]["temperature"] == 2.0 and ens["student"]["epochs"] == 10


# ----------------------------------------------------------------------------- units


def _lm_outputs(losses_per_window: list[float], vocab: int = 5, t: int = 4):
    """Logits and targets whose per-window loss is each given value: the target gets probability exp(-loss)."""
    outs, ys = [], []
    for loss in losses_per_window:
        p_true = math.exp(-loss)
        rest = (1 - p_true) / (vocab - 1)
        logits = torch.full((t, vocab), math.log(rest))
        logits[:, 0] = math.log(p_true)
        outs.append(logits)
        ys.append(torch.zeros(t, dtype=torch.long))
    return torch.stack(outs), torch.stack(ys)                              # (N, T, V), (N, T)


def test_the_test_interval_resamples_documents_not_windows():
    from recipe.stages.ensemble.stats import BOOTSTRAP, bootstrap_score

    # 4 documents: 3 windows of loss 0.5, 1 window of 2.0, 2 windows of 1.0, 4 windows of 0.2
    rows = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    out, y = _lm_outputs([0.5, 0.5, 0.5, 2.0, 1.0, 1.0, 0.2, 0.2, 0.2, 0.2])
    lo, hi = bootstrap_score(out, y, "language-model", 7, groups=rows)
    # by hand: each draw picks 4 documents with replacement; its loss is their nats over their tokens
    nats = np.array([3 * 0.5, 2.0, 2 * 1.0, 4 * 0.2]) * 4
    tokens = np.array([3, 1, 2, 4]) * 4.0
    idx = np.random.default_rng(7).integers(0, 4, (BOOTSTRAP, 4))
    expected = np.percentile(nats[idx].sum(1) / tokens[idx].sum(1), [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(expected), rel=1e-6)
    windows = bootstrap_score(out, y, "language-model", 7)                   # resampling the 10 windows instead
    assert windows != pytest.approx((lo, hi))
    # a one-label-per-row task (text classification's rows are its documents): the row bootstrap, unchanged
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    right = np.array([1, 1, 0, 1, 1.0])
    draws = np.random.default_rng(3).integers(0, 5, (BOOTSTRAP, 5))
    assert bootstrap_score(logits, labels, "text-classification", 3, groups=np.arange(5)) == pytest.approx(
        tuple(np.percentile(right[draws].mean(1), [2.5, 97.5])))


def test_beats_ngram_passes_warns_and_fails_on_its_numbers():
    from recipe.stages.ensemble.ngram_test import check_beats_ngram

    def ngram(mean, bound, net=1.0):
        return {"best": "kn5gram", "network_test_loss": net, "chosen_on": "val",
                "models": {"kn5gram": {"test_loss": net + mean, "test_perplexity": math.exp(net + mean)}},
                "gain": {"mean": mean, "ci95": [bound - 0.01, mean + 0.1], "lower_bound_95": bound,
                         "n_documents": 9}}

    assert check_beats_ngram(ngram(0.3, 0.1), "ensemble").status == "pass"
    warn = check_beats_ngram(ngram(0.05, -0.02), "ensemble")
    assert warn.status == "warn" and "not beyond the noise" in warn.title
    fail = check_beats_ngram(ngram(-0.2, -0.4), "best_single")
    assert fail.status == "fail" and "best single's test loss 1.0000" in fail.title and "over 9 test documents" in \
        fail.title


def test_score_ngrams_pairs_the_network_and_the_ngram_model_by_document():
    from recipe.baselines.ngram import NGram
    from recipe.stages.ensemble.ngram_test import doc_sums, fit_ngrams, network_doc_sums, score_ngrams

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 4, 40) for _ in range(9)]
    fitted = fit_ngrams(docs[:5], docs[5:7], 4, (1, 2, 3, 5))
    assert set(fitted) == {"unigram", "bigram", "kn3gram", "kn5gram"}
    test = docs[7:]
    num, den = doc_sums(fitted["unigram"][0], test)
    assert list(den) == [39, 39]                                # tokens 1.. of each document are targets
    assert num.sum() / den.sum() == pytest.approx(NGram(1, 4).fit(docs[:5]).evaluate(test)["loss"])
    # a network that puts probability 0.9 on every right token, in 2 windows per test document
    out, y = _lm_outputs([-math.log(0.9)] * 4, vocab=4, t=10)
    net = network_doc_sums(__import__("recipe.tasks", fromlist=["get"]).get("language-model"), out, y,
                           np.array([0, 0, 1, 1]), 2)
    assert list(net[1]) == [20, 20] and net[0] == pytest.approx([20 * -math.log(0.9)] * 2)
    res = score_ngrams(fitted, test, net, 0)
    best = min(fitted, key=lambda k: fitted[k][1])
    assert res["best"] == best and res["network_test_loss"] == pytest.approx(-math.log(0.9), abs=1e-5)
    assert res["gain"]["mean"] == pytest.approx(res["models"][best]["test_loss"] + math.log(0.9), abs=1e-4)
    assert res["gain"]["lower_bound_95"] > 0 and res["gain"]["n_documents"] == 2


def test_a_context_blind_model_fails_beats_ngram_on_order_dependent_text():
    """Planted: a "network" that predicts every letter uniformly (it never reads its context) against n-gram
    models of documents that repeat a 4-letter word: ensemble.beats-ngram fails and says the n-gram is better."""
    from recipe import tasks
    from recipe.stages.ensemble.ngram_test import check_beats_ngram, fit_ngrams, network_doc_sums, score_ngrams

    rng = np.random.default_rng(1)
    docs = [np.tile(rng.permutation(6)[:4], 10) for _ in range(12)]         # 40 tokens each, 6 symbols
    fitted = fit_ngrams(docs[:8], docs[8:10], 6, (1, 2, 3, 5))
    test = docs[10:]
    y = torch.from_numpy(np.concatenate(test)[1:79].reshape(6, 13))        # 6 windows' targets, 3 per document
    rows = np.array([0, 0, 0, 1, 1, 1])
    blind = torch.zeros(6, 13, 6)                                            # uniform logits: ln 6 per token
    net = network_doc_sums(tasks.get("language-model"), blind, y, rows, 2)
    res = score_ngrams(fitted, test, net, 0)
    assert res["network_test_loss"] == pytest.approx(math.log(6), abs=1e-5)
    c = check_beats_ngram(res, "ensemble")
    assert c.status == "fail" and res["gain"]["mean"] < 0 and "as well or better" in c.title


def test_val_choices_rank_language_models_by_lowest_loss():
    from recipe.stages import ensemble as S
    from recipe.stages.ensemble.stats import _score

    rows = np.repeat(np.arange(6), 2)                   # 12 val windows, 2 per document
    good, _ = _lm_outputs([0.4] * 12)
    bad, y = _lm_outputs([1.2] * 12)
    mixed, _ = _lm_outputs([0.3, 0.3, 0.9, 0.9] * 3)
    members = []
    for name, out in (("bad", bad), ("good", good), ("mixed", mixed)):
        s = _score(out, y, "language-model", 0)
        members.append(S.Member(name, "tune", {}, 0, torch.nn.Identity(), val_out=out, val=s["score"],
                                val_loss=s["loss"]))
    w = S.greedy_select([m.val_out for m in members], y, "language-model", 0)
    assert w[0] == 0.0                                  # the worst (highest-loss) member gets no weight
    ens = S.combine([m.val_out for m in members], w, "language-model")
    assert _score(ens, y, "language-model", 0)["score"] <= min(m.val for m in members) + 1e-9
    c = S.check_gain(members, {}, w, ens, y, "language-model", 0, "greedy", 0, rows)
    assert c.evidence["best_member"] == "good" and c.evidence["gain"] >= 0
    assert c.evidence["loss_gain"]["resampled"] == "6 val documents"


def test_language_model_loss_takes_soft_next_token_targets():
    from recipe import tasks

    lm = tasks.get("language-model")
    torch.manual_seed(0)
    out, y = torch.randn(3, 4, 6), torch.randint(0, 6, (3, 4))
    hard = lm.loss(out, y)
    soft = lm.loss(out, torch.nn.functional.one_hot(y, 6).float())     # what distillation trains on
    assert float(soft) == pytest.approx(float(hard), rel=1e-6)


CLASSES = """\
name: tcl
seed: 0
task: text-classification
data: {{source: {source}, text: text, target: label, block_size: 24, split: {{val: 0.2, test: 0.2}}}}
model: {{kind: gpt, n_layer: 1, n_head: 2, n_embd: 16}}
train: {{optimizer: adamw, lr: 3.0e-3, batch_size: 16, epochs: 3}}
tune: {{trials: 2}}
ensemble: {{top_k: 2}}
checks:
  tune.noise: {{seeds: 2, top: 2, reason: "fast test"}}
  ensemble.gain: {{severity: warn, reason: "a 3-epoch classifier of 72 documents: members can be one model"}}
"""


def test_text_classification_tunes_the_higher_way_and_tests_over_documents(tmp_path):
    """The other text task through tune and ensemble: accuracy is maximized, one row is one document, so the
    test interval resamples the 24 test documents; there is no n-gram comparison (no token streams)."""
    import csv

    rng = np.random.default_rng(0)
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(120):
            word = "".join(rng.choice(list("abcdefghij"), 6))
            w.writerow([word * 4, "has_a" if "a" in word[:3] else "no_a"])
    cfg = tmp_path / "tcl.yaml"
    cfg.write_text(CLASSES.format(source=tmp_path / "t.csv"))
    runs = tmp_path / "runs"
    write_chosen(cfg, runs, model=True)
    assert invoke("tune", cfg, "--runs", runs, "--force", "-q").exit_code == 0
    art = json.loads((runs / "tcl" / "tune" / "tune.json").read_text())
    assert art["direction"] == "maximize" and art["metric"] == "accuracy" and art["batch"]["size"] == 1
    top = [t["val"] for t in art["top"]]
    assert top == sorted(top, reverse=True)                     # the highest accuracy ranks first
    r = invoke("ensemble", cfg, "--runs", runs, "--force", "-q")
    assert r.exit_code == 0, r.stdout + r.stderr
    rec = record(runs, "tcl", "ensemble")
    test = check(rec, "ensemble.test")
    assert test["evidence"]["bootstrap"] == {"resampled": "documents", "n_documents": 24}
    assert "ensemble.beats-ngram" not in {c["id"] for c in rec["checks"]}
    ens = json.loads((runs / "tcl" / "ensemble" / "ensemble.json").read_text())
    assert ens["best_member"] == max(ens["candidates"], key=lambda c: (c["val"], -c["val_loss"]))["name"]


def test_a_language_model_worse_than_the_ngram_on_val_keeps_the_test_split_sealed(tmp_path):
    """Real text (the smallest language-reference topics) and a GPT trained for one epoch: KN 5-gram is far
    better on val, so ensemble.beats-ngram fails there, the test split is not opened and no look is spent."""
    from tests.text import corpus

    topics = corpus.clean_topics()
    small = sorted(topics, key=lambda k: len(topics[k]))[:24]
    source = corpus.write_folder(tmp_path / "topics", {k: topics[k] for k in small})
    cfg = text_config(tmp_path, epochs=1)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "docs"), str(source)) + GAIN_CAP)
    runs = tmp_path / "runs"
    write_chosen(cfg, runs, model=True)
    write_tune(cfg, runs)
    r = invoke("ensemble", cfg, "--runs", runs, "--force", "-q")
    assert r.exit_code == 1
    rec = record(runs, "tt", "ensemble")
    beats = check(rec, "ensemble.beats-ngram")
    ev = beats["evidence"]
    assert beats["status"] == "fail" and ev["decided_on"] == "val" and "test stays sealed" in beats["title"]
    assert ev["final_val_loss"] > ev["ngram_val"][ev["best_ngram"]] + 0.5 and ev["best_ngram"] == "kn5gram"
    assert check(rec, "ensemble.test")["status"] == "skip" and rec["metrics"]["test_opened"] is False
    assert not (runs / "tt" / "test_looks.json").exists()
    # capped (as a user who ships anyway would), the look is taken and test's verdict replaces val's
    cfg.write_text(cfg.read_text() + '  ensemble.beats-ngram: {severity: warn, reason: "ship it anyway"}\n')
    assert invoke("ensemble", cfg, "--runs", runs, "--force", "-q").exit_code == 0
    rec = record(runs, "tt", "ensemble")
    beats = [c for c in rec["checks"] if c["id"] == "ensemble.beats-ngram"]
    assert len(beats) == 1 and beats[0]["status"] == "warn" and beats[0]["evidence"]["overridden"]["from"] == "fail"
    assert beats[0]["evidence"]["gain"]["mean"] < 0 and "decided_on" not in beats[0]["evidence"]
    assert len(json.loads((runs / "tt" / "test_looks.json").read_text())) == 1


def test_the_test_check_reads_a_val_loss_below_the_test_interval_as_val_overfit():
    from recipe import tasks
    from recipe.stages.ensemble.sealed_test import check_test

    result = {"score": 1.3, "ci95": [1.2, 1.4], "metric": "loss (nats/token)", "rows": 40, "others": {},
              "perplexity": math.exp(1.3), "perplexity_ci95": [math.exp(1.2), math.exp(1.4)],
              "bootstrap": {"resampled": "documents", "n_documents": 6}}
    lm = tasks.get("language-model")
    flattering = check_test(result, 1.0, "ensemble", 0, None, None, lm)      # val loss far below test's interval
    assert flattering.status == "warn" and "worse than val 1.0000: val was overfit by selection" in flattering.title
    assert check_test(result, 1.3, "ensemble", 0, None, None, lm).status == "pass"
    assert check_test(result, 1.6, "ensemble", 0, None, None, lm).status == "pass"  # test better than val
    assert "over 6 test documents), perplexity 3.669" in flattering.title
