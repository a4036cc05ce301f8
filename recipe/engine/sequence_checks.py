"""Baseline checks that only a sequence model can fail: causality (position t must not see t+1), batch
independence on token inputs, and an order-free model that does no better than the unigram.

Every check takes a model mapping tokens (B, T) to logits (B, T, V) and tensors, never a config or a stage,
so the baseline stage, a test or a notebook call them alike. Gradients are taken with respect to the token
embedding's output: a forward hook on the model's nn.Embedding (the one fed the token ids) swaps its output for
a leaf tensor, which works for recipe's models and for import-path ones without an `inputs_embeds` argument.
A model with no such embedding is probed by changing tokens instead (forward only; the evidence says which).
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipe import checks as C
from recipe.engine.monitors import parameters_without_gradient

PROBE_ROWS = 2          # causality is per row: two rows are enough, and keep T backward passes cheap
EXTRA_POSITIONS = 12    # positions checked beyond 0..3, spread evenly up to T-2


@contextlib.contextmanager
def _eval(model: nn.Module):
    was = model.training
    model.eval()         # dropout off: the same output twice, and no random mask to mistake for a leak
    try:
        yield model
    finally:
        model.train(was)


def tapped_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """model(x) with the token embedding's output replaced by a leaf tensor (B, T, E) that gradients reach.

    The token embedding is the first nn.Embedding called with exactly the ids x; a position embedding is
    called with arange(T), so it is never taken for it. Returns (output, leaf or None, module name)."""
    found: dict[str, Any] = {}

    def tap(name):
        def hook(module, args, output):
            if "leaf" in found or not args or not isinstance(args[0], torch.Tensor):
                return None
            if args[0].shape != x.shape or not torch.equal(args[0], x):
                return None
            found["leaf"], found["name"] = output.detach().requires_grad_(True), name
            return found["leaf"]
        return hook

    hooks = [m.register_forward_hook(tap(n or type(m).__name__)) for n, m in model.named_modules()
             if isinstance(m, nn.Embedding)]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, found.get("leaf"), found.get("name", "")


def check_positions(T: int) -> list[int]:
    """The output positions t checked: 0..3 (where a leak shows first) and an even spread up to T-2."""
    spread = np.linspace(0, T - 2, EXTRA_POSITIONS).round().astype(int).tolist() if T >= 2 else []
    return sorted({t for t in [0, 1, 2, 3, *spread] if 0 <= t <= T - 2})


def _per_position_sequence(out: torch.Tensor, x: torch.Tensor) -> bool:
    return out.ndim == 3 and tuple(out.shape[:2]) == tuple(x.shape)


def _projection(out: torch.Tensor, seed: int) -> torch.Tensor:
    """A random direction over the vocabulary: a plain sum of probabilities is constant (its gradient is zero
    whatever the model sees), a random mix of the outputs is not."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape[-1], generator=g).to(out.device, torch.float32)


def _causal_by_gradient(out, leaf, positions, rtol, seed) -> tuple[list[dict], float]:
    r = _projection(out, seed)
    leaks, own_max = [], 0.0
    for t in positions:
        (grad,) = torch.autograd.grad((out[:, t, :].float() * r).sum(), leaf, retain_graph=True)
        mag = grad.detach().float().abs().amax(dim=(0, 2))                     # (T,) per input position
        own = float(mag[: t + 1].max())
        own_max = max(own_max, own)
        future = mag[t + 1:]
        bad = torch.nonzero(future > rtol * max(own, 1e-30)).reshape(-1)
        if len(bad):
            s = t + 1 + int(bad[0])
            leaks.append({"t": t, "sees": s, "gradient": float(mag[s]), "own_gradient": own,
                          "later_positions_seen": int(len(bad))})
    return leaks, own_max


def _causal_by_perturbation(model, x, out, positions, rtol, seed) -> tuple[list[dict], float]:
    """Change the token at one later position s and see which earlier outputs move (forward only)."""
    g = torch.Generator().manual_seed(seed)
    V = out.shape[-1]
    scale = float(out.detach().abs().max()) or 1.0
    checked = set(positions)
    first: dict[int, int] = {}                 # t -> first later position s that moves it
    own = 0.0                                  # how far a changed token moves its own position's output
    for s in sorted({p + 1 for p in positions}):
        x2 = x.clone()
        x2[:, s] = (x[:, s] + torch.randint(1, V, x[:, s].shape, generator=g).to(x.device)) % V
        with torch.no_grad():
            moved = (model(x2)[:, :s + 1].float() - out[:, :s + 1].float()).abs().amax(dim=(0, 2))   # (s+1,)
        own = max(own, float(moved[s]))
        for t in torch.nonzero(moved[:s] > rtol * scale).reshape(-1).tolist():
            if t in checked:
                first.setdefault(t, s)
    leaks = [{"t": t, "sees": s} for t, s in sorted(first.items())]
    return leaks, own


def check_causal(model: nn.Module, x: torch.Tensor, th: dict, seed: int = 0) -> C.Check:
    """The output at position t has zero gradient on the embeddings of positions > t, for several t."""
    x = x[:PROBE_ROWS]
    T = x.shape[1] if x.ndim == 2 else 0
    with _eval(model):
        out, leaf, name = tapped_forward(model, x)
        if not _per_position_sequence(out, x) or T < 2:
            return C.make("baseline.causal", "skip", f"output shape {tuple(out.shape)} is not per position "
                          f"(B, T, V) for tokens {tuple(x.shape)}: nothing to be causal about",
                          {"output_shape": list(out.shape)})
        positions = check_positions(T)
        if leaf is not None and out.requires_grad:
            method = f"gradient on the output of embedding '{name}'"
            leaks, own = _causal_by_gradient(out, leaf, positions, th["rtol"], seed)
        else:
            method = "changing one later token at a time (no nn.Embedding takes the token ids)"
            leaks, own = _causal_by_perturbation(model, x, out.detach(), positions, th["rtol"], seed)
    ev = {"method": method, "positions_checked": positions, "block": T, "rows": len(x), "rtol": th["rtol"],
          "leaks": leaks[:8]}
    if leaks:
        first = leaks[0]
        return C.make("baseline.causal", "fail", f"position {first['t']} sees the future: its output depends on "
                      f"the token at position {first['sees']} ({len(leaks)} of {len(positions)} positions leak)", ev,
                      "Mask attention to later positions (a lower-triangular mask before the softmax, or "
                      "is_causal=True), and check that no layer mixes the time axis both ways (a bidirectional "
                      "RNN, a non-causal convolution, a pooling over T).")
    if own == 0.0:
        return C.make("baseline.causal", "skip", "the outputs do not depend on the tokens at all: causality cannot "
                      "be measured (see baseline.input-independent)", ev)
    return C.make("baseline.causal", "pass", f"no output position sees a later token ({len(positions)} positions "
                  f"checked up to {positions[-1]}, {method.split(' (')[0]})", ev)


def check_batch_independence(model: nn.Module, x: torch.Tensor, th: dict, seed: int = 0) -> C.Check:
    """Row 0's outputs have no gradient on the other rows' token embeddings (token inputs (B, T))."""
    x = x[:4]
    if len(x) < 2:
        return C.make("baseline.batch-independence", "skip", "fewer than 2 sequences")
    with _eval(model):
        out, leaf, name = tapped_forward(model, x)
        own, leak, row = 0.0, 0.0, 0
        if leaf is not None and out.requires_grad:
            # every row in turn: a (T, B) mix-up lets row i see rows before it only, so row 0 alone looks clean
            r, method = _projection(out, seed), f"gradient on embedding '{name}'"
            for i in range(len(x)):
                (grad,) = torch.autograd.grad((out[i].float() * r).sum(), leaf, retain_graph=True)
                mag = grad.detach().float().abs().flatten(1).amax(1)           # (B,)
                other = float(torch.cat([mag[:i], mag[i + 1:]]).max())
                own = max(own, float(mag[i]))
                if other > leak:
                    leak, row = other, i
        else:
            g, method = torch.Generator().manual_seed(seed), "changing the other rows' tokens"
            own = float(out.detach().abs().max())
            for i in range(len(x)):
                x2 = x.clone()
                others = torch.arange(len(x)) != i
                x2[others] = torch.randint(0, out.shape[-1], x2[others].shape, generator=g).to(x.device)
                with torch.no_grad():
                    moved = float((model(x2)[i].float() - out[i].float()).abs().max())
                if moved > leak:
                    leak, row = moved, i
    ev = {"max_effect_on_other_rows": leak, "max_effect_own_row": own, "tolerance": th["tolerance"],
          "rows": len(x), "worst_row": row, "method": method}
    if leak > th["tolerance"]:
        return C.make("baseline.batch-independence", "fail", f"sequence {row}'s output depends on other sequences' "
                      "tokens: the model mixes the batch", ev,
                      "Look for a view/reshape that swaps the batch and time axes (B, T, E) vs (T, B, E): "
                      "batch_first=False RNNs and attention fed (B, T, E) do this silently.")
    if own == 0.0:
        return C.make("baseline.batch-independence", "skip", "no sequence's output depends on its tokens: "
                      "batch mixing cannot be measured", ev)
    return C.make("baseline.batch-independence", "pass", "each sequence's output depends on that sequence only", ev)


@torch.no_grad()
def window_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pad_id: Optional[int] = None,
                  batch: int = 64) -> np.ndarray:
    """Mean next-token cross-entropy (nats) of each window (B,), over its non-pad targets."""
    rows = []
    with _eval(model):
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch]).float()                              # (b, T, V)
            yb = y[i:i + batch]
            keep = (yb != pad_id) if pad_id is not None else torch.ones_like(yb, dtype=torch.bool)
            # a pad id may lie outside the vocabulary (-100, V): score a real id there, then drop it
            ce = F.cross_entropy(logits.transpose(1, 2), torch.where(keep, yb, 0), reduction="none")  # (b, T)
            rows.append(((ce * keep).sum(1) / keep.sum(1).clamp_min(1)).double().cpu())
    return torch.cat(rows).numpy() if rows else np.zeros(0)


def unigram_window_losses(unigram, y: np.ndarray, pad_id: Optional[int] = None) -> np.ndarray:
    """The unigram model's mean loss (nats) per window on the same targets (B,): a model with every input
    token masked can do no better, so it is the masked-input model, fitted in closed form."""
    y = np.asarray(y)
    lp = unigram.log_probs(np.where(y == pad_id, 0, y).reshape(-1, 1) if pad_id is not None else y.reshape(-1, 1))
    lp = lp.reshape(y.shape)
    keep = (y != pad_id) if pad_id is not None else np.ones(y.shape, bool)
    return -(lp * keep).sum(1) / np.maximum(keep.sum(1), 1)


def bootstrap_lower_bound(delta: np.ndarray, seed: int, n: int = 1000) -> float:
    """One-sided 95% paired-bootstrap lower bound of the mean of per-window differences."""
    if not len(delta):
        return float("nan")
    idx = np.random.default_rng(seed).integers(0, len(delta), (n, len(delta)))
    return float(np.percentile(delta[idx].mean(1), 5))


def check_beats_unigram(model_rows: np.ndarray, unigram_rows: np.ndarray, th: dict, seed: int = 0) -> C.Check:
    """baseline.input-independent for sequences: the trained model against the masked-input model (the unigram)
    on the same val windows; it must be lower by min_loss_gain, with a paired bootstrap bound above zero."""
    model_loss, uni_loss = float(model_rows.mean()), float(unigram_rows.mean())
    gain = (uni_loss - model_loss) / uni_loss if uni_loss > 0 else 0.0
    bound = bootstrap_lower_bound(unigram_rows - model_rows, seed)
    ev = {"val_loss_model": round(model_loss, 5), "val_loss_unigram": round(uni_loss, 5),
          "relative_loss_gain": round(gain, 4), "min_loss_gain": th["min_loss_gain"],
          "loss_gain_lower_bound_95": round(bound, 5), "windows": len(model_rows),
          "masked_inputs": "the unigram model: the best any model with every input token masked can do"}
    if not (gain >= th["min_loss_gain"] and bound > 0):
        return C.make("baseline.input-independent", "fail", f"the model does no better than the unigram model, "
                      f"which sees no tokens (val loss {model_loss:.4g} vs {uni_loss:.4g} nats/token)", ev,
                      "The model does not use its context: check that tokens reach it, that the position "
                      "embedding is added (attention without positions sees a bag of tokens), and that the "
                      "targets line up with the inputs (baseline.target-shift).")
    return C.make("baseline.input-independent", "pass", f"the model beats the unigram model on val: "
                  f"{model_loss:.4g} vs {uni_loss:.4g} nats/token ({gain:.0%} lower)", ev)


def check_grad_flow(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss) -> C.Check:
    """Every parameter tensor gets a nonzero gradient from one batch's loss: `loss(logits (B, T, V), y (B, T))`.
    A position embedding that is built but never added shows up here, before any training."""
    import copy

    m = copy.deepcopy(model).train()
    m.zero_grad(set_to_none=True)
    loss(m(x[:16]).float(), y[:16]).backward()
    found = parameters_without_gradient(m)
    total, ev = found["total"], found["evidence"]
    if any(v for _, v in found["groups"]):
        parts = [f"{len(v)} {k} ({', '.join(v[:3])})" for k, v in found["groups"] if v]
        return C.make("baseline.grad-flow", "fail", "parameters that will not learn: " + "; ".join(parts), ev,
                      "Unfreeze (requires_grad=True) or remove those layers; unused ones are not in forward() "
                      "(a position embedding never added to the token embedding leaves the model order-blind).")
    return C.make("baseline.grad-flow", "pass", f"all {total} parameter tensors receive a gradient", ev)


def check_pad_inputs(model: nn.Module, x: torch.Tensor, pad_id: Optional[int], th: dict, seed: int = 0) -> C.Check:
    """baseline.padding for padded documents (text classification): a document's output has no gradient on the
    embeddings at its pad positions, so padding a document to block_size cannot change what the model says."""
    if pad_id is None:
        return C.make("baseline.padding", "skip", "the inputs are not padded (no pad id)")
    rows = (x == pad_id).any(1)
    padded, made = x[rows][:8], "padded documents as they are"
    if not len(padded):    # every document fills the block: pad the second half of a few, as a shorter one is
        padded, made = x[:8].clone(), "documents cut to half the block and padded (none is shorter than it)"
        padded[:, max(1, x.shape[1] // 2):] = pad_id
    x = padded
    ev: dict[str, Any] = {"pad_id": pad_id, "rows_with_padding": int(rows.sum()), "rows_checked": len(x),
                          "probe": made, "tolerance": th["tolerance"]}
    if not len(x):
        return C.make("baseline.padding", "skip", "no document to probe", ev)
    with _eval(model):
        out, leaf, name = tapped_forward(model, x)
        if leaf is None or not out.requires_grad:
            return C.make("baseline.padding", "skip", "no nn.Embedding takes the token ids: the pad positions' "
                          "effect cannot be isolated by gradient", ev)
        (grad,) = torch.autograd.grad((out.float() * _projection(out, seed)).sum(), leaf)
    mag = grad.detach().float().abs().amax(-1)                                   # (B, T)
    pad = x == pad_id
    at_pad, at_real = float(mag[pad].max()), float(mag[~pad].max()) if bool((~pad).any()) else 0.0
    ev.update(method=f"gradient on embedding '{name}'", max_grad_at_pad=at_pad, max_grad_at_tokens=at_real)
    if at_pad > th["tolerance"] * max(1.0, at_real):
        worst = int(mag.masked_fill(~pad, 0).amax(1).argmax())
        first = int(pad[worst].nonzero()[0])
        ev.update(worst_row=worst, first_pad_position=first)
        return C.make("baseline.padding", "fail", f"pad positions change the output: document {worst}'s logits "
                      f"depend on its padding (from position {first})", ev,
                      "Pool over the real tokens only (mask pads before a mean, take the last real position) and "
                      "mask pad keys in attention, so padding a document cannot change its prediction.")
    return C.make("baseline.padding", "pass", f"pad positions do not touch the output ({len(x)} padded documents)", ev)
