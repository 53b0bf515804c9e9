"""What a benchmark measures: variants × backends × precisions × batches, from a suite file and overrides."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..core.artifacts import PRECISIONS
from ..core.errors import InputError, check_number
from ..models.registry import resolve_name
from ..runners import BACKENDS, Backend, unsupported

log = logging.getLogger(__name__)

# Your own suites in ./benchmarks/suites first, then the built-in ones, which travel with the package.
SUITE_DIRS = (Path("benchmarks/suites"), Path(__file__).resolve().parent / "suites")
DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class BenchPlan:
    variants: list[str]
    backends: list[str]  # names in the backend table; torch/torch-compile follow `device`
    precisions: list[str]
    batches: list[int]
    device: str = "cpu"  # where the torch backends run
    warmup_s: float = 2.0
    duration_s: float = 5.0
    rounds: int = DEFAULT_ROUNDS  # every row measured this many times, rows alternating round by round
    tf32: bool = False  # let fp32 rows on a GPU use TF32 (labelled in every row); off: fp32 is fp32
    include_transfers: bool = False
    check_parity: bool = False
    export_root: Path = Path("export")
    description: str = ""
    # The rows measured, as "backend:precision": a suite that wants some pairs of backends x precisions, not all.
    # None: every pair. --backends and --precision narrow it.
    rows: list[str] | None = None
    accept_over_budget: bool = False  # measure an int8 model written over its accuracy budget
    export_dir: Path | None = None  # one variant's export directory, in place of export_root/<variant> (optimize)
    # The export's checkpoint where it is now (optimize --weights: the same sha256 as the manifest's, perhaps moved),
    # in place of the path the manifest recorded; for one variant.
    weights: Path | None = None

    def check(self) -> "BenchPlan":
        if not self.variants:
            raise InputError("name at least one VARIANT (or a --suite)")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise InputError(f"unknown backend '{', '.join(unknown)}': choose from {', '.join(BACKENDS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise InputError(f"unknown precision '{', '.join(unknown)}': choose from {', '.join(PRECISIONS)}")
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise InputError(f"--batch takes positive integers, got {self.batches}")
        if (self.export_dir is not None or self.weights is not None) and len(self.variants) > 1:
            raise InputError("an export directory or checkpoint of its own is for one variant: use export_root for "
                             "several")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, not {self.device}")
        check_number(self.warmup_s, "--warmup-s", minimum=0)
        check_number(self.duration_s, "--duration-s", above=0)
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise InputError(f"--rounds must be a positive integer, got {self.rounds}")
        if self.rows is not None:
            for row in self.rows:
                backend, _, precision = str(row).partition(":")
                if backend not in BACKENDS or precision not in PRECISIONS:
                    raise InputError(f"row '{row}' is not BACKEND:PRECISION (backends: {', '.join(BACKENDS)}; "
                                     f"precisions: {', '.join(PRECISIONS)})")
            if not self.pairs():
                raise InputError(f"no row left: the suite's rows ({', '.join(self.rows)}) name none of the backends "
                                 f"{', '.join(self.backends)} in {', '.join(self.precisions)}")
        for precision in self.precisions:  # a precision none of the backends can run: said now, not as skipped rows
            reasons = list(dict.fromkeys(unsupported(b, p) for b, p in self.pairs() if p == precision))
            if reasons and all(reasons):
                raise InputError(f"no backend of this sweep runs {precision}: {'; '.join(reasons)}")
        return self

    def directory(self, variant: str) -> Path:
        """Where `variant`'s export is: export_dir, or export_root/<variant>."""
        return Path(self.export_dir) if self.export_dir is not None else self.export_root / variant

    def resolved_backends(self) -> list[Backend]:
        """The plan's backends from the one table; `--device cuda` moves torch and torch-compile to the GPU."""
        return list(dict.fromkeys(self._resolve(name) for name in self.backends))

    def pairs(self) -> list[tuple[Backend, str]]:
        """The (backend, precision) rows measured for each variant and batch: backends x precisions, less what
        `rows` leaves out."""
        wanted = None if self.rows is None else set(self.rows)
        pairs = [(self._resolve(b), p) for b in self.backends for p in self.precisions
                 if wanted is None or f"{b}:{p}" in wanted]
        return list(dict.fromkeys(pairs))

    def _resolve(self, name: str) -> Backend:
        if self.device == "cuda" and BACKENDS[name].engine == "torch" and f"{name}-cuda" in BACKENDS:
            name = f"{name}-cuda"
        return BACKENDS[name]

    def to_dict(self) -> dict:
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}


SUITE_KEYS = ("variants", "backends", "precisions", "batches", "rows", "device", "warmup_s", "duration_s", "rounds",
              "tf32", "include_transfers", "description")


def find_suite(name_or_path: str) -> Path:
    """A suite file: a path, or a name looked up in ./benchmarks/suites, then among the built-in suites."""
    path = Path(name_or_path)
    if path.suffix or path.parent != Path("."):
        if path.is_file():
            return path
        raise InputError(f"no suite file {path}")
    for directory in SUITE_DIRS:
        if (directory / f"{name_or_path}.toml").is_file():
            return directory / f"{name_or_path}.toml"
    known = sorted({p.stem for d in SUITE_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise InputError(f"no suite '{name_or_path}': known suites: {', '.join(known) or 'none found'} "
                     "(or pass a .toml path)")


def load_suite(name_or_path: str) -> BenchPlan:
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"suite {path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise InputError(f"suite {path}: unknown key '{unknown[0]}': the keys are {', '.join(SUITE_KEYS)}")
    plan = {k: data[k] for k in SUITE_KEYS if k in data}
    plan["variants"] = [resolve_name(v) for v in plan.get("variants", [])]
    for key in ("backends", "precisions", "batches"):
        plan.setdefault(key, [])
    try:
        return BenchPlan(**plan).check()
    except TypeError as err:
        raise InputError(f"suite {path}: {err}") from None
