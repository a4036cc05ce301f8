"""Fuzzed configs (hypothesis): every mutation of a valid config ends in exit 0/1/2, errors name their key path,
no traceback, each case fast. Runs through the real CLI path (`recipe status`), which loads and validates the
config, applies -o overrides and reads the run folder, without training anything."""
import json
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import invoke
from tests.hardening.fuzz import BASE, KEY_PATH, mutate, override_args, related

SECONDS_PER_CASE = 5.0     # about 0.15 s on an idle machine; CI and shared machines are slower


def run_case(config: dict, touched: list[str], as_override: bool, folder: Path) -> tuple[int, list[str]]:
    """Run one mutated config through `recipe status --json`; assert the contract; return (exit, errors)."""
    path = folder / "fuzz.yaml"
    args = []
    if as_override:
        path.write_text(yaml.safe_dump(BASE, sort_keys=False))
        node = config
        for part in _split(touched[0]):
            node = node[part]
        args = override_args(touched[0], node)
    else:
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    start = time.perf_counter()
    r = invoke("status", path, "--runs", folder / "runs", "--json", *args)   # an escaping exception fails here
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_CASE, (touched, elapsed)
    assert r.exit_code in (0, 1, 2), r
    assert "Traceback" not in r.stderr + r.stdout
    if r.exit_code == 0:
        assert [s["stage"] for s in r.json["stages"]][0] == "inspect"
        return 0, []
    errors = r.json["errors"]
    assert errors, r
    for line in errors:
        m = KEY_PATH.match(line)
        assert m, f"error without a key path: {line!r} (mutated {touched})"
        where = m.group("path")
        assert (where == str(path) or where.startswith("-o") and touched[0] in where or related(where, touched)), \
            f"error names {where!r}, but the mutation touched {touched!r}: {line}"
    return r.exit_code, errors


def _split(touched: str) -> list[str]:
    """Key path -> parts; tune.space keys are dotted themselves (tune.space.train.lr.low)."""
    parts = touched.split(".")
    if parts[:2] == ["tune", "space"] and len(parts) > 2:
        return ["tune", "space", ".".join(parts[2:4])] + parts[4:]
    if parts[0] == "checks" and len(parts) > 2:      # check ids are dotted too (checks.data.imbalance.reason)
        return ["checks", ".".join(parts[1:3])] + parts[3:]
    return parts


@st.composite
def mutated(draw):
    """One or two mutations; with two, errors may name either, and the file (not -o) carries them."""
    config, touched, as_override = BASE, [], False
    for _ in range(draw(st.integers(1, 2))):
        config, touched_now, as_override = mutate(config, lambda options: draw(st.sampled_from(options)))
        touched += touched_now
    return config, touched, as_override and len(touched) == 1


def _fuzz(config_touched):
    config, touched, as_override = config_touched
    with tempfile.TemporaryDirectory() as tmp:
        run_case(config, touched, as_override, Path(tmp))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_fuzzed_configs_quick(case):
    _fuzz(case)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_fuzzed_configs_thousand(case):
    _fuzz(case)


def test_fuzz_finds_errors_and_valid_configs():
    """The mutations are not all no-ops nor all fatal: both outcomes occur (so the checks above can fail)."""
    import random

    rng = random.Random(0)
    codes = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(40):
            config, touched, as_override = mutate(BASE, rng.choice)
            codes.append(run_case(config, touched, as_override, Path(tmp))[0])
    assert codes.count(2) >= 10 and codes.count(0) >= 1, codes


def test_error_names_nested_key_paths(tmp_path):
    cfg = json.loads(json.dumps(BASE))
    cfg["tune"]["space"]["train.lr"]["low"] = "abc"
    cfg["train"]["early_stopping"]["patience"] = 0
    cfg["data"]["split"]["val"] = None
    cfg["train"]["lr"] = float("nan")
    touched = ["tune.space.train.lr.low", "train.early_stopping.patience", "data.split.val", "train.lr"]
    code, errors = run_case(cfg, touched, False, tmp_path)
    assert code == 2
    text = "\n".join(errors)
    for key in touched:
        assert key in text, (key, text)
