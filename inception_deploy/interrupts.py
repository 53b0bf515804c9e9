"""Ctrl-C during a library call that would swallow it.

A KeyboardInterrupt raised inside a callback that a native library calls (TensorRT's logger and progress
monitor) is caught and logged by that library, which then carries on and writes its result. So, around
such calls, Ctrl-C only sets a flag; the caller asks the library to stop where it can (a progress monitor
returning False), and raises KeyboardInterrupt itself once the call returns, before anything is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Yield `interrupted()`; on leaving the block, raise KeyboardInterrupt if Ctrl-C came during it."""
    hits: list[int] = []
    installable = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if installable else None
    if installable and previous is not signal.SIG_IGN:  # an ignored SIGINT (a background job) stays ignored
        signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield lambda: bool(hits)
    finally:
        if installable and previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)
    if hits:
        raise KeyboardInterrupt
