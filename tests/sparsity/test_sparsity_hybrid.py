"""hybrid: sensitivity table, per-layer channel ratios, channel stage then fine-grained stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.config import config_from_dict
from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig, build_pruner
from robustsparse.sparsity.methods.hybrid import removed_count


class ChainNet(nn.Module):
    """stem (dense) -> a (4 -> 4) -> b (4 -> 8) -> c (8 -> 4), 1x1 convs -> mean -> fc (dense).

    Channel groups: a -> b and b -> c (c feeds the dense classifier, the stem is dense).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(4, 4, 1, bias=False)
        self.a = nn.Conv2d(4, 4, 1, bias=False)
        self.b = nn.Conv2d(4, 8, 1, bias=False)
        self.c = nn.Conv2d(8, 4, 1, bias=False)
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.a(x))
        x = F.relu(self.b(x))
        x = F.relu(self.c(x))
        return self.fc(x.mean((2, 3)))


def sensitive_a_insensitive_b() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The net passes the 4 input channels through unchanged and predicts the largest one.

    Every filter of `a` carries one class's evidence (removing any costs about a quarter of the
    examples); `b` carries them in its filters 0-3 and has 4 near-zero filters, so half of its
    channels go for free. The labels are the net's predictions: the parent's accuracy is 1.
    """
    net = ChainNet()
    eye = torch.eye(4)
    with torch.no_grad():
        for layer in (net.stem, net.a):
            layer.weight.copy_(eye.view(4, 4, 1, 1))
        net.b.weight.copy_(torch.cat([eye, 1e-4 * torch.ones(4, 4)]).view(8, 4, 1, 1))
        net.c.weight.copy_(torch.cat([eye, torch.zeros(4, 4)], 1).view(4, 8, 1, 1))
        net.fc.weight.copy_(eye)
        g = torch.Generator().manual_seed(1)
        for p in net.parameters():  # no weight exactly zero: achieved sparsity counts masks only
            p.add_(1e-3 * torch.randn(p.shape, generator=g))
    x = torch.rand(256, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, (x, y)


def hybrid_cfg(**over) -> SparsityConfig:
    settings = {
        "method": "hybrid",
        "granularity": "element",
        "target_sparsity": 0.8,
        "start_epoch": 0,
        "end_epoch": 2,
        "keep_first_conv_dense": True,
        "hybrid_ratios": (0.25, 0.5, 0.75),
        "hybrid_tolerance": 0.0,
        **over,
    }
    return SparsityConfig(**settings)


def test_sensitivity_table_has_one_row_per_layer_and_ratio_with_drops_against_the_parent():
    net, data = sensitive_a_insensitive_b()
    pruner = build_pruner(net, hybrid_cfg(), 1, 0, example_batch=lambda n: data)
    pruner.step(0)
    meta = pruner.metadata()["hybrid"]
    assert meta["baseline_accuracy"] == 1.0 and meta["examples"] == 256
    rows = meta["sensitivity"]
    assert [(r["layer"], r["ratio"]) for r in rows] == [(layer, r) for layer in ("a", "b") for r in (0.25, 0.5, 0.75)]
    assert all(r["drop"] == pytest.approx(1.0 - r["accuracy"]) for r in rows)
    assert [r["removed"] for r in rows] == [1, 2, 3, 2, 4, 6]
    # no retraining: the model's kept weights are the parent's
    assert pruner.model is net


def test_a_sensitive_layer_gets_a_lower_channel_ratio_than_an_insensitive_one():
    net, data = sensitive_a_insensitive_b()
    pruner = build_pruner(net, hybrid_cfg(), 1, 0, example_batch=lambda n: data)
    pruner.step(0)
    meta = pruner.metadata()["hybrid"]
    drops = {(r["layer"], r["ratio"]): r["drop"] for r in meta["sensitivity"]}
    assert drops[("b", 0.5)] == 0.0 and drops[("b", 0.75)] > 0.1 and drops[("a", 0.25)] > 0.1
    assert meta["ratios"] == {"a": 0.0, "b": 0.5}
    assert meta["removed_channels"] == {"b": 4}


def test_whole_filters_go_first_then_element_pruning_reaches_the_target():
    net, data = sensitive_a_insensitive_b()
    pruner = build_pruner(net, hybrid_cfg(target_sparsity=0.7), 1, 0, example_batch=lambda n: data)
    pruner.step(0)  # channel stage; the cubic schedule is at 0: no element pruning yet
    after_channels = {k: m.clone() for k, m in pruner.masks.items()}
    b = after_channels["b.weight"].reshape(8, -1)
    assert (b.all(1) | ~b.any(1)).all() and int((~b.any(1)).sum()) == 4  # whole filters only
    assert bool(after_channels["a.weight"].all())
    c = after_channels["c.weight"].reshape(4, 8)
    assert torch.equal(c.all(0), b.any(1)) and torch.equal(c.any(0), b.any(1))  # consumer columns follow
    channel_sparsity = pruner.metadata()["hybrid"]["channel_sparsity"]
    assert 0 < channel_sparsity < 0.7 and pruner.current_target == pytest.approx(channel_sparsity)
    for step in (1, 2):
        pruner.step(step)
    assert pruner.frozen
    assert pruner.achieved()["prunable"] == pytest.approx(0.7, abs=0.005)
    assert all(bool((~after_channels[k] <= ~m).all()) for k, m in pruner.masks.items())  # filters stay gone
    assert bool((~pruner.masks["a.weight"]).any())  # the fine-grained stage thinned the sensitive layer too
    spec = pruner.metadata()["layers"]
    assert spec["b.weight"]["granularity"] == "filter+element" and spec["a.weight"]["granularity"] == "element"


def test_the_channel_stage_never_exceeds_the_target():
    net, data = sensitive_a_insensitive_b()
    # tolerance 1: every ratio passes, so both layers would lose 75% of their channels
    pruner = build_pruner(
        net, hybrid_cfg(target_sparsity=0.5, hybrid_tolerance=1.0), 1, 0, example_batch=lambda n: data
    )
    pruner.step(0)
    meta = pruner.metadata()["hybrid"]
    assert meta["tolerance_ratios"] == {"a": 0.75, "b": 0.75}
    assert meta["cap_steps"] and meta["channel_sparsity"] <= 0.5
    pruner.step(2)
    assert pruner.achieved()["prunable"] == pytest.approx(0.5, abs=0.005)


def test_masks_are_fixed_after_the_end_and_state_round_trips_without_measuring_again():
    net, data = sensitive_a_insensitive_b()
    cfg = hybrid_cfg()
    pruner = build_pruner(net, cfg, 1, 0, example_batch=lambda n: data)
    for step in range(3):
        pruner.step(step)
    frozen = {k: m.clone() for k, m in pruner.masks.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    assert pruner.step(3) is False and all(torch.equal(frozen[k], pruner.masks[k]) for k in frozen)
    # a resumed pruner restores the sensitivity outcome from the state (no examples needed)
    empty = (torch.zeros(0, 4, 2, 2), torch.zeros(0, dtype=torch.long))
    again = build_pruner(ChainNet(), cfg, 1, 0, example_batch=lambda n: empty)
    again.load_state_dict(pruner.state_dict())
    assert again.metadata()["hybrid"]["sensitivity"] == pruner.metadata()["hybrid"]["sensitivity"]
    assert again.step(4) is False and all(torch.equal(frozen[k], again.masks[k]) for k in frozen)


def test_removed_count_rounds_kept_channels_up_to_the_multiple():
    assert removed_count(32, 0.5, 1) == 16
    assert removed_count(30, 0.5, 8) == 14  # 15 kept -> 16
    assert removed_count(8, 0.99, 4) == 4  # at least one kept, rounded up to 4
    assert removed_count(4, 0.9, 8) == 0  # never more than the layer has


def test_the_trainer_draws_the_number_of_examples_the_method_asks_for():
    net, data = sensitive_a_insensitive_b()
    asked = []

    def draw(n=None):
        asked.append(n)
        return data

    build_pruner(net, hybrid_cfg(hybrid_examples=300), 1, 0, example_batch=draw)
    build_pruner(ChainNet(), SparsityConfig(method="snip", granularity="element", target_sparsity=0.5), 1, 0, draw)
    assert asked == [300, None]  # snip: one training batch, as before


@pytest.mark.parametrize(
    "over, match",
    [
        ({"hybrid_examples": 0}, "sparsity.hybrid_examples = 0 is not allowed"),
        ({"hybrid_ratios": [0.5, 1.0]}, "sparsity.hybrid_ratios = \\[0.5, 1.0\\] is not allowed"),
        ({"hybrid_tolerance": -0.1}, "sparsity.hybrid_tolerance = -0.1"),
        ({"hybrid_channel_multiple": 0}, "sparsity.hybrid_channel_multiple = 0"),
        ({"granularity": "filter"}, "one of element with method 'hybrid'"),
        ({"method": "campfire", "hybrid_tolerance": 0.02}, "null unless method is 'hybrid'"),
    ],
)
def test_a_bad_hybrid_setting_is_one_line_naming_it(over, match):
    sparsity = {"method": "hybrid", "granularity": "element", "target_sparsity": 0.7, **over}
    with pytest.raises(ConfigError, match=match) as info:
        config_from_dict({"name": "t", "sparsity": sparsity})
    assert "\n" not in str(info.value)


def test_the_ratio_grid_is_a_list_setting_not_a_grid_axis_and_defaults_are_filled_in():
    cfg = config_from_dict(
        {"name": "t", "sparsity": {"method": "hybrid", "target_sparsity": 0.7, "hybrid_ratios": [0.5, 0.25]}}
    )
    (s,) = cfg.sparsity
    assert s.hybrid_ratios == (0.25, 0.5) and s.hybrid_examples == 512 and s.hybrid_tolerance == 0.01
    assert s.hybrid_channel_multiple == 1 and s.from_dense and s.initial_sparsity == 0.0
    grid = config_from_dict(
        {"name": "t", "sparsity": {"method": "hybrid", "target_sparsity": 0.7, "hybrid_ratios": [[0.5], [0.25, 0.75]]}}
    )
    assert [s.hybrid_ratios for s in grid.sparsity] == [(0.5,), (0.25, 0.75)]
