"""recipe predict on text (issue 19 item 7): seeded sampling from a language model, per-document loss, labels for
text classification; the final model is one trained here and saved as ensemble saves it (tests/text/final_model)."""
import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import invoke
from tests.text import final_model as F


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    cfg, runs, ds = F.make(root, members=2, final="ensemble")
    return cfg, runs, ds, root


def _sample(lm, *extra):
    cfg, runs, _, _ = lm
    return invoke("predict", cfg, "--runs", runs, "--prompt", "The ", "--tokens", "60", *extra)


def test_same_seed_same_text_other_seed_other_text(lm):
    a, b, c = _sample(lm, "--seed", "7", "--json"), _sample(lm, "--seed", "7", "--json"), _sample(lm, "--seed", "8",
                                                                                                   "--json")
    assert a.exit_code == b.exit_code == c.exit_code == 0, (a, c)
    assert a.json == b.json and a.json["continuation"] != c.json["continuation"]
    assert set(a.json) == {"prompt", "continuation", "tokens", "temperature", "top_k", "seed"}
    assert (a.json["prompt"], a.json["tokens"], a.json["temperature"], a.json["top_k"], a.json["seed"]) == \
        ("The ", 60, 0.8, 40, 7)
    assert len(a.json["continuation"]) == 60           # char tokenizer: one character per token
    plain = _sample(lm, "--seed", "7")
    assert plain.stdout == "The " + a.json["continuation"] + "\n"
    assert "sampled 60 tokens from the ensemble of lm (temperature 0.8, top-k 40, seed 7)" in plain.stderr


def test_the_default_seed_is_the_configs(lm):
    assert _sample(lm, "--json").json == _sample(lm, "--seed", "0", "--json").json


def _greedy(lm, prompt, n):
    """The argmax continuation computed here from the two members' averaged probabilities."""
    from recipe import config
    from recipe import predict as P
    from recipe import predict_text as PT
    from recipe.workspace import Workspace

    cfg_path, runs, ds, _ = lm
    cfg = config.load(cfg_path, [])
    ws = Workspace(runs, cfg.name)
    final = PT.load(cfg, ws, P.load_final(ws, cfg.model_dump(mode="json")))
    assert len(final.models) == 2 and [w for _, w in final.models] == [0.5, 0.5]
    ids = list(ds.tokenizer.encode(prompt))
    with torch.no_grad():
        for _ in range(n):
            x = torch.tensor([ids[-ds.block_size:]])
            p = sum(torch.softmax(m(x)[0, -1], -1) for m, _ in final.models) / 2
            ids.append(int(p.argmax()))
    return ds.tokenizer.decode(ids[len(prompt):])


def test_top_k_1_and_a_tiny_temperature_are_greedy_and_the_context_is_cropped(lm):
    want = _greedy(lm, "The ", 60)
    for extra in (("--top-k", "1", "--seed", "1"), ("--top-k", "1", "--seed", "2"), ("--temperature", "1e-6",)):
        r = _sample(lm, *extra, "--json")
        assert r.exit_code == 0, r
        assert r.json["continuation"] == want, extra
    # a prompt longer than block_size (16) is cropped to its last 16 tokens: same continuation as those alone
    cfg, runs, ds, _ = lm
    text = ds.docs["train"].texts[0]
    long, tail = text[:100], text[84:100]
    a = invoke("predict", cfg, "--runs", runs, "--prompt", long, "--tokens", "30", "--seed", "3", "--json")
    b = invoke("predict", cfg, "--runs", runs, "--prompt", tail, "--tokens", "30", "--seed", "3", "--json")
    assert a.exit_code == b.exit_code == 0, a
    assert a.json["continuation"] == b.json["continuation"] and a.json["prompt"] == long


def test_best_single_and_student_apply_their_own_checkpoint(lm):
    """final: best_single applies best.pt (member 0 here), student its student.pt (member 1's weights here):
    each scores the val text with that model's own loss."""
    from recipe import config, models
    from recipe.engine import train as E

    cfg, runs, ds, root = lm
    text, n = _cut_val_text(ds)
    (root / "val_cut.txt").write_text(text, encoding="utf-8")
    x, y = torch.from_numpy(ds.val.x), torch.from_numpy(ds.val.y)
    want = []
    for i in (0, 1):
        model = models.create(config.load(cfg, []), ds, 0)
        model.load_state_dict(E.load_checkpoint(runs / "lm" / "ensemble" / f"members/{i}.pt")["state_dict"])
        want.append(float(torch.nn.functional.cross_entropy(E.predict(model, x).transpose(1, 2), y)))
    got = {}
    try:
        for final, extra in (("best_single", {}), ("student", {"student": {"checkpoint": "members/1.pt",
                                                                           "overrides": {}}})):
            F.rewrite(runs, "lm", final=final, **extra)
            r = invoke("predict", cfg, root / "val_cut.txt", "--runs", runs, "--json")
            assert r.exit_code == 0, r
            got[final] = r.json["loss"]
            assert f"with the {final.replace('_', ' ')} of lm" in r.stderr
    finally:
        F.rewrite(runs, "lm", final="ensemble", student=None)
    assert got["best_single"] == pytest.approx(want[0], rel=1e-5)
    assert got["student"] == pytest.approx(want[1], rel=1e-5)
    assert abs(want[0] - want[1]) > 1e-4


@pytest.mark.parametrize("option, value, message", [
    ("--tokens", "0", "--tokens must be >= 1 (got 0)"),
    ("--temperature", "0", "--temperature must be a finite number > 0 (got 0.0)"),
    ("--temperature", "-1", "--temperature must be a finite number > 0 (got -1.0)"),
    ("--top-k", "0", "--top-k must be >= 1 (got 0)"),
])
def test_bad_sampling_options_exit_2_naming_the_option(lm, option, value, message):
    r = _sample(lm, option, value)
    assert r.exit_code == 2 and message in r.stderr, r


def test_a_character_train_never_had_is_named(lm):
    cfg, runs, ds, _ = lm
    assert "€" not in ds.tokenizer.index
    r = invoke("predict", cfg, "--runs", runs, "--prompt", "price: 5€", "--tokens", "5")
    assert r.exit_code == 2, r
    assert "--prompt: character(s) '€' (U+20AC) are not in the char tokenizer's vocabulary" in r.stderr
    assert "data.tokenizer: byte or bpe" in r.stderr
    empty = invoke("predict", cfg, "--runs", runs, "--prompt", "", "--tokens", "5")
    assert empty.exit_code == 2 and "--prompt is empty" in empty.stderr


def test_byte_tokenizer_samples_any_prompt(tmp_path):
    cfg, runs, ds = F.make(tmp_path, name="bytes", tokenizer="byte", epochs=1)
    r = invoke("predict", cfg, "--runs", runs, "--prompt", "price: 5€ ü", "--tokens", "12", "--seed", "0", "--json")
    assert r.exit_code == 0, r
    assert r.json["tokens"] == 12 and r.json["prompt"] == "price: 5€ ü"
    again = invoke("predict", cfg, "--runs", runs, "--prompt", "price: 5€ ü", "--tokens", "12", "--seed", "0", "--json")
    assert again.json == r.json


def _cut_val_text(ds, windows=None):
    """The val split's stream as text, cut to whole windows: scoring it as one document reproduces ds.val."""
    n = windows or len(ds.val.x)
    stream = "".join(ds.docs["val"].texts)
    return stream[:n * ds.block_size + 1], n


def test_scoring_val_text_reproduces_the_ensembles_val_loss(lm):
    from recipe.engine import train as E

    cfg, runs, ds, root = lm
    text, n = _cut_val_text(ds)
    (root / "val.txt").write_text(text, encoding="utf-8")
    out = root / "scores.csv"
    r = invoke("predict", cfg, root / "val.txt", "--runs", runs, "--out", out, "--json")
    assert r.exit_code == 0, r
    # the expected loss, computed here: the members' probabilities averaged on the val windows
    art = json.loads((runs / "lm" / "ensemble" / "ensemble.json").read_text())
    from recipe import config
    from recipe import predict as P
    from recipe import predict_text as PT
    from recipe.workspace import Workspace

    c = config.load(cfg, [])
    final = PT.load(c, Workspace(runs, "lm"), art)
    x, y = torch.from_numpy(ds.val.x), torch.from_numpy(ds.val.y)
    p = sum(torch.softmax(E.predict(m, x), -1) for m, _ in final.models) / 2
    want = float(-torch.log(p.gather(-1, y.unsqueeze(-1))).mean())
    assert r.json["loss"] == pytest.approx(want, rel=1e-5)
    assert r.json["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    assert r.json["predicted_tokens"] == n * ds.block_size and r.json["documents"] == 1
    lines = out.read_text().splitlines()
    assert lines[0] == "document,loss,perplexity,tokens,predicted_tokens,unknown_tokens"
    cells = lines[1].split(",")
    assert cells[0] == "val.txt" and float(cells[1]) == pytest.approx(want, rel=1e-5)
    assert int(cells[3]) == n * ds.block_size + 1
    assert f"loss {want:.4f} nats/token" in r.stderr
    # one member alone scores worse or better, but not the same: the ensemble averaged probabilities
    single = float(torch.nn.functional.cross_entropy(E.predict(final.models[0][0], x).transpose(1, 2), y))
    assert abs(single - want) > 1e-4
    assert max(m["val"] for m in art["members"]) > want - 0.5      # same scale as the members' val loss


def test_a_folder_and_a_jsonl_give_one_row_per_document(lm):
    cfg, runs, ds, root = lm
    folder = root / "docs"
    folder.mkdir()
    texts = ds.docs["val"].texts[:3]
    for i, t in enumerate(texts):
        (folder / f"d{i}.txt").write_text(t, encoding="utf-8")
    (folder / "short.txt").write_text("a", encoding="utf-8")
    r = invoke("predict", cfg, folder, "--runs", runs, "--json")
    assert r.exit_code == 0, r
    rows = r.json["scores"]
    assert [s["document"] for s in rows] == ["d0.txt", "d1.txt", "d2.txt", "short.txt"]
    assert [s["tokens"] for s in rows] == [len(t) for t in texts] + [1]
    assert rows[3]["loss"] is None and rows[3]["predicted_tokens"] == 0          # nothing to predict
    total = sum(s["loss"] * s["predicted_tokens"] for s in rows[:3]) / sum(s["predicted_tokens"] for s in rows[:3])
    assert r.json["loss"] == pytest.approx(total, rel=1e-9)
    jl = root / "docs.jsonl"
    jl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    # trained on a .txt file, the model has no data.text: a table's documents are its column 'text'
    j = invoke("predict", cfg, jl, "--runs", runs, "--json")
    assert j.exit_code == 0, j
    assert [s["document"] for s in j.json["scores"]] == ["docs.jsonl:0", "docs.jsonl:1", "docs.jsonl:2"]
    assert [s["loss"] for s in j.json["scores"]] == [s["loss"] for s in rows[:3]]
    (root / "other.jsonl").write_text(json.dumps({"body": texts[0]}) + "\n", encoding="utf-8")
    other = invoke("predict", cfg, root / "other.jsonl", "--runs", runs)
    assert other.exit_code == 2 and "data.text column 'text' not found (columns: body)" in other.stderr, other
    # data.text is part of the data section: naming another column makes the ensemble record stale
    stale = invoke("predict", cfg, root / "other.jsonl", "--runs", runs, "-o", "data.text=body")
    assert stale.exit_code == 3 and "stale" in stale.stderr, stale


def test_strict_refuses_documents_with_characters_train_never_had(lm):
    cfg, runs, ds, root = lm
    folder = root / "strict"
    folder.mkdir()
    (folder / "ok.txt").write_text(ds.docs["val"].texts[0][:200], encoding="utf-8")
    (folder / "euro.txt").write_text(ds.docs["train"].texts[0][:40] + "€€", encoding="utf-8")
    loose = invoke("predict", cfg, folder, "--runs", runs, "--json")
    assert loose.exit_code == 0, loose
    assert {s["document"]: s["unknown_tokens"] for s in loose.json["scores"]}["euro.txt"] == 2
    strict = invoke("predict", cfg, folder, "--runs", runs, "--strict", "--out", root / "strict.csv")
    assert strict.exit_code == 2, strict
    assert "1 document(s) hold characters train never had (euro.txt: '€'); --strict refuses them" in strict.stderr
    assert not (root / "strict.csv").exists()


def test_undecodable_bytes_are_named_by_file_and_offset(lm):
    cfg, runs, _, root = lm
    bad = root / "bad.txt"
    bad.write_bytes(b"def f():\n    return 1\n\xff\xfe oops\n")
    r = invoke("predict", cfg, bad, "--runs", runs)
    assert r.exit_code == 2, r
    assert f"{bad}: not UTF-8 text at byte offset 22 (line 3: ff)" in r.stderr
    assert invoke("predict", cfg, root / "nope.txt", "--runs", runs).exit_code == 2


def test_a_tokenizer_swapped_after_training_is_refused(lm, tmp_path):
    """The tokenizer predict encodes with must be the one the final model was trained with (its digest)."""
    cfg, runs, ds, root = lm
    tok_path = runs / "lm" / "inspect" / "tokenizer.json"
    saved = tok_path.read_text()
    state = json.loads(saved)
    state["chars"] = state["chars"][::-1]
    tok_path.write_text(json.dumps(state))
    try:
        r = _sample(lm)
        assert r.exit_code == 3, r
        assert "is not the one the final model was trained with" in r.stderr
    finally:
        tok_path.write_text(saved)
    assert _sample(lm).exit_code == 0


def test_prompt_without_an_ensemble_is_a_gate_error(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("name: x\ntask: language-model\ndata: {source: a.txt}\n")
    r = invoke("predict", cfg, "--runs", tmp_path / "runs", "--prompt", "hi")
    assert r.exit_code == 3 and "ensemble has not run" in r.stderr, r


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("tc")
    cfg, runs, ds = F.make(root, name="tc", task="text-classification", epochs=4)
    return cfg, runs, ds, root


def test_text_classification_labels_documents_with_probabilities(classifier):
    cfg, runs, ds, root = classifier
    val = ds.docs["val"]
    lines = ["text,topic"] + ['"' + t.replace('"', '""') + '",' + lab for t, lab in zip(val.texts, val.labels)]
    (root / "val.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "labels.csv"
    r = invoke("predict", cfg, root / "val.csv", "--runs", runs, "--out", out, "--json")
    assert r.exit_code == 0, r
    rows = out.read_text().splitlines()
    assert rows[0] == "document,prediction,p_atom-identifiers,p_calls,tokens_cut"
    probs = np.array([[float(v) for v in row.split(",")[2:4]] for row in rows[1:]])
    assert probs.shape == (len(val.texts), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    predicted = [row.split(",")[1] for row in rows[1:]]
    assert predicted == [ds.classes[i] for i in probs.argmax(1)] == r.json["predictions"]
    art = json.loads((runs / "tc" / "ensemble" / "ensemble.json").read_text())
    assert r.json["accuracy"] == pytest.approx(art["best"]["val"], abs=1e-6)   # the recorded val accuracy (float32)
    assert r.json["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, val.labels)]))
    refused = invoke("predict", cfg, "--runs", runs, "--prompt", "x")
    assert refused.exit_code == 2 and "--prompt samples from a language model" in refused.stderr
