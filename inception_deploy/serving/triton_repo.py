"""A Triton Inference Server model repository from a verified export: what a production Triton loads as it is.

repo/<name>/config.pbtxt    built as Triton's own ModelConfig protobuf (tritonclient ships the schema)
repo/<name>/1/model.onnx    onnxruntime_onnx, or 1/model.plan (tensorrt_plan), copied after its sha256 matched
repo/<name>/labels.txt      the class names, one a line (the output's label_filename): ImageNet's 1000, or --labels
repo/<name>/manifest.json   the export's manifest and what was served from it: provenance travels with the model

What Triton's own clients read (image_client.py's checks): the input's format (FORMAT_NCHW), the output's label
file (so that a classification request answers score:index:label), and the preprocessing as string parameters
(preprocessing.resize, .crop, ...), also under "served" in the manifest. imagenet_classes.txt beside this module
was written once from torchvision.models._meta._IMAGENET_CATEGORIES (a test-only dependency: never imported here).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.artifacts import (
    ONNX_FILES,
    PRECISIONS,
    check_output_dir,
    check_targets,
    engine_file,
    export_command,
    staged,
)
from ..core.deps import require
from ..core.errors import InputError
from ..core.interrupts import writes_complete_first
from ..core.manifest import MANIFEST_NAME, check_budget, read_manifest, verified_record
from ..export.forms import check_form
from ..models.registry import get_spec
from ..runners import BACKENDS, unsupported

log = logging.getLogger(__name__)

RUNTIMES = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
KINDS = {"cuda": "KIND_GPU", "cpu": "KIND_CPU"}  # --device: Triton's instance kind
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
LABELS_NAME = "labels.txt"
IMAGENET_CLASSES = Path(__file__).resolve().parent / "imagenet_classes.txt"
# A Triton model name is a directory of the repository and a segment of the clients' URLs.
MODEL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")


def check_model_name(name: str) -> str:
    """A name Triton can load, that stays inside the repository: InputError naming the rule otherwise."""
    if not MODEL_NAME.fullmatch(name):
        raise InputError(f"--name {name!r} is not a valid Triton model name: use letters, digits, '_', '-' and '.' "
                         "(no '/', spaces or other characters), not starting with '.', at most 255 characters")
    return name


@dataclass(frozen=True)
class TritonOptions:
    precision: str = "fp32"
    runtime: str = "onnxruntime"  # or "tensorrt": an engine from `trt --compiler tensorrt`
    max_batch: int = 64  # 0: no batching (a fixed-batch export)
    instances: int = 1
    device: str | None = None  # cuda or cpu, as serve names it; default: cpu for ONNX Runtime's CPU int8 form
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    trt_accelerator: bool = False  # onnxruntime on a GPU: let Triton's ORT backend use TensorRT
    name: str | None = None  # the model's name in the repository; default: the variant
    warmup: bool = True
    labels: str | None = None  # a file of class names, one a line; default: ImageNet's for a 1000-class head
    label_names: tuple[str, ...] | None = None  # the names themselves (optimize: the --eval tree's class folders)
    accept_over_budget: bool = False  # serve an int8 model written over its accuracy budget

    def check(self) -> "TritonOptions":
        """These options checked (InputError, exit 2), with the device resolved."""
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        if self.runtime not in RUNTIMES:
            raise InputError(f"--runtime must be one of {', '.join(RUNTIMES)}, not '{self.runtime}'")
        if self.device is None:
            return replace(self, device="cpu" if self.precision == "int8-cpu" else "cuda").check()
        if self.device not in KINDS:
            raise InputError(f"--device must be cuda or cpu, not '{self.device}'")
        backend = BACKENDS["onnxruntime" if self.device == "cpu" else "onnxruntime-cuda"]
        if self.runtime == "tensorrt":
            backend = BACKENDS["tensorrt"]
        if unsupported(backend, self.precision):
            raise InputError(f"{unsupported(backend, self.precision)}: serve it with --runtime onnxruntime --device "
                             "cpu")
        if self.max_batch < 0 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise InputError("--max-batch must be >= 0, --instances >= 1 and --max-queue-delay-us >= 0")
        if any(b < 1 or b > self.max_batch for b in self.preferred_batch):
            raise InputError(f"--preferred-batch sizes must be between 1 and --max-batch {self.max_batch}, "
                             f"got {list(self.preferred_batch)}")
        if self.runtime == "tensorrt" and self.device == "cpu":
            raise InputError("a TensorRT engine runs on a GPU only: --device cuda, or --runtime onnxruntime for a CPU")
        if self.trt_accelerator and (self.runtime != "onnxruntime" or self.device != "cuda"):
            raise InputError("--trt-accelerator is for --runtime onnxruntime on --device cuda")
        if self.name is not None:
            check_model_name(self.name)
        return self


@dataclass
class Served:
    """What was written, for the CLI and for Python."""

    model_dir: Path
    config: str
    artifact: dict
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Labels:
    """The class names a classification request answers with, and where they came from."""

    names: tuple[str, ...]
    source: str  # "ImageNet", "generic" or the --labels file
    warning: str | None = None

    def text(self) -> str:
        return "".join(f"{name}\n" for name in self.names)


def class_labels(manifest: dict, labels_file: str | Path | None = None,
                 names: tuple[str, ...] | None = None) -> Labels:
    """The head's class names: a --labels file (one name a line, as many as the head has classes), else `names` (the
    class folders of labelled images, as many as the head has classes), else ImageNet's 1000 for a 1000-class head,
    else class_0, class_1, ... with a warning saying how to name them."""
    count = int(manifest["output"]["shape"][-1])
    if labels_file is not None:
        return Labels(_read_labels(Path(labels_file), count), str(labels_file))
    if names is not None and len(names) == count and all(name.strip() and "\n" not in name for name in names):
        return Labels(tuple(names), "the class folders of the labelled images")
    if count == 1000:
        return Labels(tuple(IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()), "ImageNet")
    return Labels(tuple(f"class_{i}" for i in range(count)), "generic",
                  f"this head has {count} classes, not ImageNet's 1000: clients see them as class_0 ... "
                  f"class_{count - 1}; pass --labels FILE (one name a line) to name them")


def _read_labels(path: Path, count: int) -> tuple[str, ...]:
    fix = f"give a UTF-8 text file of the {count} class names, one a line"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise InputError(f"--labels {path} {what}: {fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first name
    except UnicodeDecodeError:
        raise InputError(f"--labels {path} is not UTF-8 text: {fix}") from None
    except OSError as err:
        raise InputError(f"--labels {path} cannot be read ({err.strerror}): {fix}") from None
    names = tuple(line.strip() for line in text.rstrip().split("\n")) if text.strip() else ()
    if len(names) != count:
        raise InputError(f"--labels {path} has {len(names)} names, but the model's head has {count} classes: {fix}")
    empty = next((number for number, name in enumerate(names, 1) if not name), None)
    if empty is not None:
        raise InputError(f"--labels {path}: line {empty} is empty: {fix}")
    return names


def client_preprocessing(manifest: dict) -> dict:
    """What a client does to an image before it sends it, from the variant's spec: RGB; the shorter side resized to
    `resize` (`interpolation`), centre-cropped to `crop`; pixels scaled by `scale` to [0, 1]; then (x - mean) / std per
    channel; laid out as `layout`."""
    p = get_spec(manifest["variant"]).preprocessing
    return {"channels": "RGB", "resize": p.resize, "crop": p.crop, "interpolation": p.interpolation,
            "scale": "1/255", "mean": list(p.mean), "std": list(p.std), "layout": "NCHW"}


def describe_for_clients(config, manifest: dict) -> None:
    """Tell Triton's clients how to feed the model and name its classes: the input's format and the output's label
    file (image_client.py requires both), and the preprocessing as string parameters (preprocessing.resize, ...)."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2")
    if len(config.input[0].dims) == 3:  # Triton takes a format on C, H, W only (a fixed-batch input has 4 dims)
        config.input[0].format = model_config_pb2.ModelInput.FORMAT_NCHW
    config.output[0].label_filename = LABELS_NAME
    for key, value in client_preprocessing(manifest).items():
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        config.parameters[f"preprocessing.{key}"].string_value = text


def describe_generated_model(model_dir: Path, manifest: dict, labels: Labels) -> None:
    """The same description for a model directory another tool generated (PyTriton's, before its server loads it):
    its config.pbtxt rewritten through Triton's schema, and the label file beside it."""
    from google.protobuf import text_format

    config = validate_config((model_dir / "config.pbtxt").read_text())
    describe_for_clients(config, manifest)
    text = text_format.MessageToString(config)
    if config.max_batch_size == 0:  # as PyTriton writes it: Triton must see an explicit 0
        text += "max_batch_size: 0\n"
    (model_dir / LABELS_NAME).write_text(labels.text(), encoding="utf-8")
    (model_dir / "config.pbtxt").write_text(text)


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
        count=options.instances, kind=model_config_pb2.ModelInstanceGroup.Kind.Value(KINDS[options.device])
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
    describe_for_clients(config, manifest)
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
    options = options.check()
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
    if options.runtime == "onnxruntime":
        check_form(artifact, options.precision, manifest["variant"])
    warnings = _check_consistency(manifest, record, options)
    accepted = check_budget(manifest, record, options.accept_over_budget)
    warnings += [accepted] if accepted else []
    labels = class_labels(manifest, options.labels, options.label_names)
    warnings += [labels.warning] if labels.warning else []
    check_output_dir(repo_dir, "--repo")

    config = model_config(manifest, record, options, name)
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    validate_config(text)  # the written text, read back by the schema Triton itself uses
    provenance = {**manifest, "served": {"artifact": record["path"], "sha256": record["sha256"],
                                         "options": asdict(options), "name": name,
                                         "preprocessing": client_preprocessing(manifest),
                                         "labels": {"file": LABELS_NAME, "source": labels.source,
                                                    "count": len(labels.names)}}}
    model_dir = check_model_dir(repo_dir, name, (options.runtime,))
    # Ctrl-C waits for these few copies and their commit: the model directory lands whole, then the command ends
    with writes_complete_first(f"{model_dir} was written first, whole"), staged(model_dir / "1") as staging:
        shutil.copyfile(artifact, staging.path(model_dir / "1" / RUNTIMES[options.runtime][1]))
        staging.path(model_dir / MANIFEST_NAME).write_text(json.dumps(provenance, indent=2) + "\n")
        staging.path(model_dir / LABELS_NAME).write_text(labels.text(), encoding="utf-8")
        staging.path(model_dir / "config.pbtxt").write_text(text)  # last: Triton polls for it
    return Served(model_dir, text, record, warnings)


def check_model_dir(repo_dir: str | Path, name: str, runtimes=tuple(RUNTIMES)) -> Path:
    """Before writing: repo_dir/<name>/ can take the model directory of any of `runtimes` (InputError naming what is
    in the way, or what cannot be written)."""
    model_dir = Path(repo_dir) / name
    for directory in (model_dir, model_dir / "1"):  # in the way of the model directory: named, before writing
        if directory.is_symlink() and not directory.exists() or directory.exists() and not directory.is_dir():
            raise InputError(f"{directory} is in the way: it is not a directory; move it away, or choose another "
                             "--repo or --name")
    check_targets([*(model_dir / "1" / RUNTIMES[r][1] for r in runtimes), model_dir / MANIFEST_NAME,
                   model_dir / LABELS_NAME, model_dir / "config.pbtxt"], "--repo")
    return model_dir


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
        and options.device == "cuda"
        and not options.trt_accelerator
    ):
        warnings.append("ONNX Runtime's CUDA provider has no int8 convolution (it dequantizes each weight and "
                        "convolves in float): add --trt-accelerator, or serve a TensorRT engine, for int8 speed")
    if options.runtime == "tensorrt" and record.get("gpu"):
        warnings.append(f"this engine runs only on {record['gpu']['name']} "
                        f"(sm{record['gpu']['compute_capability'].replace('.', '')}) "
                        "GPUs with TensorRT " + str((record.get("compiler") or {}).get("version")))
    return warnings
