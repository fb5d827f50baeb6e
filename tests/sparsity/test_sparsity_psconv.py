"""psconv (pre-defined sparsity): periodic supports, the paper's table, fixed masks, targets, settings, resume."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from robustsparse.errors import ConfigError
from robustsparse.sparsity import (
    SparsityConfig,
    build_pruner,
    export_compressed,
    get_method,
    load_compressed,
    verify_structure,
)
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.sparsity.methods.psconv import PATTERN_SETS, PSConvPruner, psconv_kernel_masks

SPE = 3  # steps per epoch
BLOCK_LAYERS = ("block_conv1.weight", "block_conv2.weight", "conv3.weight")  # TinyNet's 3x3 convs after the stem


def psconv_cfg(target: float = 0.5, **kw) -> SparsityConfig:
    return SparsityConfig(**{"method": "psconv", "granularity": "window", "target_sparsity": target, **kw})


def decided(model, cfg: SparsityConfig) -> PSConvPruner:
    pruner = build_pruner(model, cfg, SPE, 0)
    pruner.step(0)
    return pruner


def same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_psconv_is_registered_before_training_window_only_from_scratch():
    method = get_method("psconv")
    assert method.when == "before_training" and method.granularities == ("window",)
    cfg = psconv_cfg(from_dense=True, schedule="cubic", end_epoch=9)
    # the paper trains from scratch with the supports fixed at step 0
    assert (cfg.from_dense, cfg.schedule, cfg.end_epoch) == (False, "one_shot", 0)
    assert (cfg.psconv_kept, cfg.psconv_period, cfg.psconv_dense_kernel) == (4, 8, True)
    assert psconv_cfg(0.7).psconv_kept == 2  # derived: 1 - 2/9 is nearest 0.7
    camp = SparsityConfig(method="campfire", target_sparsity=0.5)
    assert (camp.psconv_kept, camp.psconv_period, camp.psconv_dense_kernel) == (None, None, None)


def test_the_supports_follow_the_papers_table_for_period_8_and_16():
    letters = {tuple(p): "ABCD"[i] for i, p in enumerate(PATTERN_SETS[4])}

    def letter(mask: torch.Tensor) -> str:
        kept = tuple(int(i) for i in torch.nonzero(mask.reshape(-1)).flatten())
        return "dense" if len(kept) == 9 else letters[kept]

    # filter 0, channel j has n = j + 1; the paper: n mod 8 in {1,5} A, {2,6} B, {3,7} C, 4 D, 0 dense
    row8 = psconv_kernel_masks(1, 8, 4, 8, True)[0]
    assert [letter(m) for m in row8] == ["A", "B", "C", "D", "A", "B", "C", "dense"]
    row16 = psconv_kernel_masks(1, 16, 4, 16, True)[0]
    assert [letter(m) for m in row16] == list("ABCDABCDABCDABC") + ["dense"]
    # the +i rotation: filter 1 starts one step further
    assert letter(psconv_kernel_masks(2, 1, 4, 8, True)[1, 0]) == "B"
    # 2 of 9: horizontal pairs 1..6 then the first pair again at 7, dense at 0
    pairs = psconv_kernel_masks(1, 8, 2, 8, True)[0].reshape(8, 9)
    expected = [PATTERN_SETS[2][i] for i in (0, 1, 2, 3, 4, 5, 0)]
    for mask, support in zip(pairs[:7], expected):
        assert torch.nonzero(mask).flatten().tolist() == list(support)
    assert bool(pairs[7].all())


@pytest.mark.parametrize("kept, period, dense", [(4, 8, True), (2, 8, True), (4, 4, False), (2, 5, False)])
def test_the_supports_are_periodic_and_keep_k_of_9(kept, period, dense):
    masks = psconv_kernel_masks(3 * period + 1, 2 * period + 3, kept, period, dense)
    k, c = masks.shape[:2]
    assert torch.equal(masks[: k - period], masks[period:])  # kernel (i, j) == (i + period, j)
    assert torch.equal(masks[:, : c - period], masks[:, period:])  # ... == (i, j + period)
    counts = masks.reshape(k, c, 9).sum(-1)
    n = torch.arange(k)[:, None] + torch.arange(c)[None, :] + 1
    is_dense = (n % period == 0) if dense else torch.zeros_like(n, dtype=torch.bool)
    assert bool((counts[is_dense] == 9).all()) and bool((counts[~is_dense] == kept).all())


@pytest.mark.parametrize(
    "target, kw, expected",
    [
        (0.5, {}, 1 - (4 * 7 + 9) / (9 * 8)),  # one dense kernel per period of 8
        (0.7, {}, 1 - (2 * 7 + 9) / (9 * 8)),
        (0.5, {"psconv_dense_kernel": False}, 1 - 4 / 9),
        (0.7, {"psconv_dense_kernel": False, "psconv_period": 6}, 1 - 2 / 9),
    ],
)
def test_psconv_reaches_the_nearest_achievable_value_and_passes_the_structure_checks(tiny_net, target, kw, expected):
    pruner = decided(tiny_net, psconv_cfg(target, **kw))
    meta = pruner.metadata()
    assert pruner.frozen
    # TinyNet's 3x3 layers have 16x16 and 32x32 kernels: whole periods, so the value is exact
    assert pruner.achieved()["prunable"] == pytest.approx(expected, abs=1e-9)
    assert meta["nearest_achievable_sparsity"] == pytest.approx(expected, abs=1e-9)
    assert "nearest achievable" in meta["achievable_note"] and meta["psconv"]["kept"] == meta["settings"]["psconv_kept"]
    assert sorted(meta["prunable_layers"]) == sorted(n.rsplit(".", 1)[0] for n in BLOCK_LAYERS)
    assert {"stem", "pointwise", "fc1", "fc"} <= set(meta["dense_layers"])  # first conv, 1x1, linear
    assert verify_structure(tiny_net, pruner.masks, meta) == []


def test_the_structure_check_fires_on_a_broken_period(tiny_net):
    pruner = decided(tiny_net, psconv_cfg())
    masks = {k: v.clone() for k, v in pruner.masks.items()}
    masks["block_conv1.weight"][0, 7] = False  # the periodic dense kernel (n = 8) emptied
    masks["block_conv1.weight"][0, 7, 0, :2] = True  # ... to 2 weights
    with torch.no_grad():
        tiny_net.block_conv1.weight.mul_(masks["block_conv1.weight"])
    problems = verify_structure(tiny_net, masks, pruner.granularity_info())
    assert problems == [
        "block_conv1.weight: 1 kernels keep another number than exactly 4 (all in the periodic "
        "dense kernels, period 8) weights"
    ]


def test_psconv_masks_never_change_during_training_and_ignore_the_weights(tiny_net, train_with_fixed_masks):
    other = copy.deepcopy(tiny_net)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-3.0).add_(0.1)
    pruner = decided(tiny_net, psconv_cfg())
    first = {k: v.clone() for k, v in pruner.masks.items()}
    assert same_masks(first, decided(other, psconv_cfg()).masks)
    train_with_fixed_masks(tiny_net, pruner, steps=4 * SPE, seed=1, weight_decay=5e-4)
    params = dict(tiny_net.named_parameters())
    assert all(bool((params[n][m] != 0).all()) for n, m in first.items())  # kept weights trained


def test_psconv_pruner_state_round_trips(tiny_net):
    pruner = decided(copy.deepcopy(tiny_net), psconv_cfg(0.7))
    fresh = build_pruner(copy.deepcopy(tiny_net), psconv_cfg(0.7), SPE, 0)
    fresh.load_state_dict(pruner.state_dict())
    assert fresh.frozen and same_masks(fresh.masks, pruner.masks)
    assert fresh.metadata()["layers"] == pruner.metadata()["layers"]


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"psconv_kept": 3}, "sparsity.psconv_kept = 3 is not allowed; expected null or one of 4, 2"),
        ({"psconv_kept": 2}, "sparsity.psconv_kept = 2 is not allowed; expected 4 for target_sparsity 0.5"),
        ({"psconv_period": 1}, "sparsity.psconv_period = 1 is not allowed; expected null or an integer >= 2"),
        ({"psconv_dense_kernel": "yes"}, "sparsity.psconv_dense_kernel = 'yes' is not allowed"),
        ({"granularity": "kernel"}, "sparsity.granularity = 'kernel' is not allowed; expected one of window"),
        ({"method": "campfire", "psconv_period": 8}, "expected null unless method is 'psconv'"),
    ],
)
def test_a_setting_outside_its_vocabulary_fails_with_one_line(kw, fragment):
    with pytest.raises(ConfigError) as err:
        psconv_cfg(**kw)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_mask_sparsity_counts_only_the_3x3_layers(tiny_net):
    pruner = decided(tiny_net, psconv_cfg(0.5, psconv_dense_kernel=False))
    assert set(pruner.masks) == set(BLOCK_LAYERS)
    assert mask_sparsity(pruner.masks, list(BLOCK_LAYERS)) == pytest.approx(5 / 9)


@pytest.mark.parametrize("kw", [{}, {"psconv_dense_kernel": False, "psconv_period": 6}])
def test_the_compressed_export_stores_one_period_not_a_bitmap(tiny_net, kw):
    pruner = decided(tiny_net, psconv_cfg(0.5, **kw))
    state = tiny_net.state_dict()
    blob = export_compressed(state, pruner.masks, pruner.granularity_info())
    header = json.loads(bytes(blob["__header__"].tolist()).decode())
    period = pruner.cfg.psconv_period
    for name in BLOCK_LAYERS:
        assert header["entries"][name]["encoding"] == "periodic" and header["entries"][name]["period"] == period
        assert blob[f"{name}::index"].numel() == math.ceil(period * 9 / 8)  # one period of kernels, not K*C
    back = load_compressed(blob)
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_a_mask_that_is_not_periodic_is_not_stored_as_periodic(tiny_net):
    pruner = decided(tiny_net, psconv_cfg())
    masks = {k: v.clone() for k, v in pruner.masks.items()}
    masks["conv3.weight"][9, 0] = False  # kernel (9, 0) no longer equals kernel (1, 0)
    with torch.no_grad():
        tiny_net.conv3.weight.masked_fill_(~masks["conv3.weight"], 0.0)
    state = tiny_net.state_dict()
    blob = export_compressed(state, masks, pruner.granularity_info())
    header = json.loads(bytes(blob["__header__"].tolist()).decode())
    assert header["entries"]["conv3.weight"]["encoding"] != "periodic"
    assert header["entries"]["block_conv1.weight"]["encoding"] == "periodic"
    assert torch.equal(load_compressed(blob)["conv3.weight"], state["conv3.weight"])
