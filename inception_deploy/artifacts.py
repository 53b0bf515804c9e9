"""Artifact files and the manifest that lists them. Nothing is ever left half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError

MANIFEST_NAME = "manifest.json"
# The file each precision's ONNX lands in, inside an export directory.
PRECISIONS = ("fp32", "fp16", "int8")  # the one list: every artifact, engine, runner and report uses these names
ONNX_FILES = dict(zip(PRECISIONS, ("model.onnx", "model.fp16.onnx", "model.int8.onnx")))
# Engines: model.<precision>.engine (TensorRT), model.<precision>.rtx.engine (TensorRT-RTX); and their kind.
ENGINE_SUFFIXES = {"tensorrt": "engine", "tensorrt-rtx": "rtx.engine"}
ENGINE_KINDS = {"tensorrt": "tensorrt-engine", "tensorrt-rtx": "tensorrt-rtx-engine"}


def engine_file(precision: str, compiler: str = "tensorrt") -> str:
    return f"model.{precision}.{ENGINE_SUFFIXES[compiler]}"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_record(out_dir: Path, path: Path, **facts) -> dict:
    """A manifest entry: the path relative to the manifest, its size and sha256, plus `facts`."""
    return {"path": path.relative_to(out_dir).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_of(path), **facts}


def read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def verified_record(path: Path, manifest: dict | None, *, made: str = "exported",
                    fix: str = "re-run the export") -> dict | None:
    """`path`'s entry in `manifest` (None when it is not listed), after checking the file is the one listed:
    InputError (exit 2) when its sha256 differs."""
    record = next((a for a in (manifest or {}).get("artifacts", []) if a.get("path") == path.name), None)
    if record is not None and sha256_of(path) != record.get("sha256"):
        raise InputError(f"{path} changed since it was {made} (sha256 differs from "
                         f"{path.parent / MANIFEST_NAME}): {fix}")
    return record


def add_artifact(out_dir: Path, manifest: dict, record: dict) -> dict:
    """List `record` in the manifest (replacing an entry of the same path) and write the manifest."""
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != record["path"]] + [record]
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    path = out_dir / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
