"""Interrupts that land after the work is recorded: while the summary prints or the interpreter shuts down."""
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import invoke, record, write_config

ROOT = Path(__file__).resolve().parents[2]

LATE_SIGNAL = textwrap.dedent("""\
    import atexit, os, signal, sys, time
    from recipe.cli import main

    def late(sig=signal.{sig}):       # runs during shutdown, after the command has returned
        os.kill(os.getpid(), sig)
        time.sleep(0.3)               # the handler would run here
    atexit.register(late)
    sys.argv = ["recipe", *sys.argv[1:]]
    main()
""")


def _run(tmp_path, sig, *args):
    script = tmp_path / "late.py"
    script.write_text(LATE_SIGNAL.format(sig=sig))
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_sigint_during_shutdown_keeps_exit_0_and_passed_record(tmp_path):
    cfg = write_config(tmp_path, "name: late\ndata: {{source: builtin:iris}}\n")
    r = _run(tmp_path, "SIGINT", "inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])      # was -2: killed by SIGINT at exit
    assert record(tmp_path / "runs", "late", "inspect")["status"] == "passed"
    assert "Traceback" not in r.stderr


def test_sigterm_during_shutdown_keeps_exit_code(tmp_path):
    r = _run(tmp_path, "SIGTERM", "checks")
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr


def test_in_process_commands_leave_the_callers_handlers_alone(tmp_path):
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = write_config(tmp_path, "name: h\ndata: {{source: builtin:iris}}\n")
    assert invoke("inspect", cfg, "--runs", tmp_path / "runs").exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _interrupt_main_thread(sig) -> None:
    """Send `sig` to the main thread itself. os.kill(os.getpid()) lets the kernel pick any thread (torch keeps
    several), and a signal handled late would land in a later test as a stray KeyboardInterrupt."""
    import signal
    import threading

    signal.pthread_kill(threading.main_thread().ident, sig)


def test_deferred_holds_an_interrupt_until_the_block_ends():
    import signal

    import pytest

    from recipe import interrupts

    saved = interrupts.save()
    interrupts.arm()
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():      # as while torch is imported: the block finishes first
                _interrupt_main_thread(signal.SIGTERM)
                done.append("block finished")
        assert done == ["block finished"]
        interrupts.hold()                    # once the outcome is written, a deferred interrupt is dropped
        with interrupts.deferred():
            _interrupt_main_thread(signal.SIGINT)
    finally:
        interrupts.restore(saved)


RESTORE_SPY = textwrap.dedent("""\
    import signal, sys
    from recipe import interrupts

    real = interrupts.restore
    def spy(saved):                   # the moment the command returns, before click and main() exit
        real(saved)
        print("held after the command:", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, file=sys.stderr)
    interrupts.restore = spy
    from recipe.cli import main
    sys.argv = ["recipe", *sys.argv[1:]]
    main()
""")


def test_interrupts_stay_held_from_the_commands_return_to_exit(tmp_path):
    """The wrapper used to put the armed handler back when the command returned, so a Ctrl-C while click
    exited raised KeyboardInterrupt out of main(): a traceback and exit -2 after the record said interrupted."""
    script = tmp_path / "spy.py"
    script.write_text(RESTORE_SPY)
    r = subprocess.run([sys.executable, str(script), "checks"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
    assert "held after the command: True" in r.stderr


class _EatsInterrupt:
    """A destructor that is running when the signal lands: Python swallows the KeyboardInterrupt raised in it."""

    def __del__(self):
        import signal
        import time

        _interrupt_main_thread(signal.SIGINT)
        time.sleep(0.05)


def test_an_interrupt_swallowed_by_a_destructor_still_interrupts_the_stage(tmp_path, monkeypatch, capfd):
    import recipe.stages.inspect as inspect_stage

    real = inspect_stage.run

    def run(cfg, ctx):
        result = real(cfg, ctx)
        _EatsInterrupt()                  # collected at once; its KeyboardInterrupt never reaches the runner
        return result

    monkeypatch.setattr(inspect_stage, "run", run)
    cfg = write_config(tmp_path, "name: eat\ndata: {{source: builtin:iris}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 130, r.stderr[-500:]          # was 0 and 'passed': the user's Ctrl-C was ignored
    assert record(tmp_path / "runs", "eat", "inspect")["status"] == "interrupted"
    assert "Traceback" not in capfd.readouterr().err    # Python's "Exception ignored in" is silenced
