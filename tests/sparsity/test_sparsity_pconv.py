"""pconv (pattern + connectivity pruning): the library, the patterns, targets, the gradual schedule, settings."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from robustsparse.errors import ConfigError
from robustsparse.sparsity import (
    SparsityConfig,
    build_pruner,
    export_compressed,
    get_method,
    load_compressed,
    verify_structure,
)
from robustsparse.sparsity.methods.pconv import PConvPruner, candidate_patterns, choose_library, pattern_kernel_masks

SPE = 3  # steps per epoch
CONV3X3 = ("block_conv1.weight", "block_conv2.weight", "conv3.weight")  # TinyNet's 3x3 convs after the stem
OTHERS = ("pointwise.weight", "fc1.weight")  # 1x1 conv and linear (stem and classifier stay dense)


def pconv_cfg(target: float = 0.7, **kw) -> SparsityConfig:
    base = {"method": "pconv", "granularity": "kernel", "target_sparsity": target, "start_epoch": 0, "end_epoch": 2}
    return SparsityConfig(**{**base, **kw})


def run_schedule(model, cfg: SparsityConfig, steps: int = 2 * SPE) -> PConvPruner:
    """Drive the pruner through its schedule without training (the weights stay as they are)."""
    pruner = build_pruner(model, cfg, SPE, 0)
    for step in range(steps + 1):
        pruner.step(step)
    return pruner


def kernel_rows(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, 9)


def test_pconv_is_registered_gradual_kernel_only_from_dense():
    method = get_method("pconv")
    assert method.when == "during_training" and method.granularities == ("kernel",)
    cfg = pconv_cfg(from_dense=False, allow_regrowth=True, allocation="global")
    assert (cfg.from_dense, cfg.allow_regrowth, cfg.allocation) == (True, False, "uniform")
    assert (cfg.pconv_pattern_size, cfg.pconv_library_size, cfg.pconv_other_layers) == (4, 8, "element")
    camp = SparsityConfig(method="campfire", target_sparsity=0.5)
    assert (camp.pconv_pattern_size, camp.pconv_library_size, camp.pconv_other_layers) == (None, None, None)


def test_the_candidates_are_the_56_four_entry_patterns_with_the_centre():
    candidates = candidate_patterns(4)
    assert len(candidates) == len(set(candidates)) == 56
    assert all(len(p) == 4 and 4 in p for p in candidates)
    assert len(candidate_patterns(2)) == len(candidate_patterns(8)) == 8  # C(8, 1) = C(8, 7)


def test_the_library_is_the_most_frequent_best_fitting_patterns():
    # 5 kernels fit (0, 1, 3, 4) best, 3 fit (4, 5, 7, 8), 1 fits (1, 4, 5, 7): a library of 2 keeps the first two
    def kernel(support):
        k = torch.full((9,), 0.01)
        k[list(support)] = 1.0
        return k

    kernels = torch.stack([kernel((0, 1, 3, 4))] * 5 + [kernel((4, 5, 7, 8))] * 3 + [kernel((1, 4, 5, 7))])
    assert choose_library(kernels, 4, 2) == [(0, 1, 3, 4), (4, 5, 7, 8)]
    assert choose_library(kernels, 4, 3)[2] == (1, 4, 5, 7)
    assert len(choose_library(kernels, 4, 8)) == 8  # never more than asked


def test_pattern_masks_pick_the_library_pattern_keeping_the_largest_norm():
    library = [(0, 1, 3, 4), (4, 5, 7, 8)]
    kernels = torch.tensor([[9.0, 9, 0, 9, 1, 0, 0, 0, 0], [0.0, 0, 0, 0, 1, 9, 0, 9, 9]])
    masks = pattern_kernel_masks(kernels, None, library, 1 - 4 / 9)
    assert torch.nonzero(masks[0]).flatten().tolist() == [0, 1, 3, 4]
    assert torch.nonzero(masks[1]).flatten().tolist() == [4, 5, 7, 8]
    # connectivity: at 1 - 2/9 one of the two kernels goes, the one with the smaller kept norm
    kernels[1] *= 0.1
    masks = pattern_kernel_masks(kernels, None, library, 1 - 2 / 9)
    assert masks[0].sum() == 4 and masks[1].sum() == 0


@pytest.mark.parametrize("target", [0.6, 0.7, 0.9])
def test_every_kept_3x3_kernel_keeps_one_library_pattern_and_the_target_is_met(tiny_net, target):
    pruner = run_schedule(tiny_net, pconv_cfg(target))
    meta = pruner.metadata()
    library = {tuple(p) for p in meta["pconv"]["library"]}
    assert pruner.frozen and 1 <= len(library) <= 8 and len(meta["pconv"]["library"]) == len(library)
    params = dict(tiny_net.named_parameters())
    for name in CONV3X3:
        rows = kernel_rows(pruner.masks[name])
        kept = rows[rows.any(1)]
        assert bool(kept[:, 4].all())  # the centre is always kept
        assert {tuple(torch.nonzero(r).flatten().tolist()) for r in kept} <= library
        assert bool((kernel_rows(params[name].detach() != 0).sum(1) <= 4).all())
    assert pruner.achieved()["prunable"] == pytest.approx(target, abs=0.005)
    assert meta["nearest_achievable_sparsity"] == pytest.approx(target, abs=0.005)
    assert sorted(meta["prunable_layers"]) == sorted(n.rsplit(".", 1)[0] for n in CONV3X3 + OTHERS)
    assert verify_structure(tiny_net, pruner.masks, meta) == []


def test_a_target_below_what_patterns_give_ends_at_the_nearest_achievable_value(tiny_net):
    pruner = run_schedule(tiny_net, pconv_cfg(0.3))
    meta = pruner.metadata()
    conv = sum(pruner.masks[n].numel() for n in CONV3X3)
    other = sum(pruner.masks[n].numel() for n in OTHERS)
    # the 3x3 layers at 5/9 (every kernel patterned, none removed), the others element-wise at 0.3
    expected = (conv * 5 / 9 + other * 0.3) / (conv + other)
    assert pruner.achieved()["prunable"] == pytest.approx(expected, abs=1e-3)
    assert meta["nearest_achievable_sparsity"] == pytest.approx(pruner.achieved()["prunable"], abs=1e-9)
    assert "patterns alone give 0.5556" in meta["achievable_note"]
    assert all(bool((kernel_rows(pruner.masks[n]).sum(1) == 4).all()) for n in CONV3X3)


def test_other_layers_dense_leaves_them_out_of_the_prunable_set(tiny_net):
    pruner = run_schedule(tiny_net, pconv_cfg(0.7, pconv_other_layers="dense"))
    meta = pruner.metadata()
    assert set(pruner.masks) == set(CONV3X3)
    assert {"pointwise", "fc1"} <= set(meta["dense_layers"])
    assert pruner.achieved()["prunable"] == pytest.approx(0.7, abs=0.005)


def test_the_structure_check_fires_on_a_kernel_outside_the_pattern_size(tiny_net):
    pruner = run_schedule(tiny_net, pconv_cfg(0.7))
    masks = {k: v.clone() for k, v in pruner.masks.items()}
    row = kernel_rows(masks["conv3.weight"])
    alive = int(torch.nonzero(row.any(1))[0])
    masks["conv3.weight"].reshape(-1, 9)[alive] = True  # a kernel back to 9 entries
    problems = verify_structure(tiny_net, masks, pruner.granularity_info())
    assert problems == ["conv3.weight: 1 kernels keep another number than 0 or 4 weights"]


def test_gradual_masks_only_gain_zeros_and_freeze_at_end_epoch(tiny_net):
    cfg = pconv_cfg(0.7, end_epoch=3)
    pruner = build_pruner(tiny_net, cfg, SPE, 0)
    net = tiny_net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(3)
    pruner.step(0, optimizer)
    history = [{k: v.clone() for k, v in pruner.masks.items()}]
    mixed = False
    for step in range(1, 6 * SPE + 1):
        x, y = torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        changed = pruner.step(step, optimizer)
        pruner.apply_(optimizer)
        assert not changed or step <= 3 * SPE  # nothing changes after end_epoch
        masks = {k: v.clone() for k, v in pruner.masks.items()}
        assert all(bool((masks[k] <= history[-1][k]).all()) for k in masks)  # only zeros gained
        counts = kernel_rows(masks["block_conv1.weight"]).sum(1)
        mixed |= bool((counts == 9).any() and (counts == 4).any())  # part patterned mid-way
        params = dict(net.named_parameters())
        for name, mask in masks.items():
            assert bool((params[name].detach()[~mask] == 0).all())
            assert bool((optimizer.state[params[name]]["momentum_buffer"][~mask] == 0).all())
        history.append(masks)
    assert mixed and pruner.frozen
    assert all(torch.equal(history[3 * SPE][k], history[-1][k]) for k in history[-1])
    assert not all(torch.equal(history[SPE][k], history[-1][k]) for k in history[-1])  # it was gradual


def test_the_library_survives_a_state_round_trip_mid_schedule(tiny_net):
    cfg = pconv_cfg(0.7, end_epoch=3)
    a = build_pruner(copy.deepcopy(tiny_net), cfg, SPE, 0)
    for step in range(SPE + 1):
        a.step(step)
    library = a.library
    b = build_pruner(copy.deepcopy(a.model), cfg, SPE, 0)
    b.load_state_dict(a.state_dict())
    assert b.library == library is not None
    with torch.no_grad():  # the weights move on; the library must not be chosen again
        for p in list(a.model.parameters()) + list(b.model.parameters()):
            p.mul_(-1.0).add_(0.05)
    for step in range(SPE + 1, 3 * SPE + 1):
        a.step(step)
        b.step(step)
    assert a.library == b.library == library
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


def test_the_compressed_export_round_trips_pattern_masks(tiny_net):
    pruner = run_schedule(tiny_net, pconv_cfg(0.7))
    state = tiny_net.state_dict()
    blob = export_compressed(state, pruner.masks, pruner.granularity_info())
    header = json.loads(bytes(blob["__header__"].tolist()).decode())
    assert header["entries"]["conv3.weight"]["encoding"] in ("pattern", "rows", "indices", "bitmap")
    back = load_compressed(blob)
    assert all(torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (
            {"pconv_pattern_size": 9},
            "sparsity.pconv_pattern_size = 9 is not allowed; expected null or an integer in [2, 8]",
        ),
        (
            {"pconv_library_size": 57},
            "sparsity.pconv_library_size = 57 is not allowed; expected null or an integer in [1, 56]",
        ),
        ({"pconv_library_size": True}, "sparsity.pconv_library_size = True is not allowed"),
        (
            {"pconv_other_layers": "kernel"},
            "sparsity.pconv_other_layers = 'kernel' is not allowed; expected null or one of element, dense",
        ),
        (
            {"granularity": "window"},
            "sparsity.granularity = 'window' is not allowed; expected one of kernel with method 'pconv'",
        ),
        ({"method": "campfire", "pconv_pattern_size": 4}, "expected null unless method is 'pconv'"),
    ],
)
def test_a_pconv_setting_outside_its_range_fails_with_one_line(kw, fragment):
    with pytest.raises(ConfigError) as err:
        pconv_cfg(**kw)
    assert fragment in str(err.value) and "\n" not in str(err.value)
