"""Accounting: the per-layer table and totals agree with the weights; structure checks catch tampering; MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsparse.sparsity import (
    achieved_sparsity,
    layer_sparsity_table,
    model_cost,
    prune_one_shot,
    verify_structure,
)
from robustsparse.sparsity.accounting import TABLE_COLUMNS


@pytest.mark.parametrize("granularity", ["element", "window", "filter"])
def test_table_rows_and_totals_match_the_weights(tiny_net, granularity: str) -> None:
    pruner = prune_one_shot(tiny_net, granularity, 0.7)
    table = layer_sparsity_table(tiny_net, pruner.masks, pruner.granularity_info())
    assert list(table.columns) == TABLE_COLUMNS
    params = dict(tiny_net.named_parameters())
    layers = table[table.kind != "total"]
    convs_linears = [n for n, m in tiny_net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(layers.name) == [f"{n}.weight" for n in convs_linears]
    for row in layers.itertuples():
        assert row.nonzeros == int((params[row.name] != 0).sum())
        assert row.weights == params[row.name].numel()
    assert table.structure_ok.all()
    assert set(layers[~layers.prunable].granularity) == {"dense"}
    total = table.set_index("name")
    measured = achieved_sparsity(tiny_net, pruner.masks)
    assert total.loc["__prunable__", "sparsity"] == pytest.approx(measured["prunable"], abs=1e-12)
    assert total.loc["__all__", "sparsity"] == pytest.approx(measured["all"], abs=1e-12)
    assert total.loc["__prunable__", "weights"] == layers[layers.prunable].weights.sum()
    assert total.loc["__all__", "weights"] == sum(p.numel() for p in params.values())


def _kernel_tamper(model, masks):
    m = masks["conv3.weight"]
    k, c = torch.nonzero(~m.flatten(2).any(-1))[0].tolist()
    m[k, c, 0, 0] = True  # one weight of a dropped kernel marked kept: the kernel is only partly masked


def _column_tamper(model, masks):
    m = masks["conv3.weight"]  # (K, C, 3, 3): a column is one (c, r, s) position in every filter
    col = torch.nonzero(~m.reshape(m.shape[0], -1).any(0))[0].item()
    m.reshape(m.shape[0], -1)[1, col] = True  # one filter keeps a weight of a dropped column


def _window_tamper(model, masks):
    m = masks["conv3.weight"]
    k, c = 0, 0
    pos = torch.nonzero(m[k, c].flatten())[0].item()
    m[k, c].view(-1)[pos] = False  # one kernel now keeps 2 instead of 3
    with torch.no_grad():
        model.conv3.weight[k, c].view(-1)[pos] = 0.0


def _leak(model, masks):
    with torch.no_grad():
        w = model.block_conv1.weight
        w[~masks["block_conv1.weight"]] = 0.5  # masked weights became non-zero


def _bn_shift(model, masks):
    gone = ~masks["block_conv1.weight"].flatten(1).any(1)
    with torch.no_grad():
        model.block_bn1.bias[torch.nonzero(gone)[0]] = 0.1  # a removed channel still emits the BN shift
    masks["block_bn1.bias"][gone] = True


def _dense_layer_masked(model, masks):
    masks["stem.weight"] = torch.ones_like(model.stem.weight, dtype=torch.bool)
    masks["stem.weight"][0, 0, 0, 0] = False
    with torch.no_grad():
        model.stem.weight[0, 0, 0, 0] = 0.0


@pytest.mark.parametrize(
    ("granularity", "tamper", "needle"),
    [
        ("kernel", _kernel_tamper, "partly masked"),
        ("column", _column_tamper, "columns partly masked"),
        ("window", _window_tamper, "another number"),
        ("element", _leak, "masked weights are non-zero"),
        ("filter", _bn_shift, "BatchNorm"),
        ("element", _dense_layer_masked, "kept dense"),
    ],
)
def test_structure_check_fails_on_a_tampered_model(tiny_net, granularity, tamper, needle) -> None:
    pruner = prune_one_shot(tiny_net, granularity, 0.7)
    info = pruner.metadata()
    info.pop("achieved_sparsity")  # look at structure only
    masks = {k: v.clone() for k, v in pruner.masks.items()}
    assert verify_structure(tiny_net, masks, info) == []
    tamper(tiny_net, masks)
    problems = verify_structure(tiny_net, masks, info)
    assert problems and any(needle in p for p in problems), problems
    table = layer_sparsity_table(tiny_net, masks, info)
    assert not table.structure_ok.all()


@pytest.mark.parametrize(
    ("granularity", "layer", "make_bad"),
    [
        ("n:m", "conv3.weight", lambda w: w[0, 0:4, 0, 0].fill_(1.0)),  # 4 non-zeros in a 2:4 group (along C)
        ("window", "conv3.weight", lambda w: w[0, 0].fill_(1.0)),  # 9 non-zeros where 3 are allowed
    ],
)
def test_weights_alone_are_checked_without_masks(tiny_net, granularity, layer, make_bad) -> None:
    pruner = prune_one_shot(tiny_net, granularity, 0.5 if granularity == "n:m" else 0.7)
    info = pruner.granularity_info()
    assert verify_structure(tiny_net, None, info) == []
    with torch.no_grad():
        make_bad(dict(tiny_net.named_parameters())[layer].data)
    assert any(layer in p for p in verify_structure(tiny_net, None, info))


def test_sparsity_disagreeing_with_metadata_is_reported(tiny_net) -> None:
    pruner = prune_one_shot(tiny_net, "element", 0.7)
    meta = pruner.metadata()
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    meta["achieved_sparsity"] = {"prunable": meta["achieved_sparsity"]["prunable"] - 0.01, "all": 0.0}
    assert any("does not match" in p for p in verify_structure(tiny_net, pruner.masks, meta))
    # a checkpoint meta holding the pruner metadata under "sparsity" is understood too
    assert any("does not match" in p for p in verify_structure(tiny_net, pruner.masks, {"sparsity": meta}))


def test_model_cost_counts_dense_and_effective_macs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    dense = model_cost(model, (3, 8, 8))
    conv_macs = 4 * 4 * 8 * 3 * 3 * 3  # output positions x weights
    lin_macs = 8 * 4 * 4 * 5
    assert dense["dense_macs"] == dense["effective_macs"] == conv_macs + lin_macs
    assert dense["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model[0].weight[:4] = 0.0  # half the filters
    masks = {"3.weight": torch.rand(5, 128) > 0.75}
    cost = model_cost(model, (1, 3, 8, 8), masks)
    assert cost["dense_macs"] == conv_macs + lin_macs
    assert cost["effective_macs"] == conv_macs // 2 + int((masks["3.weight"] & (model[3].weight != 0)).sum())
    assert cost["nonzero_params"] == (
        sum(int((p != 0).sum()) for p in model.parameters()) - int((~masks["3.weight"] & (model[3].weight != 0)).sum())
    )
    model.train()
    model_cost(model, (3, 8, 8))
    assert model.training
