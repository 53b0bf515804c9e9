"""`inception-deploy models`: the zoo, its reference sizes, and the checkpoints each variant loads."""

from __future__ import annotations

import json
import logging
import sys

import typer
from rich.table import Table

from ..models.registry import list_models
from .common import app, out

log = logging.getLogger(__name__)


def model_rows() -> list[dict]:
    return [{"name": s.name, "aliases": list(s.aliases), "params": s.params, "params_with_aux": s.params_with_aux,
             "input_size": list(s.input_size), "gmacs": s.gmacs, "checkpoint_layout": s.layout.source}
            for s in list_models()]


@app.command()
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
        table.add_row(r["name"], ", ".join(r["aliases"]), f"{r['params']:,}",
                      f"{r['params_with_aux']:,}" if r["params_with_aux"] else "—",
                      "×".join(map(str, r["input_size"][1:])), f"{r['gmacs']:.2f}")
    out.print(table)
    out.print("Checkpoints each one loads unchanged (--weights):")
    for r in rows:
        out.print(f"  {r['name']:<20} {r['checkpoint_layout']}", highlight=False)
