"""The text checks on real text that ships with Python (pydoc_data.topics): the topics as shipped overlap, and
data.leak says so with the passages; deduplicated, every text check passes with each tokenizer."""
import pytest

from tests.text import corpus
from tests.text.helpers import by_id, load

CHECK_IDS = ["data.decode", "data.vocab", "data.lengths", "data.empty", "data.duplicates", "data.leak", "data.windows"]


@pytest.fixture(scope="module")
def clean():
    return corpus.clean_topics()


def test_shipped_topics_overlap_and_leak_names_the_passages(tmp_path):
    ds = load(source=corpus.write_folder(tmp_path / "topics", corpus.topics()), block_size=64)
    c = by_id(ds)["data.leak"]
    assert c.status == "fail" and c.evidence["worst_fraction"] > 0.1
    pairs = [(e["test"], e["train"]) for e in c.evidence["test_ngrams_in_train"]["examples"]]
    assert pairs and all(name.endswith(".txt") for pair in pairs for name in pair)
    # each example is a 200-character passage that the two named topic files both contain
    texts = {n: t for s in ("train", "val", "test") for n, t in zip(ds.docs[s].names, ds.docs[s].texts)}
    for e in c.evidence["test_ngrams_in_train"]["examples"]:
        passage = e["ngram"].rstrip("…")
        assert passage in texts[e["test"]] and passage in texts[e["train"]]


def test_clean_topics_are_43_of_79_and_about_209k_characters(clean):
    assert len(corpus.topics()) == 79 and len(clean) == 43 and 200_000 < sum(map(len, clean.values())) < 220_000


@pytest.mark.parametrize("tokenizer", ["char", "byte", "bpe"])
@pytest.mark.parametrize("layout", ["folder", "file"])
def test_clean_real_text_passes_every_text_check(tmp_path, clean, tokenizer, layout):
    src = corpus.write_folder(tmp_path / "d", clean) if layout == "folder" else corpus.write_file(tmp_path / "r.txt", clean)
    ds = load(source=src, tokenizer=tokenizer, block_size=64)
    checks = by_id(ds)
    assert list(checks) == CHECK_IDS
    assert {k: c.status for k, c in checks.items()} == dict.fromkeys(CHECK_IDS, "pass"), \
        {k: c.title for k, c in checks.items() if c.status != "pass"}
    vocab = checks["data.vocab"].evidence
    assert vocab["val_unseen_fraction"] < 0.001 and vocab["fitted_on"] == ["train"]
    assert vocab["vocab_size"] == {"char": ds.tokenizer.vocab_size, "byte": 256, "bpe": 512}[tokenizer]
    assert checks["data.leak"].evidence["ngram"] == (50 if tokenizer == "bpe" else 200)
    assert checks["data.decode"].evidence["files_scanned"] == (43 if layout == "folder" else 1)
