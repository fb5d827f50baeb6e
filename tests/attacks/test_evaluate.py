"""attacks.evaluate: outcomes, invariants, checks, model-mode hygiene, efficient engines = plain attacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from scipy import stats
from torch import nn

import attacks
from attacks import AttackInputError, AttackSpec, evaluate, fast_attacks
from attacks.checks import check_adversarial
from attacks.errors import AttackCheckError
from attacks.fast_attacks import derive_seed, random_start

FGSM_EPS = ["1/255", "4/255", "16/255", "32/255", "0.2"]


def test_frame_columns_and_accounting(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    result = evaluate(net, x, y, ["fgsm:eps=16/255", "pgd:eps=16/255,steps=5"], batch_size=50)
    frame = result.to_frame()
    assert list(frame.columns) == list(attacks.FRAME_COLUMNS)
    assert frame["key"].tolist()[0] == "clean" and frame.loc[0, "eps"] == 0
    assert (frame["n_examples"] == len(x)).all()
    assert np.allclose(frame["accuracy"], frame["n_correct"] / frame["n_examples"])
    assert ((frame["ci_low"] <= frame["accuracy"]) & (frame["accuracy"] <= frame["ci_high"])).all()
    clean = result["clean"]
    assert clean.n_correct == int(frame.loc[0, "n_clean_correct"])
    for o in result:
        assert not (o.correct & ~result.clean_correct).any()  # robust implies clean-correct
        expected = (result.clean_correct & ~o.correct).sum() / result.clean_correct.sum()
        assert frame.set_index("key").loc[o.spec.key, "attack_success_rate"] == pytest.approx(expected)
    long = result.outcomes_frame()
    assert list(long.columns) == list(attacks.OUTCOME_COLUMNS)
    assert len(long) == len(x) * len(result)
    assert long.groupby("key", sort=False)["correct"].sum().tolist() == frame["n_correct"].tolist()


def test_outcomes_are_the_predictions_of_the_attacks_output_images(net: nn.Module, eval_data) -> None:
    # Recompute the adversarial images with the attack maths directly and classify them: the
    # outcomes must be exactly those predictions (not a flag the loop could get wrong).
    x, y = eval_data
    specs = [AttackSpec.parse(t) for t in ("fgsm:eps=16/255", "pgd:eps=8/255,steps=5", "pgd_l2:eps=0.5,steps=5")]
    result = evaluate(net, x, y, specs)
    rows = torch.from_numpy(result.clean_correct).nonzero().squeeze(1)
    net.eval()
    pieces = list(fast_attacks.fgsm_sweep(net, x, y, specs[:1], rows, max_rows=256))
    for spec in specs[1:]:
        pieces += fast_attacks.iterative(
            net, x, y, [spec], rows, seeds=[0], example_index=torch.arange(len(x)), max_rows=256
        )
    for piece in pieces:
        o = result[piece.spec]
        with torch.no_grad():
            still = (net(piece.adversarial).argmax(1) == y[piece.rows]).numpy()
        assert np.array_equal(o.correct[piece.rows.numpy()], still), piece.spec.key
        assert not o.correct[~result.clean_correct].any()  # clean mistakes are never robust
        assert 0 < o.n_correct < result["clean"].n_correct  # the attack moved some, not all
        delta = (piece.adversarial - x[piece.rows]).flatten(1)
        norms = delta.abs().amax(1) if piece.spec.norm == "Linf" else delta.norm(dim=1)
        assert (norms <= piece.spec.eps * (1 + 1e-5) + 1e-6).all()
        assert ((piece.adversarial >= 0) & (piece.adversarial <= 1)).all()


class GradientProbe(nn.Module):
    """Counts the forward passes whose input requires a gradient (an attack computing one)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gradient_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gradient_calls += int(x.requires_grad)
        return self.inner(x)


def test_eps_zero_runs_the_attack_and_equals_clean(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    for text in ("pgd:eps=0", "pgd_l2:eps=0", "bim:eps=0", "square:eps=0,steps=5", "noise:eps=0"):
        probe = GradientProbe(net)
        result = evaluate(probe, x, y, [text])
        o = result[text]
        if o.spec.name not in ("square", "noise"):
            assert probe.gradient_calls > 0, f"{text} was not run"  # replaced by the identity before
        assert np.array_equal(o.correct, result.clean_correct), o.spec.key
        assert np.array_equal(o.attacked, result.clean_correct)
        assert (o.linf == 0).all() and (o.l2 == 0).all() and not o.fooled.any()


def test_model_mode_and_requires_grad_restored(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    reference = evaluate(net, x, y, ["fgsm:eps=8/255"])
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    net.train()
    net.conv2.eval()  # a mixed state must come back exactly
    net.fc.weight.requires_grad_(False)
    result = evaluate(net, x, y, ["fgsm:eps=8/255", "square:eps=8/255,steps=20"])
    assert net.training and net.bn1.training and not net.conv2.training and net.drop.training
    assert not net.fc.weight.requires_grad and net.conv1.weight.requires_grad
    # eval mode was used: dropout/BN in train mode would change the outcomes
    assert np.array_equal(result["fgsm:eps=8/255"].correct, reference["fgsm:eps=8/255"].correct)
    # attacks need input gradients only: parameter gradients are left as they were
    for before, p in zip(grads, net.parameters()):
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)


class _Fails(nn.Module):
    """Raises on the n-th forward call."""

    def __init__(self, inner: nn.Module, fail_at: int) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return self.inner(x)


def test_mode_restored_after_an_exception(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    model = _Fails(net, fail_at=3)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, x, y, ["pgd:eps=8/255"], batch_size=40)
    assert model.training and net.training and all(p.requires_grad for p in net.parameters())


def hand_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Textbook FGSM (mean loss), independent of the package."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return torch.clamp(x.detach() + eps * grad.sign(), 0, 1)


def test_fgsm_equals_hand_written_fgsm(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    result = evaluate(net, x, y, attacks.expand_eps("fgsm", FGSM_EPS))
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).numpy()
    assert np.array_equal(clean, result.clean_correct)
    for eps in FGSM_EPS:
        adv = hand_fgsm(net, x, y, attacks.parse_eps(eps))
        with torch.no_grad():
            correct = (net(adv).argmax(1) == y).numpy() & clean
        outcome = result[f"fgsm:eps={eps}"]
        assert np.array_equal(outcome.correct, correct), eps
        linf, l2 = attacks.perturbation_norms(x, adv)
        assert np.allclose(outcome.l2[clean], l2.numpy()[clean], atol=1e-6)


def test_fgsm_sweep_equals_per_eps_loop_exactly(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    specs = attacks.expand_eps("fgsm", FGSM_EPS)
    sweep = evaluate(net, x, y, specs, batch_size=32)
    plain = evaluate(net, x, y, specs, batch_size=32, efficient=False)  # one torchattacks.FGSM per eps
    for spec in specs:
        alone = evaluate(net, x, y, [spec], batch_size=32)[spec]
        assert np.array_equal(sweep[spec].correct, alone.correct)
        assert np.array_equal(sweep[spec].linf, alone.linf) and np.array_equal(sweep[spec].l2, alone.l2)
        assert np.array_equal(sweep[spec].correct, plain[spec].correct)


def plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, seed: int) -> np.ndarray:
    """torchattacks' PGD update from the package's per-example random starts; final iterate scored."""
    starts = torch.stack(
        [random_start(spec, x[i], derive_seed(spec.name, spec.norm, repr(spec.eps), seed, i, 0)) for i in range(len(x))]
    )
    adv = starts
    for _ in range(spec.steps):
        adv = adv.clone().requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + spec.alpha * grad.sign()
        adv = torch.clamp(x + torch.clamp(adv - x, -spec.eps, spec.eps), 0, 1)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).numpy()


def test_early_stopped_pgd_is_never_weaker_than_the_plain_loop(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    for eps in ("16/255", "32/255"):
        spec = AttackSpec.parse(f"pgd:eps={eps},steps=10")
        ours = evaluate(net, x, y, [spec], seed=3)
        plain = plain_pgd(net, x, y, spec, seed=3) & ours.clean_correct
        assert not (ours[spec].correct & ~plain).any()  # wherever the plain loop is fooled, so are we
        assert ours[spec].n_correct <= plain.sum()


def test_bim_equals_torchattacks_or_is_stronger(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    spec = AttackSpec.parse("bim:eps=16/255,steps=10")
    ours = evaluate(net, x, y, [spec])[spec]
    clean = evaluate(net, x, y, []).clean_correct
    adv = torchattacks.BIM(net, eps=spec.eps, alpha=spec.alpha, steps=spec.steps)(x, y)
    with torch.no_grad():
        plain = (net(adv).argmax(1) == y).numpy() & clean
    assert not (ours.correct & ~plain).any()  # fooled by the plain loop => fooled by ours


def test_stacked_eps_and_batch_size_do_not_change_results(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    specs = attacks.expand_eps("pgd", ["8/255", "16/255", "32/255"], steps=5)
    together = evaluate(net, x, y, specs, batch_size=64, seed=1)
    for spec in specs:
        alone = evaluate(net, x, y, [spec], batch_size=7, seed=1)[spec]
        assert np.array_equal(together[spec].correct, alone.correct)
        assert np.allclose(together[spec].l2, alone.l2)


def test_more_steps_extend_the_same_trajectory(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    result = evaluate(net, x, y, ["pgd:eps=16/255,steps=2", "pgd:eps=16/255,steps=4", "pgd:eps=16/255,steps=8"])
    a, b, c = (o.correct for o in list(result)[1:])
    assert not (b & ~a).any() and not (c & ~b).any()


def test_restarts_never_weaken(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    result = evaluate(net, x, y, ["pgd:eps=24/255,steps=3", "pgd:eps=24/255,steps=3,restarts=3"])
    one, three = (o.correct for o in list(result)[1:])
    assert not (three & ~one).any()


def test_seeds_change_random_starts_and_rng_is_untouched(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    state = torch.get_rng_state()
    a = evaluate(net, x, y, ["pgd:eps=32/255,steps=1", "square:eps=32/255,steps=30"], seed=0)
    assert torch.equal(state, torch.get_rng_state())
    b = evaluate(net, x, y, ["pgd:eps=32/255,steps=1", "square:eps=32/255,steps=30"], seed=0)
    c = evaluate(net, x, y, ["pgd:eps=32/255,steps=1"], seed=1)
    for key in ("pgd:eps=32/255,steps=1", "square:eps=32/255,steps=30"):
        assert np.array_equal(a[key].l2, b[key].l2)  # reproducible
    assert not np.array_equal(a["pgd:eps=32/255,steps=1"].l2, c["pgd:eps=32/255,steps=1"].l2)
    assert a["pgd:eps=32/255,steps=1"].seed == 0 and c["pgd:eps=32/255,steps=1"].seed == 1


@pytest.mark.parametrize("name", [n for n in attacks.list_attacks() if n != "clean"])
def test_every_registered_attack_runs_inside_its_ball(name: str, linear_model: nn.Module, digits) -> None:
    x, y = digits[0][:12], digits[1][:12]
    info = attacks.attack_info(name)
    params: dict[str, object] = {"name": name}
    if info.eps != "none":
        params["eps"] = 0.5 if info.norms[0] == "L2" else 16 / 255
    if info.steps is not None:
        params["steps"] = 3 if name not in ("square",) else 20
    spec = AttackSpec.from_dict(params)
    for efficient in (True, False):
        result = evaluate(linear_model, x, y, [spec], efficient=efficient)
        o = result[spec]
        # The ball itself is enforced by check_adversarial (it raises first; see
        # test_check_adversarial_catches_invalid_batches): here, fooled means wrong, and only fooled
        # examples carry a norm.
        assert not (o.fooled & o.correct).any()
        assert np.isnan(o.perturbation_norm[~o.fooled]).all() and not np.isnan(o.perturbation_norm[o.fooled]).any()


def test_minimum_norm_attacks_respect_a_given_budget(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    x, y = x[:24], y[:24]
    result = evaluate(net, x, y, ["cw:steps=60,binary_search_steps=3", "cw:eps=0.3,steps=60,binary_search_steps=3"])
    free, bounded = list(result)[1:]
    assert math.isinf(free.spec.eps) and free.spec.eps_kind == "minimum_norm" and bounded.spec.eps_kind == "bounded"
    # Same search, then the budget: fooled within 0.3 exactly where the free attack's norm is <= 0.3.
    within = free.fooled & (free.l2 <= 0.3 + 1e-5)
    assert np.array_equal(bounded.fooled, within)
    assert 0 < within.sum() < free.fooled.sum()


def test_cw_is_a_minimum_norm_attack_with_gradients_at_0_and_1(net: nn.Module, eval_data) -> None:
    # Digits are mostly pixels of exactly 0: torchattacks' CW gets no gradient there and left about
    # half the predictions correct; the reference C&W fools every clean-correct example.
    x, y = eval_data[0][:12], eval_data[1][:12]
    assert (x == 0).float().mean() > 0.3
    o = evaluate(net, x, y, ["cw:steps=200,binary_search_steps=5"])["cw:steps=200,binary_search_steps=5"]
    clean = evaluate(net, x, y, []).clean_correct
    assert np.array_equal(o.fooled, clean) and o.n_correct == 0
    # Smallest-norm over the search: a small fixed-c run (one round) finds larger perturbations.
    one = evaluate(net, x, y, ["cw:steps=200,binary_search_steps=1,c=10"])["cw:steps=200,binary_search_steps=1,c=10"]
    both = o.fooled & one.fooled
    assert np.median(o.l2[both]) < np.median(one.l2[both])


def test_evaluate_loader_equals_evaluate(net: nn.Module, eval_data) -> None:
    x, y = eval_data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=False)
    specs = ["fgsm:eps=8/255", "pgd:eps=16/255,steps=3"]
    a = evaluate(net, x[:100], y[:100], specs, batch_size=50)
    b = attacks.evaluate_loader(net, loader, specs, max_examples=100, batch_size=50)
    assert b.n_examples == 100
    for key in a.outcomes:
        assert np.array_equal(a[key].correct, b[key].correct)


def test_ensemble_and_paired_comparison(net: nn.Module, linear_model: nn.Module, eval_data) -> None:
    x, y = eval_data
    specs = ["fgsm:eps=16/255", "pgd:eps=16/255,steps=3"]
    a = evaluate(net, x, y, specs)
    worst = a.ensemble_correct()
    by_hand = [all(a[s].correct[i] for s in specs) and a.clean_correct[i] for i in range(len(x))]
    assert worst.tolist() == by_hand
    frame = a.ensemble_frame()
    assert frame.loc[0, "n_correct"] == worst.sum() and frame.loc[0, "eps_label"] == "16/255"
    b = evaluate(linear_model, x, y, specs)
    paired = attacks.paired_comparison(a, b)
    assert paired["key"].tolist() == list(a.outcomes)
    for _, row in paired.iterrows():
        ca, cb = a[row["key"]].correct, b[row["key"]].correct
        assert (row["only_a"], row["only_b"]) == ((ca & ~cb).sum(), (~ca & cb).sum())
        assert row["accuracy_a"] == pytest.approx(ca.mean()) and row["accuracy_b"] == pytest.approx(cb.mean())
        n = row["only_a"] + row["only_b"]
        assert row["p_value"] == pytest.approx(stats.binomtest(int(row["only_a"]), int(n)).pvalue if n else 1.0)


@pytest.mark.parametrize(
    ("images", "labels", "needle"),
    [
        (torch.full((4, 1, 8, 8), 2.0), torch.zeros(4, dtype=torch.long), "must be in [0, 1]"),
        (torch.rand(4, 64), torch.zeros(4, dtype=torch.long), "NCHW"),
        (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), "4 images but 3 labels"),
        (torch.rand(4, 1, 8, 8), torch.zeros(4), "integer"),
        (torch.rand(4, 1, 8, 8), torch.full((4,), 10), "labels must be in [0, 10)"),
    ],
)
def test_bad_inputs_raise(linear_model: nn.Module, images, labels, needle: str) -> None:
    with pytest.raises(AttackInputError) as info:
        evaluate(linear_model, images, labels, ["fgsm:eps=8/255"])
    assert needle in str(info.value)


def test_bad_device_and_batch_size(linear_model: nn.Module) -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackInputError, match="model is on cpu"):
        evaluate(linear_model, x, y, ["fgsm:eps=8/255"], device="meta")
    with pytest.raises(AttackInputError, match="batch_size"):
        evaluate(linear_model, x, y, ["fgsm:eps=8/255"], batch_size=0)


def test_check_adversarial_catches_invalid_batches() -> None:
    spec = AttackSpec.parse("pgd:eps=8/255")
    x = torch.full((3, 1, 2, 2), 0.5)
    linf, _ = check_adversarial(x, x + 8 / 255, spec)  # on the sphere: accepted
    assert linf.tolist() == pytest.approx([8 / 255] * 3)
    with pytest.raises(AttackCheckError, match="outside the Linf ball"):
        check_adversarial(x, x + 8 / 255 + 1e-5, spec)  # just outside: refused
    l2_spec = AttackSpec.parse("pgd_l2:eps=0.5")
    outside = x.clone()
    outside[0, 0, 0, 0] -= 0.4
    outside[0, 0, 1, 1] -= 0.31  # L2 0.504, every pixel inside [0, 1]
    with pytest.raises(AttackCheckError, match="outside the L2 ball"):
        check_adversarial(x, outside, l2_spec)
    with pytest.raises(AttackCheckError, match="leave \\[0, 1\\]"):
        check_adversarial(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2) + 0.01, spec)
    with pytest.raises(AttackCheckError, match="NaN"):
        check_adversarial(x, torch.full_like(x, math.nan), spec)
    with pytest.raises(AttackCheckError, match="shape"):
        check_adversarial(x, x[:2], spec)
    l2 = AttackSpec.parse("pgd_l2:eps=0.5")
    bad = x.clone()
    bad[0, 0, 0, 0] += 0.51
    with pytest.raises(AttackCheckError, match="1 adversarial example\\(s\\) outside the L2 ball"):
        check_adversarial(x.clamp(max=0.4), bad.clamp(max=1), l2)
