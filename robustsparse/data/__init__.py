"""Datasets as ``(image, label)`` pairs: image a float32 CxHxW tensor in [0, 1], label an int.

Importing this package registers digits (offline default), mnist, fashion-mnist, cifar10, cifar100,
imagefolder, tinyimagenet and imagenet.
"""

from __future__ import annotations

from robustsparse.data import digits, folders, tinyimagenet, torchvision_sets  # noqa: F401  (registration)
from robustsparse.data.info import DatasetBundle, DatasetInfo
from robustsparse.data.loaders import eval_subset, load_tensors, make_loaders
from robustsparse.data.registry import list_datasets, load_dataset, register_dataset

__all__ = [
    "DatasetInfo",
    "DatasetBundle",
    "load_dataset",
    "list_datasets",
    "register_dataset",
    "make_loaders",
    "eval_subset",
    "load_tensors",
]
