"""Optimizers and learning-rate schedules, including Campfire's LR configurations.

The schedule is a pure function of the optimizer step (`lr_factor`), wrapped in a
`LambdaLR` stepped once per batch, so it can be plotted or tested as a list of numbers and
resumes exactly from a saved step. The curves themselves, and the rules that refuse an LR
configuration that would be another one, are `robustsparse.sparsity.lr_modes` (the experiment
loader checks them before anything is trained).
"""

from __future__ import annotations

import torch
from torch import nn

from robustsparse.config.schema import TrainConfig
from robustsparse.sparsity.lr_modes import LRMode, base_lr_factor, check_lr_mode, lr_factor_at
from robustsparse.sparsity.settings import SparsityConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "base_lr_factor"]


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


def lr_factor(
    step: int,
    steps_per_epoch: int,
    cfg: TrainConfig,
    *,
    lr_mode: LRMode = "standard",
    prune_start_epoch: int = 0,
    prune_end_epoch: int = 0,
) -> float:
    """LR multiplier at optimizer step `step` (pure function; see `sparsity.lr_modes`).

    Args:
        step: optimizer steps taken so far.
        steps_per_epoch: batches per epoch.
        cfg: training settings.
        lr_mode: Campfire LR configuration (`standard`, `hold`, `rewind`).
        prune_start_epoch / prune_end_epoch: the pruning window (masks frozen after its end).
    """
    return lr_factor_at(
        step / steps_per_epoch,
        cfg,
        lr_mode=lr_mode,
        prune_start_epoch=prune_start_epoch,
        prune_end_epoch=prune_end_epoch,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    *,
    sparsity: SparsityConfig | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step `LambdaLR` following `lr_factor` under `sparsity.lr_mode` (standard when dense).

    Raises:
        ConfigError: the LR configuration would silently be another one (`check_lr_mode`).
    """
    mode, start, end = "standard", 0, 0
    if sparsity is not None and sparsity.method != "none":
        check_lr_mode(cfg, sparsity)
        mode, start, end = sparsity.lr_mode, sparsity.start_epoch, sparsity.end_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, steps_per_epoch, cfg, lr_mode=mode, prune_start_epoch=start, prune_end_epoch=end),
    )
