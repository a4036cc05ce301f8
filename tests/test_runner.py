"""The stage runner's progress output: a Rich bar in a terminal, plain timed lines in logs."""
import io

from rich.console import Console

from recipe.stage import _Progress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100, color_system=None), out


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    con, out = _console(terminal=False)
    clock = iter([0.0, 20.0, 25.0, 50.0])              # start; then one reading per update
    monkeypatch.setattr("recipe.runner.time.monotonic", lambda: next(clock))
    with _Progress(con, "regularize (1 job)", 10, disabled=False) as bar:
        bar.update(2, {"train_loss": 0.5, "val_score": 0.97})      # 20 s in: a line
        bar.update(3)                                               # 5 s later: too soon
        bar.advance()                                               # 30 s after the last line
    lines = out.getvalue().splitlines()
    assert lines == ["regularize (1 job): 2/10, 0:20 elapsed, eta 1:20  train_loss 0.5  val_score 0.97",
                     "regularize (1 job): 4/10, 0:50 elapsed, eta 1:15  train_loss 0.5  val_score 0.97"]


def test_progress_in_a_terminal_is_a_bar_not_lines():
    con, out = _console(terminal=True)
    with _Progress(con, "tune", 3, disabled=False) as bar:
        assert bar.bar is not None and not bar.plain
        bar.update(1)


def test_quiet_progress_prints_nothing():
    con, out = _console(terminal=False)
    with _Progress(con, "tune", 3, disabled=True) as bar:
        bar.update(1)
        bar.advance()
    assert out.getvalue() == ""
