"""npn on a tiny model: settings, the joint phase (gates, penalty, pruner updates), the freeze."""

from __future__ import annotations

import copy

import pytest
import torch

from robustsparse.errors import ConfigError
from robustsparse.sparsity import SparsityConfig, build_pruner
from robustsparse.sparsity.methods.npn import PrunerNetwork

from .conftest import run_method_steps

SPE = 4  # steps per epoch


def npn_cfg(**kw) -> SparsityConfig:
    return SparsityConfig(
        **{"method": "npn", "granularity": "filter", "target_sparsity": 0.5, "start_epoch": 0, "end_epoch": 2, **kw}
    )


def test_settings_are_filled_in_and_bad_ones_fail_with_one_line():
    cfg = npn_cfg()
    assert (cfg.npn_hidden, cfg.npn_gate, cfg.from_dense, cfg.global_ranking) == (16, "straight_through", True, "raw")
    assert SparsityConfig(method="campfire", granularity="filter", target_sparsity=0.5).npn_hidden is None
    bad = [
        ({"npn_gate": "hard"}, "straight_through, soft"),
        ({"npn_hidden": 0}, "integer >= 1"),
        ({"npn_lambda": -1.0}, "> 0"),
        ({"npn_lambda": True}, "> 0"),
        ({"npn_lr": 0}, "> 0"),
        ({"granularity": "kernel"}, "one of filter with method 'npn'"),
        ({"schedule": "one_shot", "end_epoch": 0}, "joint phase"),
    ]
    for kw, expected in bad:
        with pytest.raises(ConfigError, match=expected) as info:
            npn_cfg(**kw)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="null unless method is 'npn'"):
        SparsityConfig(method="campfire", granularity="filter", target_sparsity=0.5, npn_lambda=0.1)


def test_the_loss_term_reaches_the_pruner_network_and_the_gates_close_filters(tiny_net):
    model = copy.deepcopy(tiny_net)
    cfg = npn_cfg(npn_lr=0.05)
    pruner = build_pruner(model, cfg, SPE, 0)
    before = copy.deepcopy(pruner.network.state_dict())
    run_method_steps(model, pruner, cfg, SPE * 2 - 1)  # the whole joint phase but its last step
    assert not pruner.frozen and pruner.joint
    after = pruner.network.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # every pruner parameter moved
    assert all(bool(m.all()) for m in pruner.masks.values())  # the gates prune, not the masks, yet
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    closed = sum(int((lg <= 0).sum()) for lg in pruner._logits)
    assert closed > 0  # the penalty closed some gates during the joint phase
    # the budget: the share of open gates follows the schedule (within a few filters)
    wanted = pruner.wanted_open(pruner.seen_step)
    opened = torch.tensor([float((lg > 0).double().mean()) for lg in pruner._logits], dtype=torch.float64)
    assert torch.all((opened - wanted).abs() <= 0.15), (opened, wanted)


def test_the_final_mask_is_the_thresholded_scores_and_the_model_is_plain_again(tiny_net):
    model = copy.deepcopy(tiny_net)
    cfg = npn_cfg()
    pruner = build_pruner(model, cfg, SPE, 0)
    optimizer = run_method_steps(model, pruner, cfg, SPE * 2 + 2)
    assert pruner.frozen and pruner.current_target == 0.5
    frozen = {k: m.clone() for k, m in pruner.masks.items()}
    # fine-tuning: masks fixed, masked weights and their momentum exactly zero after every step
    run_method_steps(model, pruner, cfg, 3, optimizer, first=SPE * 2 + 3)
    params = dict(model.named_parameters())
    assert all(torch.equal(frozen[k], m) for k, m in pruner.masks.items())
    for name, mask in frozen.items():
        momentum = optimizer.state[params[name]]["momentum_buffer"]
        assert bool((params[name].detach()[~mask] == 0).all()) and bool((momentum[~mask] == 0).all()), name
    assert any(not bool(m.all()) for m in frozen.values())
    # recompute the scores from the saved state alone
    state = pruner.state_dict()["npn"]
    net = PrunerNetwork(len(pruner.groups), cfg.npn_hidden, seed=123)
    net.load_state_dict(state["network"])
    feats = state["record"]["features"]
    with torch.no_grad():
        scores = dict(zip(feats, (torch.sigmoid(lg) for lg in net(list(feats.values())))))
    meta = pruner.metadata()
    for g in pruner.groups:
        s = scores[g.producer]
        assert torch.equal(s, state["record"]["scores"][g.producer])
        kept = pruner.masks[f"{g.producer}.weight"].reshape(g.channels, -1).any(1)
        assert torch.equal(kept, s >= meta["npn"]["thresholds"][g.producer])  # mask == thresholded scores
        assert s[kept].min() > s[~kept].max()
        assert int(kept.sum()) == meta["npn"]["kept_filters"][g.producer]
    assert abs(meta["achieved_sparsity"]["prunable"] - 0.5) <= 0.005 or "nearest achievable" in meta["achievable_note"]
    assert meta["achieved_sparsity"]["prunable"] == pytest.approx(meta["nearest_achievable_sparsity"], abs=1e-12)
    # no hook left: the masked model computes exactly what a plain copy with the same weights does
    assert not model._forward_pre_hooks and all(not m._forward_hooks for m in model.modules())
    plain = copy.deepcopy(tiny_net)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 8, 8)
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))


def test_resume_in_the_joint_phase_continues_exactly(tiny_net):
    cfg = npn_cfg()
    a_model = copy.deepcopy(tiny_net)
    a = build_pruner(a_model, cfg, SPE, 0)
    run_method_steps(a_model, a, cfg, 3)
    b_model = copy.deepcopy(tiny_net)  # (a model with live gates holds its pruner: not deep-copied)
    b_model.load_state_dict(a_model.state_dict())
    b = build_pruner(b_model, cfg, SPE, 0)
    b.load_state_dict(a.state_dict())
    assert b.seen_step == 3 and not b.frozen
    for k, v in a.network.state_dict().items():
        assert torch.equal(v, b.network.state_dict()[k])
    assert a.optimizer.state_dict()["state"].keys() == b.optimizer.state_dict()["state"].keys()
    x = torch.randn(2, 3, 8, 8)
    a_model.eval(), b_model.eval()
    assert torch.equal(a_model(x), b_model(x))  # the gates are back on the resumed model
