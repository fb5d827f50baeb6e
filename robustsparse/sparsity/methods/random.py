"""Random masks: the baseline every method must beat.

The Campfire machinery (granularity, allocation, layers kept dense, accounting) with the
weights replaced by seeded uniform noise when groups are scored, so the groups kept are a
random draw at exactly the structure and per-layer allocation Campfire would produce. The
masks are decided once, before training (a one-shot schedule at step 0), and never change.
The noise is drawn from the model's seed through a generator of its own (the global RNG is
untouched), so the same seed gives the same masks and a resumed run restores them exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustsparse.sparsity._math import derived_seed
from robustsparse.sparsity.methods.base import Method
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import GRANULARITIES, SparsityConfig

__all__ = ["RANDOM", "RandomPruner", "random_mask_seed"]


def random_mask_seed(seed: int) -> int:
    """The noise generator's seed for a model's seed.

    Hashed rather than `seed` itself: a generator seeded like the global RNG would replay the
    uniform draws of the model's initialisation, and the "random" masks would follow the
    initial weights' magnitudes.
    """
    return derived_seed("robustsparse.random_masks", seed)


class RandomPruner(CampfirePruner):
    """A `CampfirePruner` whose group scores come from seeded noise instead of the weights.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner` (cfg carries the one-shot schedule).
        seed: the model's seed; the noise follows from it alone.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> None:
        self.mask_seed = random_mask_seed(seed)
        generator = torch.Generator().manual_seed(self.mask_seed)
        # One draw per parameter in the model's order, before the engine exists: the same
        # model and seed give the same noise whatever layers are kept dense.
        self._noise = {
            name: torch.rand(p.shape, generator=generator, dtype=torch.float32)
            for name, p in model.named_parameters()
            if p.dim() > 1
        }
        super().__init__(model, cfg, steps_per_epoch)

    def _scored_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for n in self._engine.weight_names:
            noise = self._noise[n].to(params[n].device)
            mask = self.masks.get(n)
            out[n] = noise if mask is None else torch.where(mask.to(noise.device), noise, torch.zeros_like(noise))
        return out

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the noise seed (`scores: uniform noise`)."""
        return {**super().metadata(), "scores": "uniform noise", "mask_seed": self.mask_seed}


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> RandomPruner:
    return RandomPruner(model, cfg, steps_per_epoch, seed)


RANDOM = register(
    Method(
        name="random",
        description="random masks at the same granularity and allocation, fixed before training (the baseline)",
        when="before_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
        fixed_settings={
            "schedule": "one_shot",
            "initial_sparsity": 0.0,
            "start_epoch": 0,
            "end_epoch": 0,
            "allow_regrowth": False,
        },
    )
)
