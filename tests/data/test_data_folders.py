"""Folder datasets (imagefolder, tinyimagenet) on fake trees, and missing-file messages for all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustsparse.data import list_datasets, load_dataset, load_tensors
from robustsparse.errors import DatasetError


def _check_split(dataset, info) -> None:
    x, y = load_tensors(dataset)
    assert x.dtype == torch.float32 and x.shape[1:] == (info.in_channels, info.image_size, info.image_size)
    assert x.min() >= 0 and x.max() <= 1
    assert y.min() >= 0 and y.max() < info.num_classes
    assert all(isinstance(dataset[i][1], int) for i in range(len(dataset)))


def test_imagefolder_reads_tree_as_rgb_unit_tensors(image_tree: Path) -> None:
    bundle = load_dataset("imagefolder", root=image_tree, augment=False)
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 3, 10)  # size inferred from the files
    assert info.class_names == ("cat", "dog", "emu")  # the folder names, sorted
    assert (len(bundle.train), len(bundle.test)) == (12, 6)
    _check_split(bundle.train, info)
    _check_split(bundle.test, info)
    # Without augmentation an image is exactly its file's pixels / 255, grey files expanded to RGB.
    for i in (0, 4):
        path, label = bundle.train.samples[i]
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
        image, got = bundle.train[i]
        assert got == label
        torch.testing.assert_close(image, expected)


def test_imagefolder_statistics_match_the_pixels(image_tree: Path) -> None:
    bundle = load_dataset("imagefolder", root=image_tree)
    # All 12 training images (fewer than the sample limit), test images excluded.
    files = sorted(image_tree.glob("train/*/*.png"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255 for p in files])
    assert bundle.info.mean == pytest.approx(tuple(pixels.mean(axis=(0, 1, 2))), abs=1e-6)
    assert bundle.info.std == pytest.approx(tuple(pixels.std(axis=(0, 1, 2))), abs=1e-6)


def test_imagefolder_augmentation_keeps_shape_and_range(image_tree: Path) -> None:
    bundle = load_dataset("imagefolder", root=image_tree, augment=True)
    plain = load_dataset("imagefolder", root=image_tree, augment=False)
    torch.manual_seed(0)
    draws = [bundle.train[0][0] for _ in range(8)]
    assert all(d.shape == (3, 10, 10) and d.min() >= 0 and d.max() <= 1 for d in draws)
    assert any(not torch.equal(d, plain.train[0][0]) for d in draws)
    torch.testing.assert_close(bundle.test[0][0], plain.test[0][0])  # the test split is never augmented


def test_imagefolder_accepts_val_and_resizes(image_tree: Path) -> None:
    (image_tree / "test").rename(image_tree / "val")
    bundle = load_dataset("imagefolder", root=image_tree, image_size=6)
    assert bundle.info.image_size == 6 and len(bundle.test) == 6
    _check_split(bundle.train, bundle.info)
    _check_split(bundle.test, bundle.info)


def test_imagefolder_layout_errors_name_the_path(image_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*train/<class>"):
        load_dataset("imagefolder", root=tmp_path / "nowhere")
    (image_tree / "test" / "emu").rename(image_tree / "test" / "gnu")
    with pytest.raises(DatasetError, match=r"class folders differ.*emu.*gnu"):
        load_dataset("imagefolder", root=image_tree)
    for d in (image_tree / "test").iterdir():
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    (image_tree / "test").rmdir()
    with pytest.raises(DatasetError) as info:
        load_dataset("imagefolder", root=image_tree)
    assert str(image_tree / "test") in str(info.value) and "val" in str(info.value)


def test_tinyimagenet_official_layout(tiny_imagenet: Path) -> None:
    bundle = load_dataset("tinyimagenet", root=tiny_imagenet.parent, augment=False)  # found as root/tiny-imagenet-200
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 3, 64)
    assert info.class_names == ("goldfish", "emu", "bus")  # sorted wnids n01, n02, n03, named by words.txt
    assert (len(bundle.train), len(bundle.test)) == (6, 6)
    for split in (bundle.train, bundle.test):
        _check_split(split, info)
        # Each class was drawn in its own dominant colour: labels must agree with the pixels.
        x, y = load_tensors(split)
        assert torch.equal(x.mean(dim=(2, 3)).argmax(1), y)


def test_tinyimagenet_layout_errors(tiny_imagenet: Path, tmp_path: Path) -> None:
    ann = tiny_imagenet / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt line 7.*n99"):
        load_dataset("tinyimagenet", root=tiny_imagenet)
    (tiny_imagenet / "wnids.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing .*wnids.txt.*tiny-imagenet-200.zip"):
        load_dataset("tinyimagenet", root=tiny_imagenet)
    with pytest.raises(DatasetError, match=r"no train/ folder in .*empty"):
        load_dataset("tinyimagenet", root=tmp_path / "empty")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_missing_torchvision_files_explain_how_to_get_them(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(name, root=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / name) in message  # where it looked
    assert "not found" in message and "data.download=true" in message and "imagefolder" in message
    assert not any((tmp_path / name).rglob("*.gz"))  # nothing was fetched


def test_imagenet_missing_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"imagenet: no train/ and val/ .*cannot be downloaded"):
        load_dataset("imagenet", root=tmp_path)


def test_unknown_dataset_lists_allowed_names() -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar11")
    assert "cifar11" in str(info.value) and all(n in str(info.value) for n in list_datasets())


def test_bad_image_size_is_refused() -> None:
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("digits", image_size=0)
