"""Pictures a person looks at first. Every function returns a matplotlib Figure (Agg, no screen)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def class_balance(counts: dict[str, Sequence[int]], classes: Sequence) -> plt.Figure:
    """Bars of class counts, one group per split."""
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(classes) + 2), 3))
    width = 0.8 / max(len(counts), 1)
    pos = np.arange(len(classes))
    for i, (split, c) in enumerate(counts.items()):
        ax.bar(pos + i * width, c, width, label=f"{split} (n={sum(c)})")
    ax.set_xticks(pos + width * (len(counts) - 1) / 2, [str(c) for c in classes], rotation=45 if len(classes) > 12 else 0)
    ax.set_ylabel("samples")
    ax.set_title("class balance per split")
    ax.legend(fontsize=8)
    return fig


def target_histogram(values: dict[str, np.ndarray]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    for split, v in values.items():
        v = v[np.isfinite(v)]
        ax.hist(v, bins=40, alpha=0.5, label=f"{split} (n={len(v)})", density=True)
    ax.set_title("target distribution per split")
    ax.legend(fontsize=8)
    return fig


def image_grid(x: np.ndarray, shape: Sequence[int], labels: Sequence[str], title: str, cols: int = 8) -> plt.Figure:
    """A grid of samples (C,H,W per row of x) with their labels."""
    n = len(x)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        img = np.asarray(x[i], dtype=np.float32).reshape(shape)
        img = img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))
        lo, hi = np.nanmin(img), np.nanmax(img)
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax = axes.ravel()[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(str(labels[i]), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def feature_histograms(x: np.ndarray, names: Sequence[str], columns: Sequence[int], title: str) -> plt.Figure:
    k = max(1, len(columns))
    cols = min(4, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, j in zip(axes.ravel(), columns):
        ax.axis("on")
        v = x[:, j]
        v = v[np.isfinite(v)]
        ax.hist(v, bins=30, color="tab:blue")
        ax.set_title(str(names[j])[:30], fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    # fixed margins: tight_layout and a tight bounding box each measure every label again (a second at 1M rows)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.86 if rows == 1 else 0.9, hspace=0.45, wspace=0.3)
    return fig


def curves(series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str,
           logy: bool = False, x: Optional[dict[str, Sequence[float]]] = None, logx: bool = False,
           mark: Optional[float] = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, ys in series.items():
        xs = (x or {}).get(name, range(1, len(ys) + 1))
        ax.plot(list(xs), list(ys), label=name)
    if mark is not None:
        ax.axvline(mark, color="tab:red", linestyle="--", linewidth=1, label=f"chosen {mark:.3g}")
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def bars(labels: Sequence[str], values: Sequence[float], errors: Sequence[float], title: str,
         ylabel: str, reference: Optional[float] = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(labels) + 2), 3.4))
    ax.bar(range(len(labels)), values, yerr=errors, capsize=3, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    if reference is not None:
        ax.axhline(reference, color="tab:red", linestyle="--", linewidth=1, label="reference")
        ax.legend(fontsize=8)
    lo = min(v - e for v, e in zip(values, errors)) if values else 0
    hi = max(v + e for v, e in zip(values, errors)) if values else 1
    pad = (hi - lo) * 0.3 + 1e-3
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_matrix(counts: np.ndarray, classes: Sequence, title: str = "confusion matrix (test)") -> plt.Figure:
    """Counts of true (rows) vs predicted (columns) labels, each cell annotated; the diagonal is right."""
    counts = np.asarray(counts)
    k = len(classes)
    size = max(3.6, 0.42 * k + 1.6)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else ("tab:red" if i != j else "black"))
    labels = [str(c)[:12] for c in classes]
    ax.set_xticks(range(k), labels, rotation=45 if k > 8 else 0, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return fig


def reliability_diagram(confidence: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, ece: float,
                        title: str = "reliability diagram (test)") -> plt.Figure:
    """Accuracy vs mean confidence per confidence bin; the diagonal is perfect calibration."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.6, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfectly calibrated")
    keep = counts > 0
    ax.plot(confidence[keep], accuracy[keep], "o-", color="tab:blue", label=f"model (ECE {ece:.3f})")
    for c, a in zip(confidence[keep], accuracy[keep]):
        ax.plot([c, c], [c, a], color="tab:red", linewidth=1, alpha=0.6)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    centers = np.linspace(0, 1, len(counts) + 1)
    hist.bar((centers[:-1] + centers[1:]) / 2, counts, width=1 / len(counts), color="tab:blue", alpha=0.6)
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("rows")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    return fig


def predicted_vs_true(pred: np.ndarray, true: np.ndarray, title: str = "predicted vs true (test)") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(true, pred, s=6, alpha=0.5)
    lo, hi = float(np.nanmin([true.min(), pred.min()])), float(np.nanmax([true.max(), pred.max()]))
    ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
