"""Statistics used by the report: Wilson interval, McNemar's exact test, seed intervals, Pareto fronts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reports.stats import (
    adjust_p_values,
    correction_words,
    discordant_counts,
    mcnemar_exact,
    paired_difference_interval,
    pareto_mask,
    seed_interval,
    wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 10), (7, 10), (10, 10), (153, 300)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)
    assert 0.0 <= low <= p <= high <= 1.0


def test_wilson_of_nothing_is_nan() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mcnemar_exact_values_and_symmetry() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 10) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(3, 12) == pytest.approx(mcnemar_exact(12, 3))
    assert mcnemar_exact(0, 60) < 1e-15 < mcnemar_exact(10, 14)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_discordant_counts() -> None:
    a = [1, 1, 0, 0, 1]
    b = [1, 0, 1, 0, 0]
    assert discordant_counts(a, b) == (2, 1)
    with pytest.raises(ValueError):
        discordant_counts([1, 0], [1])


def test_seed_interval_contains_the_mean_and_widens_with_spread() -> None:
    narrow = seed_interval([0.50, 0.51, 0.52])
    wide = seed_interval([0.40, 0.51, 0.62])
    assert narrow[0] < 0.51 < narrow[1]
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert all(math.isnan(v) for v in seed_interval([0.5]))
    assert seed_interval([0.3, 0.3]) == (0.3, 0.3)


def test_pareto_mask() -> None:
    pts = np.array([[0.9, 0.2], [0.8, 0.5], [0.7, 0.4], [0.95, 0.1], [0.9, 0.2], [np.nan, 0.9]])
    # [0.7, 0.4] is dominated by [0.8, 0.5]; equal points both stay; NaN rows never count
    assert pareto_mask(pts).tolist() == [True, True, False, True, True, False]


def test_holm_by_hand_keeps_untested_cells() -> None:
    p = [0.01, 0.04, np.nan, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, np.nan, 0.06, 0.02])
    np.testing.assert_allclose(adjust_p_values([0.5, 0.9], "holm"), [1.0, 1.0])  # capped at 1


def test_benjamini_hochberg_by_hand_and_none() -> None:
    p = [0.01, 0.04, np.nan, 0.03, 0.005]
    # p * m / rank = 0.02, 0.02, 0.04, 0.04 from the smallest, minimum from the largest down
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.02, 0.04, np.nan, 0.04, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "none"), p)
    with pytest.raises(ValueError, match="holm, bh, none"):
        adjust_p_values(p, "bonferroni")


def test_correction_words_name_the_method() -> None:
    assert "Holm" in correction_words("holm") and "Benjamini-Hochberg" in correction_words("bh")
    assert "not corrected" in correction_words("none")


def test_paired_difference_interval_is_exact_and_covers_the_estimate() -> None:
    assert paired_difference_interval(0, 0, 100) == (0.0, 0.0)
    assert all(math.isnan(v) for v in paired_difference_interval(0, 0, 0))
    low, high = paired_difference_interval(3, 12, 200)  # B minus A = 9 / 200
    assert low < 9 / 200 < high
    ci = stats.binomtest(12, 15).proportion_ci(method="exact")
    assert (low, high) == pytest.approx((15 / 200 * (2 * ci.low - 1), 15 / 200 * (2 * ci.high - 1)))
    # swapping the models mirrors the interval
    assert paired_difference_interval(12, 3, 200) == pytest.approx((-high, -low))
    # all discordant pairs one way: the upper end is the largest possible difference
    assert paired_difference_interval(0, 10, 100)[1] == pytest.approx(0.1)


def test_paired_interval_excludes_zero_when_mcnemar_rejects_clearly() -> None:
    assert paired_difference_interval(2, 20, 300)[0] > 0 and mcnemar_exact(2, 20) < 0.001
    low, high = paired_difference_interval(8, 11, 300)
    assert low < 0 < high and mcnemar_exact(8, 11) > 0.05
