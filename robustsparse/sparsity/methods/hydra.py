"""HYDRA: importance scores learned under the training loss with the weights frozen, then the top-k
fine-tuned (Sehwag, Wang, Mittal, Jana, NeurIPS 2020, arXiv 2002.10509; methods.md section 12).

The paper prunes an adversarially pre-trained network by optimising, instead of the weights, one
importance score per weight under the robust loss, keeping the top-k scores, and fine-tuning the
kept weights with the same loss. Here the loss is whatever `train.adversarial` says (its `loss:
madry`, `trades`, ...: the config trains the dense parent and this model with the same one), and:

- **Score phase** (epochs 0 to `hydra_score_epochs`, default `end_epoch`): every prunable layer's
  forward uses `w * m` with `m` the top-k mask of |s| at `target_sparsity` (the engine's own
  masks of `granularity` and `allocation` computed from |s|, so exactly the mask fixed at the end),
  and a straight-through gradient `dL/ds = dL/d(w * m) * w * sign(s)` (the paper's GetSubnet). The
  layer's output is recomputed in a forward hook from the masked weight (one extra conv per layer
  in this phase; the model's own modules and parameter names are untouched). The weights are
  frozen: the method declares that it does not train them (`Method.trains_weights`), so the
  trainer does not step the model's optimiser (BatchNorm's running statistics still follow the
  data, as in the reference code, where only the parameters are frozen).
- **Scaled initialisation** (the paper's): per layer, `s = sqrt(6 / fan_in) * w / max|w|`, so the
  first mask is the layer's magnitude mask.
- **Scores' optimiser**: SGD with momentum 0.9 and weight decay 1e-4 (the reference code's
  training recipe; fixed here) at `hydra_score_lr` (0.1, the paper's), constant (the reference
  uses a cosine schedule over the score phase: ours is simpler). Held by the pruner and stepped
  by the trainer after every backward pass (`Method.extra_state`); scores, its state and the step
  are in `state_dict()`, so resume is exact.
- **Freeze** at the end of the score phase: the masks are the top-k of |s| (as used forward),
  the pruned weights and their optimiser state are zeroed, the hooks are removed, and the kept
  weights are fine-tuned with the masks fixed for the remaining epochs, on `train`'s schedule.
- From the dense parent (`from_dense: true`, fixed): HYDRA prunes a pre-trained network.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity.allocation import MaskResult
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error, state_to_cpu
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import SparsityConfig, is_int, is_number

__all__ = ["HYDRA", "HydraPruner", "resolve_hydra_settings", "scaled_scores"]

log = logging.getLogger(__name__)

METHOD = "hydra"
DEFAULT_SCORE_LR = 0.1
SCORE_MOMENTUM = 0.9
SCORE_WEIGHT_DECAY = 1e-4
HYDRA_FORMAT = "robustsparse.hydra"


def resolve_hydra_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """hydra's settings checked and completed; the score phase sets `start_epoch` (0) and `end_epoch`.

    Raises:
        ConfigError: a hydra setting is given for another method, or is out of range (one line).
    """
    keys = ("hydra_score_epochs", "hydra_score_lr")
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, keys)
        return {}
    epochs = cfg.end_epoch if cfg.hydra_score_epochs is None else cfg.hydra_score_epochs
    if not (is_int(epochs) and epochs >= 1):
        raise setting_error("hydra_score_epochs", epochs, "an integer >= 1 (epochs of the score phase)")
    lr = DEFAULT_SCORE_LR if cfg.hydra_score_lr is None else cfg.hydra_score_lr
    if not (is_number(lr) and lr > 0):
        raise setting_error("hydra_score_lr", lr, "a number > 0 (the scores' SGD learning rate)")
    # the masks are decided over the score phase (the forward at the target from step 0) and fixed at its end
    return {"hydra_score_epochs": epochs, "hydra_score_lr": float(lr), "start_epoch": 0, "end_epoch": epochs}


def scaled_scores(weight: torch.Tensor) -> torch.Tensor:
    """HYDRA's scaled initialisation of a layer's scores: sqrt(6 / fan_in) * w / max|w|."""
    w = weight.detach().float()
    fan_in = w[0].numel()  # input channels x kernel size (a linear layer: its inputs)
    peak = w.abs().max()
    return math.sqrt(6.0 / fan_in) * w / (peak if peak > 0 else 1.0)


class HydraPruner(CampfirePruner):
    """A `CampfirePruner` whose masks are the top-k of scores learned with the weights frozen.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner` (cfg carries the score phase's end).
        seed: the model's seed (unused: the scores start from the weights).

    Attributes:
        scores: parameter name -> trainable scores of every prunable weight.
        optimizer: their SGD optimiser (`Method.extra_state`).

    Until the freeze the model carries hooks bound to this pruner: copy its `state_dict()` into a
    fresh model rather than deep-copying the model itself.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> None:
        del seed
        super().__init__(model, cfg, steps_per_epoch)
        params = self._params()
        names = self._engine.weight_names if self._engine is not None else []
        self.scores = {n: nn.Parameter(scaled_scores(params[n]).to(params[n].device)) for n in names}
        self.optimizer = torch.optim.SGD(
            list(self.scores.values()) or [nn.Parameter(torch.zeros(1))],
            lr=float(cfg.hydra_score_lr),
            momentum=SCORE_MOMENTUM,
            weight_decay=SCORE_WEIGHT_DECAY,
        )
        self.seen_step = 0
        self._effective: dict[str, torch.Tensor] | None = None
        self._top_k_cache: tuple[tuple[tuple[int, int], ...], MaskResult] | None = None
        self._handles: list[Any] = []
        if names:
            modules = dict(model.named_modules())
            self._handles.append(model.register_forward_pre_hook(self._compute_masks))
            for layer in self._engine.layers:
                self._handles.append(modules[layer.module].register_forward_hook(self._masked_forward(layer.param)))

    # ------------------------------------------------------------------ the score phase
    @property
    def scoring(self) -> bool:
        """True in the score phase: the weights frozen, the forward masked by the scores' top-k."""
        return bool(self.scores) and not self.frozen

    def top_k(self) -> dict[str, torch.Tensor]:
        """The masks of the current scores at `target_sparsity` (what the freeze would fix now)."""
        return self._top_k_result().masks

    def _top_k_result(self) -> MaskResult:
        # The forward pre-hook asks on every forward (each attack step of robust training too),
        # but the scores change only when their optimiser steps or a state is loaded: both bump
        # the tensors' version counters, so the ranking is redone only then.
        key = tuple((id(s), s._version) for s in self.scores.values())
        if self._top_k_cache is None or self._top_k_cache[0] != key:
            with torch.no_grad():
                ranked = {n: s.detach().abs() for n, s in self.scores.items()}
                self._top_k_cache = (key, self._engine.compute(ranked, None, self.cfg.target_sparsity))
        return self._top_k_cache[1]

    def _compute_masks(self, module: nn.Module, args: Any) -> None:
        del module, args
        if not self.scoring:
            self._effective = None
            return
        hard = self.top_k()
        # straight-through: forward the 0/1 mask exactly, backward the identity to |s|
        self._effective = {}
        for n, s in self.scores.items():
            magnitude = s.abs()
            self._effective[n] = hard[n].to(s.dtype) + (magnitude - magnitude.detach())

    def _masked_forward(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            del output  # recomputed from the masked weight
            if self._effective is None:
                return None
            weight = module.weight * self._effective[name].to(module.weight.dtype)
            if isinstance(module, nn.Linear):
                return F.linear(inputs[0], weight, module.bias)
            return module._conv_forward(inputs[0], weight, module.bias)

        return hook

    def trains_weights(self) -> bool:
        """False in the score phase (the trainer then leaves the weights alone)."""
        return not self.scoring

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Record the step; at the end of the score phase fix the top-k mask and apply it."""
        if self.frozen:
            return False
        self.seen_step = int(global_step)
        if global_step < self.plan.end_step:
            self.current_target = float(self.cfg.target_sparsity) if self.scores else 0.0  # what the forward uses
            return False
        self._freeze(optimizer)
        return True

    @torch.no_grad()
    def _freeze(self, optimizer: torch.optim.Optimizer | None) -> None:
        result = self._top_k_result()
        self.masks, self._result, self._pairs = result.masks, result, None
        self._remove_hooks()
        self._last_update = self.plan.end_step
        self.current_target = float(self.cfg.target_sparsity)
        self.apply_(optimizer)
        log.info("hydra: top-k of the scores fixed as the masks (achieved %.4f)", self.achieved()["prunable"])

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._effective = None
        self._top_k_cache = None

    # ------------------------------------------------------------------ reporting and resume
    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the score phase."""
        return {
            **super().metadata(),
            "scores": "hydra importance scores (scaled initialisation sqrt(6/fan_in) * w / max|w|), trained with "
            "the weights frozen; mask = top-k of |score| at the end of the score phase",
            "hydra": {
                "score_epochs": int(self.cfg.hydra_score_epochs),
                "score_lr": float(self.cfg.hydra_score_lr),
                "score_optimizer": f"SGD momentum {SCORE_MOMENTUM}, weight decay {SCORE_WEIGHT_DECAY}, constant lr",
                "gradient": "straight-through: dL/ds = dL/d(w*m) * w * sign(s)",
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus the scores, their optimiser and the step."""
        return {
            **super().state_dict(),
            "hydra": {
                "format": HYDRA_FORMAT,
                "scores": state_to_cpu(self.scores),
                "optimizer": state_to_cpu(self.optimizer.state_dict()),
                "seen_step": int(self.seen_step),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; after the freeze the hooks are removed again."""
        super().load_state_dict(state)
        extra = state.get("hydra")
        if not isinstance(extra, dict) or extra.get("format") != HYDRA_FORMAT:
            raise CheckpointError("pruner state has no hydra part; resume only from a state saved by HydraPruner")
        if set(extra["scores"]) != set(self.scores):
            raise CheckpointError("pruner state's hydra scores name other layers; the state belongs to another model")
        with torch.no_grad():
            for n, s in extra["scores"].items():
                self.scores[n].copy_(s.to(self.scores[n].device))
        self.optimizer.load_state_dict(extra["optimizer"])
        self.seen_step = int(extra["seen_step"])
        if self.frozen:
            self._remove_hooks()


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> HydraPruner:
    return HydraPruner(model, cfg, steps_per_epoch, seed)


HYDRA = register(
    Method(
        name=METHOD,
        description="importance scores trained with the weights frozen (scaled init), top-k fixed, then fine-tuned",
        when="after_training",
        granularities=("element",),
        build_pruner=_build,
        resolve_settings=resolve_hydra_settings,
        fixed_settings={"from_dense": True, "schedule": "one_shot", "initial_sparsity": 0.0, "allow_regrowth": False},
        extra_state=lambda pruner: pruner.optimizer,
        trains_weights=lambda pruner: pruner.trains_weights(),
    )
)
