"""Datasets torchvision can download: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Files live in ``<root>/<name>`` (e.g. ``data/cifar10``). Without the files and without
``download=True``, or when the download fails (no network), one DatasetError says what is missing,
where it looked and how to get it. Mean/std are the usual published training-set statistics
(CIFAR std is the per-pixel one, 0.247/0.243/0.261, not the often-copied 0.2023/0.1994/0.2010).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from robustsparse.data.info import DatasetBundle, DatasetInfo
from robustsparse.data.registry import register_dataset
from robustsparse.data.transforms import crop_flip, image_pipeline
from robustsparse.errors import DatasetError

__all__ = ["TorchvisionSpec", "TORCHVISION_SPECS", "load_torchvision_bundle"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchvisionSpec:
    """How one torchvision dataset is built: its class, native size, statistics and augmentation."""

    name: str
    cls: type
    image_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # CIFAR-style crop + flip when True; digit-like datasets get none (a flipped 2 is not a 2)
    expected: str  # what torchvision looks for inside <root>/<name>, named in the error message


_GREY = {"image_size": 28, "in_channels": 1, "augment": False}
_CIFAR = {"image_size": 32, "in_channels": 3, "augment": True}

TORCHVISION_SPECS: dict[str, TorchvisionSpec] = {
    s.name: s
    for s in (
        TorchvisionSpec("mnist", tv_datasets.MNIST, mean=(0.1307,), std=(0.3081,), expected="MNIST/raw/", **_GREY),
        TorchvisionSpec(
            "fashion-mnist",
            tv_datasets.FashionMNIST,
            mean=(0.2860,),
            std=(0.3530,),
            expected="FashionMNIST/raw/",
            **_GREY,
        ),
        TorchvisionSpec(
            "cifar10",
            tv_datasets.CIFAR10,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            expected="cifar-10-batches-py/",
            **_CIFAR,
        ),
        TorchvisionSpec(
            "cifar100",
            tv_datasets.CIFAR100,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            expected="cifar-100-python/",
            **_CIFAR,
        ),
    )
}


def _missing(spec: TorchvisionSpec, where: Path, download: bool, exc: Exception) -> DatasetError:
    if download:
        reason = " ".join(str(exc).split())  # one line, whatever the library put in
        problem = f"{spec.name}: files ({spec.expected}) missing in {where} and the download failed ({reason})"
        fix = "check the network, or download the files elsewhere and copy them there"
    else:
        problem = f"{spec.name}: files ({spec.expected}) not found in {where} (download is off)"
        fix = "run with --set data.download=true to download them"
    return DatasetError(
        f"{problem}; {fix}, or unpack an image copy as <dir>/train/<class>/*.png and <dir>/test/<class>/*.png "
        f"and use --set data.dataset=imagefolder --set data.root=<dir>"
    )


def _build(spec: TorchvisionSpec, where: Path, train: bool, download: bool, transform: object) -> Dataset:
    try:
        return spec.cls(root=str(where), train=train, download=download, transform=transform)
    # torchvision raises RuntimeError for missing/corrupt files and failed mirrors, OSError (URLError)
    # when the network is unreachable.
    except (RuntimeError, OSError) as exc:
        raise _missing(spec, where, download, exc) from exc


def load_torchvision_bundle(
    spec: TorchvisionSpec, root: Path, *, download: bool, augment: bool, image_size: int | None
) -> DatasetBundle:
    """Build the train and test splits of ``spec`` from ``<root>/<name>``.

    Args:
        spec: which dataset.
        root: data folder; files are in ``root / spec.name``.
        download: let torchvision download missing files.
        augment: give the train split the standard augmentation.
        image_size: resize to this side; None keeps the native size.

    Raises:
        DatasetError: files missing and not downloadable.
    """
    where = root / spec.name
    size = image_size or spec.image_size
    resize = size if size != spec.image_size else None
    aug = crop_flip(size) if (augment and spec.augment) else []
    train = _build(spec, where, True, download, image_pipeline(resize=resize, crop=resize, augment=aug))
    test = _build(spec, where, False, download, image_pipeline(resize=resize, crop=resize))
    info = DatasetInfo(
        name=spec.name,
        num_classes=len(train.classes),  # type: ignore[attr-defined]
        in_channels=spec.in_channels,
        image_size=size,
        mean=spec.mean,
        std=spec.std,
        class_names=tuple(str(c) for c in train.classes),  # type: ignore[attr-defined]
    )
    return DatasetBundle(info=info, train=train, test=test)


def _register(spec: TorchvisionSpec) -> None:
    @register_dataset(spec.name)
    def _load(root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None) -> DatasetBundle:
        return load_torchvision_bundle(spec, root, download=download, augment=augment, image_size=image_size)

    _load.__doc__ = f"{spec.name} from <root>/{spec.name} (torchvision; official train/test split)."


for _spec in TORCHVISION_SPECS.values():
    _register(_spec)
