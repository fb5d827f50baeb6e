"""Tiny ImageNet (200 classes, 64x64, 100,000 train / 10,000 val images), in its official layout.

``root/wnids.txt`` (one wnid per line), ``root/train/<wnid>/images/*.JPEG``, ``root/val/images/*.JPEG``
with labels in ``root/val/val_annotations.txt`` (tab separated: file, wnid, box). The test split of
the bundle is the official val split (the official test labels are not public). Labels follow the
sorted wnids (as ImageFolder sorts the train folders); class names come from ``words.txt`` when
present. Train augmentation: random crop with 8 pixels padding and horizontal flip.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from robustsparse.data.datasets import ImageListDataset
from robustsparse.data.folders import resolve_root
from robustsparse.data.info import DatasetBundle, DatasetInfo
from robustsparse.data.registry import register_dataset
from robustsparse.data.transforms import crop_flip, image_pipeline
from robustsparse.errors import DatasetError

__all__ = ["TINYIMAGENET_MEAN", "TINYIMAGENET_STD", "TINYIMAGENET_LAYOUT", "load_tinyimagenet"]

TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINYIMAGENET_STD = (0.2770, 0.2691, 0.2821)
TINYIMAGENET_LAYOUT = (
    "<root>/wnids.txt, <root>/train/<wnid>/images/*.JPEG, <root>/val/images/*.JPEG and <root>/val/val_annotations.txt"
)
_HOW_TO_GET = "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into the data folder"


def _error(problem: str) -> DatasetError:
    return DatasetError(f"tinyimagenet: {problem}; expected layout {TINYIMAGENET_LAYOUT}; {_HOW_TO_GET}")


def _read_wnids(path: Path) -> list[str]:
    if not path.is_file():
        raise _error(f"missing {path}")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise _error(f"{path} must list distinct wnids, one per line")
    return sorted(wnids)


def _read_words(path: Path, wnids: list[str]) -> tuple[str, ...]:
    """Human-readable class names from words.txt (first synonym), falling back to the wnid."""
    names: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            wnid, _, words = line.partition("\t")
            if words:
                names[wnid.strip()] = words.split(",")[0].strip()
    return tuple(names.get(w, w) for w in wnids)


def _read_val(root: Path, class_to_idx: dict[str, int]) -> list[tuple[Path, int]]:
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise _error(f"missing {ann}")
    samples = []
    for lineno, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            raise _error(f"{ann} line {lineno} needs '<file>\\t<wnid from wnids.txt>\\t...', got {line[:80]!r}")
        path = root / "val" / "images" / fields[0]
        if not path.is_file():
            raise _error(f"{path} is listed in {ann} but missing")
        samples.append((path, class_to_idx[fields[1]]))
    if not samples:
        raise _error(f"{ann} lists no images")
    return samples


@register_dataset("tinyimagenet")
def load_tinyimagenet(
    root: Path, *, download: bool, augment: bool, split_seed: int, image_size: int | None
) -> DatasetBundle:
    """Tiny ImageNet from ``root``, ``root/tinyimagenet`` or ``root/tiny-imagenet-200``; nothing is downloaded."""
    found, looked = resolve_root(root, ("tinyimagenet", "tiny-imagenet-200"))
    if found is None:
        raise _error(f"no train/ folder in {', '.join(str(p) for p in looked)}")
    wnids = _read_wnids(found / "wnids.txt")
    size = image_size or 64
    resize = size if size != 64 else None
    try:
        train = ImageFolder(
            str(found / "train"),
            transform=image_pipeline(resize=resize, crop=resize, augment=crop_flip(size) if augment else ()),
        )
    # ImageFolder raises FileNotFoundError for a folder without class subfolders or without images.
    except FileNotFoundError as exc:
        raise _error(f"no images under {found / 'train'} ({' '.join(str(exc).split())})") from exc
    if train.classes != wnids:
        extra = sorted(set(train.classes) - set(wnids))[:5]
        absent = sorted(set(wnids) - set(train.classes))[:5]
        raise _error(f"train/ folders do not match wnids.txt (not in wnids.txt: {extra}, without a folder: {absent})")
    test = ImageListDataset(
        _read_val(found, train.class_to_idx), wnids, transform=image_pipeline(resize=resize, crop=resize)
    )
    info = DatasetInfo(
        name="tinyimagenet",
        num_classes=len(wnids),
        in_channels=3,
        image_size=size,
        mean=TINYIMAGENET_MEAN,
        std=TINYIMAGENET_STD,
        class_names=_read_words(found / "words.txt", wnids),
    )
    return DatasetBundle(info=info, train=train, test=test)
