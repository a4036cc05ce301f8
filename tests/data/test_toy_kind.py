"""A data kind added by one class in a test module works through `recipe inspect` and `recipe baseline`
without a stage file knowing it (issue 18.2): its reader, its own check, and every table check it inherits."""
from pathlib import Path

import numpy as np
import pytest

from recipe.data import kinds
from recipe.data.kinds.table import TableKind
from recipe.data.sources import arrays
from recipe.errors import DataError
from tests.conftest import check, invoke, record, write_config


class NpyPairKind(TableKind):
    """`data.source: blobs.x.npy` with the labels in blobs.y.npy beside it; warns when x was stored in float64
    with detail that float32 (what the network reads) rounds away."""

    name = "npy-pair"
    priority = 20
    specs = (kinds.spec("data.npy-precision", "float64 inputs that float32 rounds", "pass warn",
                        max_rel_error=1e-9),)

    def claims(self, cfg):
        return (cfg.data.source or "").endswith(".x.npy")

    def read(self, cfg, source):
        xp = cfg.resolve(source)
        yp = xp.with_name(xp.name.replace(".x.npy", ".y.npy"))
        if not yp.exists():
            raise DataError(f"{yp}: the labels of {xp.name} are missing")
        x, y = np.load(xp), np.load(yp)
        table = arrays(x, y, str(xp))
        table.files = [str(xp), str(yp)]
        rel = np.abs(x.astype(np.float32).astype(np.float64) - x) / np.maximum(np.abs(x), 1e-30)
        table.extra["npy"] = {"dtype": str(x.dtype), "max_rel_error": float(rel.max())}
        return table

    def checks(self):
        return super().checks() + [kinds.DataCheck("data.npy-precision", self.check_precision)]

    @staticmethod
    def check_precision(look, th):
        from recipe import checks as C

        found = look.ds.extra["npy"]
        ev = {**found, "limit": th["max_rel_error"]}
        if found["max_rel_error"] > th["max_rel_error"]:
            return C.make("data.npy-precision", "warn", f"{found['dtype']} inputs lose up to "
                          f"{found['max_rel_error']:.1e} relative precision as float32", ev,
                          "Store x as float32, or rescale values whose detail matters.")
        return C.make("data.npy-precision", "pass", f"{found['dtype']} inputs survive float32", ev)


@pytest.fixture
def npy_kind():
    kinds.register(NpyPairKind)
    yield
    kinds.unregister("npy-pair")


def _blobs(folder: Path, dtype, n: int = 400) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 6)) + 2.5 * y[:, None]
    np.save(folder / "blobs.x.npy", x.astype(dtype))
    np.save(folder / "blobs.y.npy", y)
    return folder / "blobs.x.npy"


TOY = """\
name: {name}
seed: 0
data: {{source: {source}}}
model: {{kind: mlp, hidden: [32]}}
train: {{lr: 1.0e-2, batch_size: 32, epochs: 20}}
"""


def test_a_kind_of_one_class_runs_through_inspect_and_baseline(tmp_path, npy_kind):
    cfg = write_config(tmp_path, TOY, source=_blobs(tmp_path, np.float32))
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r
    rec = record(tmp_path / "runs", "exp", "inspect")
    ids = [c["id"] for c in rec["checks"]]
    assert ids[-1] == "data.npy-precision" and "data.leak" in ids and "data.signal" in ids
    own = check(rec, "data.npy-precision")
    assert own["status"] == "pass" and own["evidence"]["dtype"] == "float32"
    assert own["evidence"]["max_rel_error"] == 0.0
    assert check(rec, "data.load")["evidence"]["rows"] == {"train": 280, "val": 60, "test": 60}
    assert check(rec, "data.signal")["status"] == "pass"
    # both files of the pair are the run's data files: editing the labels makes the record stale
    assert sorted(Path(f).name for f in rec["data_files"]) == ["blobs.x.npy", "blobs.y.npy"]
    r = invoke("baseline", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r
    base = record(tmp_path / "runs", "exp", "baseline")
    assert base["status"] == "passed" and base["data_fingerprint"] == rec["data_fingerprint"]
    assert check(base, "baseline.init-loss")["status"] == "pass"


def test_the_kinds_own_check_warns_on_its_planted_case(tmp_path, npy_kind):
    cfg = write_config(tmp_path, TOY, source=_blobs(tmp_path, np.float64))
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r
    own = check(record(tmp_path / "runs", "exp", "inspect"), "data.npy-precision")
    assert own["status"] == "warn" and own["evidence"]["dtype"] == "float64", own
    assert 1e-9 < own["evidence"]["max_rel_error"] < 1e-7    # float32's rounding: half an ulp
    assert "lose up to" in own["title"]


def test_unregistering_removes_the_kind_and_its_check_ids(tmp_path):
    from recipe import checks as C

    kinds.register(NpyPairKind)
    assert "data.npy-precision" in C.CATALOG and "npy-pair" in kinds.names()
    kinds.unregister("npy-pair")
    assert "data.npy-precision" not in C.CATALOG and kinds.names() == ["images", "table", "table-streamed", "text", "text-classes"]
