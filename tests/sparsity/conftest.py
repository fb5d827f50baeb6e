"""Tiny models for the sparsity-engine tests (every layer kind the engine must handle, in milliseconds) and the trainer's loop in miniature."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.sparsity import SparsityConfig
from robustsparse.sparsity.methods import extra_training


class TinyNet(nn.Module):
    """3x3 stem + BN, a residual block (two 3x3 conv + BN), a 1x1 conv + BN, a 3x3 conv with
    bias and no BN, average pooling to 2x2, flatten, two linear layers. Input (N, 3, 8, 8).

    Channel groups it has: block conv1 -> conv2, pointwise -> conv3, conv3 -> fc1 (4 inputs
    per channel after the flatten). Not groupable: the stem (first conv, dense), block conv2
    (feeds the residual addition), fc1 (feeds the last linear, dense).
    """

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.block_conv1 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(w)
        self.block_conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(w)
        self.pointwise = nn.Conv2d(w, 2 * w, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=True)
        self.pool = nn.AvgPool2d(4)
        self.fc1 = nn.Linear(2 * w * 4, 32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu(self.block_bn1(self.block_conv1(x)))
        y = self.block_bn2(self.block_conv2(y))
        x = F.relu(x + y)
        x = F.relu(self.pointwise_bn(self.pointwise(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc(x)


def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics and affine parameters (fresh ones are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a shared 2-core machine their spin
    waits made these tests 50x slower. Restored afterwards so other test folders are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return randomize_bn_(TinyNet())


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.fixture
def train_with_fixed_masks():
    """Run SGD steps on random data through a pruner that decided its masks at step 0, asserting
    after every step that the masks did not change and the pruned weights stay zero; returns the masks."""

    def run(net: nn.Module, pruner, *, steps: int, seed: int = 1, weight_decay: float = 0.0) -> dict:
        first = {k: v.clone() for k, v in pruner.masks.items()}
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
        g = torch.Generator().manual_seed(seed)
        for step in range(1, steps + 1):
            x, y = torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
            assert pruner.step(step, optimizer) is False
            pruner.apply_(optimizer)
            assert pruner.masks.keys() == first.keys()
            assert all(torch.equal(pruner.masks[k], first[k]) for k in first)
        params = dict(net.named_parameters())
        assert all(bool((params[n][~m] == 0).all()) for n, m in first.items())
        return first

    return run


def run_method_steps(
    model,
    pruner,
    cfg: SparsityConfig,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    first: int = 1,
) -> torch.optim.Optimizer:
    """The trainer's loop in miniature: CE + the method's loss term, both optimisers, pruner calls.

    Without `optimizer` a fresh SGD one is made and the pruner takes step 0; returns the optimizer.
    """
    g = torch.Generator().manual_seed(first)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        pruner.step(0, optimizer)
    extra_opt, extra_loss = extra_training(cfg, pruner)
    for step in range(first, first + steps):
        loss = F.cross_entropy(model(x), y)
        term = extra_loss()
        if term is not None:
            loss = loss + term
        optimizer.zero_grad()
        extra_opt.zero_grad()
        loss.backward()
        optimizer.step()
        extra_opt.step()
        pruner.step(step, optimizer)
        pruner.apply_(optimizer)
    return optimizer
