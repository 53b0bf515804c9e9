"""Seeded inputs, and making an untrained model's activations well scaled."""

from __future__ import annotations

import torch
from torch import nn

from .spec import ModelSpec


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
