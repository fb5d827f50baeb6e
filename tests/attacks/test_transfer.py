"""Transfer attacks: one semantics for every attack, source-correct / source-fooled per example."""

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
        # FGSM has no early stopping, so crafting for transfer changes nothing for the source itself.
        assert np.array_equal(result["self"][spec].correct, white[spec].correct)
        assert np.array_equal(result["self"][spec].fooled, white[spec].fooled)
    frame = result.to_frame()
    assert list(frame.columns[:2]) == ["source", "target"]
    assert set(frame["target"]) == {"self", "linear"} and (frame["source"] == "net").all()
    assert set(frame.columns[2:]) == set(attacks.FRAME_COLUMNS) | set(attacks.TRANSFER_COLUMNS)
    assert result["linear"].meta == {"source": "net", "target": "linear"}
    # On the source itself every source-fooled example is wrong: the conditional transfer rate is 1.
    own = frame[(frame["target"] == "self") & (frame["attack"] == "fgsm")]
    assert (own["transfer_rate"] == 1.0).all()


def test_not_fooling_the_source_means_the_clean_image_for_every_attack(
    net: nn.Module, linear_model: nn.Module, eval_data
) -> None:
    x, y = eval_data
    specs = ["fgsm:eps=8/255", "pgd:eps=8/255,steps=3", "square:eps=16/255,steps=200"]
    result = transfer(net, {"linear": linear_model}, x, y, specs)
    target = result["linear"]
    clean_linear = evaluate(linear_model, x, y, []).clean_correct
    assert np.array_equal(target.clean_correct, clean_linear)
    assert np.array_equal(target.source_correct, evaluate(net, x, y, []).clean_correct)
    for spec in specs:
        o = target[spec]
        assert not (o.fooled & ~target.source_correct).any()
        assert 0 < o.fooled.sum() < target.source_correct.sum()  # both cases occur at this small eps
        # Where the source was not fooled the target sees the clean image: its clean outcome.
        assert np.array_equal(o.correct[~o.fooled], clean_linear[~o.fooled])
        assert np.isnan(o.perturbation_norm[~o.fooled]).all()
        assert (o.perturbation_norm[o.fooled] <= o.spec.eps + 1e-6).all()
    long = result.outcomes_frame()
    assert {"source_correct", "source_fooled", "perturbation_norm"} <= set(long.columns)
    assert len(long) == (1 + len(specs)) * len(x)


def test_transfer_rate_is_conditional_on_source_success(net: nn.Module, linear_model: nn.Module, eval_data) -> None:
    x, y = eval_data
    spec = "pgd:eps=32/255,steps=5"
    result = transfer(net, {"linear": linear_model}, x, y, [spec])
    o, r = result["linear"][spec], result["linear"]
    base = o.fooled & r.clean_correct
    row = result.to_frame().set_index("key").loc[attacks.AttackSpec.parse(spec).key]
    assert row["n_transfer_base"] == base.sum() > 0
    assert row["transfer_rate"] == pytest.approx((base & ~o.correct).sum() / base.sum())
    assert row["accuracy"] == pytest.approx(o.correct.mean())  # transfer accuracy over all examples
    assert row["transfer_ci_low"] <= row["transfer_rate"] <= row["transfer_ci_high"]


def test_transfer_needs_targets(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    with pytest.raises(AttackInputError, match="at least one target"):
        transfer(net, {}, x, y, ["fgsm:eps=8/255"])
