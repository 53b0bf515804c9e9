"""Logging: a logger per module (`logging.getLogger(__name__)`), one handler the CLI sets on the package's
own logger (never on the root logger), and libraries' chatter silenced on their loggers while we call them."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

PACKAGE = "inception_deploy"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test's captured stream, a redirected one)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure(verbosity: int = 0) -> None:
    """The CLI's output of the package's loggers: -q (-1) warnings only, default notes (INFO), -v (1) debug."""
    logger = logging.getLogger(PACKAGE)
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _Stderr)]
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s" if verbosity < 1 else "%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[max(-1, min(1, verbosity))])
    logger.propagate = False


class _FromPackages(logging.Filter):
    """Drops the records below `level` that these packages' files log (on whichever logger)."""

    def __init__(self, roots: list[str], level: int):
        super().__init__()
        self.roots, self.level = roots, level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not any(record.pathname.startswith(root) for root in self.roots)


@contextlib.contextmanager
def quiet_library(*packages: str, level: int = logging.ERROR):
    """Silence `packages` below `level` for the duration: on their own loggers, and where a library logs through
    the root logger (onnxruntime.quantization calls logging.warning), by its records' source files alone."""
    loggers = [logging.getLogger(name) for name in packages]
    saved = [lg.level for lg in loggers]
    roots = []
    for name in packages:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            roots.append(str(Path(module.__file__).parent))
    root_filter = _FromPackages(roots, level)
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    logging.getLogger().addFilter(root_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for lg, old in zip(loggers, saved):
            lg.setLevel(old)
