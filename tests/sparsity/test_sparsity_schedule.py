"""Schedules: exact endpoints, monotone, constant outside the window, piecewise constant between updates."""

from __future__ import annotations

import numpy as np
import pytest

from robustsparse.sparsity import SparsityConfig, cubic_sparsity, linear_sparsity, one_shot_sparsity, target_at_step
from robustsparse.sparsity.schedule import last_update_step, update_plan

FNS = [cubic_sparsity, linear_sparsity, one_shot_sparsity]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize(("initial", "final", "start", "end"), [(0.0, 0.7, 2, 10), (0.2, 0.9, 0, 30), (0.0, 0.5, 5, 6)])
def test_endpoints_monotone_and_constant_outside(fn, initial: float, final: float, start: int, end: int) -> None:
    kw = {"initial": initial, "final": final, "start": start, "end": end}
    assert fn(end, **kw) == final
    assert fn(end + 7.5, **kw) == final
    assert fn(start - 1, **kw) == initial
    if fn is not one_shot_sparsity:
        assert fn(start, **kw) == initial
    ts = np.linspace(start - 3, end + 3, 997)
    values = [fn(float(t), **kw) for t in ts]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(initial <= v <= final for v in values)
    assert_pure(fn, kw, ts, values)


def assert_pure(fn, kw: dict, ts, values: list[float]) -> None:
    """Same input, same output, whatever was asked before: the points in a shuffled order, each
    right after a call far outside the window and after one with other settings, must give the
    values of the in-order pass (a function that remembers earlier calls fails)."""
    rng = np.random.default_rng(0)
    other = {**kw, "initial": 0.0, "final": 0.99, "start": 0, "end": 1}
    for i in rng.permutation(len(ts)):
        fn(float(ts[-1]) + 100.0, **kw)
        fn(0.5, **other)
        assert fn(float(ts[i]), **kw) == values[i]


def test_cubic_prunes_fast_early_and_slow_late() -> None:
    kw = {"initial": 0.0, "final": 0.8, "start": 0, "end": 10}
    mid = cubic_sparsity(5, **kw)
    assert mid == pytest.approx(0.8 - 0.8 / 8)  # s_f + (s_i - s_f)(1 - 1/2)^3
    assert cubic_sparsity(2, **kw) - cubic_sparsity(0, **kw) > cubic_sparsity(10, **kw) - cubic_sparsity(8, **kw)


@pytest.mark.parametrize(("unit", "every"), [("epochs", 1), ("epochs", 2), ("steps", 3)])
def test_target_only_changes_at_update_points_and_ends_at_final(unit: str, every: int) -> None:
    cfg = SparsityConfig(
        method="campfire",
        target_sparsity=0.8,
        initial_sparsity=0.1,
        start_epoch=1,
        end_epoch=6,
        update_every=every,
        update_unit=unit,
    )
    spe = 5
    plan = update_plan(cfg, spe)
    targets = [target_at_step(s, cfg, spe) for s in range(0, 50)]
    assert targets[: plan.start_step] == [0.0] * plan.start_step
    assert targets[plan.start_step] == pytest.approx(0.1)
    assert all(t == pytest.approx(0.8) for t in targets[plan.end_step :])
    step_size = every * (spe if unit == "epochs" else 1)
    for s in range(1, 50):
        point = last_update_step(s, plan)
        assert point is None or point <= s
        if targets[s] != targets[s - 1]:
            assert s == plan.end_step or (s - plan.start_step) % step_size == 0
    assert all(b >= a for a, b in zip(targets, targets[1:]))
