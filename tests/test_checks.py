"""The check catalog tells the truth: every check lists the statuses it can return, and no code returns another."""
import ast
import json
from pathlib import Path

import pytest

from recipe import checks as C
from tests.conftest import invoke

SOURCE = Path(__file__).resolve().parents[1] / "recipe"


def _literal_statuses() -> dict[str, set[str]]:
    """check id -> statuses passed as literals to C.make(...) anywhere in recipe/ (both arms of `a if c else b`)."""
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "make"
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant)):
                continue
            st = node.args[1]
            arms = [st.body, st.orelse] if isinstance(st, ast.IfExp) else [st]
            for arm in arms:
                if isinstance(arm, ast.Constant):
                    found.setdefault(node.args[0].value, set()).add(arm.value)
    return found


def test_every_literal_status_in_the_source_is_in_the_catalog():
    found = _literal_statuses()
    assert len(found) >= 45                       # the scan sees the checks (not an empty pass)
    for cid, statuses in found.items():
        assert statuses <= set(C.CATALOG[cid].statuses), (cid, statuses, C.CATALOG[cid].statuses)
    # the catalog claims no status the code never returns: computed statuses are listed here, audited by hand
    computed = {"data.outliers": {"pass", "warn", "fail"}, "data.scale": {"fail", "warn"},
                "regularize.bias-variance": {"pass", "warn"}, "data.signal": {"skip"}, "data.label-noise": {"skip"}}
    for cid, spec in C.CATALOG.items():
        assert set(spec.statuses) <= found.get(cid, set()) | computed.get(cid, set()), cid


def test_make_refuses_a_status_the_catalog_does_not_list():
    assert C.make("data.outliers", "fail", "x").status == "fail"
    with pytest.raises(ValueError, match="data.load returned 'fail'"):
        C.make("data.load", "fail", "x")


def test_recipe_checks_shows_statuses():
    r = invoke("checks", "--json")
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["baseline.gradcheck"]["statuses"] == ["skip", "pass", "warn", "fail"]
    assert rows["data.load"]["statuses"] == ["pass"] and rows["ensemble.distill"]["statuses"] == ["pass", "warn"]
    r = invoke("checks")
    assert r.exit_code == 0 and "statuses" in r.stderr + r.stdout
