"""A model with real decisions, made here: untrained weights cannot test accuracy, and no trained Inception weights can
be downloaded. scikit-learn's handwritten digits (8x8, 16 grey levels) are upscaled to RGB images and written as
ImageFolder trees; a 10-class head is fitted with scikit-learn's logistic regression on googlenet's own pooled
features (its seeded, BatchNorm-conditioned init); the whole network is saved as a checkpoint in the variant's layout.

Test data only: scikit-learn is a test dependency, never imported by the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VARIANT = "googlenet"
CLASSES = 10
SIZE = 64  # pixels of the upscaled digit images; the variant's preprocessing resizes them to its input
# Disjoint splits of load_digits(), taken in its order: features to fit the head, calibration, evaluation.
SPLITS = {"train": (0, 200), "calib": (200, 232), "eval": (232, 432)}


@dataclass(frozen=True)
class DigitsModel:
    root: Path
    checkpoint: Path  # googlenet, 10 classes, its head fitted on train
    train: Path  # ImageFolder trees: 0/ … 9/
    calib: Path
    eval: Path
    eval_labels: np.ndarray  # in the ImageFolder's order (class folder, then file name)


def write_split(images: np.ndarray, targets: np.ndarray, root: Path, offset: int) -> None:
    from PIL import Image

    for k, (image, target) in enumerate(zip(images, targets)):
        folder = root / str(int(target))
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        picture = Image.fromarray(grey, "L").resize((SIZE, SIZE), Image.Resampling.BILINEAR).convert("RGB")
        picture.save(folder / f"digit_{offset + k:04d}.png")


def folder_batch(spec, root: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Every image of an ImageFolder tree through the variant's preprocessing, with its label (folder order)."""
    from inception_deploy.models.samples import preprocessed_image

    arrays, labels = [], []
    for index, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.iterdir()):
            pixels, why = preprocessed_image(spec, path)
            assert why is None, why
            arrays.append(pixels)
            labels.append(index)
    return torch.from_numpy(np.stack(arrays)), np.asarray(labels)


@torch.no_grad()
def pooled_features(model, batch: torch.Tensor) -> np.ndarray:
    """The input of the classifier (the pooled, flattened features), captured by a hook."""
    captured = []
    handle = model.fc.register_forward_hook(lambda module, args, output: captured.append(args[0].detach()))
    try:
        for start in range(0, len(batch), 50):
            model(batch[start:start + 50])
    finally:
        handle.remove()
    return torch.cat(captured).numpy()


def make_digits_model(root: Path) -> DigitsModel:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from inception_deploy.models.load import deployable_model

    digits = load_digits()
    paths = {}
    for split, (start, stop) in SPLITS.items():
        paths[split] = root / split
        write_split(digits.images[start:stop], digits.target[start:stop], paths[split], start)
    model = deployable_model(VARIANT, num_classes=CLASSES)  # seeded init, BatchNorm conditioned
    train_x, train_y = folder_batch(model.spec, paths["train"])
    features = pooled_features(model, train_x)
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = LogisticRegression(C=1.0, max_iter=3000).fit((features - mean) / std, train_y)
    # The standardisation folded into the Linear: W (x - mean) / std + b
    weight = head.coef_ / std
    bias = head.intercept_ - (head.coef_ * mean / std).sum(1)
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        model.fc.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    checkpoint = root / f"{VARIANT}_digits.pth"
    torch.save(model.state_dict(), checkpoint)
    return DigitsModel(root, checkpoint, paths["train"], paths["calib"], paths["eval"], _labels(paths["eval"]))


def _labels(root: Path) -> np.ndarray:
    return np.asarray([index for index, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir()))
                       for _ in sorted(folder.iterdir())])
