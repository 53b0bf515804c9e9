"""Reading checkpoints people actually have, and fitting them to a variant of the zoo.

Accepted: .pth/.pt/.bin (torch.load with weights_only=True) and .safetensors; a bare state dict or one
wrapped under the usual keys; `module.` (DataParallel) and `_orig_mod.` (torch.compile) prefixes;
with or without auxiliary heads.
"""

from __future__ import annotations

import logging
import pickle
import pickletools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import InputError, first_line
from .spec import ModelSpec

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
# Buffers a checkpoint may lack without changing what the model computes.
OPTIONAL_SUFFIXES = (".num_batches_tracked",)
# The number torch.save's legacy (pre-zip) format pickles first.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and with training prefixes stripped."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist: check the --weights path")
    if not path.is_file():
        raise InputError(f"checkpoint {path} is not a file: pass the .pth/.pt/.safetensors file itself")
    if _is_safetensors(path):  # by content, not by name
        obj = _load_safetensors(path)
    elif _is_plain_pickle(path):
        raise InputError(
            f"checkpoint {path} is a plain Python pickle, not a torch.save or safetensors checkpoint: it is not "
            "unpickled (that could run any code); load it where it was made and save its state dict with "
            "torch.save(state_dict, path)"
        )
    else:
        obj = _load_torch(path)
    state_dict = _strip_prefixes(_unwrap(obj, path))
    for key, tensor in state_dict.items():
        _check_tensor(path, key, tensor)
    return state_dict


def _check_tensor(path: Path, key: str, tensor: torch.Tensor) -> None:
    """Weights an Inception model can hold: dense, real and finite (whether floats where it has floats is
    check_dtypes's, which knows the model)."""
    if tensor.layout != torch.strided or tensor.is_meta:
        what = "a meta tensor, without data" if tensor.is_meta else f"sparse ({str(tensor.layout).split('.')[-1]})"
        raise InputError(f"checkpoint {path}: tensor {key} is {what}, not a dense tensor: save the model's own "
                         "state_dict() (or tensor.to_dense()) and use that checkpoint")
    if tensor.is_complex():
        raise InputError(f"checkpoint {path}: tensor {key} is complex ({_dtype_name(tensor)}), but an Inception "
                         "model's weights are real: it is not this model's checkpoint; use the model's own")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise InputError(f"checkpoint {path}: tensor {key} holds {kind} values: the checkpoint is broken "
                         "(a diverged or corrupted training run); use another checkpoint")


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def check_dtypes(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], path) -> None:
    """Floats where the model has floating-point parameters and buffers: integers would be cast silently into
    meaningless weights. (Integer buffers such as BatchNorm's num_batches_tracked take what they are given.)"""
    for key, tensor in given.items():
        own = expected.get(key)
        if own is not None and own.is_floating_point() and not tensor.is_floating_point():
            raise InputError(
                f"checkpoint {path}: tensor {key} is {_dtype_name(tensor)}, where the model has {_dtype_name(own)} "
                "weights: it was quantized or converted, or is not a checkpoint of this model; use the "
                "floating-point checkpoint"
            )


def _is_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header ('{'); torch files are zip or pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return path.suffix == ".safetensors"  # too short to tell: let the loader its name asks for say so
    return head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0  # a truncated one too: its loader says so


def _is_plain_pickle(path: Path) -> bool:
    """A file pickle.dump wrote: a zip is torch.save's, and torch.save's legacy format opens with a pickled magic
    number; anything else that reads as exactly one whole pickle holding a value is a plain one. Read opcode by
    opcode, never unpickled. (Random bytes that open with '.', STOP, read as an empty pickle: not one.)"""
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            return False
        f.seek(0)
        values = 0
        try:
            for opcode, arg, _ in pickletools.genops(f):  # stops at the pickle's STOP; raises on bytes that are not one
                if arg == TORCH_LEGACY_MAGIC:
                    return False
                values += opcode.name not in ("PROTO", "FRAME", "STOP")
        except Exception:  # genops raises ValueError, and others on garbage: not a pickle, torch.load says why
            return False
        return values > 0 and f.read(1) == b""  # pickle.dump writes one pickle and nothing after it


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types, and OSError on short reads
        raise InputError(
            f"checkpoint {path} is not a readable safetensors file ({_first_sentence(err)}): it is corrupt or "
            "truncated; download or save it again"
        ) from None


def _load_torch(path: Path):
    try:
        with warnings.catch_warnings():  # torch's advice about pickles is for its own users, not ours
            warnings.simplefilter("ignore")
            with open(path, "rb") as f:  # a file object: torch would pick a loader by the file's suffix
                return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # a real pickle that names classes: refused for safety
            raise InputError(
                f"checkpoint {path} holds pickled Python objects, not only tensors, and is not loaded for "
                "safety: re-save it with torch.save(model.state_dict(), path)"
            ) from None
        raise InputError(f"checkpoint {path} is not a readable PyTorch file: it is corrupt or truncated; download or "
                         "save it again") from None
    except Exception as err:  # garbage bytes make the unpickler fail in arbitrary ways (KeyError, struct.error…)
        raise InputError(
            f"checkpoint {path} cannot be read ({_first_sentence(err)}): it is corrupt or truncated; "
            "download or save it again"
        ) from None


def _first_sentence(err: BaseException) -> str:
    """torch's and safetensors' errors name the problem in their first sentence, then advise at length."""
    return first_line(err, 400).split(". ")[0].rstrip(".")[:160]


def _tensor_count(obj) -> int:
    return sum(isinstance(v, torch.Tensor) for v in obj.values()) if isinstance(obj, dict) else 0


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Descend through wrappers ({"state_dict": ...}, {"model": ...}) to the dict that holds the tensors.
    for _ in range(4):
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if _tensor_count(obj.get(k)) > _tensor_count(obj)), None)
        if inner is None:
            break
        obj = inner
    if _tensor_count(obj) == 0:
        raise InputError(
            f"checkpoint {path} holds no state dict: expected tensors at its top level or under one of "
            f"{', '.join(WRAPPER_KEYS)}"
        )
    odd = next((k for k, v in obj.items() if isinstance(v, torch.Tensor) and not isinstance(k, str)), None)
    if odd is not None:
        raise InputError(f"checkpoint {path} holds no state dict: its tensors are keyed by {type(odd).__name__} "
                         f"({odd!r}), not by parameter names; save model.state_dict()")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    return sd


@dataclass(frozen=True)
class CheckpointFacts:
    """What a state dict says about the head it was trained with."""

    num_classes: int | None
    has_aux: bool


def inspect_state_dict(spec: ModelSpec, sd: dict[str, torch.Tensor]) -> CheckpointFacts:
    head = sd.get(f"{spec.layout.classifier}.weight")
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else None
    has_aux = any(k.startswith(spec.layout.aux_prefixes) for k in sd) if spec.layout.aux_prefixes else False
    return CheckpointFacts(num_classes, has_aux)


def without_aux(spec: ModelSpec, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not spec.layout.aux_prefixes:
        return sd
    return {k: v for k, v in sd.items() if not k.startswith(spec.layout.aux_prefixes)}


@dataclass(frozen=True)
class KeyMismatch:
    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]  # "key (checkpoint [a, b] vs model [c, d])"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self, few: int = 3) -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.wrong_shape),
        ):
            if keys:
                more = f", … {len(keys) - few} more" if len(keys) > few else ""
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:few])}{more})")
        return "; ".join(parts)

    def describe_missing(self, few: int = 3) -> str:
        """The missing keys by name: "missing key 'a'", "missing keys 'a', 'b', … 4 more"."""
        more = f", … {len(self.missing) - few} more" if len(self.missing) > few else ""
        names = ", ".join(f"'{k}'" for k in self.missing[:few])
        return f"missing key{'s' if len(self.missing) > 1 else ''} {names}{more}"


def compare_keys(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], allow_missing: tuple[str, ...] = ()
) -> KeyMismatch:
    """Which keys of `given` do not fit `expected` (a model's state dict)."""

    def optional(k: str) -> bool:
        return k.endswith(OPTIONAL_SUFFIXES) or (bool(allow_missing) and k.startswith(allow_missing))

    missing = [k for k in expected if k not in given and not optional(k)]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} (checkpoint {list(given[k].shape)} vs model {list(expected[k].shape)})"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    return KeyMismatch(missing, unexpected, wrong)
