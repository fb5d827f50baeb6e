"""Image pipelines (torchvision transforms v2) and per-channel statistics.

Every pipeline ends in a plain float32 CxHxW tensor in [0, 1]. Geometric augmentation runs on the
uint8 image, before the float conversion, because it is cheaper there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = ["image_pipeline", "crop_flip", "crop_padding", "resized_crop_flip", "channel_stats", "STATS_SAMPLE"]

log = logging.getLogger(__name__)

STATS_SAMPLE = 2000
"""How many training images ``channel_stats`` reads at most."""


def image_pipeline(
    *, resize: int | None = None, crop: int | None = None, augment: Sequence[v2.Transform] = ()
) -> v2.Compose:
    """PIL image -> float32 tensor in [0, 1], with an optional resize, centre crop and augmentation.

    Args:
        resize: resize the shorter side to this many pixels (no-op if already there).
        crop: centre-crop to this square side (no-op if already there).
        augment: random transforms applied after the resize and crop.

    Returns:
        The composed transform.
    """
    steps: list[v2.Transform] = [v2.ToImage()]
    if resize is not None:
        steps.append(v2.Resize(resize, antialias=True))
    if crop is not None:
        steps.append(v2.CenterCrop(crop))
    steps += list(augment)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
    return v2.Compose(steps)


def crop_padding(size: int) -> int:
    """The zero padding of the CIFAR-style random crop of a `size` x `size` image."""
    return max(1, size // 8)


def crop_flip(size: int) -> list[v2.Transform]:
    """CIFAR-style augmentation: random crop with ``size // 8`` zero padding, horizontal flip."""
    return [v2.RandomCrop(size, padding=crop_padding(size)), v2.RandomHorizontalFlip()]


def resized_crop_flip(size: int) -> list[v2.Transform]:
    """ImageNet-style augmentation: random resized crop to ``size``, horizontal flip."""
    return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]


def channel_stats(dataset: Dataset, max_images: int = STATS_SAMPLE) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation over the pixels of up to ``max_images`` images.

    The images are evenly spaced over the dataset (folder datasets are sorted by class, so the first
    images would all be one class), which also makes the result deterministic.

    Args:
        dataset: yields ``(image, label)`` with image a CxHxW float tensor; give it no augmentation.
        max_images: most images to read.

    Returns:
        ``(mean, std)``, one float per channel.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty dataset")
    indices = np.unique(np.linspace(0, n - 1, num=min(n, max_images)).round().astype(int))
    total = total_sq = None
    count = 0
    for i in indices.tolist():
        image = dataset[i][0].to(torch.float64)
        flat = image.flatten(1)
        s, sq = flat.sum(1), (flat * flat).sum(1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += flat.shape[1]
    assert total is not None and total_sq is not None
    mean = total / count
    # Clamp: tiny negative variances appear from rounding on constant channels.
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    log.debug("channel stats over %d images: mean %s std %s", len(indices), mean.tolist(), std.tolist())
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
