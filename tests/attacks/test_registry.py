"""Registry builders: the torchattacks objects get our defaults; AutoAttack runs at reference settings."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

import attacks
from attacks import AttackInputError, AttackSpec, evaluate
from attacks.registry import build_torchattack


@pytest.mark.parametrize("n_classes", [10, 100])
def test_autoattack_uses_the_reference_standard_settings(linear_model: nn.Module, n_classes: int) -> None:
    attack = build_torchattack(linear_model, AttackSpec.parse("autoattack:eps=8/255"), n_classes=n_classes, seed=5)
    apgd, apgdt, fab, square = attack.attacks
    assert isinstance(apgd, torchattacks.APGD) and apgd.steps == 100 and apgd.loss == "ce" and apgd.n_restarts == 1
    assert isinstance(apgdt, torchattacks.APGDT) and apgdt.steps == 100 and apgdt.n_target_classes == 9
    assert isinstance(fab, torchattacks.FAB) and fab.steps == 100 and fab.multi_targeted and fab.n_target_classes == 9
    assert isinstance(square, torchattacks.Square) and square.n_queries == 5000 and square.p_init == 0.8
    assert not square.rescale_schedule  # the reference's p schedule (resc_schedule=False)
    assert {a.seed for a in attack.attacks} == {5}
    assert all(a.eps == pytest.approx(8 / 255) and a.norm == "Linf" for a in attack.attacks)


def test_spec_fields_reach_the_torchattacks_object(linear_model: nn.Module) -> None:
    pgd = build_torchattack(linear_model, AttackSpec.parse("pgd:eps=4/255,steps=7"), n_classes=10, seed=0)
    assert (pgd.eps, pgd.alpha, pgd.steps, pgd.random_start) == (
        pytest.approx(4 / 255),
        pytest.approx(1 / 255),
        7,
        True,
    )
    with pytest.raises(attacks.AttackSpecError, match="no torchattacks object"):
        build_torchattack(linear_model, AttackSpec.parse("cw:c=0.5,steps=9"), n_classes=10, seed=0)  # ours
    square = build_torchattack(
        linear_model, AttackSpec.parse("square:norm=L2,eps=0.5,restarts=2"), n_classes=10, seed=1
    )
    assert (square.norm, square.n_queries, square.n_restarts) == ("L2", 5000, 2)
    apgdt = build_torchattack(linear_model, AttackSpec.parse("apgd_t:eps=8/255"), n_classes=5, seed=0)
    assert apgdt.n_target_classes == 4  # fewer classes than the reference 9 targets


def test_too_few_classes_and_parameter_free_models_fail_clearly() -> None:
    two_classes = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(AttackInputError, match="at least 4 classes"):
        evaluate(two_classes, x, y, ["apgd_t:eps=8/255,steps=2"])

    class Fixed(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.stack([images.mean((1, 2, 3)), 0.5 - images.mean((1, 2, 3))], 1)

    # The efficient engines need no parameters; torchattacks objects do.
    assert evaluate(Fixed(), x, y, ["fgsm:eps=8/255", "pgd:eps=8/255,steps=2"]).n_examples == 4
    with pytest.raises(AttackInputError, match="needs a model with parameters"):
        evaluate(Fixed(), x, y, ["square:eps=8/255,steps=5"])
    assert "apgd_t" in attacks.list_attacks()


def test_tpgd_maximises_the_kl_divergence_from_the_clean_prediction_inside_its_ball(
    trained_net: nn.Module, digits
) -> None:
    x = digits[0][:64]
    spec = AttackSpec.parse("tpgd:eps=16/255,steps=5")
    tpgd = build_torchattack(trained_net, spec, n_classes=10, seed=0)
    assert isinstance(tpgd, torchattacks.TPGD)
    assert (tpgd.eps, tpgd.alpha, tpgd.steps) == (pytest.approx(16 / 255), pytest.approx(4 / 255), 5)
    trained_net.eval()
    torch.manual_seed(0)
    adv = tpgd(x, torch.zeros(len(x), dtype=torch.long))  # labels are not used
    noise = (x + (torch.rand_like(x) * 2 - 1) * 16 / 255).clamp(0, 1)
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1

    def kl(perturbed: torch.Tensor) -> float:
        with torch.no_grad():
            clean = torch.softmax(trained_net(x), 1)
            return float(torch.nn.functional.kl_div(trained_net(perturbed).log_softmax(1), clean, reduction="sum"))

    assert kl(adv) > 5 * kl(noise)  # it climbs the KL, far past random noise of the same size
