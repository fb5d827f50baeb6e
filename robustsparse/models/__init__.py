"""Model zoo: every architecture takes NCHW images in [0, 1] and normalises them in its first layer.

Importing this package registers all families (small CNN, LeNet-5, CIFAR ResNets, VGG-16-BN,
torchvision ResNets).
"""

from __future__ import annotations

from robustsparse.models import lenet, resnet_cifar, resnet_imagenet, small_cnn, vgg  # noqa: F401  (registration)
from robustsparse.models.layers import Normalize, NormalizedModel
from robustsparse.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model", "ModelInfo", "Normalize", "NormalizedModel"]
