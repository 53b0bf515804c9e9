"""The `inception-deploy` console entry point, kept free of heavy imports: the command line imports torch and
friends, which takes seconds, and Ctrl-C in that time must be one line and exit 130 like any other moment."""

import sys

INTERRUPTED = 130


def main() -> None:
    try:
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
