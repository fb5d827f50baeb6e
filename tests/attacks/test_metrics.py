"""Metrics against hand-computed values and an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from attacks import (
    attack_success_rate,
    ensemble_correct,
    mcnemar_test,
    perturbation_norms,
    robust_accuracy,
    success_rate_interval,
    wilson_interval,
)

Z95 = 1.959963984540054


def test_wilson_hand_computed() -> None:
    # 5 of 10: centre 0.5, half-width z * sqrt(0.025 + z^2/400) / (1 + z^2/10).
    half = Z95 * math.sqrt(0.025 + Z95**2 / 400) / (1 + Z95**2 / 10)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # 0 of 10: the lower end is 0 and the upper end z^2 / (n + z^2).
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z95**2 / (10 + Z95**2)), abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z95**2), 1.0), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.parametrize(("k", "n"), [(1, 7), (37, 50), (950, 1000), (3, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-10)


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.5)


def test_mcnemar_hand_computed() -> None:
    a = np.array([1, 1, 1, 1, 0, 0, 1, 1], bool)
    b = np.array([0, 0, 0, 1, 0, 0, 1, 1], bool)
    test = mcnemar_test(a, b)
    assert (test.only_a, test.only_b) == (3, 0)
    assert test.p_value == pytest.approx(2 * 0.5**3)  # two-sided exact binomial, 3 of 3 discordant
    assert test.accuracy_a == pytest.approx(6 / 8) and test.accuracy_b == pytest.approx(3 / 8)
    assert mcnemar_test(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar_test(a, b[:-1])


def test_denominators() -> None:
    clean = np.array([1, 1, 1, 0, 0], bool)
    adv = np.array([1, 0, 0, 1, 0], bool)  # example 3: wrong on clean, "correct" under attack
    assert robust_accuracy(clean, adv) == pytest.approx(1 / 5)  # over all N, clean mistakes not robust
    assert attack_success_rate(clean, adv) == pytest.approx(2 / 3)  # over the 3 clean-correct
    assert math.isnan(attack_success_rate(np.zeros(3, bool), np.zeros(3, bool)))


def test_ensemble_is_the_per_example_worst_case() -> None:
    a = np.array([1, 1, 0, 1], bool)
    b = np.array([1, 0, 1, 1], bool)
    c = np.array([1, 1, 1, 0], bool)
    assert ensemble_correct(a, b, c).tolist() == [True, False, False, False]
    with pytest.raises(ValueError):
        ensemble_correct(a, b[:2])


def test_perturbation_norms_hand_computed() -> None:
    x = torch.zeros(2, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0], adv[0, 0, 1, 1] = 0.3, -0.4
    linf, l2 = perturbation_norms(x, adv)
    assert linf.tolist() == pytest.approx([0.4, 0.0])
    assert l2.tolist() == pytest.approx([0.5, 0.0])


def test_success_rate_interval_is_over_the_clean_correct_examples() -> None:
    clean = np.array([1, 1, 1, 1, 0, 0], bool)
    adv = np.array([0, 0, 1, 1, 0, 0], bool)  # 2 of the 4 clean-correct broken
    assert success_rate_interval(clean, adv) == pytest.approx(wilson_interval(2, 4))
    assert all(math.isnan(v) for v in success_rate_interval(np.zeros(3, bool), np.zeros(3, bool)))
