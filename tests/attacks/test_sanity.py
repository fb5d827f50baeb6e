"""Each sanity flag fires on a model built to trigger it and stays quiet on a normal model."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import attacks
from attacks import SanityFlag, evaluate, sanity_checks, zero_gradient_fraction

E = 0.1  # the eps scale of the landscape models


class Landscape(nn.Module):
    """Two classes; class 0 wins iff ``profile(u) > 0`` with ``u = (mean(x) - 0.5) / E``.

    Every pixel has the same input-gradient sign, so an FGSM / BIM step of size ``a`` moves ``u``
    by exactly ``a / E``: the loss landscape along the attack direction is ``profile``.
    """

    def __init__(self, profile: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.profile = profile
        self.scale = nn.Parameter(torch.tensor(5.0))  # torchattacks needs a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = (x.flatten(1).mean(1) - 0.5) / E
        s = self.scale * self.profile(u)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def landscape_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0.3, 0.7] with mean 0.5 (attacks of size <= 0.2 never clip), all labelled 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g) * 0.4 + 0.3
    x = (x - x.flatten(1).mean(1).view(-1, 1, 1, 1) + 0.5).clamp(0.3, 0.7)
    return x, torch.zeros(n, dtype=torch.long)


def periodic(u: torch.Tensor) -> torch.Tensor:
    """Correct at u = 0, wrong at u = 0.5, correct again at u = 1."""
    return torch.cos(2 * torch.pi * u + torch.pi / 8)


def trap(u: torch.Tensor) -> torch.Tensor:
    """A loss maximum at u = 0.375 that small steps circle around; wrong only beyond u ~ 0.9."""
    return 0.1 + 4 * (u - 0.375) ** 2 - 40 * torch.relu(u - 0.75) ** 2


def valley(u: torch.Tensor) -> torch.Tensor:
    """Wrong only in a narrow valley around u = 0.27; a second step leaves it again."""
    return 1 - 2 * torch.exp(-(((u - 0.27) / 0.1) ** 2))


class Quantised(nn.Module):
    """Rounds its input to 3 grey levels first: the input gradient is zero everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 2) / 2)


class Noisy(nn.Module):
    """Adds large random noise to the logits even in eval mode: predictions are not reproducible."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return logits + 20 * torch.randn_like(logits)


def flag(flags: list[SanityFlag], name: str) -> SanityFlag:
    (found,) = [f for f in flags if f.name == name]
    return found


def test_quiet_on_a_normal_model(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    specs = (
        ["fgsm:eps=0", "square:eps=16/255,steps=50", "noise:eps=16/255", "noise:eps=0.3"]
        + attacks.expand_eps("fgsm", ["4/255", "16/255", "0.3"])
        + attacks.expand_eps("pgd", ["4/255", "16/255", "0.3"], steps=10)
    )
    result = evaluate(net, x, y, specs)
    transferred = attacks.transfer(copy.deepcopy(net), {"net": net}, x, y, specs)["net"]
    fraction = zero_gradient_fraction(net, x, y)
    flags = sanity_checks(result, zero_grad_fraction=fraction, large_eps={"Linf": 0.3}, transfer=transferred)
    names = [f.name for f in flags]
    assert names == list(attacks.sanity.CHECK_NAMES)
    ran = [f for f in flags if f.name != "unbounded_fools_all"]  # its quiet case: test_unbounded_quiet
    assert all(f.status == "passed" for f in ran), attacks.flags_frame(flags).to_string()
    assert fraction == 0.0
    # The same checks on the table alone (no per-example data) agree.
    again = sanity_checks(result.to_frame(), zero_grad_fraction=fraction, large_eps={"Linf": 0.3}, transfer=transferred)
    assert [f.status for f in again] == [f.status for f in flags]


def test_unbounded_attack_that_fools_everyone_passes_and_a_masked_model_fails(net: nn.Module, eval_data) -> None:
    x, y = eval_data[0][:12], eval_data[1][:12]
    ok = evaluate(net, x, y, ["cw:steps=200,binary_search_steps=5"])
    assert flag(sanity_checks(ok), "unbounded_fools_all").status == "passed"
    masked = evaluate(Quantised(net), x, y, ["cw:steps=30,binary_search_steps=2"])
    f = flag(sanity_checks(masked), "unbounded_fools_all")
    assert f.flagged and "fools only" in f.evidence


def test_noise_and_transfer_beating_white_box_gradients_are_flagged(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    model = Quantised(net)
    specs = ["fgsm:eps=0.3", "noise:eps=0.3"]
    result = evaluate(model, x, y, specs)
    assert result["noise:eps=0.3"].accuracy < result["fgsm:eps=0.3"].accuracy - 0.05
    transferred = attacks.transfer(net, {"masked": model}, x, y, specs)["masked"]  # crafted on the clean copy
    flags = sanity_checks(result, transfer=transferred)
    f = flag(flags, "noise_not_stronger")
    assert f.flagged and "noise" in f.evidence and "beats the best gradient attack fgsm@0.3" in f.evidence
    f = flag(flags, "whitebox_not_weaker_than_transfer")
    assert f.flagged and "weaker than the same attack transferred" in f.evidence
    assert flag(sanity_checks(result), "whitebox_not_weaker_than_transfer").status == "not_run"


def test_eps0_flags_a_model_with_unreproducible_predictions(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    torch.manual_seed(0)
    result = evaluate(Noisy(net), x, y, ["fgsm:eps=0"])
    f = flag(sanity_checks(result), "eps0_equals_clean")
    assert f.flagged and "differ from clean" in f.evidence
    assert flag(sanity_checks(evaluate(net, x, y, ["fgsm:eps=0"])), "eps0_equals_clean").status == "passed"


def test_monotone_flags_accuracy_that_rises_with_eps() -> None:
    x, y = landscape_data()
    result = evaluate(Landscape(periodic), x, y, ["fgsm:eps=0.05", "fgsm:eps=0.1"])
    assert result["fgsm:eps=0.05"].accuracy == 0 and result["fgsm:eps=0.1"].accuracy == 1
    f = flag(sanity_checks(result), "monotone_in_eps")
    assert f.flagged and "rises to fgsm@0.1" in f.evidence


def test_iterative_weaker_than_fgsm_is_flagged() -> None:
    x, y = landscape_data()
    result = evaluate(Landscape(trap), x, y, ["fgsm:eps=0.1", "bim:eps=0.1,steps=10"])
    assert result["fgsm:eps=0.1"].accuracy == 0 and result["bim:eps=0.1,steps=10"].accuracy == 1
    f = flag(sanity_checks(result), "iterative_not_weaker_than_fgsm")
    assert f.flagged and "bim-10@0.1 100.0% is weaker than fgsm@0.1 0.0%" in f.evidence


def test_iterative_vs_fgsm_only_where_the_steps_reach_the_ball_edge() -> None:
    x, y = landscape_data()
    # 2 steps of eps/4 cannot reach the edge that FGSM jumps to: not a comparison to make.
    result = evaluate(Landscape(trap), x, y, ["fgsm:eps=0.1", "bim:eps=0.1,steps=2"])
    assert result["fgsm:eps=0.1"].accuracy == 0 and result["bim:eps=0.1,steps=2"].accuracy == 1
    assert flag(sanity_checks(result), "iterative_not_weaker_than_fgsm").status == "not_run"


def test_zero_gradient_model_trips_gradient_checks(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    model = Quantised(net)
    assert zero_gradient_fraction(model, x, y) == 1.0
    result = evaluate(model, x, y, ["fgsm:eps=0.3", "square:eps=0.3,steps=100"])
    assert result["clean"].accuracy > 0.2
    assert np.array_equal(result["fgsm:eps=0.3"].correct, result.clean_correct)  # FGSM cannot move
    flags = sanity_checks(result, zero_grad_fraction=zero_gradient_fraction(model, x, y), large_eps={"Linf": 0.3})
    assert flag(flags, "zero_gradients").flagged
    f = flag(flags, "square_not_stronger")
    assert f.flagged and "beats the best gradient attack fgsm@0.3" in f.evidence
    # Gradient attacks alone cannot bring accuracy down even at a huge eps.
    gradient_only = evaluate(model, x, y, ["fgsm:eps=0.3", "pgd:eps=0.3,steps=5"])
    f = flag(sanity_checks(gradient_only, large_eps={"Linf": 0.3}), "large_eps_near_zero")
    assert f.flagged and "still leaves" in f.evidence


def test_not_applicable_when_nothing_to_compare(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    flags = sanity_checks(evaluate(net, x, y, ["fgsm:eps=8/255"]))
    assert all(f.status == "not_run" and not f.passed for f in flags), attacks.flags_frame(flags).to_string()


def test_multi_model_frame_is_checked_per_model(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    normal = evaluate(net, x, y, ["fgsm:eps=0.05", "fgsm:eps=0.1"]).to_frame().assign(model_id="normal")
    lx, ly = landscape_data()
    odd = evaluate(Landscape(periodic), lx, ly, ["fgsm:eps=0.05", "fgsm:eps=0.1"]).to_frame().assign(model_id="odd")
    import pandas as pd

    flags = sanity_checks(pd.concat([normal, odd]))
    monotone = {f.scope: f.status for f in flags if f.name == "monotone_in_eps"}
    assert monotone == {"normal": "passed", "odd": "failed"}
    with pytest.raises(ValueError, match="lacks columns"):
        sanity_checks(pd.DataFrame({"key": ["clean"]}))
