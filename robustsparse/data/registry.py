"""Dataset registry: name -> loader, and ``load_dataset`` that resolves and checks the arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from robustsparse.data.info import DatasetBundle
from robustsparse.errors import DatasetError

__all__ = ["DatasetLoader", "DatasetBundle", "register_dataset", "list_datasets", "load_dataset"]

log = logging.getLogger(__name__)


class DatasetLoader(Protocol):
    """Signature of a registered loader; ``root`` is what the user passed, resolved to a Path."""

    def __call__(
        self, root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None
    ) -> DatasetBundle: ...


_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader under ``name``.

    Args:
        name: registry name; must be new.

    Returns:
        A decorator that registers the loader and returns it unchanged.
    """

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is already registered")
        _LOADERS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_LOADERS)


def load_dataset(
    name: str,
    *,
    root: str | Path = "data",
    download: bool = False,
    augment: bool = True,
    split_seed: int = 0,
    image_size: int | None = None,
) -> DatasetBundle:
    """Load a dataset's info and its train and test splits.

    Args:
        name: registry name (see ``list_datasets()``).
        root: data folder. torchvision datasets live in ``<root>/<name>``; ``imagefolder`` reads
            ``root`` itself; ``tinyimagenet`` and ``imagenet`` read ``root`` or a folder named after
            the dataset inside it.
        download: let torchvision datasets download missing files.
        augment: give the train split the dataset's standard augmentation.
        split_seed: seed of the train/test split, for datasets without an official one (digits).
        image_size: resize images to this side; None keeps the dataset's native size.

    Returns:
        The bundle ``(info, train, test)``.

    Raises:
        DatasetError: unknown name, bad image size, or files missing or laid out wrongly.

    Example:
        >>> bundle = load_dataset("digits")
        >>> bundle.info.image_size, len(bundle.train), len(bundle.test)
        (8, 1437, 360)
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}; allowed: {', '.join(list_datasets())}") from None
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels or unset, got {image_size}")
    bundle = loader(Path(root), download=download, augment=augment, split_seed=split_seed, image_size=image_size)
    log.info(
        "loaded %s: %d train / %d test, %d classes, %dx%dx%d",
        name,
        len(bundle.train),
        len(bundle.test),
        bundle.info.num_classes,  # type: ignore[arg-type]
        bundle.info.in_channels,
        bundle.info.image_size,
        bundle.info.image_size,
    )
    return bundle
