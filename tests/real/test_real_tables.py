"""Real public tables that ship inside PyPI packages (the [test] extras), with configs exactly as `recipe init`
writes them (configs/real/): no check override; every stage passes, or fails only on a real finding that the
message explains (issue 17 acceptance). scripts/real_tables.py prints the same runs with times and sklearn's scores."""
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import check, invoke, record
from tests.real.tables import TABLES, copy_table

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble")


def _prepare(tmp_path: Path, name: str) -> Path:
    copy_table(name, tmp_path)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text((ROOT / "configs" / "real" / f"{name}.yaml").read_text())
    return cfg


def _statuses(rec) -> dict[str, str]:
    return {c["id"]: c["status"] for c in rec["checks"]}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_ships_in_its_package_and_init_proposes_the_stored_config(tmp_path, name):
    t = TABLES[name]
    data = copy_table(name, tmp_path)
    assert sum(1 for _ in data.open()) - 1 == t.rows                          # the real file, every row
    r = invoke("init", tmp_path, "--data", data, "--target", t.target, "--name", name)
    assert r.exit_code == 0, r
    stored = (ROOT / "configs" / "real" / f"{name}.yaml").read_text()
    assert (tmp_path / f"{name}.yaml").read_text() == stored                   # unedited init output
    cfg = yaml.safe_load(stored)
    assert "checks" not in cfg and cfg["task"] == t.task and cfg["data"]["target"] == t.target


@pytest.mark.parametrize("name", sorted(TABLES))
def test_inspect_and_baseline_pass_without_overrides(tmp_path, name):
    cfg, runs = _prepare(tmp_path, name), tmp_path / "runs"
    for stage in ("inspect", "baseline"):
        r = invoke(stage, cfg, "--runs", runs, "-q")
        rec = record(runs, name, stage)
        assert r.exit_code == 0 and rec["status"] == "passed", (stage, [c for c in rec["checks"]
                                                                      if c["status"] == "fail"])
    rec = record(runs, name, "inspect")
    st = _statuses(rec)
    leak = check(rec, "data.leak")
    assert "no sample appears in two splits" not in leak["title"] or leak["status"] == "pass"
    if name == "penguins":           # strings and NaNs imputed; an easy table: nothing to say
        assert st["data.leak"] == st["data.label-noise"] == "pass"
    if name == "computers":          # the same PC configuration sold at other prices: noise, not a leak
        assert leak["status"] == "warn" and "not a leak" in leak["title"], leak
        assert leak["evidence"]["val_inputs_in_train_other_target"] > 0.4 * 939
        assert "Deduplicate" not in leak["advice"]
    if name == "seattle-weather":    # sun, fog and drizzle look alike in four readings: a hard task
        noise = check(rec, "data.label-noise")
        assert noise["status"] == "warn" and "looks noisy or hard" in noise["title"], noise
        assert noise["evidence"]["estimated_noise_rate"] > 0.2 > noise["evidence"]["confident_rate"]
    if name == "housing":
        assert leak["status"] == "warn" and leak["evidence"]["val_in_train"] == 0, leak


# every failure a full run may show on each table, and the words its title must hold to say why it is real
REAL_FINDINGS = {
    # no ensemble beats the best single model on val (or the members are one model), which then ships
    "ensemble.gain": r"beats? the best member|the same model",
}
REAL_FOR = {
    # an MLP that stays below gradient boosting on a price table of discrete configurations (val R2 0.907 vs
    # 0.916 on 939 rows): the finding the issue names as real; later stages then refuse (exit 3)
    "computers": {"regularize.beats-baselines": r"worse than the best dumb baseline beyond noise: .* vs gradient_boosting"},
    # val keeps rising toward the low end of the default learning-rate range and the smallest batch size
    # (rho 0.65 over 20 trials): the search space, not the data, is the problem, and the title says how to widen it
    "housing": {"tune.boundary": r"the optimum lies beyond the range: .* at the (low|high) end"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "computers", "penguins", "seattle-weather", "housing",
])
def test_full_run_passes_or_fails_only_on_real_findings(tmp_path, name):
    cfg, runs = _prepare(tmp_path, name), tmp_path / "runs"
    allowed = {**REAL_FINDINGS, **REAL_FOR.get(name, {})}
    for stage in STAGES:
        r = invoke(stage, cfg, "--runs", runs, "-q")
        rec = record(runs, name, stage)
        failed = {c["id"]: c["title"] for c in rec["checks"] if c["status"] == "fail"}
        assert set(failed) <= set(allowed) and r.exit_code == (1 if failed else 0), (stage, failed)
        for cid, title in failed.items():
            assert re.search(allowed[cid], title), (cid, title)
        if failed and stage != "ensemble":
            assert invoke(STAGES[STAGES.index(stage) + 1], cfg, "--runs", runs, "-q").exit_code == 3
            return
    ens = record(runs, name, "ensemble")
    if "ensemble.gain" in {c["id"] for c in ens["checks"] if c["status"] == "fail"}:   # decided on val: no look
        assert check(ens, "ensemble.test")["status"] == "skip" and "test" not in ens["metrics"]
        return
    assert ens["metrics"]["test"] > (0.9 if name == "penguins" else 0.5)
