"""Ctrl-C and SIGTERM: both become KeyboardInterrupt while work is under way (exit 130, record
'interrupted'), and are ignored once the work is recorded, so an interrupt that lands while the process
prints its summary or shuts down cannot turn an honest exit 0 into a death by signal (exit -2)."""
from __future__ import annotations

import signal
import threading


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
