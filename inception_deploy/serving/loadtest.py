"""Load on a Triton server (ours from `serve`, or a production one), through tritonclient: throughput and latency
per concurrency, failed requests counted, and with `check` every response compared with the local reference
for the same input, so that a batch the dynamic batcher formed must answer as batch 1 does."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.artifacts import ONNX_FILES, export_command, missing_artifact
from ..core.compare import difference
from ..core.deps import require
from ..core.errors import InceptionDeployError, InputError, check_number, first_line
from ..core.manifest import verify_beside
from ..core.timing import summarize
from ..core.tolerances import TOLERANCES
from ..export.forms import check_form
from ..runners import BACKENDS, open_runner
from ..runners.base import TensorInfo

log = logging.getLogger(__name__)

SCHEMES = {"http": ("http", "https"), "grpc": ("grpc", "grpcs")}  # each protocol's URL schemes: plain, TLS
PROTOCOLS = tuple(SCHEMES)
MAX_DURATION_S = 86_400.0  # a level of a day: beyond it, a typo
WARMUP_REQUESTS = 3  # per client, before the clock starts: connections made, the server's first batch done
STOP_WAIT_S = 10.0  # after Ctrl-C, how long the clients get to finish the request they are in and close
TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int8": "INT8", "uint8": "UINT8",
                 "int32": "INT32", "int64": "INT64", "bool": "BOOL"}


@dataclass(frozen=True)
class Reference:
    """What --check compares every response with: the export's ONNX of `precision` (the one the server is meant
    to serve, int8 for an int8 deployment), in ONNX Runtime on this CPU, one input at a time (batch 1)."""

    path: Path
    precision: str
    runner: object = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.path} ({self.precision}) on onnxruntime-cpu, batch 1"

    @property
    def signature(self) -> tuple[TensorInfo, TensorInfo]:
        """Its input and output, as the ONNX declares them."""
        return self.runner.inputs[0], self.runner.outputs[0]

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        with self.runner:
            name = self.runner.inputs[0].name
            return np.concatenate(
                [next(iter(self.runner.run({name: samples[i : i + 1]}).values())) for i in range(len(samples))]
            )


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
    reference: str | None  # with --check: the local ONNX compared with (its path and precision), else None
    precision: str | None = None  # with --check: the precision of that ONNX, whose tolerance applies
    rows: list[LoadRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.failures == 0 and r.mismatches == 0 for r in self.rows)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "passed": self.passed,
                "rows": [asdict(r) for r in self.rows]}


def run_loadtest(url: str, model: str, *, protocol: str = "http", concurrency: list[int] = (1, 4, 16, 64),
                 duration_s: float = 10.0, samples: np.ndarray | None = None, reference: Reference | None = None,
                 inputs_label: str = "random", on_step: Callable[[str], None] | None = None) -> LoadReport:
    """`samples`: (N, C, H, W) inputs sent one per request, in turn; `reference` (local_reference) for --check:
    the served model must take and return what it does, checked before any request."""
    step = on_step or (lambda _: None)
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be http or grpc, not '{protocol}'")
    if not concurrency or any(c < 1 for c in concurrency):
        raise InputError("--concurrency takes positive integers")
    check_number(duration_s, "--duration-s", above=0, maximum=MAX_DURATION_S)
    address, secure = server_address(url, protocol)
    client_module = require(f"tritonclient.{protocol}")
    connect = functools.partial(client_module.InferenceServerClient, address, ssl=secure)
    meta = _metadata(connect, address, model, protocol)
    input_name, output_name, shape = _io(meta)
    if reference is not None:
        _check_signature(meta, model, reference)
    if meta["inputs"][0]["datatype"] != "FP32":
        raise InputError(f"the server's model '{model}' takes {meta['inputs'][0]['datatype']} input, and loadtest "
                         "sends FP32 images: serve an export with float32 inputs (exported without --fp16-io)")
    if samples is None:
        samples = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    elif tuple(samples.shape[1:]) != shape:
        raise InputError(f"the images are prepared as {list(samples.shape[1:])} but the server's model '{model}' takes "
                         f"{list(shape)}: pass the --variant it serves")
    expected = reference(samples) if reference is not None else None
    tolerance = TOLERANCES[reference.precision if reference is not None else "fp32"]
    report = LoadReport(url, model, f"{protocol}s" if secure else protocol, inputs_label,
                        reference.label if reference is not None else None,
                        reference.precision if reference is not None else None)
    for level in concurrency:
        step(f"concurrency {level}: {duration_s:g} s")
        report.rows.append(_level(client_module, connect, model, input_name, output_name, samples, expected,
                                  tolerance, level, duration_s))
    return report


def server_address(url: str, protocol: str) -> tuple[str, bool]:
    """The server's host:port from URL, and whether to use TLS: http:// and https:// for --protocol http, grpc:// and
    grpcs:// for grpc, or no scheme; a path, or a scheme of the other protocol, is refused (exit 2)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "", url.strip()
    schemes = SCHEMES[protocol]
    if scheme and scheme.lower() not in schemes:
        other = next((p for p, names in SCHEMES.items() if scheme.lower() in names), None)
        fix = f"pass --protocol {other}" if other else f"use {' or '.join(s + '://' for s in schemes)}"
        raise InputError(f"the URL {url} is {scheme}://, not --protocol {protocol}: {fix}")
    host, slash, path = rest.partition("/")
    if path.strip("/") or not host:
        raise InputError(f"the URL {url} names a path (/{path.strip('/')}) or no server: give the server's address "
                         f"alone, e.g. {'http' if protocol == 'http' else 'grpc'}://127.0.0.1:"
                         f"{8000 if protocol == 'http' else 8001}")
    return host, scheme.lower() in ("https", "grpcs")


def _metadata(connect, address: str, model: str, protocol: str) -> dict:
    client = None
    try:
        client = connect()
        if not client.is_server_ready():
            raise InputError(f"the Triton server at {address} is not ready")
        return client.get_model_metadata(model, **({"as_json": True} if protocol == "grpc" else {}))
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - connection refused, unknown model: tritonclient's own errors
        raise InputError(f"cannot use model '{model}' at {address} ({first_line(err, 160)}): start it with "
                         "`inception-deploy serve`, or check the URL, protocol and --model") from None
    finally:
        if client is not None:  # here, in the thread that made it (tritonclient.http's gevent is per thread)
            with contextlib.suppress(Exception):
                client.close()


def _io(meta: dict) -> tuple[str, str, tuple[int, ...]]:
    """The served model's input and output names, and the shape of one input (without the batch dimension)."""
    tensor_in, tensor_out = meta["inputs"][0], meta["outputs"][0]
    dims = [int(d) for d in tensor_in["shape"]]
    return tensor_in["name"], tensor_out["name"], tuple(dims[1:] if dims and dims[0] == -1 else dims)


def _check_signature(meta: dict, model: str, reference: Reference) -> None:
    """The served model takes and returns what the reference ONNX does (names, types, shapes), or InputError
    naming the difference: responses of another model are not compared with this one's."""
    expected_in, expected_out = reference.signature
    for verb, served, expected in (("takes", meta["inputs"][0], expected_in), ("returns", meta["outputs"][0],
                                                                              expected_out)):
        mine = (expected.name, TRITON_DTYPES.get(expected.dtype, expected.dtype.upper()),
                [d if isinstance(d, int) and d >= 0 else -1 for d in expected.shape])
        theirs = (served["name"], served["datatype"], [int(d) for d in served["shape"]])
        if mine != theirs:
            raise InputError(f"the server's model '{model}' {verb} {_tensor(*theirs)} but {reference.path} "
                             f"{verb} {_tensor(*mine)}: point URL and --model at the server that serves this export, "
                             "or --dir/--precision at the export it serves")


def _tensor(name: str, dtype: str, dims: list[int]) -> str:
    return f"'{name}' {dtype} {dims}"


def _level(
    client_module, connect, model, input_name, output_name, samples, expected, tolerance, level, duration_s
) -> LoadRow:
    latencies: list[float] = []
    lock = threading.Lock()
    state = {"requests": 0, "failures": 0, "checked": 0, "mismatches": 0, "worst": None, "error": None}
    deadline = [0.0]
    # Every client warmed up, then the clock starts for all at once (the barrier's action sets the deadline).
    start_gate = threading.Barrier(level + 1, action=lambda: deadline.__setitem__(0, time.perf_counter() + duration_s))
    stop = threading.Event()  # Ctrl-C: each client ends after the request it is in, and closes its own connection

    def client_loop(index: int) -> None:
        client = None
        try:
            client = _new_client(connect, state, start_gate)
            _client_requests(client, index)
        except threading.BrokenBarrierError:  # stopped before the clock started
            pass
        finally:  # in this thread: tritonclient.http's gevent hub is this thread's, and must not be touched elsewhere
            _close_quietly(client)

    def _client_requests(client, index: int) -> None:
        def infer(i: int) -> np.ndarray:
            x = samples[i:i + 1]
            tensor = client_module.InferInput(input_name, list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return client.infer(model, [tensor]).as_numpy(output_name)

        try:
            for k in range(WARMUP_REQUESTS):
                if not stop.is_set():
                    infer((index + k) % len(samples))
        except Exception:  # noqa: BLE001 - a server that fails fails again, timed and counted, below
            pass
        start_gate.wait()
        k = 0
        while not stop.is_set() and time.perf_counter() < deadline[0]:
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

    threads: list[threading.Thread] = []
    try:
        for i in range(level):
            threads.append(threading.Thread(target=client_loop, args=(i,), daemon=True, name=f"loadtest-client-{i}"))
            threads[-1].start()
        start_gate.wait()
        start = deadline[0] - duration_s
        for t in threads:
            t.join()
    except BaseException as err:  # Ctrl-C (in the main thread): the clients stop, then it goes on
        _stop_clients(stop, start_gate, threads)
        raise (InceptionDeployError(f"concurrency {level}: {state['error']}")  # a client could not be made
               if isinstance(err, threading.BrokenBarrierError) else err) from None
    seconds = time.perf_counter() - start
    ok = len(latencies)
    return LoadRow(level, state["requests"], state["failures"], seconds, ok / seconds,
                   summarize(latencies, 1, seconds).to_dict() if latencies else None,
                   state["checked"], state["mismatches"], state["worst"], state["error"])


def _new_client(connect, state: dict, start_gate: threading.Barrier):
    """A client of its own for one thread. One that cannot be made (e.g. too many open files) breaks the gate, so
    that the level stops and says why instead of waiting for a client that never comes."""
    try:
        return connect()
    except Exception as err:  # noqa: BLE001
        state["error"] = state["error"] or f"a client could not be made ({first_line(err, 160)})"
        start_gate.abort()
        raise threading.BrokenBarrierError from None


def _close_quietly(client) -> None:
    with contextlib.suppress(Exception):
        if client is not None:
            client.close()


def _stop_clients(stop: threading.Event, start_gate: threading.Barrier, threads: list[threading.Thread]) -> None:
    """Stop the clients and wait (a while) until each has closed its connection: an interpreter that exits under
    clients still in tritonclient.http's gevent crashes (SIGSEGV) instead of exiting 130."""
    stop.set()
    start_gate.abort()  # those waiting at the gate leave it
    until = time.monotonic() + STOP_WAIT_S
    for t in threads:
        t.join(max(0.0, until - time.monotonic()))


def local_reference(export_dir: Path, precision: str, variant: str | None = None) -> Reference:
    """The export's ONNX of `precision` (--precision: the one the server serves), in ONNX Runtime on this CPU."""
    if precision not in ONNX_FILES:
        raise InputError(f"--precision must be one of {', '.join(ONNX_FILES)}, not '{precision}'")
    path = Path(export_dir) / ONNX_FILES[precision]
    if not path.is_file():
        make = f"`{export_command(variant, precision)}`" if variant else "the export"
        raise missing_artifact(path, f"--check --precision {precision} compares with it: pass --dir at the export "
                                     f"that holds it, or make it with {make}")
    verify_beside(path)
    check_form(path, precision, variant)
    return Reference(path, precision, open_runner(BACKENDS["onnxruntime"], artifact=path, precision=precision))
