"""Ctrl-C and SIGTERM: both become KeyboardInterrupt while work is under way (exit 130, record
'interrupted'), are held while torch is imported (deferred), and are ignored once the work is recorded, so
an interrupt that lands while the process prints its summary or shuts down cannot turn an honest exit 0
into a death by signal (exit -2)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def arm() -> None:
    """Interrupts raise KeyboardInterrupt (the default for SIGINT; SIGTERM made to match)."""
    if _main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _on_sigterm)


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


def restore(saved: tuple) -> None:
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
        restore(saved)
    live = {signal.SIGINT: saved[0], signal.SIGTERM: saved[1]}
    if any(live[s] is not signal.SIG_IGN for s in got):
        raise KeyboardInterrupt
