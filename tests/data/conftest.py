"""Tiny fake image trees on disk, so folder datasets are tested without the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("cat", "dog", "emu")  # already sorted, so folder order == label order
# One dominant colour channel per class, so a label can be checked from the pixels even after JPEG.
CLASS_COLOURS = ((220, 30, 30), (30, 220, 30), (30, 30, 220))


def write_image(path: Path, rgb: tuple[int, int, int], size: int, seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb)[None, None, :] + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert(mode) if mode != "RGB" else image).save(path)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """``train/<class>/*.png`` (4 per class) and ``test/<class>/*.png`` (2 per class), 10x10; one grey image."""
    root = tmp_path / "tree"
    for split, count in (("train", 4), ("test", 2)):
        for k, name in enumerate(CLASSES):
            for i in range(count):
                mode = "L" if (split, k, i) == ("train", 1, 0) else "RGB"  # a grey file must come out RGB
                write_image(root / split / name / f"{i}.png", CLASS_COLOURS[k], 10, seed=100 * k + i, mode=mode)
    return root


@pytest.fixture
def tiny_imagenet(tmp_path: Path) -> Path:
    """The official Tiny ImageNet layout with 3 classes, 64x64 JPEGs, 2 train and 2 val images per class."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ("n02", "n01", "n03")  # unsorted on purpose: labels follow the sorted order
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\temu\nn03\tbus, coach\n")
    lines = []
    for wnid in wnids:
        k = sorted(wnids).index(wnid)
        for i in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", CLASS_COLOURS[k], 64, seed=10 * k + i)
            (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
            name = f"val_{len(lines)}.JPEG"
            write_image(root / "val" / "images" / name, CLASS_COLOURS[k], 64, seed=50 + len(lines))
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root
