"""Artifact files: their names, atomic writes and sha256. Nothing is ever left half-written (manifest.py lists them)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InceptionDeployError, InputError
from .interrupts import deferred_interrupt

log = logging.getLogger(__name__)

# The file each precision's ONNX lands in, inside an export directory.
# int8 is TensorRT's Q/DQ form, int8-cpu ONNX Runtime's CPU form (export/forms.py).
PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")  # the one list: every artifact, engine, runner and report uses these
ONNX_FILES = dict(zip(PRECISIONS, ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx")))
EXPORT_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --calib DIR",  # what makes each ONNX
                "int8-cpu": " --int8 --int8-form cpu --calib DIR"}
QUANTIZED = ("int8", "int8-cpu")  # Q/DQ ONNX: torch runs neither; judged by agreement, or by accuracy on labelled data
# Engines: model.<precision>.engine (TensorRT), model.<precision>.rtx.engine (TensorRT-RTX); and their kind.
ENGINE_SUFFIXES = {"tensorrt": "engine", "tensorrt-rtx": "rtx.engine"}
ENGINE_KINDS = {"tensorrt": "tensorrt-engine", "tensorrt-rtx": "tensorrt-rtx-engine"}


def export_command(variant: str, precision: str) -> str:
    """The command that makes `variant`'s ONNX of `precision`, for "make it with" hints."""
    return f"inception-deploy export {variant}{EXPORT_FLAGS[precision]}"


def engine_file(precision: str, compiler: str = "tensorrt") -> str:
    return f"model.{precision}.{ENGINE_SUFFIXES[compiler]}"


class Staging:
    """Files written under temporary names beside their final ones, then renamed into place together, in the
    order they were staged (a manifest last). All of them land or none does: a failure before the commit
    changes nothing, and one during it puts back every file it had replaced."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []  # (temporary, final)

    def path(self, final: Path) -> Path:
        final = Path(final)
        check_target(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        self.files.append((Path(tmp), final))
        return Path(tmp)

    def commit(self) -> None:
        """Rename every staged file into place, each in one atomic step. A final name already taken is first kept
        under a hard link (`.previous`); if any rename fails, the ones done are undone (the new files removed, the
        old ones put back) and the error raised. Ctrl-C waits for the commit, or for its undoing, to end."""
        done: list[tuple[Path, Path | None]] = []  # (final, where its previous file is kept)
        with deferred_interrupt():
            try:
                for tmp, final in self.files:
                    check_target(final)  # a directory may have appeared since staging
                    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
                    aside = tmp.with_suffix(".previous") if final.exists() or final.is_symlink() else None
                    done.append((final, aside))
                    if aside is not None:
                        _keep_aside(final, aside)
                    os.replace(tmp, final)
            except BaseException:
                for final, aside in reversed(done):
                    _put_back(final, aside)
                raise
            for _, aside in done:
                if aside is not None:
                    remove_quietly(aside)
            self.files.clear()

    def discard(self) -> None:
        for tmp, _ in self.files:
            tmp.unlink(missing_ok=True)
        self.files.clear()


def _keep_aside(final: Path, aside: Path) -> None:
    """A second name for `final`'s file, so that the new file can replace it atomically and it can still be put
    back: a hard link, or, where the file system has none, a copy."""
    try:
        os.link(final, aside, follow_symlinks=False)
    except OSError:
        shutil.copy2(final, aside, follow_symlinks=False)


def _put_back(final: Path, aside: Path | None) -> None:
    """Undo one rename of a failed commit; a file that cannot be put back is named, never lost in silence."""
    try:
        if aside is None:
            final.unlink(missing_ok=True)
        elif final.exists() and os.path.samefile(aside, final):  # never replaced: rename() of a hard link does nothing
            aside.unlink()
        elif aside.exists() or aside.is_symlink():
            os.replace(aside, final)
    except OSError as err:
        where = f"its previous content is in {aside}" if aside is not None else "remove it by hand"
        log.warning("could not undo the write of %s (%s): %s", final, err.strerror or err, where)


def check_target(final: Path) -> None:
    """Refuse (exit 2) a final name that a staged file cannot replace: a directory, or something that is not a
    regular file. Called before any work starts (check_targets) and again when staging and committing."""
    final = Path(final)
    if final.is_dir() and not final.is_symlink():
        raise InputError(f"{final} is a directory where a file is to be written: move it away and run again")
    if final.exists() and not final.is_file():
        raise InputError(f"{final} is not a regular file, and a file is to be written there: move it away and run "
                         "again")


def check_targets(finals, option: str = "--dir") -> None:
    """check_target for each of `finals`, and their directories writable: before the work, not after it."""
    finals = [Path(f) for f in finals]
    for final in finals:
        check_target(final)
    for directory in {f.parent for f in finals}:
        if directory.is_dir():
            _probe_writable(directory, str(directory), option)


def remove_quietly(path: Path) -> None:
    """Clean-up after work that is done: a file that cannot be removed is logged, never an error."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove %s (%s): remove it by hand", path, err.strerror or err)


@contextlib.contextmanager
def staged(directory: Path) -> Iterator[Staging]:
    """Stage files in `directory` (made if missing); they replace their final names when the block succeeds.
    On failure the temporary files, and any directory made for them, are removed; a full disk is one line."""
    staging = Staging()
    try:
        with made_dirs(directory):
            try:
                yield staging
                staging.commit()
            except OSError as err:
                staging_of = {str(name): final for tmp, final in staging.files
                              for name in (tmp, final, tmp.with_suffix(".previous"))}
                final = staging_of.get(str(err.filename or ""), staging.files[-1][1] if staging.files else directory)
                raise disk_error(err, final) from None
            finally:
                staging.discard()
    except OSError as err:  # making the directory or a temporary file
        raise disk_error(err, directory) from None


def disk_error(err: OSError, what: Path) -> Exception:
    """A full disk as one line (exit 1); any other OSError as it is."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return InceptionDeployError(f"no space left on device while writing {what}: free some space and run again")
    if err.errno == errno.EFBIG:
        return InceptionDeployError(f"file too large for this file system while writing {what}")
    return err


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds."""
    final = Path(final)
    with staged(final.parent) as staging:
        yield staging.path(final)


@contextlib.contextmanager
def made_dirs(directory: Path) -> Iterator[Path]:
    """Make `directory` (and missing parents); if the block fails, remove those it made that are still empty."""
    directory = Path(directory)
    missing = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    except BaseException:
        for made in missing:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


def missing_artifact(path: Path, fix: str) -> InputError:
    """The error for an artifact that is not a regular file where it should be: a directory or another kind of
    file in its place is named as such, not called missing. `fix`: how to make it ("run `...`")."""
    path = Path(path)
    if path.is_dir():
        return InputError(f"{path} is a directory, not the artifact file: move it away, then {fix}")
    if path.exists() or path.is_symlink():
        return InputError(f"{path} is not a regular file: move it away, then {fix}")
    return InputError(f"{path} does not exist: {fix}")


NAME_MAX, PATH_MAX = 255, 4096  # bytes: Linux's limits for one name and for a whole path


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, an output directory that is a file, a dangling link, a name too long for the file
    system, or not writable (exit 2)."""
    path = Path(path)
    _check_names(path, option)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{option} {path} is a file, not a directory: choose another {option}")
        existing = path
        while not existing.exists() and existing != existing.parent:
            if existing.is_symlink():  # a link to nothing: making the directory would fail on it, after the work
                raise InputError(f"{option} {path}: {existing} is a link to {os.readlink(existing)}, which does not "
                                 f"exist: remove the link or choose another {option}")
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"{option} {path}: {existing} is a file, not a directory: choose another {option}")
    except OSError as err:  # a loop of links, a path the kernel refuses
        raise InputError(f"{option} {path} cannot be used ({err.strerror or err}): choose another {option}") from None
    _probe_writable(existing, f"{option} {path}", option)


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that is a directory, not a regular file, a name too long for the
    file system, or not writable."""
    path = Path(path)
    _check_names(path, option)
    try:
        if path.is_dir():
            raise InputError(f"{option} {path} is a directory: give a file path")
        if path.exists() and not path.is_file():
            raise InputError(f"{option} {path} is not a regular file: give a file path")
    except OSError as err:
        raise InputError(f"{option} {path} cannot be used ({err.strerror or err}): choose another {option}") from None
    check_output_dir(path.parent, option)


def _check_names(path: Path, option: str) -> None:
    """Each name in the path that is still to be made, and the path, within the file system's limits (with room for
    a temporary suffix); a directory that exists already is the file system's own."""
    to_make = [part for i, part in enumerate(path.parts) if not _exists(Path(*path.parts[:i + 1]))]
    long = next((part for part in to_make if len(os.fsencode(part)) > NAME_MAX - 32), None)
    if long is not None:
        raise InputError(f"{option}: the name '{long[:40]}…' is {len(os.fsencode(long))} bytes long, over the "
                         f"{NAME_MAX - 32} this tool can write under it (the file system allows {NAME_MAX}): choose a "
                         "shorter one")
    if len(os.fsencode(str(path.absolute()))) > PATH_MAX - 256:
        raise InputError(f"{option}: the path is {len(os.fsencode(str(path.absolute())))} bytes long, over the "
                         f"{PATH_MAX - 256} this tool can write under it: choose a shorter one")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # too long for the kernel, a loop: not a directory that exists
        return False


def _probe_writable(directory: Path, what: str, option: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".inception-deploy-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"{what} is not writable ({err.strerror or err}): choose another {option}") from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_png_atomic(figure, final: Path) -> Path:
    """A matplotlib figure as a PNG, landed whole or not at all."""
    with atomic_path(final) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(final)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_text(value) -> str:
    """A report as strict JSON, indented, with a final newline: JSON has no inf/nan, so they become null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
