"""Inputs: seeded random batches, real images through a variant's preprocessing; conditioning untrained models."""

from __future__ import annotations

import logging
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError, first_line
from .spec import ModelSpec

log = logging.getLogger(__name__)

# How an untrained model is made fit for backend comparisons. Part of its definition: export and parity
# rebuild identical weights from it, whatever samples they then compare on.
# - BatchNorm statistics re-estimated on a fixed seeded batch: random weights without trained statistics
#   make activations grow layer by layer (v3 logits reach 1e6).
# - BatchNorm shift (beta) set to 1 first: a random deep BN-ReLU net at beta=0 is chaotic, and amplifies
#   rounding 1000-fold (inception_v4: fp32 is 6e-4 of scale from fp64, fp16 reaches cosine 0.96). With
#   most ReLUs active it is as well conditioned as a trained net (2e-6 and cosine 0.99998).
UNTRAINED_CONDITIONING = {"bn_shift": 1.0, "bn_samples": 4, "bn_seed": 1234}


@torch.no_grad()
def condition_untrained(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            m.bias.fill_(UNTRAINED_CONDITIONING["bn_shift"])
    batch = random_batch(model.spec, UNTRAINED_CONDITIONING["bn_samples"], seed=UNTRAINED_CONDITIONING["bn_seed"])
    reestimate_batchnorm(model, batch)


def random_batch(spec: ModelSpec, batch: int, *, seed: int = 0) -> torch.Tensor:
    """Uniform random pixels in [0, 1], normalised as the variant's preprocessing does: (N, C, H, W) float32."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, *spec.input_size, generator=generator)
    mean = torch.tensor(spec.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.preprocessing.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batch: torch.Tensor) -> None:
    """Replace BatchNorm running statistics with those of `batch`.

    Random weights without trained statistics make activations grow layer by layer (v3 logits reach 1e6),
    so backend comparisons on such a model measure overflow, not the backends. One train-mode pass with
    a cumulative average (momentum=None) makes the eval-mode model normalise exactly as it did in that pass.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


INTERPOLATIONS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC"}


def _to_rgb8(image):
    """RGB with 8 bits per channel. Pillow's convert() clips 16- and 32-bit modes (I;16, I, F) to 0..255,
    which turns a 16-bit photograph white: scale them by their bit depth instead."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        if not np.isfinite(pixels).all():
            raise ValueError("a floating-point image holding NaN or Inf pixels")
        top = 1.0 if pixels.max(initial=0) <= 1.0 else pixels.max()
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def image_batch(
    spec: ModelSpec, directory: str | Path, *, option: str = "--images", limit: int | None = None
) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Every readable image in `directory` (the first `limit` readable ones, in name order), through the variant's
    own preprocessing (Pillow).

    Returns (batch, the files used, [(file, why it was skipped)]). A folder with none readable is an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{option} {directory} is not a directory")
    tensors, used, skipped = [], [], []
    for path in sorted(directory.iterdir()):
        if limit is not None and len(tensors) >= limit:
            break
        pixels, why = preprocessed_image(spec, path)
        if why:
            skipped.append((path.name, why))
            continue
        tensors.append(torch.from_numpy(pixels))
        used.append(path.name)
    if not tensors:
        count = f"{len(skipped)} {'entry' if len(skipped) == 1 else 'entries'} skipped"
        what = f"{count}, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else "it is empty"
        raise InputError(f"{option} {directory} holds no readable image ({what}): "
                         "point it at a folder of JPEG/PNG photographs")
    return torch.stack(tensors), used, skipped


def preprocessed_image(spec: ModelSpec, path: Path) -> tuple[np.ndarray | None, str | None]:
    """(one image through the variant's own preprocessing, (C, H, W) float32, None), or (None, why it is skipped)."""
    from PIL import Image

    pre = spec.preprocessing
    resample = getattr(Image.Resampling, INTERPOLATIONS[pre.interpolation])
    pixels, why = _read_image(Path(path), pre.resize, pre.crop, resample)
    if why:
        return None, why
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    return ((pixels.transpose(2, 0, 1) - mean) / std).astype(np.float32), None


def _read_image(path: Path, resize: int, crop: int, resample) -> tuple[np.ndarray | None, str | None]:
    """(the centre crop's RGB pixels in [0, 1], None), or (None, why the file is skipped)."""
    from PIL import Image, UnidentifiedImageError

    why = _not_a_regular_file(path)
    if why:
        return None, why  # never opened: opening a FIFO blocks until something writes to it
    try:
        with warnings.catch_warnings():  # Pillow's DecompressionBombWarning: the reason it is skipped, not a warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                scale = resize / max(1, min(image.size))
                size = (max(crop, round(image.width * scale)), max(crop, round(image.height * scale)))
                if size[0] * size[1] > Image.MAX_IMAGE_PIXELS:  # a thin strip: its resize is the bomb
                    return None, (f"{image.width}x{image.height}: resized so that its shorter side is {resize}, it "
                                  f"would be {size[0]}x{size[1]} pixels; crop it to a photograph's proportions")
                image = _to_rgb8(image).resize(size, resample)
                left, top = (image.width - crop) // 2, (image.height - crop) // 2
                image = image.crop((left, top, left + crop, top + crop))
                return np.asarray(image, dtype=np.float32) / 255.0, None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None, (f"more than {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's limit against decompression bombs: "
                      "downscale it")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return None, first_line(err, 120)


def _not_a_regular_file(path: Path) -> str | None:
    """Why an entry of an image folder is no file to read, if it is not (a link is followed)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        return f"a broken link ({err.strerror})" if path.is_symlink() else f"cannot be read ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder: the images inside folders are not read"
    kind = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(mode), "not a regular file")
    return f"{kind}, not an image file"
