"""The artifacts a search needs, each reused when the manifest says it is current, else made through the commands'
own library calls: export_onnx (fp32, the int8 forms held to --eval's budget), add_fp16, build_engine."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..compile.engine import BuildOptions, build_engine
from ..core.artifacts import ONNX_FILES, engine_file, sha256_of
from ..core.compilers import COMPILERS, gpu_capability, gpu_name, import_module, installed
from ..core.errors import InceptionDeployError, InputError, Interrupted, first_line
from ..core.manifest import IntegrityError, entry_of, over_budget, read_manifest, verified_record
from ..export.forms import INT8_FORMS
from ..export.onnx import add_fp16, export_onnx
from ..models.labelled import LabelledImages, check_classes, labelled_images
from ..models.load import create_model
from ..models.registry import get_spec
from ..serving.triton_repo import class_labels
from .candidates import Candidate
from .options import OptimizeOptions

log = logging.getLogger(__name__)

FORM_OF = {form.precision: name for name, form in INT8_FORMS.items()}  # int8 -> tensorrt, int8-cpu -> cpu
# A variant's fp32 export where no manifest has timed it yet: seconds, and seconds per million parameters (on the 2-core
# host: googlenet 7.4 s, inception_resnet_v2 22.5 s, for build, torch.export, check, simplify and parity).
EXPORT_ESTIMATE_S = (5.0, 0.3)


@dataclass
class Made:
    """What preparing one artifact came to."""

    path: str
    reused: bool  # current already: nothing was made
    seconds: float
    failure: str | None = None


class ExportDir:
    """One variant's export directory, as optimize keeps it: current artifacts reused, the rest made in place."""

    def __init__(self, options: OptimizeOptions, step: Callable[..., None]):
        """Checks what can be checked before any work: the directory's export, the weights, the eval images' labels
        against the model's head (InputError, exit 2)."""
        self.options, self.step = options, step
        self.directory: Path = options.export_dir
        manifest = read_manifest(self.directory, fix="choose another --dir, or remove it")
        if manifest is not None and manifest["variant"] != options.variant:
            raise InputError(f"{self.directory} holds an export of {manifest['variant']}, not {options.variant}: "
                             "choose another --dir")
        listed = (manifest or {}).get("weights")
        self.weights: Path | None = options.weights
        if self.weights is None and listed and Path(listed["path"]).is_file() \
                and sha256_of(Path(listed["path"])) == listed["sha256"]:
            self.weights = Path(listed["path"])  # the export's own checkpoint, still there: it is the model
        if self.weights is None and listed:
            raise InputError(f"the checkpoint the export in {self.directory} was made from, {listed['path']}, is gone "
                             "or changed: pass the checkpoint with --weights")
        if options.eval_dir is not None and self.weights is None:
            raise InputError("--eval measures top-1, and an untrained model (no --weights) has none to lose: pass the "
                             "checkpoint you will deploy with --weights")
        model = create_model(options.variant, weights=self.weights, num_classes=options.num_classes)
        self.head = int(model.state_dict()[f"{model.spec.layout.classifier}.weight"].shape[0])
        self.eval: LabelledImages | None = None
        self.class_names: tuple[str, ...] | None = None  # the eval tree's class folders, where they name the head
        if options.eval_dir is not None:
            self.eval = labelled_images(options.eval_dir, labels=options.eval_labels, limit=options.eval_limit,
                                        option="--eval", labels_option="--eval-labels", limit_option="--eval-limit")
            check_classes(self.eval, self.head, option="--eval")
            if self.eval.layout == "imagefolder" and len(self.eval.classes) == self.head:
                self.class_names = tuple(self.eval.classes)
        self.eval_described = self.eval.describe() if self.eval is not None else None
        if options.labels is not None:  # the repository's class names, read now rather than after the search
            class_labels({"output": {"shape": [1, self.head]}}, options.labels)

    @property
    def manifest(self) -> dict:
        return read_manifest(self.directory) or {}

    @property
    def calib(self) -> Path | None:
        return self.options.calib or self.options.eval_dir

    def base_seconds(self) -> float:
        """This variant's fp32 export on this machine, as its manifest timed it (without one, as estimated from the
        model's size): the unit of the search's estimates."""
        seconds = (self.manifest.get("export") or {}).get("seconds") or {}
        base = sum(v for k, v in seconds.items() if k in ("build", "torch_export", "check", "simplify", "parity"))
        if not base:
            fixed, per_million = EXPORT_ESTIMATE_S
            base = fixed + per_million * get_spec(self.options.variant).params / 1e6
        return max(base, 1.0)

    def fp32_current(self) -> bool:
        """Whether model.onnx there is of these weights, and nothing has to be exported first."""
        return self._stale_fp32(read_manifest(self.directory)) is None

    def fp32(self) -> Made:
        """model.onnx of these weights: the export there when it is current, else exported now."""
        start = time.perf_counter()
        manifest = read_manifest(self.directory)
        why = self._stale_fp32(manifest)
        if why is None:
            verified_record(self.directory / ONNX_FILES["fp32"], manifest, required=True,
                            fix=f"re-export it with `inception-deploy export {self.options.variant}`")
            made = Made(ONNX_FILES["fp32"], True, time.perf_counter() - start)
        else:
            self.step(f"exporting {self.options.variant} to ONNX ({why})")
            export_onnx(self.options.variant, weights=self.weights, num_classes=self.options.num_classes,
                        out_dir=self.directory, on_step=self.step)
            made = Made(ONNX_FILES["fp32"], False, time.perf_counter() - start)
        return made

    def _stale_fp32(self, manifest: dict | None) -> str | None:
        """Why the export there cannot be used as it is (None: it can); InputError for another variant's export."""
        if manifest is None:
            return f"no export in {self.directory} yet"
        listed = manifest.get("weights")
        if self.weights is not None and (not listed or sha256_of(self.weights) != listed["sha256"]):
            return "the export there was made from other weights"
        if self.weights is None and listed:
            return "the export there was made from a checkpoint"
        if self.options.num_classes is not None and manifest.get("num_classes") != self.options.num_classes:
            return f"the export there has {manifest.get('num_classes')} classes, not {self.options.num_classes}"
        if manifest.get("batch") != "dynamic":
            return "the export there has a fixed batch; the search measures several"
        if not (self.directory / ONNX_FILES["fp32"]).is_file():
            return f"no {ONNX_FILES['fp32']} there"
        return None

    def make(self, candidate: Candidate) -> Made:
        """The artifact `candidate` runs, current or made now; Made.failure says why it could not be made."""
        start = time.perf_counter()
        name = ONNX_FILES[candidate.precision] if candidate.engine is None \
            else engine_file(candidate.precision, candidate.engine)
        try:
            reused = self._ensure(candidate)
            made = Made(name, reused, time.perf_counter() - start)
        except (IntegrityError, Interrupted, KeyboardInterrupt, SystemExit):
            raise  # a tampered artifact is never worked around; Ctrl-C ends the search
        except InceptionDeployError as err:
            made = Made(name, False, time.perf_counter() - start, failure=first_line(err, 300))
        except Exception as err:  # noqa: BLE001 - a compiler's or quantizer's own error: this candidate fails, go on
            made = Made(name, False, time.perf_counter() - start, failure=f"{type(err).__name__}: {first_line(err)}")
        return made

    def current(self, candidate: Candidate) -> bool:
        """Whether what `candidate` runs is there and current: nothing to make (the files are verified on use)."""
        if candidate.backend.startswith("torch"):
            return True  # the PyTorch model itself, from the export's weights
        return self._onnx_current(candidate.precision) and (candidate.engine is None
                                                            or self._engine_current(candidate))

    def _ensure(self, candidate: Candidate) -> bool:
        """Make what `candidate` runs unless it is current; True when nothing had to be made."""
        if self.current(candidate):
            for path, made in self._paths(candidate):
                verified_record(path, self.manifest, made=made, required=True,
                                fix=f"re-run the export (or trt) that made it, or remove {path.name}")
            return True
        if not self._onnx_current(candidate.precision):
            self._make_onnx(candidate.precision)
        if candidate.engine is not None and not self.over_budget(candidate) and not self._engine_current(candidate):
            self._build(candidate)  # never from an int8 ONNX over its budget: that candidate is rejected as it is
        return False

    def over_budget(self, candidate: Candidate) -> str | None:
        """Why the int8 ONNX `candidate` runs (or its engine is built from) is over its accuracy budget, as export
        --eval measured it; None when it is within, or not int8."""
        if not candidate.quantized:
            return None
        manifest = self.manifest
        return over_budget(manifest, entry_of(manifest, ONNX_FILES[candidate.precision]))

    def _paths(self, candidate: Candidate) -> list[tuple[Path, str]]:
        """The files `candidate` runs, each with what made it: none for the PyTorch model (its checkpoint is checked
        when the export is made or reused)."""
        if candidate.backend.startswith("torch"):
            return []
        paths = [(self.directory / ONNX_FILES[candidate.precision], "exported")]
        if candidate.engine is not None:
            paths.append((self.directory / engine_file(candidate.precision, candidate.engine), "built"))
        return paths

    def _onnx_current(self, precision: str) -> bool:
        manifest = self.manifest
        path = self.directory / ONNX_FILES[precision]
        entry, fp32 = entry_of(manifest, path.name), entry_of(manifest, ONNX_FILES["fp32"])
        if entry is None or fp32 is None or not path.is_file():
            return False
        if precision == "fp32":
            return True
        return (entry.get("source") or {}).get("sha256") == fp32["sha256"] and self._int8_current(entry, precision)

    def _make_onnx(self, precision: str) -> None:
        name = ONNX_FILES[precision]
        if precision == "fp16":
            self.step(f"making {name} from {ONNX_FILES['fp32']}")
            add_fp16(self.directory)
            return
        self.step(f"making {name}: int8, calibrated on {self.calib}, held to the --eval budget")
        export_onnx(self.options.variant, weights=self.weights, num_classes=self.options.num_classes,
                    out_dir=self.directory, int8=True, int8_form=FORM_OF[precision], calib=self.calib,
                    calib_samples=self.options.calib_samples, eval_dir=self.options.eval_dir,
                    eval_labels=self.options.eval_labels, eval_limit=self.options.eval_limit,
                    max_drop=self.options.max_drop, on_step=self.step)

    def _int8_current(self, entry: dict, precision: str) -> bool:
        """An int8 file is current when it was held to this very budget on these very images and calibrated on the
        calibration images named now."""
        if precision not in FORM_OF:
            return True
        accuracy, calibration = entry.get("accuracy") or {}, entry.get("calibration") or {}
        evaluated, described = accuracy.get("eval") or {}, self.eval_described
        if described is None or not isinstance(evaluated.get("images"), int):
            return False
        listed = described["images"]  # the export recorded the readable ones, and how many it skipped
        return (all(evaluated.get(k) == described[k] for k in ("root", "layout", "classes"))
                and evaluated["images"] <= listed <= evaluated["images"] + int(evaluated.get("skipped") or 0)
                and accuracy.get("max_drop") == self.options.max_drop.to_dict()
                and calibration.get("source") == str(self.calib)
                and calibration.get("asked") == self.options.calib_samples)

    def _engine_current(self, candidate: Candidate) -> bool:
        manifest = self.manifest
        path = self.directory / engine_file(candidate.precision, candidate.engine)
        entry, source = entry_of(manifest, path.name), entry_of(manifest, ONNX_FILES[candidate.precision])
        profile = (entry or {}).get("profile") or {}
        return (entry is not None and source is not None and path.is_file()
                and (entry.get("source") or {}).get("sha256") == source["sha256"]
                and profile.get("min") == 1 and profile.get("max", 0) >= self.options.max_batch
                and self._engine_here(entry))

    def _build(self, candidate: Candidate) -> None:
        """The engine, through the compiler table (build_engine), for batches 1 to --max-batch: the repository's."""
        self.step(f"building {engine_file(candidate.precision, candidate.engine)} with {candidate.engine}")
        most = self.options.max_batch
        opt = min(most, 32) if self.options.objective == "throughput" else 1
        targets = (gpu_capability(),) if candidate.engine == "tensorrt-rtx" else None  # this GPU: it runs here
        build_engine(self.directory, BuildOptions(precision=candidate.precision, compiler=candidate.engine,
                                                  min_batch=1, opt_batch=opt, max_batch=most, targets=targets),
                     on_step=self.step)

    def _engine_here(self, entry: dict) -> bool:
        """An engine of the compiler installed here (the same version), for this GPU: TensorRT's built on it (name
        and compute capability), TensorRT-RTX's listing it among its targets."""
        compiler = COMPILERS[entry.get("kind", "").removesuffix("-engine")] if entry.get("kind") in (
            "tensorrt-engine", "tensorrt-rtx-engine") else None
        if compiler is None or not installed(compiler) or \
                (entry.get("compiler") or {}).get("version") != import_module(compiler).__version__:
            return False
        gpu = entry.get("gpu")
        if gpu is not None and (gpu.get("name") != gpu_name()
                                or f"sm{str(gpu.get('compute_capability', '')).replace('.', '')}" != gpu_capability()):
            return False
        return "targets" not in entry or gpu_capability() in entry["targets"]

    def entry(self, name: str) -> dict | None:
        """The manifest's entry of the artifact `name`."""
        return entry_of(self.manifest, name)
