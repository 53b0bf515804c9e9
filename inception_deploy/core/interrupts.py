"""Ctrl-C during a library call that would swallow it, and SIGTERM / SIGHUP answered as Ctrl-C is.

A KeyboardInterrupt raised inside a callback that a native library calls (TensorRT's logger and progress
monitor) is caught and logged by that library, which then carries on and writes its result. So, around
such calls, Ctrl-C only sets a flag; the caller asks the library to stop where it can (a progress monitor
returning False), and raises KeyboardInterrupt itself once the call returns, before anything is written.

SIGTERM (docker stop, systemd, Kubernetes) and SIGHUP (a closed terminal) are handed to whatever answers Ctrl-C
at that moment, so that every command stops as cleanly on them: earlier artifacts as they were, servers and
temporary folders gone, one line. That line names the signal, and the exit status is the shell's for it (128 + its
number: 143 for SIGTERM, 129 for SIGHUP; 130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from typing import Callable, Iterator

from .errors import Interrupted

log = logging.getLogger(__name__)


# The handlers of the blocks below, innermost last, in the main thread: what answers Ctrl-C now. SIGTERM and SIGHUP
# go to the innermost one even where SIGINT itself is ignored (a background job: `cmd &` in a script).
_answering: list = []


@contextlib.contextmanager
def _sigint_handler(handler) -> Iterator[None]:
    """`handler` for SIGINT during the block, where Python can install one (the main thread) and where SIGINT
    is not ignored (a background job's stays ignored); the previous handler comes back after. In the main thread it
    also answers SIGTERM and SIGHUP during the block, ignored SIGINT or not."""
    installable = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if installable else None
    active = installable and previous is not signal.SIG_IGN
    if active:
        signal.signal(signal.SIGINT, handler)
    if installable:
        _answering.append(handler)
    try:
        yield
    finally:
        if installable:
            _answering.pop()
        if active:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def noting() -> Iterator[list[int]]:
    """Ctrl-C (and SIGTERM, SIGHUP) only noted during the block: the list it yields says whether one came."""
    hits: list[int] = []
    with _sigint_handler(lambda signum, frame: hits.append(signum)):
        yield hits


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Yield `interrupted()`; on leaving the block, raise KeyboardInterrupt if Ctrl-C came during it."""
    hits: list[int] = []
    try:
        with _sigint_handler(lambda signum, frame: hits.append(signum)):
            yield lambda: bool(hits)
    finally:
        if hits:
            _redeliver()


def _redeliver() -> None:
    """Hand a Ctrl-C noted by a deferring handler to the one that answers now that it is gone: an enclosing
    deferred_interrupt or honoured_interrupt notes it too (raising it here alone would leave theirs unaware, and a
    library that swallows the KeyboardInterrupt would win); with none, it is a KeyboardInterrupt."""
    if _answering:
        _answering[-1](signal.SIGINT, None)  # the enclosing one decides, at once: note it, or raise
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def honoured_interrupt() -> Iterator[None]:
    """Ctrl-C stays responsive (KeyboardInterrupt at once), and is honoured even when a library catches it
    and turns it into its own error (torch.export: "Failed to export the model…") or carries on as if
    nothing happened: on leaving the block, a Ctrl-C that came during it is a KeyboardInterrupt."""
    hits: list[int] = []

    def handler(signum, frame):
        hits.append(signum)
        raise KeyboardInterrupt

    try:
        with _sigint_handler(handler):
            yield
    except BaseException:
        if hits:
            raise KeyboardInterrupt from None  # whatever the library made of it
        raise
    if hits:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupted_says(message: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into one line saying what was kept (Interrupted, exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message) from None


@contextlib.contextmanager
def writes_complete_first(what: str) -> Iterator[None]:
    """Around writes that belong together (files and their manifest entry): Ctrl-C waits until all are done,
    then ends the command saying so (Interrupted, exit 130), so that no half of them is ever left."""
    with interrupted_says(f"interrupted: {what}"), deferred_interrupt():
        yield


TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []  # the termination signals that came, in order


def forward_termination_signals() -> None:
    """From now on (in the main thread), SIGTERM and SIGHUP act as Ctrl-C; an ignored one (nohup's SIGHUP) stays
    ignored."""
    for signum in TERMINATING:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _as_ctrl_c)


def _as_ctrl_c(signum, frame) -> None:
    if _received:  # a second one (a closed terminal sends SIGHUP, then its shell SIGTERM): the first is in hand
        _received.append(signum)
        return
    _received.append(signum)
    if _answering:  # a block that defers or honours Ctrl-C, SIGINT ignored or not
        _answering[-1](signal.SIGINT, frame)
        return
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # Python's own raises KeyboardInterrupt
        return
    raise KeyboardInterrupt  # Ctrl-C ignored (a background job): SIGTERM still ends the command


def terminated() -> bool:
    """Whether SIGTERM or SIGHUP came: whatever error the command then ends with is that stop's."""
    return bool(_received)


def exit_status(default: int = 130) -> int:
    """The shell's exit status for what stopped the command: 128 + the termination signal's number, or `default`."""
    return 128 + _received[0] if _received else default


def stop_message(message: str) -> str:
    """A command's "interrupted: …" line, naming the signal that stopped it where that was not Ctrl-C."""
    if not _received:
        return message
    name = signal.Signals(_received[0]).name
    if re.match(r"interrupted\b", message):
        return f"stopped by {name}" + message[len("interrupted"):]
    return f"stopped by {name}: {message}"
