"""The manifest: the one record of an export directory (what was made, from what, and each file's sha256).

Everything that reads or writes manifest.json goes through here: reading validates it (an empty, non-JSON
or foreign file is named as such), and every artifact is checked against its sha256 before it is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .artifacts import PRECISIONS, sha256_of, staged
from .errors import InputError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA = 1


def artifact_record(out_dir: Path, path: Path, *, content: Path | None = None, **facts) -> dict:
    """A manifest entry: the path relative to the manifest, its size and sha256, plus `facts`. `content`: the
    file that holds the bytes, when they are still staged under a temporary name."""
    content = content or path
    return {"path": path.relative_to(out_dir).as_posix(), "bytes": content.stat().st_size, "sha256": sha256_of(content),
            **facts}


def read_manifest(out_dir: Path, *, lenient: bool = False, fix: str | None = None) -> dict | None:
    """The manifest of `out_dir`, validated; None when there is none. A manifest that is unreadable, empty,
    not JSON, not an inception-deploy manifest or of the wrong shape is an InputError naming it and `fix`
    (None when `lenient`: a forced re-export replaces it)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        return None
    try:
        problem, data = _parse(path)
    except OSError as err:
        problem, data = f"cannot be read ({err.strerror})", None
    if problem is None:
        return data
    if lenient:
        return None
    raise InputError(f"{path} {problem}: {fix or f're-run the export into {path.parent} with --force, or remove it'}")


def _parse(path: Path) -> tuple[str | None, dict | None]:
    if path.is_dir():
        return "is a directory, not a manifest", None
    if not path.is_file():  # a FIFO would block the read; a dangling link has nothing to read
        return "is not a regular file", None
    raw = path.read_bytes()
    if not raw.strip():
        return ("is empty (0 bytes)" if not raw else "is empty"), None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        return f"is not valid JSON ({getattr(err, 'msg', 'not UTF-8')}{where}; truncated or corrupt)", None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("variant"), str)
        or not isinstance(data.get("artifacts"), list)
    ):
        return "is not an inception-deploy manifest (no variant and artifacts list)", None
    problem = _shape_problem(data)
    return (f"is damaged ({problem})", None) if problem else (None, data)


# The fields other commands read, and what each must be when present (artifacts: checked entry by entry).
MAX_CLASSES = 1_000_000
_DTYPES = {"float32", "float16"}  # what an export's graph input and output can be


def _dims(v) -> bool:
    """A tensor's shape as export records it: a named (dynamic) batch or a size, then sizes."""
    return (isinstance(v, list) and len(v) >= 2 and all(type(d) is int and 1 <= d <= MAX_CLASSES for d in v[1:])
            and ((isinstance(v[0], str) and v[0] != "") or (type(v[0]) is int and 1 <= v[0] <= MAX_CLASSES)))


def _sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


_IO = {"name": lambda v: isinstance(v, str) and v != "", "dtype": lambda v: v in _DTYPES, "shape": _dims}
_FIELDS = {
    "input": _IO,
    "output": _IO,
    "batch": lambda v: v == "dynamic" or (type(v) is int and 1 <= v <= MAX_CLASSES),
    "num_classes": lambda v: type(v) is int and 1 <= v <= MAX_CLASSES,
    "weights": lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("path"), str)
                                       and _sha256(v.get("sha256"))),
    "untrained_init": lambda v: v is None or isinstance(v, dict),
    "preprocessing": dict,
}
_ENTRY = {"path": str, "sha256": _sha256, "bytes": lambda v: type(v) is int and v >= 0,
          "kind": lambda v: isinstance(v, str), "precision": lambda v: isinstance(v, str),
          "source": lambda v: isinstance(v, dict) and isinstance(v.get("path"), str) and _sha256(v.get("sha256"))}


def _shape_problem(data: dict) -> str | None:
    """What is wrong with a manifest's fields, named ("input" is null), or None."""
    problem = _fields_problem(data, _FIELDS, "")
    if problem:
        return problem
    for index, entry in enumerate(data["artifacts"]):
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            return f"artifacts[{index}] has no path or sha256"
        problem = _fields_problem(entry, _ENTRY, f"artifacts[{index}].")
        if problem:
            return problem
        if not plain_name(entry["path"]):
            return f"artifacts[{index}].path '{entry['path']}' is not a plain file name inside the export directory"
        if "kind" in entry and entry.get("precision") not in PRECISIONS:
            return f"artifacts[{index}] ({entry['path']}) has no known precision"
        if "source" in entry and not plain_name(entry["source"]["path"]):
            return f"artifacts[{index}].source.path '{entry['source']['path']}' is not a plain file name"
    return None


def _fields_problem(record: dict, fields: dict, prefix: str) -> str | None:
    for name, rule in fields.items():
        if name not in record:
            continue
        value = record[name]
        if isinstance(rule, dict):  # a nested record: every field required
            if not isinstance(value, dict):
                return f'"{prefix}{name}" is {json.dumps(value)[:40]}, not a record'
            bad = [k for k, check in rule.items() if not (isinstance(value.get(k), check) if isinstance(check, type)
                                                          else check(value.get(k)))]
            if bad:
                return f'"{prefix}{name}.{bad[0]}" is {json.dumps(value.get(bad[0]))[:40]}'
        elif not (isinstance(value, rule) if isinstance(rule, type) else rule(value)):
            return f'"{prefix}{name}" is {json.dumps(value)[:40]}'
    return None


def plain_name(name: str) -> bool:
    """A file name with no directory part: what every artifact path in a manifest must be."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


def entry_of(manifest: dict | None, name: str) -> dict | None:
    """The manifest's entry of the artifact named `name`, or None (nothing checked: verified_record checks)."""
    return next((a for a in (manifest or {}).get("artifacts", []) if isinstance(a, dict) and a.get("path") == name),
                None)


class IntegrityError(InputError):
    """An artifact is not the file its manifest lists (swapped, edited, truncated): never used."""


def verified_record(path: Path, manifest: dict | None, *, made: str = "exported",
                    fix: str = "re-run the export", required: bool = False) -> dict | None:
    """`path`'s entry in `manifest`, after checking the file is the one listed: IntegrityError (exit 2) when
    its sha256 differs, or, when `required`, when the manifest does not list it (else None)."""
    record = entry_of(manifest, path.name)
    if record is None and required:
        raise IntegrityError(f"{path} is not listed in {path.parent / MANIFEST_NAME}: it is not an artifact of that "
                             f"export; {fix}, or move the file out of {path.parent}")
    if record is not None and path.is_file() and path.stat().st_size == 0:
        raise IntegrityError(f"{path} is empty (0 bytes), not the file {path.parent / MANIFEST_NAME} lists: {fix}")
    if record is not None and sha256_of(path) != record.get("sha256"):
        raise IntegrityError(f"{path} changed since it was {made} (sha256 differs from "
                         f"{path.parent / MANIFEST_NAME}): {fix}")
    return record


def verify_beside(path: Path, *, made: str = "exported", fix: str = "re-run the export") -> dict | None:
    """Check `path` against the manifest in its own directory: the file it lists, or, when that directory
    has a manifest that does not list it, a file of unknown origin, refused (IntegrityError). A file in a
    directory without a manifest is the user's own: None."""
    manifest = read_manifest(path.parent)
    return verified_record(path, manifest, made=made, fix=fix, required=manifest is not None)


def listed_with(manifest: dict, record: dict) -> dict:
    """`manifest` listing `record` (in place of an entry of the same path)."""
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != record["path"]] + [record]
    return manifest


def record_in_manifest(out_dir: Path, key: str, value: dict) -> dict:
    """The manifest of `out_dir` with `value` under `key`, written whole (atomically); its artifacts are untouched."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise InputError(f"no manifest in {out_dir} to record {key} in")
    manifest[key] = value
    with staged(Path(out_dir)) as staging:
        stage_manifest(staging, out_dir, manifest)
    return manifest


def stage_manifest(staging, out_dir: Path, manifest: dict) -> None:
    """Stage the manifest with the files it lists (artifacts.staged): it is renamed into place after them."""
    staging.path(Path(out_dir) / MANIFEST_NAME).write_text(manifest_text(manifest))




ACCEPT_OVER_BUDGET = "--accept-over-budget"


def over_budget(manifest: dict | None, record: dict | None) -> str | None:
    """Why the artifact of `record` must not ship unasked: it is, or was built from, an int8 ONNX written over its
    accuracy budget (export --eval). None otherwise."""
    entries = {a.get("path"): a for a in (manifest or {}).get("artifacts", []) if isinstance(a, dict)}
    seen: set = set()
    while isinstance(record, dict) and record.get("path") not in seen:
        seen.add(record.get("path"))
        accuracy = record.get("accuracy")
        if isinstance(accuracy, dict) and accuracy.get("within_budget") is False:
            return (f"{record['path']} is over its accuracy budget: {_points(accuracy.get('drop_points'))} points of "
                    f"top-1 lost against fp32 on its --eval images, {_points(accuracy.get('allowed_drop_points'))} "
                    "allowed")
        source = record.get("source")
        record = entries.get(source.get("path")) if isinstance(source, dict) else None
    return None


def check_budget(manifest: dict | None, record: dict | None, accepted: bool) -> str | None:
    """InputError (exit 2) for an over-budget artifact unless `accepted` (--accept-over-budget); the line to warn
    with when accepted."""
    problem = over_budget(manifest, record)
    if problem and not accepted:
        raise InputError(f"{problem}: pass {ACCEPT_OVER_BUDGET} to use it anyway, or re-export int8 within budget "
                         "(more representative --calib images, a higher --fallback-limit), or use fp16")
    return f"{problem}: used because {ACCEPT_OVER_BUDGET} was passed" if problem else None


def _points(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "?"
