"""Baseline checks of a sequence model at init: the loss it starts at (ln V, or the unigram entropy once the
output bias holds the log unigram frequencies), that bias itself, and logits rather than probabilities.

The unigram model (recipe.baselines.ngram, order 1) supplies both references; the wiring measures the model's
loss at init with sequence_checks.window_losses on train windows.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from recipe import checks as C


def unigram_bias(unigram) -> np.ndarray:
    """ln p(w) of the fitted unigram model (V,): the output bias that starts a model at the unigram."""
    return np.log(unigram.next_distribution([]))


def check_init_loss(init_loss: float, vocab_size: int, unigram_loss: float, th: dict) -> C.Check:
    """The loss at init must be near ln V (a uniform guess) or near the unigram's loss on the same windows (the
    output bias at the log unigram frequencies); far above is an overconfident init, far below a leak."""
    uniform = math.log(vocab_size)
    refs = {"uniform (ln V)": uniform, "unigram": unigram_loss}
    rel = {k: abs(init_loss - v) / max(v, 1e-8) for k, v in refs.items()}
    near = min(rel, key=rel.__getitem__)
    tol = th["rel_tolerance"]
    ev: dict[str, Any] = {"initial_loss": round(init_loss, 5), "uniform_loss": round(uniform, 5),
                          "unigram_loss": round(unigram_loss, 5), "nearest": near,
                          "relative_error": round(rel[near], 4), "rel_tolerance": tol}
    if not math.isfinite(init_loss) or rel[near] > tol:
        high = not math.isfinite(init_loss) or init_loss > uniform
        return C.make("baseline.init-loss", "fail", f"initial loss {init_loss:.4g} nats/token is too "
                      f"{'high' if high else 'low'}: expected ~{uniform:.4g} (ln V) or ~{unigram_loss:.4g} (unigram)",
                      ev, "Initial logits are too confident: scale the output layer down (0.02 std, weight tying "
                          "included) and start its bias at zero or the log unigram frequencies." if high else
                          "A loss below the unigram before training means the target reaches the input "
                          "(see baseline.causal and baseline.target-shift).")
    return C.make("baseline.init-loss", "pass", f"initial loss {init_loss:.4g} nats/token ~ the {near} "
                  f"guess {refs[near]:.4g}", ev)


@torch.no_grad()
def mean_prediction(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The mean next-token distribution over every position of x (V,), in eval mode."""
    was = model.training
    try:
        return torch.softmax(model.eval()(x).float(), -1).mean((0, 1)).double().cpu().numpy()
    finally:
        model.train(was)


def check_bias_init(model: nn.Module, x: torch.Tensor, unigram, th: dict) -> C.Check:
    """At init the mean predicted distribution is the unigram (bias set) or uniform (as built, fine); far from
    both (total variation > max_tv) the output layer starts out biased toward tokens for no reason."""
    mean_p = mean_prediction(model, x)
    p_uni = unigram.next_distribution([])
    tv_uni = 0.5 * float(np.abs(mean_p - p_uni).sum())
    tv_uniform = 0.5 * float(np.abs(mean_p - 1.0 / len(mean_p)).sum())
    ev = {"tv_from_unigram": round(tv_uni, 4), "tv_from_uniform": round(tv_uniform, 4), "max_tv": th["max_tv"],
          "top_predicted": np.argsort(-mean_p)[:5].tolist(), "top_unigram": np.argsort(-p_uni)[:5].tolist()}
    if min(tv_uni, tv_uniform) > th["max_tv"]:
        return C.make("baseline.bias-init", "fail", f"mean prediction at init is {tv_uni:.3f} (total variation) from "
                      f"the unigram and {tv_uniform:.3f} from uniform", ev,
                      "Start the output bias at zero or at the log unigram frequencies (unigram_bias), and keep "
                      "the output weights small.")
    what = "the unigram" if tv_uni <= tv_uniform else "uniform"
    return C.make("baseline.bias-init", "pass", f"mean prediction at init is {min(tv_uni, tv_uniform):.3f} from "
                  f"{what}", ev)


def check_loss_input(model: nn.Module, x: torch.Tensor) -> C.Check:
    """Outputs (B, T, V) are logits: not probabilities (rows summing to 1) fed to cross-entropy."""
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x[:16]).float()                                  # (b, T, V)
    finally:
        model.train(was)
    out = out.reshape(-1, out.shape[-1])                                        # (b*T, V)
    rowsum = out.sum(1)
    ev = {"min": float(out.min()), "max": float(out.max()), "mean_row_sum": float(rowsum.mean())}
    if bool((out >= 0).all() and (out <= 1).all()) and torch.allclose(rowsum, torch.ones_like(rowsum), atol=1e-3):
        return C.make("baseline.loss-input", "fail", "next-token outputs are probabilities (each position sums to 1) "
                      "but the loss is cross-entropy on logits", ev,
                      "Remove the final softmax: cross_entropy applies log-softmax itself.")
    if bool((out <= 1e-6).all()) and torch.allclose(torch.logsumexp(out, 1), torch.zeros_like(rowsum), atol=1e-3):
        return C.make("baseline.loss-input", "warn", "next-token outputs are log-probabilities; cross-entropy applies "
                      "log-softmax again (harmless but redundant)", ev, "Return raw logits from the model.")
    return C.make("baseline.loss-input", "pass", "next-token outputs are unnormalized logits, as the loss expects", ev)
