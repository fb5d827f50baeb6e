"""fig_accuracy_vs_norm: robust accuracy at a norm threshold from per-example minimum-norm outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.errors import NothingToPlot
from reports.figures import accuracy_vs_norm_caption, fig_accuracy_vs_norm


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    results = pd.DataFrame(
        {"model_id": ["m", "m"], "key": ["clean", "cw"], "attack": ["clean", "cw"], "norm": ["none", "L2"]}
    ).assign(eps_kind=["clean", "minimum_norm"])
    # 4 examples: example 3 is wrong on clean input; the attack needs 0.1, 0.5 and 1.0 on the others.
    outcomes = pd.DataFrame(
        {
            "model_id": "m",
            "key": ["clean"] * 4 + ["cw"] * 4,
            "example": [0, 1, 2, 3] * 2,
            "correct": [1, 1, 1, 0, 0, 0, 0, 0],
            "perturbation_norm": [np.nan] * 4 + [0.1, 0.5, 1.0, np.nan],
        }
    )
    return results, outcomes


def test_curve_counts_clean_correct_examples_not_fooled_within_the_threshold() -> None:
    fig = fig_accuracy_vs_norm(*_tables())
    (line,) = fig.axes[0].get_lines()
    t, acc = line.get_xdata(), line.get_ydata()
    at = lambda x: acc[np.searchsorted(t, x)]  # noqa: E731 - first grid point >= x
    assert acc[0] == pytest.approx(75.0)  # 3 of 4 clean-correct, none fooled at 0
    assert at(0.3) == pytest.approx(50.0) and at(0.75) == pytest.approx(25.0) and acc[-1] == pytest.approx(0.0)
    assert "threshold" in accuracy_vs_norm_caption()


def test_nothing_to_plot_without_a_minimum_norm_attack() -> None:
    results, outcomes = _tables()
    with pytest.raises(NothingToPlot, match="minimum-norm"):
        fig_accuracy_vs_norm(results.assign(eps_kind="bounded"), outcomes)
