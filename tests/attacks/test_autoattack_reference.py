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

EPS = 0.1  # about 25/255: on the test net roughly half the digits stay robust, so every stage of the cascade runs
N_EXAMPLES = 32


def test_the_imported_autoattack_is_the_reference() -> None:
    # torchattacks ships stray top-level modules (robustbench); make sure this is Croce & Hein's package.
    assert Path(autoattack.__file__).parent.name == "autoattack"
    assert hasattr(autoattack.AutoAttack, "run_standard_evaluation")
    assert "torchattacks" not in autoattack.__file__


def test_autoattack_agrees_with_the_reference(net: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = digits
    x, y = images[1400 : 1400 + N_EXAMPLES], labels[1400 : 1400 + N_EXAMPLES]  # not trained on
    ours = evaluate(net, x, y, [f"autoattack:eps={EPS}"], seed=0)
    (outcome,) = [o for o in ours if o.spec.name == "autoattack"]

    reference = autoattack.AutoAttack(
        net, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu", verbose=False
    )
    x_adv = reference.run_standard_evaluation(x.clone(), y.clone(), bs=N_EXAMPLES)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    with torch.no_grad():
        theirs = (net(x_adv).argmax(1) == y).numpy()

    clean = ours.clean_correct
    # The comparison means something only if the cascade both fools and fails to fool some digits.
    assert 0 < theirs.sum() < clean.sum()
    # Different random starts may flip a borderline digit; a wrong assembly (fewer APGD steps, no
    # targeted stage, another eps) moves several.
    differ = int(np.sum(outcome.correct != theirs))
    assert differ <= 2, f"ours {outcome.correct.mean():.3f} vs reference {theirs.mean():.3f}: {differ} digits differ"
