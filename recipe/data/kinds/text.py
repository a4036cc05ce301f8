"""The text kind: documents from a .txt file, a folder of .txt files, or a table's text column (recipe/data/text/),
split by document, tokenized with a tokenizer fitted on train; the text checks (recipe/data/text/checks.py), for
text-classification the table label checks on document hashes, lengths.png and the tokenizer.json artifact.

Which configs are text: `wants_text(cfg)` (data.text names a column, the task is a text task, or the source is a
.txt file or a folder of them), except that a .txt source whose config names a target column (data.target) and no
data.text stays a table: delimited .txt tables read before this kind existed keep reading as tables."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np

from recipe import checks as C
from recipe.data.kinds.base import DataCheck, DataKind
from recipe.data.kinds.registry import register

TEXT_CHECKS = ("data.decode", "data.vocab", "data.lengths", "data.empty", "data.duplicates", "data.leak",
               "data.windows")
LABEL_CHECKS = ("data.label-conflict", "data.imbalance", "data.split-shift")


class _Labels:
    """A text-classification dataset as the table label checks read it: class ids per split (rows = document
    numbers) under the table task name."""

    task = "classification"
    has_classes = True

    def __init__(self, ds):
        self.classes, self.num_classes = ds.classes, ds.num_classes
        self.train, self.val, self._test = ds.train, ds.val, ds.raw_test()

    def raw_test(self):
        return self._test


def _doc_hashes(ds) -> dict[str, np.ndarray]:
    """Each split's document hashes as uint64: what data.label-conflict compares instead of feature rows."""
    from recipe.data.text import ngrams

    return {s: np.array([int(h[:16], 16) for h in ngrams.doc_hashes(ds.docs[s].texts)], dtype=np.uint64)
            for s in ("train", "val", "test")}


def _label_check(check_id: str):
    """A DataCheck judge that runs one of the table's label checks on a text-classification dataset."""
    def judge(look, th):
        from recipe.data.kinds import table_checks as TC

        view = _Labels(look.ds)
        if check_id == "data.label-conflict":
            return TC.check_label_conflict(view, th, _doc_hashes(look.ds))
        return {"data.imbalance": TC.check_imbalance, "data.split-shift": TC.check_split_shift}[check_id](view, th)
    return judge


def inspect_checks(ds, th: Callable[[str], dict], files: Optional[list[str]] = None) -> tuple[list[C.Check], dict]:
    """Every inspect check for text data in report order, and the figures (name -> matplotlib Figure), without
    a run: what tests and notebooks call on a loaded TextDataset."""
    from recipe.data.text.checks import text_checks

    checks, figures = text_checks(ds, th, files)
    if ds.task == "text-classification":
        look = SimpleNamespace(ds=ds)       # what the label checks' judges read of a Look
        checks += [_label_check(i)(look, th(i)) for i in LABEL_CHECKS]
    return checks, figures


def _text_check(check_id: str):
    """A DataCheck judge that runs one text check; data.lengths also leaves its histogram for pictures()."""
    def judge(look, th):
        from recipe.data.text import checks as T

        ds = look.ds
        if check_id == "data.decode":
            return T.check_decode(list(ds.files))
        if check_id == "data.lengths":
            check, look.found["lengths.png"] = T.check_lengths(ds, th)
            return check
        if check_id == "data.windows":
            return T.check_windows(ds)
        fn = {"data.vocab": T.check_vocab, "data.empty": T.check_empty, "data.duplicates": T.check_duplicates,
              "data.leak": T.check_leak}[check_id]
        return fn(ds, th)
    return judge


@register
class TextKind(DataKind):
    name = "text"
    priority = 15         # before images, which claim any folder: a folder holding .txt files is documents

    def claims(self, cfg) -> bool:
        from recipe.data.text import wants_text
        from recipe.data.text.read import is_text_source

        if not wants_text(cfg):
            return False
        d = cfg.data
        if d.text is not None or getattr(cfg, "task", None) in ("language-model", "text-classification"):
            return True
        source = d.source if d.train is None else d.train
        # a .txt table (whitespace-separated columns) names its target column: it stays a table
        return not (cfg.resolve(source).is_file() and is_text_source(cfg.resolve(source)) and
                    "target" in d.model_fields_set)

    def load(self, cfg):
        from recipe.data import text

        # errors="replace": bytes that are not UTF-8 become U+FFFD, so that data.decode names every place and
        # fails inspect (whose gate keeps the later stages off such data) instead of the first one ending the load
        return text.load(cfg, errors="replace")

    def fingerprint(self, ds) -> str:
        """What recipe.data.text.build hashes: the token windows, task, classes, sizes and the tokenizer."""
        from recipe.data import digests

        return digests.content_digest({"train": ds.train, "val": ds.val, "test": ds._test},
                                      (ds.task, ds.classes, ds.block_size, ds.vocab_size, ds.pad_id,
                                       ds.tokenizer.digest))

    def checks(self) -> list[DataCheck]:
        return [DataCheck(i, _text_check(i)) for i in TEXT_CHECKS]

    def pictures(self, look) -> list[str]:
        """tokenizer.json (the trained tokenizer, what predict will encode prompts with) is written here, beside
        the pictures; lengths.png is drawn after the checks from data.lengths' figure."""
        from recipe.data.text import save_tokenizer

        save_tokenizer(look.ds, look.artifacts.path("tokenizer.json"))
        look.artifacts.add("tokenizer.json")
        return []

    def finish_pictures(self, look, drawn: list[str]) -> list[str]:
        fig = look.found.pop("lengths.png", None)
        if fig is None:
            return drawn
        look.artifacts.figure("lengths.png", fig)
        return drawn + ["lengths.png"]

    def report(self, look) -> dict[str, Any]:
        ds = look.ds
        encoding = {k: v for k, v in ds.encoding.items() if k != "tokenizer"}   # the tokenizer is tokenizer.json
        return {
            "fingerprint": ds.fingerprint, "task": ds.task, "shape": list(ds.shape),
            "rows": {"train": len(ds.train.y), "val": len(ds.val.y), "test": len(ds.raw_test().y)},
            "documents": {s: len(ds.docs[s].texts) for s in ("train", "val", "test")},
            "classes": ds.classes, "class_priors": ds.class_priors(), "vocab_size": ds.vocab_size,
            "block_size": ds.block_size, "tokenizer": ds.tokenizer.kind, "tokenizer_artifact": "tokenizer.json",
            "encoding": encoding,
        }

    def outcome(self, look, report) -> tuple[dict[str, Any], str]:
        rows, docs = report["rows"], report["documents"]
        summary = (f"{docs['train']}/{docs['val']}/{docs['test']} train/val/test documents, {rows['train']}/"
                   f"{rows['val']}/{rows['test']} windows of {report['block_size']} {report['tokenizer']} tokens, "
                   f"vocabulary {report['vocab_size']}, {report['task']}")
        return {"rows": rows, "documents": docs, "vocab_size": report["vocab_size"]}, summary


@register
class TextClassesKind(TextKind):
    """Text with a label per document (text-classification): the text checks, then the table's label checks on
    document hashes and class ids. Chosen after the load (registry.refine), never from the config alone."""

    name = "text-classes"

    def claims(self, cfg) -> bool:
        return False

    def fits(self, ds) -> bool:
        return ds.task == "text-classification"

    def checks(self) -> list[DataCheck]:
        return super().checks() + [DataCheck(i, _label_check(i)) for i in LABEL_CHECKS]
