"""drop_pruning: stochastic drop away / drop back at the schedule's update points, then frozen masks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig, build_pruner, get_method, verify_structure
from robustsparse.sparsity.methods.drop_pruning import DropPruningPruner

SPE = 2  # steps per epoch
END = 4  # end_epoch: update points at steps 0, 2, 4, 6, 8


def cfg_of(granularity: str = "element", **kw) -> SparsityConfig:
    settings = {"method": "drop_pruning", "granularity": granularity, "target_sparsity": 0.7, "end_epoch": END}
    return SparsityConfig(**{**settings, **kw})


def train(
    net, cfg: SparsityConfig, *, seed: int = 0, steps: int = 12, check=None, before_update=None
) -> tuple[DropPruningPruner, list]:
    """SGD with momentum on random data through the pruner, the trainer's calls in the trainer's
    order; returns the pruner and the masks after every step (index = step). `check(step, net,
    pruner, optimizer)` runs after every step, `before_update(step, net)` between the optimizer
    step and the pruner's."""
    pruner = build_pruner(net, cfg, SPE, seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pruner.step(0, optimizer)
    history = [{k: v.clone() for k, v in pruner.masks.items()}]
    g = torch.Generator().manual_seed(1)  # the data does not depend on the pruner's seed
    for step in range(1, steps + 1):
        x, y = torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        if before_update is not None:
            before_update(step, net)
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)
        history.append({k: v.clone() for k, v in pruner.masks.items()})
        if check is not None:
            check(step, net, pruner, optimizer)
    return pruner, history


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_declared_after_training_from_the_dense_parent_with_documented_defaults():
    method = get_method("drop_pruning")
    assert method.when == "after_training" and method.granularities == ("element", "row", "kernel")
    cfg = cfg_of(from_dense=False, allow_regrowth=True)
    assert cfg.from_dense is True and cfg.allow_regrowth is False  # fixed by the method
    assert (cfg.drop_pruning_away_prob, cfg.drop_pruning_back_prob) == (0.5, 0.01)
    assert cfg.drop_pruning_candidate_fraction is None and cfg.drop_pruning_revive == "zero"
    fixed_r = cfg_of(drop_pruning_candidate_fraction=0.3)
    assert fixed_r.drop_pruning_away_prob is None  # then p is the one solved per step
    plain = SparsityConfig(method="campfire", target_sparsity=0.5)
    assert plain.drop_pruning_away_prob is None and plain.drop_pruning_revive is None


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"drop_pruning_away_prob": 0.0}, "drop_pruning_away_prob"),
        ({"drop_pruning_away_prob": 1.5}, "drop_pruning_away_prob"),
        ({"drop_pruning_back_prob": -0.1}, "drop_pruning_back_prob"),
        ({"drop_pruning_back_prob": True}, "drop_pruning_back_prob"),
        ({"drop_pruning_candidate_fraction": 0.0}, "drop_pruning_candidate_fraction"),
        ({"drop_pruning_revive": "random"}, "drop_pruning_revive"),
        ({"drop_pruning_away_prob": 0.5, "drop_pruning_candidate_fraction": 0.3}, "drop_pruning_away_prob"),
        ({"method": "campfire", "drop_pruning_back_prob": 0.1}, "drop_pruning_back_prob"),
        ({"granularity": "filter"}, "granularity"),
    ],
)
def test_a_bad_setting_is_one_line_naming_key_and_value(settings, key):
    with pytest.raises(ConfigError) as info:
        cfg_of(**settings)
    message = str(info.value)
    assert "\n" not in message and f"sparsity.{key} = " in message and "expected" in message


@pytest.mark.parametrize("back, fraction", [(0.05, None), (0.2, None), (0.0, 0.4), (0.1, 0.25)])
def test_the_solved_probabilities_make_the_expected_kept_count_the_target(tiny_net, back, fraction):
    cfg = cfg_of(drop_pruning_back_prob=back, drop_pruning_candidate_fraction=fraction)
    pruner = build_pruner(tiny_net, cfg, SPE, 0)
    for kept, pruned, wanted in [(1000, 0, 800), (800, 200, 500), (300, 700, 290), (500, 500, 480)]:
        p, r = pruner._probabilities(kept, pruned, wanted)
        assert 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0
        assert kept * (1 - p * r) + back * pruned == pytest.approx(wanted)
        if fraction is None and r < 1.0:
            assert p == 0.5  # the configured p; r is what was solved
        if fraction is not None and p < 1.0:
            assert r == fraction
    # at the target already: with q = 0 nothing is dropped away; with q > 0 as many as come back
    p, r = pruner._probabilities(100, 900, 100)
    assert (p * r == 0.0) if back == 0 else (100 * p * r == pytest.approx(min(100, back * 900)))


@pytest.mark.parametrize(
    "granularity, allocation", [("element", "uniform"), ("element", "global"), ("kernel", "uniform"), ("row", "global")]
)
def test_reaches_the_target_and_freezes_at_end_epoch(tiny_net, granularity, allocation):
    pruner, history = train(tiny_net, cfg_of(granularity, allocation=allocation))
    meta = pruner.metadata()
    assert pruner.frozen and meta["frozen"] and meta["last_update_step"] == END * SPE
    # the masks reach the target; measured zeros can only add to them (a weight revived into a
    # unit that gets no gradient stays at its restart value 0)
    assert abs(meta["mask_sparsity"] - 0.7) <= 0.005 and meta["nearest_achievable_sparsity"] == meta["mask_sparsity"]
    assert pruner.achieved()["prunable"] >= meta["mask_sparsity"]
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    # frozen: the masks after the last pruning step never change again while training goes on
    assert all(same_masks(history[END * SPE], masks) for masks in history[END * SPE :])
    # and between update points the masks hold (retraining), at them they move
    assert same_masks(history[1], history[0]) and not same_masks(history[2], history[1])
    steps = meta["drop_pruning"]["steps"]
    assert [s["step"] for s in steps] == [0, 2, 4, 6, 8]
    assert sum(s["dropped_away"] for s in steps) > 0 and sum(s["dropped_back"] for s in steps) > 0
    # the last step is the deterministic correction: nothing drawn, nothing revived as the masks freeze
    assert steps[-1]["dropped_away"] == steps[-1]["dropped_back"] == 0
    last, before = history[END * SPE], history[END * SPE - 1]
    assert all(not bool((last[k] & ~before[k]).any()) for k in last)


def test_masked_weights_and_momentum_stay_zero_after_every_step(tiny_net):
    def check(step, net, pruner, optimizer):
        params = dict(net.named_parameters())
        for name, mask in pruner.masks.items():
            assert bool((params[name].detach()[~mask] == 0).all()), (step, name)
            momentum = optimizer.state[params[name]]["momentum_buffer"]
            assert bool((momentum[~mask] == 0).all()), f"momentum leaks into pruned entries of {name} at {step}"

    pruner, _ = train(tiny_net, cfg_of(drop_pruning_back_prob=0.2), check=check)
    assert any(not bool(m.all()) for m in pruner.masks.values())  # the check was not vacuous


@pytest.mark.parametrize("revive", ["zero", "previous"])
def test_drop_back_restores_pruned_weights_which_then_train(tiny_net, revive):
    name = "block_conv1.weight"
    after, before = {}, {}  # step -> the weight after the step / after its optimizer step, before the pruner

    momentum = {}

    def check(step, net, pruner, optimizer):
        param = dict(net.named_parameters())[name]
        after[step] = param.detach().clone()
        momentum[step] = optimizer.state[param]["momentum_buffer"].clone()

    def before_update(step, net):
        before[step] = dict(net.named_parameters())[name].detach().clone()

    cfg = cfg_of(drop_pruning_back_prob=0.3, drop_pruning_revive=revive)
    _pruner, history = train(tiny_net, cfg, steps=END * SPE + 2, check=check, before_update=before_update)
    # pruned at the step-2 update, kept again after the step-4 update
    revived = ~history[2][name] & history[4][name]
    assert int(revived.sum()) > 0 and bool((after[3][revived] == 0).all())  # really pruned in between
    at_revival, later = after[4][revived], after[5][revived]
    assert bool((momentum[4][revived] == 0).all())  # a clean restart: no momentum from its pruned time
    if revive == "zero":
        assert bool((at_revival == 0).all())
    else:  # the value it had when it was pruned at step 2
        assert bool((at_revival != 0).all()) and torch.equal(at_revival, before[2][revived])
    # a revived weight is trained: it has gradient and moves (mask 1, not re-zeroed)
    assert bool(history[5][name][revived].all())
    assert bool((later != at_revival).all())


def test_the_masks_depend_on_the_seed_only(tiny_net):
    def run(seed: int) -> dict:
        net = copy.deepcopy(tiny_net)
        torch.manual_seed(1234 + seed)  # the global RNG state must not matter
        return train(net, cfg_of(), seed=seed, steps=END * SPE)[0].masks

    a, b, c = run(0), run(0), run(1)
    assert same_masks(a, b)
    assert not same_masks(a, c)


def test_a_pruner_restored_mid_schedule_draws_what_the_straight_one_drew(tiny_net):
    """The draws depend on (seed, step), not on how many steps ran in this process; the values
    before pruning (for revive: previous) travel with the state."""
    cfg = cfg_of(drop_pruning_back_prob=0.3, drop_pruning_revive="previous")
    straight, _ = train(tiny_net, cfg, steps=5)
    other = copy.deepcopy(tiny_net)
    restored = build_pruner(other, cfg, SPE, 0)
    restored.load_state_dict(straight.state_dict())
    restored.apply_()
    for step in (6, 8):
        straight.step(step)
        restored.step(step)
        assert same_masks(straight.masks, restored.masks)
        assert all(torch.equal(a, b) for a, b in zip(tiny_net.state_dict().values(), other.state_dict().values()))
    assert restored.frozen and restored.metadata()["drop_pruning"] == straight.metadata()["drop_pruning"]
