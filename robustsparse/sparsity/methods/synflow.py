"""SynFlow: iterative, data-free pruning at initialisation by synaptic flow (methods.md 9).

Tanaka et al. 2020 score every prunable weight by |theta * dR/dtheta|, where R is the sum of
the output of the *linearised* network: every floating-point entry of the state (weights,
biases, BatchNorm affine parameters and running statistics) replaced by its absolute value, the
current masks applied, and an all-ones input of the model's input shape. Pruning is iterative:
`synflow_rounds` rounds (100, the paper's), round k of R reaching density
`(1 - target) ** (k / R)` (the exponential schedule), each round scoring the network masked by
the previous one, so no layer collapses.

Choices made here (the paper's code where it says, a setting or a note where it does not):
- BatchNorm is in eval mode and its running statistics are made non-negative like every other
  entry (the official code): at initialisation (mean 0, variance 1) it is the identity up to
  its affine part, so the network is linear in each layer's |weights|.
- The scoring runs on a float64 copy of the model (the paper: double precision against
  overflow in deep networks); the model's own weights are never touched, only masked at the
  end. Scores are divided by R (one constant for all layers, so the order is unchanged) before
  the engine ranks them in float32.
- The all-ones input goes through the whole model as the trainer calls it, the input
  normalisation included ((1 - |mean|) / |std| is positive for images in [0, 1]). The input
  shape comes from one training batch's shape; its values are never read (data-free).
- At initialisation means from scratch: `from_dense: false` is fixed (no dense parent).
- Structured granularities score a group by the sum of its element scores (`importance: l1`
  on the scores, fixed); a global ranking compares groups per weight on raw scores
  (`global_ranking: raw`, fixed: the paper's single global threshold).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from robustsparse.sparsity.methods.base import Method
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import GRANULARITIES, SparsityConfig

__all__ = ["SYNFLOW", "SynflowPruner", "synflow_scores", "BEFORE_TRAINING_SETTINGS"]

#: A one-shot schedule at step 0: the masks are decided before training and frozen at once.
BEFORE_TRAINING_SETTINGS = {
    "schedule": "one_shot",
    "initial_sparsity": 0.0,
    "start_epoch": 0,
    "end_epoch": 0,
    "allow_regrowth": False,
}


def synflow_scores(
    model: nn.Module, masks: dict[str, torch.Tensor], input_shape: tuple[int, ...], names: list[str]
) -> tuple[dict[str, torch.Tensor], float]:
    """|theta * dR/dtheta| of the weights `names` in the linearised, masked network (float64).

    Args:
        model: the network (not modified: a float64 copy is scored).
        masks: parameter name -> bool mask (True = kept) applied before scoring.
        input_shape: one example's shape, without the batch dimension.
        names: the parameters to score.

    Returns:
        (scores per name in float64, R) with R the synaptic flow of the masked network.
    """
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for value in net.state_dict().values():  # shares storage with the copy
            if value.is_floating_point():
                value.abs_()
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device))
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    device = next(iter(params.values())).device
    with torch.enable_grad():
        flow = net(torch.ones((1, *input_shape), dtype=torch.float64, device=device)).sum()
        flow.backward()
    scores = {}
    for name in names:
        p = params[name]
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        scores[name] = (grad * p).detach().abs()
    return scores, float(flow.detach())


class SynflowPruner(CampfirePruner):
    """A `CampfirePruner` whose masks come from iterative SynFlow at step 0, then stay fixed.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner` (cfg carries the one-shot schedule).
        input_shape: one input example's shape (no batch dimension).
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, input_shape: tuple[int, ...]):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.flow: float | None = None
        super().__init__(model, cfg, steps_per_epoch)

    def _scored_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One round's scores on the currently masked model, divided by R (order unchanged)."""
        del params  # the scores come from a linearised copy of the model
        scores, flow = synflow_scores(self.model, self.masks, self.input_shape, self._engine.weight_names)
        self.flow = flow
        scale = flow if flow > 0 else 1.0
        return {n: (s / scale).float() for n, s in scores.items()}

    @torch.no_grad()
    def _update(self, target: float, optimizer: torch.optim.Optimizer | None) -> bool:
        before = {n: m.clone() for n, m in self.masks.items()}
        rounds = self.cfg.synflow_rounds
        density = 1.0 - target
        result = None
        for k in range(1, rounds + 1):
            # the exponential schedule; the last round lands exactly on the target
            round_target = target if k == rounds else 1.0 - density ** (k / rounds)
            result = self._engine.compute(self._scored_weights({}), self.masks, round_target)
            self.masks = result.masks
        self._result = result
        self._pairs = None
        self.apply_(optimizer)
        return any(not torch.equal(before[n], self.masks[n]) for n in self.masks)

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus how the scores were made."""
        return {
            **super().metadata(),
            "scores": "synflow |theta * dR/dtheta| on the linearised network (float64), group = sum of element scores",
            "synflow": {
                "rounds": self.cfg.synflow_rounds,
                "schedule": "exponential: density (1 - target) ** (k / rounds)",
                "input_shape": list(self.input_shape),
                "batchnorm": "eval mode, running statistics and affine parameters made non-negative",
                "final_flow": self.flow,
            },
        }


def _build(
    model: nn.Module,
    cfg: SparsityConfig,
    steps_per_epoch: int,
    seed: int,
    *,
    example_batch: tuple[torch.Tensor, torch.Tensor],
) -> SynflowPruner:
    del seed  # deterministic: no data, no randomness
    return SynflowPruner(model, cfg, steps_per_epoch, tuple(example_batch[0].shape[1:]))


SYNFLOW = register(
    Method(
        name="synflow",
        description="iterative synaptic-flow pruning at initialisation (data-free, synflow_rounds exponential rounds), masks fixed",
        when="before_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
        fixed_settings={**BEFORE_TRAINING_SETTINGS, "importance": "l1", "global_ranking": "raw", "from_dense": False},
        needs_data=True,
    )
)
