"""Adversarial training examples: FGSM or PGD in pixel space, crafted through the `attacks` package.

The attack object comes from `attacks`' registry (torchattacks underneath), so training and
evaluation use the same definition of an attack and of eps. Crafting runs with the model in
eval mode (torchattacks' default), and the training loop puts it back in train mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attacks.registry import build_torchattack
from attacks.spec import AttackSpec
from robustsparse.config.schema import AdversarialTrainingConfig

__all__ = ["make_adversary"]

Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_adversary(cfg: AdversarialTrainingConfig, *, seed: int = 0) -> Adversary | None:
    """A function `(model, images, labels) -> adversarial images`, or None when `attack` is `none`."""
    if cfg.attack == "none":
        return None
    params = {"name": cfg.attack, "eps": cfg.eps}
    if cfg.attack == "pgd":
        params["steps"] = cfg.steps
    spec = AttackSpec.from_dict(params)

    attacks_by_model: dict[int, object] = {}

    def adversary(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attack = attacks_by_model.get(id(model))
        if attack is None:  # built once per model; the class count is read off one forward pass
            with torch.no_grad():
                n_classes = int(model(images[:1]).shape[1])
            attack = attacks_by_model[id(model)] = build_torchattack(model, spec, n_classes=n_classes, seed=seed)
        return attack(images, labels)

    return adversary
