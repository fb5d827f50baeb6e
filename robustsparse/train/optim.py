"""Optimizers and learning-rate schedules, including Campfire's LR configurations.

The schedule is a pure function of the optimizer step (`lr_factor`), wrapped in a
`LambdaLR` stepped once per batch, so it can be plotted or tested as a list of numbers and
resumes exactly from a saved step.

Campfire compares learning-rate configurations around its pruning window
[start_epoch, end_epoch] (methods.md 1.5; the paper's exact variants are unverified):
- `standard`: the schedule ignores pruning;
- `hold`: the LR is held at its value at the start of pruning until the masks freeze, and the
  rest of the schedule then runs in the remaining epochs;
- `rewind`: when the masks freeze the schedule restarts from its beginning (warm-up included)
  and runs in full over the remaining epochs.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from robustsparse.config.schema import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "base_lr_factor"]

LRMode = Literal["standard", "hold", "rewind"]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW with weight decay on weights only, not on BN/biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def base_lr_factor(epoch_pos: float, cfg: TrainConfig, total_epochs: float | None = None) -> float:
    """The plain schedule's LR multiplier at a (fractional) epoch position.

    Args:
        epoch_pos: epochs elapsed, fractional (step / steps_per_epoch).
        cfg: training settings (schedule kind, warm-up, milestones, gamma).
        total_epochs: length the schedule is stretched over (default `cfg.epochs`).
    """
    total = float(total_epochs if total_epochs is not None else cfg.epochs)
    warmup = min(float(cfg.warmup_epochs), total)
    if warmup > 0 and epoch_pos < warmup:
        return max(epoch_pos / warmup, 1e-3)  # linear warm-up; never exactly 0 so step 0 moves
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "multistep":
        scale = total / cfg.epochs
        passed = sum(1 for m in cfg.milestones if epoch_pos >= m * scale)
        return cfg.gamma**passed
    span = max(total - warmup, 1e-12)
    progress = min(max((epoch_pos - warmup) / span, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(
    step: int,
    steps_per_epoch: int,
    cfg: TrainConfig,
    *,
    lr_mode: LRMode = "standard",
    prune_start_epoch: int = 0,
    prune_end_epoch: int = 0,
) -> float:
    """LR multiplier at optimizer step `step` (pure function).

    Args:
        step: optimizer steps taken so far.
        steps_per_epoch: batches per epoch.
        cfg: training settings.
        lr_mode: Campfire LR configuration (`standard`, `hold`, `rewind`).
        prune_start_epoch / prune_end_epoch: the pruning window (masks frozen after its end).
    """
    pos = step / steps_per_epoch
    total = float(cfg.epochs)
    start, end = float(prune_start_epoch), float(prune_end_epoch)
    if lr_mode == "standard" or end <= start or end >= total:
        return base_lr_factor(pos, cfg)
    if lr_mode == "hold":
        if pos < start:
            return base_lr_factor(pos, cfg)
        if pos <= end:
            return base_lr_factor(start, cfg)
        # Map the epochs after the freeze onto the rest of the schedule from `start` on.
        mapped = start + (pos - end) * (total - start) / (total - end)
        return base_lr_factor(mapped, cfg)
    # rewind
    if pos < end:
        return base_lr_factor(pos, cfg)
    return base_lr_factor(pos - end, cfg, total_epochs=total - end)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    *,
    lr_mode: LRMode = "standard",
    prune_start_epoch: int = 0,
    prune_end_epoch: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step `LambdaLR` following `lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step,
            steps_per_epoch,
            cfg,
            lr_mode=lr_mode,
            prune_start_epoch=prune_start_epoch,
            prune_end_epoch=prune_end_epoch,
        ),
    )
