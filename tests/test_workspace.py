"""The gate (DESIGN §4): missing, failed, stale upstream -> exit 3 naming the stage, key or file."""
import json

from tests.conftest import invoke, record, write_config


def run(cfg, runs, *stages, extra=()):
    out = None
    for s in stages:
        out = invoke(s, cfg, "--runs", runs, *extra)
        assert out.exit_code == 0, out
    return out


def test_missing_upstream_names_the_command(experiment):
    cfg, runs = experiment
    r = invoke("overfit-batch", cfg, "--runs", runs)
    assert r.exit_code == 3
    assert "recipe inspect" in r.stderr
    run(cfg, runs, "inspect")
    r = invoke("overfit-batch", cfg, "--runs", runs)
    assert r.exit_code == 3 and "recipe baseline" in r.stderr
    assert not (runs / "exp" / "overfit-batch" / "record.json").exists()


def test_changed_key_makes_downstream_refuse(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline")
    r = invoke("overfit-batch", cfg, "--runs", runs, "-o", "data.split.val=0.2")
    assert r.exit_code == 3, r
    assert "data.split.val" in r.stderr and "0.15 -> 0.2" in r.stderr


def test_deleted_or_modified_artifact_is_named(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline")
    art = runs / "exp" / "baseline" / "baselines.json"
    art.unlink()
    r = invoke("overfit-batch", cfg, "--runs", runs)
    assert r.exit_code == 3 and "baselines.json" in r.stderr and "missing" in r.stderr
    run(cfg, runs, "baseline")
    art.write_text(art.read_text().replace("0", "1", 1))
    r = invoke("overfit-batch", cfg, "--runs", runs)
    assert r.exit_code == 3 and "modified" in r.stderr


def test_force_proceeds_and_is_recorded(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline")
    (runs / "exp" / "baseline" / "batch.json").unlink()
    r = invoke("overfit-batch", cfg, "--runs", runs, "--force")
    assert r.exit_code == 0, r
    rec = record(runs, "exp", "overfit-batch")
    assert rec["status"] == "forced"
    assert "batch.json" in json.dumps(rec["force_history"])


def _states(cfg, runs, *extra):
    return {s["stage"]: s for s in invoke("status", cfg, "--runs", runs, "--json", *extra).json["stages"]}


def test_rerunning_inspect_unchanged_keeps_downstream_fresh(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline", "overfit-batch")
    run(cfg, runs, "inspect")                  # same config, same data, same artifacts: content decides
    states = _states(cfg, runs)
    assert [states[s]["state"] for s in ("inspect", "baseline", "overfit-batch")] == ["passed"] * 3


def test_rerunning_inspect_with_other_inputs_makes_downstream_stale(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline", "overfit-batch")
    override = ("-o", "checks.data.outliers={z: 8.0, reason: heavy tails}")     # an input of inspect only
    run(cfg, runs, "inspect", extra=override)
    states = _states(cfg, runs, *override)
    assert states["inspect"]["state"] == "passed"
    assert states["baseline"]["state"] == "stale"
    assert "earlier run of inspect" in states["baseline"]["reasons"][0]
    assert states["overfit-batch"]["state"] == "stale"
    r = invoke("overfit-batch", cfg, "--runs", runs, *override)
    assert r.exit_code == 3 and "baseline is stale" in r.stderr and "recipe baseline" in r.stderr


def test_a_check_override_makes_only_its_own_stage_stale(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect", "baseline")
    states = _states(cfg, runs, "-o", "checks.ensemble.gain={severity: warn, reason: few val rows}")
    assert states["inspect"]["state"] == "passed" and states["baseline"]["state"] == "passed"
    states = _states(cfg, runs, "-o", "checks.health.exploding={loss_factor: 20.0, reason: noisy}")   # health.*: trained stages
    assert states["inspect"]["state"] == "passed"
    assert states["baseline"]["state"] == "stale" and "checks.health.exploding" in states["baseline"]["reasons"][0]


def test_config_read_keeps_the_checks_a_stage_runs():
    from recipe.workspace import config_read

    checks = {"data.imbalance": {"severity": "warn"}, "baseline.dumb": {"severity": "warn"},
              "health.exploding": {"loss_factor": 20.0}, "ensemble.gain": {"severity": "warn"}}
    config = {"seed": 0, "task": None, "data": {}, "checks": checks, "model": {}, "train": {}}
    assert set(config_read("inspect", config)["checks"]) == {"data.imbalance"}
    assert set(config_read("baseline", config)["checks"]) == {"baseline.dumb", "health.exploding"}
    assert "model" not in config_read("inspect", config) and "train" in config_read("baseline", config)


def test_a_stage_in_progress_shows_as_running_not_interrupted(experiment, tmp_path):
    import subprocess
    import sys

    cfg, runs = experiment
    run(cfg, runs, "inspect")
    path = runs / "exp" / "baseline" / "record.json"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "recipe", "baseline"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": "baseline", "status": "interrupted", "pid": holder.pid,
                                    "started": "2026-12-01T10:00:00+00:00"}))
        states = _states(cfg, runs)
        assert states["baseline"]["state"] == "running"
        assert states["baseline"]["reasons"] == [f"running (pid {holder.pid}, since 2026-12-01T10:00:00+00:00)"]
        r = invoke("overfit-batch", cfg, "--runs", runs)
        assert r.exit_code == 3 and f"baseline is still running (pid {holder.pid}" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert _states(cfg, runs)["baseline"]["state"] == "interrupted"     # the process is gone: it did not finish


def test_failed_upstream_names_its_checks(tmp_path):
    csv = tmp_path / "nan.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(60)) + "nan,1,0\n")
    cfg = write_config(tmp_path, "name: {name}\ndata: {{source: nan.csv}}\n", name="nan")
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs).exit_code == 1
    r = invoke("baseline", cfg, "--runs", runs)
    assert r.exit_code == 3 and "data.non-finite" in r.stderr


def test_config_remembered_in_latest(experiment):
    cfg, runs = experiment
    run(cfg, runs, "inspect")
    assert (runs / "LATEST").read_text().strip() == str(cfg.resolve())
    r = invoke("baseline", "--runs", runs)
    assert r.exit_code == 0, r


def test_no_config_and_no_latest_is_exit_2(tmp_path):
    r = invoke("baseline", "--runs", tmp_path / "runs")
    assert r.exit_code == 2 and "LATEST" in r.stderr
