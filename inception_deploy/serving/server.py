"""A real Triton Inference Server on this machine, through PyTriton: the verified artifact served by the
project's own runner, behind Triton's HTTP/gRPC endpoints and dynamic batcher. For development, CPU hosts
and tests; a production Triton loads the repository that `triton_repo` writes.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import sysconfig
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.artifacts import ONNX_FILES, export_command
from ..core.deps import require
from ..core.errors import BackendMissing, InceptionDeployError, InputError
from ..core.interrupts import noting
from ..core.logs import quiet_library
from ..core.manifest import check_budget, read_manifest, verify_beside
from ..export.forms import check_form
from ..runners import BACKENDS, open_runner, unsupported
from .processes import our_children, quiet_resource_tracker, reap
from .triton_repo import class_labels, describe_generated_model

log = logging.getLogger(__name__)
# When tritonserver dies, PyTriton stops itself from a watcher thread, and its workspace cleanup then races serve's
# own removal of that folder (seen in CI: "Could not clean workspace …", after the call had returned). The folder is
# removed either way: the warning is noise after a one-line error, whenever it comes.
warnings.filterwarnings("ignore", message="Could not clean workspace", module=r"pytriton\.")


@dataclass(frozen=True)
class Endpoints:
    http: str
    grpc: str
    metrics: str
    model: str
    log: Path  # tritonserver's own log
    # None while tritonserver runs; once it has stopped, one line saying why (the first error of its log)
    stopped: Callable[[], str | None] = field(default=lambda: None, compare=False, repr=False)


@contextlib.contextmanager
def running_server(
    export_dir: str | Path,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    max_batch: int = 64,
    max_queue_delay_us: int = 100,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    address: str = "127.0.0.1",
    name: str | None = None,
    labels: str | Path | None = None,
    accept_over_budget: bool = False,
) -> Iterator[Endpoints]:
    """Serve the export's ONNX of `precision` until the block ends; yield its endpoints once it is ready."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise InputError(f"no export in {export_dir}: run `inception-deploy export VARIANT` first")
    if precision not in ONNX_FILES:
        raise InputError(f"--precision must be one of {', '.join(ONNX_FILES)}, not '{precision}'")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not '{device}'")
    backend = BACKENDS["onnxruntime" if device == "cpu" else "onnxruntime-cuda"]
    if unsupported(backend, precision):
        raise InputError(f"{unsupported(backend, precision)}: serve it with --device cpu")
    address = checked_endpoints(address, {"--http-port": http_port, "--grpc-port": grpc_port,
                                          "--metrics-port": metrics_port}, max_batch, max_queue_delay_us)
    artifact = export_dir / ONNX_FILES[precision]
    if not artifact.is_file():
        raise InputError(f"no {artifact}: make it with `{export_command(manifest['variant'], precision)}`")
    accepted = check_budget(manifest, verify_beside(artifact), accept_over_budget)
    check_form(artifact, precision, manifest["variant"])
    if accepted:
        logging.getLogger(__name__).warning(accepted)  # `log` names tritonserver's log file below
    class_names = class_labels(manifest, labels)  # a --labels file that does not fit is refused before the start
    if class_names.warning:
        logging.getLogger(__name__).warning(class_names.warning)
    fixed = manifest.get("batch")
    if isinstance(fixed, int) and max_batch != fixed:
        raise InputError(f"this export has a fixed batch of {fixed}: re-export with --batch dynamic to serve it behind "
                         "Triton's dynamic batcher")
    require("pytriton.triton")
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

    runner = open_runner(backend, artifact=artifact, precision=precision)
    input_name, output_name = manifest["input"]["name"], manifest["output"]["name"]
    with runner:
        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            outputs = runner.run({input_name: inputs[input_name]})
            return {output_name: np.asarray(outputs[output_name], dtype=np.float32)}

        log = Path(tempfile.mkdtemp(prefix="inception-deploy-triton-")) / "tritonserver.log"  # its log, not our stdout
        config = TritonConfig(http_address=address, http_port=http_port, grpc_address=address, grpc_port=grpc_port,
                              metrics_address=address, metrics_port=metrics_port, exit_timeout_secs=5, log_file=log)
        model = name or manifest["variant"]
        # The model directory is written here, then loaded by the server at its start: its config gains the input's
        # format, the label file and the preprocessing (PyTriton's own generator writes none of them).
        workspace = log.parent / "workspace"
        local_store = dict(workspace=workspace, triton_lifecycle_policy=TritonLifecyclePolicy(
            launch_triton_on_startup=False, local_model_store=True))
        keep_log = True  # a failure's message points at the log: it stays; a clean stop or Ctrl-C removes it
        quiet_resource_tracker()
        children_before = our_children()
        try:
            # not PyTriton's own warnings ("exited with failure. Please wait."): _start_watched and stopped() say why
            with quiet_library("pytriton"), _libpython_first(), Triton(config=config, **local_store) as triton:
                triton.bind(
                    model_name=model, infer_func=infer,
                    inputs=[Tensor(name=input_name, dtype=np.float32, shape=tuple(manifest["input"]["shape"][1:]))],
                    outputs=[Tensor(name=output_name, dtype=np.float32,
                                    shape=tuple(manifest["output"]["shape"][1:]))],
                    config=ModelConfig(max_batch_size=max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                    strict=True,
                )
                describe_generated_model(workspace / "model-store" / model, manifest, class_names)
                _start_watched(triton, log, address, http_port, model)  # one line, in seconds, if tritonserver dies
                triton.run()  # connects to the server, up with the model loaded
                yield Endpoints(f"http://{address}:{http_port}", f"grpc://{address}:{grpc_port}",
                                f"http://{address}:{metrics_port}/metrics", model, log, _stop_reason(triton, log))
            keep_log = False
        except KeyboardInterrupt:
            keep_log = False
            raise
        finally:  # a failure keeps the log alone (if tritonserver wrote one), not the model store made for it
            with noting():  # the server is stopping already: a second Ctrl-C or signal must not cut the clean-up short
                reap(log.parent, children_before)  # a tritonserver that died leaves its stubs, PyTriton's store, memory
                shutil.rmtree(log.parent if not keep_log or not log.exists() else workspace, ignore_errors=True)


@contextlib.contextmanager
def _libpython_first() -> Iterator[None]:
    """Triton's Python backend stub links libpython from the library path, not this interpreter's; under a
    pyenv-style Python it loads the system's and fails ('_thread.RLock' … '_recursion_count'). Put this
    interpreter's LIBDIR first for the server the block starts."""
    previous = os.environ.get("LD_LIBRARY_PATH")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, previous) if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = previous


START_TIMEOUT_S = 120.0  # for a tritonserver that lives but never gets ready; one that dies is seen within 0.1 s


def checked_endpoints(address: str, ports: dict[str, int], max_batch: int, max_queue_delay_us: int = 0) -> str:
    """Everything the server will listen with, checked before it starts (InputError, exit 2): the IPv4 address to
    listen on (a host name resolved: Triton's HTTP endpoint takes addresses only), each port a number in
    1..65535, the three distinct and free there, a max batch of at least 1."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise InputError(f"--max-batch must be at least 1 (the largest batch Triton's dynamic batcher forms), "
                         f"not {max_batch!r}")
    if not isinstance(max_queue_delay_us, int) or isinstance(max_queue_delay_us, bool) or max_queue_delay_us < 0:
        raise InputError(f"--max-queue-delay-us must be 0 or more microseconds, not {max_queue_delay_us!r}")
    for option, port in ports.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InputError(f"{option} must be a port number (1..65535), not {port!r}")
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise InputError(f"{seen[port]} and {option} are both {port}: HTTP, gRPC and metrics each need a port "
                             "of their own")
        seen[port] = option
    host = _listen_address(address)
    for option, port in ports.items():
        _check_free(host, port, option)
    return host


def _listen_address(address: str) -> str:
    """`address` as the IPv4 address Triton can listen on, and one of this machine's."""
    if not isinstance(address, str) or not address.strip():
        raise InputError(f"--address must be an IPv4 address or a host name, not {address!r}")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if re.fullmatch(r"[0-9.]+", address) or ":" in address:  # meant as an address, not a name to look up
            raise InputError(f"--address {address} is not an IP address: pass 127.0.0.1 (this machine only), "
                             "0.0.0.0 (every interface) or one of this machine's addresses") from None
        try:
            ip = ipaddress.ip_address(socket.getaddrinfo(address, None, socket.AF_INET)[0][4][0])
        except (OSError, UnicodeError):
            raise InputError(f"--address {address} does not resolve to an IPv4 address: pass 127.0.0.1, 0.0.0.0 or "
                             "one of this machine's addresses") from None
    if ip.version != 4:
        raise InputError(f"--address {address} is IPv6, which PyTriton's server does not listen on: pass 127.0.0.1, "
                         "0.0.0.0 or one of this machine's IPv4 addresses")
    host = str(ip)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError as err:
            raise InputError(f"--address {address} is not an address of this machine ({err.strerror}): pass "
                             "127.0.0.1, 0.0.0.0 (every interface) or one of its own") from None
    return host


def _check_free(host: str, port: int, option: str) -> None:
    """Can tritonserver listen on (host, port)? SO_REUSEADDR as Triton sets it: a port that only a closed
    connection still holds (TIME_WAIT) is free, one that anything listens on (any address, any family) is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            what = "in use" if err.errno == errno.EADDRINUSE else f"not available ({err.strerror})"
            raise InputError(f"{option} {port} is {what} on {host}: stop what listens there or choose another "
                             f"{option}") from None


def _pytriton_server(triton):
    """PyTriton's handle on the tritonserver process (created, not started). PyTriton waits two minutes for a
    server that has died; this module watches the process itself, through PyTriton's own handle."""
    try:
        if triton._triton_server is None:
            triton._initialize_server()
        server = triton._triton_server
        if not all(hasattr(server, a) for a in ("is_alive", "logs", "_tritonserver_running_cmd")):
            raise AttributeError("_tritonserver_running_cmd")
    except AttributeError:
        raise BackendMissing("this PyTriton is not the one serve was written for: pip install 'nvidia-pytriton>=0.7'")
    server._verbose = False  # its output is kept (server.logs()), not printed on our stdout
    return server


def _start_watched(triton, log_path: Path, host: str, port: int, model: str) -> None:
    """Start tritonserver and return once it serves `model` (the server loads it before it opens its endpoints,
    so Triton's /v2/health/ready never says ready without it); a server that dies is one line from its log."""
    server = _pytriton_server(triton)
    with quiet_library("pytriton", level=logging.CRITICAL):
        triton._run_server()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(host, port, model):
            if not server.is_alive():
                _settle(server)
                raise InceptionDeployError(f"tritonserver stopped as it started: {_why_stopped(server, log_path)}")
            if time.monotonic() > deadline:
                raise InceptionDeployError(f"tritonserver did not get ready in {START_TIMEOUT_S:g} s: see its log "
                                           f"{log_path}")
            time.sleep(0.1)


def _stop_reason(triton, log_path: Path) -> Callable[[], str | None]:
    server = _pytriton_server(triton)

    def stopped() -> str | None:
        if server.is_alive():
            return None
        with quiet_library("pytriton", level=logging.CRITICAL):
            _settle(server)
        return f"tritonserver stopped: {_why_stopped(server, log_path)}"

    return stopped


def _ready(host: str, port: int, model: str) -> bool:
    """Server and model ready, as a Kubernetes probe or a client asks."""
    target = "127.0.0.1" if host == "0.0.0.0" else host
    for path in ("/v2/health/ready", f"/v2/models/{model}/ready"):
        connection = http.client.HTTPConnection(target, port, timeout=2)
        try:
            connection.request("GET", path)
            if connection.getresponse().status != 200:
                return False
        except OSError:
            return False
        finally:
            connection.close()
    return True


def _settle(server) -> None:
    """Wait until PyTriton has handled the process's end (its exit callback cleans up in sh's thread, which
    also reads the last of its output)."""
    with contextlib.suppress(Exception):
        server._tritonserver_running_cmd.wait(timeout=30)


# Errors tritonserver logs on every CPU host, which stop nothing
_HARMLESS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "Unable to allocate pinned")
_PYTHON_WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: ")
_GLOG_ERROR = re.compile(r"^[EF]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\]\s*(.*)$")


def _why_stopped(server, log_path: Path) -> str:
    """The first error tritonserver logged (its log file, else its output), in one line, and where its log is."""
    try:
        logged = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    except OSError:
        logged = []
    output = server.logs().splitlines()
    errors = [m.group(1) for m in map(_GLOG_ERROR.match, logged + output) if m]
    plain = [line for line in output if line.strip() and not line[0].isspace() and not line.startswith("Usage:")
             and not line.rstrip().endswith(":") and not re.match(r"^[IWEF]\d{4} ", line)
             and not _PYTHON_WARNING.match(line)]  # e.g. a backend stub's resource tracker, as the stub is ended
    found = next((line for line in errors + plain if not any(h in line for h in _HARMLESS)), None)
    if found is None:
        code = getattr(server._tritonserver_running_cmd.process, "exit_code", None)
        found = f"killed by {signal.Signals(-code).name}" if isinstance(code, int) and code < 0 else f"exit code {code}"
    found = " ".join(found.strip().strip('"').split())
    return f"{found[:300]} (its log: {log_path})"
