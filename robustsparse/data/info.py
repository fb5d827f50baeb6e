"""What a loaded dataset is: its description (DatasetInfo) and its splits (DatasetBundle)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

__all__ = ["DatasetInfo", "DatasetBundle"]


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and statistics of a dataset, all a model builder needs.

    Attributes:
        name: registry name (``"digits"``, ``"cifar10"``, ...).
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        in_channels: image channels (1 grey, 3 RGB).
        image_size: side of the square images the splits yield.
        mean: per-channel mean of the training images in [0, 1] units.
        std: per-channel standard deviation of the training images.
        class_names: one name per label, in label order.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"{self.name}: mean/std need {self.in_channels} values, got {len(self.mean)} and {len(self.std)}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        if self.image_size < 1 or self.num_classes < 1:
            raise ValueError(f"{self.name}: image_size and num_classes must be >= 1")


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset's description and its two splits.

    Each split yields ``(image, label)``: image a float32 CxHxW tensor in [0, 1], label an ``int``.
    ``train`` carries the dataset's standard augmentation when loaded with ``augment=True``;
    ``test`` never does.

    Attributes:
        info: shape and statistics.
        train: training split.
        test: test split (the official validation split where the test labels are not public).
    """

    info: DatasetInfo
    train: Dataset
    test: Dataset
