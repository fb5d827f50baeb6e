"""The device-resident decoded dataset: the torchvision path's pixels, its crop-and-flip semantics on
whole batches, deterministic under a seed, a cache rebuilt when the folder changes, and a trainer
that uses it (on the CPU here, as on CUDA)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robustsparse.config import config_from_dict
from robustsparse.data import load_dataset, load_tensors
from robustsparse.data.device_cache import (
    CACHE_DIR,
    DeviceBatches,
    decoded_split,
    device_loaders,
    random_crop_flip,
    unit_float,
)
from robustsparse.errors import ConfigError, DatasetError
from robustsparse.train.jobs import experiment_jobs
from robustsparse.train.trainer import train_job

CPU = torch.device("cpu")


def _write_png(path: Path, seed: int, size: int = 10) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)


def _bundle(root: Path, augment: bool = True):
    return load_dataset("imagefolder", root=root, download=False, augment=augment, split_seed=0, image_size=None)


def test_the_cache_holds_the_torchvision_path_pixels_and_is_read_back_from_disk(image_tree, caplog):
    bundle = _bundle(image_tree)
    with caplog.at_level(logging.INFO, logger="robustsparse.data.device_cache"):
        images, labels = decoded_split(bundle.test, 10)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 10, 10)
    plain_x, plain_y = load_tensors(bundle.test)  # the torchvision path, float in [0, 1]
    assert torch.equal(unit_float(images), plain_x) and torch.equal(labels, plain_y)
    # the train split is decoded without its augmentation (the bundle's train transform crops and flips)
    train_x, _ = decoded_split(bundle.train, 10)
    assert torch.equal(unit_float(train_x), load_tensors(_bundle(image_tree, augment=False).train)[0])
    files = sorted((image_tree / CACHE_DIR).glob("*.pt"))
    assert [f.name.split("-")[0] for f in files] == ["test", "train"]
    assert sum("decoding" in r.message for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustsparse.data.device_cache"):
        again, _ = decoded_split(bundle.test, 10)
    assert torch.equal(again, images) and not any("decoding" in r.message for r in caplog.records)


def test_the_cache_is_rebuilt_when_the_folder_changes(image_tree):
    bundle = _bundle(image_tree)
    before, _ = decoded_split(bundle.test, 10)
    _write_png(image_tree / "test" / "dog" / "9.png", seed=999)
    after, labels = decoded_split(_bundle(image_tree).test, 10)
    assert len(after) == len(before) + 1 and int(labels[-3]) == 1  # the new dog (the emus come last)
    assert len(list((image_tree / CACHE_DIR).glob("test-*.pt"))) == 2  # a new file: the old one is not trusted
    # a file replaced by another of a different size changes the checksum too
    (image_tree / "test" / "cat" / "0.png").write_bytes((image_tree / "test" / "cat" / "0.png").read_bytes() + b"\0")
    decoded_split(_bundle(image_tree).test, 10)
    assert len(list((image_tree / CACHE_DIR).glob("test-*.pt"))) == 3


def test_a_damaged_cache_file_is_decoded_again(image_tree):
    bundle = _bundle(image_tree)
    images, _ = decoded_split(bundle.test, 10)
    (cache,) = (image_tree / CACHE_DIR).glob("test-*.pt")
    cache.write_bytes(b"not a tensor file")
    again, _ = decoded_split(bundle.test, 10)
    assert torch.equal(again, images)


def test_a_subset_takes_its_examples_from_the_whole_split(image_tree):
    bundle = _bundle(image_tree)
    subset = torch.utils.data.Subset(bundle.test, [4, 1])
    images, labels = decoded_split(subset, 10)
    full, full_labels = decoded_split(bundle.test, 10)
    assert torch.equal(images, full[[4, 1]]) and torch.equal(labels, full_labels[[4, 1]])


def test_a_dataset_without_class_folders_is_refused_in_one_line():
    images = torch.zeros(4, 1, 8, 8)
    from robustsparse.data.datasets import TensorImageDataset

    with pytest.raises(DatasetError, match="^data.device_cache needs a class-folder dataset"):
        decoded_split(TensorImageDataset(images, torch.zeros(4, dtype=torch.int64)), 8)
    with pytest.raises(
        ConfigError, match=r"data\.device_cache = True is not allowed; expected false for dataset 'digits'"
    ):
        config_from_dict({"data": {"dataset": "digits", "device_cache": True}})


def _crops_of(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop-with-padding of `image`, flipped or not: what the augmentation may return."""
    h, w = image.shape[1:]
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, y : y + h, x : x + w] for y in range(2 * padding + 1) for x in range(2 * padding + 1)]
    return crops + [c.flip(2) for c in crops]


def test_crop_flip_on_a_batch_returns_padded_crops_of_each_image_with_torchvisions_distribution():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (6, 3, 8, 8), dtype=torch.uint8)  # no zero pixel: padding shows
    out = random_crop_flip(images, 1, generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for original, augmented in zip(images, out, strict=True):
        assert any(torch.equal(augmented, crop) for crop in _crops_of(original, 1))
    # the draws: offsets uniform in [0, 2p] on each axis and flips with probability 1/2, as torchvision's
    n, padding = 3000, 2
    template = torch.arange(1, 65, dtype=torch.uint8).reshape(1, 1, 8, 8)  # every crop and flip distinct
    crops = torch.stack(_crops_of(template[0], padding))  # (2 * 25, 1, 8, 8): offsets (dy, dx), then flipped
    out = random_crop_flip(template.expand(n, -1, -1, -1), padding, generator)
    match = (out[:, None] == crops[None]).flatten(2).all(2)  # (n, 50)
    assert bool((match.sum(1) == 1).all())  # each output is exactly one crop
    which = match.float().argmax(1)
    side = 2 * padding + 1
    flipped, offset = which // side**2, which % side**2
    assert abs(float(flipped.float().mean()) - 0.5) < 0.03
    for axis in (offset // side, offset % side):  # dy, dx
        shares = torch.bincount(axis, minlength=side).float() / n
        assert float((shares - 1 / side).abs().max()) < 0.03, shares


def test_device_batches_are_deterministic_under_a_seed_and_in_range(image_tree):
    bundle = _bundle(image_tree)

    def epoch(seed: int):
        train, test = device_loaders(
            bundle.train,
            bundle.test,
            image_size=10,
            augment=True,
            batch_size=5,
            eval_batch_size=4,
            device=CPU,
            seed=seed,
        )
        return list(train), list(test)

    (train_a, test_a), (train_b, _), (train_c, _) = epoch(3), epoch(3), epoch(4)
    assert [len(x) for x, _ in train_a] == [5, 5, 2] and len(test_a) == 2  # 12 train, 6 test examples
    for x, y in train_a:
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and y.dtype == torch.int64
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(train_a, train_b, strict=True))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(train_a, train_c, strict=True))
    # the test split: in order, not augmented, the torchvision path's values
    plain_x, plain_y = load_tensors(bundle.test)
    assert torch.equal(torch.cat([x for x, _ in test_a]), plain_x) and torch.equal(
        torch.cat([y for _, y in test_a]), plain_y
    )


def test_a_last_batch_of_one_is_dropped_like_make_loaders():
    batches = DeviceBatches(
        torch.zeros(11, 1, 4, 4, dtype=torch.uint8),
        torch.zeros(11),
        batch_size=5,
        device=CPU,
        shuffle=True,
        padding=1,
        seed=0,
    )
    assert len(batches) == 2 and sum(len(y) for _, y in batches) == 10


def test_the_trainer_uses_the_cache_and_the_digest_tells_the_two_paths_apart(image_tree, tmp_path):
    raw = {
        "data": {"dataset": "imagefolder", "root": "x"},
        "model": {"arch": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 4, "amp": True, "channels_last": True},
    }
    plain = config_from_dict(raw)
    cached = config_from_dict({**raw, "data": {**raw["data"], "root": str(image_tree), "device_cache": True}})
    (job,) = experiment_jobs(cached)
    (plain_job,) = experiment_jobs(plain)
    assert job.digest != replace(plain_job, data=replace(cached.data, device_cache=False)).digest  # other draws
    # off, the setting is not in the digest: this job's digest before data.device_cache existed (6b1ead2)
    assert plain_job.digest == "4ed335d04fa5"
    meta = train_job(job, tmp_path / "m", device=CPU, progress=False)
    assert meta["n_test"] == 6 and 0.0 <= meta["clean_acc"] <= 1.0
    assert (image_tree / CACHE_DIR).is_dir()
    again = train_job(job, tmp_path / "again", device=CPU, progress=False)
    assert again["clean_acc"] == meta["clean_acc"]  # same seed, same batches: the same model


def test_under_torchrun_the_device_cache_is_refused_before_anything_is_written(image_tree, tmp_path):
    from robustsparse.pipeline.experiment import prepare_distributed
    from robustsparse.train.distributed import DistContext

    cfg = config_from_dict(
        {"data": {"dataset": "imagefolder", "root": str(image_tree), "device_cache": True}, "train": {"epochs": 1}}
    )
    rank0_of_2 = DistContext(rank=0, world_size=2, local_rank=0)
    with pytest.raises(ConfigError, match="^data.device_cache is not supported under torchrun"):
        prepare_distributed(cfg, tmp_path / "run", restart=False, distributed=rank0_of_2)
    assert not (tmp_path / "run").exists() and not (image_tree / CACHE_DIR).exists()
    (job,) = experiment_jobs(cfg)
    with pytest.raises(ConfigError, match="^data.device_cache is not supported under torchrun"):
        train_job(job, tmp_path / "m", device=CPU, progress=False, distributed=rank0_of_2)
    assert not (image_tree / CACHE_DIR).exists()
