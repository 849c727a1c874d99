"""Ctrl-C and SIGTERM stop kbn between training steps, leaving everything resumable.
It must not know training, Keras or logs: a flag set by a signal, checked by whoever loops.

Why not Python's KeyboardInterrupt: it is raised wherever the main thread happens to be, and JAX's
callbacks and keras-tuner's gRPC threads swallow it ("Exception ignored in ... KeyboardInterrupt"), so
a sweep stopped in only 2 of 8 tries. Here the signal only sets a flag; training checks it after each
compiled call (`StopOnInterrupt`) and between periods and trials (`check`), and raises `Interrupted`.
A second signal exits at once (files are written atomically, so nothing half-written is trusted).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from kbn.core.errors import Interrupted  # raised here, caught by the CLI

_requested = threading.Event()
_first = [0.0]  # when the first signal came
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A local worker hears a Ctrl-C twice: the terminal's SIGINT to the group, then its chief's SIGTERM.
SAME_STOP_SECONDS = 5.0


def _handler(signum, frame):
    if _requested.is_set():
        if os.environ.get("KBN_CHIEF_PID") and time.monotonic() - _first[0] < SAME_STOP_SECONDS:
            return  # the same stop, said twice: keep stopping between steps
        print("kbn: interrupted again; stopping now", file=sys.stderr, flush=True)
        os._exit(130)
    _first[0] = time.monotonic()
    _requested.set()


def install() -> None:
    """Take over SIGINT and SIGTERM (main thread only, as Python requires)."""
    _requested.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    if _requested.is_set():
        raise Interrupted("interrupted; run the same command to resume")


def sleep(seconds: float) -> None:
    """time.sleep that ends early, with Interrupted, when a stop is asked for."""
    if _requested.wait(seconds):
        check()
