"""train_one_epoch with a method's loss term and extra optimiser (the general wiring npn uses)."""

from __future__ import annotations

import torch
from torch import nn

from robustsparse.train.loop import train_one_epoch

CPU = torch.device("cpu")


def _epoch(extra_loss, extra_optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = [(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))) for _ in range(3)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_one_epoch(
        model,
        data,
        optimizer,
        None,
        device=CPU,
        progress=False,
        extra_loss=extra_loss,
        extra_optimizer=extra_optimizer,
    )
    return model, stats


def test_the_loss_term_is_added_and_the_extra_optimiser_steps_its_parameters():
    gate = nn.Parameter(torch.full((2,), 2.0))
    extra_opt = torch.optim.SGD([gate], lr=0.1)
    plain_model, plain = _epoch(None, None)
    model, stats = _epoch(lambda: gate.square().sum(), extra_opt)
    assert stats["loss"] > plain["loss"] + 1.0  # the term (about 2 * 1.6^2) is part of the reported loss
    assert torch.all(gate < 2.0) and gate.grad is not None  # three steps of SGD on its own optimiser
    # the term does not touch the model's own gradients: same weights as without it
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), plain_model.parameters()))


def test_a_loss_term_of_none_adds_nothing():
    model, stats = _epoch(lambda: None, None)
    plain_model, plain = _epoch(None, None)
    assert stats == plain
