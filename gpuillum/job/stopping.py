"""Stopping a run on Ctrl-C or SIGTERM, even where Python would swallow the signal's exception.

A signal handler's exception is raised in whatever Python code the main thread runs at that
moment. When that is a garbage-collector callback or a ``__del__`` (Dask's scheduler installs a
gc callback), Python prints "Exception ignored" and goes on: the run would finish as if nobody had
pressed Ctrl-C. So the handler also latches the request, and the job calls
:func:`raise_if_stop_requested` after every batch: a lost exception is raised again there (and
Python's "Exception ignored" report of it is not printed).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Docker and kill send): stops the job exactly as Ctrl-C does."""


_requested: type[KeyboardInterrupt] | None = None


def _stop(signum, frame):
    global _requested
    _requested = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    raise _requested()


def _quiet_about_latched_stops(previous_hook):
    """An unraisable-exception hook that drops the stop exceptions the latch will raise again."""
    def hook(unraisable):
        if _requested is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        previous_hook(unraisable)

    return hook


def raise_if_stop_requested() -> None:
    """Raise the pending stop (KeyboardInterrupt or Terminated) if a signal asked for one."""
    if _requested is not None:
        raise _requested()


@contextlib.contextmanager
def stop_on_signals():
    """Within the block SIGINT raises KeyboardInterrupt and SIGTERM Terminated in the main thread,
    and both are latched for :func:`raise_if_stop_requested`. A signal set to be ignored stays
    ignored; outside the main thread (where handlers cannot be set) the block changes nothing."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the caller ignores (nohup, a background job of a script) stays ignored
    previous = {number: signal.signal(number, _stop) for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) is not signal.SIG_IGN}
    _requested = None
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_latched_stops(previous_hook)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        sys.unraisablehook = previous_hook
        _requested = None


@contextlib.contextmanager
def deferred_stops():
    """Within the block SIGINT and SIGTERM only take note; they act when the block ends.

    For starting a Dask cluster: a signal's exception raised half-way through would leave
    processes half started, and ignoring the signal would lose a Ctrl-C. At the end the handlers
    come back and each signal that arrived is raised again, to act as if it had come just then.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(arrived):
            signal.raise_signal(number)
