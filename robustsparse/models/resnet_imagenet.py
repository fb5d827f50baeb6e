"""ImageNet ResNets from torchvision: ResNet-18, ResNet-50 (v1.5) and ResNet-50 v1.

torchvision's ResNet-50 is "v1.5": a downsampling Bottleneck strides in its 3x3 conv. The original
paper (He et al., 2016, https://arxiv.org/abs/1512.03385) strides in the first 1x1 conv; the Campfire
paper's ImageNet numbers refer to that network. ``resnet50_v1`` is torchvision's model with the
strides moved back, so both share parameter names and shapes (checkpoints are interchangeable in
shape, not in meaning).
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tv_models

from robustsparse.models.registry import register_model

__all__ = ["resnet18", "resnet50", "resnet50_v1"]


def _set_in_channels(net: tv_models.ResNet, in_channels: int) -> tv_models.ResNet:
    """Replace the 7x7 stem conv when the input is not RGB."""
    if in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding, bias=False
        )
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


@register_model(
    "resnet18", description="torchvision ResNet-18 (ImageNet stem: 7x7 stride 2 + max pool)", min_image_size=32
)
def resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18, untrained."""
    return _set_in_channels(tv_models.resnet18(weights=None, num_classes=num_classes), in_channels)


@register_model("resnet50", description="torchvision ResNet-50 v1.5 (stride on the 3x3 conv)", min_image_size=32)
def resnet50(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-50 (v1.5), untrained."""
    return _set_in_channels(tv_models.resnet50(weights=None, num_classes=num_classes), in_channels)


@register_model(
    "resnet50_v1", description="ResNet-50 v1 (stride on the first 1x1 conv, as in He et al.)", min_image_size=32
)
def resnet50_v1(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-50 with each downsampling block's stride moved to its first 1x1 conv."""
    net = tv_models.resnet50(weights=None, num_classes=num_classes)
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        block = stage[0]
        stride = block.conv2.stride
        if stride != (1, 1):
            # Same output size: a strided 1x1 conv samples every other pixel before the 3x3 conv.
            block.conv1.stride = stride
            block.conv2.stride = (1, 1)
    return _set_in_channels(net, in_channels)
