"""dnr: momentum-driven layer budgets, prune by magnitude, regrow by momentum, frozen at end_epoch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig, verify_structure
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.sparsity.methods import build_pruner
from robustsparse.sparsity.methods.dnr import apportion, prune_rate_at
from robustsparse.sparsity.schedule import UpdatePlan

from .conftest import TinyNet, randomize_bn_

SPE = 5  # optimizer steps per epoch: with end_epoch 4, rewiring at steps 5, 10, 15 and the freeze at 20
TARGET = 0.7


def dnr_cfg(granularity: str = "element", **settings) -> SparsityConfig:
    return SparsityConfig(method="dnr", granularity=granularity, target_sparsity=TARGET, end_epoch=4, **settings)


def fresh_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return randomize_bn_(TinyNet())


def sgd(net: torch.nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(8, 3, 8, 8, generator=generator), torch.randint(0, 10, (8,), generator=generator)


def train_steps(net, pruner, optimizer, steps: range, generator: torch.Generator, after_step=None) -> None:
    """The trainer's loop: optimizer step, then `pruner.step` and `pruner.apply_`."""
    for step in steps:
        x, y = batch(generator)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        before = {n: m.clone() for n, m in pruner.masks.items()}
        values = {n: p.detach().clone() for n, p in net.named_parameters()}
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)
        if after_step is not None:
            after_step(step, before, values)


def weight_names(pruner) -> list[str]:
    return [n for n, m in pruner.masks.items() if m.dim() > 1]


def kept(pruner) -> int:
    return sum(int(pruner.masks[n].sum()) for n in weight_names(pruner))


def buffer(optimizer, param) -> torch.Tensor:
    return optimizer.state[param]["momentum_buffer"]


# ---------------------------------------------------------------------------- settings


def test_defaults_are_filled_in_and_the_fixed_settings_win():
    cfg = SparsityConfig(
        method="dnr", target_sparsity=0.9, schedule="cubic", start_epoch=2, end_epoch=5, from_dense=True
    )
    assert (cfg.dnr_prune_rate, cfg.dnr_anneal) == (0.5, "cosine")
    assert (cfg.from_dense, cfg.schedule, cfg.start_epoch, cfg.end_epoch) == (False, "one_shot", 0, 5)
    assert cfg.allocation == "uniform" and cfg.allow_regrowth is False
    other = SparsityConfig(method="campfire", target_sparsity=0.5)
    assert (other.dnr_prune_rate, other.dnr_anneal) == (None, None)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        (
            {"dnr_prune_rate": 0.0},
            "sparsity.dnr_prune_rate = 0.0 is not allowed; expected null or a fraction in (0, 1)",
        ),
        ({"dnr_prune_rate": 1.0}, "sparsity.dnr_prune_rate = 1.0 is not allowed"),
        ({"dnr_prune_rate": True}, "sparsity.dnr_prune_rate = True is not allowed"),
        ({"dnr_prune_rate": float("nan")}, "sparsity.dnr_prune_rate = nan is not allowed"),
        ({"dnr_anneal": "step"}, "sparsity.dnr_anneal = 'step' is not allowed; expected null or one of cosine"),
        ({"granularity": "kernel"}, "sparsity.granularity = 'kernel' is not allowed; expected one of element, channel"),
        ({"method": "campfire", "dnr_prune_rate": 0.3}, "expected null unless method is 'dnr'"),
    ],
)
def test_bad_settings_are_one_line_config_errors(settings, fragment):
    fields = {"method": "dnr", "granularity": "element", "target_sparsity": 0.5, **settings}
    with pytest.raises(ConfigError) as err:
        SparsityConfig(**fields)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_prune_rate_is_annealed_over_the_window():
    plan = UpdatePlan(start_step=0, end_step=100, every_steps=10, steps_per_epoch=10)
    assert prune_rate_at(0, plan, 0.5, "cosine") == pytest.approx(0.5)
    assert prune_rate_at(50, plan, 0.5, "cosine") == pytest.approx(0.25)
    assert prune_rate_at(100, plan, 0.5, "cosine") == pytest.approx(0.0, abs=1e-12)
    cosine = [prune_rate_at(t, plan, 0.5, "cosine") for t in range(0, 101, 10)]
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert prune_rate_at(25, plan, 0.4, "linear") == pytest.approx(0.3)
    assert prune_rate_at(100, plan, 0.4, "none") == pytest.approx(0.4)


# ---------------------------------------------------------------------------- apportion


def test_apportion_follows_the_shares_within_the_caps():
    assert apportion(10, [1, 1], [10, 10]) == [5, 5]
    assert apportion(10, [3, 1], [100, 100]) == [8, 2]  # 7.5 / 2.5: the tie goes to the lower index
    assert apportion(10, [9, 1], [3, 100]) == [3, 7]  # the first is full: the rest goes on
    assert apportion(5, [0, 0], [2, 3]) == [2, 3]  # no shares at all: by the room left
    assert apportion(50, [1, 2], [4, 5]) == [4, 5]  # more than fits: everything that fits
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 6, (1,), generator=g))
        caps = torch.randint(0, 20, (n,), generator=g).tolist()
        shares = torch.rand(n, generator=g).tolist()
        total = int(torch.randint(0, 60, (1,), generator=g))
        out = apportion(total, shares, caps)
        assert sum(out) == min(total, sum(caps)) and all(0 <= o <= c for o, c in zip(out, caps))


# ---------------------------------------------------------------------------- element


def test_element_rewiring_holds_the_target_and_keeps_masked_weights_and_momentum_zero():
    net = fresh_net()
    pruner = build_pruner(net, dnr_cfg(), SPE, seed=0)
    optimizer = sgd(net)
    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    names = weight_names(pruner)
    params = dict(net.named_parameters())
    sizes = {n: params[n].numel() for n in names}
    total = sum(sizes.values())
    start = kept(pruner)
    # the random start: every layer at the target, the sum within one weight per layer of it
    assert abs(start - (1 - TARGET) * total) <= len(names)
    assert all(abs(int(pruner.masks[n].sum()) - (1 - TARGET) * sizes[n]) <= 1 for n in names)
    updates = []

    def check(step, before, values):
        for n, m in pruner.masks.items():  # after every step: masked weights and their momentum are zero
            assert bool((params[n][~m] == 0).all()), (step, n)
            assert bool((buffer(optimizer, params[n])[~m] == 0).all()), (step, n)
        changed = any(not torch.equal(before[n], pruner.masks[n]) for n in names)
        assert changed == (step in (5, 10, 15)), step  # masks change at the rewirings only
        if not changed:
            return
        assert kept(pruner) == start  # the per-layer densities, weighted by size, still sum to the target
        regrown = {n: pruner.masks[n] & ~before[n] for n in names}
        dropped = {n: before[n] & ~pruner.masks[n] for n in names}
        assert sum(int(r.sum()) for r in regrown.values()) == sum(int(d.sum()) for d in dropped.values()) > 0
        for n in names:
            # regrown weights (pruned in the masks before the update) start at zero, with zero momentum
            assert bool((params[n][regrown[n]] == 0).all())
            assert bool((buffer(optimizer, params[n])[regrown[n]] == 0).all())
            # weights kept across the update keep their value; the dropped ones were the smallest kept
            stay = before[n] & pruner.masks[n]
            assert torch.equal(params[n][stay], values[n][stay])
            if bool(dropped[n].any()):
                assert float(values[n][dropped[n]].abs().max()) <= float(values[n][stay].abs().min())
        updates.append({n: int(pruner.masks[n].sum()) for n in names})

    train_steps(net, pruner, optimizer, range(1, 26), torch.Generator().manual_seed(1), check)
    assert len(updates) == 3 and pruner.frozen and pruner._growth == {}
    # the budgets moved between layers (not the same density everywhere any more)
    assert len({round(c / sizes[n], 3) for n, c in updates[-1].items()}) > 1
    meta = pruner.metadata()
    assert [u["step"] for u in meta["dnr"]["updates"]] == [5, 10, 15]
    assert all(u["kept"] == start for u in meta["dnr"]["updates"])
    assert verify_structure(net, pruner.masks, meta) == []
    assert meta["nearest_achievable_sparsity"] == pytest.approx(1 - start / total)


@pytest.mark.parametrize(
    "make",
    [
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.0),  # no buffer: the gradient is the momentum
        lambda params: torch.optim.AdamW(params, lr=0.01),  # Adam's first moment
    ],
    ids=["sgd-no-momentum", "adamw"],
)
def test_every_optimizer_the_trainer_builds_gives_a_momentum_to_go_by(make):
    net = fresh_net()
    pruner = build_pruner(net, dnr_cfg(), SPE, seed=0)
    optimizer = make(net.parameters())
    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    params = dict(net.named_parameters())
    start = kept(pruner)

    def check(step, before, values):
        for n, m in pruner.masks.items():  # every state tensor (exp_avg, exp_avg_sq) is zero where masked
            for value in optimizer.state.get(params[n], {}).values():
                if isinstance(value, torch.Tensor) and value.shape == m.shape:
                    assert bool((value[~m] == 0).all()), (step, n)
        if step == 4:
            assert pruner._growth and all(bool(g.any()) for g in pruner._growth.values())

    train_steps(net, pruner, optimizer, range(1, 6), torch.Generator().manual_seed(1), check)
    update = pruner.metadata()["dnr"]["updates"][0]
    assert update["step"] == 5 and update["regrown"] > 0 and kept(pruner) == start
    shares = [layer["momentum_share"] for layer in pruner.metadata()["dnr"]["layers"].values()]
    assert sum(shares) == pytest.approx(1.0) and len(set(shares)) == len(shares)


def test_a_layer_with_more_momentum_gets_more_density_and_regrowth_follows_momentum():
    net = fresh_net()
    pruner = build_pruner(net, dnr_cfg(), 1, seed=0)  # one step per epoch: step 1 is a rewiring
    optimizer = sgd(net)
    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    x, y = batch(torch.Generator().manual_seed(1))
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    params = dict(net.named_parameters())
    names = weight_names(pruner)
    g = torch.Generator().manual_seed(2)
    for n in names:  # block_conv1 moves a thousand times more than any other layer
        scale = 1.0 if n == "block_conv1.weight" else 1e-3
        buffer(optimizer, params[n]).copy_(torch.rand(params[n].shape, generator=g) * scale)
    momentum = {n: buffer(optimizer, params[n]).clone() for n in names}
    values = {n: params[n].detach().clone() for n in names}
    before = {n: pruner.masks[n].clone() for n in names}
    assert pruner.step(1, optimizer) is True
    a, b = (int(pruner.masks[f"{n}.weight"].sum()) for n in ("block_conv1", "block_conv2"))
    assert int(before["block_conv1.weight"].sum()) == int(before["block_conv2.weight"].sum())  # equal at the start
    assert a > int(before["block_conv1.weight"].sum()) and b < int(before["block_conv2.weight"].sum()) and a > b
    shares = pruner.metadata()["dnr"]["layers"]
    assert shares["block_conv1.weight"]["momentum_share"] > 0.9
    for n in names:
        new = pruner.masks[n]
        regrown, passed = new & ~before[n], ~new & ~before[n]  # among the pruned-before positions
        if bool(regrown.any()) and bool(passed.any()):
            assert float(momentum[n][regrown].abs().min()) >= float(momentum[n][passed].abs().max())
        dropped, stay = before[n] & ~new, before[n] & new
        if bool(dropped.any()):
            assert float(values[n][dropped].abs().max()) <= float(values[n][stay].abs().min())


def test_masks_are_frozen_at_end_epoch_and_the_state_resumes_exactly():
    cfg = dnr_cfg(dnr_anneal="none")  # a rewiring at the freeze too (cosine reaches 0 there)
    net = fresh_net()
    pruner = build_pruner(net, cfg, SPE, seed=3)
    optimizer = sgd(net)
    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    g = torch.Generator().manual_seed(1)
    train_steps(net, pruner, optimizer, range(1, 8), g)  # between two rewirings: momentum accumulated
    assert pruner._growth and not pruner.frozen
    # a second run resumes from the saved states (weights, optimizer, pruner) on a new model
    net2 = fresh_net(seed=5)
    net2.load_state_dict(copy.deepcopy(net.state_dict()))
    optimizer2 = sgd(net2)
    optimizer2.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    pruner2 = build_pruner(net2, cfg, SPE, seed=3)
    pruner2.load_state_dict(copy.deepcopy(pruner.state_dict()))
    pruner2.apply_(optimizer2)
    g2 = torch.Generator().set_state(g.get_state())
    train_steps(net, pruner, optimizer, range(8, 31), g)
    train_steps(net2, pruner2, optimizer2, range(8, 31), g2)
    assert all(torch.equal(pruner.masks[k], pruner2.masks[k]) for k in pruner.masks)
    a, b = net.state_dict(), net2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pruner.frozen and [u["step"] for u in pruner.metadata()["dnr"]["updates"]] == [5, 10, 15, 20]
    frozen = {k: v.clone() for k, v in pruner.masks.items()}
    train_steps(net, pruner, optimizer, range(31, 36), g)
    assert all(torch.equal(frozen[k], pruner.masks[k]) for k in frozen)


# ---------------------------------------------------------------------------- channel


def column(weight: torch.Tensor, channel: int, block: int) -> torch.Tensor:
    """A consumer's input columns of `channel` (a conv's W[:, c]; a linear's `block` inputs)."""
    return weight[:, channel] if weight.dim() == 4 else weight[:, channel * block : (channel + 1) * block]


def test_channel_rewiring_keeps_whole_channels_near_the_target_and_regrown_channels_train():
    net = fresh_net()
    pruner = build_pruner(net, dnr_cfg("channel"), SPE, seed=0)
    optimizer = sgd(net)
    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    params = dict(net.named_parameters())
    groups = pruner.granularity_info()["channel_groups"]
    names = weight_names(pruner)
    total = sum(params[n].numel() for n in names)
    # the most weights one channel holds: its filter and every consumer's input columns
    largest = max(
        params[f"{g['producer']}.weight"][0].numel()
        + sum(column(params[f"{c}.weight"], 0, b).numel() for c, b in g["consumers"])
        for g in groups
    )
    regrown_channels = {}

    def channels(masks, producer, count):
        return masks[f"{producer}.weight"].reshape(count, -1).any(1)

    def check(step, before, values):
        meta = pruner.metadata()
        assert verify_structure(net, pruner.masks, meta) == [], step
        assert abs(mask_sparsity(pruner.masks, names) - TARGET) <= largest / total
        if step not in (5, 10, 15):
            return
        fresh = {  # regrown channels: pruned before this update, kept after it
            g["producer"]: channels(pruner.masks, g["producer"], g["channels"])
            & ~channels(before, g["producer"], g["channels"])
            for g in groups
        }
        for g in groups:
            assert bool(channels(pruner.masks, g["producer"], g["channels"]).any())
            for c in torch.nonzero(fresh[g["producer"]]).flatten().tolist():
                for consumer, block in g["consumers"]:
                    # consumer columns start at zero (the output is unchanged), except in the consumer's own
                    # regrown filters, which are redrawn over all their kept inputs
                    col = column(params[f"{consumer}.weight"], c, block).detach()
                    if consumer in fresh:
                        col = col[~fresh[consumer]]
                    assert bool((col == 0).all())
                for bn in g["norms"]:
                    assert float(params[f"{bn}.weight"][c].detach()) == 1.0
                    assert float(params[f"{bn}.bias"][c].detach()) == 0.0
                assert bool((params[f"{g['producer']}.weight"][c] != 0).any())  # its filter redrawn
                if step == 5:
                    regrown_channels.setdefault(g["producer"], []).append(c)

    train_steps(net, pruner, optimizer, range(1, 10), torch.Generator().manual_seed(1), check)
    updates = pruner.metadata()["dnr"]["updates"]
    assert updates[0]["step"] == 5 and updates[0]["regrown"] > 0 and regrown_channels
    # four steps after the rewiring the regrown channels are alive: their consumer columns moved
    consumer_of = {g["producer"]: g["consumers"] for g in groups}
    moved = [
        bool((column(params[f"{consumer}.weight"], c, block) != 0).any())
        for producer, cs in regrown_channels.items()
        for c in cs
        for consumer, block in consumer_of[producer]
    ]
    assert moved and all(moved)
    assert not math.isnan(pruner.metadata()["dnr"]["layers"][groups[0]["producer"]]["momentum"])
