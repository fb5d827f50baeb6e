"""Validity checks of adversarial batches, and the budget rule of minimum-norm attacks.

Every batch an attack returns is checked before it is scored: same shape, finite, inside [0, 1]
and inside the eps ball of the spec's norm (up to a tiny float tolerance). A violation is a bug in
an attack and raises ``AttackCheckError``; it is never silently clipped.

Minimum-norm attacks (``cw``, ``deepfool``) have no budget of their own. With a finite ``eps``,
an example whose perturbation exceeds it is replaced by its clean image: the attack did not find
an adversarial example inside the budget.
"""

from __future__ import annotations

import math

import torch

from attacks.errors import AttackCheckError
from attacks.metrics import perturbation_norms
from attacks.spec import AttackSpec

__all__ = ["check_adversarial", "enforce_budget", "ABS_TOL", "REL_TOL"]

ABS_TOL = 1e-6
"""Absolute slack for the ball and [0, 1] checks: float32 rounding of ``x + eps`` is ~6e-8."""
REL_TOL = 1e-5
"""Relative slack on the L2 ball (a norm sums many rounded terms)."""

MINIMUM_NORM = ("cw", "deepfool")


def _budget(spec: AttackSpec, linf: torch.Tensor, l2: torch.Tensor) -> tuple[torch.Tensor, float]:
    norms = linf if spec.norm == "Linf" else l2
    slack = ABS_TOL if spec.norm == "Linf" else ABS_TOL + REL_TOL * spec.eps
    return norms, spec.eps + slack


def enforce_budget(images: torch.Tensor, adversarial: torch.Tensor, spec: AttackSpec) -> torch.Tensor:
    """For minimum-norm attacks with a finite eps, put back the clean image where the budget is exceeded."""
    if spec.name not in MINIMUM_NORM or math.isinf(spec.eps):
        return adversarial
    linf, l2 = perturbation_norms(images, adversarial)
    norms, limit = _budget(spec, linf, l2)
    over = (norms > limit).to(adversarial.device)
    if over.any():
        adversarial = adversarial.clone()
        adversarial[over] = images[over].to(adversarial.dtype)
    return adversarial


def check_adversarial(
    images: torch.Tensor, adversarial: torch.Tensor, spec: AttackSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one adversarial batch and return its per-example ``(linf, l2)`` perturbation norms.

    Raises:
        AttackCheckError: wrong shape, non-finite values, values outside [0, 1], or perturbations
            outside the eps ball (message names the spec, the count and the worst value).
    """
    if adversarial.shape != images.shape:
        raise AttackCheckError(
            f"{spec.key}: attack returned shape {tuple(adversarial.shape)}, expected {tuple(images.shape)}"
        )
    if not torch.isfinite(adversarial).all():
        bad = int((~torch.isfinite(adversarial)).flatten(1).any(1).sum())
        raise AttackCheckError(f"{spec.key}: {bad} adversarial example(s) contain NaN or inf")
    low, high = (float(adversarial.min()), float(adversarial.max())) if adversarial.numel() else (0.0, 0.0)
    if low < -ABS_TOL or high > 1 + ABS_TOL:
        raise AttackCheckError(f"{spec.key}: adversarial examples leave [0, 1] (min {low:.6g}, max {high:.6g})")
    linf, l2 = perturbation_norms(images, adversarial)
    if spec.norm in ("Linf", "L2") and not math.isinf(spec.eps):
        norms, limit = _budget(spec, linf, l2)
        over = norms > limit
        if over.any():
            raise AttackCheckError(
                f"{spec.key}: {int(over.sum())} adversarial example(s) outside the {spec.norm} ball of eps "
                f"{spec.eps_label} (largest {spec.norm} norm {float(norms.max()):.6g})"
            )
    return linf, l2
