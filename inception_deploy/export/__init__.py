"""PyTorch → ONNX (verified), and the ONNX derived from it: fp16, and INT8 with explicit Q/DQ."""

from .onnx import add_fp16, default_out_dir, export_onnx

__all__ = ["add_fp16", "default_out_dir", "export_onnx"]
