"""Our ``autoattack`` (assembled from torchattacks parts) against the reference AutoAttack on the same images.

The reference is Croce & Hein's code (fra31/auto-attack), not on the package index: it is a wheel in
``../shared/wheels/`` that CI and a user's clone do not install, so this test skips without it.
benchmarks/autoattack_agreement.py makes the same comparison on trained checkpoints, over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attacks import evaluate

autoattack = pytest.importorskip(
    "autoattack",
    reason="the reference AutoAttack is not installed "
    "(.venv/bin/pip install --no-deps ../shared/wheels/autoattack-0.1-py3-none-any.whl to run this check)",
)

EPS = 0.1  # about 25/255 on digits
N_EXAMPLES = 32


class SaturatedLogits(nn.Module):
    """The net with logits scaled by 1e4: cross-entropy saturates (zero gradient on correct digits in float32).

    APGD-CE and PGD then find nothing, while the scale-invariant DLR loss of APGD-T, FAB-T and
    Square still fool about half the digits, so the whole cascade is exercised and compared.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


def test_the_imported_autoattack_is_the_reference() -> None:
    # torchattacks ships stray top-level modules (robustbench); make sure this is Croce & Hein's package.
    assert Path(autoattack.__file__).parent.name == "autoattack"
    assert hasattr(autoattack.AutoAttack, "run_standard_evaluation")
    assert "torchattacks" not in autoattack.__file__


def test_autoattack_agrees_with_the_reference(net: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = SaturatedLogits(net).eval()
    images, labels = digits
    x, y = images[1400 : 1400 + N_EXAMPLES], labels[1400 : 1400 + N_EXAMPLES]  # not trained on
    ours = evaluate(model, x, y, [f"autoattack:eps={EPS}", f"apgd_ce:eps={EPS}"], seed=0)
    by_name = {o.spec.name: o for o in ours}

    reference = autoattack.AutoAttack(
        model, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu", verbose=False
    )
    x_adv = reference.run_standard_evaluation(x.clone(), y.clone(), bs=N_EXAMPLES)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    with torch.no_grad():
        theirs = (model(x_adv).argmax(1) == y).numpy()

    # The comparison means something only if the reference both fools and fails to fool some
    # digits, and fools clearly more than APGD-CE alone (the later stages of the cascade matter).
    assert 0 < theirs.sum() < ours.clean_correct.sum()
    assert by_name["apgd_ce"].correct.sum() >= theirs.sum() + N_EXAMPLES // 4
    # Different random starts may flip a borderline digit; an assembly without the targeted
    # stages, or at another eps, moves several.
    mine = by_name["autoattack"].correct
    differ = int(np.sum(mine != theirs))
    assert differ <= 2, f"ours {mine.mean():.3f} vs reference {theirs.mean():.3f}: {differ} of {len(y)} digits differ"
