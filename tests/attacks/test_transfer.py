"""Transfer attacks: crafted on a source, scored on targets with the same outputs as evaluate."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import attacks
from attacks import AttackInputError, evaluate, transfer


def test_transfer_to_itself_matches_white_box_fgsm(net: nn.Module, linear_model: nn.Module, eval_data) -> None:
    x, y = eval_data
    specs = attacks.expand_eps("fgsm", ["8/255", "32/255"])
    result = transfer(net, {"self": net, "linear": linear_model}, x, y, specs, source_name="net")
    white = evaluate(net, x, y, specs)
    for spec in specs:
        # FGSM has no early stopping, so crafting on every example changes nothing for the source itself.
        assert np.array_equal(result["self"][spec].correct, white[spec].correct)
    frame = result.to_frame()
    assert list(frame.columns[:2]) == ["source", "target"]
    assert set(frame["target"]) == {"self", "linear"} and (frame["source"] == "net").all()
    assert set(frame.columns[2:]) == set(attacks.FRAME_COLUMNS)
    assert result["linear"].meta == {"source": "net", "target": "linear"}


def test_transfer_respects_each_targets_clean_accuracy(net: nn.Module, linear_model: nn.Module, eval_data) -> None:
    x, y = eval_data
    result = transfer(net, {"linear": linear_model}, x, y, ["pgd:eps=32/255,steps=5"])
    target = result["linear"]
    assert np.array_equal(target.clean_correct, evaluate(linear_model, x, y, []).clean_correct)
    outcome = target["pgd:eps=32/255,steps=5"]
    assert not (outcome.correct & ~target.clean_correct).any()
    assert outcome.attacked.all()  # every example is crafted on the source
    assert outcome.linf.max() <= 32 / 255 + 1e-6
    long = result.outcomes_frame()
    assert len(long) == 2 * len(x) and set(long["target"]) == {"linear"}


def test_transfer_needs_targets(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    with pytest.raises(AttackInputError, match="at least one target"):
        transfer(net, {}, x, y, ["fgsm:eps=8/255"])
