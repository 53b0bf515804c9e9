"""Does every backend compute what the PyTorch model computes? The check, where it diverges, and the report."""

from .check import ParityReport, check_parity

__all__ = ["ParityReport", "check_parity"]
