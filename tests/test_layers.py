"""Dependencies point down (docs/architecture.md): the runner imports the stages, never the reverse, and the
engine, data, models and checks import no stage, no runner and no CLI."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "recipe"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _offenders(files, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{f.name} imports {m}" for f in files for m in _imports(f)
                  if any(m == x or m.startswith(x + ".") for x in forbidden))


def test_stages_import_the_stage_interface_not_the_runner_or_cli():
    assert _offenders((PKG / "stages").rglob("*.py"), ("recipe.runner", "recipe.cli")) == []


def test_lower_layers_import_no_stage_runner_or_cli():
    lower = [*(PKG / "engine").rglob("*.py"), *(PKG / "data").rglob("*.py"), *(PKG / "baselines").rglob("*.py"),
             *(PKG / "config").rglob("*.py"), *(PKG / "tasks").rglob("*.py"),
             *(PKG / f for f in ("models.py", "checks.py", "workspace.py", "models_seq.py", "stage.py", "threads.py"))]
    assert _offenders(lower, ("recipe.stages", "recipe.runner", "recipe.cli")) == []


def test_the_detector_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recipe.runner import StageResult\n")
    assert _offenders([bad], ("recipe.runner",)) == ["bad.py imports recipe.runner",
                                                     "bad.py imports recipe.runner.StageResult"]


def test_tune_and_ensemble_modules_are_small_and_say_what_they_are_for():
    """Issue 18 item 3: the tune and ensemble packages are split by job; no module over 400 lines, each opens
    with a docstring."""
    files = sorted([*(PKG / "stages" / "tune").glob("*.py"), *(PKG / "stages" / "ensemble").glob("*.py"),
                    *(PKG / "config").glob("*.py")])
    assert len(files) >= 20
    long = [f"{f.parent.name}/{f.name}: {n}" for f in files if (n := len(f.read_text().splitlines())) > 400]
    bare = [f"{f.parent.name}/{f.name}" for f in files if not ast.get_docstring(ast.parse(f.read_text()))]
    assert long == [] and bare == []
