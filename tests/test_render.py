"""Tables for people at 80 columns (CI logs) and wide: compact layout, key=value evidence, the refs legend."""
import io

import pytest
from rich.cells import cell_len
from rich.console import Console

from recipe import checks as C
from recipe.render import COMPACT_BELOW, evidence_text
from tests.conftest import IRIS, invoke, write_config

EVIDENCE = {"ensemble_val": 0.958333, "best_member": "regularize (reference)", "gain": 0.0, "ci95": [0.875, 1.0],
            "members": {"trial 0": 0.9583, "trial 1": 0.9167}, "verified": True, "note": None,
            "configurations": [{"trial": 0, "seeds": [0.9, 0.8]}], "example_rows": list(range(12))}


def _lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def _widest(text: str) -> int:
    return max(cell_len(line) for line in _lines(text))


def _header(text: str) -> str:
    """The column-name row of the first table (the line after its top border)."""
    lines = _lines(text)
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┏"))
    rows = []
    for line in lines[top + 1:]:
        if line.lstrip().startswith("┡"):
            break
        rows.append(line)
    return " ".join(rows)


def _column(text: str, index: int) -> str:
    """One column's text, its wrapped lines joined (table body rows only)."""
    cells = [line.split("│")[index + 1].strip() for line in _lines(text) if line.lstrip().startswith("│")]
    return " ".join(c for c in cells if c)


def test_evidence_is_short_key_value_text():
    text = evidence_text(EVIDENCE, limit=20)
    assert text == ('ensemble_val=0.9583  best_member="regularize (reference)"  gain=0  ci95=0.875,1  '
                    "members.trial_0=0.9583  members.trial_1=0.9167  verified=true  note=none  "
                    "configurations=(1 entries)  example_rows=0,1,2,3,4,…(+7)")
    assert not set("{}[]'") & set(text)           # no Python reprs of dicts or lists
    assert evidence_text(EVIDENCE, limit=3).endswith("gain=0  (+7 more in the record)")
    over = {"rows": 5, "overridden": {"from": "fail", "to": "warn", "reason": "22 val rows"}}
    assert evidence_text(over).startswith('overridden.from=fail  overridden.to=warn  overridden.reason="22 val rows"')


def _checks():
    ev = {**EVIDENCE, "explanation": "a long sentence " * 12}
    return [C.make("regularize.beats-baselines", "fail", "chosen model val 0.9615 is below the linear baseline "
                   "0.9808 by more than noise 0.0190 on 52 val rows", ev,
                   "Compare per-row correctness on the same val rows before trusting this difference."),
            C.make("data.leak", "pass", "no identical rows across splits", {"val_in_train": 0})]


def _render(width: int) -> str:
    buf = io.StringIO()
    C.render(_checks(), Console(width=width, file=buf, highlight=False), title="regularize checks")
    return buf.getvalue()


def test_stage_checks_at_80_columns_are_compact_without_refs():
    text = _render(80)
    assert _widest(text) <= 80
    header = _header(text)
    assert "finding" in header and "refs" not in header and "advice" not in header
    flat = _column(text, 2)
    assert "→ Compare per-row correctness on the same val rows" in flat          # advice under the finding
    assert 'best_member="regularize (reference)"' in flat and "ci95=0.875,1" in flat
    assert "regularize.beats-baselines" in text                                  # the id is never cut
    assert "val_in_train" not in text                                            # a pass shows no evidence
    assert not set("{}[]'") & set(text)


def test_stage_checks_wide_keep_advice_and_refs():
    text = _render(COMPACT_BELOW + 40)
    header = _header(text)
    assert "advice" in header and "refs" in header
    assert "recipe:2 recipe:4" in text and "dev-test:leak" in text and _widest(text) <= COMPACT_BELOW + 40


def test_every_ref_in_the_catalog_is_explained():
    prefixes = {r.split(":")[0] for s in C.CATALOG.values() for r in s.refs}
    assert prefixes <= set(C.REF_SOURCES)
    legend = " ".join(C.REF_SOURCES.values())
    for p in prefixes:
        assert p in legend, p


@pytest.mark.parametrize("columns", [80, 140])
def test_recipe_checks_layout_and_refs_caption(columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    r = invoke("checks")
    assert r.exit_code == 0, r
    text = r.stderr
    flat = " ".join(text.split())       # the caption is plain lines under the table
    assert "recipe:N = step N of Karpathy's 'A Recipe for Training Neural Networks'" in flat
    assert "37:N = item N of '37 Reasons why your Neural Network is not working'" in flat
    ids = [s.id for s in C.CATALOG.values()]
    assert all(f"│ {i} " in text for i in ids)                                    # every id whole, in its cell
    if columns == 80:
        assert _widest(text) <= 80 and "refs" not in _header(text)
        assert "refs (the sources of each check) are left out below 100 columns" in flat
        assert "dev-test:leak" not in text and "statuses: pass warn fail" in _column(text, 2)
    else:
        assert "refs" in _header(text) and "dev-test:leak" in text and flat.count("refs: recipe:N") == 1


def test_stage_output_and_status_fit_80_columns(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, IRIS, name="iris")
    runs = tmp_path / "runs"
    monkeypatch.setenv("COLUMNS", "80")
    r = invoke("inspect", cfg, "--runs", runs)
    assert r.exit_code == 0, r
    table = "\n".join(line for line in _lines(r.stderr) if line[:1] in "┏┃┡│└")
    assert table and _widest(table) <= 80 and "refs" not in _header(r.stderr)
    assert "longest_run=" in r.stderr                                   # iris is sorted by label: data.order warns
    s = invoke("status", cfg, "--runs", runs)
    assert s.exit_code == 0 and _widest(s.stderr) <= 80
    assert "finished" not in _header(s.stderr) and "why / summary" in _header(s.stderr)
    assert "13 pass 1 warn" in s.stderr and "has not run" in s.stderr
    monkeypatch.setenv("COLUMNS", "140")
    wide = invoke("status", cfg, "--runs", runs)
    assert "finished" in _header(wide.stderr) and "checks" in _header(wide.stderr)
