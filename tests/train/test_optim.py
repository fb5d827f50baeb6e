"""LR schedules are pure functions of the step, including Campfire's hold and rewind modes."""

from __future__ import annotations

import math

import pytest
import torch

from robustsparse.config import TrainConfig
from robustsparse.train.optim import build_optimizer, build_scheduler, lr_factor


def factors(cfg, steps_per_epoch=10, **kw):
    return [lr_factor(s, steps_per_epoch, cfg, **kw) for s in range(cfg.epochs * steps_per_epoch)]


def test_cosine_starts_at_one_and_decreases_to_near_zero():
    f = factors(TrainConfig(epochs=10, lr_schedule="cosine"))
    assert f[0] == 1.0
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))
    assert f[-1] < 0.01


def test_multistep_drops_by_gamma_at_milestones():
    cfg = TrainConfig(epochs=10, lr_schedule="multistep", milestones=(3, 6), gamma=0.1)
    f = factors(cfg)
    assert f[29] == 1.0 and math.isclose(f[30], 0.1) and math.isclose(f[60], 0.01)


def test_warmup_is_linear_then_schedule():
    cfg = TrainConfig(epochs=10, lr_schedule="constant", warmup_epochs=2)
    f = factors(cfg)
    assert 0 < f[0] < f[5] < f[19] < 1.0
    assert math.isclose(f[10], 0.5)
    assert f[20] == 1.0


def test_hold_keeps_lr_constant_while_pruning():
    cfg = TrainConfig(epochs=10, lr_schedule="cosine")
    f = factors(cfg, lr_mode="hold", prune_start_epoch=2, prune_end_epoch=6)
    held = f[20:61]
    assert max(held) == min(held) == lr_factor(20, 10, cfg)
    assert f[-1] < held[0]


def test_rewind_restarts_the_schedule_when_masks_freeze():
    cfg = TrainConfig(epochs=10, lr_schedule="cosine")
    f = factors(cfg, lr_mode="rewind", prune_start_epoch=0, prune_end_epoch=5)
    assert f[49] < 0.6 and f[50] == 1.0  # cosine at 4.9 of 10 epochs is ~0.52, then back to the top
    assert f[-1] < 0.05


def test_scheduler_follows_lr_factor():
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(epochs=3, lr=0.2, lr_schedule="cosine")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.2 * lr_factor(s, 4, cfg) for s in range(12)])


def test_weight_decay_only_on_weights():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
