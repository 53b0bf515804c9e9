"""One interface for every backend: named arrays in, named arrays out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # a str is a symbolic (dynamic) dimension
    dtype: str  # numpy dtype name: "float32", "float16"

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


class Runner(ABC):
    """A loaded model on one backend and device. Use as a context manager, or call close()."""

    backend: str  # "torch", "onnxruntime", ...
    device: str  # "cpu", "cuda"
    precision: str  # "fp32", "fp16", "int8"
    _inputs: list[TensorInfo]  # set by each runner from its backend's metadata
    _outputs: list[TensorInfo]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs may be numpy arrays or torch tensors; each is cast to the dtype the
        model declares. Outputs are numpy arrays on the host."""
        return self._run(self._host_arrays(feed))

    # For benchmarks: inputs made ready once, outside the timed region, and runs that leave results where
    # the backend computed them. On the CPU these are plain runs; GPU runners keep everything on the device.
    def prepare(self, feed: Mapping[str, object]) -> object:
        return self._host_arrays(feed)

    def run_prepared(self, prepared: object) -> None:
        self._run(prepared)

    def synchronize(self) -> None:
        """Wait until the device has finished the work issued so far."""

    def _host_arrays(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        expected = {t.name: t for t in self.inputs}
        if set(feed) != set(expected):
            raise ValueError(f"{self.describe()} takes inputs {sorted(expected)}, got {sorted(feed)}")
        arrays = {}
        for name, value in feed.items():
            array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            arrays[name] = np.ascontiguousarray(array, dtype=expected[name].dtype)
        return arrays

    def describe(self) -> str:
        return f"{self.backend} ({self.device}, {self.precision})"

    def close(self) -> None:
        """Release the backend's resources (sessions, device memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
