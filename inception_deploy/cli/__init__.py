"""The `inception-deploy` command line: one small module per command, each parsing its options and making one
library call. `common.py` holds what they share; importing a command's module registers it on the app."""

from . import accuracy, bench, export, loadtest, models, optimize, parity, serve, triton, trt  # noqa: F401 - each registers
from .common import app, main

__all__ = ["app", "main"]
