"""Statistics used by the report: Wilson interval, McNemar's exact test, seed intervals, Pareto fronts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.stats import discordant_counts, mcnemar_exact, pareto_mask, seed_interval, wilson_interval


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
