"""Data loaders and deterministic evaluation subsets.

The train loader shuffles with its own seeded ``torch.Generator``, so the batch order depends only
on ``seed``. Random augmentation in the main process (``num_workers=0``) draws from torch's global
RNG, which the caller seeds; worker processes are seeded from the loader's generator by PyTorch.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from robustsparse.data.datasets import TensorImageDataset
from robustsparse.data.info import DatasetBundle
from robustsparse.errors import DatasetError

__all__ = ["make_loaders", "eval_subset", "subset_indices", "load_tensors", "ShardSampler"]


def make_loaders(
    bundle: DatasetBundle,
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled, seeded) and test loader (in order) for a bundle.

    Args:
        bundle: the dataset.
        batch_size: training batch size.
        eval_batch_size: test batch size; defaults to ``batch_size``.
        num_workers: loader worker processes (0 loads in the main process).
        seed: seed of the shuffling order.
        pin_memory: pin batches for faster host-to-GPU copies.
        rank / world_size: this process's share of a distributed training (torchrun). With
            ``world_size > 1`` the train loader takes ``batch_size // world_size`` examples a step
            from a ``ShardSampler`` (call ``loader.sampler.set_epoch`` every epoch); the ranks'
            batches of one step together are the global batch a single process draws. The test loader holds every
            ``world_size``-th example from ``rank`` (no padding, so summed counts are exact).
            ``seed`` is then the first epoch's shuffling seed: see ``ShardSampler``.

    Returns:
        ``(train_loader, test_loader)``. The train loader drops its last batch only when that batch
        would hold a single example.

    Raises:
        ValueError: bad sizes, or ``batch_size`` not a multiple of ``world_size``.
    """
    if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
        raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if world_size > 1:
        return _distributed_loaders(
            bundle, batch_size, eval_batch_size, num_workers, seed, pin_memory, rank, world_size
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)
    # A last training batch of one example breaks BatchNorm (one value per channel at 1x1 maps): drop it.
    drop_last = len(bundle.train) % batch_size == 1  # type: ignore[arg-type]
    train = DataLoader(
        bundle.train, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last, **common
    )
    test = DataLoader(bundle.test, batch_size=eval_batch_size or batch_size, shuffle=False, **common)
    return train, test


class ShardSampler(Sampler[int]):
    """One rank's share of the single-process shuffle, for a distributed training.

    Epoch `e`'s order is the permutation the trainer's single-process train loader yields when its
    generator is seeded `seed + e` (what the trainer does every epoch). That loader's generator gives
    one int64 (the workers' base seed) every time the loader is iterated, and the training loop's
    progress bar iterates it twice (`tqdm.auto` takes an iterator when it is built, and another
    when it is looped over): `DRAWS_BEFORE_SHUFFLE`; its RandomSampler then draws `randperm(n)`.
    The test of torchrun against one process pins this down. With `num_workers > 0` the
    single-process loader keeps its workers between epochs and draws differently: the ranks then
    still take a seeded, resumable shuffle, only not the one-process order.

    Rank `r` of `W` takes positions r, r + W, r + 2W, ... of that order, so step k's batches of all
    ranks, `b` examples each, are together positions [k*b*W, (k+1)*b*W): the single process's batch
    k at batch size b*W. When `n` is not a multiple of `W` the order is padded with its first
    examples (as DistributedSampler does) so every rank takes the same number of steps.
    """

    #: int64 draws the single-process loader's generator makes before its shuffle (see above)
    DRAWS_BEFORE_SHUFFLE = 2

    def __init__(self, n: int, *, rank: int, world_size: int, seed: int) -> None:
        self.n, self.rank, self.world_size, self.seed = int(n), int(rank), int(world_size), int(seed)
        self.epoch = 0
        self.per_rank = -(-self.n // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle as the single-process loader does at epoch `epoch`."""
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for _ in range(self.DRAWS_BEFORE_SHUFFLE):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(self.n, generator=generator).tolist()
        order += order[: self.per_rank * self.world_size - self.n]
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.per_rank


def _distributed_loaders(
    bundle: DatasetBundle,
    batch_size: int,
    eval_batch_size: int | None,
    num_workers: int,
    seed: int,
    pin_memory: bool,
    rank: int,
    world_size: int,
) -> tuple[DataLoader, DataLoader]:
    """`make_loaders` for one rank of `world_size` (see there)."""
    if batch_size % world_size:
        raise ValueError(
            f"train.batch_size {batch_size} cannot be split over {world_size} processes; "
            f"set it to a multiple of {world_size} (it is the global batch, divided among the ranks)"
        )
    per_rank = batch_size // world_size
    sampler = ShardSampler(len(bundle.train), rank=rank, world_size=world_size, seed=seed)  # type: ignore[arg-type]
    common = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)
    drop_last = len(sampler) % per_rank == 1  # the same on every rank: they all hold len(sampler) examples
    train = DataLoader(bundle.train, batch_size=per_rank, sampler=sampler, drop_last=drop_last, **common)
    shard = Subset(bundle.test, range(rank, len(bundle.test), world_size))  # type: ignore[arg-type]
    test = DataLoader(shard, batch_size=eval_batch_size or batch_size, shuffle=False, **common)
    return train, test


def subset_indices(length: int, n: int) -> list[int]:
    """``n`` distinct indices spread evenly over ``range(length)``, always the same ones.

    Folder datasets list their examples class by class, so the literal first ``n`` would hold
    only the first classes; evenly spaced indices hold every class in its share.
    """
    return [i * length // n for i in range(n)]


def eval_subset(dataset: Dataset, n: int | None) -> Dataset:
    """A fixed evaluation subset of ``n`` examples, spread evenly over ``dataset``.

    Deterministic (no randomness): every model of a run, and every run, is attacked on the same
    examples, which paired comparisons need. For a shuffled split (digits) it is as good as a
    random sample; for a class-sorted folder it keeps every class.

    Args:
        dataset: a map-style dataset.
        n: how many; None, or at least ``len(dataset)``, gives the whole dataset.

    Returns:
        ``dataset`` itself or a ``Subset`` of it.

    Raises:
        DatasetError: ``n`` is zero or negative.
    """
    if n is None:
        return dataset
    if n <= 0:
        raise DatasetError(f"number of evaluation examples must be positive or unset (all), got {n}")
    if n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, subset_indices(len(dataset), n))  # type: ignore[arg-type]


def load_tensors(dataset: Dataset, n: int | None = None, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``n`` examples spread evenly over ``dataset`` (see `eval_subset`; all when None) into tensors.

    Args:
        dataset: yields ``(image, label)``.
        n: how many (see ``eval_subset``); None for all.
        batch_size: examples decoded per step.

    Returns:
        ``(images, labels)``: float32 ``(N, C, H, W)`` and int64 ``(N,)``.
    """
    subset = eval_subset(dataset, n)
    if isinstance(dataset, TensorImageDataset) and dataset.transform is None:
        # In-memory data: index instead of going through the loader one example at a time.
        index = torch.as_tensor(subset.indices) if isinstance(subset, Subset) else slice(None)
        return dataset.images[index].clone(), dataset.labels[index].clone()
    images, labels = [], []
    for x, y in DataLoader(subset, batch_size=batch_size, shuffle=False):
        images.append(x.to(torch.float32))
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    if not images:
        raise DatasetError("cannot load tensors from an empty dataset")
    return torch.cat(images), torch.cat(labels)
