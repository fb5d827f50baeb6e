"""Campfire's learning-rate configurations around the pruning window: pure functions of time.

Campfire compares learning-rate configurations (methods.md 1.5: the standard schedule, and
variants that keep the rate high while pruning or train on after the masks freeze; the paper's
exact variants are unverified). Each is a multiplier of the base LR at a (fractional) epoch:

- `standard`: the schedule ignores pruning.
- `hold`: the schedule runs (warm-up included) until pruning starts or the warm-up ends,
  whichever is later (`h = max(start_epoch, warmup_epochs)`); the rate is then held at that
  value until the masks freeze at `end_epoch`, and the rest of the schedule from `h` on runs,
  compressed, in the epochs after the freeze. The warm-up never runs twice.
- `rewind`: the schedule runs unchanged while pruning; when the masks freeze it restarts from
  its beginning (warm-up included) and runs in full, stretched over the remaining epochs.

These functions live beside the sparsity settings, not in the trainer, because an experiment
file is checked against them when it is loaded (`lr_mode_problem`): a mode that would silently
be another one (no freeze before the last epoch) or that draws exactly the curve of a simpler
mode (e.g. `rewind` = `hold` when pruning starts at epoch 0 with no warm-up and the schedule is
flat until the freeze, as in the step recipe of ImageNet ResNet-50) is refused before anything
is trained, so a grid never holds two identical models under different names.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

from robustsparse.errors import ConfigError
from robustsparse.sparsity.settings import SparsityConfig

__all__ = [
    "LRMode",
    "LR_MODES",
    "ScheduleSettings",
    "base_lr_factor",
    "lr_factor_at",
    "lr_mode_problem",
    "check_lr_mode",
]

LRMode = Literal["standard", "hold", "rewind"]
# Simplest first: a mode whose curve equals an earlier one's is refused in favour of that one.
LR_MODES: tuple[str, ...] = ("standard", "hold", "rewind")
# Curves are compared at this many points per epoch (every boundary is a whole epoch).
_POINTS_PER_EPOCH = 64
# The warm-up's first step: never exactly 0, so the first step moves the weights.
_WARMUP_FLOOR = 1e-3


class ScheduleSettings(Protocol):
    """The training settings the LR schedule reads (`config.TrainConfig` has them)."""

    @property
    def epochs(self) -> int: ...

    @property
    def lr_schedule(self) -> str: ...

    @property
    def milestones(self) -> tuple[int, ...]: ...

    @property
    def gamma(self) -> float: ...

    @property
    def warmup_epochs(self) -> int: ...


def base_lr_factor(epoch_pos: float, cfg: ScheduleSettings, total_epochs: float | None = None) -> float:
    """The plain schedule's LR multiplier at a (fractional) epoch position.

    Args:
        epoch_pos: epochs elapsed, fractional (step / steps_per_epoch).
        cfg: training settings (schedule kind, warm-up, milestones, gamma).
        total_epochs: length the schedule is stretched over (default `cfg.epochs`).
    """
    total = float(total_epochs if total_epochs is not None else cfg.epochs)
    warmup = min(float(cfg.warmup_epochs), total)
    if warmup > 0 and epoch_pos < warmup:
        return max(epoch_pos / warmup, _WARMUP_FLOOR)  # linear warm-up
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "multistep":
        scale = total / cfg.epochs
        passed = sum(1 for m in cfg.milestones if epoch_pos >= m * scale)
        return cfg.gamma**passed
    span = max(total - warmup, 1e-12)
    progress = min(max((epoch_pos - warmup) / span, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor_at(
    epoch_pos: float,
    cfg: ScheduleSettings,
    *,
    lr_mode: LRMode = "standard",
    prune_start_epoch: int = 0,
    prune_end_epoch: int = 0,
) -> float:
    """LR multiplier at a (fractional) epoch position under a Campfire LR configuration.

    Args:
        epoch_pos: epochs elapsed, fractional.
        cfg: training settings.
        lr_mode: `standard`, `hold` or `rewind` (module docstring).
        prune_start_epoch / prune_end_epoch: the pruning window (masks frozen after its end).

    Raises:
        ValueError: `hold` / `rewind` without a window that ends before the last epoch (the
            experiment loader refuses such settings first, with `lr_mode_problem`).
    """
    if lr_mode == "standard":
        return base_lr_factor(epoch_pos, cfg)
    total = float(cfg.epochs)
    start, end = float(prune_start_epoch), float(prune_end_epoch)
    if not start < end < total:
        raise ValueError(
            f"lr_mode {lr_mode!r} needs start_epoch < end_epoch < epochs, got {start:g}, {end:g}, {total:g}"
        )
    if lr_mode == "hold":
        held_from = max(start, min(float(cfg.warmup_epochs), total))
        if epoch_pos < held_from:
            return base_lr_factor(epoch_pos, cfg)
        if epoch_pos <= end:
            return base_lr_factor(held_from, cfg)
        # The epochs after the freeze run the rest of the schedule from `held_from` on.
        mapped = held_from + (epoch_pos - end) * (total - held_from) / (total - end)
        return base_lr_factor(mapped, cfg)
    if lr_mode == "rewind":
        if epoch_pos < end:
            return base_lr_factor(epoch_pos, cfg)
        return base_lr_factor(epoch_pos - end, cfg, total_epochs=total - end)
    raise ValueError(f"unknown lr_mode {lr_mode!r}; expected one of {', '.join(LR_MODES)}")


def _curve(cfg: ScheduleSettings, sparsity: SparsityConfig, mode: str) -> list[float]:
    n = cfg.epochs * _POINTS_PER_EPOCH
    kw = {"lr_mode": mode, "prune_start_epoch": sparsity.start_epoch, "prune_end_epoch": sparsity.end_epoch}
    return [lr_factor_at(i / _POINTS_PER_EPOCH, cfg, **kw) for i in range(n)]


def lr_mode_problem(cfg: ScheduleSettings, sparsity: SparsityConfig) -> str | None:
    """Why `sparsity.lr_mode` cannot be used with these training settings (None when it can).

    Refused: `hold` / `rewind` without a freeze strictly inside training (they would silently
    be `standard`); `hold` when the warm-up lasts until the freeze (nothing is held); a mode
    whose curve equals that of a simpler mode (standard < hold < rewind).
    """
    mode = sparsity.lr_mode
    if mode == "standard" or sparsity.method == "none":
        return None
    head = f"config error: sparsity.lr_mode = {mode!r}"
    start, end, epochs = sparsity.start_epoch, sparsity.end_epoch, cfg.epochs
    if end >= epochs:
        return (
            f"{head} needs the masks to freeze before the last epoch, but end_epoch = {end} and "
            f"train.epochs = {epochs} (it would be 'standard'); lower sparsity.end_epoch or use lr_mode: standard"
        )
    if end <= start:
        return (
            f"{head} needs a pruning window, but start_epoch = end_epoch = {start} (it would be 'standard'); "
            "set end_epoch > start_epoch or use lr_mode: standard"
        )
    if mode == "hold" and cfg.warmup_epochs >= end:
        return (
            f"{head} has nothing to hold: the warm-up (train.warmup_epochs = {cfg.warmup_epochs}) lasts until "
            f"the masks freeze (end_epoch = {end}); shorten the warm-up or freeze later"
        )
    mine = _curve(cfg, sparsity, mode)
    for other in LR_MODES[: LR_MODES.index(mode)]:
        if _curve(cfg, sparsity, other) == mine:
            return (
                f"{head} gives the same learning-rate curve as {other!r} with these settings "
                f"(train.lr_schedule = {cfg.lr_schedule}, train.warmup_epochs = {cfg.warmup_epochs}, "
                f"start_epoch = {start}, end_epoch = {end}): the two would train identical models; "
                f"use lr_mode: {other}, or make the modes differ (a warm-up, a later start_epoch)"
            )
    return None


def check_lr_mode(cfg: ScheduleSettings, sparsity: SparsityConfig) -> None:
    """Raise `ConfigError` with `lr_mode_problem`'s line when there is one."""
    problem = lr_mode_problem(cfg, sparsity)
    if problem is not None:
        raise ConfigError(problem)
