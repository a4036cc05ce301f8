"""Planted sequence models and data for the sequence checks: a minimal GPT (its causal mask and position
embedding can be left out), LSTMs (one bidirectional, one with batch and time swapped), a loss that counts
pads, the ways next-token targets go wrong, and a short hand-written training loop for the planted runs.

The real `gpt`/`lstm` model kinds live in recipe.models; these are written here so the checks are tested
against bugs we chose, and a change to the real models cannot make a planted bug disappear.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block: int, causal: bool):
        super().__init__()
        self.qkv, self.proj, self.n_head, self.causal = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd), n_head, causal
        self.register_buffer("mask", torch.tril(torch.ones(block, block, dtype=torch.bool)))

    def forward(self, x):                                                        # (B, T, E)
        B, T, E = x.shape
        q, k, v = self.qkv(x).split(E, 2)
        q, k, v = (a.view(B, T, self.n_head, E // self.n_head).transpose(1, 2) for a in (q, k, v))   # (B, H, T, d)
        att = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                  # (B, H, T, T)
        if self.causal:
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        y = att.softmax(-1) @ v                                                  # (B, H, T, d)
        return self.proj(y.transpose(1, 2).reshape(B, T, E))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block, causal):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = Attention(n_embd, n_head, block, causal)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Tokens (B, T) -> logits (B, T, V). causal=False: the missing mask; positions=False: wpe never added."""

    def __init__(self, vocab: int, block: int, n_embd: int = 32, n_head: int = 2, n_layer: int = 2,
                 causal: bool = True, positions: bool = True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, block, causal) for _ in range(n_layer))
        self.ln_f, self.head = nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab)
        self.positions = positions

    def forward(self, idx):
        x = self.wte(idx)                                                        # (B, T, E)
        if self.positions:
            x = x + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))                                           # (B, T, V)


class LastTokenGPT(TinyGPT):
    """Causal attention, but the last token's embedding is broadcast to every position first (a 'summary'
    token, as a classifier would use it): every t sees T-1, and only T-1."""

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        x = x + x[:, -1:]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class Classifier(nn.Module):
    """Tokens (B, T) -> one label's logits (B, C): nothing per position to be causal about."""

    def __init__(self, vocab: int, classes: int = 3):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, 16), nn.Linear(16, classes)

    def forward(self, idx):
        return self.head(self.emb(idx).mean(1))


class TinyLSTM(nn.Module):
    """bidirectional=True: the backward direction reads the future. time_major=True: (B, T, E) fed to an LSTM
    that expects (T, B, E), so the batch axis is run as time."""

    def __init__(self, vocab: int, n_embd: int = 32, bidirectional: bool = False, time_major: bool = False):
        super().__init__()
        self.emb = nn.Embedding(vocab, n_embd)
        self.rnn = nn.LSTM(n_embd, n_embd, batch_first=not time_major, bidirectional=bidirectional)
        self.head = nn.Linear(n_embd * (2 if bidirectional else 1), vocab)

    def forward(self, idx):
        h, _ = self.rnn(self.emb(idx))                                           # (B, T, E or 2E)
        return self.head(h)


class OneHotGPT(TinyGPT):
    """No nn.Embedding at all (one-hot times a weight): the checks must fall back to changing tokens."""

    def __init__(self, vocab: int, block: int, **kw):
        super().__init__(vocab, block, **kw)
        self.w = nn.Parameter(self.wte.weight.detach().clone())
        del self.wte

    def forward(self, idx):
        x = F.one_hot(idx, self.w.shape[0]).float() @ self.w + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def lm_loss(logits, y, pad_id: int = -100):
    """The right loss: mean over real targets."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=pad_id)


def loss_counting_pads(logits, y, pad_id: int = -100):
    """Planted: no ignore_index, pads are ordinary targets."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def loss_dividing_by_all(logits, y, pad_id: int = -100):
    """Planted: masked sum divided by B*T, pads included in the count."""
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten().clamp_min(0), reduction="none")
    return (ce * (y.flatten() != pad_id)).sum() / y.numel()


# ----------------------------------------------------------------------------- data


def pydoc_corpus() -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Char-level ids of the Python language reference (pydoc_data.topics): every 5th topic is val."""
    import pydoc_data.topics as topics

    docs = [topics.topics[k] for k in sorted(topics.topics)]
    chars = sorted(set("".join(docs)))
    index = {c: i for i, c in enumerate(chars)}
    enc = [np.array([index[c] for c in d], np.int64) for d in docs]
    return [d for i, d in enumerate(enc) if i % 5], [d for i, d in enumerate(enc) if i % 5 == 0], chars


def windows(docs, block: int, n: int, seed: int, shift: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """n windows from documents; y[t] = doc[start + t + shift]: shift 1 is right, 0 copies, -1 is backwards,
    2 skips a token."""
    rng = np.random.default_rng(seed)
    long = [d for d in docs if len(d) > block + 4]
    xs, ys = [], []
    for _ in range(n):
        d = long[rng.integers(len(long))]
        i = int(rng.integers(2, len(d) - block - 2))
        xs.append(d[i:i + block])
        ys.append(d[i + shift:i + shift + block])
    return torch.as_tensor(np.stack(xs)), torch.as_tensor(np.stack(ys))


def triplet_copy(n_windows: int, groups: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of groups (a, b, a), a and b uniform: the next token depends on the token two back, not on the
    current one (bigram = unigram = ln V) nor, without positions, on which earlier token is two back."""
    rng = np.random.default_rng(seed)
    ab = rng.integers(0, vocab, (n_windows, groups, 2))
    seq = np.concatenate([ab, ab[:, :, :1]], 2).reshape(n_windows, -1)            # (N, 3 * groups)
    return torch.as_tensor(seq[:, :-1]), torch.as_tensor(seq[:, 1:])


def train(model, x, y, steps: int, lr: float = 3e-3, batch: int = 32, seed: int = 0) -> list[float]:
    """A minimal AdamW loop for the planted runs (the engine's loop trains (B, C) outputs; these are (B, T, V))."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = lm_loss(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class SoftmaxGPT(TinyGPT):
    """Planted: returns probabilities, then trained with cross_entropy as if they were logits."""

    def forward(self, idx):
        return super().forward(idx).softmax(-1)


class HotStartGPT(TinyGPT):
    """Planted: output weights at std 1 instead of 0.02 and a large bias: confident and wrong at init."""

    def __init__(self, vocab, block, **kw):
        super().__init__(vocab, block, **kw)
        nn.init.normal_(self.head.weight, std=3.0)
        nn.init.normal_(self.head.bias, std=3.0)
