"""The offline default: scikit-learn digits as in-memory tensors with a seeded stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from robustsparse.data import load_dataset, load_tensors


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_yields_float_images_in_unit_range(digits) -> None:
    info = digits.info
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 8)
    assert len(info.class_names) == 10
    for split in (digits.train, digits.test):
        image, label = split[0]
        assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
        assert isinstance(label, int)
        x, y = load_tensors(split)
        assert x.min() >= 0 and x.max() <= 1 and x.max() == 1  # 16/16 occurs: scaled by 16, not by the max
        assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < info.num_classes


def test_split_is_a_stratified_partition(digits) -> None:
    raw = load_digits()
    x_train, y_train = load_tensors(digits.train)
    x_test, y_test = load_tensors(digits.test)
    assert len(y_train) + len(y_test) == len(raw.target)
    # Together the two splits are exactly the data set, each example once (as multisets of rows).
    rows = torch.cat([x_train, x_test]).flatten(1).mul(16).round().numpy()
    labels = torch.cat([y_train, y_test]).numpy()
    ours = np.column_stack([rows, labels])
    full = np.column_stack([raw.images.reshape(len(raw.target), -1), raw.target])
    assert np.array_equal(ours[np.lexsort(ours.T[::-1])], full[np.lexsort(full.T[::-1])])
    # Stratified: each class is split 80/20 up to rounding.
    for c in range(10):
        n_c = int((raw.target == c).sum())
        assert abs(int((y_test == c).sum()) - 0.2 * n_c) <= 1


def test_split_depends_only_on_the_seed(digits) -> None:
    again = load_dataset("digits", split_seed=0)
    other = load_dataset("digits", split_seed=1)
    assert torch.equal(load_tensors(digits.test)[0], load_tensors(again.test)[0])
    assert digits.info == again.info
    assert not torch.equal(load_tensors(digits.test)[0], load_tensors(other.test)[0])


def test_statistics_come_from_the_train_split(digits) -> None:
    x_train, _ = load_tensors(digits.train)
    assert digits.info.mean[0] == pytest.approx(x_train.mean().item(), rel=1e-5)
    assert digits.info.std[0] == pytest.approx(x_train.std(unbiased=False).item(), rel=1e-5)
    x_all = torch.cat([x_train, load_tensors(digits.test)[0]])
    assert digits.info.mean[0] != pytest.approx(x_all.mean().item(), rel=1e-6)


def test_digits_can_be_resized(digits) -> None:
    big = load_dataset("digits", image_size=16)
    x, y = load_tensors(big.train)
    assert big.info.image_size == 16 and x.shape[1:] == (1, 16, 16)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(y, load_tensors(digits.train)[1])  # same split, only the pixels change
