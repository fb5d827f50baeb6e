"""Every granularity at several targets: achieved sparsity, nearest achievable, and structure, checked independently."""

from __future__ import annotations

import copy

import pytest
import torch

from robustsparse.errors import ConfigError
from robustsparse.sparsity import (
    GRANULARITIES,
    CampfirePruner,
    SparsityConfig,
    achieved_sparsity,
    apply_masks_,
    compute_masks,
    layer_sparsity_table,
    prunable_layers,
    prune_one_shot,
    verify_structure,
)

TARGETS = [0.5, 0.7, 0.9]
BALANCED = ("window", "window+kernel", "n:m")
CASES = [(g, a) for g in GRANULARITIES for a in ("uniform", "global") if not (a == "global" and g in BALANCED)]


def one_shot(
    model: torch.nn.Module, granularity: str, target: float, allocation: str = "uniform", **kw
) -> CampfirePruner:
    pruner = prune_one_shot(model, granularity, target, allocation=allocation, **kw)
    assert pruner.frozen
    return pruner


def _window_expectation(model: torch.nn.Module, target: float, block_1x1: int) -> float:
    """Sparsity of balanced window pruning computed from first principles (3x3: of 9; 1x1/linear: of block)."""
    zeros = total = 0
    for name in prunable_layers(model, SparsityConfig(method="campfire", target_sparsity=target)):
        w = model.get_submodule(name).weight
        block = 9 if w.dim() == 4 and w.shape[2] * w.shape[3] == 9 else block_1x1
        keep = min(block, max(1, int((1 - target) * block + 0.5)))
        zeros += w.numel() * (block - keep) // block
        total += w.numel()
    return zeros / total


def _largest_channel_share(model, pruner) -> float:
    total = sum(model.get_submodule(n).weight.numel() for n in pruner.metadata()["prunable_layers"])
    shares = []
    for g in pruner.granularity_info()["channel_groups"]:
        size = model.get_submodule(g["producer"]).weight[0].numel()
        size += sum(model.get_submodule(c).weight.numel() // g["channels"] for c, _ in g["consumers"])
        shares.append(size / total)
    return max(shares)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("granularity", "allocation"), CASES)
def test_achieved_sparsity_and_structure(tiny_net, granularity: str, allocation: str, target: float) -> None:
    pruner = one_shot(tiny_net, granularity, target, allocation)
    meta = pruner.metadata()
    achieved = achieved_sparsity(tiny_net, pruner.masks)["prunable"]
    nearest = meta["nearest_achievable_sparsity"]
    assert abs(achieved - nearest) <= 0.005
    assert meta["achieved_sparsity"]["prunable"] == achieved
    if granularity == "window":
        assert nearest == pytest.approx(_window_expectation(tiny_net, target, 8), abs=1e-12)
    elif granularity == "n:m":
        assert nearest == pytest.approx(1 - pruner.cfg.n / pruner.cfg.m, abs=1e-12)
    elif granularity in ("filter", "channel"):
        assert abs(nearest - target) <= _largest_channel_share(tiny_net, pruner) / 2 + 1e-9
    else:
        assert abs(achieved - target) <= 0.005
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    params = dict(tiny_net.named_parameters())
    for name, mask in pruner.masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert bool((params[name][~mask] == 0).all())
    # first conv and last linear are dense by default
    assert bool(pruner.masks.get("stem.weight", torch.ones(1, dtype=torch.bool)).all())
    assert bool(pruner.masks.get("fc.weight", torch.ones(1, dtype=torch.bool)).all())
    assert bool((params["stem.weight"] != 0).all()) and bool((params["fc.weight"] != 0).all())


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_compute_masks_equals_the_one_shot_pruner(tiny_net, granularity: str) -> None:
    masks = compute_masks(tiny_net, SparsityConfig(method="campfire", granularity=granularity, target_sparsity=0.7))
    pruner = one_shot(copy.deepcopy(tiny_net), granularity, 0.7)
    assert set(masks) == set(pruner.masks)
    assert all(torch.equal(masks[k], pruner.masks[k]) for k in masks)


def test_kernel_keeps_or_drops_whole_kernels(tiny_net) -> None:
    pruner = one_shot(tiny_net, "kernel", 0.7)
    for name in ("block_conv1.weight", "conv3.weight"):
        per_kernel = pruner.masks[name].flatten(2).sum(-1)
        assert set(per_kernel.unique().tolist()) <= {0, 9}


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_column_keeps_the_same_positions_in_every_filter_and_drops_the_weakest(tiny_net, importance: str) -> None:
    weights = {n: p.detach().clone() for n, p in tiny_net.named_parameters()}
    pruner = one_shot(tiny_net, "column", 0.7, importance=importance)
    # 3x3 convs, the 1x1 conv (a column is one input channel of that layer) and a linear layer
    for name in ("block_conv1.weight", "conv3.weight", "pointwise.weight", "fc1.weight"):
        w = weights[name].reshape(weights[name].shape[0], -1)  # GEMM view (K, C*R*S): groups are its columns
        mask = pruner.masks[name].reshape(w.shape)
        kept = mask.any(0)
        assert torch.equal(mask, kept.expand_as(mask))  # whole columns, never part of one
        n_cols = w.shape[1]
        assert int((~kept).sum()) == min(n_cols - 1, int(0.7 * n_cols + 0.5))  # the nearest count per layer
        norms = w.abs().sum(0) if importance == "l1" else w.square().sum(0).sqrt()
        assert norms[kept].min() >= norms[~kept].max()  # the weakest columns went
    assert pruner.granularity_info()["layers"]["conv3.weight"]["view"] == "column"
    table = layer_sparsity_table(tiny_net, pruner.masks, pruner.granularity_info()).set_index("name")
    assert table.loc["conv3.weight", "group"] == "32-filter column"  # K = 32 weights per group
    assert table.loc["fc1.weight", "group"] == "32-filter column" and table.structure_ok.all()


def test_window_keeps_the_same_count_in_every_kernel(tiny_net) -> None:
    pruner = one_shot(tiny_net, "window", 0.7)
    counts = (tiny_net.conv3.weight != 0).flatten(2).sum(-1)
    assert counts.max() <= 3 and (pruner.masks["conv3.weight"].flatten(2).sum(-1) == 3).all()
    # the 1x1 conv: blocks of 8 consecutive input channels keep 2 each (round(0.3 * 8))
    pw = pruner.masks["pointwise.weight"].reshape(32, 2, 8).sum(-1)
    assert (pw == 2).all()
    assert pruner.metadata()["pointwise_grouping"]["mode"] == "channel_block"


def test_window_kernel_drops_kernels_and_balances_the_rest(tiny_net) -> None:
    pruner = one_shot(tiny_net, "window+kernel", 0.7)
    counts = pruner.masks["conv3.weight"].flatten(2).sum(-1)
    kept = counts[counts > 0]
    assert (counts == 0).any() and kept.numel() > 0 and (kept == kept[0]).all() and 0 < int(kept[0]) < 9


def test_nm_groups_along_input_channels(tiny_net) -> None:
    pruner = one_shot(tiny_net, "n:m", 0.5)
    w = tiny_net.conv3.weight  # (K, C, R, S): groups of 4 consecutive C for every (k, r, s)
    groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
    assert ((groups != 0).sum(1) <= 2).all()
    assert (pruner.masks["conv3.weight"].permute(0, 2, 3, 1).reshape(-1, 4).sum(1) == 2).all()


@pytest.mark.parametrize("granularity", ["filter", "channel"])
def test_removed_channels_zero_filter_bn_bias_and_consumer_columns(tiny_net, granularity: str) -> None:
    one_shot(tiny_net, granularity, 0.5)
    gone = (tiny_net.block_conv1.weight.flatten(1) == 0).all(1)
    assert 0 < int(gone.sum()) < 16
    assert (tiny_net.block_bn1.weight[gone] == 0).all() and (tiny_net.block_bn1.bias[gone] == 0).all()
    assert (tiny_net.block_conv2.weight[:, gone] == 0).all()
    assert (tiny_net.block_bn1.weight[~gone] != 0).all()
    gone3 = (tiny_net.conv3.weight.flatten(1) == 0).all(1)
    assert (tiny_net.conv3.bias[gone3] == 0).all()
    fc1_cols = tiny_net.fc1.weight.reshape(32, 32, 4)  # 4 inputs per conv3 channel after the 2x2 flatten
    assert (fc1_cols[:, gone3] == 0).all() and (fc1_cols[:, ~gone3] != 0).all()
    # residual stream channels are never removed
    assert (tiny_net.block_conv2.weight.flatten(1) != 0).any(1).all()


def test_keep_dense_patterns_and_first_conv_setting(tiny_net) -> None:
    pruner = one_shot(tiny_net, "element", 0.7, keep_dense=("conv3",), keep_first_conv_dense=False)
    assert bool(pruner.masks.get("conv3.weight", torch.ones(1, dtype=torch.bool)).all())
    assert not bool(pruner.masks["stem.weight"].all())
    assert pruner.metadata()["dense_layers"]["conv3"].startswith("keep_dense")
    with pytest.raises(ConfigError, match="matches no conv or linear layer"):
        one_shot(copy.deepcopy(tiny_net), "element", 0.7, keep_dense=("no_such_layer*",))


def test_masked_model_equals_masks_applied_to_the_original(tiny_net) -> None:
    original = copy.deepcopy(tiny_net)
    pruner = one_shot(tiny_net, "kernel", 0.7)
    apply_masks_(original, pruner.masks)
    for (n, a), (_, b) in zip(tiny_net.named_parameters(), original.named_parameters()):
        assert torch.equal(a, b), n


def test_pointwise_grouping_element_prunes_1x1_and_linear_unstructured(tiny_net) -> None:
    pruner = one_shot(tiny_net, "window", 0.7, pointwise_grouping="element")
    meta = pruner.metadata()
    assert meta["layers"]["pointwise.weight"]["granularity"] == "element"
    assert meta["layers"]["conv3.weight"] == {
        "granularity": "window",
        "view": "kernel",
        "block": 9,
        "keep": 3,
        "kernel_stage": False,
    }
    pw = pruner.masks["pointwise.weight"]
    assert abs(1 - pw.float().mean().item() - 0.7) <= 0.5 / pw.numel() + 1e-9
    assert meta["pointwise_grouping"] == {
        "mode": "element",
        "block": 8,
        "applies": True,
        "layers": ["pointwise", "fc1"],
    }
    assert "3 of 9" in meta["achievable_note"]
    assert verify_structure(tiny_net, pruner.masks, meta) == []


@pytest.mark.parametrize("granularity", ["kernel", "row"])
def test_kernel_on_1x1_and_linear_layers_prunes_blocks_of_input_channels(tiny_net, granularity: str) -> None:
    """A 1x1 or linear 'kernel' is one weight: there the groups are blocks of input channels."""
    pruner = one_shot(tiny_net, granularity, 0.7)
    meta = pruner.metadata()
    # pointwise (32, 16, 1, 1) and fc1 (32, 128): blocks of 8 consecutive input channels of one filter
    for name, shape in (("pointwise.weight", (32, 2, 8)), ("fc1.weight", (32, 16, 8))):
        kept = pruner.masks[name].reshape(shape).sum(-1)
        assert set(kept.unique().tolist()) == {0, 8}, name
        assert meta["layers"][name] == {"granularity": granularity, "view": "cblock", "block": 8}
    assert meta["pointwise_grouping"]["applies"] and meta["pointwise_grouping"]["layers"] == ["pointwise", "fc1"]
    assert abs(achieved_sparsity(tiny_net, pruner.masks)["prunable"] - 0.7) <= 0.005
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    rows = layer_sparsity_table(tiny_net, pruner.masks, meta).set_index("name")
    assert rows.loc["pointwise.weight", "group"] == rows.loc["fc1.weight", "group"] == "8 input channels"
    assert rows.loc["conv3.weight", "group"] == ("3x3 kernel" if granularity == "kernel" else "1x3 kernel row")


def test_kernel_with_pointwise_grouping_element_reports_those_layers_as_element(tiny_net) -> None:
    pruner = one_shot(tiny_net, "kernel", 0.7, pointwise_grouping="element")
    meta = pruner.metadata()
    rows = layer_sparsity_table(tiny_net, pruner.masks, meta).set_index("name")
    for name in ("pointwise.weight", "fc1.weight"):
        assert meta["layers"][name]["granularity"] == rows.loc[name, "granularity"] == "element"
        assert rows.loc[name, "group"] == "1 weight"
    assert rows.loc["conv3.weight", "granularity"] == "kernel" and rows.loc["conv3.weight", "group"] == "3x3 kernel"
    assert "single weights" in meta["achievable_note"]
    assert verify_structure(tiny_net, pruner.masks, meta) == []


GLOBAL_ROW_AND_CHANNEL = ["element", "row", "kernel", "filter", "channel"]


def _layer_sparsity(model: torch.nn.Module, pruner: CampfirePruner) -> dict[str, float]:
    params = dict(model.named_parameters())
    return {n: float((params[f"{n}.weight"] == 0).float().mean()) for n in pruner.metadata()["prunable_layers"]}


@pytest.mark.parametrize("granularity", GLOBAL_ROW_AND_CHANNEL)
def test_global_allocation_does_not_depend_on_a_layers_scale(tiny_net, granularity: str) -> None:
    """Scores are normalised per layer: scaling one layer's weights (exactly, by a power of 2) or
    another's down must not move any mask, where a plain magnitude ranking empties the small layer."""
    reference = one_shot(copy.deepcopy(tiny_net), granularity, 0.7, "global", max_layer_sparsity=1.0)
    scaled = copy.deepcopy(tiny_net)
    with torch.no_grad():
        scaled.block_conv1.weight.mul_(2.0**-6)
        scaled.conv3.weight.mul_(2.0**6)
    pruner = one_shot(scaled, granularity, 0.7, "global", max_layer_sparsity=1.0)
    assert all(torch.equal(reference.masks[k], pruner.masks[k]) for k in reference.masks)


@pytest.mark.parametrize("granularity", GLOBAL_ROW_AND_CHANNEL)
def test_global_allocation_caps_every_layers_sparsity(tiny_net, granularity: str) -> None:
    # conv3 is tiny weights except one filter and one input channel: relative to its own mean
    # almost every group of it is weak, so without a cap the global ranking removes nearly all of it.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = tiny_net.conv3.weight
        w.copy_(1e-3 * torch.rand(w.shape, generator=g))
        w[0] = 1.0
        w[:, 0] = 1.0
    uncapped = one_shot(copy.deepcopy(tiny_net), granularity, 0.6, "global", max_layer_sparsity=1.0)
    assert max(_layer_sparsity(uncapped.model, uncapped).values()) > 0.8  # the case the cap is for
    pruner = one_shot(tiny_net, granularity, 0.6, "global", max_layer_sparsity=0.75)
    per_layer = _layer_sparsity(tiny_net, pruner)
    assert max(per_layer.values()) <= 0.75 + 1e-9
    meta = pruner.metadata()
    assert abs(achieved_sparsity(tiny_net, pruner.masks)["prunable"] - meta["nearest_achievable_sparsity"]) <= 0.005
    if granularity not in ("filter", "channel"):
        assert abs(achieved_sparsity(tiny_net, pruner.masks)["prunable"] - 0.6) <= 0.005
    assert verify_structure(tiny_net, pruner.masks, meta) == []


def test_max_layer_sparsity_below_the_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_layer_sparsity"):
        SparsityConfig(method="campfire", target_sparsity=0.9, allocation="global", max_layer_sparsity=0.8)
    SparsityConfig(method="campfire", target_sparsity=0.9, allocation="uniform", max_layer_sparsity=0.8)
