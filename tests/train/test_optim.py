"""LR schedules are pure functions of the step, including Campfire's hold and rewind modes."""

from __future__ import annotations

import math

import pytest
import torch

from robustsparse.config import TrainConfig
from robustsparse.errors import ConfigError
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


def test_hold_with_warmup_holds_the_post_warmup_value_and_never_replays_the_warmup():
    cfg = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=2)
    hold = factors(cfg, lr_mode="hold", prune_start_epoch=0, prune_end_epoch=5)
    standard = factors(cfg)
    assert hold[:20] == standard[:20]  # the warm-up runs as usual
    assert hold[20:51] == [1.0] * 31  # then the post-warm-up value is held until the masks freeze
    after = hold[20:]
    assert all(a >= b for a, b in zip(after, after[1:]))  # no second warm-up after the freeze
    assert hold[-1] < 0.05


def test_rewind_replays_the_warmup_after_the_freeze():
    cfg = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=2)
    f = factors(cfg, lr_mode="rewind", prune_start_epoch=0, prune_end_epoch=5)
    assert f[:50] == factors(cfg)[:50]
    assert f[50] < 0.1 and f[50] < f[55] < f[60]


def _experiment(train: dict, sparsity: dict):
    from robustsparse.config import config_from_dict

    base = {"method": "campfire", "granularity": "kernel", "target_sparsity": 0.7}
    return config_from_dict({"name": "t", "train": train, "sparsity": {**base, **sparsity}})


IMAGENET_STEP = {"epochs": 90, "lr_schedule": "multistep", "milestones": [30, 60, 80]}


@pytest.mark.parametrize("mode", ["hold", "rewind"])
def test_hold_and_rewind_without_a_freeze_before_the_last_epoch_are_refused(mode):
    with pytest.raises(ConfigError, match=r"sparsity.lr_mode = '\w+'.*end_epoch"):
        _experiment({"epochs": 10}, {"start_epoch": 0, "end_epoch": 10, "lr_mode": mode})
    with pytest.raises(ConfigError, match=r"sparsity.lr_mode = '\w+'.*start_epoch"):
        _experiment({"epochs": 10}, {"schedule": "one_shot", "start_epoch": 3, "end_epoch": 3, "lr_mode": mode})


def test_rewind_that_gives_the_hold_curve_is_refused():
    # The shipped ImageNet setting: pruning from epoch 0, a step schedule flat until the freeze at 30.
    with pytest.raises(ConfigError, match="sparsity.lr_mode = 'rewind' gives the same learning-rate curve as 'hold'"):
        _experiment(IMAGENET_STEP, {"start_epoch": 0, "end_epoch": 30, "lr_mode": "rewind"})
    with pytest.raises(ConfigError, match="same learning-rate curve as 'standard'"):
        _experiment({"epochs": 10, "lr_schedule": "constant"}, {"end_epoch": 5, "lr_mode": "hold"})


@pytest.mark.parametrize(
    ("train", "sparsity"),
    [
        (IMAGENET_STEP, {"start_epoch": 0, "end_epoch": 30, "lr_mode": "hold"}),
        ({**IMAGENET_STEP, "warmup_epochs": 5}, {"start_epoch": 0, "end_epoch": 30, "lr_mode": "rewind"}),
        (IMAGENET_STEP, {"start_epoch": 5, "end_epoch": 30, "lr_mode": "rewind"}),
        ({"epochs": 30, "lr_schedule": "cosine"}, {"start_epoch": 0, "end_epoch": 10, "lr_mode": "rewind"}),
    ],
)
def test_lr_modes_with_a_curve_of_their_own_are_accepted(train, sparsity):
    cfg = _experiment(train, sparsity)
    entry = cfg.sparsity[0]
    kw = {"prune_start_epoch": entry.start_epoch, "prune_end_epoch": entry.end_epoch}
    curves = {m: factors(cfg.train, lr_mode=m, **kw) for m in ("standard", "hold", "rewind")}
    simpler = ("standard", "hold")[: ("hold", "rewind").index(entry.lr_mode) + 1]
    assert all(curves[entry.lr_mode] != curves[m] for m in simpler)
