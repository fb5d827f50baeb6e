"""The gradual pruner in a training loop: zeros stay zero (weights and optimizer state), masks only
gain zeros and freeze at the end, resume equals no resume, regrowth only when allowed."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F

from robustsparse.errors import CheckpointError
from robustsparse.sparsity import CampfirePruner, SparsityConfig, cubic_sparsity, verify_structure

SPE = 3  # steps per epoch
EPOCHS = 6


def gradual(granularity: str = "kernel", **kw) -> SparsityConfig:
    base = {
        "method": "campfire",
        "granularity": granularity,
        "target_sparsity": 0.7,
        "start_epoch": 1,
        "end_epoch": 4,
        "update_every": 2,
        "update_unit": "steps",
    }
    return SparsityConfig(**{**base, **kw})


def make_optimizer(model, kind: str) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)


def batches(n: int):
    g = torch.Generator().manual_seed(123)
    return [(torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def train(model, optimizer, pruner, data, start: int, stop: int, check=None) -> None:
    """Steps start+1 .. stop (global_step counts steps taken), the lead's loop shape."""
    model.train()
    for step in range(start + 1, stop + 1):
        x, y = data[step - 1]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        pruner.step(step)
        pruner.apply_(optimizer)
        if check is not None:
            check(step)


@pytest.mark.parametrize("opt_kind", ["sgd", "adamw"])
@pytest.mark.parametrize("granularity", ["element", "kernel", "window", "window+kernel", "filter", "n:m"])
def test_pruned_weights_and_optimizer_state_stay_zero_and_masks_only_gain_zeros(
    tiny_net, granularity, opt_kind
) -> None:
    cfg = gradual(granularity, target_sparsity=0.5 if granularity == "n:m" else 0.7)
    pruner = CampfirePruner(tiny_net, cfg, SPE)
    optimizer = make_optimizer(tiny_net, opt_kind)
    pruner.step(0)
    pruner.apply_(optimizer)
    params = dict(tiny_net.named_parameters())
    history = {"prev": {k: v.clone() for k, v in pruner.masks.items()}, "targets": [], "frozen_at": None}

    def check(step: int) -> None:
        for name, mask in pruner.masks.items():
            p = params[name]
            assert bool((p[~mask] == 0).all()), f"weight leak in {name} at step {step}"
            assert not torch.signbit(p[~mask]).any(), "masked weights must be +0.0"
            for value in optimizer.state[p].values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    assert bool((value[~mask] == 0).all()), f"optimizer state leak in {name} at step {step}"
            assert not bool((mask & ~history["prev"][name]).any()), f"mask of {name} regrew at step {step}"
        if history["frozen_at"] is not None:
            assert all(torch.equal(pruner.masks[k], history["frozen_masks"][k]) for k in pruner.masks)
        elif pruner.frozen:
            history["frozen_at"] = step
            history["frozen_masks"] = {k: v.clone() for k, v in pruner.masks.items()}
        history["prev"] = {k: v.clone() for k, v in pruner.masks.items()}
        history["targets"].append(pruner.current_target)

    train(tiny_net, optimizer, pruner, batches(EPOCHS * SPE), 0, EPOCHS * SPE, check)
    assert history["frozen_at"] == cfg.end_epoch * SPE
    assert history["targets"] == sorted(history["targets"])
    assert pruner.current_target == cfg.target_sparsity
    meta = pruner.metadata()
    json.dumps(meta)  # JSON-able
    assert abs(pruner.achieved()["prunable"] - meta["nearest_achievable_sparsity"]) <= 0.005
    assert verify_structure(tiny_net, pruner.masks, meta) == []


@pytest.mark.parametrize("granularity", ["kernel", "window", "filter"])
@pytest.mark.parametrize("stop_after", [2, 5, 8, 14])  # before pruning, mid-pruning, at an update, after the freeze
def test_resume_from_a_saved_state_gives_the_same_masks_and_weights(
    tiny_net, granularity: str, stop_after: int
) -> None:
    cfg = gradual(granularity, allow_regrowth=(granularity == "kernel"))
    data = batches(EPOCHS * SPE)
    start_model = copy.deepcopy(tiny_net)

    torch.manual_seed(7)
    model_a = copy.deepcopy(start_model)
    opt_a = make_optimizer(model_a, "sgd")
    pruner_a = CampfirePruner(model_a, cfg, SPE)
    pruner_a.step(0)
    pruner_a.apply_(opt_a)
    train(model_a, opt_a, pruner_a, data, 0, EPOCHS * SPE)

    model_b = copy.deepcopy(start_model)
    opt_b = make_optimizer(model_b, "sgd")
    pruner_b = CampfirePruner(model_b, cfg, SPE)
    pruner_b.step(0)
    pruner_b.apply_(opt_b)
    train(model_b, opt_b, pruner_b, data, 0, stop_after)
    buffer = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "pruner": pruner_b.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model_c = copy.deepcopy(start_model)
    model_c.load_state_dict(saved["model"])
    opt_c = make_optimizer(model_c, "sgd")
    opt_c.load_state_dict(saved["opt"])
    pruner_c = CampfirePruner(model_c, cfg, SPE)
    pruner_c.load_state_dict(saved["pruner"])
    pruner_c.apply_(opt_c)
    train(model_c, opt_c, pruner_c, data, stop_after, EPOCHS * SPE)

    assert pruner_c.frozen and pruner_a.frozen
    assert set(pruner_a.masks) == set(pruner_c.masks)
    assert all(torch.equal(pruner_a.masks[k], pruner_c.masks[k]) for k in pruner_a.masks)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name


def test_state_saved_with_other_settings_or_foreign_is_refused(tiny_net) -> None:
    pruner = CampfirePruner(tiny_net, gradual("kernel"), SPE)
    state = pruner.state_dict()
    other = CampfirePruner(copy.deepcopy(tiny_net), gradual("kernel", target_sparsity=0.5), SPE)
    with pytest.raises(CheckpointError, match="target_sparsity"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="steps per epoch"):
        CampfirePruner(copy.deepcopy(tiny_net), gradual("kernel"), SPE + 1).load_state_dict(state)
    with pytest.raises(CheckpointError, match="foreign"):
        pruner.load_state_dict({"masks": {}})
    # a trainer-only setting may differ
    CampfirePruner(copy.deepcopy(tiny_net), gradual("kernel", lr_mode="hold"), SPE).load_state_dict(state)


def _shrink_kept_weights_then_update(model, allow_regrowth: bool) -> tuple[dict, dict, CampfirePruner]:
    cfg = SparsityConfig(
        method="campfire",
        granularity="element",
        target_sparsity=0.5,
        schedule="one_shot",
        start_epoch=0,
        end_epoch=2,
        update_every=1,
        update_unit="epochs",
        allow_regrowth=allow_regrowth,
    )
    pruner = CampfirePruner(model, cfg, steps_per_epoch=1)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner.step(0)
    before = {k: v.clone() for k, v in pruner.masks.items()}
    with torch.no_grad():  # the kept weights decay to almost nothing: the pruned ones should now win
        for name in pruner.masks:
            p = dict(model.named_parameters())[name]
            p.mul_(1e-3)
    pruner.step(1)
    return before, dense, pruner


@pytest.mark.parametrize("granularity", ["element", "kernel", "window+kernel", "filter"])
def test_without_regrowth_pruned_weights_stay_pruned_whatever_the_weights_say(tiny_net, granularity: str) -> None:
    """Only the previous masks can decide here: every kept weight is 0 (tied with the pruned
    ones) and the pruned positions hold large leftovers of an optimizer step (before apply_)."""
    cfg = SparsityConfig(
        method="campfire",
        granularity=granularity,
        target_sparsity=0.5,
        schedule="one_shot",
        start_epoch=0,
        end_epoch=2,
        update_unit="epochs",
    )
    pruner = CampfirePruner(tiny_net, cfg, steps_per_epoch=1)
    pruner.step(0)
    before = {k: v.clone() for k, v in pruner.masks.items()}
    params = dict(tiny_net.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, mask in before.items():
            p = params[name]
            p[mask] = 0.0
            p[~mask] = 1.0 + torch.rand(int((~mask).sum()), generator=g)
    assert pruner.step(1) is False
    assert all(torch.equal(pruner.masks[k], before[k]) for k in before)


def test_regrowth_only_when_allowed(tiny_net) -> None:
    model = copy.deepcopy(tiny_net)
    before, dense, pruner = _shrink_kept_weights_then_update(model, allow_regrowth=True)
    params = dict(model.named_parameters())
    regrown = {k: pruner.masks[k] & ~before[k] for k in before}
    assert any(bool(r.any()) for r in regrown.values())
    for k, r in regrown.items():  # a regrown weight comes back with its dense value
        assert torch.equal(params[k][r], dense[k][r])
    assert pruner.achieved()["prunable"] == pytest.approx(0.5, abs=0.005)


def test_mask_grads_zeroes_masked_gradients(tiny_net, tiny_batch) -> None:
    pruner = CampfirePruner(tiny_net, gradual("kernel", schedule="one_shot", start_epoch=0, end_epoch=0), SPE)
    pruner.step(0)
    x, y = tiny_batch
    F.cross_entropy(tiny_net(x), y).backward()
    pruner.mask_grads_()
    params = dict(tiny_net.named_parameters())
    for name, mask in pruner.masks.items():
        assert bool((params[name].grad[~mask] == 0).all())
        assert bool((params[name].grad[mask] != 0).any())


def test_method_none_is_a_no_op(tiny_net) -> None:
    before = copy.deepcopy(tiny_net.state_dict())
    pruner = CampfirePruner(tiny_net, SparsityConfig(), SPE)
    assert pruner.masks == {} and pruner.frozen and not pruner.step(5)
    pruner.apply_(None)
    assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())
    json.dumps(pruner.metadata())


def test_catch_up_after_missed_updates_reaches_the_latest_target(tiny_net) -> None:
    cfg = gradual("element")
    pruner = CampfirePruner(tiny_net, cfg, SPE)
    # update points: 3, 5, 7, ... (start_epoch 1 x 3 steps, every 2 steps); no call for a while
    assert pruner.step(8)
    assert pruner.last_update_step == 7  # one update, with the latest point's target
    assert pruner.current_target == pytest.approx(cubic_sparsity(7 / SPE, initial=0.0, final=0.7, start=1, end=4))
    assert not pruner.step(8)
    assert pruner.step(100) and pruner.frozen and pruner.current_target == cfg.target_sparsity


class _TwoWeights(torch.nn.Module):
    """y = w0 * x0 + w1 * x1: with x = (1, 1) both weights always get the same gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.1, 0.2]]))  # w0 is pruned, w1 kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.mark.parametrize("opt_kind", ["sgd", "adamw"])
def test_regrowth_pruned_weights_keep_their_optimizer_state_until_the_freeze(opt_kind: str) -> None:
    model = _TwoWeights()
    cfg = SparsityConfig(
        method="campfire",
        granularity="element",
        target_sparsity=0.5,
        schedule="one_shot",
        start_epoch=0,
        end_epoch=3,
        update_unit="epochs",
        allow_regrowth=True,
        keep_first_conv_dense=False,
        keep_last_linear_dense=False,
    )
    pruner = CampfirePruner(model, cfg, steps_per_epoch=2)  # mask updates at steps 0, 2, 4; frozen at 6
    if opt_kind == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    w = model.fc.weight
    x = torch.ones(1, 2)

    def train_step(step: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        (-model(x).sum()).backward()  # the same gradient (-1) for both weights at every step
        optimizer.step()
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)

    def dense() -> torch.Tensor:
        shadow = pruner.state_dict()["shadow"].get("fc.weight", torch.zeros_like(w))
        return torch.where(pruner.masks["fc.weight"], w.detach(), shadow)

    pruner.step(0, optimizer)
    pruner.apply_(optimizer)
    start = dense().clone()
    for step in range(1, 6):
        train_step(step)
        assert pruner.masks["fc.weight"].tolist() == [[False, True]] and float(w.detach()[0, 0]) == 0.0
    moved = (dense() - start)[0]
    # A fair competition: with the same gradient history the pruned weight moves as the kept one.
    assert float(moved[1]) > 0.03
    assert float(moved[0]) == pytest.approx(float(moved[1]), rel=1e-5)

    train_step(6)  # the freeze: the pruned weight's optimizer state is cleared now
    assert pruner.frozen and pruner.state_dict()["shadow"] == {}
    for _ in range(2):
        states = [v for v in optimizer.state[w].values() if isinstance(v, torch.Tensor) and v.shape == w.shape]
        assert states and all(float(v[0, 0]) == 0.0 and float(v[0, 1]) != 0.0 for v in states)
        assert float(w.detach()[0, 0]) == 0.0
        train_step(7)


@pytest.mark.parametrize("granularity", ["element", "kernel", "window", "window+kernel", "filter", "channel", "n:m"])
def test_masks_are_ranked_on_the_masked_weights(tiny_net, granularity: str) -> None:
    """What the last optimizer step wrote into pruned positions (before `apply_`) must not count."""
    cfg = gradual(granularity, target_sparsity=0.5 if granularity == "n:m" else 0.7)
    pruner = CampfirePruner(tiny_net, cfg, SPE)
    pruner.step(0)
    pruner.step(5)  # update points 3, 5, 7...: partly pruned now (window+kernel: kernels and windows)
    twin_model = copy.deepcopy(tiny_net)
    twin = CampfirePruner(twin_model, cfg, SPE)
    twin.load_state_dict(pruner.state_dict())
    g = torch.Generator().manual_seed(0)
    params = dict(tiny_net.named_parameters())
    with torch.no_grad():  # large leftovers at pruned positions in one copy only
        for name, mask in pruner.masks.items():
            p = params[name]
            p[~mask] = 10.0 + torch.rand(int((~mask).sum()), generator=g)
    assert any(not bool(m.all()) for m in pruner.masks.values())
    pruner.step(7)
    twin.step(7)
    assert all(torch.equal(pruner.masks[k], twin.masks[k]) for k in pruner.masks)
