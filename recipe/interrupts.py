"""Ctrl-C and SIGTERM: both become KeyboardInterrupt while work is under way (exit 130, record
'interrupted'), are held while torch is imported (deferred), and are ignored once the work is recorded, so
an interrupt that lands while the process prints its summary or shuts down cannot turn an honest exit 0
into a death by signal (exit -2)."""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

_requested = False     # an interrupt was raised since the stage began (see swallowed())
_owned = False         # main() runs this process: once a command returns, interrupts stay held until exit


def _on_interrupt(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable, _default=sys.unraisablehook):
    """A KeyboardInterrupt raised inside a destructor is swallowed by Python with a traceback on stderr; the
    stage re-raises it itself at its end (swallowed()), so the traceback is noise."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested:
        return
    _default(unraisable)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def arm() -> None:
    """Interrupts raise KeyboardInterrupt (the default for SIGINT; SIGTERM made to match)."""
    if _main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)
        signal.signal(signal.SIGTERM, _on_interrupt)
        sys.unraisablehook = _quiet_unraisable


def hold() -> None:
    """Ignore further interrupts: the outcome is written, only printing and exiting remain."""
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def save() -> tuple:
    """The current handlers, to put back when a command run in-process (tests) returns."""
    if not _main_thread():
        return ()
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def own() -> None:
    """Called by the console entry point: this process is recipe's, so a command that returns keeps interrupts
    held (restore() holds instead of putting the armed handlers back) and a signal while click exits cannot
    turn the exit code into a KeyboardInterrupt traceback or a death by signal."""
    global _owned
    _owned = True


def begin() -> None:
    """A stage starts: forget interrupts raised (and handled) before it."""
    global _requested
    _requested = False


def swallowed() -> bool:
    """An interrupt was raised during the stage and the stage still returned: something (a destructor, a
    library's broad except) swallowed the KeyboardInterrupt. The caller treats the stage as interrupted."""
    return _requested


def restore(saved: tuple) -> None:
    """Put back the handlers of save() when a command returns (in-process callers: tests); held under main()."""
    if _owned:
        hold()
    else:
        _put_back(saved)


def _put_back(saved: tuple) -> None:
    if saved and _main_thread():
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


@contextmanager
def deferred():
    """Hold interrupts until the block ends, then raise KeyboardInterrupt. For importing torch: an interrupt
    inside its import leaves C++ state half-built, and the process then dies at exit by SIGINT or SIGABRT
    instead of exiting 130."""
    if not _main_thread():
        yield
        return
    got: list[int] = []
    saved = save()
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        _put_back(saved)
    live = {signal.SIGINT: saved[0], signal.SIGTERM: saved[1]}
    if any(live[s] is not signal.SIG_IGN for s in got):
        _on_interrupt(got[0], None)
