"""Sequence models: a nanoGPT-shaped decoder-only transformer, LSTM and GRU; tokens (B, T) to logits (B, T, V)
for a language model or (B, C) for a classifier (pooled over the non-pad positions)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from recipe.errors import ModelError

SEQUENCE_KINDS = ("gpt", "lstm", "gru")
POOLS = ("last", "mean")
INIT_STD = 0.02          # GPT-2's init for every Linear and Embedding weight (nanoGPT)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only (is_causal=True)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, causal: bool = True):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.dropout = n_head, dropout
        self.causal = causal     # False only for planted bugs (tests/bugs/sequence): then t sees t+1

    def forward(self, x):  # x: (B, T, C)
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal)                                  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(b, t, c)                                           # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, n_embd: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = FeedForward(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Pooled(nn.Module):
    """A classification head on per-position features: the last non-pad position's, or their mean."""

    def __init__(self, width: int, num_outputs: int, pool: str, pad_id: Optional[int]):
        super().__init__()
        if pool not in POOLS:
            raise ModelError(f"model.pool: must be one of {', '.join(POOLS)} (got {pool!r})")
        self.pool, self.pad_id = pool, pad_id
        self.head = nn.Linear(width, num_outputs)

    def forward(self, h, idx):  # h: (B, T, C) features, idx: (B, T) tokens
        if self.pad_id is None:
            keep = torch.ones(idx.shape, dtype=h.dtype, device=h.device)
        else:
            keep = (idx != self.pad_id).to(h.dtype)                                            # (B, T)
        if self.pool == "mean":
            pooled = (h * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)  # (B, C)
        else:   # right padding: the last real token is at (number of real tokens) - 1; all-pad rows take 0
            last = (keep.sum(1).long() - 1).clamp_min(0)                                       # (B,)
            pooled = h[torch.arange(h.shape[0], device=h.device), last]                        # (B, C)
        return self.head(pooled)


class GPT(nn.Module):
    """A small decoder-only transformer in the nanoGPT shape: token + learned position embeddings, n_layer
    pre-norm blocks, a final LayerNorm and a head. The language-model head shares the token embedding's weight
    (weight tying) and keeps a bias, so recipe can start it at the log unigram frequencies."""

    def __init__(self, vocab_size: int, block_size: int, num_outputs: int, n_layer: int = 2, n_head: int = 4,
                 n_embd: int = 128, dropout: float = 0.0, tie_weights: bool = True, pool: Optional[str] = None,
                 pad_id: Optional[int] = None):
        super().__init__()
        _check_sizes(vocab_size, block_size, num_outputs)
        if n_layer < 1 or n_head < 1 or n_embd < 1:
            raise ModelError(f"model: n_layer, n_head and n_embd must be >= 1 (got {n_layer}, {n_head}, {n_embd})")
        if n_embd % n_head:
            raise ModelError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.use_positions = True    # False only for planted bugs: a GPT that never adds its positions
        if pool is None:
            _check_lm_width(vocab_size, num_outputs)
            self.lm_head: Optional[nn.Linear] = nn.Linear(n_embd, vocab_size)
            self.classifier: Optional[Pooled] = None
        else:
            self.lm_head, self.classifier = None, Pooled(n_embd, num_outputs, pool, pad_id)
        self.apply(_normal_init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):   # residual projections: 0.02 / sqrt(2 n_layer) (GPT-2)
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * n_layer))
        if self.lm_head is not None and tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):  # idx: (B, T) int64
        t = idx.shape[1]
        if t > self.block_size:
            raise ModelError(f"a sequence of {t} tokens is longer than the model's block_size {self.block_size}")
        x = self.wte(idx)                                                                   # (B, T, C)
        if self.use_positions:
            x = x + self.wpe(torch.arange(t, device=idx.device))                            # (T, C) broadcast
        x = self.drop(x)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if self.classifier is not None:
            return self.classifier(x, idx)                                                  # (B, classes)
        return self.lm_head(x)                                                              # (B, T, V)


class Recurrent(nn.Module):
    """Embedding, an n_layer LSTM or GRU of width n_embd (dropout between layers and before the head), and a head
    per position (language model, optionally tied to the embedding) or pooled (classifier)."""

    def __init__(self, cell: str, vocab_size: int, block_size: int, num_outputs: int, n_layer: int = 2,
                 n_embd: int = 128, dropout: float = 0.0, tie_weights: bool = False, pool: Optional[str] = None,
                 pad_id: Optional[int] = None):
        super().__init__()
        _check_sizes(vocab_size, block_size, num_outputs)
        if n_layer < 1 or n_embd < 1:
            raise ModelError(f"model: n_layer and n_embd must be >= 1 (got {n_layer}, {n_embd})")
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.block_size = block_size
        self.embed = nn.Embedding(vocab_size, n_embd)
        self.rnn = rnn(n_embd, n_embd, num_layers=n_layer, batch_first=True, dropout=dropout if n_layer > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        # a small embedding and head (as GPT's): the untrained model's logits are near 0, its loss near ln V
        nn.init.normal_(self.embed.weight, std=INIT_STD)
        if pool is None:
            _check_lm_width(vocab_size, num_outputs)
            self.lm_head: Optional[nn.Linear] = nn.Linear(n_embd, vocab_size)
            self.classifier: Optional[Pooled] = None
            _normal_init(self.lm_head)
            if tie_weights:
                self.lm_head.weight = self.embed.weight
        else:
            self.lm_head, self.classifier = None, Pooled(n_embd, num_outputs, pool, pad_id)
            _normal_init(self.classifier.head)

    def forward(self, idx):  # idx: (B, T) int64
        h, _ = self.rnn(self.embed(idx))                                                    # (B, T, C)
        h = self.drop(h)
        if self.classifier is not None:
            return self.classifier(h, idx)                                                  # (B, classes)
        return self.lm_head(h)                                                              # (B, T, V)


def _normal_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


def _check_sizes(vocab_size: int, block_size: int, num_outputs: int) -> None:
    if vocab_size < 1 or block_size < 1 or num_outputs < 1:
        raise ModelError(f"a sequence model needs vocab_size, block_size and num_outputs >= 1 "
                         f"(got {vocab_size}, {block_size}, {num_outputs})")


def _check_lm_width(vocab_size: int, num_outputs: int) -> None:
    if num_outputs != vocab_size:
        raise ModelError(f"a language model predicts one of {vocab_size} tokens, but {num_outputs} outputs were "
                         "asked for (num_outputs must equal vocab_size)")


def build_sequence(model_cfg, vocab_size: int, block_size: int, num_outputs: int, *, task: str = "language-model",
                   pad_id: Optional[int] = None) -> nn.Module:
    """The configured sequence model. task 'language-model': logits per position (B, T, V); any other task
    (text-classification): model.pool over the non-pad positions, (B, num_outputs)."""
    kind = model_cfg.kind
    pool = None if task == "language-model" else model_cfg.pool
    common = dict(n_layer=model_cfg.n_layer, n_embd=model_cfg.n_embd, dropout=model_cfg.dropout,
                  tie_weights=model_cfg.tie_weights, pool=pool, pad_id=pad_id)
    if kind == "gpt":
        return GPT(vocab_size, block_size, num_outputs, n_head=model_cfg.n_head, **common)
    if kind in ("lstm", "gru"):
        return Recurrent(kind, vocab_size, block_size, num_outputs, **common)
    return from_import_path(kind, vocab_size, block_size, num_outputs, model_cfg.args)


def create_sequence(model_cfg, vocab_size: int, block_size: int, num_outputs: int, *, task: str, seed: int,
                    pad_id: Optional[int] = None, priors: Optional[list[float]] = None) -> nn.Module:
    """The sequence analogue of models.create: seeded, built, the output bias set to the task's (log unigram or
    class priors, when given), and one forward on two all-zero windows, so a wrong output shape is a clear
    error (exit 2) before training."""
    from recipe import tasks
    from recipe.models import final_layer

    torch.manual_seed(seed)
    model = build_sequence(model_cfg, vocab_size, block_size, num_outputs, task=task, pad_id=pad_id)
    t = tasks.get(task)
    layer = final_layer(model, num_outputs)
    if priors is not None and layer is not None and layer.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(t.output_bias(priors).to(layer.bias))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, block_size, dtype=torch.long))
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"model.kind: the model fails on a batch of token windows of shape (2, {block_size}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    finally:
        model.train(was)
    t.shape_output(out, 2, t.num_outputs(num_outputs))
    return model


def from_import_path(path: str, vocab_size: int, block_size: int, num_outputs: int, args: dict) -> nn.Module:
    """A user's factory for sequence data, called as Factory(vocab_size=..., block_size=..., num_outputs=...,
    **model.args)."""
    from recipe.models import call_factory     # recipe.models re-exports this module's names

    return call_factory(path, dict(vocab_size=vocab_size, block_size=block_size, num_outputs=num_outputs, **args),
                        "for text data it is called as Factory(vocab_size=..., block_size=..., num_outputs=..., "
                        "**model.args)")
