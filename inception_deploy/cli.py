"""The `inception-deploy` command line: thin wrappers over the library API."""

from __future__ import annotations

import json
import os
import sys
from functools import wraps
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import InceptionDeployError
from .registry import list_models

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Take the Inception family from PyTorch to verified ONNX artifacts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)


def friendly_errors(command):
    """Turn the library's errors into one line on stderr and the documented exit code."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InceptionDeployError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted: nothing was written")
            raise typer.Exit(130) from None

    return wrapper


def model_rows() -> list[dict]:
    return [
        {
            "name": s.name,
            "aliases": list(s.aliases),
            "params": s.params,
            "params_with_aux": s.params_with_aux,
            "input_size": list(s.input_size),
            "gmacs": s.gmacs,
            "checkpoint_layout": s.layout.source,
        }
        for s in list_models()
    ]


@app.command()
@friendly_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")):
    """List the variants, their reference sizes and the checkpoints they load."""
    rows = model_rows()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="The Inception zoo (1000 classes)")
    for column, justify in (("name", "left"), ("aliases", "left"), ("params", "right"), ("+ aux heads", "right"),
                            ("input", "left"), ("GMACs", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"], ", ".join(r["aliases"]), f"{r['params']:,}",
            f"{r['params_with_aux']:,}" if r["params_with_aux"] else "—",
            "×".join(map(str, r["input_size"][1:])), f"{r['gmacs']:.2f}",
        )
    out.print(table)
    out.print("Checkpoints each one loads unchanged (--weights):")
    for r in rows:
        out.print(f"  {r['name']:<20} {r['checkpoint_layout']}", highlight=False)


@app.command()
@friendly_errors
def export(
    variant: str = typer.Argument(..., help="googlenet (v1), inception_v2 (v2), inception_v3 (v3), inception_v4 (v4), inception_resnet_v2 (irv2)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write the verified fp32 ONNX (the base every other artifact derives from)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint (.pth/.pt/.safetensors) in the variant's layout. Without it the model is untrained."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Head size; default: the checkpoint's, else 1000."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify the graph with onnxsim."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory; default export/<name>/."),
):
    """Export VARIANT to ONNX, prove it in ONNX Runtime, then write model.onnx and manifest.json."""
    from .export import export_onnx  # heavy: torch.onnx, onnxscript, onnxsim

    if not onnx:
        raise typer.BadParameter("--no-onnx leaves nothing to export: the ONNX model is the base artifact", param_hint="--onnx")
    if weights is None:
        err.print("[yellow]note:[/] no --weights given: exporting an [bold]untrained[/] model (random init, "
                  "BatchNorm statistics re-estimated on seeded inputs)")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=not err.is_terminal) as progress:
        task = progress.add_task("starting", total=None)

        def on_step(label: str) -> None:
            progress.update(task, description=label, advance=1)

        manifest = export_onnx(variant, weights=weights, num_classes=num_classes, opset=opset, batch=batch,
                               simplify=simplify, out_dir=out_dir, on_step=on_step)
        progress.update(task, description="done", total=progress.tasks[0].completed)
    print_export_summary(manifest, out_dir)


def print_export_summary(manifest: dict, out_dir: Optional[Path]) -> None:
    parity = manifest["export"]["parity"]
    where = out_dir or Path("export") / manifest["variant"]
    table = Table(title=f"{manifest['variant']} → {where}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("weights", manifest["weights"]["path"] if manifest["weights"] else "none: UNTRAINED (random init, BN re-estimated)")
    table.add_row("input", f"{manifest['input']['name']} {manifest['input']['shape']} float32")
    table.add_row("output", f"{manifest['output']['name']} {manifest['output']['shape']} float32")
    table.add_row("opset / params", f"{manifest['opset']} / {manifest['params']:,}")
    table.add_row(
        "ORT CPU vs torch",
        f"{'[green]PASS[/]' if parity['passed'] else '[red]FAIL[/]'}  max abs {parity['max_abs']:.2e}, "
        f"max rel {parity['max_rel']:.2e}, {parity['scaled']:.2e} of scale, cosine {parity['cosine']:.7f} "
        f"({parity['samples']} samples)",
    )
    for a in manifest["artifacts"]:
        table.add_row(a["path"], f"{a['bytes'] / 2**20:.1f} MiB  sha256 {a['sha256'][:16]}…")
    table.add_row("seconds", ", ".join(f"{k} {v:.1f}" for k, v in manifest["export"]["seconds"].items()))
    out.print(table)


def main() -> None:
    # Bare tracebacks are for developers: INCEPTION_DEPLOY_DEBUG=1 shows them for unexpected errors.
    try:
        app()
    except Exception as error:  # anything the library did not anticipate
        if os.environ.get("INCEPTION_DEPLOY_DEBUG"):
            raise
        err.print(f"error: unexpected {type(error).__name__}: {error} (set INCEPTION_DEPLOY_DEBUG=1 for the traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
