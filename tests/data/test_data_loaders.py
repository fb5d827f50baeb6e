"""Loaders shuffle reproducibly; evaluation subsets are fixed and spread evenly over the split."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from robustsparse.data import eval_subset, load_dataset, load_tensors, make_loaders
from robustsparse.data.datasets import TensorImageDataset
from robustsparse.errors import DatasetError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _labels(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_train_loader_order_depends_only_on_seed(digits) -> None:
    a, _ = make_loaders(digits, batch_size=64, seed=3)
    b, _ = make_loaders(digits, batch_size=64, seed=3)
    c, _ = make_loaders(digits, batch_size=64, seed=4)
    first = [x for x, _ in a][0]
    assert torch.equal(first, [x for x, _ in b][0])
    assert torch.equal(_labels(a), _labels(b))
    assert not torch.equal(_labels(a), _labels(c))
    assert not torch.equal(_labels(a), _labels(a))  # a new epoch is a new order
    # Shuffled, but still every example exactly once per epoch.
    assert torch.equal(_labels(a).sort().values, load_tensors(digits.train)[1].sort().values)


def test_train_loader_never_ends_in_a_single_example_batch(digits) -> None:
    n = len(digits.train)
    train, _ = make_loaders(digits, batch_size=n - 1)
    assert [len(y) for _, y in train] == [n - 1]
    train, _ = make_loaders(digits, batch_size=n - 2)
    assert [len(y) for _, y in train] == [n - 2, 2]


def test_test_loader_keeps_dataset_order(digits) -> None:
    _, test = make_loaders(digits, batch_size=64, eval_batch_size=100)
    batches = list(test)
    assert len(batches[0][1]) == 100
    x, y = load_tensors(digits.test)
    assert torch.equal(torch.cat([b[0] for b in batches]), x) and torch.equal(torch.cat([b[1] for b in batches]), y)


def test_eval_subset_is_fixed_and_spread_evenly(digits) -> None:
    sub = eval_subset(digits.test, 10)
    assert len(sub) == 10
    n = len(digits.test)
    for i in range(10):
        j = i * n // 10
        assert torch.equal(sub[i][0], digits.test[j][0]) and sub[i][1] == digits.test[j][1]
    assert torch.equal(load_tensors(eval_subset(digits.test, 10))[0], load_tensors(eval_subset(digits.test, 10))[0])
    assert eval_subset(digits.test, None) is digits.test
    assert eval_subset(digits.test, len(digits.test) + 5) is digits.test
    for bad in (0, -1):
        with pytest.raises(DatasetError, match=str(bad)):
            eval_subset(digits.test, bad)


class _Generated(Dataset):
    """A non-tensor dataset, to exercise load_tensors' loader path."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, i: int):
        return torch.full((2, 3, 3), i / 10), i % 3


def test_class_sorted_data_keeps_every_class_in_the_subset() -> None:
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as ImageFolder lists files
    subset = eval_subset(TensorImageDataset(torch.rand(1000, 1, 2, 2), labels), 50)
    _, y = load_tensors(subset)
    assert torch.bincount(y, minlength=10).tolist() == [5] * 10


def test_load_tensors_stacks_the_subset() -> None:
    x, y = load_tensors(_Generated(), n=5, batch_size=2)
    assert x.shape == (5, 2, 3, 3) and x.dtype == torch.float32 and y.dtype == torch.int64
    idx = [i * 7 // 5 for i in range(5)]
    assert torch.equal(x[:, 0, 0, 0], torch.tensor(idx) / 10) and y.tolist() == [i % 3 for i in idx]
    images, labels = torch.rand(6, 1, 2, 2), torch.arange(6)
    fast = load_tensors(TensorImageDataset(images, labels), n=3)
    assert torch.equal(fast[0], images[[0, 2, 4]]) and torch.equal(fast[1], labels[[0, 2, 4]])
