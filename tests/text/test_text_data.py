"""Text data (issue 19 item 1-3, 5): reading, splitting by document, tokenizers fitted on train, windows, keys."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipe import config
from recipe.data import SealedTestError
from recipe.data.text import build, split_documents, tokenize, wants_text
from recipe.errors import ConfigError, DataError
from tests.text import corpus
from tests.text.helpers import cfg, load


@pytest.fixture(scope="module")
def clean():
    return corpus.clean_topics()


def test_folder_one_document_per_file_split_by_document_seeded(tmp_path, clean):
    folder = corpus.write_folder(tmp_path / "docs", clean)
    ds = load(source=folder, block_size=32)
    names = {s: ds.docs[s].names for s in ("train", "val", "test")}
    assert sum(map(len, names.values())) == len(clean) == 43
    assert not (set(names["train"]) & set(names["val"])) and not (set(names["train"]) & set(names["test"]))
    assert (len(names["val"]), len(names["test"])) == (6, 6)   # round(43 * 0.15) each
    again = load(source=folder, block_size=32)
    assert again.docs["val"].names == names["val"] and again.fingerprint == ds.fingerprint
    moved = split_documents(cfg(seed=1, source=folder))[1]["val"].names
    assert moved != names["val"]                                   # the seed moves documents, not characters
    assert len(ds.files) == 43 and all(len(v) >= 16 for v in ds.files.values())   # file -> digest, for the gate


def test_single_file_is_cut_into_contiguous_chunks_never_interleaved(tmp_path, clean):
    path = corpus.write_file(tmp_path / "ref.txt", clean)
    whole = path.read_text()
    ds = load(source=path, chunk_chars=1000, block_size=16)
    chunks = {}
    for s in ("train", "val", "test"):
        for name, t in zip(ds.docs[s].names, ds.docs[s].texts):
            chunks[int(name.split("#")[1])] = (s, t)
    assert len(chunks) == -(-len(whole) // 1000) == 209
    assert "".join(chunks[i][1] for i in sorted(chunks)) == whole          # nothing lost, nothing reordered
    assert all(len(chunks[i][1]) == 1000 for i in sorted(chunks)[:-1])
    # no window of val text sits in train: every val window is cut from val chunks only
    val_text = "".join(ds.docs["val"].texts)
    w = ds.tokenizer.decode(ds.val.x[5])
    assert w in val_text and w not in "".join(ds.docs["train"].texts)


def test_language_model_windows_are_next_token_targets(tmp_path, clean):
    ds = load(source=corpus.write_folder(tmp_path / "d", clean), block_size=64)
    assert ds.task == "language-model" and ds.train.x.dtype == np.int64 and ds.train.y.dtype == np.int64
    n = (len(ds.streams["train"]) - 1) // 64
    assert ds.train.x.shape == ds.train.y.shape == (n, 64)
    assert (ds.train.x[:, 1:] == ds.train.y[:, :-1]).all() and (ds.train.y[:-1, -1] == ds.train.x[1:, 0]).all()
    assert np.array_equal(ds.train.x.ravel(), ds.streams["train"][:n * 64])
    assert ds.num_outputs == ds.vocab_size == ds.tokenizer.vocab_size and ds.pad_id is None
    assert ds.num_features == 64 and ds.shape == (64,)
    assert abs(sum(ds.class_priors()) - 1) < 1e-9 and len(ds.class_priors()) == ds.vocab_size
    with pytest.raises(SealedTestError):
        ds.test
    assert ds.open_test("ensemble").x.shape[1] == 64 and ds.test_opened


def test_char_vocabulary_from_train_only_with_an_unknown_id(tmp_path):
    for s, t in (("train", "abcabc abc " * 20), ("val", "abc ΩΩ abc " * 20), ("test", "cab " * 40)):
        (tmp_path / s).mkdir()
        (tmp_path / s / "a.txt").write_text(t)
    ds = load(train=tmp_path / "train", val=tmp_path / "val", test=tmp_path / "test", block_size=8)
    assert ds.tokenizer.chars == [" ", "a", "b", "c"] and ds.vocab_size == 5
    ids = ds.doc_tokens["val"][0]
    assert (ids == 0).sum() == 40 and ds.tokenizer.decode(ids[4:6]) == "\ufffd\ufffd"


def test_byte_tokenizer_never_has_an_unknown(tmp_path):
    for s, t in (("train", "plain ascii " * 30), ("val", "naïve Ωmega 🐍 " * 20), ("test", "x" * 100)):
        (tmp_path / s).mkdir()
        (tmp_path / s / "a.txt").write_text(t)
    ds = load(train=tmp_path / "train", val=tmp_path / "val", test=tmp_path / "test", tokenizer="byte", block_size=8)
    assert ds.vocab_size == 256 and ds.tokenizer.unk_id is None
    assert ds.tokenizer.decode(ds.doc_tokens["val"][0]) == "naïve Ωmega 🐍 " * 20


def test_bpe_trained_on_train_only_is_an_artifact_in_the_fingerprint(tmp_path, clean):
    folder = corpus.write_folder(tmp_path / "d", clean)
    ds = load(source=folder, tokenizer="bpe", vocab_size=400, block_size=32)
    tok = ds.tokenizer
    assert tok.kind == "bpe" and tok.vocab_size == 400 and tok.fitted_on == ("train",)
    assert ds.encoding["fitted_on"] == ["train"] and ds.encoding["tokenizer"]["fitted_on"] == ["train"]
    # the same merges come from the train documents alone, and the JSON artifact encodes the same ids
    alone = tokenize.fit("bpe", ds.docs["train"].texts, 400)
    assert alone.digest == tok.digest == ds.encoding["tokenizer_digest"]
    back = tokenize.from_json(json.loads(json.dumps(ds.encoding["tokenizer"])))
    assert np.array_equal(back.encode(ds.docs["val"].texts[0]), ds.doc_tokens["val"][0])
    bigger = load(source=folder, tokenizer="bpe", vocab_size=600, block_size=32)
    assert bigger.fingerprint != ds.fingerprint and bigger.tokenizer.vocab_size == 600
    everything = build(cfg(source=folder, tokenizer="bpe", vocab_size=400, block_size=32),
                       *split_documents(cfg(source=folder)), fitted_on=("train", "val", "test"))
    assert everything.tokenizer.fitted_on == ("train", "val", "test") and everything.fingerprint != ds.fingerprint


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_table_with_text_and_label_columns_is_text_classification(tmp_path, fmt):
    rng = np.random.default_rng(0)
    rows = [{"body": ("good " if i % 2 else "bad ") * int(rng.integers(1, 30)), "label": ["neg", "pos"][i % 2]}
            for i in range(120)]
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["body", "label"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.table({"body": [r["body"] for r in rows], "label": [r["label"] for r in rows]}), path)
    ds = load(source=path, text="body", block_size=40)
    assert ds.task == "text-classification" and ds.classes == ["neg", "pos"]
    assert ds.pad_id == ds.tokenizer.vocab_size and ds.vocab_size == ds.pad_id + 1 and ds.num_outputs == 2
    assert ds.train.x.shape == (len(ds.train.y), 40) and sum(len(getattr(ds, s).y) for s in ("train", "val")) + \
        len(ds.raw_test().y) == 120
    i = int(np.flatnonzero(ds.extra["train_lengths"] < 40)[0])
    k = int(ds.extra["train_lengths"][i])
    assert (ds.train.x[i, k:] == ds.pad_id).all() and (ds.train.x[i, :k] != ds.pad_id).all()
    assert ds.tokenizer.decode(ds.train.x[i, :k]) == ds.docs["train"].texts[i]
    assert np.bincount(ds.val.y).tolist() == [9, 9]                 # stratified by label


def test_table_errors_name_file_and_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("body,label\nhello,a\nworld,b\nagain,a\n")
    with pytest.raises(DataError, match=r"t\.csv: a \.csv file needs data\.text"):
        load(source=path)
    with pytest.raises(DataError, match=r"t\.csv: data\.text column 'text' not found \(columns: body, label\)"):
        load(source=path, text="text")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"b\.jsonl: line 2 is not JSON"):
        load(source=bad, text="text")


def test_undecodable_byte_names_file_and_offset(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"d{i}.txt").write_text("fine text\n" * 10)
    (folder / "d2.txt").write_bytes(b"fine text\n" * 3 + b"caf\xe9 au lait\n")
    with pytest.raises(DataError) as e:
        load(source=folder)
    msg = str(e.value)
    assert str(folder / "d2.txt") in msg and "byte offset 33 (line 4: e9)" in msg and "not UTF-8" in msg


def test_too_few_tokens_for_a_window_and_too_few_documents(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 300)
    with pytest.raises(DataError, match=r"the val split holds 50 tokens, fewer than data.block_size \+ 1 = 129"):
        load(source=path, chunk_chars=50, block_size=128)
    with pytest.raises(DataError, match=r"short\.txt: 2 document\(s\) cannot be split.*lower data\.chunk_chars"):
        load(source=path, chunk_chars=150)


def test_text_keys_validated_with_key_paths():
    def err(**data):
        with pytest.raises(ConfigError) as e:
            config.validate({"name": "t", "data": {"source": "a.txt", **data}})
        return str(e.value)

    assert "data.vocab_size: must exceed 256 for data.tokenizer: bpe" in err(tokenizer="bpe", vocab_size=200)
    assert "data.block_size: must be >= 1" in err(block_size=0)
    assert "data.chunk_chars: must be >= 1" in err(chunk_chars=0)
    assert "data.tokenizer: must be one of char, byte, bpe (got 'word')" in err(tokenizer="word")
    assert "data.text: must name the column" in err(text=" ")
    d = config.validate({"name": "t", "data": {"source": "a.txt"}}).data
    assert (d.tokenizer, d.vocab_size, d.block_size, d.chunk_chars, d.text) == ("char", 512, 128, 2000, None)


def test_wants_text(tmp_path):
    (tmp_path / "a.txt").write_text("hi")
    (tmp_path / "t.csv").write_text("a,label\n1,2\n")
    assert wants_text(cfg(source=tmp_path / "a.txt")) and wants_text(cfg(source=tmp_path))
    assert wants_text(cfg(source=tmp_path / "t.csv", text="a"))
    assert not wants_text(cfg(source=tmp_path / "t.csv")) and not wants_text(cfg(source="builtin:iris"))


def test_explicit_train_and_val_split_test_off_train(tmp_path, clean):
    names = sorted(clean)
    corpus.write_folder(tmp_path / "train", {k: clean[k] for k in names[:37]})
    corpus.write_folder(tmp_path / "val", {k: clean[k] for k in names[37:]})
    ds = load(train=tmp_path / "train", val=tmp_path / "val", block_size=32)
    tr, va, te = (set(ds.docs[s].names) for s in ("train", "val", "test"))
    assert va == {k + ".txt" for k in names[37:]} and len(te) == round(37 * 0.15) == 6
    assert len(tr) == 31 and not tr & te and tr | te == {k + ".txt" for k in names[:37]}


def test_tokenizer_artifact_round_trips(tmp_path, clean):
    from recipe.data.text import load_tokenizer, save_tokenizer

    for kind in ("char", "byte", "bpe"):
        ds = load(source=corpus.write_folder(tmp_path / "d", clean), tokenizer=kind, block_size=32)
        back = load_tokenizer(save_tokenizer(ds, tmp_path / f"{kind}.json"))
        assert back.digest == ds.tokenizer.digest and back.fitted_on == ("train",)
        assert np.array_equal(back.encode(ds.docs["test"].texts[0]), ds.doc_tokens["test"][0])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match=r"broken\.json: unreadable tokenizer artifact"):
        load_tokenizer(tmp_path / "broken.json")


def test_ngram_hashes_agree_with_brute_force_and_never_cross_documents():
    from numpy.lib.stride_tricks import sliding_window_view

    from recipe.data.text.ngrams import ngram_hashes, shared_ngrams

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=3000)
    b = np.r_[rng.integers(0, 5, size=100), a[500:800], rng.integers(0, 5, size=50)]
    seen = {tuple(r) for r in sliding_window_view(a, 50)}
    truth = np.array([tuple(r) in seen for r in sliding_window_view(b, 50)])
    ha, _, _ = ngram_hashes([a], 50)
    hb, _, pb = ngram_hashes([b], 50)
    assert np.array_equal(np.isin(hb, ha), truth) and truth.sum() >= 251 and len(np.unique(ha)) == len(seen)
    found = shared_ngrams([a], [b], 50)
    assert found["shared"] == truth.sum() and found["examples"][0][:2] == (0, int(np.flatnonzero(truth)[0]))
    # two documents whose junction would form the n-gram: none is counted
    h, d, _ = ngram_hashes([a[:30], a[30:60]], 50)
    assert len(h) == 0 and not shared_ngrams([a[:60]], [a[:30], a[30:60]], 50)["shared"]


def test_a_table_task_on_text_is_refused_with_the_text_tasks_named(tmp_path):
    (tmp_path / "a.txt").write_text("some text " * 500)
    c = config.validate({"name": "t", "task": "regression", "data": {"source": str(tmp_path / "a.txt")}})
    from recipe.data.text import load as load_text

    with pytest.raises(DataError, match=r"task 'regression' does not fit text data \(use language-model or "
                                        r"text-classification\)"):
        load_text(c)
