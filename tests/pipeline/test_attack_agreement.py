"""`attacks.evaluate` on trainer checkpoints agrees with an independent, hand-written FGSM and PGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks import evaluate
from robustsparse import load_checkpoint
from robustsparse.data import load_dataset, load_tensors


def hand_fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def hand_pgd(model, x, y, eps, alpha, steps, generator):
    adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def test_fgsm_exact_and_pgd_within_one_point_on_trainer_checkpoints(tiny_run):
    images, labels = load_tensors(load_dataset("digits").test)  # all 360 test digits
    for model_id in ("dense-s0", "campfire-filter-50-s0"):
        model, _ = load_checkpoint(tiny_run / "models" / model_id)
        eps, alpha, steps = 16 / 255, 4 / 255, 10
        result = evaluate(
            model, images, labels, [f"fgsm:eps={eps}", f"pgd:eps={eps},alpha={alpha},steps={steps}"], seed=0
        )
        frame = result.to_frame().set_index("attack")
        clean = accuracy(model, images, labels)
        ours_fgsm = frame.loc["fgsm", "accuracy"]
        assert ours_fgsm < clean  # the attack does something at this eps
        ours_pgd = frame.loc["pgd", "accuracy"]
        # FGSM: identical per example (clean mistakes count as not robust in both).
        adv = hand_fgsm(model, images, labels, eps)
        with torch.no_grad():
            robust = (model(adv).argmax(1) == labels) & (model(images).argmax(1) == labels)
        assert frame.loc["fgsm", "n_correct"] == int(robust.sum())
        assert result["fgsm:eps=16/255"].correct.tolist() == robust.tolist()
        # PGD: random starts differ, so agreement within 1 point.
        adv = hand_pgd(model, images, labels, eps, alpha, steps, torch.Generator().manual_seed(123))
        with torch.no_grad():
            theirs = int(((model(adv).argmax(1) == labels) & (model(images).argmax(1) == labels)).sum()) / len(labels)
        assert abs(ours_pgd - theirs) <= 0.01, (model_id, ours_pgd, theirs)
        assert ours_pgd <= ours_fgsm + 0.02 and ours_pgd <= clean
