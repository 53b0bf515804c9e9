"""One interface for every backend: named arrays in, named arrays out.

A runner is cheap to construct (it checks that its backend and device exist, and keeps its settings) and
allocates only when activated (`with runner:` or `activate()`), so that a benchmark can take a memory
baseline first, and nothing of one candidate carries over to the next after `close()`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from ..core.errors import BackendMissing, InceptionDeployError

log = logging.getLogger(__name__)

DEVICE_HOOKS = ("prepare", "run_prepared", "fetch", "synchronize", "device_timer")
DEVICE_MEMORY = ("device memory in use at the row's end above the baseline before activation (cudaMemGetInfo, the "
                 "same for every backend: allocator pools or arena, workspaces, CUDA graphs; MiB)")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # a str is a symbolic (dynamic) dimension
    dtype: str  # numpy dtype name: "float32", "float16"

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


class MeasurementInvalid(InceptionDeployError):
    """What ran is not what the row's label says (eager code under torch-compile, a recompile, …)."""


class Runner(ABC):
    """A model on one backend and device. Use as a context manager, or call activate() and close()."""

    backend: str  # "torch", "onnxruntime", ...
    device: str  # "cpu", "cuda"
    precision: str  # "fp32", "fp16", "int8", "int8-cpu" (core.artifacts.PRECISIONS)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # where this runner can run; a device runner owns its hooks
    _inputs: list[TensorInfo]  # set on activation, from the backend's metadata
    _outputs: list[TensorInfo]
    _active = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A runner that leaves results on a device must say how its work is prepared, timed and waited
        # for: the CPU defaults would time host copies, or stop the clock before the device has finished.
        if set(cls.devices) - {"cpu"}:
            missing = [hook for hook in DEVICE_HOOKS if getattr(cls, hook) is getattr(Runner, hook)]
            if missing:
                raise TypeError(f"{cls.__name__} runs on {', '.join(cls.devices)} and must implement "
                                f"{', '.join(missing)}")

    @classmethod
    def for_backend(cls, backend, *, model=None, artifact=None, precision: str = "fp32", **settings) -> "Runner":
        """This runner for an entry of the backend table (runners.BACKENDS); an engine or file runner by default."""
        return cls(artifact, precision=precision, **settings)

    # Life cycle.
    def activate(self) -> "Runner":
        if not self._active:
            self._memory_baseline = self._memory_in_use()
            self._activate()
            self._active = True
        return self

    @abstractmethod
    def _activate(self) -> None:
        """Load the model: sessions, engines, device memory."""

    def close(self) -> None:
        """Release the backend's resources (sessions, device memory)."""
        self._active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def inputs(self) -> list[TensorInfo]:
        if not hasattr(self, "_inputs"):
            self.activate()
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        if not hasattr(self, "_outputs"):
            self.activate()
        return self._outputs

    # Running.
    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run(self, feed: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs may be numpy arrays or torch tensors; each is cast to the dtype the
        model declares. Outputs are numpy arrays on the host."""
        self.activate()
        return self._run(self._host_arrays(feed))

    # For benchmarks: inputs made ready once, outside the timed region; runs that leave results where the
    # backend computed them; `fetch` copies the results of a prepared run to the host (for parity beside
    # speed, through the very path that was timed). These defaults are for the CPU.
    def prepare(self, feed: Mapping[str, object]) -> object:
        return self._host_arrays(feed)

    def run_prepared(self, prepared: object) -> None:
        self._run(prepared)

    def fetch(self, prepared: object) -> dict[str, np.ndarray]:
        return self._run(prepared)

    def synchronize(self) -> None:
        """Wait until the device has finished the work issued so far."""

    def device_timer(self):
        """A timer of device compute (start/stop/elapsed_ms, CUDA events on the runner's stream), or None."""
        return None

    # What a benchmark row records.
    @classmethod
    def candidates(cls, backend, precision: str) -> list[dict]:
        """Settings worth measuring for `backend` (an entry of runners.BACKENDS) in `precision`, each a dict of
        constructor keywords; the fastest wins. Only settings that can win: each costs a session per round."""
        return [{}]

    def settings(self) -> dict:
        """The settings this runner ran with, for the record."""
        return {}

    def audit(self) -> dict:
        """After a measurement: facts about what actually ran (compiled graphs, node placement…), for the
        record. Raises MeasurementInvalid when that is not what the label says; returns warnings under
        "warnings"."""
        return {}

    def memory(self) -> tuple[float | None, str]:
        """(MiB, what it measures): this runner's own memory, measured one way for every backend of a device.

        On a GPU: device memory in use (cudaMemGetInfo) at the end of the row, while the runner still holds what it
        allocated, above the baseline taken before activation. The caching allocators (torch's, ONNX Runtime's arena)
        keep what they reserved until the runner closes, so this is their peak, with workspaces, CUDA graphs and
        library handles. On the CPU: the process's peak RSS during this row (freed memory stays resident in the
        allocators, so a difference from a baseline would understate it)."""
        if self._memory_baseline is None:
            return None, "unavailable here"
        if self.device != "cpu":
            return device_memory_in_use_mib() - self._memory_baseline, DEVICE_MEMORY
        return _proc_status_mib("VmHWM"), "process peak RSS during this row (MiB)"

    def _memory_in_use(self) -> float | None:
        """The baseline for memory(); on the CPU it also restarts the kernel's peak-RSS counter (VmHWM)."""
        if self.device != "cpu":
            return device_memory_in_use_mib()
        return _proc_status_mib("VmRSS") if reset_peak_rss() else None  # without a reset, a peak is not this row's

    # Helpers.
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


class CudaEventTimer:
    """Device compute time of the work issued on `stream` between start() and stop()."""

    def __init__(self, stream):
        import torch

        self.stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record(self.stream)

    def stop(self) -> None:
        self._stop.record(self.stream)

    def elapsed_ms(self) -> float:  # after the stream has been synchronised
        return self._start.elapsed_time(self._stop)


def device_memory_in_use_mib() -> float:
    """Device memory in use on the current GPU, by every allocator in this process (and any other)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendMissing("no CUDA GPU here: run on a machine with an NVIDIA GPU and a CUDA build of torch")
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def reset_peak_rss() -> bool:
    """Restart Linux's per-process peak RSS (VmHWM), so that a peak is this row's, not the process's so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None
