"""A Triton Inference Server model repository from a verified export: what a production Triton loads as it is.

repo/<name>/config.pbtxt    built as Triton's own ModelConfig protobuf (tritonclient ships the schema)
repo/<name>/1/model.onnx    onnxruntime_onnx, or 1/model.plan (tensorrt_plan), copied after its sha256 matched
repo/<name>/manifest.json   the export's manifest and what was served from it: provenance travels with the model
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.artifacts import ONNX_FILES, PRECISIONS, check_output_dir, engine_file, export_command, staged
from ..core.deps import require
from ..core.errors import InputError
from ..core.manifest import MANIFEST_NAME, read_manifest, verified_record

log = logging.getLogger(__name__)

RUNTIMES = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


@dataclass(frozen=True)
class TritonOptions:
    precision: str = "fp32"
    runtime: str = "onnxruntime"  # or "tensorrt": an engine from `trt --compiler tensorrt`
    max_batch: int = 64  # 0: no batching (a fixed-batch export)
    instances: int = 1
    kind: str = "gpu"
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    trt_accelerator: bool = False  # onnxruntime on a GPU: let Triton's ORT backend use TensorRT
    name: str | None = None  # the model's name in the repository; default: the variant
    warmup: bool = True

    def check(self) -> "TritonOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        if self.runtime not in RUNTIMES:
            raise InputError(f"--runtime must be one of {', '.join(RUNTIMES)}, not '{self.runtime}'")
        if self.kind not in KINDS:
            raise InputError(f"--kind must be gpu or cpu, not '{self.kind}'")
        if self.max_batch < 0 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise InputError("--max-batch must be >= 0, --instances >= 1 and --max-queue-delay-us >= 0")
        if any(b < 1 or b > self.max_batch for b in self.preferred_batch):
            raise InputError(f"--preferred-batch sizes must be between 1 and --max-batch {self.max_batch}, "
                             f"got {list(self.preferred_batch)}")
        if self.runtime == "tensorrt" and self.kind == "cpu":
            raise InputError("a TensorRT engine runs on a GPU only: --kind gpu, or --runtime onnxruntime for a CPU")
        if self.trt_accelerator and (self.runtime != "onnxruntime" or self.kind != "gpu"):
            raise InputError("--trt-accelerator is for --runtime onnxruntime on --kind gpu")
        return self


@dataclass
class Served:
    """What was written, for the CLI and for Python."""

    model_dir: Path
    config: str
    artifact: dict
    warnings: list[str] = field(default_factory=list)


def model_config(manifest: dict, record: dict, options: TritonOptions, name: str):
    """Triton's ModelConfig for this artifact, as the protobuf message (the schema checks every field)."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2")
    platform, filename = RUNTIMES[options.runtime]
    io_dtype = record.get("io_dtype", manifest["input"]["dtype"])
    config = model_config_pb2.ModelConfig(name=name, platform=platform, max_batch_size=options.max_batch,
                                          default_model_filename=filename)
    batched = options.max_batch > 0
    in_dims = manifest["input"]["shape"][1:] if batched else manifest["input"]["shape"]
    out_dims = manifest["output"]["shape"][1:] if batched else manifest["output"]["shape"]
    data_type = model_config_pb2.DataType.Value(DATA_TYPES[io_dtype])
    config.input.add(name=manifest["input"]["name"], data_type=data_type, dims=[int(d) for d in in_dims])
    config.output.add(name=manifest["output"]["name"], data_type=data_type, dims=[int(d) for d in out_dims])
    config.instance_group.add(
        count=options.instances, kind=model_config_pb2.ModelInstanceGroup.Kind.Value(KINDS[options.kind])
    )
    if batched:
        config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch)
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    if options.warmup:  # the first request must not pay for cuDNN's search or TensorRT's context set-up
        warmup = config.model_warmup.add(name="random_input", batch_size=1 if batched else 0)
        warmup.inputs[manifest["input"]["name"]].data_type = data_type
        warmup.inputs[manifest["input"]["name"]].dims.extend(int(d) for d in in_dims)
        warmup.inputs[manifest["input"]["name"]].random_data = True
    if options.trt_accelerator:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16" if options.precision == "fp16" else "FP32"
    return config


def validate_config(text: str):
    """Parse config.pbtxt text against Triton's ModelConfig schema: InputError naming the problem."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise InputError(f"config.pbtxt does not fit Triton's ModelConfig schema: {err}") from None


def write_repository(export_dir: str | Path, repo_dir: str | Path, options: TritonOptions) -> Served:
    """Write repo_dir/<name>/ for the export's artifact of options.precision and options.runtime."""
    options.check()
    export_dir, repo_dir = Path(export_dir), Path(repo_dir)
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise InputError(f"no export in {export_dir}: run `inception-deploy export VARIANT` first")
    name = options.name or manifest["variant"]
    artifact = export_dir / (ONNX_FILES[options.precision] if options.runtime == "onnxruntime"
                             else engine_file(options.precision, "tensorrt"))
    if not artifact.is_file():
        hint = (f"`{export_command(manifest['variant'], options.precision)}`" if options.runtime == "onnxruntime"
                else f"`inception-deploy trt {manifest['variant']} --{options.precision} --compiler tensorrt` on the "
                     "GPU it is for")
        raise InputError(f"no {artifact}: make it with {hint}")
    record = verified_record(artifact, manifest, fix="re-run the export (or trt) that made it", required=True)
    warnings = _check_consistency(manifest, record, options)
    check_output_dir(repo_dir, "--repo")

    config = model_config(manifest, record, options, name)
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    validate_config(text)  # the written text, read back by the schema Triton itself uses
    provenance = {**manifest, "served": {"artifact": record["path"], "sha256": record["sha256"],
                                         "options": asdict(options), "name": name}}
    model_dir = repo_dir / name
    with staged(model_dir / "1") as staging:
        shutil.copyfile(artifact, staging.path(model_dir / "1" / RUNTIMES[options.runtime][1]))
        staging.path(model_dir / MANIFEST_NAME).write_text(json.dumps(provenance, indent=2) + "\n")
        staging.path(model_dir / "config.pbtxt").write_text(text)  # last: Triton polls for it
    return Served(model_dir, text, record, warnings)


def _check_consistency(manifest: dict, record: dict, options: TritonOptions) -> list[str]:
    """Refuse options the artifact cannot honour (exit 2); return warnings for what is allowed but unwise."""
    fixed = manifest.get("batch")
    if isinstance(fixed, int) and options.max_batch > 0:
        raise InputError(f"this export has a fixed batch of {fixed}: pass --max-batch 0 (no dynamic batching), "
                         "or re-export with --batch dynamic")
    profile = record.get("profile")
    if options.runtime == "tensorrt" and profile and options.max_batch > profile["max"]:
        raise InputError(f"--max-batch {options.max_batch} is beyond the engine's profile (batch {profile['min']}.."
                         f"{profile['max']}): pass --max-batch {profile['max']} or rebuild with `trt --max-batch "
                         f"{options.max_batch}`")
    warnings = []
    if (
        options.runtime == "onnxruntime"
        and options.precision == "int8"
        and options.kind == "gpu"
        and not options.trt_accelerator
    ):
        warnings.append("ONNX Runtime's CUDA provider dequantizes a Q/DQ model and convolves in fp32: add "
                        "--trt-accelerator, or serve a TensorRT engine, for int8 speed")
    if options.runtime == "tensorrt" and record.get("gpu"):
        warnings.append(f"this engine runs only on {record['gpu']['name']} "
                        f"(sm{record['gpu']['compute_capability'].replace('.', '')}) "
                        "GPUs with TensorRT " + str((record.get("compiler") or {}).get("version")))
    return warnings
