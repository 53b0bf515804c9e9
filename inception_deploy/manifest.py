"""The manifest: the one record of an export directory (what was made, from what, and each file's sha256).

Everything that reads or writes manifest.json goes through here: reading validates it (an empty, non-JSON
or foreign file is named as such), and every artifact is checked against its sha256 before it is used.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifacts import sha256_of, write_text_atomic
from .errors import InputError

MANIFEST_NAME = "manifest.json"
SCHEMA = 1


def artifact_record(out_dir: Path, path: Path, **facts) -> dict:
    """A manifest entry: the path relative to the manifest, its size and sha256, plus `facts`."""
    return {"path": path.relative_to(out_dir).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_of(path), **facts}


def read_manifest(out_dir: Path, *, lenient: bool = False) -> dict | None:
    """The manifest of `out_dir`, validated; None when there is none. A manifest that is unreadable, empty,
    not JSON or not an inception-deploy manifest is an InputError naming it (None when `lenient`: a
    re-export replaces it)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        problem = _problem(path)
    except OSError as err:
        problem = f"cannot be read ({err.strerror})"
    if problem is None:
        return json.loads(path.read_text(encoding="utf-8"))
    if lenient:
        return None
    raise InputError(f"{path} {problem}: re-run the export into {path.parent}, or remove it")


def _problem(path: Path) -> str | None:
    if path.is_dir():
        return "is a directory, not a manifest"
    raw = path.read_bytes()
    if not raw.strip():
        return "is empty (0 bytes)" if not raw else "is empty"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        return f"is not valid JSON ({getattr(err, 'msg', 'not UTF-8')}{where}; truncated or corrupt)"
    if not isinstance(data, dict) or not isinstance(data.get("variant"), str) or not isinstance(data.get("artifacts"), list):
        return "is not an inception-deploy manifest (no variant and artifacts list)"
    if not all(isinstance(a, dict) and isinstance(a.get("path"), str) and isinstance(a.get("sha256"), str)
               for a in data["artifacts"]):
        return "is not an inception-deploy manifest (an artifact without path or sha256)"
    return None


class IntegrityError(InputError):
    """An artifact is not the file its manifest lists (swapped, edited, truncated): never used."""


def verified_record(path: Path, manifest: dict | None, *, made: str = "exported",
                    fix: str = "re-run the export") -> dict | None:
    """`path`'s entry in `manifest` (None when it is not listed), after checking the file is the one listed:
    IntegrityError (exit 2) when its sha256 differs."""
    record = next((a for a in (manifest or {}).get("artifacts", []) if a.get("path") == path.name), None)
    if record is not None and path.is_file() and path.stat().st_size == 0:
        raise IntegrityError(f"{path} is empty (0 bytes), not the file {path.parent / MANIFEST_NAME} lists: {fix}")
    if record is not None and sha256_of(path) != record.get("sha256"):
        raise IntegrityError(f"{path} changed since it was {made} (sha256 differs from "
                         f"{path.parent / MANIFEST_NAME}): {fix}")
    return record


def verify_beside(path: Path, *, made: str = "exported", fix: str = "re-run the export") -> dict | None:
    """Check `path` against the manifest in its own directory, when that manifest lists it."""
    return verified_record(path, read_manifest(path.parent), made=made, fix=fix)


def add_artifact(out_dir: Path, manifest: dict, record: dict) -> dict:
    """List `record` in the manifest (replacing an entry of the same path) and write the manifest."""
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != record["path"]] + [record]
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    path = out_dir / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
