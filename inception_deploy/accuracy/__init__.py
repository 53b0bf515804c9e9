"""Top-1/top-5 of every artifact on labelled images, against fp32 PyTorch on the same images, and the report."""

from .evaluate import AccuracyReport, AccuracyRow, evaluate_accuracy

__all__ = ["AccuracyReport", "AccuracyRow", "evaluate_accuracy"]
