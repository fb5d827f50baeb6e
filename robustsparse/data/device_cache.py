"""A decoded image-folder dataset kept on the training device (`data.device_cache: true`).

CIFAR-size JPEGs cost more to decode and augment in loader processes than a GPU takes to train on
them, so the GPU waits for the loader. Here every split is decoded once into one uint8 tensor
`(N, C, H, W)` (the same pixels the torchvision path gives: same resize and centre crop, before its
float conversion), saved beside the data in `<root>/.robustsparse-cache/` and loaded back from there
(`weights_only`). The tensor is moved to the device once; batches are drawn there, and the train
split's augmentation runs on the whole batch at once with the torchvision path's semantics
(`transforms.crop_flip`): a random crop with `size // 8` zero padding (offsets uniform in
[0, 2 * padding] on each axis) and a horizontal flip with probability 1/2, independently per image.

The cache file's name holds a checksum of the split's file list (relative paths, sizes and labels)
and the image size, so a folder whose files change gets a new cache (the old one is left behind).

The random draws (shuffle, offsets, flips) come from one CPU `torch.Generator` (`loader.generator`,
reseeded by the trainer every epoch), so a seed gives the same batches on every device. They are
not the torchvision path's draws: a model trained with the cache differs from one trained without
(it is part of the model's digest when enabled).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from robustsparse.data.transforms import crop_padding, image_pipeline
from robustsparse.errors import DatasetError
from robustsparse.utils.atomic import torch_save_atomic

__all__ = [
    "CACHE_DIR",
    "CACHE_FORMAT",
    "DeviceBatches",
    "decoded_split",
    "file_list_checksum",
    "random_crop_flip",
    "unit_float",
    "device_loaders",
]

log = logging.getLogger(__name__)

#: the cache folder inside the dataset's root
CACHE_DIR = ".robustsparse-cache"
#: the `format` of a cache file (a new layout gets a new value: old files are then rebuilt)
CACHE_FORMAT = "robustsparse.decoded_split/1"


def _folder_dataset(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """The class-folder dataset under `dataset` and the subset's indices (None: all of it)."""
    indices = None
    while isinstance(dataset, Subset):
        inner = list(dataset.indices)
        indices = inner if indices is None else [inner[i] for i in indices]
        dataset = dataset.dataset
    if not hasattr(dataset, "samples") or not hasattr(dataset, "root"):
        raise DatasetError(
            "data.device_cache needs a class-folder dataset (imagefolder, e.g. the CIFAR-10 JPEG copy); "
            "set data.device_cache=false for this one"
        )
    return dataset, indices


def file_list_checksum(samples: list[tuple[str, int]], root: str | Path) -> str:
    """sha256 of the split's files: relative path, size in bytes and label of each, in order."""
    digest = hashlib.sha256()
    root = Path(root)
    for path, label in samples:
        file = Path(path)
        digest.update(f"{file.relative_to(root).as_posix()}\t{file.stat().st_size}\t{label}\n".encode())
    return digest.hexdigest()


def _decode(dataset: Dataset, size: int, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a class-folder dataset as uint8 (N, C, H, W), with its labels (no augmentation)."""
    plain = copy.copy(dataset)  # the same files, without the train split's augmentation
    plain.transform = image_pipeline(resize=size, crop=size)  # the torchvision path's plain pipeline
    images, labels = [], []
    for x, y in DataLoader(plain, batch_size=256, shuffle=False, num_workers=num_workers):
        # the pipeline's float is u / 255 exactly: rounding back gives the decoded byte
        images.append((x * 255).round_().to(torch.uint8))
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def decoded_split(dataset: Dataset, size: int, *, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The split under `dataset` decoded to uint8 `(N, C, size, size)` and int64 labels, from its cache.

    The cache (`<root>/.robustsparse-cache/<split>-<size>px-<checksum>.pt`, root being the folder
    holding the split's folder) is written on the first call and read back afterwards; when it
    cannot be written (a read-only dataset folder) the split is decoded in memory only. A
    `Subset` (e.g. `data.train_examples`) decodes its whole split and takes its examples.

    Raises:
        DatasetError: `dataset` is not a class-folder dataset.
    """
    folder, indices = _folder_dataset(dataset)
    split_root = Path(folder.root)
    checksum = file_list_checksum(folder.samples, split_root)
    path = split_root.parent / CACHE_DIR / f"{split_root.name}-{size}px-{checksum[:20]}.pt"
    images = labels = None
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") == CACHE_FORMAT and state.get("checksum") == checksum:
                images, labels = state["images"], state["labels"]
        except Exception as exc:  # a damaged cache is decoded again, never trusted
            log.warning("device cache %s unreadable (%s); decoding the split again", path, type(exc).__name__)
    if images is None or labels is None or len(images) != len(folder.samples):
        log.info("device cache: decoding %d images of %s once", len(folder.samples), split_root)
        images, labels = _decode(folder, size, num_workers)
        state = {"format": CACHE_FORMAT, "checksum": checksum, "images": images, "labels": labels}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch_save_atomic(path, state)
        except OSError as exc:
            log.warning("device cache: cannot write %s (%s); kept in memory only", path, exc.strerror or exc)
    if indices is not None:
        index = torch.as_tensor(indices, dtype=torch.int64)
        images, labels = images[index], labels[index]
    return images, labels


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], bit for bit as torchvision's `ToDtype(float32, scale=True)`."""
    return images.to(torch.float32).mul_(1.0 / 255)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """A random crop with `padding` zero pixels on each side and a horizontal flip (p = 1/2), per image.

    Args:
        images: `(N, C, H, W)` on any device, any dtype (uint8 here).
        padding: zero pixels added on each side before cropping back to `H x W`.
        generator: a CPU generator: the draws (two offsets and a flip per image) do not depend
            on the device.

    Returns:
        The augmented batch, same shape, dtype and device.
    """
    n, _, h, w = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    picked = padded[torch.arange(n, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous()  # advanced indexing puts channels last: (n, h, w, c)


class DeviceBatches:
    """Batches `(float32 images in [0, 1], int64 labels)` of a decoded split held on `device`.

    Iterated like a DataLoader: shuffled (train) or in order (test), each batch augmented with
    `random_crop_flip` when `padding` is given. The trainer reseeds `generator` every epoch.
    `dataset` is the original dataset (for what reads examples one by one, e.g. a method's data).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        padding: int | None,
        seed: int,
        dataset: Dataset | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"need uint8 images (N, C, H, W) and N labels, got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.shuffle, self.padding = int(batch_size), shuffle, padding
        self.generator = torch.Generator().manual_seed(int(seed))
        self.dataset = dataset
        # as make_loaders: a last training batch of one example breaks BatchNorm, drop it
        self.drop_last = shuffle and len(images) % self.batch_size == 1

    def __len__(self) -> int:
        n = len(self.images) - (1 if self.drop_last else 0)
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for k in range(len(self)):
            index = order[k * self.batch_size : (k + 1) * self.batch_size]
            batch = self.images[index]
            if self.padding is not None:
                batch = random_crop_flip(batch, self.padding, self.generator)
            yield unit_float(batch), self.labels[index]


def device_loaders(
    train: Dataset,
    test: Dataset,
    *,
    image_size: int,
    augment: bool,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    num_workers: int = 0,
) -> tuple[DeviceBatches, DeviceBatches]:
    """`make_loaders`' train and test loaders for a class-folder dataset, decoded and kept on `device`.

    The augmentation (when `augment`) is the torchvision path's `crop_flip(image_size)`: padding
    `crop_padding(image_size)`, then a horizontal flip.
    """
    padding = crop_padding(image_size) if augment else None
    train_x, train_y = decoded_split(train, image_size, num_workers=num_workers)
    test_x, test_y = decoded_split(test, image_size, num_workers=num_workers)
    train_batches = DeviceBatches(
        train_x, train_y, batch_size=batch_size, device=device, shuffle=True, padding=padding, seed=seed, dataset=train
    )
    test_batches = DeviceBatches(
        test_x, test_y, batch_size=eval_batch_size, device=device, shuffle=False, padding=None, seed=0, dataset=test
    )
    return train_batches, test_batches
