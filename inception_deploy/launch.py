"""The `inception-deploy` console entry point, kept free of heavy imports: the command line imports torch and
friends, which takes seconds, and Ctrl-C in that time must be one line and exit 130 like any other moment."""

import sys

from .core.interrupts import deferred_interrupt

INTERRUPTED = 130


def main() -> None:
    try:
        # Ctrl-C is only noted while the command line imports (torch, numpy…), then raised: a KeyboardInterrupt
        # inside those imports can be swallowed by them, leaving a half-imported library to fail later.
        with deferred_interrupt():
            from .cli import main as cli_main
    except KeyboardInterrupt:
        _interrupted("interrupted: nothing was written")
    try:
        cli_main()
    except KeyboardInterrupt:  # after the command's own handling: between its end and the exit
        _interrupted("interrupted")


def _interrupted(message: str) -> None:
    try:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    finally:
        raise SystemExit(INTERRUPTED)
