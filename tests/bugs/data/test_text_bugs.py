"""Planted text-data bugs, each caught by its inspect check id (issue 19 item 4), on the clean pydoc topics."""
import numpy as np
import pytest

from recipe import checks as C
from recipe.data import Split
from recipe.data.text import build, split_documents
from recipe.data.text.checks import check_decode, check_lengths, check_windows
from tests.text import corpus
from tests.text.helpers import by_id, cfg, load


@pytest.fixture(scope="module")
def clean():
    return corpus.clean_topics()


def _splits(tmp_path, clean, edit=None):
    """train/val/test folders from the clean topics (in name order: 31/6/6), after `edit(dict of dicts)`."""
    names = sorted(clean)
    parts = {"train": {k: clean[k] for k in names[:31]}, "val": {k: clean[k] for k in names[31:37]},
             "test": {k: clean[k] for k in names[37:]}}
    if edit:
        edit(parts)
    for s, docs in parts.items():
        corpus.write_folder(tmp_path / s, docs)
    return {"train": tmp_path / "train", "val": tmp_path / "val", "test": tmp_path / "test"}


def test_clean_splits_pass_every_text_check(tmp_path, clean):
    checks = by_id(load(**_splits(tmp_path, clean), block_size=64))
    assert {k: c.status for k, c in checks.items()} == dict.fromkeys(
        ["data.decode", "data.vocab", "data.lengths", "data.empty", "data.duplicates", "data.leak", "data.windows"],
        "pass")


def test_val_document_copied_into_train_fails_leak_with_the_example(tmp_path, clean):
    def copy(parts):
        name = sorted(parts["val"])[0]
        parts["train"]["copy_of_" + name] = parts["val"][name]
    ds = load(**_splits(tmp_path, clean, copy), block_size=64)
    c = by_id(ds)["data.leak"]
    val_name = ds.docs["val"].names[0]
    assert c.status == "fail" and c.evidence["val_docs_in_train"] == 1 and c.evidence["test_docs_in_train"] == 0
    assert c.evidence["val_docs_in_train_examples"][0] == {"val": val_name, "train": "copy_of_" + val_name,
                                                           "text": c.evidence["val_docs_in_train_examples"][0]["text"]}
    assert c.title.startswith(f"1 val document(s) (16.7%) also in train (e.g. {val_name} ~ copy_of_{val_name})")
    assert "Deduplicate" in c.advice


def test_long_passage_of_val_pasted_into_train_fails_leak_on_ngrams(tmp_path, clean):
    def paste(parts):
        for name in sorted(parts["val"])[:3]:
            text = parts["val"][name]
            victim = sorted(parts["train"])[0]
            parts["train"][victim] += text[: len(text) // 2]      # half of three val documents, inside one train doc
    ds = load(**_splits(tmp_path, clean, paste), block_size=64)
    c = by_id(ds)["data.leak"]
    ng = c.evidence["val_ngrams_in_train"]
    assert c.status == "fail" and c.evidence["val_docs_in_train"] == 0 and c.evidence["ngram"] == 200
    assert ng["documents"] == 3 and 0.3 < ng["fraction"] < 0.55 and len(ng["examples"]) == 3
    victim = ds.docs["train"].names[0]
    assert all(e["train"] == victim for e in ng["examples"])
    val_text = "".join(ds.docs["val"].texts)
    assert ng["examples"][0]["ngram"].rstrip("…") in val_text
    assert f"of val's 200-token n-grams also occur in train (3 val documents)" in c.title


def test_bpe_leak_uses_50_token_ngrams(tmp_path, clean):
    def paste(parts):
        name = sorted(parts["test"])[0]
        parts["train"][sorted(parts["train"])[1]] += parts["test"][name]
    c = by_id(load(**_splits(tmp_path, clean, paste), tokenizer="bpe", block_size=64))["data.leak"]
    assert c.status == "fail" and c.evidence["ngram"] == 50 and c.evidence["test_ngrams_in_train"]["documents"] >= 1
    assert "50-token n-grams also occur in train" in c.title


def test_bad_byte_named_by_file_and_offset(tmp_path, clean):
    paths = _splits(tmp_path, clean)
    bad = paths["train"] / "zz_bad.txt"
    bad.write_bytes(b"ok line\n" * 5 + b"\xff\xfe broken\n" + b"ok\n" + b"caf\xe9\n")
    c = check_decode([str(p) for p in sorted(paths["train"].glob("*.txt"))])
    assert c.status == "fail" and c.evidence["places"] == 3 and c.evidence["files_scanned"] == 32
    assert c.evidence["examples"] == [{"file": str(bad), "byte_offset": 40, "line": 6, "bytes": "ff"},
                                      {"file": str(bad), "byte_offset": 41, "line": 6, "bytes": "fe"},
                                      {"file": str(bad), "byte_offset": 56, "line": 8, "bytes": "e9"}]
    assert c.title.startswith(f"3 place(s) in 1 file(s) are not UTF-8: {bad} at byte offset 40; {bad} at byte "
                              "offset 41")


def test_empty_and_whitespace_documents_named(tmp_path, clean):
    def blank(parts):
        parts["train"]["empty"] = ""
        parts["val"]["spaces"] = "  \n\t\n"
    c = by_id(load(**_splits(tmp_path, clean, blank), block_size=64))["data.empty"]
    assert c.status == "warn" and (c.evidence["train"], c.evidence["val"], c.evidence["test"]) == (1, 1, 0)
    assert c.evidence["train_examples"] == ["empty.txt"] and c.evidence["val_examples"] == ["spaces.txt"]
    assert c.title == "2 of 45 documents (4.4%) are empty or whitespace only (train: empty.txt; val: spaces.txt)"

    def many(parts):
        for i in range(5):
            parts["train"][f"blank{i}"] = "\n"
    assert by_id(load(**_splits(tmp_path / "b", clean, many), block_size=64))["data.empty"].status == "fail"


def test_duplicate_train_documents_warn(tmp_path, clean):
    def dup(parts):
        for name in sorted(parts["train"])[:3]:
            parts["train"]["again_" + name] = parts["train"][name]
    c = by_id(load(**_splits(tmp_path, clean, dup), block_size=64))["data.duplicates"]
    assert c.status == "warn" and c.evidence["copied_documents"] == 3 and c.evidence["documents"] == 34
    assert {e["document"] for e in c.evidence["examples"]} | {e["copies"] for e in c.evidence["examples"]} >= \
        {"again_" + n + ".txt" for n in sorted(clean)[:3]}


def test_tokenizer_fitted_on_all_splits_fails_vocab(tmp_path, clean):
    c0 = cfg(**_splits(tmp_path, clean), block_size=64)
    ds = build(c0, *split_documents(c0), fitted_on=("train", "val", "test"))
    c = by_id(ds)["data.vocab"]
    assert c.status == "fail" and c.evidence["fitted_on"] == ["train", "val", "test"]
    assert c.title == "the char tokenizer was fitted on train+val+test: val/test text shaped the vocabulary"


def test_val_in_another_alphabet_fails_vocab_naming_the_characters(tmp_path, clean):
    def greek(parts):
        parts["val"]["greek"] = "αβγδε ζηθ ικλμν " * 60
    before = by_id(load(**_splits(tmp_path / "a", clean), block_size=64))["data.vocab"]
    c = by_id(load(**_splits(tmp_path / "b", clean, greek), block_size=64))["data.vocab"]
    assert before.status == "pass" and before.evidence["val_unseen"] < 5
    assert c.status == "fail" and c.evidence["val_unseen"] - before.evidence["val_unseen"] == 780   # 13 letters x 60
    assert [ch for ch, _ in c.evidence["val_unseen_examples"]][:1] in (["α"], ["β"], ["γ"], ["δ"], ["ε"])
    assert c.evidence["val_unseen_examples"][0][1] == 60 and c.evidence["test_unseen_fraction"] < 0.001
    assert "of val tokens never seen in train" in c.title


def _broken(ds, y):
    ds.train = Split(ds.train.x, y, ds.train.rows)
    return ds


def test_windows_whose_targets_equal_the_inputs_fail(tmp_path, clean):
    ds = load(**_splits(tmp_path, clean), block_size=32)
    c = check_windows(_broken(ds, ds.train.x.copy()))
    assert c.status == "fail" and c.evidence["not_shifted"] == len(ds.train.x)
    assert c.evidence["targets_equal_inputs"] == len(ds.train.x)
    assert "targets are not the inputs shifted by one (first: window 0, targets equal the inputs)" in c.title


def test_windows_shifted_the_wrong_way_fail(tmp_path, clean):
    ds = load(**_splits(tmp_path, clean), block_size=32)
    s = ds.streams["train"]
    n = len(ds.train.x)
    y = s[2:n * 32 + 2].reshape(n, 32)        # off by one: targets two tokens ahead
    c = check_windows(_broken(ds, y))
    assert c.status == "fail" and c.evidence["not_shifted"] == n and c.evidence["targets_equal_inputs"] == 0
    assert c.evidence["discontinuous"] > 0.9 * (n - 1)   # not all: where two neighbouring tokens are equal


def test_window_sample_is_the_decoded_model_input(tmp_path, clean):
    ds = load(**_splits(tmp_path, clean), block_size=48)
    c = check_windows(ds)
    assert c.status == "pass" and len(c.evidence["sample"]) == 4
    for item in c.evidence["sample"]:
        i = item["window"]
        assert item["input"] == ds.tokenizer.decode(ds.train.x[i]) and len(item["input"]) == 48
        assert item["next_token"] == ds.tokenizer.decode(ds.train.y[i][-1:])
        assert f"--- window {i} ({item['document']})" in c.evidence["text_block"]


def _reviews(tmp_path, n=60, long=False):
    import csv

    path = tmp_path / "r.csv"
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            words = int(rng.integers(40, 80)) if long else int(rng.integers(1, 5))
            w.writerow([("fine " if i % 2 else "awful ") * words, i % 2])
    return path


def test_classification_padding_before_the_tokens_fails_windows(tmp_path):
    ds = load(source=_reviews(tmp_path), text="text", block_size=32)
    assert check_windows(ds).status == "pass"
    x = ds.train.x.copy()
    x[0] = np.roll(x[0], 5)                        # left-padded by mistake: pad ids before the document
    ds.train = Split(x, ds.train.y, ds.train.rows)
    c = check_windows(ds)
    assert c.status == "fail" and c.evidence["pad_inside"] == 1
    assert c.title == "1 document(s) with padding before their tokens end (first: row 0)"


def test_documents_cut_by_block_size_warn_lengths_and_histograms_are_png(tmp_path):
    ds = load(source=_reviews(tmp_path, long=True), text="text", block_size=64)
    c, fig = check_lengths(ds, C.thresholds("data.lengths"))
    assert c.status == "warn" and c.evidence["truncated_fraction"]["train"] == 1.0
    assert c.title == "100% of train documents are longer than data.block_size=64 tokens and cut"
    fig.savefig(tmp_path / "lengths.png")
    assert (tmp_path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wide = load(source=_reviews(tmp_path, long=True), text="text", block_size=512)
    assert check_lengths(wide, C.thresholds("data.lengths"))[0].status == "pass"


def test_language_model_with_too_few_val_windows_warns(tmp_path, clean):
    c, _ = check_lengths(load(**_splits(tmp_path / "a", clean), block_size=512), C.thresholds("data.lengths"))
    assert c.status == "pass" and c.evidence["val"]["windows"] >= 8

    def short_val(parts):
        parts["val"] = {"short": "".join(parts["val"].values())[:3000]}
    c, _ = check_lengths(load(**_splits(tmp_path / "b", clean, short_val), block_size=512),
                         C.thresholds("data.lengths"))
    assert c.status == "warn" and c.evidence["val"]["windows"] == 5    # (3000 - 1) // 512
    assert c.title == "val holds 5 windows (fewer than 8): its loss is noise"


def test_text_classification_label_checks_are_the_table_checks(tmp_path):
    import csv

    rng = np.random.default_rng(1)

    def write(name, spam, ham, extra=()):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            rows = [("spam", i) for i in range(spam)] + [("ham", i) for i in range(ham)]
            for label, i in rows:
                w.writerow([f"{name} {label} {i} " + " ".join(rng.choice(["buy", "now", "cheap", "hi"], 5)), label])
            w.writerows(extra)
        return tmp_path / name

    # train: 401 spam and 3 ham (0.75%), one text under both labels
    train = write("train.csv", 400, 2, [("the same text", "ham"), ("the same text", "spam")])
    ds = load(train=train, val=write("val.csv", 50, 1), test=write("test.csv", 50, 1), text="text", block_size=32)
    checks = by_id(ds)
    assert list(checks)[-3:] == ["data.label-conflict", "data.imbalance", "data.split-shift"]
    imb = checks["data.imbalance"]
    assert imb.status == "fail" and imb.evidence["rarest"] == "ham" and imb.evidence["counts"]["train"] == [3, 401]
    conflict = checks["data.label-conflict"]
    assert conflict.status == "warn" and conflict.evidence["groups"] == 1 and conflict.evidence["rows"] == 2
    assert conflict.evidence["example_train_rows"] == [402, 403]
    assert checks["data.split-shift"].status == "pass"


def test_inspect_loads_bad_bytes_as_replacement_and_data_decode_lists_them(tmp_path, clean):
    paths = _splits(tmp_path, clean)
    bad = paths["val"] / "bad.txt"
    bad.write_bytes(b"first line\n" + b"caf\xe9 cr\xe8me\n" * 40)
    from recipe.data.text import load as load_text
    from recipe.errors import DataError

    with pytest.raises(DataError, match=r"bad\.txt: not UTF-8 text at byte offset 14 \(line 2: e9\)"):
        load_text(cfg(**paths, block_size=64))
    ds = load_text(cfg(**paths, block_size=64), errors="replace")
    c = by_id(ds)["data.decode"]
    assert c.status == "fail" and c.evidence["places"] == 20    # scan_bytes stops at 20 places a file
    assert c.evidence["examples"][:2] == [{"file": str(bad), "byte_offset": 14, "line": 2, "bytes": "e9"},
                                          {"file": str(bad), "byte_offset": 18, "line": 2, "bytes": "e8"}]
    assert "\ufffd" in ds.docs["val"].texts[ds.docs["val"].names.index("bad.txt")]
