"""Shared engine fixtures: digits as device tensors, loaded once per module."""
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def digits():
    from recipe.config import validate
    from recipe.data import load
    from recipe.engine import train as E

    cfg = validate({"name": "s", "seed": 0, "data": {"source": "builtin:digits"},
                    "model": {"kind": "mlp", "hidden": [24]}, "train": {"lr": 1e-3, "epochs": 3, "batch_size": 64}})
    cfg._base_dir = Path(".")
    ds = load(cfg)
    dev = torch.device("cpu")
    return cfg, ds, E.to_tensors(ds, ds.train, dev), E.to_tensors(ds, ds.val, dev)
