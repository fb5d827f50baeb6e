"""LeNet-5 (LeCun et al., 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf), with ReLU and max pooling.

The classic network reads 32x32 images (28x28 MNIST digits padded by 2). Here the first 5x5 conv
pads by 2, the second pads only for small inputs (< 20 pixels), and an adaptive average pool brings
the last map to at most 5x5, so the same code builds for 8x8 digits, 28x28 MNIST and 32x32 CIFAR.
On 28x28 input it is exactly the classic shape: 6@28x28, 6@14x14, 16@10x10, 16@5x5, 120, 84.
"""

from __future__ import annotations

import torch
from torch import nn

from robustsparse.models.registry import register_model

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """LeNet-5: conv5x5(6)-ReLU-maxpool, conv5x5(16)-ReLU-maxpool, fc 120, fc 84, classifier.

    Module names: ``conv1``, ``conv2``, ``fc1``, ``fc2``, ``fc`` (the classifier).

    Args:
        num_classes: number of logits.
        in_channels: input channels.
        image_size: input side, used to choose the padding of ``conv2`` and the pooled size.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        # Small inputs (8x8 digits) would vanish under an unpadded conv2 after the first pool.
        pad2 = 2 if image_size < 20 else 0
        side = (image_size // 2 + 2 * pad2 - 4) // 2
        pooled = min(5, side)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=pad2)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.adapt = nn.AdaptiveAvgPool2d(pooled)
        self.fc1 = nn.Linear(16 * pooled * pooled, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(self.adapt(x), 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc(x)


@register_model("lenet5", description="LeNet-5 with ReLU and max pooling (8x8 to 32x32 and up)", min_image_size=8)
def lenet5(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5 adapted to ``image_size``."""
    return LeNet5(num_classes, in_channels, image_size)
