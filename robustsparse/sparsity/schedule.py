"""How much, when: pure functions from the training step to the cumulative sparsity target.

Time is counted in optimizer steps taken so far (`global_step`: 0 before training, 1 after
the first step), and in epochs as `global_step / steps_per_epoch`, so `start_epoch = 2` means
"after two epochs of training". Masks are recomputed only at update points: `start_step`,
then every `every_steps`, and always exactly at `end_step`, after which they are frozen. A
mask is always computed to reach the cumulative target over the whole prunable set, never by
re-applying a relative amount to what is left.

The cubic schedule is Zhu & Gupta (2017), "To prune, or not to prune", arXiv 1710.01878:
``s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3`` inside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustsparse.sparsity.settings import SparsityConfig

__all__ = [
    "cubic_sparsity",
    "linear_sparsity",
    "one_shot_sparsity",
    "schedule_sparsity",
    "UpdatePlan",
    "update_plan",
    "last_update_step",
    "target_at_step",
]


def _progress(t: float, start: float, end: float) -> float:
    """Fraction of the window elapsed at t (callers handle t < start and t >= end first)."""
    return min(1.0, max(0.0, (t - start) / (end - start)))


def cubic_sparsity(t: float, *, initial: float, final: float, start: float, end: float) -> float:
    """Zhu & Gupta's cubic ramp: fast pruning early, slow near the end.

    Args:
        t: time (steps or epochs, the same unit as start and end).
        initial: the target at and before `start`.
        final: the target at and after `end`.
        start / end: the pruning window.

    Returns:
        The cumulative target at `t`: `initial` before the window, `final` after it, exact at
        both ends and monotone in between.

    Example:
        >>> round(cubic_sparsity(5, initial=0.0, final=0.8, start=0, end=10), 6)
        0.7
    """
    if t >= end:
        return float(final)
    if t <= start:
        return float(initial)
    remaining = 1.0 - _progress(t, start, end)
    return float(final + (initial - final) * remaining**3)


def linear_sparsity(t: float, *, initial: float, final: float, start: float, end: float) -> float:
    """A straight ramp from `initial` at `start` to `final` at `end`, constant outside."""
    if t >= end:
        return float(final)
    if t <= start:
        return float(initial)
    return float(initial + (final - initial) * _progress(t, start, end))


def one_shot_sparsity(t: float, *, initial: float, final: float, start: float, end: float) -> float:
    """`initial` before `start`, `final` from `start` on (`end` only bounds the updates)."""
    del end  # the jump happens at start; updates until end only re-rank at the same target
    return float(initial if t < start else final)


_SCHEDULES = {"cubic": cubic_sparsity, "linear": linear_sparsity, "one_shot": one_shot_sparsity}


def schedule_sparsity(epoch: float, cfg: SparsityConfig) -> float:
    """The continuous schedule of `cfg` at time `epoch` (in epochs, may be fractional)."""
    fn = _SCHEDULES[cfg.schedule]
    return fn(epoch, initial=cfg.initial_sparsity, final=cfg.target_sparsity, start=cfg.start_epoch, end=cfg.end_epoch)


@dataclass(frozen=True)
class UpdatePlan:
    """When masks are recomputed, in optimizer steps.

    Attributes:
        start_step: the first update point.
        end_step: the last update point; masks are frozen once it has been applied.
        every_steps: the distance between update points inside the window.
        steps_per_epoch: to convert steps back into epochs.
    """

    start_step: int
    end_step: int
    every_steps: int
    steps_per_epoch: int


def update_plan(cfg: SparsityConfig, steps_per_epoch: int) -> UpdatePlan:
    """The update points of `cfg` for an epoch of `steps_per_epoch` optimizer steps."""
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    every = cfg.update_every * (steps_per_epoch if cfg.update_unit == "epochs" else 1)
    return UpdatePlan(cfg.start_epoch * steps_per_epoch, cfg.end_epoch * steps_per_epoch, every, steps_per_epoch)


def last_update_step(global_step: int, plan: UpdatePlan) -> int | None:
    """The latest update point at or before `global_step` (None before the first one)."""
    if global_step < plan.start_step:
        return None
    if global_step >= plan.end_step:
        return plan.end_step
    return plan.start_step + ((global_step - plan.start_step) // plan.every_steps) * plan.every_steps


def target_at_step(global_step: int, cfg: SparsityConfig, steps_per_epoch: int) -> float:
    """The target in force after `global_step` steps: the schedule at the latest update point.

    Piecewise constant between update points; `cfg.initial_sparsity` is only reached at the
    first update point, so before it the target is 0 (the model is still as it came).
    """
    plan = update_plan(cfg, steps_per_epoch)
    point = last_update_step(global_step, plan)
    if point is None:
        return 0.0
    return schedule_sparsity(point / steps_per_epoch, cfg)
