"""CIFAR-style VGG-16 with batch norm (Simonyan & Zisserman, 2015, https://arxiv.org/abs/1409.1556).

Thirteen 3x3 conv-BN-ReLU layers in five stages separated by max pools, then global average pooling
and a single linear classifier (the common CIFAR variant, instead of the three 4096-wide FC layers).
Five pools halve the side five times, so inputs of 32x32 and larger work.
"""

from __future__ import annotations

import torch
from torch import nn

from robustsparse.models._init import init_weights_
from robustsparse.models.registry import register_model

__all__ = ["VGG", "vgg16_bn"]

VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Conv widths of VGG-16's five stages; a 2x2 max pool closes each stage."""


class VGG(nn.Module):
    """VGG feature stack, global average pool, linear classifier.

    Module names: ``features`` (Sequential of Conv2d, BatchNorm2d, ReLU, MaxPool2d), ``fc`` (the classifier).

    Args:
        stages: conv widths per stage; each stage ends in a 2x2 max pool.
        num_classes: number of logits.
        in_channels: input channels.
    """

    def __init__(self, stages: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for widths in stages:
            for out in widths:
                conv = nn.Conv2d(channels, out, 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(
    "vgg16_bn", description="CIFAR-style VGG-16 with BN, global pooling, one linear classifier", min_image_size=32
)
def vgg16_bn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """VGG-16-BN for inputs of side >= 32."""
    return VGG(VGG16_STAGES, num_classes, in_channels)
