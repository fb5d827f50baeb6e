"""Campfire's gradual structured pruner: schedule + granularity + allocation, masks frozen at the end.

Campfire (Gamboa, Kudrolli, Dhoot, Pedram 2020, arXiv 2001.03253) trains with gradual
structured pruning whose masks become fixed after a set number of epochs. `CampfirePruner`
composes the pieces of this package and works on any `nn.Module`:

    pruner = CampfirePruner(model, cfg, steps_per_epoch=len(train_loader))
    pruner.step(0)                       # the target at step 0 (initial sparsity, one-shot)
    for step, (x, y) in enumerate(loader, start=1):
        loss_fn(model(x), y).backward()
        optimizer.step()
        pruner.step(step, optimizer)     # recompute masks at update points (never after the freeze)
        pruner.apply_(optimizer)         # zero masked weights and their optimizer state (with
                                         # allow_regrowth: the state is kept until the freeze)

`pruner.state_dict()` holds only tensors and plain values (safe for
`torch.load(weights_only=True)`), so training resumed from any epoch gives the same masks.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity.allocation import MaskResult, channel_granularity_masks, row_granularity_masks
from robustsparse.sparsity.coupling import ChannelGroup, find_channel_groups
from robustsparse.sparsity.granularity import POINTWISE_GROUPED
from robustsparse.sparsity.layers import LayerInfo, resolve_layers
from robustsparse.sparsity.masks import achieved_sparsity, mask_sparsity, zero_masked_state_
from robustsparse.sparsity.schedule import last_update_step, schedule_sparsity, update_plan
from robustsparse.sparsity.settings import CHANNEL_GRANULARITIES, SparsityConfig, settings_to_dict

__all__ = ["CampfirePruner", "compute_masks", "prunable_groups", "prune_one_shot", "PRUNER_FORMAT", "PRUNER_VERSION"]

log = logging.getLogger(__name__)

PRUNER_FORMAT = "robustsparse.pruner"
PRUNER_VERSION = 1
# Settings the trainer owns; a resumed run may not change the others.
_TRAINER_SETTINGS = ("lr_mode", "from_dense")


class _Engine:
    """The model-specific part: which layers and channel groups are pruned, and how."""

    def __init__(self, model: nn.Module, cfg: SparsityConfig) -> None:
        self.cfg = cfg
        self.all_layers = resolve_layers(model, cfg)
        self.layers: list[LayerInfo] = [layer for layer in self.all_layers if layer.prunable]
        self.param_names = {name for name, _ in model.named_parameters()}
        self.groups: list[ChannelGroup] = []
        self.all_groups: list[ChannelGroup] = []
        if cfg.granularity in CHANNEL_GRANULARITIES and self.layers:
            self.all_groups = find_channel_groups(model)
            self.groups = prunable_groups(self.all_groups, self.layers)
            if not self.groups:
                log.warning(
                    "granularity %s: no channel can be removed without touching a residual stream or a dense layer; "
                    "nothing will be pruned",
                    cfg.granularity,
                )
        if not self.layers:
            log.warning("no prunable layer: every conv/linear layer is kept dense")

    @property
    def weight_names(self) -> list[str]:
        return [layer.param for layer in self.layers]

    def compute(
        self, weights: dict[str, torch.Tensor], prev: dict[str, torch.Tensor] | None, target: float
    ) -> MaskResult:
        if not self.layers:
            return MaskResult()
        if self.cfg.granularity in CHANNEL_GRANULARITIES:
            return channel_granularity_masks(
                self.layers, self.groups, weights, self.param_names, prev, self.cfg, target
            )
        return row_granularity_masks(self.layers, weights, prev, self.cfg, target, self.cfg.target_sparsity)


def prunable_groups(groups: list[ChannelGroup], layers: list[LayerInfo]) -> list[ChannelGroup]:
    """The channel groups whose producer and consumers are all prunable layers."""
    prunable = {layer.module for layer in layers}
    return [g for g in groups if g.producer in prunable and all(name in prunable for name, _ in g.consumers)]


def compute_masks(model: nn.Module, cfg: SparsityConfig, target: float | None = None) -> dict[str, torch.Tensor]:
    """One-shot masks of `model` at `target` (default: `cfg.target_sparsity`), from its weights.

    Args:
        model: any module with conv / linear layers.
        cfg: the granularity, importance, allocation and dense-layer settings.
        target: the fraction of zeros wanted over the prunable weights.

    Returns:
        Parameter name -> bool tensor (True = kept) for every prunable weight, plus the
        coupled biases and BatchNorm parameters for filter / channel.

    Example:
        >>> masks = compute_masks(model, SparsityConfig(method="campfire", granularity="kernel", target_sparsity=0.7))
        >>> apply_masks_(model, masks)
    """
    target = cfg.target_sparsity if target is None else float(target)
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target must be a fraction of zeros in [0, 1), got {target}")
    engine = _Engine(model, cfg)
    params = dict(model.named_parameters())
    weights = {name: params[name].detach() for name in engine.weight_names}
    return engine.compute(weights, None, target).masks


class CampfirePruner:
    """Gradual structured pruning with masks frozen after `cfg.end_epoch` (Campfire).

    Args:
        model: the model to prune; its parameters are masked in place.
        cfg: the sparsity settings (`method: none` gives a pruner that does nothing).
        steps_per_epoch: optimizer steps per epoch (converts epochs into update steps).

    Attributes:
        masks: parameter name -> bool tensor (True = kept), for every prunable weight and the
            coupled BatchNorm/bias parameters of filter / channel pruning.
        current_target: the target of the latest mask update (0 before the first).
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int) -> None:
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = int(steps_per_epoch)
        self.plan = update_plan(cfg, self.steps_per_epoch)
        self.current_target = 0.0
        self._last_update: int | None = None
        self._shadow: dict[str, torch.Tensor] = {}
        self._pairs: list[tuple[str, torch.Tensor, torch.Tensor]] | None = None
        self._engine: _Engine | None = None
        self._result = MaskResult()
        self.masks: dict[str, torch.Tensor] = {}
        if cfg.method != "none":
            self._engine = _Engine(model, cfg)
            params = self._params()
            self._result = self._engine.compute({n: params[n].detach() for n in self._engine.weight_names}, None, 0.0)
            self.masks = self._result.masks

    # ------------------------------------------------------------------ state of the schedule
    @property
    def frozen(self) -> bool:
        """True once the last update (at `end_epoch`) is applied: masks never change again."""
        if self._engine is None:
            return True
        return self._last_update is not None and self._last_update >= self.plan.end_step

    @property
    def last_update_step(self) -> int | None:
        """The global step of the latest mask update (None before the first)."""
        return self._last_update

    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Recompute the masks if `global_step` reached an update point, and apply them.

        Call after every optimizer step with the number of steps taken so far (and once with
        0 before training). Steps missed in between are caught up with the latest update
        point's target; after the freeze nothing changes.

        Args:
            global_step: optimizer steps taken so far.
            optimizer: if given, its state is zeroed at newly masked positions.

        Returns:
            Whether the masks changed.
        """
        if self._engine is None or self.frozen:
            return False
        point = last_update_step(int(global_step), self.plan)
        if point is None or (self._last_update is not None and point <= self._last_update):
            return False
        target = schedule_sparsity(point / self.steps_per_epoch, self.cfg)
        changed = self._update(target, optimizer)
        self._last_update = point
        self.current_target = target
        if self.frozen:
            self._shadow = {}  # pruned weights are final: no dense copy needed any more
            self.apply_(optimizer)  # with regrowth, their optimizer state was kept until now: clear it
            log.info("masks frozen at step %d (target %.4f, achieved %.4f)", point, target, self.achieved()["prunable"])
        else:
            log.debug("masks updated at step %d: target %.4f", point, target)
        return changed

    @torch.no_grad()
    def _update(self, target: float, optimizer: torch.optim.Optimizer | None) -> bool:
        params = self._params()
        regrow = self.cfg.allow_regrowth
        if regrow:
            self._fold_into_shadow()
            dense = {n: self._dense_value(n, params[n]) for n in self.masks}
            weights = {n: dense[n] for n in self._engine.weight_names}
            result = self._engine.compute(weights, None, target)
        else:
            weights = self._scored_weights(params)
            result = self._engine.compute(weights, self.masks, target)
        changed = any(not torch.equal(result.masks[n], self.masks[n]) for n in self.masks)
        if regrow:
            for n, new in result.masks.items():
                value = dense[n]
                params[n].copy_(torch.where(new, value, torch.zeros_like(value)))
                self._shadow[n] = torch.where(new, torch.zeros_like(value), value)
        self.masks = result.masks
        self._result = result
        self._pairs = None
        self.apply_(optimizer)
        return changed

    def _scored_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the group scores are computed from: the prunable weights with pruned positions
        at zero, so scores never see what the last optimizer step wrote there before `apply_`
        (a kernel's score is its kept weights only). A method with other scores overrides it."""
        out = {}
        for n in self._engine.weight_names:
            p = params[n].detach()
            mask = self.masks.get(n)
            out[n] = p if mask is None else torch.where(mask.to(p.device), p, torch.zeros_like(p))
        return out

    def _dense_value(self, name: str, param: torch.Tensor) -> torch.Tensor:
        shadow = self._shadow.get(name)
        value = param.detach().clone()
        if shadow is not None:
            value = torch.where(self.masks[name].to(value.device), value, shadow.to(value.device))
        return value

    def _pruned_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, parameter, ~mask) for every mask with a pruned entry, on the parameter's device."""
        if self._pairs is not None and all(pruned.device == p.device for _, p, pruned in self._pairs):
            return self._pairs
        params = self._params()
        pairs = []
        for name, mask in self.masks.items():
            p = params[name]
            mask = mask.to(p.device)
            self.masks[name] = mask
            if not bool(mask.all()):
                # In the parameter's memory format (e.g. channels_last on CUDA) so the fill is a plain pass.
                pruned = torch.empty_like(p, dtype=torch.bool)
                pruned.copy_(~mask)
                pairs.append((name, p, pruned))
        self._pairs = pairs
        return pairs

    @torch.no_grad()
    def _fold_into_shadow(self) -> None:
        """Regrowth: add what the optimizer wrote into pruned positions to their dense copy."""
        for name, p, pruned in self._pruned_pairs():
            shadow = self._shadow.get(name)
            if shadow is None:
                shadow = self._shadow[name] = torch.zeros_like(p)
            shadow.add_(torch.where(pruned, p, torch.zeros_like(p)))

    @torch.no_grad()
    def apply_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the masked weights in place, and the optimizer state at masked positions.

        Call after every `optimizer.step()`. With `allow_regrowth` (before the freeze) the
        optimizer's updates of pruned weights are first added to their dense shadow copy, and
        their optimizer state (momentum, Adam moments) is kept, so a pruned weight's dense value
        moves exactly as a kept weight with the same gradients would: a fair competition. That
        state is cleared at the freeze, after which pruned weights never move again.
        """
        if self._engine is None:
            return
        regrowing = self.cfg.allow_regrowth and not self.frozen
        if regrowing:
            self._fold_into_shadow()
        pairs = self._pruned_pairs()
        for _, p, pruned in pairs:
            p.masked_fill_(pruned, 0.0)
        if optimizer is not None and not regrowing:
            zero_masked_state_(optimizer, [(p, pruned) for _, p, pruned in pairs])

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the gradients at masked positions (between backward and the optimizer step).

        Optional: it keeps masked gradients out of gradient clipping. With `allow_regrowth`
        before the freeze it does nothing, since pruned weights need their updates to compete.
        """
        if self._engine is None or (self.cfg.allow_regrowth and not self.frozen):
            return
        for _, p, pruned in self._pruned_pairs():
            if p.grad is not None:
                p.grad.masked_fill_(pruned, 0.0)

    # ------------------------------------------------------------------ reporting
    def achieved(self) -> dict[str, float]:
        """Measured sparsity of the model now: `{"prunable": ..., "all": ...}`."""
        return achieved_sparsity(self.model, self.masks)

    def granularity_info(self) -> dict[str, Any]:
        """What the structure checks and the export need: granularity, per-layer specs,
        channel groups and layers kept dense (JSON-able; a subset of `metadata()`)."""
        layers = self._engine.all_layers if self._engine is not None else []
        return {
            "method": self.cfg.method,
            "granularity": self.cfg.granularity if self._engine is not None else "dense",
            "layers": {k: dict(v) for k, v in self._result.specs.items()},
            "dense_layers": {layer.module: layer.dense_reason for layer in layers if not layer.prunable},
            "channel_groups": [g.to_dict() for g in (self._engine.groups if self._engine else [])],
            "pruned_channels": dict(self._result.pruned_channels),
        }

    def nearest_achievable(self) -> float:
        """The sparsity over the prunable weights the final masks reach (count of masked entries).

        Exact once the final target is applied; before, a dry run on the current weights.
        """
        if self._engine is None or not self._engine.layers:
            return 0.0
        names = self._engine.weight_names
        if self.frozen or self.current_target == self.cfg.target_sparsity:
            return mask_sparsity(self.masks, names)
        params = self._params()
        if self.cfg.allow_regrowth:
            weights = {n: self._dense_value(n, params[n]) for n in names}
        else:
            weights = self._scored_weights(params)
        prev = None if self.cfg.allow_regrowth else self.masks
        return mask_sparsity(self._engine.compute(weights, prev, self.cfg.target_sparsity).masks, names)

    def _achievable_note(self, achievable: float) -> str:
        g = self.cfg.granularity
        target = self.cfg.target_sparsity
        head = f"target {target:g}, nearest achievable {achievable:.4f}"
        if g in ("window", "window+kernel", "n:m"):
            kinds = Counter()
            for spec in self._result.specs.values():
                if "keep" in spec:
                    kinds[(spec["view"], spec["block"], spec["keep"])] += 1
            parts = [
                f"{keep} of {block} ({'spatial window' if view == 'kernel' else view}) in {n} layer(s)"
                for (view, block, keep), n in sorted(kinds.items())
            ]
            return f"{head}: every group keeps " + "; ".join(parts) if parts else head
        if g in CHANNEL_GRANULARITIES:
            return f"{head}: whole channels only, in {len(self._engine.groups) if self._engine else 0} channel group(s)"
        if g == "element":
            return head
        unit = {"row": "kernel rows", "column": "columns (one position in every filter)"}.get(g, "kernels")
        views = {spec.get("view") for spec in self._result.specs.values()}
        grains = {spec.get("granularity") for spec in self._result.specs.values()}
        if "cblock" in views:
            unit += f" (1x1 conv / linear layers: blocks of {self.cfg.pointwise_block} input channels)"
        elif "element" in grains:
            unit += " (1x1 conv / linear layers: single weights, pointwise_grouping: element)"
        return f"{head}: whole {unit}, the nearest count in each layer"

    def metadata(self) -> dict[str, Any]:
        """Every setting used, the schedule's state, achieved and nearest achievable sparsity,
        1x1 grouping, layers kept dense, per-layer structure (JSON-able)."""
        achievable = self.nearest_achievable()
        layers = self._engine.layers if self._engine is not None else []
        params = self._params()
        pointwise = [layer.module for layer in layers if layer.pointwise]
        info = self.granularity_info()
        meta: dict[str, Any] = {
            "format": PRUNER_FORMAT,
            "version": PRUNER_VERSION,
            "method": self.cfg.method,
            "granularity": info["granularity"],
            "settings": settings_to_dict(self.cfg),
            "steps_per_epoch": self.steps_per_epoch,
            "schedule": {
                "kind": self.cfg.schedule,
                "start_step": self.plan.start_step,
                "end_step": self.plan.end_step,
                "every_steps": self.plan.every_steps,
            },
            "target_sparsity": float(self.cfg.target_sparsity),
            "current_target": float(self.current_target),
            "frozen": bool(self.frozen),
            "last_update_step": self._last_update,
            "achieved_sparsity": self.achieved(),
            "mask_sparsity": mask_sparsity(self.masks, [layer.param for layer in layers]) if layers else 0.0,
            "nearest_achievable_sparsity": float(achievable),
            "achievable_note": self._achievable_note(achievable) if self._engine is not None else "dense",
            "pointwise_grouping": {
                "mode": self.cfg.pointwise_grouping,
                "block": self.cfg.pointwise_block,
                "applies": self.cfg.granularity in POINTWISE_GROUPED,
                "layers": pointwise,
            },
            "prunable_layers": [layer.module for layer in layers],
            "prunable_weights": int(sum(layer.numel for layer in layers)),
            "total_params": int(sum(p.numel() for p in params.values())),
            "filter_scope": (
                "channels whose producer output reaches only channel-wise ops and conv/linear "
                "consumers (block-internal); residual streams are never pruned"
            )
            if self.cfg.granularity in CHANNEL_GRANULARITIES
            else None,
            "window_kernel": self._result.notes.get("window_kernel"),
            **{k: v for k, v in info.items() if k not in ("method", "granularity")},
        }
        if abs(achievable - self.cfg.target_sparsity) > 0.005 and self._engine is not None:
            log.info("sparsity %s: %s", self.cfg.granularity, meta["achievable_note"])
        return meta

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The pruner state: plain values and CPU tensors only (safe for weights_only loading)."""
        return {
            "format": PRUNER_FORMAT,
            "version": PRUNER_VERSION,
            "settings": settings_to_dict(self.cfg),
            "steps_per_epoch": self.steps_per_epoch,
            "last_update_step": -1 if self._last_update is None else int(self._last_update),
            "current_target": float(self.current_target),
            "masks": {n: m.detach().cpu().clone() for n, m in self.masks.items()},
            "shadow": {n: t.detach().cpu().clone() for n, t in self._shadow.items()},
            "result": json.dumps(
                {
                    "specs": self._result.specs,
                    "pruned_channels": self._result.pruned_channels,
                    "notes": self._result.notes,
                }
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by `state_dict` (does not touch the weights; call `apply_`).

        Raises:
            CheckpointError: the state is foreign, or was saved with other settings, another
                number of steps per epoch, or for another model.
        """
        if not isinstance(state, dict) or state.get("format") != PRUNER_FORMAT:
            raise CheckpointError(
                "pruner state is missing or foreign (no 'robustsparse.pruner' format tag); "
                "resume only from a state saved by CampfirePruner.state_dict()"
            )
        if state.get("version") != PRUNER_VERSION:
            raise CheckpointError(
                f"pruner state version {state.get('version')!r} is not supported; expected {PRUNER_VERSION}"
            )
        saved, now = dict(state["settings"]), settings_to_dict(self.cfg)
        differ = [k for k in now if k not in _TRAINER_SETTINGS and saved.get(k) != now[k]]
        if differ:
            shown = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now[k]!r}" for k in differ)
            raise CheckpointError(
                f"pruner state was saved with other sparsity settings ({shown}); resume with the same settings"
            )
        if int(state["steps_per_epoch"]) != self.steps_per_epoch:
            raise CheckpointError(
                f"pruner state was saved with {state['steps_per_epoch']} steps per epoch, now {self.steps_per_epoch}; "
                "resume with the same batch size and data"
            )
        masks = state["masks"]
        if set(masks) != set(self.masks):
            raise CheckpointError(
                f"pruner state masks name other parameters ({len(masks)} vs {len(self.masks)} tensors); "
                "the state belongs to another model"
            )
        params = self._params()
        for n, m in masks.items():
            if tuple(m.shape) != tuple(params[n].shape) or m.dtype != torch.bool:
                raise CheckpointError(
                    f"pruner state mask {n!r} has shape {tuple(m.shape)} / {m.dtype}, "
                    f"expected {tuple(params[n].shape)} / bool"
                )
        self.masks = {n: m.to(params[n].device).clone() for n, m in masks.items()}
        self._shadow = {n: t.to(params[n].device).clone() for n, t in state.get("shadow", {}).items()}
        last = int(state["last_update_step"])
        self._last_update = None if last < 0 else last
        self.current_target = float(state["current_target"])
        extra = json.loads(state.get("result", "{}"))
        self._result = MaskResult(
            self.masks, extra.get("specs", {}), extra.get("pruned_channels", {}), extra.get("notes", {})
        )
        self._pairs = None


def prune_one_shot(model: nn.Module, granularity: str, target: float, **settings: Any) -> CampfirePruner:
    """Prune `model` in place to `target` sparsity at `granularity` in one step; masks frozen at once.

    The shortcut that benchmarks, tests and notebooks use to get a sparse model without training:
    a Campfire pruner with a one-shot schedule at epoch 0. `settings` are further `SparsityConfig`
    fields (allocation, importance, keep_dense, ...).

    Returns:
        The pruner (frozen), holding the masks.
    """
    cfg = SparsityConfig(
        method="campfire",
        granularity=granularity,
        target_sparsity=target,
        schedule="one_shot",
        start_epoch=0,
        end_epoch=0,
        **settings,
    )
    pruner = CampfirePruner(model, cfg, steps_per_epoch=1)
    pruner.step(0)
    return pruner
