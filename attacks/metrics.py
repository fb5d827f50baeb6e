"""Robustness metrics with explicit denominators.

- clean and robust accuracy: over all N examples; an example the model gets wrong on clean input
  counts as not robust (as RobustBench does);
- attack success rate: over the examples that are correct on clean input;
- ensemble (worst case over attacks): an example is robust only if every attack fails on it;
- Wilson score intervals (scipy's) for accuracies and attack success rates;
- McNemar's exact test for two models (or attacks) evaluated on the same examples;
- Linf and L2 norms of perturbations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

__all__ = [
    "wilson_interval",
    "success_rate_interval",
    "robust_accuracy",
    "attack_success_rate",
    "ensemble_correct",
    "McNemarResult",
    "mcnemar_test",
    "perturbation_norms",
]


def wilson_interval(n_correct: int, n_total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``n_correct / n_total`` (scipy's).

    ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``: unlike the normal approximation
    it stays inside [0, 1] and behaves at 0 and N successes. Used for accuracies and attack success
    rates alike.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n_total == 0``.

    Raises:
        ValueError: counts out of range or ``confidence`` not in (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_total < 0 or not 0 <= n_correct <= max(n_total, 0):
        raise ValueError(f"need 0 <= n_correct <= n_total, got {n_correct} of {n_total}")
    if n_total == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(n_correct), int(n_total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def success_rate_interval(
    clean_correct: Sequence[bool] | np.ndarray, adv_correct: Sequence[bool] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson interval of the attack success rate (over the clean-correct examples); NaNs if none."""
    clean, adv = _bool(clean_correct, "clean_correct"), _bool(adv_correct, "adv_correct")
    if clean.shape != adv.shape:
        raise ValueError(f"outcome vectors differ in length: {clean.shape[0]} and {adv.shape[0]}")
    return wilson_interval(int((clean & ~adv).sum()), int(clean.sum()), confidence)


def _bool(a: object, what: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim != 1 or arr.dtype != bool:
        raise ValueError(f"{what} must be a 1-d boolean array, got dtype {arr.dtype} and shape {arr.shape}")
    return arr


def robust_accuracy(clean_correct: Sequence[bool] | np.ndarray, adv_correct: Sequence[bool] | np.ndarray) -> float:
    """Fraction of all N examples correct both on clean input and under attack."""
    clean, adv = _bool(clean_correct, "clean_correct"), _bool(adv_correct, "adv_correct")
    if clean.shape != adv.shape:
        raise ValueError(f"outcome vectors differ in length: {clean.shape[0]} and {adv.shape[0]}")
    return float((clean & adv).mean()) if clean.size else math.nan


def attack_success_rate(clean_correct: Sequence[bool] | np.ndarray, adv_correct: Sequence[bool] | np.ndarray) -> float:
    """Fraction of the clean-correct examples that the attack makes wrong (``nan`` if none is clean-correct)."""
    clean, adv = _bool(clean_correct, "clean_correct"), _bool(adv_correct, "adv_correct")
    if clean.shape != adv.shape:
        raise ValueError(f"outcome vectors differ in length: {clean.shape[0]} and {adv.shape[0]}")
    n_clean = int(clean.sum())
    return float((clean & ~adv).sum() / n_clean) if n_clean else math.nan


def ensemble_correct(*outcomes: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Per-example worst case over attacks: correct only where every outcome vector is correct."""
    if not outcomes:
        raise ValueError("ensemble_correct needs at least one outcome vector")
    arrays = [_bool(o, "outcome") for o in outcomes]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"outcome vectors differ in length: {sorted({a.shape[0] for a in arrays})}")
    return np.logical_and.reduce(arrays)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on paired outcomes.

    Attributes:
        n_examples: number of paired examples.
        accuracy_a: accuracy of A; ``accuracy_b`` likewise.
        only_a: examples A gets right and B wrong; ``only_b`` the reverse (the discordant pairs).
        p_value: two-sided exact binomial p-value of ``only_a`` among the discordant pairs
            under ``p = 1/2`` (1.0 when there are none).
    """

    n_examples: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    p_value: float


def mcnemar_test(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """McNemar's exact test: do A and B differ in accuracy on the same examples?

    Only discordant pairs carry information; the test is ``scipy.stats.binomtest`` on them.

    Raises:
        ValueError: vectors of different lengths or not boolean.
    """
    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same examples, got {a.shape[0]} and {b.shape[0]}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n_disc = only_a + only_b
    p_value = float(stats.binomtest(only_a, n_disc, 0.5).pvalue) if n_disc else 1.0
    n = a.shape[0]
    return McNemarResult(
        n_examples=n,
        accuracy_a=float(a.mean()) if n else math.nan,
        accuracy_b=float(b.mean()) if n else math.nan,
        only_a=only_a,
        only_b=only_b,
        p_value=p_value,
    )


def perturbation_norms(images: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ``(linf, l2)`` norms of ``adversarial - images``, in float64."""
    delta = (adversarial.detach().double() - images.detach().double()).flatten(1)
    if delta.shape[1] == 0:
        zeros = torch.zeros(delta.shape[0], dtype=torch.float64, device=delta.device)
        return zeros, zeros
    return delta.abs().amax(dim=1), delta.norm(p=2, dim=1)
