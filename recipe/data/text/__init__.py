"""Text data: read documents, split them by document (seeded), fit the tokenizer on train only, cut (N, T)
windows, fingerprint; the test split is sealed as for tables. `load(cfg)` returns a TextDataset, a Dataset whose
x holds token ids."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from recipe.data import SPLITS, Dataset, Split, split_indices
from recipe.data.text import tokenize, windows
from recipe.data.text.read import Docs, is_text_source, read_documents
from recipe.errors import DataError

TASKS = ("language-model", "text-classification")


@dataclass
class TextDataset(Dataset):
    """x: (N, T) int64 token ids. Language model: y (N, T) next-token targets, rows = the source document of each
    window. Text classification: x padded with pad_id, y (N,) class ids, rows = document numbers."""

    inputs = "tokens"                    # x holds token ids: models.create builds a sequence model for them
    tokenizer: Any = None
    block_size: int = 0
    vocab_size: int = 0                  # ids the model must embed (the tokenizer's, plus pad for classification)
    pad_id: Optional[int] = None         # text classification only
    docs: dict[str, Docs] = field(default_factory=dict)
    doc_tokens: dict[str, list] = field(default_factory=dict)   # each split's documents as token arrays
    streams: dict[str, np.ndarray] = field(default_factory=dict)    # language model: each split end to end

    @property
    def num_outputs(self) -> int:
        return self.vocab_size if self.task == "language-model" else self.num_classes

    @property
    def num_features(self) -> int:
        return self.block_size

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64, copy=False)     # token ids are embedded, never scaled

    def target(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int64, copy=False)

    def class_priors(self) -> Optional[list[float]]:
        """Classes' train shares; for a language model the train unigram frequencies (what a log-prior output
        bias starts from)."""
        if self.task == "text-classification":
            counts = np.bincount(self.train.y, minlength=self.num_classes).astype(float)
        else:
            counts = np.bincount(self.streams["train"], minlength=self.vocab_size).astype(float)
        return (counts / counts.sum()).tolist()

    def test_summary(self) -> dict[str, Any]:
        import hashlib

        docs = self.docs["test"]
        summary = {"n": len(self._test.y), "documents": len(docs.texts),
                   "document_hashes": [hashlib.sha1(t.encode()).hexdigest()[:16] for t in docs.texts]}
        if self.task == "text-classification":
            summary["label_counts"] = np.bincount(self._test.y, minlength=self.num_classes).tolist()
        return summary


def wants_text(cfg) -> bool:
    """Whether the config's data is text: data.text names a column, the task is a text task, or the source is a
    .txt file or a folder of .txt files."""
    d = cfg.data
    if d.text is not None or getattr(cfg, "task", None) in TASKS:
        return True
    spec = d.source if d.train is None else d.train
    return spec is not None and not spec.startswith("builtin:") and is_text_source(cfg.resolve(spec))


def _task(cfg, docs: Docs) -> str:
    task = getattr(cfg, "task", None)
    if task == "classification":
        task = "text-classification"
    if task not in (None, *TASKS):
        raise DataError(f"task '{task}' does not fit text data (use language-model or text-classification)")
    if task is None:
        task = "text-classification" if docs.labels is not None else "language-model"
    if task == "text-classification" and docs.labels is None:
        raise DataError(f"{docs.origin}: text-classification needs a label column (data.target) in a CSV/Parquet/"
                        "JSONL source; for next-token prediction set task: language-model")
    return task


def _read(cfg, spec: str, need_label: bool, errors: str) -> Docs:
    d = cfg.data
    return read_documents(cfg.resolve(spec), d.text, d.target, d.chunk_chars, need_label, errors)


def split_documents(cfg, errors: str = "strict") -> tuple[str, dict[str, Docs]]:
    """The task and each split's documents: explicit data.train/val/test files (a missing val or test is split
    off train), or a seeded split of data.source by document (a long .txt file is first cut into
    data.chunk_chars chunks). `errors`: "strict" refuses bytes that are not UTF-8, "replace" keeps them as U+FFFD."""
    d = cfg.data
    need = getattr(cfg, "task", None) == "text-classification"
    base = _read(cfg, d.source if d.train is None else d.train, need, errors)
    task = _task(cfg, base)
    parts = {}
    for s in ("val", "test"):
        if d.train is not None and getattr(d, s) is not None:
            parts[s] = _read(cfg, getattr(d, s), task == "text-classification", errors)
    rest = [s for s in ("val", "test") if s not in parts]
    parts["train"] = base
    if rest:
        n = len(base.texts)
        if n < len(rest) + 1:
            raise DataError(f"{base.origin}: {n} document(s) cannot be split into train/{'/'.join(rest)}; add "
                            "documents" + (" or lower data.chunk_chars" if base.chunked else ""))
        strat = np.array([str(v) for v in base.labels], dtype=object) if task == "text-classification" and \
            d.split.stratify else None
        fr = {s: getattr(d.split, s) if s in rest else 0.0 for s in ("val", "test")}
        tr, va, te = split_indices(n, strat, fr["val"], fr["test"], cfg.seed, strat is not None)
        for s, idx in zip(SPLITS, (tr, va, te)):
            if s == "train" or s in rest:    # train keeps only what is not split off
                parts[s] = base.take(idx)
        for s in SPLITS:
            if not parts[s].texts:
                raise DataError(f"{base.origin}: the {s} split holds no document (data.split.{s} too small for "
                                f"{n} documents)")
    return task, parts


def _labels(parts: dict[str, Docs]) -> tuple[list, dict[str, np.ndarray]]:
    key = (lambda v: (str(type(v)), v))
    classes = sorted(set(parts["train"].labels), key=key)
    if len(classes) < 2:
        raise DataError(f"{parts['train'].origin}: the train split has a single label ({classes}); "
                        "text-classification needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    ys = {}
    for s, docs in parts.items():
        unseen = sorted({v for v in docs.labels if v not in index}, key=str)
        if unseen:
            raise DataError(f"{docs.origin}: label(s) {unseen[:5]} appear in the {s} split but never in train; "
                            "the model cannot learn them")
        ys[s] = np.array([index[v] for v in docs.labels], np.int64)
    return classes, ys


def build(cfg, task: str, parts: dict[str, Docs], fitted_on: tuple[str, ...] = ("train",)) -> TextDataset:
    """Tokenize, cut windows and fingerprint. `fitted_on` names the splits the tokenizer learns from: train
    only; anything else is the planted bug the provenance record exists to catch."""
    from recipe.data import digests
    from recipe.workspace import file_digest

    d = cfg.data
    fit_texts = [t for s in fitted_on for t in parts[s].texts]
    tok = tokenize.fit(d.tokenizer, fit_texts, d.vocab_size, fitted_on)
    tokens = {s: tok.encode_many(parts[s].texts) for s in SPLITS}
    block = d.block_size
    classes, splits, streams, extra = None, {}, {}, {}
    if task == "text-classification":
        classes, ys = _labels(parts)
        pad = tok.vocab_size
        vocab = pad + 1
        for s in SPLITS:
            x, lengths = windows.padded(tokens[s], block, pad)
            splits[s] = Split(x, ys[s], np.arange(len(x), dtype=np.int64))
            extra[f"{s}_lengths"] = lengths
    else:
        pad, vocab = None, tok.vocab_size
        for s in SPLITS:
            streams[s], starts = windows.stream(tokens[s])
            x, y, doc = windows.lm_windows(streams[s], starts, block, s)
            splits[s] = Split(x, y, doc)
    files = {}
    for docs in parts.values():
        for f in docs.files:
            files.setdefault(f, file_digest(Path(f)))
    encoding = {"tokenizer": tok.to_json(), "tokenizer_digest": tok.digest, "fitted_on": list(fitted_on),
                "pad_id": pad, "vocab_size": vocab}
    if classes is not None:
        encoding["labels"] = classes
    ds = TextDataset(
        task=task, feature_names=[f"t{i}" for i in range(block)], shape=(block,), classes=classes,
        train=splits["train"], val=splits["val"], _test=splits["test"], norm={"kind": "none"}, target_stats={},
        encoding=encoding, files=files, origin=parts["train"].origin, extra=extra, tokenizer=tok, block_size=block,
        vocab_size=vocab, pad_id=pad, docs=parts, doc_tokens=tokens, streams=streams)
    ds.fingerprint = digests.content_digest(splits, (task, classes, block, vocab, pad, tok.digest))
    return ds


def load(cfg, errors: str = "strict") -> TextDataset:
    """Load text data as the config says; the test split is sealed inside. inspect loads with errors="replace"
    so that data.decode lists every byte that is not UTF-8; every other stage refuses them (DataError)."""
    task, parts = split_documents(cfg, errors)
    return build(cfg, task, {s: parts[s] for s in SPLITS})


def save_tokenizer(ds: TextDataset, path: Path) -> Path:
    """The trained tokenizer as a JSON artifact (kind, vocabulary or BPE model, the splits it was fitted on)."""
    import json

    path.write_text(json.dumps(ds.tokenizer.to_json(), sort_keys=True))
    return path


def load_tokenizer(path: Path) -> tokenize.Tokenizer:
    """A tokenizer saved by save_tokenizer (what predict encodes prompts with)."""
    import json

    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable tokenizer artifact ({e})") from None
    return tokenize.from_json(state)
