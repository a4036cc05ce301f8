"""Tokenizers for text data (data.tokenizer): char (train's characters plus an unknown id), byte (the 256 byte
values, never an unknown) and bpe (byte-level BPE trained with the `tokenizers` library). Each is fitted on the
splits it names in `fitted_on` (train only, unless a bug says otherwise), saved as JSON, and digested into the
data fingerprint."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from recipe.errors import DataError

KINDS = ("char", "byte", "bpe")
UNK = "<unk>"
UNK_SHOWN = "\ufffd"   # how an unknown id decodes: the replacement character, visible in a window sample


class Tokenizer:
    kind = ""
    unk_id: Optional[int] = None

    def __init__(self, fitted_on: Sequence[str]):
        self.fitted_on = tuple(fitted_on)   # provenance: the splits whose text shaped the vocabulary

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def symbol(self, i: int) -> str:
        """One id as text, for vocabulary listings."""
        return self.decode([i])

    def _state(self) -> dict[str, Any]:
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "unk_id": self.unk_id,
                "fitted_on": list(self.fitted_on), **self._state()}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


class CharTokenizer(Tokenizer):
    kind = "char"
    unk_id = 0

    def __init__(self, chars: Sequence[str], fitted_on: Sequence[str]):
        super().__init__(fitted_on)
        self.chars = list(chars)
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}
        # code points below 65536 map through one lookup table: encoding a long text is one numpy gather
        self._table = np.zeros(65536, np.int64)
        for c, i in self.index.items():
            if ord(c) < 65536:
                self._table[ord(c)] = i

    @classmethod
    def fit(cls, texts: Sequence[str], fitted_on: Sequence[str]) -> "CharTokenizer":
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        return cls(sorted(seen), fitted_on)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        out = self._table[np.minimum(codes, 65535)]
        wide = codes >= 65535
        if wide.any():   # astral characters (emoji...): looked up one by one
            out[wide] = [self.index.get(chr(c), 0) for c in codes[wide]]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else UNK_SHOWN for i in ids)

    def _state(self) -> dict[str, Any]:
        return {"chars": "".join(self.chars)}


class ByteTokenizer(Tokenizer):
    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def symbol(self, i: int) -> str:
        return chr(i) if 32 <= i < 127 else f"\\x{i:02x}"


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, tok, fitted_on: Sequence[str]):
        super().__init__(fitted_on)
        self.tok = tok

    @classmethod
    def fit(cls, texts: Sequence[str], vocab_size: int, fitted_on: Sequence[str]) -> "BPETokenizer":
        from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers, trainers

        # byte-level: every string has an encoding (no unknown), merges learned from the given texts only
        tok = HF(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(list(texts), trainer)
        return cls(tok, fitted_on)

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> "BPETokenizer":
        from tokenizers import Tokenizer as HF

        return cls(HF.from_str(state["tokenizer"]), state["fitted_on"])

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text).ids, dtype=np.int64)

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tok.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def symbol(self, i: int) -> str:
        return self.tok.id_to_token(int(i)) or UNK

    def _state(self) -> dict[str, Any]:
        return {"tokenizer": self.tok.to_str()}


def fit(kind: str, texts: Sequence[str], vocab_size: int, fitted_on: Sequence[str] = ("train",)) -> Tokenizer:
    """A tokenizer of `kind` fitted on `texts`, which come from the splits named in `fitted_on`."""
    if kind == "char":
        return CharTokenizer.fit(texts, fitted_on)
    if kind == "byte":
        return ByteTokenizer(fitted_on)
    if kind == "bpe":
        if not any(texts):
            raise DataError("data.tokenizer: bpe has no train text to learn merges from")
        return BPETokenizer.fit(texts, vocab_size, fitted_on)
    raise DataError(f"data.tokenizer: unknown tokenizer '{kind}' (choose from {', '.join(KINDS)})")


def from_json(state: dict[str, Any]) -> Tokenizer:
    """The tokenizer saved by to_json (predict reads it back from the run's artifact)."""
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(list(state["chars"]), state["fitted_on"])
    if kind == "byte":
        return ByteTokenizer(state["fitted_on"])
    if kind == "bpe":
        return BPETokenizer.from_json(state)
    raise DataError(f"tokenizer artifact: unknown kind {kind!r}")
