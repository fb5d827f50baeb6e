"""SNIP: one-shot pruning at initialisation by connection sensitivity on one batch.

Lee, Ajanthan and Torr 2019 score every prunable weight by |g * w|, the gradient of the
training loss with respect to the weight times the weight, on one batch of training data at
initialisation, and prune once to the target; the network is then trained with the masks fixed.

Choices made here: the loss is the mean cross-entropy of the batch (the trainer's batch size,
drawn once by the trainer from the training set); the gradient is taken on a copy of the model
in eval mode (BatchNorm uses its running statistics and is not updated; the official SynFlow
code scores SNIP the same way), so the model is untouched until its masks are applied. At
initialisation means from scratch: `from_dense: false` is fixed (no dense parent).
Structured granularities score a group by the sum of its element scores (`importance: l1`,
fixed); a global ranking compares groups per weight on raw scores (`global_ranking: raw`,
fixed: the paper's single global threshold).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.sparsity.methods.base import Method
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.methods.synflow import BEFORE_TRAINING_SETTINGS
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import GRANULARITIES, SparsityConfig

__all__ = ["SNIP", "SnipPruner", "snip_scores"]


def snip_scores(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], names: list[str]
) -> dict[str, torch.Tensor]:
    """|dL/dw * w| of the parameters `names` on `batch` (mean cross-entropy, eval mode, a copy)."""
    net = copy.deepcopy(model).eval()
    params = dict(net.named_parameters())
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    device = next(iter(params.values())).device
    x, y = batch
    with torch.enable_grad():
        F.cross_entropy(net(x.to(device)), y.to(device)).backward()
    out = {}
    for name in names:
        p = params[name]
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        out[name] = (grad * p).detach().abs()
    return out


class SnipPruner(CampfirePruner):
    """A `CampfirePruner` whose masks come from SNIP scores at step 0, then stay fixed.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner` (cfg carries the one-shot schedule).
        batch: one training batch `(inputs, labels)`, kept on the CPU until scoring.
    """

    def __init__(
        self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        self._batch = (batch[0].detach().cpu(), batch[1].detach().cpu())
        super().__init__(model, cfg, steps_per_epoch)

    def _scored_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SNIP scores of the current model, zero where already masked."""
        del params  # the scores come from a copy of the model
        scores = snip_scores(self.model, self._batch, self._engine.weight_names)
        out = {}
        for n, s in scores.items():
            mask = self.masks.get(n)
            out[n] = s if mask is None else torch.where(mask.to(s.device), s, torch.zeros_like(s))
        return out

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus how the scores were made."""
        return {
            **super().metadata(),
            "scores": "snip |dL/dw * w| on one training batch (mean cross-entropy, eval mode), group = sum",
            "snip": {"batch_size": int(self._batch[0].shape[0])},
        }


def _build(
    model: nn.Module,
    cfg: SparsityConfig,
    steps_per_epoch: int,
    seed: int,
    *,
    example_batch: tuple[torch.Tensor, torch.Tensor],
) -> SnipPruner:
    del seed  # the batch is the only input; the trainer draws it from the model's seed
    return SnipPruner(model, cfg, steps_per_epoch, example_batch)


SNIP = register(
    Method(
        name="snip",
        description="one-shot connection sensitivity |grad * weight| on one training batch at initialisation, masks fixed",
        when="before_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
        fixed_settings={**BEFORE_TRAINING_SETTINGS, "importance": "l1", "global_ranking": "raw", "from_dense": False},
        needs_data=True,
    )
)
