"""Errors a user can act on. Each carries the exit code the CLI returns for it."""

import math


class InceptionDeployError(Exception):
    """Base class: the message is one line that names the problem and the fix."""

    exit_code = 1


class InputError(InceptionDeployError):
    """Bad usage or bad input: an unknown variant, an unreadable or mismatched checkpoint."""

    exit_code = 2


class CheckFailed(InceptionDeployError):
    """A numerical check (parity) did not pass; nothing was written."""

    exit_code = 1


class BackendMissing(InceptionDeployError):
    """A backend, device or package needed for the request is not available here."""

    exit_code = 3


def first_line(err: BaseException, limit: int = 200) -> str:
    """The part of a library's exception that names the problem: its first non-empty line, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


class Interrupted(InceptionDeployError):
    """Ctrl-C: the message says what was kept."""

    exit_code = 130


def check_number(value, option: str, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None) -> float:
    """The one check of every number option: a finite number in range (nan and inf never are), or InputError (exit 2)
    naming the option, the range and what was given."""
    bounds = [f"more than {above:g}" if above is not None else "",
              f"at least {minimum:g}" if minimum is not None else "",
              f"at most {maximum:g}" if maximum is not None else ""]
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (above is None or value > above) and (minimum is None or value >= minimum)
          and (maximum is None or value <= maximum))
    if not ok:
        wanted = " and ".join(b for b in bounds if b)
        raise InputError(f"{option} must be a finite number{' ' + wanted if wanted else ''}, not {value!r}")
    return float(value)
