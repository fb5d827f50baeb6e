"""Pruning at initialisation: `synflow` (data-free, iterative) and `snip` (one batch, one shot)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.sparsity import SparsityConfig, build_pruner, get_method, verify_structure
from robustsparse.sparsity.methods.snip import SnipPruner, snip_scores
from robustsparse.sparsity.methods.synflow import SynflowPruner, synflow_scores

SPE = 3  # steps per epoch


def tiny_batch_of(shape=(3, 8, 8), n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def decided(model, cfg: SparsityConfig, batch=None):
    """The pruner after the trainer's step-0 call (where a before-training method decides)."""
    batch = tiny_batch_of() if batch is None else batch
    pruner = build_pruner(model, cfg, SPE, 0, example_batch=lambda: batch)
    pruner.step(0)
    return pruner


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cfg_of(method: str, granularity: str = "element", **kw) -> SparsityConfig:
    if method == "synflow":
        kw.setdefault("synflow_rounds", 10)  # tests: fewer rounds, same code path
    return SparsityConfig(**{"method": method, "granularity": granularity, "target_sparsity": 0.7, **kw})


def test_both_declare_before_training_with_data_and_fix_the_papers_ranking():
    for name in ("synflow", "snip"):
        method = get_method(name)
        assert method.when == "before_training" and method.needs_data
        assert {"element", "kernel", "filter"} <= set(method.granularities)
    cfg = cfg_of(
        "synflow", schedule="cubic", end_epoch=9, importance="l2", global_ranking="layer_normalised", from_dense=True
    )
    assert (cfg.schedule, cfg.end_epoch, cfg.importance, cfg.global_ranking) == ("one_shot", 0, "l1", "raw")
    assert cfg.from_dense is False  # at initialisation: trained from scratch, no dense parent
    assert SparsityConfig().synflow_rounds == 100
    assert not get_method("campfire").needs_data and not get_method("random").needs_data


def test_a_method_that_needs_data_refuses_to_build_without_a_batch(tiny_net):
    with pytest.raises(ValueError, match="'snip' needs one batch"):
        build_pruner(tiny_net, cfg_of("snip"), SPE, 0)


@pytest.mark.parametrize("synflow_rounds", [0, 2.5, True])
def test_synflow_rounds_must_be_a_positive_integer(synflow_rounds):
    with pytest.raises(Exception, match="synflow_rounds"):
        cfg_of("synflow", synflow_rounds=synflow_rounds)


@pytest.mark.parametrize("method", ["synflow", "snip"])
@pytest.mark.parametrize(
    "granularity, allocation",
    [("element", "uniform"), ("element", "global"), ("kernel", "uniform"), ("kernel", "global"), ("filter", "uniform")]
    + [("filter", "global"), ("window", "uniform")],
)
def test_reaches_the_target_or_the_nearest_achievable_value(tiny_net, method, granularity, allocation):
    pruner = decided(tiny_net, cfg_of(method, granularity, allocation=allocation))
    meta = pruner.metadata()
    achieved = pruner.achieved()["prunable"]
    assert pruner.frozen and meta["method"] == method
    assert abs(achieved - 0.7) <= 0.005 or abs(achieved - meta["nearest_achievable_sparsity"]) <= 0.005
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    assert meta["settings"]["global_ranking"] == "raw" and meta["settings"]["synflow_rounds"] >= 1


@pytest.mark.parametrize("method", ["synflow", "snip"])
def test_masks_never_change_during_training(tiny_net, method, train_with_fixed_masks):
    pruner = decided(tiny_net, cfg_of(method, "kernel"))
    train_with_fixed_masks(tiny_net, pruner, steps=4 * SPE, seed=2)


@pytest.mark.parametrize("method", ["synflow", "snip"])
def test_weights_are_unchanged_except_for_the_masks_and_resume_restores_the_masks(tiny_net, method):
    before = copy.deepcopy(tiny_net.state_dict())
    cfg = cfg_of(method, "element", allocation="global")
    pruner = decided(tiny_net, cfg)
    for name, value in tiny_net.state_dict().items():
        mask = pruner.masks.get(name)
        expected = before[name] if mask is None else torch.where(mask, before[name], torch.zeros_like(before[name]))
        assert torch.equal(value, expected), name  # signs restored, BN statistics untouched
    fresh = build_pruner(copy.deepcopy(tiny_net), cfg, SPE, 0, example_batch=tiny_batch_of)
    fresh.load_state_dict(pruner.state_dict())
    assert fresh.frozen and same_masks(fresh.masks, pruner.masks)
    assert fresh.step(0) is False and same_masks(fresh.masks, pruner.masks)  # a resumed run never re-decides


def test_snip_scores_are_grad_times_weight_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    scores = snip_scores(net, (x, y), ["0.weight", "2.weight"])
    # by hand: the backward pass of mean cross-entropy through the two layers
    h_pre = x @ net[0].weight.T + net[0].bias
    h = h_pre.clamp(min=0)
    logits = h @ net[2].weight.T + net[2].bias
    d_logits = (torch.softmax(logits, 1) - F.one_hot(y, 3).float()) / len(y)
    g2 = d_logits.T @ h
    g0 = ((d_logits @ net[2].weight) * (h_pre > 0)).T @ x
    torch.testing.assert_close(scores["2.weight"], (g2 * net[2].weight).abs().detach())
    torch.testing.assert_close(scores["0.weight"], (g0 * net[0].weight).abs().detach())
    assert net[0].weight.grad is None  # scored on a copy


def test_snip_keeps_the_highest_scores_one_shot():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    batch = tiny_batch_of((16,), n=32)
    scores = snip_scores(net, batch, ["0.weight", "2.weight"])
    cfg = cfg_of("snip", allocation="global", max_layer_sparsity=1.0)
    pruner = decided(net, cfg, batch)
    assert isinstance(pruner, SnipPruner)
    kept = torch.cat([scores[n][pruner.masks[n]] for n in scores])
    dropped = torch.cat([scores[n][~pruner.masks[n]] for n in scores])
    assert float(kept.min()) >= float(dropped.max())  # one global threshold on the raw scores


def test_synflow_scores_follow_the_linearised_network():
    """For a bias-free linear chain, R = 1^T |W2| |W1| 1 and dR/dW1[j, i] = (1^T |W2|)_j."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    scores, flow = synflow_scores(net, {}, (4,), ["0.weight", "2.weight"])
    w1, w2 = net[0].weight.detach().double().abs(), net[2].weight.detach().double().abs()
    assert flow == pytest.approx(float(w2.sum(0) @ w1.sum(1)))
    torch.testing.assert_close(scores["0.weight"], w2.sum(0)[:, None] * w1)
    torch.testing.assert_close(scores["2.weight"], w2 * w1.sum(1)[None, :])
    assert scores["0.weight"].dtype == torch.float64
    # conservation: every layer's scores sum to R
    assert float(scores["0.weight"].sum()) == pytest.approx(flow) == float(scores["2.weight"].sum())


def _bottleneck_net() -> nn.Sequential:
    """A 2-unit bottleneck between wide layers: pruning one layer entirely disconnects the network."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 256),
        nn.ReLU(),
        nn.Linear(256, 2),
        nn.ReLU(),
        nn.Linear(2, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def _input_output_paths(net: nn.Sequential, masks: dict) -> float:
    """Paths from the input to the output through kept weights (0: the network is disconnected)."""
    v = torch.ones(1, net[0].in_features, dtype=torch.float64)
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            v = v @ masks.get(f"{i}.weight", torch.ones_like(layer.weight, dtype=torch.bool)).double().T
    return float(v.sum())


def test_synflow_avoids_the_layer_collapse_of_single_shot_snip_and_magnitude():
    common = {"granularity": "element", "target_sparsity": 0.99, "allocation": "global", "max_layer_sparsity": 1.0}
    batch = tiny_batch_of((16,), n=64)
    synflow = decided(_bottleneck_net(), SparsityConfig(method="synflow", **common), batch)
    snip = decided(_bottleneck_net(), SparsityConfig(method="snip", **common), batch)
    magnitude = decided(
        _bottleneck_net(),
        SparsityConfig(method="campfire", schedule="one_shot", end_epoch=0, global_ranking="raw", **common),
    )
    assert isinstance(synflow, SynflowPruner) and synflow.cfg.synflow_rounds == 100
    for pruner in (synflow, snip, magnitude):
        assert abs(pruner.achieved()["prunable"] - 0.99) <= 0.005
    assert all(int(m.sum()) > 0 for m in synflow.masks.values())
    assert _input_output_paths(synflow.model, synflow.masks) > 0
    for collapsed in (snip, magnitude):
        assert min(int(m.sum()) for m in collapsed.masks.values()) == 0
        assert _input_output_paths(collapsed.model, collapsed.masks) == 0
