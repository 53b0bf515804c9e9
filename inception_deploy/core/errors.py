"""Errors a user can act on. Each carries the exit code the CLI returns for it."""


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
