"""Small statistics the report needs: Wilson intervals, McNemar's exact test and the interval of a paired
difference, multiple-comparison corrections, seed intervals, Pareto fronts.

Thin wrappers over scipy.stats so that every number in the report comes from one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "wilson_interval",
    "mcnemar_exact",
    "paired_difference_interval",
    "discordant_counts",
    "CORRECTIONS",
    "adjust_p_values",
    "correction_words",
    "seed_interval",
    "pareto_mask",
]


def wilson_interval(n_correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy.stats.binomtest(...).proportion_ci).

    Args:
        n_correct: Successes.
        n: Trials; with n == 0 the interval is (nan, nan).
        confidence: Confidence level.

    Returns:
        (low, high) as fractions in [0, 1].
    """
    if n <= 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(n_correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant counts of two paired classifiers.

    Under the null hypothesis both models are equally accurate on these examples, so each
    discordant example is a fair coin: p = binomtest(b, b + c, 0.5).

    Args:
        b: Examples that model A gets right and model B wrong.
        c: Examples that model A gets wrong and model B right.

    Returns:
        The p-value; 1.0 when there are no discordant examples.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def paired_difference_interval(only_a: int, only_b: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact interval of the paired accuracy difference (B minus A) on `n` shared examples, as fractions.

    The difference is ``(only_b - only_a) / n``. Conditional on the number of discordant examples
    ``m = only_a + only_b`` (the conditioning of McNemar's exact test), ``only_b`` is binomial with
    m trials, so the Clopper-Pearson interval ``[lo, hi]`` of ``only_b / m`` maps to the difference
    interval ``m / n * (2 * [lo, hi] - 1)``. With no discordant example the difference is exactly 0.

    Args:
        only_a: Examples only A gets right.
        only_b: Examples only B gets right.
        n: Shared examples (both models evaluated on them).
        confidence: Confidence level.

    Returns:
        (low, high) as fractions in [-1, 1]; (nan, nan) when n == 0.
    """
    only_a, only_b, n = int(only_a), int(only_b), int(n)
    if n <= 0:
        return math.nan, math.nan
    m = only_a + only_b
    if m == 0:
        return 0.0, 0.0
    ci = stats.binomtest(only_b, m).proportion_ci(confidence_level=confidence, method="exact")
    return m / n * (2 * float(ci.low) - 1), m / n * (2 * float(ci.high) - 1)


#: Multiple-comparison corrections the report offers: Holm (family-wise error, the default),
#: Benjamini-Hochberg (false discovery rate), or none.
CORRECTIONS: tuple[str, ...] = ("holm", "bh", "none")


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values for the number of tests; NaNs (no test) are kept and not counted.

    - ``"holm"``: Holm's step-down adjustment, ``p_(i) * (m - i + 1)`` made monotone and capped at
      1; controls the family-wise error rate, valid under any dependence between the tests.
    - ``"bh"``: Benjamini-Hochberg (``scipy.stats.false_discovery_control``); controls the
      false discovery rate.
    - ``"none"``: the p-values as they are.

    Raises:
        ValueError: An unknown method (one line naming the allowed ones).
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; allowed: {', '.join(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    tested = np.isfinite(p)
    if method == "none" or not tested.any():
        return out
    values = p[tested]
    if method == "bh":
        out[tested] = stats.false_discovery_control(values, method="bh")
        return out
    m = values.size
    order = np.argsort(values, kind="stable")
    stepped = np.maximum.accumulate(values[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[tested] = adjusted
    return out


def correction_words(method: str) -> str:
    """How the report says which correction its p-values carry, e.g. for a caption or the method finding."""
    return {
        "holm": "p-values Holm-adjusted for the number of tests in each setting (family-wise error rate)",
        "bh": "p-values Benjamini-Hochberg-adjusted for the number of tests in each setting (false discovery rate)",
        "none": "p-values not corrected for the number of tests",
    }[method]


def discordant_counts(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> tuple[int, int]:
    """Count the examples where exactly one of two models is right.

    Args:
        correct_a: Per-example correctness of model A.
        correct_b: Per-example correctness of model B, on the same examples in the same order.

    Returns:
        (b, c): A right and B wrong; A wrong and B right.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"paired outcomes must have the same shape, got {a.shape} and {bb.shape}")
    return int(np.sum(a & ~bb)), int(np.sum(~a & bb))


def seed_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over seeds.

    Args:
        values: One value per seed (NaNs dropped).
        confidence: Confidence level.

    Returns:
        (low, high); (nan, nan) with fewer than two finite values.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * sem
    return mean - half, mean + half


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Which points are on the Pareto front when every column is to be maximised.

    A point is on the front when no other point is at least as good in every column and
    strictly better in one. Rows with a NaN are never on the front.

    Args:
        points: Array of shape (n, k).

    Returns:
        Bool array of shape (n,).
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"points must be 2-D (n, k), got shape {p.shape}")
    finite = np.all(np.isfinite(p), axis=1)
    on_front = finite.copy()
    for i in np.flatnonzero(finite):
        others = p[finite]
        dominated = np.any(np.all(others >= p[i], axis=1) & np.any(others > p[i], axis=1))
        on_front[i] = not dominated
    return on_front
