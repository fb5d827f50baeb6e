"""structadmm on tiny models: exact projections, ADMM's residual, hard pruning, retraining, settings."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig, build_pruner, compact_model, prune_one_shot, verify_structure
from robustsparse.sparsity.allocation import _consumer_columns
from robustsparse.sparsity.methods import extra_training
from robustsparse.sparsity.methods.structadmm import StructAdmmPruner
from robustsparse.sparsity.projections import GROUP_KINDS, group_rows, project, project_rows, support, ungroup_rows

SPE = 3  # steps per epoch


def admm_cfg(**kw) -> SparsityConfig:
    base = {"method": "structadmm", "granularity": "filter", "target_sparsity": 0.5, "start_epoch": 0, "end_epoch": 4}
    return SparsityConfig(**{**base, **kw})


def groups_of(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Which rows of the group table are non-zero (independently of group_rows: by brute force)."""
    w = t.reshape(t.shape[0], t.shape[1], *(t.shape[2:] or (1, 1)))
    k, c, r, s = w.shape
    if kind == "element":
        return (w != 0).reshape(-1)
    if kind == "filter":
        return torch.tensor([bool((w[i] != 0).any()) for i in range(k)])
    if kind == "channel":
        return torch.tensor([bool((w[:, j] != 0).any()) for j in range(c)])
    return torch.tensor([bool((w[:, j, a, b] != 0).any()) for j in range(c) for a in range(r) for b in range(s)])


def restricted(t: torch.Tensor, kind: str, subset: tuple[int, ...]) -> torch.Tensor:
    """`t` with only the groups in `subset` kept: the nearest tensor supported on them."""
    table = group_rows(t, kind).clone()
    keep = torch.zeros(table.shape[0], dtype=torch.bool)
    keep[list(subset)] = True
    table[~keep] = 0
    return ungroup_rows(table, kind, t.shape)


@pytest.mark.parametrize("kind", GROUP_KINDS)
@pytest.mark.parametrize("shape", [(3, 2, 2, 1), (3, 4)])
def test_projection_is_in_the_set_and_nearest_by_brute_force(kind, shape):
    g = torch.Generator().manual_seed(len(shape) * 10 + GROUP_KINDS.index(kind))
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    n_groups = group_rows(t, kind).shape[0]
    assert torch.equal(ungroup_rows(group_rows(t, kind), kind, t.shape), t)  # the layout round-trips
    for keep in range(n_groups + 1):
        p = project(t, kind, keep)
        alive = groups_of(p, kind)
        assert int(alive.sum()) <= keep  # in the set
        assert torch.equal(p[p != 0], t[p != 0])  # kept groups unchanged
        best = min(
            float((t - restricted(t, kind, subset)).norm())
            for size in range(keep + 1)
            for subset in itertools.combinations(range(n_groups), size)
        )
        assert float((t - p).norm()) == pytest.approx(best, abs=1e-12)  # the nearest point of the set
        assert torch.equal(project(p, kind, keep), p)  # a point of the set is its own projection


def test_coupled_rows_project_as_one_group_and_ties_drop_the_lower_index():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 2, generator=g), torch.randn(5, 3, generator=g)  # one group = a row of a and of b
    table = torch.cat([a, b], 1)
    for keep in range(6):
        projected, kept = project_rows(table, keep)
        best = min(
            float(table[[i for i in range(5) if i not in subset]].square().sum())
            for subset in itertools.combinations(range(5), keep)
        )
        assert float((table - projected).square().sum()) == pytest.approx(best, abs=1e-6)
        assert int(kept.sum()) == keep and bool((projected[~kept] == 0).all())
    _, kept = project_rows(torch.ones(4, 2), 2)  # all tied: the two lower indices go
    assert kept.tolist() == [False, False, True, True]


@pytest.mark.parametrize("granularity", ["filter", "channel"])
def test_the_constraints_slice_the_groups_that_campfire_masks(tiny_net, granularity):
    pruner = build_pruner(tiny_net, admm_cfg(granularity=granularity), SPE, 0)
    params = dict(tiny_net.named_parameters())
    weights = {n: p.detach() for n, p in params.items()}
    groups = {grp.producer: grp for grp in pruner._engine.groups}
    assert {c.name for c in pruner.constraints} == set(groups) and groups
    for c in pruner.constraints:
        grp = groups[c.name]
        if granularity == "filter":
            expected = weights[f"{grp.producer}.weight"].reshape(grp.channels, -1)
        else:
            expected = torch.cat(
                [_consumer_columns(weights[f"{n}.weight"], grp.channels, block) for n, block in grp.consumers], 1
            )
        assert torch.equal(c.rows(weights), expected)
        # the count per group is Campfire's uniform count at the target
        assert c.keep == grp.channels - pruner._dry.pruned_channels[grp.producer]


def test_column_constraints_are_per_layer_with_campfires_column_counts(tiny_net):
    pruner = build_pruner(tiny_net, admm_cfg(granularity="column", target_sparsity=0.7), SPE, 0)
    campfire = prune_one_shot(copy.deepcopy(tiny_net), "column", 0.7)  # Campfire's uniform column masks
    weights = {n: p.detach() for n, p in tiny_net.named_parameters()}
    assert [c.name for c in pruner.constraints] == [layer.param for layer in pruner._engine.layers]
    for c in pruner.constraints:
        w = weights[c.name]
        assert torch.equal(c.rows(weights), w.reshape(w.shape[0], -1).T)  # one row per column, K entries
        kept_columns = campfire.masks[c.name].reshape(w.shape[0], -1).any(0)
        assert c.keep == int(kept_columns.sum()) < c.groups


def run_steps(model, pruner, cfg, first: int, last: int, optimizer, data) -> None:
    """The trainer's loop in miniature: CE + the method's loss term, then the pruner's calls."""
    _, extra_loss = extra_training(cfg, pruner)
    x, y = data
    for step in range(first, last + 1):
        loss = F.cross_entropy(model(x), y)
        term = extra_loss()
        if term is not None:
            loss = loss + term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)


def test_the_loss_term_is_the_augmented_lagrangian_and_only_in_the_admm_phase(tiny_net):
    cfg = admm_cfg(start_epoch=1, end_epoch=3, structadmm_rho=0.2)
    pruner = build_pruner(tiny_net, cfg, SPE, 0)
    pruner.step(0)
    assert pruner.loss_term() is None and pruner.z is None  # before start_epoch
    pruner.step(SPE)
    assert pruner.z is not None
    pruner.u = {p: torch.randn_like(u) for p, u in pruner.u.items()}
    params = dict(tiny_net.named_parameters())
    term = pruner.loss_term()
    expected = sum(
        0.5 * 0.2 * float(((params[p].detach() - pruner.z[p] + pruner.u[p]) * pruner.governed[p]).square().sum())
        for p in pruner.governed
    )
    assert float(term.detach()) == pytest.approx(expected, rel=1e-5)
    term.backward()
    p = next(iter(pruner.governed))
    grad = 0.2 * (params[p] - pruner.z[p] + pruner.u[p]) * pruner.governed[p]
    assert torch.allclose(params[p].grad, grad, atol=1e-6)
    pruner.step(3 * SPE)
    assert pruner.frozen and pruner.loss_term() is None


def test_the_primal_residual_falls_over_iterations_on_a_toy_problem():
    """Least squares on one linear layer: ADMM drives W towards the structured set."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8))
    cfg = admm_cfg(
        granularity="element",
        end_epoch=12,
        keep_last_linear_dense=False,
        structadmm_rho=0.05,
        structadmm_rho_factor=1.5,
    )
    spe = 20
    pruner = build_pruner(model, cfg, spe, 0)
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(64, 12, generator=g), torch.randn(64, 8, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    _, extra_loss = extra_training(cfg, pruner)
    pruner.step(0, opt)
    start = pruner.primal_residual()
    for step in range(1, 11 * spe + 1):  # stop before the hard pruning: the last ADMM iteration is 12
        loss = F.mse_loss(model(x), target) + extra_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(step, opt)
    residuals = [h["primal_residual"] for h in pruner.history]
    assert len(residuals) == 11 and start > 0.1
    assert residuals[-1] < 0.1 * start and residuals[-1] < 0.1 * max(residuals)
    assert all(b < a for a, b in zip(residuals[2:], residuals[3:]))  # falls steadily once rho has grown
    rhos = [h["rho"] for h in pruner.history]
    assert rhos[:3] == pytest.approx([0.05, 0.075, 0.1125]) and pruner.rho == pytest.approx(min(1.0, 0.05 * 1.5**11))


@pytest.mark.parametrize("granularity", ["element", "column", "filter", "channel"])
def test_hard_pruning_keeps_the_projection_and_retraining_keeps_pruned_weights_and_momentum_zero(
    tiny_net, tiny_batch, granularity
):
    cfg = admm_cfg(granularity=granularity, end_epoch=2, structadmm_rho=0.5)
    pruner = build_pruner(tiny_net, cfg, SPE, 0)
    opt = torch.optim.SGD(tiny_net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pruner.step(0, opt)
    run_steps(tiny_net, pruner, cfg, 1, 2 * SPE - 1, opt, tiny_batch)
    assert not pruner.frozen and len(pruner.history) == 1
    before = {n: p.detach().clone() for n, p in tiny_net.named_parameters()}
    # the last ADMM step by hand, so the weights the hard pruning projects are known
    x, y = tiny_batch
    opt.zero_grad()
    (F.cross_entropy(tiny_net(x), y) + pruner.loss_term()).backward()
    opt.step()
    w = {p: tiny_net.get_parameter(p).detach().clone() for p in pruner.governed}
    assert pruner.step(2 * SPE, opt) is True
    assert pruner.frozen and len(pruner.history) == 2 and pruner.z is None
    # each set's kept groups are the projection's support (a kept filter may still lose the input
    # columns of an upstream group; whole coupled channels are checked by verify_structure below)
    for c in pruner.constraints:
        rows = c.rows(pruner.masks)
        assert torch.equal(rows.any(1), support(c.rows(w).double().square().sum(1), c.keep))
        assert int(rows.any(1).sum()) == c.keep < c.groups
    meta = pruner.metadata()
    assert verify_structure(tiny_net, pruner.masks, meta) == []
    assert meta["structadmm"]["final_primal_residual"] == pruner.history[-1]["primal_residual"] > 0
    assert meta["achieved_sparsity"]["prunable"] == pytest.approx(meta["nearest_achievable_sparsity"])
    assert abs(meta["achieved_sparsity"]["prunable"] - 0.5) < 0.02
    masks = {k: v.clone() for k, v in pruner.masks.items()}
    run_steps(tiny_net, pruner, cfg, 2 * SPE + 1, 4 * SPE, opt, tiny_batch)  # masked retraining
    assert all(torch.equal(masks[k], pruner.masks[k]) for k in masks)
    for name, p in tiny_net.named_parameters():
        if name in masks:
            assert bool((p[~masks[name]] == 0).all())
            assert bool((opt.state[p]["momentum_buffer"][~masks[name]] == 0).all())
    assert not all(torch.equal(before[n], p) for n, p in tiny_net.named_parameters())  # it did train
    if granularity == "column":  # whole columns W[:, c, r, s]: every filter keeps the same positions
        for mask in masks.values():
            table = mask.reshape(mask.shape[0], -1)
            assert bool((table.all(0) | ~table.any(0)).all()) and not bool(table.all())
    if granularity in ("filter", "channel"):
        small = compact_model(tiny_net, masks)
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in tiny_net.parameters())
        x = tiny_batch[0]
        with torch.no_grad():
            assert torch.allclose(small.eval()(x), tiny_net.eval()(x), atol=1e-5)


def test_the_state_resumes_exactly_in_the_admm_phase(tiny_net, tiny_batch):
    cfg = admm_cfg(end_epoch=4, structadmm_rho=0.3)
    straight = copy.deepcopy(tiny_net)
    a = build_pruner(straight, cfg, SPE, 0)
    opt_a = torch.optim.SGD(straight.parameters(), lr=0.05, momentum=0.9)
    a.step(0, opt_a)
    run_steps(straight, a, cfg, 1, 2 * SPE, opt_a, tiny_batch)
    # a fresh model, optimiser and pruner restored from the states after epoch 2 (mid-ADMM)
    resumed = copy.deepcopy(straight)
    b = build_pruner(resumed, cfg, SPE, 0)
    opt_b = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # its own momentum buffers
    b.load_state_dict(a.state_dict())
    assert b.rho == a.rho and b.history == a.history and len(b.history) == 2
    run_steps(straight, a, cfg, 2 * SPE + 1, 6 * SPE, opt_a, tiny_batch)
    run_steps(resumed, b, cfg, 2 * SPE + 1, 6 * SPE, opt_b, tiny_batch)
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metadata()["structadmm"] == b.metadata()["structadmm"]


def test_a_state_without_the_admm_part_is_refused(tiny_net):
    from robustsparse.errors import CheckpointError

    pruner = build_pruner(tiny_net, admm_cfg(), SPE, 0)
    state = pruner.state_dict()
    del state["structadmm"]
    with pytest.raises(CheckpointError, match="no structadmm part"):
        pruner.load_state_dict(state)


def test_settings_are_filled_in_and_bad_ones_fail_with_one_line():
    cfg = admm_cfg()
    assert isinstance(build_pruner(nn.Sequential(nn.Linear(4, 4)), cfg, 1, 0), StructAdmmPruner)
    assert (cfg.structadmm_rho, cfg.structadmm_rho_factor, cfg.structadmm_rho_max) == (1.5e-3, 1.3, 1.0)
    assert (cfg.structadmm_admm_update_every, cfg.importance, cfg.allocation, cfg.from_dense) == (
        1,
        "l2",
        "uniform",
        True,
    )
    assert SparsityConfig(method="campfire", granularity="filter", target_sparsity=0.5).structadmm_rho is None
    bad = [
        ({"structadmm_rho": 0.0}, "structadmm_rho = 0.0"),
        ({"structadmm_rho": float("nan")}, "initial ADMM penalty"),
        ({"structadmm_rho_factor": 0.9}, ">= 1"),
        ({"structadmm_rho": 0.5, "structadmm_rho_max": 0.1}, "structadmm_rho_max = 0.1"),
        ({"structadmm_admm_update_every": 0}, "epochs per ADMM iteration"),
        ({"structadmm_admm_update_every": True}, "epochs per ADMM iteration"),
        ({"end_epoch": 5, "structadmm_admm_update_every": 2}, "whole number of iterations"),
        ({"start_epoch": 4, "end_epoch": 4}, "positive multiple"),
        ({"granularity": "kernel"}, "one of element, column, filter, channel"),
        ({"method": "campfire", "structadmm_rho": 0.1}, "null unless method is 'structadmm'"),
    ]
    for kw, needle in bad:
        with pytest.raises(ConfigError) as err:
            admm_cfg(**kw)
        line = str(err.value)
        assert "\n" not in line and needle in line, line


def test_channels_last_weights_project_as_contiguous_ones(tiny_net, tiny_batch):
    """The trainer puts CUDA models in channels_last; the Z-step must not depend on the layout."""
    cfg = admm_cfg(granularity="channel", structadmm_rho=0.5)
    twin = copy.deepcopy(tiny_net).to(memory_format=torch.channels_last)
    assert not twin.block_conv1.weight.is_contiguous()
    pruners = [build_pruner(net, cfg, SPE, 0) for net in (tiny_net, twin)]
    for net, pruner in zip((tiny_net, twin), pruners):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        pruner.step(0, opt)
        run_steps(net, pruner, cfg, 1, SPE, opt, tiny_batch)
    a, b = pruners
    assert len(a.history) == len(b.history) == 1
    assert all(torch.allclose(a.z[p], b.z[p], atol=1e-6) and torch.allclose(a.u[p], b.u[p], atol=1e-6) for p in a.z)
