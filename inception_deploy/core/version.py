"""The package version, in one place (environment records and manifests carry it), and the identity of its code."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"

PACKAGE = Path(__file__).resolve().parent.parent
SOURCE_SUFFIXES = (".py", ".toml", ".txt")


@functools.cache
def source_digest() -> str:
    """sha256 over the package's own source (each file's path and bytes, in order): what measured a figure, more
    precisely than a version number that stays the same across fixes. A benchmark log keys --resume on it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()
                       and "__pycache__" not in p.parts):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
