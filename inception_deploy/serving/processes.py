"""What a served model leaves behind when tritonserver dies under it (SIGKILL, the OOM killer, a crash): its Python
backend stubs, re-parented to init and still running; PyTriton's tensor-store process; and shared memory, which
multiprocessing's resource tracker would report as leaked, in raw warnings. `serve` reaps them on every way out;
after a clean stop there is nothing to reap.

Linux only (/proc), as tritonserver is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

SHM = Path("/dev/shm")
GRACE_S = 3.0  # after SIGTERM, before SIGKILL


def our_children() -> set[int]:
    """The pids of this process's children now."""
    me = str(os.getpid())
    return {pid for pid in _pids() if _status(pid, "PPid") == me}


SERVER_PROGRAMS = ("tritonserver", "triton_python_backend_stub")  # what runs from a server's own folder


def reap(root: Path, children_before: set[int]) -> list[str]:
    """End what a server left running: tritonserver and its Python backend stubs from `root` (whoever their parent
    now is; never another program that merely names the folder, such as a `tail -f` of its log), and PyTriton's
    tensor store, a multiprocessing child this process started since `children_before`; then remove the shared
    memory they mapped. What the store made and no one maps any more, the resource tracker removes when this
    process exits (quiet_resource_tracker). Returns what was ended, for the log."""
    roots = {f"{root}/", f"{root.resolve()}/"}  # PyTriton resolves the workspace: /tmp may be a link
    servers = {pid for pid in _pids() if _program(pid) in SERVER_PROGRAMS
               and any(token.startswith(tuple(roots)) for token in _argv(pid))}
    stores = {pid for pid in our_children() - children_before
              if "multiprocessing" in _cmdline(pid) and "resource_tracker" not in _cmdline(pid)}
    victims = servers | stores
    if not victims:
        return []
    handles = {pid: _handle(pid) for pid in victims}  # pinned: a pid reused meanwhile is never signalled
    segments = {segment for pid in victims for segment in _shared_memory(pid)}
    ended = [f"{pid} {_cmdline(pid)[:80]}" for pid in sorted(victims)]
    for pid in victims:
        _signal(handles[pid], pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in victims:
        if _alive(pid):
            _signal(handles[pid], pid, signal.SIGKILL)
    for pid in stores:  # our own children: collected, not left as zombies
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    for fd in handles.values():
        if fd is not None:
            os.close(fd)
    for segment in segments:
        _remove_segment(segment)
    log.debug("reaped %s; removed shared memory %s", ended, sorted(s.name for s in segments))
    return ended


def quiet_resource_tracker() -> None:
    """Start this process's multiprocessing resource tracker, if it has none yet, with its stderr on /dev/null.

    PyTriton's tensor store registers its shared memory with it; when tritonserver dies, the tracker removes what
    is left at this process's exit, as it should, but says so in raw warnings on our stderr, after our one line."""
    from multiprocessing import resource_tracker

    if getattr(resource_tracker._resource_tracker, "_pid", None) is not None:
        return  # already running (a long-lived caller): left as it is
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _remove_segment(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        log.debug("cannot remove %s: %s", path, err)


def _shared_memory(pid: int) -> set[Path]:
    """The /dev/shm files a process maps."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(f"{SHM}/"):
            found.add(Path(parts[5].removesuffix(" (deleted)")))
    return {p for p in found if p.parent == SHM}


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _argv(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    return " ".join(_argv(pid))


def _program(pid: int) -> str:
    argv = _argv(pid)
    return Path(argv[0]).name if argv else ""


def _status(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split()[1]
    except (OSError, IndexError):
        pass
    return None


def _alive(pid: int) -> bool:
    state = _status(pid, "State")
    return state is not None and state != "Z"


def _handle(pid: int) -> int | None:
    """A pidfd: signals sent through it reach this process or none, never one that reuses its pid later."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _signal(handle: int | None, pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if handle is not None:
            signal.pidfd_send_signal(handle, sig)
        else:
            os.kill(pid, sig)
