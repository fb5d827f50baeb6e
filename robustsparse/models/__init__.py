"""Model zoo: every architecture takes NCHW images in [0, 1] and normalises them in its first layer.

Importing this package registers all families (small CNN, LeNet-5, CIFAR ResNets, VGG-16-BN,
torchvision ResNets).
"""

from __future__ import annotations

from robustsparse.models import lenet, resnet_cifar, resnet_imagenet, small_cnn, vgg  # noqa: F401  (registration)
from robustsparse.models.layers import Normalize, NormalizedModel
from robustsparse.models.mixture_norm import MixtureNorm2d, convert_to_mixture
from robustsparse.models.registry import (
    ModelInfo,
    batchnorm_names,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "batchnorm_names",
    "ModelInfo",
    "Normalize",
    "NormalizedModel",
    "MixtureNorm2d",
    "convert_to_mixture",
]
