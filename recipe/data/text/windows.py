"""What a sequence model sees: (N, T) windows of next-token targets for language models, (N, T) padded
documents for text classification. Windows are cut from one split's own tokens, so none holds text of two splits."""
from __future__ import annotations

import numpy as np

from recipe.errors import DataError


def stream(tokens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A split's documents end to end (source order) and where each starts in the stream."""
    starts = np.zeros(len(tokens), np.int64)
    if len(tokens) > 1:
        starts[1:] = np.cumsum([len(t) for t in tokens[:-1]])
    joined = np.concatenate(tokens).astype(np.int64, copy=False) if tokens else np.zeros(0, np.int64)
    return joined, starts


def lm_windows(s: np.ndarray, starts: np.ndarray, block: int, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping windows: inputs s[i:i+T], targets s[i+1:i+T+1] (each token predicted once per epoch), and
    the position (in the split's document list) of the document that holds each window's first target."""
    n = (len(s) - 1) // block
    if n < 1:
        raise DataError(f"the {split} split holds {len(s)} tokens, fewer than data.block_size + 1 = {block + 1}: "
                        "lower data.block_size or give that split more text (data.split, data.chunk_chars)")
    x = s[:n * block].reshape(n, block).copy()
    y = s[1:n * block + 1].reshape(n, block).copy()
    doc = np.searchsorted(starts, np.arange(n) * block + 1, side="right") - 1
    return x, y, doc.astype(np.int64)


def padded(tokens: list[np.ndarray], block: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Each document's first `block` tokens, padded at the end with `pad_id`; and its length before padding."""
    x = np.full((len(tokens), block), pad_id, np.int64)
    lengths = np.zeros(len(tokens), np.int64)
    for i, t in enumerate(tokens):
        k = min(len(t), block)
        x[i, :k] = t[:k]
        lengths[i] = len(t)
    return x, lengths
