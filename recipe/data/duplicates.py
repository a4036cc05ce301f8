"""data.duplicates: rows of train that copy an earlier train row, told apart from rows that merely share their
inputs with another row (two sales of the same PC at different prices: real samples, not copies).

A copy repeats the inputs AND the target; it overweights one sample and is worth removing. Equal inputs with a
different target are the label-conflict / noise story, and deduplicating on inputs would throw those samples
away, so they never make this check warn.
"""
from __future__ import annotations

import numpy as np

from recipe import checks as C
from recipe.data.leak import derive, later_repeats

EXAMPLES = 5


def _later_mask(h: np.ndarray) -> np.ndarray:
    """Mask of rows whose hash equals an earlier row's (the first of each value is not one)."""
    mask = np.ones(len(h), bool)
    mask[np.unique(h, return_index=True)[1]] = False
    return mask


def check_duplicates(train, th, hashes: dict[str, np.ndarray]) -> C.Check:
    """`hashes`: train's input row hashes under "train" (leak.derive adds the sorted and with-target ones)."""
    derive(hashes, {"train": train})
    # a copy repeats inputs and target, so every copy also repeats its inputs: the counts subtract
    ncopy = later_repeats(hashes["train_xy_sorted"])
    nshared = later_repeats(hashes["train_sorted"]) - ncopy
    n = len(hashes["train"])
    frac = ncopy / max(n, 1)
    ev = {"copied_rows": ncopy, "fraction": round(frac, 4), "example_rows": [], "same_inputs_other_target": nshared,
          "max_fraction": th["max_fraction"]}
    if ncopy or nshared:    # which rows: only worth the stable sorts when some repeat
        copies = _later_mask(hashes["train_xy"])
        ev["example_rows"] = [int(r) for r in train.rows[copies][:EXAMPLES]]
        if nshared:
            same_inputs = _later_mask(hashes["train"]) & ~copies
            ev["example_rows_same_inputs"] = [int(r) for r in train.rows[same_inputs][:EXAMPLES]]
    shared = (f"; {nshared} more share their inputs with another row but not its target (real samples, "
              "see data.label-conflict)") if nshared else ""
    if frac > th["max_fraction"]:
        return C.make("data.duplicates", "warn", f"{ncopy} rows of train ({frac:.1%}) copy an earlier row, inputs and "
                      f"target{shared}", ev,
                      "Deduplicate exact copies in train (same inputs and target): they overweight some samples and "
                      "inflate train scores. Keep rows that only share inputs.")
    return C.make("data.duplicates", "pass", f"{ncopy} exact copies in train ({frac:.1%}){shared}", ev)
