"""regularize's verdicts against what the data allows: bias vs variance (with an estimated reachable error when the
user gives none) and beats-baselines (a paired test of the shipped model against the best dumb baseline, row by row
on the same val split)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from recipe import checks as C
from recipe import tasks
from recipe.errors import RecipeError

# ----------------------------------------------------------------------------- reachable error


@dataclass
class Reachable:
    """The error the bias verdict measures against, and where it came from."""

    error: float
    source: str                              # "regularize.target_error" or the estimate that gave the minimum
    candidates: dict[str, float]             # every estimate considered (empty when the user gave one)


def reachable_error(target_error: Optional[float], baselines: dict, label_noise: Optional[float],
                    task: str = "classification") -> Reachable:
    """The user's `regularize.target_error` when set above 0; else the lowest error something is known to reach on
    this task: each dumb baseline's val error (gradient boosting trained on train, scored on val, among them) and the
    label-noise rate inspect estimated (labels a model cannot get right). The lowest is used: an error one of them
    reached is reachable, so training error above it is avoidable bias; one below it cannot be asked for. For a
    language model the error is the loss itself: the best n-gram's val loss is reachable."""
    if target_error:
        return Reachable(float(target_error), "regularize.target_error", {})
    error = tasks.get(task).error
    candidates = {f"{name} val error (baseline)": error(float(row["val"]))
                  for name, row in baselines.get("dumb", {}).items() if math.isfinite(float(row["val"]))}
    if label_noise is not None and math.isfinite(label_noise):
        candidates["label-noise estimate (inspect)"] = float(label_noise)
    if not candidates:
        return Reachable(0.0, "none available (0 assumed)", {})
    source = min(candidates, key=candidates.get)
    return Reachable(max(0.0, candidates[source]), source, {k: round(v, 4) for k, v in candidates.items()})


def label_noise_rate(inspect_record: Optional[dict]) -> Optional[float]:
    """inspect's estimated label-noise rate (data.label-noise evidence), if it recorded one."""
    for c in (inspect_record or {}).get("checks", []):
        if c.get("id") == "data.label-noise" and c.get("status") != "skip":
            rate = c.get("evidence", {}).get("estimated_noise_rate")
            return float(rate) if isinstance(rate, (int, float)) else None
    return None


def bias_variance(ref, reach: Reachable, th) -> tuple[C.Check, str]:
    train_err, val_err = ref.train_error, ref.val_error
    bias, variance = train_err - reach.error, val_err - train_err
    hb, hv = bias > th["high_bias"], variance > th["high_variance"]
    verdict = "both" if hb and hv else "high bias" if hb else "high variance" if hv else "fine"
    given = reach.source == "regularize.target_error"
    ev = {"train_error": round(train_err, 4), "val_error": round(val_err, 4), "target_error": round(reach.error, 4),
          "target_error_source": reach.source, "avoidable_bias": round(bias, 4), "variance": round(variance, 4),
          "verdict": verdict, "high_bias": th["high_bias"], "high_variance": th["high_variance"]}
    if reach.candidates:
        ev["reachable_error_estimates"] = reach.candidates
    advice = {
        "high bias": "Bigger model or train longer first; more data or regularization will not help a model that "
                     "cannot fit train.",
        "high variance": "Regularize: the ladder below tries each remedy (more data first, then augmentation, ...).",
        "both": "Fit train first (bigger model, longer), then regularize.",
        "fine": "Train and val errors are close to the reachable error: tune next.",
    }[verdict]
    if not given:
        advice += (" The reachable error is an estimate; set regularize.target_error (human-level or Bayes error) "
                   "if you know it.")
    against = (f"target error {reach.error:.3f} (regularize.target_error)" if given else
               f"reachable error {reach.error:.3f} estimated from the {reach.source}")
    status = "warn" if verdict in ("high bias", "both") else "pass"
    return C.make("regularize.bias-variance", status, f"{verdict}: avoidable bias {bias:.3f}, variance {variance:.3f} "
                  f"(train error {train_err:.3f} vs {against})", ev, advice), verdict


# ----------------------------------------------------------------------------- beats-baselines


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the exact one-sided McNemar p-value for k of n discordant rows."""
    if n <= 0 or k <= 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)


def bootstrap_lower(delta: np.ndarray, seed: int, draws: int = 1000, level: float = 0.05) -> float:
    """One-sided paired-bootstrap lower bound of the mean of per-row differences (resampled in chunks)."""
    rng = np.random.default_rng(seed)
    n = len(delta)
    means = []
    chunk = max(1, min(draws, 2_000_000 // max(n, 1)))
    while len(means) < draws:
        k = min(chunk, draws - len(means))
        means.extend(delta[rng.integers(0, n, (k, n))].mean(1).tolist())
    return float(np.quantile(means, level))


def check_beats_baselines(rows: dict[str, np.ndarray], task: str, baselines: dict, th, seed: int,
                          chosen_val_mean: float) -> C.Check:
    """The shipped model against the best dumb baseline on the same val rows. Classification: exact McNemar test on
    the rows where exactly one of them is right; regression and language models: paired bootstrap of the per-row loss
    difference (squared error; nats per token of each val window). Ahead passes, behind within noise (a one-row difference always is) warns, behind beyond it fails."""
    name, alpha = baselines["best_dumb"], th["alpha"]
    n = len(rows["net"])
    ev: dict[str, Any] = {"best_dumb": name, "best_dumb_val": round(baselines["best_dumb_val"], 4), "val_rows": n,
                          "chosen_val_mean_over_seeds": round(chosen_val_mean, 4), "alpha": alpha}
    if tasks.get(task).paired_test == "mcnemar":        # rows are right/wrong
        net_acc, base_acc = float(rows["net"].mean()), float(rows["base"].mean())
        only_net = int((rows["net"] & ~rows["base"]).sum())
        only_base = int((rows["base"] & ~rows["net"]).sum())
        p_worse = binomial_tail(only_base, only_net + only_base)
        ev.update(shipped_val=round(net_acc, 4), baseline_val=round(base_acc, 4), rows_only_net_right=only_net,
                  rows_only_baseline_right=only_base, p_value_net_worse=round(p_worse, 4), test="exact McNemar")
        ahead, worse = only_net > only_base, p_worse < alpha
        diff = (f"{only_net} val rows right only for the network, {only_base} only for {name} "
                f"(exact McNemar p={p_worse:.3g})")
        scores = f"val {net_acc:.4f} vs {name} {base_acc:.4f}"
    else:
        t = tasks.get(task)
        key, label = t.row_loss_key, t.row_loss_label
        d = rows["net"] - rows["base"]                                    # > 0: the network is worse on that row
        lower = bootstrap_lower(d, seed)
        ev.update({f"shipped_{key}": round(float(rows["net"].mean()), 5),
                   f"baseline_{key}": round(float(rows["base"].mean()), 5),
                   f"{key}_difference": round(float(d.mean()), 5), f"{key}_difference_lower_95": round(lower, 5),
                   "test": f"paired bootstrap of per-row differences in {t.loss_unit}"})
        ahead, worse = float(d.mean()) < 0, lower > 0
        diff = (f"per-row {t.loss_label} {float(d.mean()):+.4f} vs {name} (one-sided {1 - alpha:.0%} bound "
                f"{lower:+.4f})")
        scores = f"val {label} {float(rows['net'].mean()):.4f} vs {name} {float(rows['base'].mean()):.4f}"
        if "documents" in rows:      # windows of one document are correlated: the per-document view beside it
            ev["documents"] = document_wins(rows)
    if ahead:
        return C.make("regularize.beats-baselines", "pass", f"the chosen model beats the best dumb baseline: {scores}; "
                      f"{diff}", ev)
    if not worse:
        return C.make("regularize.beats-baselines", "warn", f"the chosen model ties the best dumb baseline within "
                      f"noise: {scores}; {diff}", ev,
                      "The network is no better than the dumb baseline on these val rows: consider shipping the "
                      "baseline, or get more data before tuning.")
    return C.make("regularize.beats-baselines", "fail", f"the chosen model is worse than the best dumb baseline "
                  f"beyond noise: {scores}; {diff}", ev,
                  "A network that loses to a dumb baseline is not worth tuning: revisit the model (overfit-batch) "
                  "or use the baseline.")


def document_wins(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per val document (rows["documents"]: each window's document), the mean per-window difference: how many
    documents the network wins. Evidence only: a split of a few long documents is too few to resample."""
    docs = np.asarray(rows["documents"])
    d = rows["net"] - rows["base"]
    per_doc = {int(k): float(d[docs == k].mean()) for k in np.unique(docs)}
    return {"n": len(per_doc), "network_ahead": sum(v < 0 for v in per_doc.values()),
            "mean_difference": {k: round(v, 4) for k, v in per_doc.items()}}


def dumb_val_rows(ds, baselines: dict, net_out: np.ndarray, y_val: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The shipped network's and the best dumb baseline's per-row results on the same val rows (task.baseline_rows),
    the baseline refitted on train exactly as the baseline stage fitted it."""
    task = tasks.get(ds.task)
    name = baselines["best_dumb"]
    if name in baselines.get("ngram", {}):
        # a count model over the token streams, not an estimator on rows: refit it at its order and score the very
        # targets of every val window (the network's context is the window, the n-gram's its last order-1 tokens)
        from recipe.baselines import ngram

        order = int(baselines["ngram"][name]["order"])
        model = ngram.NGram(order, ds.vocab_size).fit(ds.doc_tokens["train"])
        base = ngram.window_losses(model, ds.doc_tokens["val"], ds.block_size)
        return {**task.baseline_rows(net_out, base, y_val), "documents": np.asarray(ds.val.rows)}
    if ds.inputs == "tokens":
        # text classification: the dumb models read bag-of-words counts, not token ids (stages/baseline_text.py)
        from recipe.stages.baseline_text import bag_of_words

        vocab = ds.vocab_size - 1
        xt, xv = (bag_of_words(s.x, ds.pad_id, vocab) for s in (ds.train, ds.val))
        model = _text_dumb_model(name, seed).fit(xt, ds.train.y)
        return task.baseline_rows(net_out, model.predict(xv), y_val)
    from recipe.stages.baseline import fit_dumb

    dumb = fit_dumb(task.dumb_models(seed)[name], ds)
    base_pred = ds.target(dumb.predict(ds.normalize(ds.val.x)))     # in the network's target space, as y_val
    return task.baseline_rows(net_out, base_pred, y_val)


def _text_dumb_model(name: str, seed: int):
    """The text classifier baselines as stages/baseline_text.text_class_baselines builds them."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    models = {"majority": lambda: DummyClassifier(strategy="most_frequent"),
              "bag_of_words": lambda: LogisticRegression(max_iter=500, random_state=seed)}
    if name not in models:
        raise RecipeError(f"baseline/baselines.json: best_dumb '{name}' is not a text-classification baseline "
                          f"({', '.join(models)}); rerun 'recipe baseline'")
    return models[name]()
