"""Adversarial training: the attack that crafts training examples, and the loss on them.

The attack object comes from `attacks`' registry (torchattacks underneath), so training and
evaluation use the same definition of an attack and of eps (pixel units). Crafting runs with the
model in eval mode (torchattacks' default), and the model is put back in train mode afterwards.

The loss forms (`train.adversarial.loss`):

- `replace`: CE on the batch whose first `ratio` share is replaced by adversarial examples;
- `madry`: CE on the adversarial examples of the whole batch (Madry et al. 2018);
- `hybrid`: w x CE(clean) + (1 - w) x CE(adversarial) (DNR, Kundu et al. 2021);
- `trades`: CE(clean) + beta x KL(p_clean || p_adversarial), the adversarial examples crafted by
  `tpgd` to maximise that KL (Zhang et al. 2019; the KL summed over classes, averaged over the batch
  as in the reference code).

`hybrid` and `trades` run the clean and the adversarial batch through the model separately (two
forward passes in train mode, as the reference implementations do), so at w = 1 or beta = 0 the
adversarial term adds exactly zero gradient and the weights follow clean training.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from attacks.registry import build_torchattack
from attacks.spec import AttackSpec
from robustsparse.config.schema import AdversarialTrainingConfig

__all__ = ["make_adversary", "RobustLoss"]

Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_adversary(cfg: AdversarialTrainingConfig, *, seed: int = 0) -> Adversary | None:
    """A function `(model, images, labels) -> adversarial images`, or None when `attack` is `none`."""
    if cfg.attack == "none":
        return None
    params = {"name": cfg.attack, "eps": cfg.eps}
    if cfg.attack in ("pgd", "tpgd"):
        params["steps"] = cfg.steps
    spec = AttackSpec.from_dict(params)

    attacks_by_model: dict[int, object] = {}

    def adversary(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attack = attacks_by_model.get(id(model))
        if attack is None:  # built once per model; the class count is read off one forward pass
            was_training = model.training
            model.eval()  # in train mode the probe would move BatchNorm's statistics (and a resumed run's twice)
            with torch.no_grad():
                n_classes = int(model(images[:1]).shape[1])
            model.train(was_training)
            attack = attacks_by_model[id(model)] = build_torchattack(model, spec, n_classes=n_classes, seed=seed)
        return attack(images, labels)

    return adversary


class RobustLoss:
    """The training loss of `train.adversarial`: crafts the examples it needs, and times the crafting.

    Args:
        adversary: crafts adversarial images (`make_adversary`).
        cfg: the settings (`loss`, `ratio`, `hybrid_weight`, `trades_beta`).

    Attributes:
        seconds: time spent crafting adversarial examples since the last `take_seconds()`.
    """

    def __init__(self, adversary: Adversary, cfg: AdversarialTrainingConfig) -> None:
        self.adversary = adversary
        self.cfg = cfg
        self.seconds = 0.0

    def take_seconds(self) -> float:
        """The crafting time accumulated since the last call (then reset to 0)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def _craft(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tic = time.perf_counter()
        adv = self.adversary(model, images, labels).detach()
        if adv.device.type == "cuda":  # the kernels are asynchronous: wait for them before reading the clock
            torch.cuda.synchronize(adv.device)
        self.seconds += time.perf_counter() - tic
        model.train()
        return adv

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
        autocast: Callable[[], AbstractContextManager] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of one batch, and the logits its accuracy is read from.

        The logits are those of the examples the cross-entropy is over: the mixed batch for
        `replace`, the adversarial examples for `madry`, the clean ones for `hybrid` and `trades`.
        """
        cfg = self.cfg
        context = autocast if autocast is not None else contextlib.nullcontext

        def ce(logits: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

        if cfg.loss == "replace":
            n_adv = max(1, int(round(cfg.ratio * len(images))))
            adv = self._craft(model, images[:n_adv], labels[:n_adv])
            with context():
                logits = model(torch.cat([adv, images[n_adv:]]))
            return ce(logits), logits
        adv = self._craft(model, images, labels)
        if cfg.loss == "madry":
            with context():
                logits = model(adv)
            return ce(logits), logits
        with context():
            clean_logits = model(images)
            adv_logits = model(adv)
        if cfg.loss == "hybrid":
            weight = cfg.hybrid_weight
            return weight * ce(clean_logits) + (1.0 - weight) * ce(adv_logits), clean_logits
        # trades: KL(p_clean || p_adv), summed over classes and averaged over the batch
        kl = F.kl_div(adv_logits.float().log_softmax(1), clean_logits.float().softmax(1), reduction="batchmean")
        return ce(clean_logits) + cfg.trades_beta * kl, clean_logits
