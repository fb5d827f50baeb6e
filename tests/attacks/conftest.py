"""Fixtures for the attacks tests: digits data, a small CNN trained for a second, tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


class SmallNet(nn.Module):
    """conv-BN-ReLU, conv-ReLU, dropout, linear: BN and dropout make train/eval mode visible."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.3) / 0.4  # normalisation inside the model: inputs stay in [0, 1]
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(self.drop(x.flatten(1)))


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and the CPU is shared: one thread is faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels."""
    raw = load_digits()
    images = torch.from_numpy((raw.images / 16.0).astype(np.float32)).unsqueeze(1)
    return images, torch.from_numpy(raw.target.astype(np.int64))


@pytest.fixture(scope="session")
def trained_net(digits: tuple[torch.Tensor, torch.Tensor]) -> SmallNet:
    """SmallNet trained for 3 epochs on the first 1,400 digits (about a second on an idle CPU)."""
    images, labels = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures start before the package-wide one_thread fixture
    torch.manual_seed(0)
    net = SmallNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = images[:1400], labels[:1400]
    for _ in range(3):
        net.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    net.eval()
    return net


@pytest.fixture()
def net(trained_net: SmallNet) -> SmallNet:
    """The trained net, in eval mode at the start of every test (tests may change its mode)."""
    trained_net.eval()
    for p in trained_net.parameters():
        p.requires_grad_(True)
    return trained_net


@pytest.fixture(scope="session")
def eval_data(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """120 held-out digits (not used for training)."""
    images, labels = digits
    return images[1500:1620], labels[1500:1620]


@pytest.fixture()
def linear_model() -> nn.Module:
    """A fixed random linear classifier on 8x8 images (seeded)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
