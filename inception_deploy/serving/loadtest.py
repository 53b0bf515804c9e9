"""Load on a Triton server (ours from `serve`, or a production one), through tritonclient: throughput and latency
per concurrency, failed requests counted, and with `check` every response compared with the local reference
for the same input, so that a batch the dynamic batcher formed must answer as batch 1 does."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.artifacts import ONNX_FILES
from ..core.compare import difference
from ..core.deps import require
from ..core.errors import InputError, first_line
from ..core.manifest import verify_beside
from ..core.timing import summarize
from ..core.tolerances import TOLERANCES
from ..runners import BACKENDS, open_runner

log = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
WARMUP_REQUESTS = 3  # per client, before the clock starts: connections made, the server's first batch done


@dataclass
class LoadRow:
    concurrency: int
    requests: int
    failures: int
    seconds: float
    throughput: float  # responses per second (one image each)
    latency: dict | None  # timing.LatencyStats of the successful requests
    checked: int = 0  # responses compared with the local reference
    mismatches: int = 0  # of those, out of tolerance
    worst_scaled: float | None = None  # the largest difference, relative to the output's scale
    first_error: str | None = None


@dataclass
class LoadReport:
    url: str
    model: str
    protocol: str
    inputs: str
    reference: str | None
    rows: list[LoadRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.failures == 0 and r.mismatches == 0 for r in self.rows)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "passed": self.passed,
                "rows": [asdict(r) for r in self.rows]}


def run_loadtest(url: str, model: str, *, protocol: str = "http", concurrency: list[int] = (1, 4, 16, 64),
                 duration_s: float = 10.0, samples: np.ndarray | None = None, reference: Callable | None = None,
                 precision: str = "fp32", inputs_label: str = "random", reference_label: str | None = None,
                 on_step: Callable[[str], None] | None = None) -> LoadReport:
    """`samples`: (N, C, H, W) inputs sent one per request, in turn; `reference(x) -> logits` for --check."""
    step = on_step or (lambda _: None)
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be http or grpc, not '{protocol}'")
    if not concurrency or any(c < 1 for c in concurrency) or duration_s <= 0:
        raise InputError("--concurrency takes positive integers and --duration-s must be > 0")
    client_module = require(f"tritonclient.{protocol}")
    address = url.split("://", 1)[-1].rstrip("/")
    input_name, output_name, shape = _metadata(client_module, address, model, protocol)
    if samples is None:
        samples = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    expected = reference(samples) if reference is not None else None
    tolerance = TOLERANCES[precision]
    report = LoadReport(url, model, protocol, inputs_label, reference_label)
    for level in concurrency:
        step(f"concurrency {level}: {duration_s:g} s")
        report.rows.append(_level(client_module, address, model, input_name, output_name, samples, expected, tolerance,
                                  level, duration_s))
    return report


def _metadata(client_module, address: str, model: str, protocol: str) -> tuple[str, str, tuple[int, ...]]:
    try:
        client = client_module.InferenceServerClient(address)
        if not client.is_server_ready():
            raise InputError(f"the Triton server at {address} is not ready")
        meta = client.get_model_metadata(model, **({"as_json": True} if protocol == "grpc" else {}))
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - connection refused, unknown model: tritonclient's own errors
        raise InputError(f"cannot use model '{model}' at {address} ({first_line(err, 160)}): start it with "
                         "`inception-deploy serve`, or check the URL, protocol and --model") from None
    tensor_in, tensor_out = meta["inputs"][0], meta["outputs"][0]
    dims = [int(d) for d in tensor_in["shape"]]
    return tensor_in["name"], tensor_out["name"], tuple(dims[1:] if dims and dims[0] == -1 else dims)


def _level(
    client_module, address, model, input_name, output_name, samples, expected, tolerance, level, duration_s
) -> LoadRow:
    latencies: list[float] = []
    lock = threading.Lock()
    state = {"requests": 0, "failures": 0, "checked": 0, "mismatches": 0, "worst": None, "error": None}
    deadline = [0.0]
    # Every client warmed up, then the clock starts for all at once (the barrier's action sets the deadline).
    start_gate = threading.Barrier(level + 1, action=lambda: deadline.__setitem__(0, time.perf_counter() + duration_s))

    def client_loop(index: int) -> None:
        client = client_module.InferenceServerClient(address)

        def infer(i: int) -> np.ndarray:
            x = samples[i:i + 1]
            tensor = client_module.InferInput(input_name, list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return client.infer(model, [tensor]).as_numpy(output_name)

        try:
            for k in range(WARMUP_REQUESTS):
                infer((index + k) % len(samples))
        except Exception:  # noqa: BLE001 - a server that fails fails again, timed and counted, below
            pass
        start_gate.wait()
        k = 0
        while time.perf_counter() < deadline[0]:
            i = (index + k * level) % len(samples)
            k += 1
            t0 = time.perf_counter()
            try:
                got = infer(i)
            except Exception as err:  # noqa: BLE001 - a failed request is a figure, not a crash
                with lock:
                    state["requests"] += 1
                    state["failures"] += 1
                    state["error"] = state["error"] or first_line(err, 160)
                continue
            took = time.perf_counter() - t0
            check = None
            if expected is not None:
                check = difference(expected[i:i + 1], np.asarray(got, dtype=np.float32).reshape(1, -1))
            with lock:
                state["requests"] += 1
                latencies.append(took)
                if check is not None:
                    state["checked"] += 1
                    state["mismatches"] += not tolerance.passes(check)
                    state["worst"] = max(state["worst"] or 0.0, check.scaled)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(level)]
    for t in threads:
        t.start()
    start_gate.wait()
    start = deadline[0] - duration_s
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ok = len(latencies)
    return LoadRow(level, state["requests"], state["failures"], seconds, ok / seconds,
                   summarize(latencies, 1, seconds).to_dict() if latencies else None,
                   state["checked"], state["mismatches"], state["worst"], state["error"])


def local_reference(export_dir: Path, precision: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The export's ONNX of `precision` in ONNX Runtime on this CPU, one input at a time (batch 1)."""
    path = Path(export_dir) / ONNX_FILES[precision]
    if not path.is_file():
        raise InputError(f"--check needs the local {path} to compare with: pass --dir, or export it")
    verify_beside(path)
    runner = open_runner(BACKENDS["onnxruntime"], artifact=path, precision=precision)

    def reference(samples: np.ndarray) -> np.ndarray:
        with runner:
            name = runner.inputs[0].name
            return np.concatenate(
                [next(iter(runner.run({name: samples[i : i + 1]}).values())) for i in range(len(samples))]
            )

    return reference, f"{path} on onnxruntime-cpu, batch 1"
