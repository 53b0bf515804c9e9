"""Loading a variant of the zoo: a checkpoint into it, or the seeded untrained init; and the model an
export was made from, which parity and bench both compare against."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..core.artifacts import sha256_of
from ..core.errors import InputError
from .build import DEFAULT_INIT_SEED, DEFAULT_NUM_CLASSES, build_model, check_num_classes
from .checkpoint import check_dtypes, compare_keys, inspect_state_dict, read_state_dict, without_aux
from .identify import checkpoint_signature, identify
from .registry import list_models, model_class
from .samples import UNTRAINED_CONDITIONING, condition_untrained
from .spec import ModelSpec

log = logging.getLogger(__name__)


def create_model(name: str, *, num_classes: int | None = None, aux_logits: bool = False,
                 weights: str | Path | None = None, transform_input: bool | None = None,
                 init_seed: int = DEFAULT_INIT_SEED) -> nn.Module:
    """A model of the zoo in eval mode, its spec at `model.spec`.

    num_classes: the head size; by default the checkpoint's, else 1000. A value that disagrees with
        the checkpoint is an error.
    weights: a .pth/.pt/.safetensors checkpoint in the variant's layout (see `inception-deploy models`).
        Without it the model is untrained: a random init drawn from `init_seed` (so that the same call
        gives the same model, in export and in parity alike), and `model.untrained` is True.
    transform_input: googlenet/v3 only; defaults to the spec's (True, as torchvision's weights expect).
    """
    spec = model_class(name).spec
    check_num_classes(num_classes)
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = build_model(spec.name, num_classes=num_classes or DEFAULT_NUM_CLASSES, aux_logits=aux_logits,
                                transform_input=transform_input)
        model.untrained = True
        return model

    sd = read_state_dict(weights)
    facts = inspect_state_dict(spec, sd)
    if num_classes is not None and facts.num_classes is not None and num_classes != facts.num_classes:
        raise InputError(
            f"--num-classes {num_classes} disagrees with checkpoint {weights}, whose head has "
            f"{facts.num_classes} classes: drop --num-classes or pass {facts.num_classes}"
        )
    num_classes = num_classes or facts.num_classes or DEFAULT_NUM_CLASSES
    model = build_model(spec.name, num_classes=num_classes, aux_logits=aux_logits, transform_input=transform_input)
    if not aux_logits:
        sd = without_aux(spec, sd)
    # A checkpoint saved without its aux heads still loads into a model that has them (left at init).
    mismatch = compare_keys(model.state_dict(), sd, allow_missing=spec.layout.aux_prefixes if aux_logits else ())
    if mismatch and not (mismatch.unexpected or mismatch.wrong_shape):  # every key is the model's: some are not there
        raise InputError(
            f"checkpoint {weights} does not fit {spec.name}: {mismatch.describe_missing()}, while every key it has is "
            f"{spec.name}'s: it is incomplete; use the whole checkpoint (torch.save(model.state_dict(), path))"
        )
    if mismatch and not (mismatch.missing or mismatch.unexpected):  # every name is the model's: some sizes are not
        raise InputError(
            f"checkpoint {weights} does not fit {spec.name}: {mismatch.describe()}, while every key name is "
            f"{spec.name}'s: those tensors were saved from a model of other sizes, or damaged; re-save the checkpoint "
            "from the trained model (a head of another size is read from its classifier, given the right rank)"
        )
    if mismatch:
        raise InputError(
            f"checkpoint {weights} does not fit {spec.name}: "
            f"{mismatch.describe()}{_likely_owner_hint(spec, sd, weights)}"
        )
    check_dtypes(model.state_dict(), sd, weights)
    model.load_state_dict(sd, strict=False)
    model.untrained = False
    return model


def _likely_owner_hint(spec: ModelSpec, sd: dict[str, torch.Tensor], weights) -> str:
    # Its convolutions say which variant it is, whatever its key names; failing that, the names.
    by_shape = identify(checkpoint_signature(sd))
    if by_shape is not None and by_shape.name == spec.name:
        return (f"; its convolutions are {spec.name}'s but its key names differ: it is in another library's layout "
                "(`inception-deploy models` lists the ones loaded unchanged)")
    owner = by_shape or guess_variant(sd)
    if owner is None:
        return "; its keys match no Inception variant"
    if owner.name == spec.name:
        return f"; it is a {owner.name} checkpoint with other layer sizes"
    return (f"; it looks like a checkpoint of {owner.name}: try "
            f"`inception-deploy export {owner.aliases[0]} --weights {weights}`")


def guess_variant(sd: dict[str, torch.Tensor]) -> ModelSpec | None:
    """The variant whose parameter names overlap most with the checkpoint's, if any overlaps well."""
    given = {k for k in sd if not k.endswith(".num_batches_tracked")}
    best, best_score = None, 0.0
    for spec in list_models():
        with torch.device("meta"):  # names only: no memory, no init cost
            model = build_model(spec.name, aux_logits=spec.has_aux)
        names = {k for k in model.state_dict() if not k.endswith(".num_batches_tracked")}
        aux = spec.layout.aux_prefixes
        if aux and not any(k.startswith(aux) for k in given):  # a checkpoint saved without its aux heads
            names = {k for k in names if not k.startswith(aux)}
        score = len(names & given) / len(names | given)
        if score > best_score:
            best, best_score = spec, score
    return best if best_score >= 0.5 else None


def deployable_model(name: str, *, weights: str | Path | None = None, num_classes: int | None = None) -> nn.Module:
    """The model exactly as `export` exports it and `parity` compares against.

    With weights: the checkpoint, loaded. Without: the seeded untrained init, conditioned as
    samples.UNTRAINED_CONDITIONING says, so that activations are well scaled, backends are compared on a
    numerically sane model, and every command rebuilds the same weights.
    """
    model = create_model(name, num_classes=num_classes, weights=weights)
    if model.untrained:
        condition_untrained(model)
    return model


def check_export_weights(manifest: dict | None, weights, consequence: str, fix: str) -> None:
    """Before any work: a --weights other than the checkpoint the export was made from (by its sha256) is refused
    (InputError, exit 2), saying what comparing the two would mean and the fix."""
    listed = (manifest or {}).get("weights")
    if weights is None or not listed or Path(weights) == Path(listed["path"]):
        return
    if Path(weights).is_file() and sha256_of(Path(weights)) != listed["sha256"]:
        raise InputError(f"--weights {weights} is not the checkpoint this export was made from ({listed['path']}, "
                         f"by its sha256): {consequence}; {fix}")


def reference_weights(manifest: dict | None, weights, num_classes):
    """The checkpoint (and head size) an export was made from, unless given: what parity and bench rebuild."""
    check_num_classes(num_classes)
    if weights is not None or manifest is None:
        return weights, num_classes
    num_classes = num_classes or manifest.get("num_classes")
    if manifest.get("weights"):
        path = Path(manifest["weights"]["path"])
        if not path.is_file():
            raise InputError(f"the checkpoint this export was made from, {path}, is gone: pass it with --weights")
        if sha256_of(path) != manifest["weights"]["sha256"]:
            raise InputError(f"{path} changed since the export (sha256 differs): re-export, or pass --weights")
        return path, num_classes
    init = manifest.get("untrained_init") or {}
    if init and init != {"init_seed": DEFAULT_INIT_SEED, **UNTRAINED_CONDITIONING}:
        raise InputError("this export's untrained init differs from this version's: re-export it")
    return None, num_classes
