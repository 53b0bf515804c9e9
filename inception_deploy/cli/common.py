"""The Typer app every command registers on, and what the commands share: one-line errors with their exit
codes, the consoles, progress, the verbosity flags, and small parsers."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from ..core import logs
from ..core.artifacts import check_output_file, write_text_atomic
from ..core.errors import InceptionDeployError, InputError
from ..core.interrupts import exit_status, stop_message, terminated

log = logging.getLogger(__name__)

INTERRUPTED = 130  # Ctrl-C, as shells report it
INTERRUPTED_MESSAGE = "interrupted: nothing was written"

PIPE_WIDTH = 400  # columns where there is no terminal (a pipe, a CI log, `| tee`): tables print whole, never cut


def _console(stream, **kwargs) -> Console:
    """A console for `stream`: a terminal's own width; elsewhere, unless COLUMNS says otherwise, wide enough that
    rich never narrows a table's columns ("result" cut to "resu") or wraps its title."""
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPE_WIDTH if wide else None, **kwargs)


out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


# The commands in the order of the flow, for --help.
ORDER = ("models", "export", "parity", "accuracy", "trt", "bench", "triton", "serve", "loadtest", "optimize")


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a documented exit code, never a traceback.

    2: usage and input errors; 1: a failed check; 3: a missing backend or device; 130: Ctrl-C.
    """

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
            if code == INTERRUPTED:  # typer turns a KeyboardInterrupt into a silent Exit(130)
                code = _stopped(INTERRUPTED_MESSAGE)
        except InceptionDeployError as error:
            stopped = error.exit_code == INTERRUPTED or terminated()
            code = _stopped(str(error)) if stopped else fail(str(error), error.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            code = _stopped(INTERRUPTED_MESSAGE)
        except Exception as error:  # after SIGTERM/SIGHUP, whatever a library made of the stop is that stop
            code = _stopped(INTERRUPTED_MESSAGE) if terminated() else _unexpected(error)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _stopped(message: str) -> int:
    """Ctrl-C, SIGTERM or SIGHUP: one line that names it (core/interrupts.py), and the shell's exit status for it."""
    return fail(stop_message(message), exit_status(INTERRUPTED))


def _unexpected(error: Exception) -> int:
    if _is_click_error(error):  # a usage error: unknown option, missing argument, bad value
        ctx, message = getattr(error, "ctx", None), error.format_message()
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        # An empty message follows the help printed for a bare command: nothing to add.
        return fail(f"{message}{hint}", error.exit_code) if message else error.exit_code
    if os.environ.get("INCEPTION_DEPLOY_DEBUG"):
        raise error
    return fail(f"unexpected {type(error).__name__}: {error} (INCEPTION_DEPLOY_DEBUG=1 shows the traceback)", 1)


def _is_click_error(error: Exception) -> bool:
    # typer vendors its own copy of click, so match click's exception interface, not its class.
    return hasattr(error, "format_message") and isinstance(getattr(error, "exit_code", None), int)


def fail(message: str, code: int) -> int:
    try:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    except OSError:  # stderr gone (SIGHUP of a closed terminal, a closed pipe): the exit status still says it
        pass
    return code


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Take the Inception family from PyTorch to verified ONNX artifacts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _verbosity(
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, metavar="", show_default=False,
                                help="Say more: each step, as it happens. A flag, no value (-v, not -v 2)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Warnings and errors only, and the results."),
):
    """Take the Inception family from PyTorch to verified ONNX artifacts."""
    logs.configure(-1 if quiet else min(verbose, 1))


def say(message: str) -> None:
    """A note for people, on stderr: -q silences it (warnings, errors and results stay)."""
    log.info(message)


class StepReporter:
    """Shows the long steps as they happen on a terminal; silent in logs, where the summary says it all.

    Starts on the first step, and is transient, so that an error stays the only line of output. -v logs every
    step; INCEPTION_DEPLOY_PROGRESS=lines prints them where there is no terminal (logs, CI).
    """

    def __init__(self, console: Console):
        self.console = console
        self._last: str | None = None
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self):
        return self

    def __call__(self, label: str, done: int | None = None, total: int | None = None) -> None:
        """A step's label; with done/total, the bar shows how far a counted step (calibration, a sweep) is."""
        lines = not self.console.is_terminal and os.environ.get("INCEPTION_DEPLOY_PROGRESS") == "lines"
        if label != self._last and not lines:
            log.debug("step: %s", label)
        if not self.console.is_terminal:
            if lines and label != self._last:
                self.console.print(f"step: {label}", highlight=False, soft_wrap=True)
            self._last = label
            return
        self._last = label
        if self.progress is None:
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(label, total=None)
        self.progress.update(self.task, description=label, completed=done or 0, total=total)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            with contextlib.suppress(OSError):  # SIGHUP of a closed terminal: the bar has nowhere to go
                self.progress.stop()


def command_line(*, leave_out: tuple[str, ...] = ()) -> str | None:
    """The command as it was typed, for a report's "reproduce with" line."""
    argv = [a for a in sys.argv[1:] if a not in leave_out]
    return "inception-deploy " + " ".join(shlex.quote(a) for a in argv) if argv else None


def csv_list(text: Optional[str], cast=str, option: str = "") -> Optional[list]:
    """'1,8,32' -> [1, 8, 32]; None stays None; an item that is not `cast` is an InputError naming the option."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            cast(item)
        except ValueError:
            kind = "an integer" if cast is int else "valid"
            raise InputError(
                f"{option} '{item}' is not {kind}: expected a comma-separated list, got '{text}'"
            ) from None
    return [cast(item) for item in items]


def check_json_out(json_out: Optional[str]) -> None:
    """--json PATH is checked before the work, not after it ('-' is stdout)."""
    if json_out is not None and not json_out.strip():
        raise InputError("--json needs a PATH to write, or '-' for stdout")
    if json_out and json_out != "-":
        check_output_file(Path(json_out), "--json")


def write_json_out(json_out: Optional[str], text: str) -> None:
    """The JSON report to stdout ('-'), or atomically to PATH."""
    if json_out == "-":
        sys.stdout.write(text)
    elif json_out:
        write_text_atomic(Path(json_out), text)


def warn(message: str) -> None:
    err.print(f"[bold yellow]WARNING:[/] {escape(message)}", highlight=False, soft_wrap=True)


def main() -> None:
    # Libraries' notices to their own developers (torch 2.11 warns about its own internals on every export,
    # from copyreg) would break the one-line errors; this tool's own warnings are printed through rich.
    warnings.filterwarnings("ignore", category=FutureWarning)
    logs.configure(0)  # before the first command's callback, for whatever a library logs at import
    app()
