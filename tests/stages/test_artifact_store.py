"""Issue 20 item 5: trials' checkpoints in an artifact store every machine of a study reaches (tune.artifacts).

Two working directories that share only a PostgreSQL study and an artifact folder stand for two machines: A runs
the chain and tunes, B runs its own chain and joins the same study with no new trial, and B's ensemble loads A's
trials from the folder instead of retraining them. A missing or corrupt artifact is retrained, with the reason in
the record. The store itself (upload, digest, download) is tested on an in-memory study.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from recipe.errors import ConfigError
from tests.conftest import invoke, record, run_stages, write_config
from tests.stages.test_ensemble import IRIS_OK, STAGES
from tests.stages.test_tune import postgres  # noqa: F401  (the throwaway PostgreSQL server fixture)

SHARED = IRIS_OK.replace("tune: {{trials: 2}}",
                         "tune: {{trials: 3, storage: '{storage}', artifacts: ../shared}}")


# ----------------------------------------------------------------------------- the config key


def test_tune_artifacts_errors_name_the_key(tmp_path):
    for value, words in (('""', "got an empty path"), ("s3://bucket/recipe", "Boto3ArtifactStore")):
        cfg = write_config(tmp_path, IRIS_OK.replace("tune: {{trials: 2}}", f"tune: {{{{artifacts: {value}}}}}"),
                           name="bad")
        r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
        assert r.exit_code == 2, r
        assert "tune.artifacts:" in r.stderr and words in r.stderr, r.stderr


def test_relative_folder_is_resolved_against_the_config_file(tmp_path, monkeypatch):
    from recipe.config import load
    from recipe.stages.tune.artifacts import folder_of, open_store

    (tmp_path / "conf").mkdir()
    cfg_path = write_config(tmp_path / "conf", IRIS_OK.replace("tune: {{trials: 2}}", "tune: {{artifacts: ../art}}"),
                            name="rel")
    monkeypatch.chdir(tmp_path / "conf")     # not the cwd: the config file's folder decides
    cfg = load(cfg_path)
    assert folder_of(cfg) == tmp_path / "art"
    assert folder_of(load(cfg_path, ["tune.artifacts=null"])) is None      # default: the local run folder
    open_store(folder_of(cfg))
    assert (tmp_path / "art").is_dir()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match=r"^tune.artifacts: .*a-file is a file, not a folder"):
        open_store(tmp_path / "a-file")


def test_tune_says_when_the_folder_cannot_be_used(tmp_path):
    from tests.stages.test_tune import make, tune

    cfg, runs = make(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    r = tune(cfg, runs, "-o", f"tune.artifacts={tmp_path / 'taken'}")
    assert r.exit_code == 2, r
    assert f"tune.artifacts: {tmp_path / 'taken'} is a file, not a folder" in " ".join(r.stderr.split())


# ----------------------------------------------------------------------------- the store on its own


def _trial_with_checkpoint(tmp_path: Path):
    import optuna
    import torch

    from recipe.engine import train as E

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    trial = study.ask()
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "ckpt" / "s-0.pt"
    E.save_checkpoint(path, model, {"trial": 0})
    return study, trial, model, path


def test_publish_records_the_id_and_digest_and_a_download_matches(tmp_path):
    import optuna
    import torch

    from recipe.engine import train as E
    from recipe.stages.tune import artifacts as A
    from recipe.workspace import file_digest

    study, trial, model, path = _trial_with_checkpoint(tmp_path)
    store = A.open_store(tmp_path / "shared")
    ref = A.publish(trial, path, store)
    assert trial.user_attrs[A.ATTR] == ref and ref["digest"] == file_digest(path) and ref["file"] == "s-0.pt"
    assert ref["bytes"] == path.stat().st_size
    assert (tmp_path / "shared" / ref["id"]).read_bytes() == path.read_bytes()
    # Optuna's own bookkeeping lists it: another process with only the study finds the id
    (meta,) = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert meta.artifact_id == ref["id"] and meta.filename == "s-0.pt"

    cfg = SimpleNamespace(tune=SimpleNamespace(artifacts=str(tmp_path / "shared")), resolve=Path)
    ctx = SimpleNamespace(dir=tmp_path / "ens", upstream_path=lambda stage, rel: tmp_path / "tune" / rel)
    entry = {"trial": 0, "checkpoint": None, "artifact": ref}
    with A.member_checkpoint(cfg, ctx, entry) as found:
        assert found.reason == "" and found.origin == f"artifact store {tmp_path / 'shared'} (id {ref['id']})"
        state = E.load_checkpoint(found.path)["state_dict"]
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        fetched = found.path
    assert not fetched.exists()                                   # the download was temporary

    # no tune.artifacts on this machine: said, not guessed
    none = SimpleNamespace(tune=SimpleNamespace(artifacts=None), resolve=Path)
    with A.member_checkpoint(none, ctx, entry) as found:
        assert found.path is None and f"artifact store (id {ref['id']})" in found.reason
        assert "sets no tune.artifacts" in found.reason
    # a trial that never reached a store (tune.artifacts unset when it ran, trained elsewhere)
    with A.member_checkpoint(cfg, ctx, {"trial": 1, "checkpoint": "top/1.pt", "artifact": None}) as found:
        assert found.path is None and "none in an artifact store" in found.reason

    # corrupt: one byte more -> refused with both digests
    blob = tmp_path / "shared" / ref["id"]
    blob.write_bytes(blob.read_bytes() + b"\0")
    with A.member_checkpoint(cfg, ctx, entry) as found:
        assert found.path is None and "fails its digest" in found.reason and ref["digest"] in found.reason
        assert file_digest(blob) in found.reason
    # missing
    blob.unlink()
    with A.member_checkpoint(cfg, ctx, entry) as found:
        assert found.path is None and found.reason.startswith(f"artifact {ref['id']} in ") and "is missing" in \
            found.reason
    # an id that would escape the folder is refused by Optuna's store, not followed
    with A.member_checkpoint(cfg, ctx, {**entry, "artifact": {**ref, "id": "../ckpt/s-0.pt"}}) as found:
        assert found.path is None and "is missing" in found.reason


def test_a_failed_upload_names_the_key_and_the_folder(tmp_path):
    import errno

    from recipe.errors import RecipeError
    from recipe.stages.tune import artifacts as A

    _, trial, _, path = _trial_with_checkpoint(tmp_path)
    store = A.open_store(tmp_path / "shared")

    def full(artifact_id, body):
        raise OSError(errno.ENOSPC, "No space left on device")

    store.write = full
    with pytest.raises(RecipeError, match=r"^tune.artifacts: cannot upload trial 0's checkpoint to .*shared "
                                          r"\(No space left on device\)$"):
        A.publish(trial, path, store)
    assert A.ATTR not in trial.user_attrs          # no pointer to an artifact that was never written


def test_a_local_copy_comes_first(tmp_path):
    from recipe.stages.tune import artifacts as A

    (tmp_path / "tune" / "top").mkdir(parents=True)
    (tmp_path / "tune" / "top" / "0.pt").write_bytes(b"local")
    cfg = SimpleNamespace(tune=SimpleNamespace(artifacts=str(tmp_path / "nowhere")), resolve=Path)
    ctx = SimpleNamespace(dir=tmp_path / "ens", upstream_path=lambda stage, rel: tmp_path / stage / rel)
    with A.member_checkpoint(cfg, ctx, {"checkpoint": "top/0.pt", "artifact": {"id": "x", "digest": "y"}}) as f:
        assert f.path == tmp_path / "tune" / "top" / "0.pt" and f.origin == "tune/top/0.pt"


# ----------------------------------------------------------------------------- two machines, end to end


def _study_trials(url: str) -> list:
    import optuna

    from recipe.stages.tune import open_storage

    storage = open_storage(url)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _candidates(runs: Path) -> dict[str, tuple[float, float]]:
    art = json.loads((runs / "iris" / "ensemble" / "ensemble.json").read_text())
    return {c["name"]: (c["val"], c["val_loss"]) for c in art["candidates"] if c["name"].startswith("trial ")}


def test_a_copied_run_folder_without_checkpoints_loads_them_from_the_store(tmp_path):
    """The default suite's cut of the two-machine test: a journal study in a shared folder, and B a copy of A's
    run folder whose tune checkpoints are gone (as on a machine that trained none of them): B's tune rejoins the
    study with no new trial, and B's ensemble loads both members from the store, with A's val numbers."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    journal = tmp_path / "shared-study" / "journal.log"
    cfg_a = write_config(a_dir, SHARED, name="iris", storage=journal)
    run_stages(cfg_a, a_dir / "runs", STAGES)
    top_a = json.loads((a_dir / "runs" / "iris" / "tune" / "tune.json").read_text())["top"]
    assert all(e["artifact"] for e in top_a)
    cfg_b = write_config(b_dir, SHARED, name="iris", storage=journal)
    shutil.copytree(a_dir / "runs" / "iris", b_dir / "runs" / "iris",     # B has not opened its test split
                    ignore=shutil.ignore_patterns("ensemble", "test_looks.json", "test_results"))
    for pt in [*(b_dir / "runs" / "iris" / "tune" / "study" / "checkpoints").glob("*.pt"),
               *(b_dir / "runs" / "iris" / "tune" / "top").glob("*.pt")]:
        pt.unlink()
    before = [t.number for t in _study_trials(str(journal))]
    r = invoke("tune", cfg_b, "--runs", b_dir / "runs", "--force", "-q")
    assert r.exit_code == 0, r
    assert [t.number for t in _study_trials(str(journal))] == before == [0, 1, 2]     # no new trial
    assert all(e["checkpoint"] is None for e in json.loads((b_dir / "runs" / "iris" / "tune" / "tune.json")
                                                           .read_text())["top"])
    r = invoke("ensemble", cfg_b, "--runs", b_dir / "runs", "-q")
    assert r.exit_code in (0, 1), r
    prov = record(b_dir / "runs", "iris", "ensemble")["tune_members"]
    assert prov["retrained_count"] == 0 and prov["loaded_count"] == 2
    assert all(origin.startswith(f"artifact store {tmp_path / 'shared'} (id ") for origin in prov["loaded"].values())
    assert _candidates(b_dir / "runs") == _candidates(a_dir / "runs")


@pytest.mark.slow
def test_second_directory_loads_the_first_ones_trials_from_the_shared_folder(tmp_path, postgres):  # noqa: F811
    a_dir, b_dir, shared = tmp_path / "a", tmp_path / "b", tmp_path / "shared"
    a_dir.mkdir(), b_dir.mkdir()
    cfg_a = write_config(a_dir, SHARED, name="iris", storage=postgres)
    cfg_b = write_config(b_dir, SHARED, name="iris", storage=postgres)    # a copy: ../shared is the same folder
    runs_a, runs_b = a_dir / "runs", b_dir / "runs"

    # machine A: the chain, tune (3 trials), and its own ensemble from its local copies
    run_stages(cfg_a, runs_a, STAGES)
    trials = _study_trials(postgres)
    assert len(trials) == 3 and {t.state.name for t in trials} == {"COMPLETE"}
    top_a = json.loads((runs_a / "iris" / "tune" / "tune.json").read_text())["top"]
    assert len(top_a) == 2 and all(e["checkpoint"] and e["artifact"] for e in top_a)
    by_number = {t.number: t for t in trials}
    for e in top_a:      # the trial in the shared study says where its checkpoint is; the bytes are A's
        assert by_number[e["trial"]].user_attrs["artifact"] == e["artifact"]
        assert (shared / e["artifact"]["id"]).read_bytes() == (runs_a / "iris" / "tune" / e["checkpoint"]).read_bytes()
    rec_a = record(runs_a, "iris", "ensemble")
    assert rec_a["tune_members"]["loaded"] == {f"trial {e['trial']}": f"tune/{e['checkpoint']}" for e in top_a}

    # machine B: its own chain joins the same study and finds it complete: no new trial, no local checkpoint
    run_stages(cfg_b, runs_b, STAGES[:-1], may_fail=())
    assert [t.number for t in _study_trials(postgres)] == [t.number for t in trials]
    top_b = json.loads((runs_b / "iris" / "tune" / "tune.json").read_text())["top"]
    assert [(e["trial"], e["artifact"]) for e in top_b] == [(e["trial"], e["artifact"]) for e in top_a]
    assert all(e["checkpoint"] is None for e in top_b)
    assert not list((runs_b / "iris" / "tune" / "study" / "checkpoints").glob("*.pt"))

    r = invoke("ensemble", cfg_b, "--runs", runs_b)
    assert r.exit_code in (0, 1), r
    rec = record(runs_b, "iris", "ensemble")
    prov = rec["tune_members"]
    assert prov["retrained_count"] == 0 and prov["retrained"] == {} and prov["loaded_count"] == 2
    assert prov["loaded"] == {f"trial {e['trial']}": f"artifact store {shared} (id {e['artifact']['id']})"
                              for e in top_a}
    assert "retrained" not in r.stderr
    assert not (runs_b / "iris" / "ensemble" / "runs").exists() or \
        not list((runs_b / "iris" / "ensemble" / "runs").glob("trial_*"))             # nothing trained for them
    assert _candidates(runs_b) == _candidates(runs_a)          # A's checkpoints give the same val numbers, exactly
    assert not list((runs_b / "iris" / "ensemble").glob(".artifact-*"))              # downloads cleaned up

    # a missing artifact file: that trial is retrained, and the record and the output say why
    gone, bad = top_a[0], top_a[1]
    (shared / gone["artifact"]["id"]).unlink()
    blob = shared / bad["artifact"]["id"]
    original = blob.read_bytes()
    r = invoke("ensemble", cfg_b, "--runs", runs_b, "--force")
    assert r.exit_code in (0, 1), r
    prov = record(runs_b, "iris", "ensemble")["tune_members"]
    assert prov["retrained_count"] == 1 and prov["loaded_count"] == 1
    reason = prov["retrained"][f"trial {gone['trial']}"]
    assert reason == f"artifact {gone['artifact']['id']} in {shared} is missing (not found)"
    assert f"ensemble: trial {gone['trial']} retrained: artifact {gone['artifact']['id']}" in \
        " ".join(r.stderr.split())
    assert (runs_b / "iris" / "ensemble" / "runs" / f"trial_{gone['trial']}" / "metrics.jsonl").is_file()
    members = json.loads((runs_b / "iris" / "ensemble" / "ensemble.json").read_text())["members"]
    assert all(m["info"]["retrained_because"] == reason for m in members if m["source"] == "retrained")

    # a corrupt artifact (same size, one byte flipped): retrained too, never loaded as if it were A's model
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    r = invoke("ensemble", cfg_b, "--runs", runs_b, "--force", "-q")
    assert r.exit_code in (0, 1), r
    prov = record(runs_b, "iris", "ensemble")["tune_members"]
    assert prov["retrained_count"] == 2 and prov["loaded_count"] == 0
    assert "fails its digest" in prov["retrained"][f"trial {bad['trial']}"]
    assert bad["artifact"]["digest"] in prov["retrained"][f"trial {bad['trial']}"]
    shutil.rmtree(shared)
