"""A small CNN for tiny grey images (8x8 scikit-learn digits, 28x28 MNIST): fast on a CPU.

Three 3x3 conv-BN-ReLU stages (32, 64, 128 filters) with one max pool, global average pooling and
one linear classifier. 3x3 kernels are kept on purpose: the within-kernel sparsity granularities
(row, window, pattern) need them.
"""

from __future__ import annotations

import torch
from torch import nn

from robustsparse.models._init import init_weights_
from robustsparse.models.registry import register_model

__all__ = ["SmallCNN", "small_cnn"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """conv3x3(32)-BN-ReLU, conv3x3(64)-BN-ReLU, maxpool 2, conv3x3(128)-BN-ReLU, global avg pool, linear.

    Module names: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``, ``fc`` (the classifier).

    Args:
        num_classes: number of logits.
        in_channels: input channels.
        width: filters of the first conv; the others are 2x and 4x.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("small_cnn", description="3-conv CNN (32/64/128 3x3) for 8x8-28x28 grey images", min_image_size=2)
def small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Small CNN; works for any input side >= 2."""
    return SmallCNN(num_classes, in_channels)
