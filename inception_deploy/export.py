"""PyTorch -> ONNX, proven in ONNX Runtime before anything is written.

model -> torch.onnx (torch.export-based) -> onnx checker -> onnxsim -> ORT CPU parity -> artifacts.
"""

from __future__ import annotations

import contextlib
import io
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from . import __version__
from .artifacts import artifact_record, atomic_path, read_manifest, sha256_of, write_manifest
from .compare import difference
from .deps import require
from .errors import BackendMissing, CheckFailed, InceptionDeployError, InputError
from .registry import get_spec
from .samples import random_batch, reestimate_batchnorm
from .tolerances import TOLERANCES
from .zoo import check_num_classes, count_parameters, create_model

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18  # what TensorRT 8.6+/10 and ORT >= 1.14 all parse
MIN_OPSET = 17
DEFAULT_SAMPLES = 4
EXPORT_BATCH = 2  # traced example batch; the parity batch differs, which proves the batch is dynamic

StepCallback = Callable[[str], None]


def default_out_dir(variant: str) -> Path:
    return Path("export") / get_spec(variant).name


def parse_batch(batch: str | int) -> int | None:
    """None for a dynamic batch, else the fixed batch size."""
    if isinstance(batch, str) and batch.strip().lower() == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        raise InputError(f"--batch must be 'dynamic' or a positive integer, got '{batch}'") from None
    if value < 1:
        raise InputError(f"--batch must be 'dynamic' or a positive integer, got {value}")
    return value


def export_onnx(
    variant: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    opset: int = DEFAULT_OPSET,
    batch: str | int = "dynamic",
    simplify: bool = True,
    out_dir: str | Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> dict:
    """Export `variant` to `out_dir/model.onnx` with its manifest, and return the manifest.

    Raises InputError for bad arguments or checkpoints, CheckFailed when ONNX Runtime does not reproduce
    the PyTorch model (nothing is written then).
    """
    step = on_step or (lambda _: None)
    spec = get_spec(variant)
    fixed_batch = parse_batch(batch)
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise InputError(f"--opset must be between {MIN_OPSET} and {max_opset} (this onnx), got {opset}")
    check_num_classes(num_classes)
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    for module in ("onnxscript", "onnxruntime", *(("onnxsim",) if simplify else ())):
        require(module)  # fail before minutes of work, not after
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec.name)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file: pass a directory")
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str, label: str):
        step(label)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 3)

    with timed("build", f"building {spec.name}"):
        model = create_model(spec.name, num_classes=num_classes, weights=weights)
        untrained = model.untrained
    if untrained:
        with timed("bn_reestimate", "re-estimating BatchNorm statistics (untrained model)"):
            reestimate_batchnorm(model, random_batch(spec, max(samples, 2), seed=seed + 1))

    example = random_batch(spec, fixed_batch or EXPORT_BATCH, seed=seed + 2)
    check_input = random_batch(spec, fixed_batch or samples, seed=seed)
    with timed("torch_export", "exporting with torch.onnx (torch.export)"):
        proto = _torch_export(model, example, opset, dynamic=fixed_batch is None)
    with timed("check", "running the ONNX checker"):
        _check(proto)
    if simplify:
        with timed("simplify", "simplifying with onnxsim"):
            proto = _simplify(proto)
    with timed("parity", "verifying in ONNX Runtime (CPU)"):
        with torch.inference_mode():
            expected = model(check_input).numpy()
        actual = _run_onnxruntime_cpu(proto, check_input.numpy())
        diff = difference(expected, actual)
        tolerance = TOLERANCES["fp32"]
        passed = tolerance.passes(diff)
    parity = {
        "reference": "torch-cpu-fp32", "backend": "onnxruntime-cpu", "samples": int(check_input.shape[0]), "seed": seed,
        **diff.to_dict(), "tolerance": tolerance.to_dict(), "passed": passed,
    }
    if not passed:
        raise CheckFailed(
            f"ONNX Runtime does not reproduce {spec.name}: max abs diff {diff.max_abs:.3g}, "
            f"{diff.scaled:.3g} of the output scale (allowed {tolerance.max_scaled:g}), cosine {diff.cosine:.6f}; "
            "nothing was written — retry with --no-simplify, or another --opset"
        )

    with timed("write", f"writing {out_dir}"):
        manifest = _write_artifacts(out_dir, proto, _manifest_head(spec, model, weights, untrained, opset, fixed_batch, simplify), parity)
    manifest["export"]["seconds"] = seconds
    write_manifest(out_dir, manifest)
    return manifest


def _torch_export(model: torch.nn.Module, example: torch.Tensor, opset: int, *, dynamic: bool) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    log = io.StringIO()  # the exporter narrates its passes on stdout; keep it for the error message only
    try:
        with contextlib.redirect_stdout(log), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, verbose=False,
            )
        return program.model_proto
    except Exception as err:
        raise InceptionDeployError(f"torch.onnx export failed: {_first_line(err)}") from None


def _check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise CheckFailed(f"the exported graph fails the ONNX checker: {_first_line(err)}") from None


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    onnxsim = require("onnxsim")
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as err:
        raise CheckFailed(f"onnxsim failed ({_first_line(err)}): re-run with --no-simplify") from None
    if not ok:
        raise CheckFailed("onnxsim could not validate its simplified graph: re-run with --no-simplify")
    return simplified


def _run_onnxruntime_cpu(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    ort = require("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def _graph_io_shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _versions() -> dict[str, str]:
    versions = {"inception_deploy": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "onnx": onnx.__version__}
    for module in ("onnxscript", "onnxsim", "onnxruntime"):
        try:
            versions[module] = str(require(module).__version__)
        except BackendMissing:
            versions[module] = None  # onnxsim with --no-simplify
    return versions


def _manifest_head(spec, model, weights, untrained: bool, opset: int, fixed_batch: int | None, simplified: bool) -> dict:
    weights_info = None if weights is None else {"path": str(weights), "sha256": sha256_of(Path(weights))}
    return {
        "schema": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variant": spec.name,
        "title": spec.title,
        "weights": weights_info,
        "untrained": untrained,
        "bn_reestimated": untrained,
        "num_classes": int(model.state_dict()[f"{spec.layout.classifier}.weight"].shape[0]),
        "transform_input": bool(getattr(model, "transform_input", False)),
        "preprocessing": {**spec.to_dict()["preprocessing"], "input_size": list(spec.input_size)},
        "params": count_parameters(model),
        "opset": opset,
        "batch": "dynamic" if fixed_batch is None else fixed_batch,
        "versions": _versions(),
        "export": {"exporter": "torch.onnx (dynamo)", "simplified": simplified},
    }


def _write_artifacts(out_dir: Path, proto: onnx.ModelProto, head: dict, parity: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out_dir)
    onnx_path = out_dir / "model.onnx"
    with atomic_path(onnx_path) as tmp:
        onnx.save_model(proto, tmp)
    head["input"] = {"name": INPUT_NAME, "dtype": "float32", "shape": _graph_io_shape(proto.graph.input[0])}
    head["output"] = {"name": OUTPUT_NAME, "dtype": "float32", "shape": _graph_io_shape(proto.graph.output[0])}
    head["export"]["parity"] = parity
    head["artifacts"] = [artifact_record(out_dir, onnx_path, kind="onnx", precision="fp32")]
    # Artifacts derived from a previous export (fp16, int8, engines) no longer match this model.
    for entry in (old or {}).get("artifacts", []):
        stale = out_dir / entry.get("path", "")
        if entry.get("path") != "model.onnx" and stale.is_file() and stale.resolve().parent == out_dir.resolve():
            stale.unlink()
    return head
