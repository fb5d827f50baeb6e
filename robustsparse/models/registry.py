"""Architecture registry: name -> builder, and the factory that wraps a network with its Normalize.

Builders are registered with a decorator at the bottom of each family module (timm's pattern), so
adding an architecture is one function, and the tests, parametrised over ``list_models()``, pick it
up automatically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustsparse.errors import ModelError
from robustsparse.models.layers import Normalize, NormalizedModel
from robustsparse.models.mixture_norm import convert_to_mixture

__all__ = [
    "ModelInfo",
    "ModelBuilder",
    "register_model",
    "create_model",
    "list_models",
    "model_info",
    "batchnorm_names",
]

log = logging.getLogger(__name__)

ModelBuilder = Callable[[int, int, int], nn.Module]
"""``fn(num_classes, in_channels, image_size) -> nn.Module`` taking normalised NCHW input, returning logits."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an architecture.

    Attributes:
        name: registry name, e.g. ``"resnet20"``.
        description: one line for listings and reports.
        min_image_size: smallest square input side the network accepts.
    """

    name: str
    description: str
    min_image_size: int


_BUILDERS: dict[str, ModelBuilder] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(name: str, *, description: str, min_image_size: int) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder under ``name``.

    Args:
        name: registry name; must be new.
        description: one-line description.
        min_image_size: smallest input side the builder supports.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Example:
        >>> @register_model("tiny", description="a tiny net", min_image_size=8)
        ... def tiny(num_classes: int, in_channels: int, image_size: int) -> nn.Module: ...
    """
    if min_image_size < 1:
        raise ValueError(f"min_image_size must be >= 1, got {min_image_size}")

    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _INFOS[name] = ModelInfo(name=name, description=description, min_image_size=min_image_size)
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_BUILDERS)


def _unknown(arch: object) -> ModelError:
    return ModelError(f"unknown architecture {arch!r}; allowed: {', '.join(list_models())}")


def model_info(arch: str) -> ModelInfo:
    """The registry entry for ``arch``.

    Raises:
        ModelError: if ``arch`` is not registered.
    """
    try:
        return _INFOS[arch]
    except (KeyError, TypeError):
        raise _unknown(arch) from None


def batchnorm_names(arch: str) -> list[str]:
    """Module names of `arch`'s BatchNorm2d layers inside its `NormalizedModel` (``net.bn1``...).

    Built on the meta device: no memory, no initialisation cost, no random numbers drawn.

    Raises:
        ModelError: if ``arch`` is not registered.
    """
    info = model_info(arch)
    with torch.device("meta"):
        net = _BUILDERS[arch](10, 3, info.min_image_size)
    return [f"net.{name}" for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]


def create_model(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    norm: str = "batchnorm",
    mixture: Mapping[str, Any] | None = None,
) -> NormalizedModel:
    """Build ``arch`` for the given data, with a ``Normalize(mean, std)`` first layer.

    Args:
        arch: registry name (see ``list_models()``).
        num_classes: number of output logits.
        in_channels: input channels (1 for grey, 3 for RGB).
        image_size: side of the square input images.
        mean: per-channel mean of the training data in [0, 1] units.
        std: per-channel standard deviation of the training data.
        norm: ``"batchnorm"`` (the architecture as registered) or ``"mixture"``: the BatchNorm2d
            layers chosen by ``mixture["layers"]`` become `MixtureNorm2d`, unseeded (see
            `convert_to_mixture`; ``mixture`` holds ``layers``, ``components`` and further
            `MixtureNorm2d` arguments).
        mixture: the mixture settings (ignored with ``norm="batchnorm"``).

    Returns:
        A float32 model taking NCHW images in [0, 1] and returning ``(N, num_classes)`` logits.

    Raises:
        ModelError: unknown ``arch``, an image too small for it, or sizes that do not fit together.

    Example:
        >>> model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8,
        ...                      mean=(0.3,), std=(0.4,))
    """
    info = model_info(arch)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1 for {arch!r}, got {num_classes}")
    if in_channels < 1:
        raise ModelError(f"in_channels must be >= 1 for {arch!r}, got {in_channels}")
    if image_size < info.min_image_size:
        fitting = [n for n in list_models() if _INFOS[n].min_image_size <= image_size]
        raise ModelError(
            f"image_size {image_size} is too small for {arch!r} (needs >= {info.min_image_size}); "
            f"architectures that fit: {', '.join(fitting) or 'none'}; allowed: {', '.join(list_models())}"
        )
    if len(mean) != in_channels or len(std) != in_channels:
        raise ModelError(f"mean/std need {in_channels} values (one per input channel), got {len(mean)} and {len(std)}")
    if any(float(s) <= 0 for s in std):
        raise ModelError(f"std must be positive, got {tuple(std)}")
    net = _BUILDERS[arch](num_classes, in_channels, image_size)
    model = NormalizedModel(Normalize(mean, std), net)
    # Builders use the default dtype; pin float32 so checkpoints and masks agree across machines.
    model = model.to(dtype=torch.float32)
    if norm == "mixture":
        options = dict(mixture or {})
        layers = options.pop("layers", "all")
        layers = layers if isinstance(layers, (str, int)) else list(layers)
        convert_to_mixture(model, layers, options.pop("components", 3), seed_from_statistics=False, **options)
    elif norm != "batchnorm":
        raise ModelError(f"unknown normalisation {norm!r}; allowed: batchnorm, mixture")
    log.debug("built %s for %d classes, %d channels, %dx%d", arch, num_classes, in_channels, image_size, image_size)
    return model
