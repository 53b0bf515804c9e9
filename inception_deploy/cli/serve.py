"""`inception-deploy serve`: a real Triton Inference Server here (PyTriton), serving the verified ONNX."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..core.errors import InceptionDeployError
from ..core.interrupts import interrupted_says
from ..export import default_out_dir
from ..models.registry import get_spec
from ..serving.server import running_server
from .common import app, out
from .options import AcceptOverBudget, ExportDir, Precision, Variant

log = logging.getLogger(__name__)


@app.command()
def serve(
    variant: Variant,
    precision: Precision = "fp32",
    device: str = typer.Option("cpu", "--device", help="cpu or cuda: where ONNX Runtime runs it."),
    http_port: int = typer.Option(8000, "--http-port"),
    grpc_port: int = typer.Option(8001, "--grpc-port"),
    metrics_port: int = typer.Option(8002, "--metrics-port"),
    address: str = typer.Option("127.0.0.1", "--address", help="Where to listen; 0.0.0.0 for every interface."),
    max_batch: int = typer.Option(64, "--max-batch", help="The largest batch Triton's dynamic batcher forms."),
    max_queue_delay_us: int = typer.Option(100, "--max-queue-delay-us"),
    export_dir: ExportDir = None,
    labels: Optional[Path] = typer.Option(None, "--labels", help="The class names, one a line (as many as the head "
                                                                 "has classes); default: ImageNet's for 1000 classes."),
    accept_over_budget: AcceptOverBudget = False,
):
    """Start a real Triton Inference Server here (PyTriton) serving the verified ONNX, until Ctrl-C. For
    development, CPU hosts and tests; production Triton loads the repository `inception-deploy triton` writes."""
    spec = get_spec(variant)  # ports, address and batch are checked before the server starts (running_server)
    directory = export_dir or default_out_dir(spec.name)
    with interrupted_says("interrupted: the server stopped"):
        with running_server(directory, precision=precision, device=device, max_batch=max_batch,
                            max_queue_delay_us=max_queue_delay_us, http_port=http_port, grpc_port=grpc_port,
                            metrics_port=metrics_port, address=address, labels=labels,
                            accept_over_budget=accept_over_budget) as endpoints:
            out.print(
                f"serving {endpoints.model} ({precision}, onnxruntime on {device}) with Triton's dynamic batcher "
                f"(max batch {max_batch}): HTTP {endpoints.http}, gRPC {endpoints.grpc}, metrics "
                f"{endpoints.metrics}; server log {endpoints.log}. Ctrl-C stops it.",
                highlight=False,
                soft_wrap=True,
            )
            sys.stdout.flush()  # a pipe buffers: whoever waits for the endpoints gets them now
            while (reason := endpoints.stopped()) is None:  # a tritonserver that dies ends the command
                time.sleep(0.5)
            raise InceptionDeployError(reason)
