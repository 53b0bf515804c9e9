"""Seeded inputs, and making an untrained model's activations well scaled."""

from __future__ import annotations

import torch
from torch import nn

from .spec import ModelSpec


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
