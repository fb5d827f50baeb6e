"""Dataset classes that torchvision does not have: in-memory tensors and a list of image files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import default_loader

__all__ = ["TensorImageDataset", "ImageListDataset"]


class TensorImageDataset(Dataset):
    """Images held in memory as one float32 NCHW tensor in [0, 1], with int labels.

    Args:
        images: float32 tensor ``(N, C, H, W)`` in [0, 1].
        labels: integer tensor ``(N,)``.
        transform: optional random transform applied to each CxHxW image.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"need images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images.to(torch.float32).contiguous()
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class ImageListDataset(Dataset):
    """Image files with known labels, read on access (like ImageFolder, from an explicit list).

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names, in label order.
        transform: transform from the PIL image (RGB) to a tensor.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        classes: Sequence[str],
        transform: Callable[[object], torch.Tensor] | None = None,
    ) -> None:
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = [y for _, y in self.samples]
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = default_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
