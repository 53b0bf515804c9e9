"""The precision-carrying ONNX → TensorRT or TensorRT-RTX engines, and what precision each layer runs in."""

from .engine import BuildOptions, build_engine

__all__ = ["BuildOptions", "build_engine"]
