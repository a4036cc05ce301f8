"""Data kinds as objects (issue 18.2): which kind reads a config, fingerprints unchanged by the move, and the
registry's refusals."""
import numpy as np
import pytest

from recipe import checks as C
from recipe.config import load as load_config
from recipe.data import fingerprint, kinds, load as load_data
from recipe.errors import ConfigError

# fingerprints of these sources as main computed them before data kinds existed (f93b76d): the gate compares
# them, so a change would call every user's run stale
BEFORE = {"builtin:digits": "e27cb8253d7b8bc8", "builtin:iris": "93950ab0729d289a",
          "builtin:diabetes": "70dad59c86c59fbd"}


def _cfg(tmp_path, source: str, extra: str = ""):
    path = tmp_path / "k.yaml"
    path.write_text(f"name: k\nseed: 0\ndata: {{source: {source}{extra}}}\n")
    return load_config(path)


@pytest.mark.parametrize("source", sorted(BEFORE))
def test_fingerprints_are_the_ones_main_computed_before_the_move(tmp_path, source):
    ds = load_data(_cfg(tmp_path, source))
    assert ds.fingerprint == BEFORE[source]
    assert fingerprint(ds) == BEFORE[source]        # the kind recomputes it from the loaded splits alike


def test_the_kind_follows_the_source_and_the_shape_of_what_was_read(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    folder = _cfg(tmp_path, str(tmp_path / "imgs"))
    assert kinds.choose(folder).name == "images" and load_data(folder).kind == "images"
    iris = _cfg(tmp_path, "builtin:iris")
    assert kinds.choose(iris).name == "table" and load_data(iris).kind == "table"
    # digits are read as a table, and its [1, 8, 8] rows make it images: samples.png and a real data.images
    digits = load_data(_cfg(tmp_path, "builtin:digits"))
    assert digits.kind == "images" and digits.shape == (1, 8, 8)
    flat = load_data(_cfg(tmp_path, "builtin:digits", ", shape: [64]"))
    assert flat.kind == "table" and flat.fingerprint != digits.fingerprint      # the shape is in the fingerprint


def test_both_built_in_kinds_declare_every_table_check_in_record_order():
    ids = [c.id for c in kinds.get("table").checks()]
    assert ids == ["data.load", "data.non-finite", "data.constant", "data.duplicates", "data.leak",
                   "data.label-conflict", "data.imbalance", "data.split-shift", "data.scale", "data.order",
                   "data.size", "data.outliers", "data.signal", "data.label-noise", "data.images"]
    assert [c.id for c in kinds.get("images").checks()] == ids
    probes = [c.id for c in kinds.get("table").checks() if c.probe]
    assert probes == ["data.signal", "data.label-noise"]
    assert all(c.needs[0] == "data.non-finite" for c in kinds.get("table").checks() if c.probe)


def test_registry_refusals():
    class Impostor(kinds.DataKind):
        name = "table"

    with pytest.raises(ValueError, match="data kind 'table' is registered twice"):
        kinds.register(Impostor)

    class Thief(kinds.DataKind):
        name = "thief"
        specs = (kinds.spec("data.leak", "something else", "pass"),)

    with pytest.raises(ValueError, match="adds check 'data.leak', which the catalog already holds"):
        kinds.register(Thief)
    assert "thief" not in kinds.names() and C.CATALOG["data.leak"].catches.startswith("identical rows")
    with pytest.raises(ConfigError, match="data.kind: unknown data kind 'audio' .known: images, table"):
        kinds.get("audio")


def test_a_kind_spec_lists_its_statuses_in_the_catalogs_order():
    s = kinds.spec("data.toy", "a toy", "warn pass", max_x=3)
    assert s.stage == "inspect" and s.statuses == ("pass", "warn") and s.thresholds == {"max_x": 3}


def test_recipe_inspect_imports_no_torch(tmp_path):
    """Loading and inspecting data stays torch-free (the task modules import torch): a fresh `recipe inspect`
    records no torch version, as before data kinds, and its start-up costs no torch import."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "t.yaml"
    cfg.write_text("name: t\nseed: 0\ndata: {source: builtin:diabetes}\n")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "recipe", "inspect", str(cfg), "--runs", str(tmp_path / "runs"), "-q"],
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "runs" / "t" / "inspect" / "record.json").read_text())
    assert "torch" not in rec["versions"] and rec["data_fingerprint"] == BEFORE["builtin:diabetes"]
