"""Datasets read from class folders: any ``imagefolder`` and ImageNet (ILSVRC-2012).

``imagefolder`` reads ``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/val/``), e.g.
the CIFAR-10 JPEG copy. Images are converted to RGB, resized (shorter side) and centre-cropped to
``image_size`` (by default the first training image's shorter side; a no-op when images already
have that size). Mean/std are measured on up to ``STATS_SAMPLE`` evenly spaced training images,
kept in memory for the process. Train augmentation is CIFAR-style: random crop with ``size // 8``
padding and horizontal flip.

``imagenet`` reads ``root/train/<wnid>/*`` and ``root/val/<wnid>/*`` with the usual recipe: train
RandomResizedCrop(224) + flip; test Resize(256) + CenterCrop(224) (both scale with ``image_size``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder

from robustsparse.data.info import DatasetBundle, DatasetInfo
from robustsparse.data.registry import register_dataset
from robustsparse.data.transforms import channel_stats, crop_flip, image_pipeline, resized_crop_flip
from robustsparse.errors import DatasetError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGEFOLDER_LAYOUT", "load_imagefolder", "load_imagenet", "resolve_root"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGEFOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/test/<class>/<image> (or val/ instead of test/)"

_STATS_CACHE: dict[tuple[str, int, int, str, str], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def resolve_root(root: Path, aliases: tuple[str, ...]) -> tuple[Path | None, list[Path]]:
    """The first of ``root``, ``root/<alias>``... that has a ``train/`` folder.

    Returns:
        ``(found or None, candidates looked at)``.
    """
    candidates = [root] + [root / a for a in aliases]
    for c in candidates:
        if (c / "train").is_dir():
            return c, candidates
    return None, candidates


def _image_folder(path: Path, transform: object, what: str, layout: str) -> ImageFolder:
    try:
        return ImageFolder(str(path), transform=transform)
    # ImageFolder raises FileNotFoundError for a folder without class subfolders or without images.
    except FileNotFoundError as exc:
        reason = " ".join(str(exc).split())
        raise DatasetError(
            f"{what}: no images in class folders under {path} ({reason}); expected layout {layout}"
        ) from exc


def _check_same_classes(train: ImageFolder, test: ImageFolder, what: str, train_dir: Path, test_dir: Path) -> None:
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(
            f"{what}: class folders differ between {train_dir} and {test_dir} "
            f"(only in train: {only_train[:10]}, only in test: {only_test[:10]}); both need the same <class> subfolders"
        )


def _first_image_side(dataset: ImageFolder) -> int:
    with Image.open(dataset.samples[0][0]) as img:
        return min(img.size)


def _cached_stats(dataset: ImageFolder, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    key = (str(Path(dataset.root).resolve()), size, len(dataset), dataset.samples[0][0], dataset.samples[-1][0])
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = channel_stats(dataset)
    return _STATS_CACHE[key]


@register_dataset("imagefolder")
def load_imagefolder(
    root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None
) -> DatasetBundle:
    """Any ``train/`` + ``test/`` (or ``val/``) class-folder tree at ``root``; nothing is downloaded."""
    if not root.is_dir():
        raise DatasetError(
            f"imagefolder: folder {root} does not exist; set --set data.root=<folder> with layout {IMAGEFOLDER_LAYOUT}"
        )
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    missing = [str(root / "train")] if not train_dir.is_dir() else []
    if test_dir is None:
        missing.append(f"{root / 'test'} (or {root / 'val'})")
    if missing:
        raise DatasetError(f"imagefolder: missing {' and '.join(missing)}; expected layout {IMAGEFOLDER_LAYOUT}")
    assert test_dir is not None
    probe = _image_folder(train_dir, None, "imagefolder", IMAGEFOLDER_LAYOUT)
    size = image_size or _first_image_side(probe)
    plain = image_pipeline(resize=size, crop=size)
    train_plain = _image_folder(train_dir, plain, "imagefolder", IMAGEFOLDER_LAYOUT)
    test = _image_folder(test_dir, plain, "imagefolder", IMAGEFOLDER_LAYOUT)
    _check_same_classes(train_plain, test, "imagefolder", train_dir, test_dir)
    mean, std = _cached_stats(train_plain, size)
    if augment:
        augmented = image_pipeline(resize=size, crop=size, augment=crop_flip(size))
        train = _image_folder(train_dir, augmented, "imagefolder", IMAGEFOLDER_LAYOUT)
    else:
        train = train_plain
    info = DatasetInfo(
        name="imagefolder",
        num_classes=len(train.classes),
        in_channels=3,
        image_size=size,
        mean=mean,
        std=std,
        class_names=tuple(train.classes),
    )
    return DatasetBundle(info=info, train=train, test=test)


IMAGENET_LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


@register_dataset("imagenet")
def load_imagenet(
    root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None
) -> DatasetBundle:
    """ILSVRC-2012 from ``root`` or ``root/imagenet``; cannot be downloaded automatically."""
    found, looked = resolve_root(root, ("imagenet",))
    if found is None or not (found / "val").is_dir():
        raise DatasetError(
            f"imagenet: no train/ and val/ folders in {', '.join(str(p) for p in looked)}; ImageNet cannot be "
            f"downloaded automatically: get ILSVRC-2012 from image-net.org, put the validation images into class "
            f"folders, and lay it out as {IMAGENET_LAYOUT} (then --set data.root=<folder>)"
        )
    size = image_size or 224
    resize = round(size * 256 / 224)  # the usual 256 -> 224 ratio
    train_tf = image_pipeline(augment=resized_crop_flip(size)) if augment else image_pipeline(resize=resize, crop=size)
    train = _image_folder(found / "train", train_tf, "imagenet", IMAGENET_LAYOUT)
    test = _image_folder(found / "val", image_pipeline(resize=resize, crop=size), "imagenet", IMAGENET_LAYOUT)
    _check_same_classes(train, test, "imagenet", found / "train", found / "val")
    info = DatasetInfo(
        name="imagenet",
        num_classes=len(train.classes),
        in_channels=3,
        image_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=tuple(train.classes),
    )
    return DatasetBundle(info=info, train=train, test=test)
