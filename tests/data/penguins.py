"""A penguins-style table generated on the spot (no network): string categories, NaNs, string labels, booleans."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIES = ("Adelie", "Chinstrap", "Gentoo")
ISLANDS = ("Biscoe", "Dream", "Torgersen")


def write_penguins(path: Path, n: int = 450, seed: int = 0, missing: bool = True) -> Path:
    """Columns: species (label), island, bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex, tagged.

    Gentoo have shallow bills; Adelie vs Chinstrap is a curved (radial) boundary in bill length x flipper length,
    so a linear model cannot be perfect and a small MLP has something to learn. About 4% of numbers and of `sex`
    are missing (empty / NA), as in the real Palmer penguins file.
    """
    rng = np.random.default_rng(seed)
    home = {"Adelie": ISLANDS, "Chinstrap": ("Dream", "Torgersen"), "Gentoo": ("Biscoe", "Dream")}
    lines = ["species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,tagged"]
    for i in range(n):
        length, depth, flipper = rng.uniform(34, 54), rng.uniform(13, 21), rng.uniform(175, 230)
        mass = 2000 + 15 * flipper + rng.normal(0, 300)
        if depth < 15.5:
            sp = "Gentoo"
        else:
            radius = np.hypot((length - 44) / 5, (flipper - 202) / 14)
            sp = "Adelie" if radius < 1.1 else "Chinstrap"
        cells = [f"{v:.1f}" for v in (length, depth, flipper, mass)]
        if missing:
            cells = ["" if rng.random() < 0.04 else v for v in cells]
        sex = "NA" if missing and rng.random() < 0.04 else ("male" if rng.random() < 0.5 else "female")
        island = home[sp][int(rng.integers(len(home[sp])))]
        tagged = "true" if rng.random() < 0.3 else "false"
        lines.append(",".join([sp, island, *cells, sex, tagged]))
    path.write_text("\n".join(lines) + "\n")
    return path


CONFIG = """\
name: {name}
seed: 0
data:
  source: penguins.csv
  target: species
{extra}model: {{kind: mlp, hidden: [32]}}
train: {{lr: 1.0e-2, batch_size: 16, epochs: 30}}
overfit: {{samples: 16, steps: 150}}
regularize: {{seeds: 2, ladder: [dropout, weight_decay]}}
tune: {{trials: 3, space: {{train.lr: {{low: 5.0e-3, high: 2.0e-2, log: true}}}}}}
ensemble: {{top_k: 2}}
"""
