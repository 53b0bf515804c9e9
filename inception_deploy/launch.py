"""The `inception-deploy` console entry point, kept free of heavy imports: the command line imports torch and
friends, which takes seconds, and Ctrl-C in that time must be one line and exit 130 like any other moment."""

import sys

from .core.interrupts import exit_status, forward_termination_signals, noting, stop_message  # stdlib only

INTERRUPTED = 130


def main() -> None:
    # Ctrl-C (and SIGTERM, SIGHUP) is only noted while the command line imports (torch, numpy…), then answered: a
    # KeyboardInterrupt inside those imports can be swallowed by them, leaving a half-imported library to fail later.
    # Only the standard library is used before the handler is in place, so that the window before it stays tiny.
    forward_termination_signals()  # SIGTERM and SIGHUP answered as Ctrl-C, from here on
    with noting() as noted:  # a background job's ignored Ctrl-C stays ignored; SIGTERM is still noted
        try:
            from .cli import main as cli_main
        except BaseException:
            if noted:
                _interrupted("interrupted: nothing was written")
            raise
    if noted:
        _interrupted("interrupted: nothing was written")
    try:
        cli_main()
    except KeyboardInterrupt:  # after the command's own handling: between its end and the exit
        _interrupted("interrupted")


def _interrupted(message: str) -> None:
    try:
        sys.stderr.write(f"error: {stop_message(message)}\n")
        sys.stderr.flush()
    except OSError:  # SIGHUP: the terminal may be gone
        pass
    finally:
        raise SystemExit(exit_status(INTERRUPTED))
