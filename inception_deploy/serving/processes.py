"""What a served model leaves behind when tritonserver dies under it (SIGKILL, the OOM killer, a crash): its Python
backend stubs, re-parented to init and still running; PyTriton's tensor-store process and the resource tracker
started with it; and the shared memory they mapped, which that tracker would report as leaked in raw warnings.
`serve` reaps them on every way out.

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


def reap(root: Path, children_before: set[int]) -> list[str]:
    """End every process that runs from `root` (tritonserver and its Python backend stubs, whoever their parent now
    is) and every multiprocessing process this one started since `children_before` (PyTriton's tensor store), then
    remove the shared memory they mapped. Returns what was ended, for the log."""
    me = os.getpid()
    victims = {pid for pid in _pids() if pid != me and str(root) in _cmdline(pid)}
    # PyTriton's tensor store, and the resource tracker started with it: the tracker would report the store's
    # segments as leaked (removed below) in raw warnings on our stderr as this process exits
    victims |= {pid for pid in our_children() - children_before if "multiprocessing" in _cmdline(pid)}
    if not victims:
        return []
    segments = {segment for pid in victims for segment in _shared_memory(pid)}
    ended = [f"{pid} {_cmdline(pid)[:80]}" for pid in sorted(victims)]
    for pid in victims:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in victims:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    for pid in victims:  # our own children: collected, not left as zombies
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    for segment in segments:
        _remove_segment(segment)
    log.debug("reaped %s; removed shared memory %s", ended, sorted(s.name for s in segments))
    return ended


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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


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


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
