"""CIFAR-style ResNets: ResNet-20/32/56 (He et al., 2016, https://arxiv.org/abs/1512.03385, Sec. 4.2)
and ResNet-18 with a 3x3 stem and no max pool (the usual CIFAR adaptation of the ImageNet net).

Downsampling shortcuts use option B (1x1 conv + BN projection) rather than the paper's zero-padding
option A: every tensor in the graph is then produced by a conv or BN, which keeps filter pruning and
compaction simple (no parameter-free channel padding to track).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustsparse.models._init import init_weights_
from robustsparse.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56", "resnet18_cifar"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-conv+BN (option B) shortcut.

    Module names follow torchvision: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first conv and of the projection shortcut.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """3x3 stem (stride 1, no max pool), stages of BasicBlocks, global average pool, linear classifier.

    Module names: ``conv1``, ``bn1``, ``layer1`` ... ``layerK``, ``fc`` (the classifier).

    Args:
        num_blocks: blocks per stage.
        widths: channels per stage; stages after the first downsample by 2.
        num_classes: number of logits.
        in_channels: input channels.
    """

    def __init__(self, num_blocks: Sequence[int], widths: Sequence[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError(f"num_blocks and widths differ in length: {num_blocks} vs {widths}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        self.stage_names: list[str] = []
        for i, (blocks, planes) in enumerate(zip(num_blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*layers))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _he_cifar(depth: int, num_classes: int, in_channels: int) -> CifarResNet:
    n = (depth - 2) // 6  # 6n+2 layers: 3 stages of n blocks of 2 convs, plus stem and classifier
    return CifarResNet([n, n, n], [16, 32, 64], num_classes, in_channels)


@register_model(
    "resnet20", description="CIFAR ResNet-20 (He et al.), 16/32/64 channels, option-B shortcuts", min_image_size=4
)
def resnet20(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-20 (0.27 M parameters on CIFAR-10)."""
    return _he_cifar(20, num_classes, in_channels)


@register_model(
    "resnet32", description="CIFAR ResNet-32 (He et al.), 16/32/64 channels, option-B shortcuts", min_image_size=4
)
def resnet32(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-32."""
    return _he_cifar(32, num_classes, in_channels)


@register_model(
    "resnet56", description="CIFAR ResNet-56 (He et al.), 16/32/64 channels, option-B shortcuts", min_image_size=4
)
def resnet56(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-56."""
    return _he_cifar(56, num_classes, in_channels)


@register_model(
    "resnet18_cifar", description="ResNet-18 with a 3x3 stem and no max pool, for 32x32 inputs", min_image_size=8
)
def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 (64/128/256/512 channels, 2 blocks per stage) for small images."""
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)
