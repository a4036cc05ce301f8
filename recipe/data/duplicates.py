"""data.duplicates: rows of train that copy an earlier train row, told apart from rows that merely share their
inputs with another row (two sales of the same PC at different prices: real samples, not copies).

A copy repeats the inputs AND the target; it overweights one sample and is worth removing. Equal inputs with a
different target are the label-conflict / noise story, and deduplicating on inputs would throw those samples
away, so they never make this check warn.
"""
from __future__ import annotations

import numpy as np

from recipe import checks as C
from recipe.data.leak import with_target

EXAMPLES = 5


def _later_repeats(h: np.ndarray) -> np.ndarray:
    """Mask of rows whose hash equals an earlier row's."""
    mask = np.zeros(len(h), bool)
    if len(h) > 1:
        _, first = np.unique(h, return_index=True)
        mask[:] = True
        mask[first] = False
    return mask


def check_duplicates(train, th, input_hashes: np.ndarray) -> C.Check:
    copies = _later_repeats(with_target(input_hashes, train.y))
    same_inputs = _later_repeats(input_hashes) & ~copies
    n, ncopy, nshared = len(input_hashes), int(copies.sum()), int(same_inputs.sum())
    frac = ncopy / max(n, 1)
    ev = {"copied_rows": ncopy, "fraction": round(frac, 4), "example_rows": [int(r) for r in train.rows[copies][:EXAMPLES]],
          "same_inputs_other_target": nshared, "max_fraction": th["max_fraction"]}
    if nshared:
        ev["example_rows_same_inputs"] = [int(r) for r in train.rows[same_inputs][:EXAMPLES]]
    shared = (f"; {nshared} more share their inputs with another row but not its target (real samples, "
              "see data.label-conflict)") if nshared else ""
    if frac > th["max_fraction"]:
        return C.make("data.duplicates", "warn", f"{ncopy} rows of train ({frac:.1%}) copy an earlier row, inputs and "
                      f"target{shared}", ev,
                      "Deduplicate exact copies in train (same inputs and target): they overweight some samples and "
                      "inflate train scores. Keep rows that only share inputs.")
    return C.make("data.duplicates", "pass", f"{ncopy} exact copies in train ({frac:.1%}){shared}", ev)
