"""dst on a tiny model: settings, the long-tailed estimator, masks from thresholds, regulariser, feedback, freeze."""

from __future__ import annotations

import copy

import pytest
import torch

from robustsparse.errors import CheckpointError, ConfigError
from robustsparse.sparsity import SparsityConfig, build_pruner, verify_structure
from robustsparse.sparsity.methods.dst import DstPruner, LongTailedStep, long_tailed_derivative

from .conftest import run_method_steps

SPE = 4  # steps per epoch


def dst_cfg(**kw) -> SparsityConfig:
    return SparsityConfig(
        **{"method": "dst", "granularity": "element", "target_sparsity": 0.5, "start_epoch": 0, "end_epoch": 2, **kw}
    )


def closed_form_h(x: float) -> float:
    """The paper's H, written out once more from its three pieces."""
    a = abs(x)
    if a <= 0.4:
        return 2 - 4 * a
    if a <= 1:
        return 0.4
    return 0.0


def set_thresholds(pruner: DstPruner, seed: int = 0) -> None:
    """Thresholds spread over each layer's |w| (some filters keep most, some few weights)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(pruner.model.named_parameters())
    with torch.no_grad():
        for layer, t in zip(pruner.layers, pruner.thresholds):
            scale = params[layer.param].abs().max()
            t.copy_(torch.rand(t.shape, generator=gen) * scale)


def test_settings_are_filled_in_and_bad_ones_fail_with_one_line():
    cfg = dst_cfg()
    assert (cfg.dst_threshold, cfg.dst_alpha_control, cfg.dst_alpha, cfg.dst_lr, cfg.dst_momentum) == (
        "filter",
        "feedback",
        5e-4,
        0.01,
        0.0,
    )
    assert (cfg.update_unit, cfg.update_every, cfg.allow_regrowth) == ("steps", 1, True)  # fixed by the method
    assert SparsityConfig(method="campfire", granularity="element", target_sparsity=0.5).dst_alpha is None
    bad = [
        ({"dst_threshold": "kernel"}, "filter, layer"),
        ({"dst_alpha_control": "search"}, "feedback, fixed"),
        ({"dst_alpha": 0.0}, "regulariser's strength"),
        ({"dst_alpha": True}, "regulariser's strength"),
        ({"dst_alpha_gain": -1.0}, "> 0"),
        ({"dst_alpha_proportional": -1.0}, ">= 0"),
        ({"dst_lr": 0}, "> 0"),
        ({"dst_momentum": 1.0}, r"in \[0, 1\)"),
        ({"granularity": "kernel"}, "one of element with method 'dst'"),
        ({"schedule": "one_shot", "end_epoch": 0}, "dynamic phase"),
    ]
    for kw, expected in bad:
        with pytest.raises(ConfigError, match=expected) as info:
            dst_cfg(**kw)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="null unless method is 'dst'"):
        SparsityConfig(method="campfire", granularity="element", target_sparsity=0.5, dst_alpha=0.1)


def test_the_estimator_is_the_step_forward_and_the_papers_long_tail_backward():
    points = [-1.5, -1.0, -0.7, -0.4, -0.25, -1e-3, 0.0, 1e-3, 0.1, 0.4, 0.41, 0.99, 1.0, 1.01, 3.0]
    q = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    m = LongTailedStep.apply(q)
    assert m.tolist() == [1.0 if p > 0 else 0.0 for p in points]
    upstream = torch.linspace(-2, 2, len(points), dtype=torch.float64)
    (grad,) = torch.autograd.grad((m * upstream).sum(), q)
    expected = torch.tensor([u * closed_form_h(p) for u, p in zip(upstream.tolist(), points)], dtype=torch.float64)
    assert torch.allclose(grad, expected, atol=1e-12)
    assert torch.allclose(long_tailed_derivative(q.detach()), torch.tensor([closed_form_h(p) for p in points]).double())


def test_gradients_of_the_masked_weight_match_the_closed_form():
    """Autograd on W * step(|W| - t) against dL/dW = g M + g W H(Q) sign(W), dL/dt_k = -sum_i g_i W_i H(Q_i)."""
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64) * 0.5).requires_grad_(True)
    t = (torch.rand(4, generator=gen, dtype=torch.float64) * 0.6).requires_grad_(True)
    g = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    q = w.abs() - t.view(-1, 1, 1, 1)
    eff = w * LongTailedStep.apply(q)
    gw, gt = torch.autograd.grad((eff * g).sum(), [w, t])
    with torch.no_grad():
        h = torch.tensor([closed_form_h(v) for v in q.flatten().tolist()], dtype=torch.float64).view_as(q)
        m = (q > 0).double()
        assert 0 < m.mean() < 1  # both kept and masked weights are sampled
        assert torch.allclose(gw, g * m + g * w * h * torch.sign(w), atol=1e-12)
        assert torch.allclose(gt, -(g * w * h).sum((1, 2, 3)), atol=1e-12)
        masked = m == 0
        assert (gw[masked] != 0).any()  # a masked weight still gets gradient: it can come back


@pytest.mark.parametrize("threshold", ["filter", "layer"])
def test_masks_follow_the_thresholds_and_are_what_the_forward_pass_uses(tiny_net, tiny_batch, threshold):
    model = copy.deepcopy(tiny_net)
    cfg = dst_cfg(dst_threshold=threshold)
    pruner = build_pruner(model, cfg, SPE, 0)
    x, _ = tiny_batch
    assert [t.numel() for t in pruner.thresholds] == [
        layer.shape[0] if threshold == "filter" else 1 for layer in pruner.layers
    ]
    pruner.step(0)
    assert all(bool(m.all()) for m in pruner.masks.values())  # thresholds start at 0: dense
    params = dict(model.named_parameters())
    for seed in range(3):  # sample states
        set_thresholds(pruner, seed)
        pruner.step(seed + 1)
        for layer, t in zip(pruner.layers, pruner.thresholds):
            w = params[layer.param].detach()
            expected = w.abs() > t.detach().view(-1, *([1] * (w.dim() - 1)))
            assert torch.equal(pruner.masks[layer.param], expected)
        assert 0 < pruner.mask_sparsity() < 1
        # the forward pass multiplies by exactly these masks (the weights themselves are not zeroed)
        plain = copy.deepcopy(tiny_net)
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            for name, mask in pruner.masks.items():
                dict(plain.named_parameters())[name].mul_(mask)
            assert all(bool((params[n] != 0).all()) for n in pruner.masks)
            assert torch.allclose(model(x), plain(x), atol=1e-6)
            assert pruner.achieved()["prunable"] == pytest.approx(pruner.mask_sparsity(), abs=1e-12)


def test_the_regulariser_pushes_every_threshold_up(tiny_net):
    model = copy.deepcopy(tiny_net)
    cfg = dst_cfg(dst_alpha=0.1, dst_alpha_control="fixed")
    pruner = build_pruner(model, cfg, SPE, 0)
    pruner.step(0)
    before = [t.detach().clone() for t in pruner.thresholds]
    for _ in range(3):
        pruner.optimizer.zero_grad()
        term = pruner.loss_term()
        term.backward()
        for t in pruner.thresholds:
            assert torch.allclose(t.grad, -0.1 * torch.exp(-t.detach()))  # d/dt alpha exp(-t)
        pruner.optimizer.step()
    assert all(bool((t.detach() > b).all()) for t, b in zip(pruner.thresholds, before))
    assert pruner.alpha == 0.1  # fixed: alpha is never steered


def test_feedback_raises_alpha_below_the_schedule_and_lowers_it_above(tiny_net):
    model = copy.deepcopy(tiny_net)
    cfg = dst_cfg(target_sparsity=0.7)
    pruner = build_pruner(model, cfg, SPE, 0)
    pruner.step(0)
    start = pruner.alpha
    pruner.step(2)  # dense, but the schedule wants sparsity already
    assert pruner.current_target > 0 and pruner.alpha > start
    risen = pruner.alpha
    params = dict(model.named_parameters())
    with torch.no_grad():  # far sparser than the schedule (but no layer below the collapse floor)
        for layer, t in zip(pruner.layers, pruner.thresholds):
            t.fill_(float(params[layer.param].abs().flatten().quantile(0.95)))
    pruner.step(3)
    assert pruner.mask_sparsity() > pruner.current_target and pruner.alpha < risen


def test_a_collapsed_layer_has_its_thresholds_reset(tiny_net):
    model = copy.deepcopy(tiny_net)
    pruner = build_pruner(model, dst_cfg(), SPE, 0)
    pruner.step(0)
    with torch.no_grad():
        pruner.thresholds[0].fill_(100.0)  # the whole layer would be masked
    pruner.step(1)
    assert torch.equal(pruner.thresholds[0].detach(), torch.zeros_like(pruner.thresholds[0]))
    assert pruner.resets == 1 and bool(pruner.masks[pruner.layers[0].param].all())


def test_pruned_weights_come_back_while_dynamic_and_stay_zero_after_the_freeze(tiny_net):
    model = copy.deepcopy(tiny_net)
    cfg = dst_cfg(target_sparsity=0.7, dst_lr=0.05)
    pruner = build_pruner(model, cfg, SPE, 0)
    optimizer = run_method_steps(model, pruner, cfg, 3)
    set_thresholds(pruner, 1)
    pruner.step(3, optimizer)
    masked = {n: ~m.clone() for n, m in pruner.masks.items()}
    with torch.no_grad():
        for t in pruner.thresholds:
            t.mul_(0.1)
    pruner.step(4, optimizer)
    came_back = sum(int((masked[n] & pruner.masks[n]).sum()) for n in masked)
    assert came_back > 0  # lower thresholds: masked weights are kept again, with their old values
    params = dict(model.named_parameters())
    assert all(bool((params[n][masked[n]] != 0).all()) for n in masked)
    assert not pruner.frozen and pruner.loss_term() is not None
    run_method_steps(model, pruner, cfg, 4, first=5, optimizer=optimizer)  # passes end_epoch (step 8)
    assert pruner.frozen and pruner.loss_term() is None
    frozen = {n: m.clone() for n, m in pruner.masks.items()}
    for name, mask in frozen.items():
        assert bool((params[name][~mask] == 0).all())
        assert bool((optimizer.state[params[name]]["momentum_buffer"][~mask] == 0).all())
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    run_method_steps(model, pruner, cfg, 2, first=9, optimizer=optimizer)
    assert all(torch.equal(frozen[n], pruner.masks[n]) for n in frozen)
    assert all(bool((params[n][~frozen[n]] == 0).all()) for n in frozen)
    assert pruner.achieved()["prunable"] == pytest.approx(pruner.mask_sparsity(), abs=1e-12)
    meta = pruner.metadata()
    assert verify_structure(model, pruner.masks, meta) == []  # the checks every method's checkpoint passes
    assert meta["dst"]["target_sparsity"] == 0.7 and meta["dst"]["achieved_sparsity"] == pruner.mask_sparsity()
    assert meta["frozen"] and meta["settings"]["dst_threshold"] == "filter"


def test_state_dict_round_trip_resumes_the_same_steps(tiny_net):
    cfg = dst_cfg(target_sparsity=0.7, dst_lr=0.05)
    model = copy.deepcopy(tiny_net)
    pruner = build_pruner(model, cfg, SPE, 0)
    optimizer = run_method_steps(model, pruner, cfg, 3)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    state = copy.deepcopy(pruner.state_dict())
    run_method_steps(model, pruner, cfg, 3, first=4, optimizer=optimizer)

    other = copy.deepcopy(tiny_net)
    resumed = build_pruner(other, cfg, SPE, 0)
    other.load_state_dict(saved_model)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt2.load_state_dict(saved_opt)
    resumed.load_state_dict(state)
    run_method_steps(other, resumed, cfg, 3, first=4, optimizer=opt2)
    assert resumed.alpha == pruner.alpha and resumed.seen_step == pruner.seen_step
    assert all(torch.equal(a, b) for a, b in zip(resumed.thresholds, pruner.thresholds))
    assert all(torch.equal(resumed.masks[n], pruner.masks[n]) for n in pruner.masks)
    a, b = model.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    campfire = build_pruner(copy.deepcopy(tiny_net), SparsityConfig(method="campfire", target_sparsity=0.5), SPE, 0)
    foreign = {**campfire.state_dict(), "settings": state["settings"]}
    with pytest.raises(CheckpointError, match="no dst part"):
        build_pruner(copy.deepcopy(tiny_net), cfg, SPE, 0).load_state_dict(foreign)
