"""Text is a registered data kind (issue 19): `recipe inspect` on configs/text-gpt.yaml's real text (43 leak-free
pydoc_data topics) runs the text checks and leaves tokenizer.json and lengths.png; a val topic copied into train
fails data.leak; a .txt table that names its target stays a table; text-classification is a registered task."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from recipe import config
from recipe.data import kinds
from recipe.data.text import load_tokenizer
from tests.conftest import check, invoke, record
from tests.text import corpus

ROOT = Path(__file__).resolve().parents[2]
TEXT_IDS = ["data.decode", "data.vocab", "data.lengths", "data.empty", "data.duplicates", "data.leak", "data.windows"]


@pytest.fixture(scope="module")
def clean():
    return corpus.clean_topics()


def _config(tmp_path: Path, **data) -> Path:
    """configs/text-gpt.yaml with its data section pointed at `data` (paths written under tmp_path)."""
    raw = yaml.safe_load((ROOT / "configs" / "text-gpt.yaml").read_text())
    raw["data"] = {**{k: v for k, v in raw["data"].items() if k != "source"}, **{k: str(v) for k, v in data.items()}}
    path = tmp_path / "text-gpt.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _write(tmp_path, raw) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_inspect_on_the_text_gpt_config_passes_every_text_check_and_leaves_the_tokenizer(tmp_path, clean):
    cfg = _config(tmp_path, source=corpus.write_folder(tmp_path / "topics", clean))
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r
    rec = record(tmp_path / "runs", "text-gpt", "inspect")
    assert rec["status"] == "passed"
    assert [c["id"] for c in rec["checks"]] == TEXT_IDS
    assert {c["id"]: c["status"] for c in rec["checks"]} == dict.fromkeys(TEXT_IDS, "pass")
    assert check(rec, "data.decode")["evidence"]["files_scanned"] == 43
    assert check(rec, "data.leak")["evidence"]["ngram"] == 200
    assert set(rec["artifacts"]) == {"tokenizer.json", "data_report.json", "lengths.png"}
    assert rec["pictures"] == ["lengths.png"]
    stage = tmp_path / "runs" / "text-gpt" / "inspect"
    assert (stage / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tok = load_tokenizer(stage / "tokenizer.json")
    report = json.loads((stage / "data_report.json").read_text())
    assert tok.kind == "char" and list(tok.fitted_on) == ["train"] and tok.vocab_size == report["vocab_size"]
    assert report["task"] == "language-model" and report["block_size"] == 64
    assert sum(report["documents"].values()) == 43 and report["documents"]["train"] == 31
    assert abs(sum(report["class_priors"]) - 1) < 1e-9 and len(report["class_priors"]) == tok.vocab_size
    assert len(rec["data_files"]) == 43


def test_a_val_topic_copied_into_train_fails_inspect_on_data_leak(tmp_path, clean):
    names = sorted(clean)
    parts = {"val": names[:6], "test": names[6:12], "train": names[12:]}
    folders = {s: corpus.write_folder(tmp_path / s, {k: clean[k] for k in ks}) for s, ks in parts.items()}
    shutil.copy(folders["val"] / f"{names[0]}.txt", folders["train"] / "copied.txt")    # the planted leak
    cfg = _config(tmp_path, train=folders["train"], val=folders["val"], test=folders["test"])
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 1, r
    assert "inspect failed" in r.stderr + r.stdout
    rec = record(tmp_path / "runs", "text-gpt", "inspect")
    leak = check(rec, "data.leak")
    assert rec["status"] == "failed" and leak["status"] == "fail", leak
    assert leak["evidence"]["val_docs_in_train"] == 1
    assert leak["evidence"]["val_docs_in_train_examples"][0]["train"].endswith("copied.txt")
    assert "1 val document(s) (16.7%) also in train" in leak["title"]
    # the rest of the text checks still judge the data: only the leak fails
    assert {c["id"]: c["status"] for c in rec["checks"] if c["id"] != "data.leak"} == \
        dict.fromkeys([i for i in TEXT_IDS if i != "data.leak"], "pass")


def test_a_sequence_model_on_table_rows_refuses_clearly(tmp_path):
    raw = {"name": "rows", "data": {"source": "builtin:iris"}, "model": {"kind": "gpt"}}
    cfg = _write(tmp_path, raw)
    assert invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q").exit_code == 0
    r = invoke("baseline", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 2, r
    assert "Traceback" not in r.stderr
    assert "model.kind gpt is a sequence model: it needs token windows from text data" in r.stderr


def test_a_txt_source_is_text_unless_the_config_names_a_target_column(tmp_path):
    (tmp_path / "notes.txt").write_text("one short document of plain words\n" * 20)
    rows = ["a b label"] + [f"{i} {i % 7} {i % 2}" for i in range(60)]
    (tmp_path / "table.txt").write_text("\n".join(rows).replace(" ", ",") + "\n")
    plain = config.load(_write(tmp_path, {"name": "t", "data": {"source": "notes.txt"}}))
    assert kinds.choose(plain).name == "text"
    table = config.load(_write(tmp_path, {"name": "t", "data": {"source": "table.txt", "target": "label"}}))
    assert kinds.choose(table).name == "table"
    ds = kinds.load(table)
    assert ds.kind == "table" and ds.feature_names == ["a", "b"] and ds.task == "classification"
    # naming a text column, or a text task, makes even a table-looking source text
    named = config.load(_write(tmp_path, {"name": "t", "task": "language-model",
                                          "data": {"source": "table.txt", "target": "label"}}))
    assert kinds.choose(named).name == "text"


def test_a_folder_of_txt_files_is_text_not_images(tmp_path, clean):
    folder = corpus.write_folder(tmp_path / "topics", dict(list(clean.items())[:5]))
    cfg = config.load(_write(tmp_path, {"name": "t", "data": {"source": str(folder)}}))
    assert kinds.choose(cfg).name == "text"


def test_text_classification_is_a_classification_task_on_token_inputs():
    import torch

    from recipe import tasks
    from recipe.errors import ModelError
    from recipe.tasks.classification import Classification

    task = tasks.get("text-classification")
    assert isinstance(task, Classification) and task.name == "text-classification" and task.metric == "accuracy"
    out = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert task.shape_output(out, 2, 3) is out
    assert task.score(out, torch.tensor([0, 1]), 3)["accuracy"] == 0.5
    with pytest.raises(ModelError, match=r"expected \(2, 3\) logits"):
        task.shape_output(torch.zeros(2, 5, 3), 2, 3)      # (B, T, V): a language model's output


def test_text_classification_inspect_adds_the_table_label_checks(tmp_path, clean):
    import pandas as pd

    # a real property of each topic: whether it quotes grammar rules ("::="); 28 of the 43 do
    pd.DataFrame({"text": list(clean.values()), "label": ["grammar" if "::=" in t else "prose"
                                                          for t in clean.values()]}).to_csv(tmp_path / "t.csv", index=False)
    cfg = _write(tmp_path, {"name": "tc", "seed": 0, "task": "text-classification",
                            "data": {"source": "t.csv", "text": "text", "target": "label", "block_size": 256}})
    assert kinds.choose(config.load(cfg)).name == "text"
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    rec = record(tmp_path / "runs", "tc", "inspect")
    statuses = {c["id"]: c["status"] for c in rec["checks"]}
    assert list(statuses) == TEXT_IDS + ["data.label-conflict", "data.imbalance", "data.split-shift"], statuses
    assert r.exit_code == 0, r
    # data.lengths warns: most topics are longer than 256 characters and a classifier reads only the first 256
    assert statuses == {**dict.fromkeys(list(statuses), "pass"), "data.lengths": "warn"}, statuses
    assert check(rec, "data.imbalance")["evidence"]["counts"] == {"train": [20, 11], "val": [4, 2], "test": [4, 2]}
    report = json.loads((tmp_path / "runs" / "tc" / "inspect" / "data_report.json").read_text())
    assert report["classes"] == ["grammar", "prose"] and report["task"] == "text-classification"
    assert report["class_priors"] == pytest.approx([20 / 31, 11 / 31])
