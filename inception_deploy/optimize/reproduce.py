"""What reproduces a search and its parts on their own: the commands, and the bench suite of exactly its rows."""

from __future__ import annotations

import json
import logging
import shlex

from .candidates import Candidate
from .choose import Verdict
from .options import OptimizeOptions

log = logging.getLogger(__name__)

SUITE_NAME = "suite.toml"  # the bench rows measured, beside the bench report: `bench --suite` runs exactly them


def bench_command(options: OptimizeOptions, measured: list[Verdict]) -> str | None:
    """The bench run on its own, exactly its rows (the suite written beside its report) or, without --report, its
    backends x precisions (a superset: the pairs not measured run too, or are skipped); None where it cannot name
    the export (bench reads ROOT/<variant>)."""
    if options.export_dir.name != options.variant:
        return None
    m = options.measurement
    root = f"--export-root {quote(options.export_dir.parent)} --check-parity"
    if options.report_dir is not None:
        return f"inception-deploy bench --suite {quote(options.report_dir / 'bench' / SUITE_NAME)} {root}"
    backends = ",".join(dict.fromkeys(v.candidate.backend for v in measured))
    precisions = ",".join(dict.fromkeys(v.candidate.precision for v in measured))
    return (f"inception-deploy bench {options.variant} {root} --backends {backends} --precision {precisions} "
            f"--batch {','.join(map(str, options.batches))} --device {options.device} --rounds {m.rounds} "
            f"--warmup-s {m.warmup_s:g} --duration-s {m.duration_s:g}")


def suite_text(options: OptimizeOptions, measured: list[Verdict]) -> str:
    """The bench suite of the rows measured, for `bench --suite`."""
    def items(values) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    m = options.measurement
    return "\n".join([
        f"description = {json.dumps(f'the rows optimize measured for {options.variant} on {options.device}')}",
        f"variants = {items([options.variant])}",
        f"backends = {items(dict.fromkeys(v.candidate.backend for v in measured))}",
        f"precisions = {items(dict.fromkeys(v.candidate.precision for v in measured))}",
        f"rows = {items(v.candidate.row for v in measured)}",
        f"batches = {items(options.batches)}", f"device = {json.dumps(options.device)}",
        f"rounds = {m.rounds}", f"warmup_s = {m.warmup_s}", f"duration_s = {m.duration_s}", ""])


def commands(options: OptimizeOptions, measured: list[Verdict], compared: list[Candidate],
              command: str | None) -> dict:
    """What reproduces the search, and its bench and accuracy runs on their own."""
    commands = {"optimize": command}
    if measured and bench_command(options, measured):
        commands["bench"] = bench_command(options, measured)
    if compared:
        given = [("--labels", options.eval_labels), ("--limit", options.eval_limit), ("--weights", options.weights),
                 ("--num-classes", options.num_classes)]
        extra = "".join(f" {option} {quote(value)}" for option, value in given if value is not None)
        backends = ",".join(dict.fromkeys(c.backend for c in compared))
        precisions = ",".join(dict.fromkeys(c.precision for c in compared))
        commands["accuracy"] = (f"inception-deploy accuracy {options.variant} --data {quote(options.eval_dir)}{extra} "
                                f"--dir {quote(options.export_dir)} --backends {backends} --precision {precisions} "
                                f"--batch {options.accuracy_batch} --max-drop {drop_text(options)}")
    return commands


def drop_text(options: OptimizeOptions) -> str:
    drop = options.max_drop
    return f"{drop.value:g}%" if drop.relative else f"{drop.value:g}"


def quote(value) -> str:
    """A path or value as a shell word."""
    return shlex.quote(str(value))
