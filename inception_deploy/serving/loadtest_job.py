"""A whole load test, as `inception-deploy loadtest` runs it and a Python caller can: outputs checked first,
the inputs (random, or images through the variant's preprocessing), the local reference for --check, the
levels, and the reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..core.artifacts import check_output_dir, check_output_file
from ..core.errors import CheckFailed, InputError
from ..export import default_out_dir
from ..models.labelled import image_set
from ..models.registry import get_spec
from .loadtest import LoadReport, local_reference, run_loadtest
from .loadtest_report import write_reports

log = logging.getLogger(__name__)


def load_test(url: str, model: str, *, protocol: str = "http", concurrency: list[int] = (1, 4, 16, 64),
              duration_s: float = 10.0, images: Path | None = None, check: bool = False, precision: str = "fp32",
              variant: str | None = None, export_dir: Path | None = None, json_out: Path | None = None,
              report_dir: Path | None = None, command: str | None = None,
              on_step: Callable[..., None] | None = None) -> tuple[LoadReport, list[Path]]:
    """Load `model` at `url` level by level; the report and the files written."""
    if json_out is not None:
        check_output_file(json_out, "--json")
    if report_dir is not None:
        check_output_dir(report_dir, "--report")
    spec = get_spec(variant) if variant else None
    if (images is not None or check) and spec is None:
        try:
            spec = get_spec(model)
        except InputError:
            raise InputError(f"model '{model}' is not a variant's name: pass --variant for --images/--check") from None
    samples, label = None, "random"
    if images is not None:
        batch, _, skipped = image_set(spec, images)
        samples, label = batch.numpy(), f"image from {images}"
        for name, reason in skipped:
            log.warning("skipped image %s: %s", name, reason)
    reference = local_reference(export_dir or default_out_dir(spec.name), precision, spec.name) if check else None
    report = run_loadtest(
        url,
        model,
        protocol=protocol,
        concurrency=concurrency,
        duration_s=duration_s,
        samples=samples,
        reference=reference,
        inputs_label=label,
        on_step=on_step,
    )
    return report, write_reports(report, json_path=json_out, report_dir=report_dir, command=command)


def raise_for_failures(report: LoadReport) -> None:
    """CheckFailed (exit 1) when a request failed or a checked response left tolerance."""
    if report.passed:
        return
    first = next((r.first_error for r in report.rows if r.first_error), None)
    failed = sum(r.failures for r in report.rows)
    mismatched = sum(r.mismatches for r in report.rows)
    against = f" (the {report.precision} tolerance, against {report.reference})" if report.reference else ""
    raise CheckFailed(f"{failed} request(s) failed and {mismatched} response(s) were out of tolerance{against}"
                      + (f"; first error: {first}" if first else ""))
