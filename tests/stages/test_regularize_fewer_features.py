"""regularize's fewer_features rung is an ordinary override (model.drop_inputs): it can be kept and chosen."""
from __future__ import annotations

import json

import numpy as np
import torch
import yaml

from tests.conftest import IRIS, check, invoke, record, write_config

CONFIG = IRIS.replace("ladder: [dropout, weight_decay]", "ladder: [fewer_features, dropout]")


def test_fewer_features_is_kept_when_it_beats_the_reference(tmp_path, monkeypatch):
    from recipe.stages import regularize as R

    # planted: feature 1 hurts on val, and dropping it beats the reference beyond noise
    monkeypatch.setattr(R, "_permutation_importance", lambda model, va, ds, seed, precision:
                        np.array([0.2, -0.05, 0.3, 0.25]))
    monkeypatch.setattr(R, "beats", lambda a, b: a.name.split(" ")[0] in ("fewer_features", "chosen")
                        and b.name == "reference")
    cfg = write_config(tmp_path, CONFIG, name="ff")
    runs = tmp_path / "runs"
    for stage in ("inspect", "baseline", "overfit-batch", "regularize"):
        r = invoke(stage, cfg, "--runs", runs, "-q")
        assert r.exit_code in (0, 1) if stage == "regularize" else r.exit_code == 0, (stage, r)
    d = runs / "ff" / "regularize"
    chosen = yaml.safe_load((d / "chosen.yaml").read_text())
    assert chosen["model.drop_inputs"] == [1]
    ladder = check(record(runs, "ff", "regularize"), "regularize.ladder")
    assert ladder["evidence"]["kept"] == ["fewer_features"] and ladder["evidence"]["chosen"] == "fewer_features"
    row = next(r for r in json.loads((d / "ablation.json").read_text())["table"] if r["variant"] == "fewer_features")
    assert row["kept"] and row["overrides"] == {"model.drop_inputs": [1]} and "sepal width" in row["note"]
    # the kept model really ignores that column: changing it changes no output
    from recipe.config import load
    from recipe.data import load as load_data
    from recipe.engine.train import load_checkpoint
    from recipe.models import build

    c = load(cfg, [])
    ds = load_data(c)
    model = build(c.with_overrides(json.loads((d / "chosen.json").read_text())["overrides"]).model, ds.shape, 3)
    model.load_state_dict(load_checkpoint(d / "chosen.pt")["state_dict"])
    model.eval()
    x = torch.randn(50, 4)
    y = x.clone()
    y[:, 1] = torch.randn(50) * 10
    with torch.no_grad():
        assert torch.equal(model(x), model(y))
        y[:, 0] += 3.0
        assert not torch.equal(model(x), model(y))
