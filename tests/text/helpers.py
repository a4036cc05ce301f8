"""Small builders for text tests: a config from a data section, a dataset, the text checks by id."""
from __future__ import annotations

from recipe import checks as C
from recipe import config
from recipe.data import text
from recipe.data.kinds.text import inspect_checks


def cfg(seed: int = 0, **data):
    return config.validate({"name": "t", "seed": seed,
                            "data": {k: str(v) if hasattr(v, "is_dir") else v for k, v in data.items()}})


def load(**data):
    return text.load(cfg(**data))


def by_id(ds, files=None) -> dict:
    import matplotlib.pyplot as plt

    checks, figs = inspect_checks(ds, C.thresholds, files)
    for fig in figs.values():
        plt.close(fig)
    return {c.id: c for c in checks}
