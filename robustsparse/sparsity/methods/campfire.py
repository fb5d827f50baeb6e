"""Campfire: gradual magnitude pruning at a granularity, masks frozen at `end_epoch` (methods.md 1)."""

from __future__ import annotations

from torch import nn

from robustsparse.sparsity.methods.base import Method
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import GRANULARITIES, SparsityConfig

__all__ = ["CAMPFIRE"]


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> CampfirePruner:
    del seed  # magnitude scores: nothing random
    return CampfirePruner(model, cfg, steps_per_epoch)


CAMPFIRE = register(
    Method(
        name="campfire",
        description="gradual magnitude pruning on a schedule, masks frozen at end_epoch (Campfire)",
        when="during_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
    )
)
