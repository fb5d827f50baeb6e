"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes): the offline default dataset.

The data ship inside scikit-learn, so nothing is downloaded. Pixels 0..16 are scaled to [0, 1].
There is no official split: a stratified 80/20 split seeded by ``split_seed`` is made with
``sklearn.model_selection.train_test_split``. Mean and std come from the train split.
No augmentation: random crops or flips destroy too much of an 8x8 digit (a flipped 2 is not a 2),
so ``augment`` has no effect here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from robustsparse.data.datasets import TensorImageDataset
from robustsparse.data.info import DatasetBundle, DatasetInfo
from robustsparse.data.registry import register_dataset

__all__ = ["load_digits_bundle", "DIGITS_TEST_FRACTION"]

DIGITS_TEST_FRACTION = 0.2


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    shrink = size < images.shape[-1]
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0)


@register_dataset("digits")
def load_digits_bundle(
    root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None
) -> DatasetBundle:
    """Digits as in-memory tensors; ``root`` and ``download`` are unused (the data ship with sklearn)."""
    raw = load_digits()
    images = torch.from_numpy((raw.images / 16.0).astype(np.float32)).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(raw.target.astype(np.int64))
    size = image_size or images.shape[-1]
    images = _resize(images, size)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=raw.target, random_state=split_seed
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train_images = images[train_idx]
    mean = train_images.mean(dim=(0, 2, 3))
    std = train_images.std(dim=(0, 2, 3), unbiased=False)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=size,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        class_names=tuple(str(c) for c in raw.target_names),
    )
    train = TensorImageDataset(train_images, labels[train_idx])
    test = TensorImageDataset(images[test_idx], labels[test_idx])
    return DatasetBundle(info=info, train=train, test=test)
