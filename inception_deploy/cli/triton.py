"""`inception-deploy triton`: a Triton model repository for production Triton."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Optional

import typer

from ..core.errors import InputError
from ..core.interrupts import interrupted_says
from ..core.manifest import read_manifest
from ..export import default_out_dir
from ..models.registry import get_spec
from ..serving.triton_repo import RUNTIMES, TritonOptions, write_repository
from .common import app, csv_list, out, warn
from .options import AcceptOverBudget, ExportDir, Precision, Variant, renamed

log = logging.getLogger(__name__)


@app.command()
def triton(
    variant: Variant,
    precision: Precision = "fp32",
    runtime: str = typer.Option("onnxruntime", "--runtime", help="onnxruntime (the ONNX) or tensorrt (an engine from "
                                                                 "`trt --compiler tensorrt`)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Triton's max_batch_size; 0 for a fixed-batch export (no "
                                                          "batching)."),
    instances: int = typer.Option(1, "--instances", help="Model instances per device (instance_group count)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu, as for serve: where Triton runs the "
                                                                 "instances (default: cpu for int8-cpu, else cuda)."),
    old_kind: Optional[str] = typer.Option(None, "--kind", hidden=True, help="The former name of --device: gpu or "
                                                                             "cpu."),
    preferred_batch: Optional[str] = typer.Option(None, "--preferred-batch", help="The dynamic batcher's preferred "
                                                                                  "sizes, e.g. 8,16,32."),
    max_queue_delay_us: int = typer.Option(100, "--max-queue-delay-us", help="How long the dynamic batcher may hold a "
                                                                             "request to fill a batch."),
    trt_accelerator: bool = typer.Option(False, "--trt-accelerator", help="onnxruntime on a GPU: let Triton's ORT "
                                                                          "backend use TensorRT."),
    name: Optional[str] = typer.Option(None, "--name", help="The model's name in the repository (letters, digits, "
                                                            "'_', '-', '.'); default: the variant's."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="The class names, one a line (as many as the head "
                                                                 "has classes); default: ImageNet's for 1000 classes."),
    export_dir: ExportDir = None,
    repo: Path = typer.Option(Path("model_repository"), "--repo", help="The Triton model repository to write into."),
    accept_over_budget: AcceptOverBudget = False,
):
    """Write a Triton model repository (config.pbtxt + the verified artifact + its manifest) for production Triton."""
    spec = get_spec(variant)
    device = renamed(device, {"gpu": "cuda"}.get(old_kind, old_kind), "--device", "--kind")
    options = TritonOptions(precision=precision, runtime=runtime, max_batch=max_batch, instances=instances,
                            device=device,
                            preferred_batch=tuple(csv_list(preferred_batch, int, "--preferred-batch") or ()),
                            max_queue_delay_us=max_queue_delay_us, trt_accelerator=trt_accelerator, name=name,
                            labels=None if labels is None else str(labels),
                            accept_over_budget=accept_over_budget).check()
    directory = export_dir or default_out_dir(spec.name)
    manifest = read_manifest(directory)
    if manifest is not None and manifest["variant"] != spec.name:
        raise InputError(f"{directory} holds an export of {manifest['variant']}, not {spec.name}: name the right "
                         "VARIANT or --dir")
    with interrupted_says(f"interrupted: {repo} is as it was"):
        served = write_repository(directory, repo, options)
    out.print(f"wrote {served.model_dir}: {served.artifact['path']} (sha256 {served.artifact['sha256'][:12]}…, "
              f"{RUNTIMES[options.runtime][0]}), config.pbtxt, labels.txt, manifest.json", highlight=False,
              soft_wrap=True)
    for warning in served.warnings:
        warn(warning)
    out.print(
        f"serve it: docker run --rm {'--gpus all ' if options.device == 'cuda' else ''}-p 8000:8000 -p 8001:8001 "
        f"-p 8002:8002 -v {shlex.quote(f'{repo.resolve()}:/models')} "
        "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
        highlight=False,
        soft_wrap=True,
    )
