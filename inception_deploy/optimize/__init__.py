"""`optimize`: the fastest deployment that keeps your accuracy, chosen on this machine and written as a Triton
repository. From Python: `optimize.run(OptimizeOptions("v1", eval_dir=..., weights=...))`, as the CLI calls it."""

from .options import Measurement, OptimizeOptions
from .search import OptimizeOutcome, run

__all__ = ["Measurement", "OptimizeOptions", "OptimizeOutcome", "run"]
