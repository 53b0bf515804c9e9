"""Options several commands share, declared once (Polygraphy's argument groups, as Annotated types)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.errors import InputError
from ..runners import BACKENDS

log = logging.getLogger(__name__)

BACKEND_LIST = ", ".join(BACKENDS)  # every backend, from the one table: the --help of each command names them all
VARIANT_HELP = "googlenet (v1), inception_v2 (v2), inception_v3 (v3), inception_v4 (v4), inception_resnet_v2 (irv2)."

Variant = Annotated[str, typer.Argument(help=f"The variant (name or alias): {VARIANT_HELP}")]
ExportDir = Annotated[Optional[Path], typer.Option(
    "--dir", help="The export directory (manifest.json and its artifacts); default export/<variant>/.")]
WriteDir = Annotated[Optional[Path], typer.Option(
    "--dir", help="The export directory to write into (manifest.json and its artifacts); default export/<variant>/.")]
# Former spellings, kept working (hidden) so that no script breaks: one name per meaning across the commands.
OldOut = Annotated[Optional[Path], typer.Option("--out", hidden=True, help="The former name of --dir.")]
Precision = Annotated[str, typer.Option("--precision", help="fp32, fp16, int8 (TensorRT's Q/DQ form) or int8-cpu "
                                                            "(ONNX Runtime's CPU form): which artifact of the export.")]
Precisions = Annotated[Optional[str], typer.Option(
    "--precision", help="Comma-separated fp32,fp16,int8,int8-cpu; default: every artifact present.")]
JsonFile = Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report to PATH.")]
JsonOrStdout = Annotated[Optional[str], typer.Option(
    "--json", help="Write the JSON report to PATH, or '-' for stdout.")]
ReportDir = Annotated[Optional[Path], typer.Option(
    "--report", help="Write the report into DIR: JSON for machines, Markdown and PNG plots for people.")]
# The labelled images an accuracy budget is measured on, and the calibration images int8 is made from (export and
# optimize): one declaration each.
EvalLabels = Annotated[Optional[Path], typer.Option("--eval-labels", help="CSV of file,class for a flat --eval "
                                                                          "folder.")]
EvalLimit = Annotated[Optional[int], typer.Option("--eval-limit", help="Use the first N eval images (round-robin over "
                                                                       "the classes).")]
CalibSamples = Annotated[int, typer.Option("--calib-samples", help="How many calibration images to use.")]
AcceptOverBudget = Annotated[bool, typer.Option(
    "--accept-over-budget", help="Use an int8 model that export --eval wrote over its accuracy budget (refused "
                                 "otherwise).")]


def renamed(value, old, name: str, old_name: str):
    """An option given by its name or by its former one (hidden): the value, or InputError when both disagree."""
    if value is not None and old is not None and value != old:
        raise InputError(f"{old_name} is the former name of {name}: give {name} once")
    return value if value is not None else old
