"""Baseline checks on what a sequence model is trained against: next-token targets (shift), pad positions
kept out of the loss, and the n-gram models' losses as the dumb baselines.

They read the batches the data pipeline produces and the loss function the engine trains with, never a model's
insides, so a bug in the data or the loss is named there rather than blamed on the model.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from recipe import checks as C

LAGS = (-3, -2, -1, 0, 1, 2, 3)       # y[t] compared with x[t + lag]; next-token targets are lag +1


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def lag_agreement(x, y, pad_id: Optional[int] = None) -> dict[int, float]:
    """Share of target positions where y[b, t] == x[b, t + lag], for each lag, over non-pad pairs."""
    x, y = _as_tensor(x), _as_tensor(y)
    T = x.shape[1]
    out = {}
    for lag in LAGS:
        lo, hi = max(0, -lag), min(T, T - lag)         # t such that 0 <= t + lag < T
        if hi - lo < 1:
            continue
        yt, xt = y[:, lo:hi], x[:, lo + lag:hi + lag]
        keep = torch.ones_like(yt, dtype=torch.bool) if pad_id is None else (yt != pad_id) & (xt != pad_id)
        n = int(keep.sum())
        if n:
            out[lag] = float(((yt == xt) & keep).sum()) / n
    return out


_WHAT = {0: ("targets equal the inputs (y[t] == x[t])", "the model learns to copy its input"),
         -1: ("targets are the previous token (y[t] == x[t-1])", "shifted the wrong way"),
         -2: ("targets are two tokens back (y[t] == x[t-2])", "shifted the wrong way"),
         -3: ("targets are three tokens back (y[t] == x[t-3])", "shifted the wrong way")}


def check_target_shift(x, y, th: dict, pad_id: Optional[int] = None,
                       early: Optional[dict[str, Any]] = None) -> C.Check:
    """Next-token targets: y[t] == x[t+1] wherever both exist. `early` (optional) is a short run's result,
    {"loss": val loss, "steps": n, "best_ngram": name, "best_ngram_loss": loss}: a loss far below the best n-gram
    model after a few steps means the answer is in the input, whatever the shift looks like."""
    agree = lag_agreement(x, y, pad_id)
    ev: dict[str, Any] = {"agreement_by_lag": {str(k): round(v, 4) for k, v in agree.items()},
                          "min_agreement": th["min_agreement"], "windows": int(_as_tensor(x).shape[0]),
                          "block": int(_as_tensor(x).shape[1])}
    if early is not None:
        ratio = early["loss"] / early["best_ngram_loss"] if early["best_ngram_loss"] > 0 else math.inf
        ev.update(early_loss=round(early["loss"], 5), early_steps=early["steps"], best_ngram=early["best_ngram"],
                  best_ngram_loss=round(early["best_ngram_loss"], 5), loss_ratio=round(ratio, 4),
                  max_loss_ratio=th["max_loss_ratio"])
    if agree.get(1, 0.0) >= th["min_agreement"]:
        if early is not None and ev["loss_ratio"] < th["max_loss_ratio"]:
            return C.make("baseline.target-shift", "fail", f"the loss fell to {early['loss']:.3g} nats/token in "
                          f"{early['steps']} steps, {ev['loss_ratio']:.0%} of the best n-gram model's "
                          f"({early['best_ngram_loss']:.3g}): the targets leak into the inputs", ev,
                          "Targets are shifted by one, yet the model predicts them almost surely: look for the "
                          "target reaching the input another way (a window one token too long, a non-causal "
                          "layer: see baseline.causal).")
        return C.make("baseline.target-shift", "pass", f"targets are the inputs shifted by one (y[t] == x[t+1] at "
                      f"{agree[1]:.1%} of positions)", ev)
    best = max(agree, key=agree.__getitem__) if agree else None
    if best is not None and agree[best] >= th["min_agreement"]:
        what, why = _WHAT.get(best, (f"targets are {best} tokens ahead (y[t] == x[t+{best}])",
                                     f"off by {best - 1}: the model is asked to skip {best - 1} token(s)"))
        ev["lag"] = best
        return C.make("baseline.target-shift", "fail", f"{what} at {agree[best]:.1%} of positions: {why}", ev,
                      "Build next-token pairs as x = tokens[i : i+T], y = tokens[i+1 : i+T+1] (or shift the "
                      "logits: logits[:, :-1] against tokens[:, 1:]).")
    shown = f"lag +1 {agree.get(1, 0.0):.1%}" + (f", best lag {best:+d} {agree[best]:.1%}" if best is not None else "")
    return C.make("baseline.target-shift", "fail", f"the targets are not the inputs shifted by any lag in "
                  f"{LAGS[0]}..{LAGS[-1]} ({shown}): not next-token targets", ev,
                  "A language model's target at t is the token at t+1 of the same window: check how the data "
                  "pipeline cuts windows and targets.")


def check_padding(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
                  y: torch.Tensor, pad_id: int, th: dict, seed: int = 0) -> C.Check:
    """The loss ignores pad targets: changing the logits at pad positions, or appending more pad positions,
    must leave it unchanged. `loss(logits (B, T, V), targets (B, T))` is the loss the engine trains with."""
    logits, y = logits.detach().float(), _as_tensor(y)
    pad = y == pad_id                                                           # (B, T)
    n_pad = int(pad.sum())
    ev: dict[str, Any] = {"pad_id": pad_id, "pad_positions": n_pad, "positions": int(y.numel()),
                          "tolerance": th["tolerance"]}
    if n_pad == 0:
        return C.make("baseline.padding", "skip", "the batches hold no pad positions: nothing to keep out of "
                      "the loss", ev)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(logits.shape, generator=g).to(logits.device) * 5.0
    base = float(loss(logits, y))
    moved = float(loss(logits + noise * pad[..., None], y))                     # only pad positions change
    extra_logits = torch.randn((y.shape[0], 4, logits.shape[-1]), generator=g).to(logits.device)
    extra = float(loss(torch.cat([logits, extra_logits], 1),
                       torch.cat([y, torch.full((y.shape[0], 4), pad_id, dtype=y.dtype, device=y.device)], 1)))
    keep = ~pad
    reference = float(torch.nn.functional.cross_entropy(logits[keep], y[keep]))  # mean over real targets only
    tol = th["tolerance"] * max(1.0, abs(base))
    ev.update(loss=round(base, 6), loss_with_pad_logits_changed=round(moved, 6),
              loss_with_more_padding=round(extra, 6), mean_over_real_targets=round(reference, 6))
    if abs(moved - base) > tol:
        return C.make("baseline.padding", "fail", f"pad positions count in the loss: changing only their logits "
                      f"moves it {base:.4g} -> {moved:.4g}", ev,
                      f"Pass ignore_index={pad_id} to cross_entropy (or mask the per-token loss and divide by the "
                      "number of real tokens).")
    if abs(extra - base) > tol:
        return C.make("baseline.padding", "fail", f"pad positions count in the loss's denominator: four more pad "
                      f"columns move it {base:.4g} -> {extra:.4g}", ev,
                      "Divide the masked loss by the number of real (non-pad) tokens, not by B*T.")
    return C.make("baseline.padding", "pass", f"pad positions ({n_pad} of {y.numel()}) do not touch the loss", ev)


def check_ngram_baselines(results: dict[str, dict], vocab_size: int) -> C.Check:
    """baseline.dumb for sequences, from recipe.baselines.ngram.fit_baselines: the losses to beat."""
    best = min(results, key=lambda k: results[k]["val"]["loss"])
    ev: dict[str, Any] = {k: {"order": v["order"], "val_loss": round(v["val"]["loss"], 5),
                              "val_perplexity": round(v["val"]["perplexity"], 4),
                              "train_loss": round(v["train"]["loss"], 5), "fit_seconds": v["fit_seconds"]}
                          for k, v in results.items()}
    uniform = math.log(vocab_size)
    ev.update(best=best, metric="val loss (nats/token)", uniform_loss=round(uniform, 5),
              smoothing=next(iter(results.values()))["smoothing"])
    b = results[best]["val"]
    if "unigram" in results:
        uni = results["unigram"]["val"]["loss"]
        if b["loss"] > uni * 0.99:
            return C.make("baseline.dumb", "warn", f"no n-gram model beats the unigram (val {uni:.4g} nats/token): "
                          "token order carries no signal", ev,
                          "Check that documents are not shuffled token by token, and that the tokenizer keeps order.")
    return C.make("baseline.dumb", "pass", f"best n-gram baseline: {best}, val loss {b['loss']:.4g} nats/token "
                  f"(perplexity {b['perplexity']:.4g}; uniform {uniform:.4g})", ev)
