"""The method registry and the `random` baseline: declarations, validation, targets, fixed masks, seeds."""

from __future__ import annotations

import copy

import pytest
import torch

from robustsparse.errors import ConfigError
from robustsparse.sparsity import (
    GRANULARITIES,
    SparsityConfig,
    build_pruner,
    get_method,
    list_methods,
    verify_structure,
)
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.sparsity.methods import WHEN_VALUES, Method, register
from robustsparse.sparsity.methods.random import RandomPruner, random_mask_seed
from robustsparse.sparsity.settings import ALL_GRANULARITIES

SPE = 3  # steps per epoch


def random_cfg(granularity: str = "kernel", **kw) -> SparsityConfig:
    return SparsityConfig(**{"method": "random", "granularity": granularity, "target_sparsity": 0.7, **kw})


def decided(model, cfg: SparsityConfig, seed: int = 0):
    """The pruner after the trainer's step-0 call (where a before-training method decides)."""
    pruner = build_pruner(model, cfg, SPE, seed)
    pruner.step(0)
    return pruner


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registry_declares_campfire_and_random():
    methods = {m.name: m for m in list_methods()}
    assert {"campfire", "random"} <= set(methods)
    for method in methods.values():
        assert method.when in WHEN_VALUES and "\n" not in method.description and method.description
        assert set(method.granularities) <= set(ALL_GRANULARITIES)  # lowrank: haloc's, not a mask
        # npn, dst, haloc and hydra train state of their own; all but hydra (and structadmm) under a
        # loss term; hydra freezes the weights meanwhile
        assert (method.extra_state is None) == (method.name not in ("npn", "dst", "haloc", "hydra"))
        assert (method.loss_term is None) == (method.name not in ("npn", "dst", "haloc", "structadmm"))
        assert (method.trains_weights is None) == (method.name != "hydra")
    assert methods["campfire"].when == "during_training" and methods["random"].when == "before_training"
    assert get_method("random") is methods["random"]


def test_an_unknown_method_is_one_line_naming_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        get_method("lottery")
    text = str(err.value)
    assert "lottery" in text and "campfire" in text and "random" in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"sparsity\.method = 'lottery'.*none, campfire, .*random"):
        SparsityConfig(method="lottery")


def test_a_taken_name_cannot_be_registered_again():
    campfire = get_method("campfire")
    for name in ("campfire", "none"):
        with pytest.raises(ValueError, match="taken"):
            register(Method(name, "x", "during_training", ("element",), campfire.build_pruner))
    with pytest.raises(ValueError, match="when"):
        Method("toy", "x", "sometimes", ("element",), campfire.build_pruner)
    with pytest.raises(ValueError, match="diagonal"):
        Method("toy", "x", "before_training", ("element", "diagonal"), campfire.build_pruner)
    with pytest.raises(ValueError, match="warmup"):
        Method("toy", "x", "before_training", ("element",), campfire.build_pruner, fixed_settings={"warmup": 1})
    with pytest.raises(ValueError, match="one non-empty line"):
        Method("toy", "two\nlines", "before_training", ("element",), campfire.build_pruner)


def test_a_granularity_the_method_does_not_support_is_refused(monkeypatch):
    from robustsparse.sparsity.methods import registry

    toy = Method("toy", "element only", "before_training", ("element",), get_method("campfire").build_pruner)
    monkeypatch.setitem(registry._METHODS, "toy", toy)
    assert SparsityConfig(method="toy", granularity="element", target_sparsity=0.5).method == "toy"
    with pytest.raises(ConfigError, match=r"sparsity\.granularity = 'kernel'.*one of element with method 'toy'"):
        SparsityConfig(method="toy", granularity="kernel", target_sparsity=0.5)


def test_random_decides_its_own_schedule_campfire_keeps_the_given_one():
    cfg = random_cfg(schedule="cubic", start_epoch=2, end_epoch=9, allow_regrowth=True)
    assert (cfg.schedule, cfg.start_epoch, cfg.end_epoch, cfg.allow_regrowth) == ("one_shot", 0, 0, False)
    camp = SparsityConfig(method="campfire", target_sparsity=0.7, start_epoch=2, end_epoch=9)
    assert (camp.schedule, camp.start_epoch, camp.end_epoch) == ("cubic", 2, 9)


@pytest.mark.parametrize(
    "granularity, allocation",
    [(g, "uniform") for g in GRANULARITIES] + [("element", "global"), ("kernel", "global"), ("filter", "global")],
)
def test_random_reaches_the_target_or_the_nearest_achievable_value(tiny_net, granularity, allocation):
    cfg = random_cfg(granularity, allocation=allocation)
    pruner = decided(tiny_net, cfg)
    meta = pruner.metadata()
    achieved = pruner.achieved()["prunable"]
    assert pruner.frozen and isinstance(pruner, RandomPruner)
    assert abs(achieved - 0.7) <= 0.005 or abs(achieved - meta["nearest_achievable_sparsity"]) <= 0.005
    assert meta["method"] == "random" and meta["mask_seed"] == random_mask_seed(0)
    assert verify_structure(tiny_net, pruner.masks, meta) == []


@pytest.mark.parametrize("granularity", ["element", "kernel", "window", "filter", "n:m"])
def test_random_allocates_like_campfire_but_keeps_other_groups(tiny_net, granularity):
    """Uniform allocation: every layer loses exactly what Campfire's one-shot pruning takes there."""
    rand = decided(copy.deepcopy(tiny_net), random_cfg(granularity))
    camp_cfg = SparsityConfig(
        method="campfire", granularity=granularity, target_sparsity=0.7, schedule="one_shot", end_epoch=0
    )
    camp = decided(copy.deepcopy(tiny_net), camp_cfg)
    assert rand.masks.keys() == camp.masks.keys()
    for name in rand.masks:
        assert mask_sparsity({name: rand.masks[name]}, [name]) == mask_sparsity({name: camp.masks[name]}, [name])
    assert not same_masks(rand.masks, camp.masks)  # not the magnitude ranking


def test_random_masks_never_change_during_training(tiny_net, train_with_fixed_masks):
    pruner = decided(tiny_net, random_cfg("kernel"))
    train_with_fixed_masks(tiny_net, pruner, steps=4 * SPE, seed=1)


def test_same_seed_same_masks_other_seed_other_masks(tiny_net):
    cfg = random_cfg("element")
    a = decided(copy.deepcopy(tiny_net), cfg, seed=0).masks
    torch.manual_seed(999)  # the global RNG plays no part
    b = decided(copy.deepcopy(tiny_net), cfg, seed=0).masks
    c = decided(copy.deepcopy(tiny_net), cfg, seed=1).masks
    assert same_masks(a, b) and not same_masks(a, c)
    # the masks follow the seed alone, not the weights
    other_weights = copy.deepcopy(tiny_net)
    with torch.no_grad():
        for p in other_weights.parameters():
            p.mul_(-3.0).add_(0.1)
    assert same_masks(a, decided(other_weights, cfg, seed=0).masks)


def test_random_pruner_state_round_trips(tiny_net):
    pruner = decided(copy.deepcopy(tiny_net), random_cfg("window"))
    fresh = build_pruner(copy.deepcopy(tiny_net), random_cfg("window"), SPE, 0)
    fresh.load_state_dict(pruner.state_dict())
    assert fresh.frozen and same_masks(fresh.masks, pruner.masks)


def test_extra_state_and_a_loss_term_are_handed_to_the_training_loop(tiny_net, monkeypatch):
    from robustsparse.sparsity.methods import extra_training, registry

    build = get_method("campfire").build_pruner
    extra = torch.nn.Parameter(torch.ones(2))
    toy = Method(
        "toy",
        "with a loss term",
        "during_training",
        ("element",),
        build,
        extra_state=lambda pruner: torch.optim.SGD([extra], lr=0.1),
        loss_term=lambda pruner: extra.square().sum(),
    )
    monkeypatch.setitem(registry._METHODS, "toy", toy)
    cfg = SparsityConfig(method="toy", granularity="element", target_sparsity=0.5)
    pruner = build_pruner(tiny_net, cfg, SPE, 0)  # no longer refused
    optimizer, loss = extra_training(cfg, pruner)
    assert optimizer.param_groups[0]["params"][0] is extra and float(loss().detach()) == 2.0
    assert extra_training(random_cfg(), decided(copy.deepcopy(tiny_net), random_cfg())) == (None, None)
