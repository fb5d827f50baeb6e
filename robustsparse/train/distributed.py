"""Data-parallel training of one model under `torchrun`: the process group and what the ranks must agree on.

`torchrun --nproc_per_node=N -m robustsparse train CONFIG` starts N processes with the environment
variables WORLD_SIZE, RANK and LOCAL_RANK set. `DistContext.from_env` reads them (None when they
are absent: one ordinary process), `init` joins the process group (`gloo` on CPU, `nccl` on CUDA).

Contracts of a distributed training (the trainer keeps them; see the README, "torchrun"):
    - the global batch is `train.batch_size`, split evenly over the ranks (each rank takes
      batch_size / world_size examples a step), so a config trains the same recipe (learning rate,
      steps per epoch, pruning schedule per step) on one process or on N;
    - every rank computes the masks itself from its weights, which DistributedDataParallel keeps
      identical; `check_masks_agree` compares a digest of the masks across ranks after every mask
      update and fails loudly when they differ, rather than training N different models;
    - metrics are reduced exactly: sums of correct counts, of loss x examples and of examples;
    - rank 0 alone writes files; the others wait at a barrier.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from robustsparse.errors import ConfigError

__all__ = ["DistContext", "MasksDiverged", "masks_digest", "check_masks_agree", "all_reduce_sums", "broadcast_buffers"]

log = logging.getLogger(__name__)

#: environment variables torchrun sets in every process it starts
ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class MasksDiverged(RuntimeError):
    """The ranks of a distributed training hold different masks: they would train different models."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed training."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0: the one process that writes files and logs at INFO."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistContext | None:
        """The context torchrun set in the environment, or None outside torchrun.

        Raises:
            ConfigError: the variables are only partly set or not integers.
        """
        env = os.environ if environ is None else environ
        present = [name for name in ENV_VARS if name in env]
        if not present:
            return None
        try:
            values = [int(env[name]) for name in ENV_VARS]
        except (KeyError, ValueError):
            raise ConfigError(
                f"torchrun environment incomplete or not integers ({', '.join(f'{n}={env.get(n)!r}' for n in ENV_VARS)}); "
                "start distributed training with torchrun --nproc_per_node=N -m robustsparse ..."
            ) from None
        world_size, rank, local_rank = values
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"torchrun environment: RANK={rank} is outside WORLD_SIZE={world_size}")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    def device(self, requested: torch.device) -> torch.device:
        """This rank's device: `cuda` becomes `cuda:LOCAL_RANK` (one GPU per process); CPU stays CPU."""
        if requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def init(self, device: torch.device, *, timeout_minutes: float = 30.0) -> None:
        """Join the process group (nccl for CUDA, gloo for CPU), unless already joined."""
        if dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
        log.info("process group joined: %s, %d ranks", backend, self.world_size)

    def barrier(self) -> None:
        """Wait until every rank gets here (a no-op with one rank)."""
        if self.world_size > 1:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. a dataset download), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    @staticmethod
    def close() -> None:
        """Leave the process group (when joined)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def masks_digest(masks: Mapping[str, torch.Tensor]) -> bytes:
    """A SHA-256 digest of the masks: names in sorted order, shapes and the kept/pruned bits."""
    h = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().to("cpu", torch.bool).contiguous()
        h.update(f"{name}:{tuple(mask.shape)};".encode())
        h.update(mask.numpy().tobytes())
    return h.digest()


def check_masks_agree(masks: Mapping[str, torch.Tensor], *, device: torch.device, where: str = "") -> None:
    """Compare this rank's masks with every other rank's (a digest, gathered); fail when any differs.

    Every rank must call it at the same point (it is a collective).

    Raises:
        MasksDiverged: two ranks hold different masks.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    # 8 bytes of the digest in an int64: a collision between two different mask sets is 2**-64.
    mine = torch.tensor([int.from_bytes(masks_digest(masks)[:8], "big", signed=True)], dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    values = [int(t.item()) for t in gathered]
    if len(set(values)) > 1:
        differ = [rank for rank, v in enumerate(values) if v != values[0]]
        raise MasksDiverged(
            f"masks differ across ranks{' ' + where if where else ''}: ranks {differ} disagree with rank 0; "
            "the ranks would train different models (a method drawing per-rank randomness, or weights out of sync)"
        )


def all_reduce_sums(values: list[float], *, device: torch.device) -> list[float]:
    """Each value summed over the ranks (float64, so counts stay exact); unchanged with one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DistributedDataParallel broadcasts them at the start of every forward pass, so after the last
    training step each rank holds the statistics of its own last batch; evaluating and saving with
    rank 0's makes every rank evaluate the model rank 0 saves.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
