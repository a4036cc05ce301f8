"""data.label-noise: confident learning (Northcutt et al.) on out-of-fold probabilities of a linear probe,
with label errors told apart from a hard problem.

On a hard but clean task (overlapping classes, Bayes error 30%) a probe errs often and confident learning
flags about as many rows as it errs on, each with the given label still fairly likely. Mislabeled rows look
different: the probe is confident the given label is wrong (it gives it at most `confident_p`). So the check
fails only when such confident flags alone exceed `max_noise_rate`, and otherwise says the task looks
noisy or hard, with the probe's own error rate next to the flagged fraction.
"""
from __future__ import annotations

import numpy as np

from recipe import checks as C

EXAMPLES = 5


def _skip(title: str):
    return C.make("data.label-noise", "skip", title), np.array([], int)


def check_label_noise(ds, th, seed: int, probe_data) -> tuple[C.Check, np.ndarray]:
    """`probe_data()` gives (normalized train rows, labels, their train positions), as inspect samples them."""
    if not ds.has_classes:
        return _skip(f"{ds.task}: label noise is judged by data.outliers")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y, idx = probe_data()
    k = ds.num_classes
    folds = min(5, int(np.bincount(y, minlength=k).min()))
    if folds < 2 or len(y) > len(ds.train.y):
        return _skip("a class has fewer than 2 train samples")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    probs = np.zeros((len(y), k))
    got = cross_val_predict(LogisticRegression(max_iter=100, tol=1e-3), x, y, cv=cv, method="predict_proba")
    probs[:, :got.shape[1]] = got
    thresholds = np.array([probs[y == j, j].mean() if (y == j).any() else 1.0 for j in range(k)])
    above = probs >= thresholds[None, :]
    # confident joint: each sample goes to the most likely class among those above their threshold
    guess = np.where(above, probs, -1.0).argmax(1)
    off = above.any(1) & (guess != y)
    given = probs[np.arange(len(y)), y]
    confident = off & (given <= th["confident_p"])      # the probe is sure the given label is wrong
    n_off, n_conf = int(off.sum()), int(confident.sum())
    n = max(len(y), 1)
    rate, conf_rate = n_off / n, n_conf / n
    # labels the probe finds this unlikely that would still occur if the probe were calibrated and labels clean
    chance = float(np.where(probs <= th["confident_p"], probs, 0.0).sum(1).mean())
    order = np.flatnonzero(off)[np.argsort(given[off])]   # lowest self-confidence first
    suspects = idx[order[:20]]                            # positions in train, sampled or not
    probe_acc = float((probs.argmax(1) == y).mean())
    ev = {"estimated_noise_rate": round(rate, 4), "suspects": n_off, "confident_suspects": n_conf,
          "confident_rate": round(conf_rate, 4), "confident_p": th["confident_p"],
          "chance_rate_if_clean": round(chance, 4), "probe_error": round(1 - probe_acc, 4),
          "max_noise_rate": th["max_noise_rate"], "probe_accuracy": round(probe_acc, 4), "rows_used": len(y),
          "sampled": len(y) < len(ds.train.y), "train_rows": len(ds.train.y),
          "probe": "logistic regression, out-of-fold", "folds": folds,
          "mean_given_label_probability_of_suspects": round(float(given[off].mean()), 4) if n_off else None,
          "most_suspicious_rows": [int(ds.train.rows[i]) for i in suspects[:10]],
          "given_vs_likely": [f"{ds.classes[y[i]]}->{ds.classes[guess[i]]}" for i in order[:EXAMPLES]]}
    numbers = (f"{rate:.1%} of train labels flagged, {conf_rate:.1%} confidently (the probe gives the label "
               f"<= {th['confident_p']:.0%}), probe error {1 - probe_acc:.1%}")
    if rate > th["max_noise_rate"] and probe_acc < th["min_probe_accuracy"]:
        # a weak probe spreads its probability over many classes: noise and a hard problem look alike
        return C.make("data.label-noise", "warn", f"the task looks noisy or hard, not mislabeled: {numbers}; the "
                      f"probe is weak so label noise cannot be told from a hard problem", ev,
                      "Review the listed rows; if they are right, the task is hard for a linear model, not mislabeled."), suspects
    if conf_rate > th["max_noise_rate"]:
        return C.make("data.label-noise", "fail", f"about {conf_rate:.1%} of train labels look wrong: {numbers}", ev,
                      "Review the most suspicious rows and relabel; noisy labels cap accuracy and mislead tuning."), suspects
    if rate > th["max_noise_rate"]:
        return C.make("data.label-noise", "warn", f"the task looks noisy or hard, not mislabeled: {numbers}", ev,
                      "Flags that the probe is not sure of come with a hard problem (overlapping classes); expect "
                      "errors near the probe's, and review the listed rows if labels may be wrong."), suspects
    if rate > th["max_noise_rate"] / 2:
        return C.make("data.label-noise", "warn", f"about {rate:.1%} of train labels look wrong ({numbers})", ev,
                      "Review the listed rows (label_noise_suspects.png)."), suspects
    return C.make("data.label-noise", "pass", f"estimated label noise {rate:.1%} ({n_off} suspects listed)", ev), suspects
