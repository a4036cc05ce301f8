"""Figures for text inspect: document lengths in characters and in tokens per split (matplotlib Agg)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def length_histograms(chars: dict[str, np.ndarray], tokens: dict[str, np.ndarray], block_size: int) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, unit in ((axes[0], chars, "characters"), (axes[1], tokens, "tokens")):
        top = max((int(v.max()) for v in values.values() if len(v)), default=1)
        bins = np.linspace(0, max(top, 1), 41)
        for split, v in values.items():   # counted by numpy, drawn as one outline each: ax.hist draws a patch per bar
            ax.stairs(np.histogram(v, bins=bins)[0], bins, fill=True, alpha=0.4, label=f"{split} (n={len(v)})")
        ax.set_xlabel(f"document length ({unit})")
        ax.set_ylabel("documents")
        ax.tick_params(labelsize=7)
    axes[1].axvline(block_size, color="tab:red", linestyle="--", linewidth=1, label=f"block_size {block_size}")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("document lengths per split", fontsize=9)
    fig.tight_layout()
    return fig
