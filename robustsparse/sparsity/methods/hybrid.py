"""Hybrid pruning: sensitivity-guided channel pruning, then fine-grained pruning (methods.md 4).

Xu, Park and Brick (arXiv 1811.00482) thin a trained network in three stages; this module
follows the reconstruction of methods.md section 4 in the tolerance mode:

1. **Sensitivity test, no retraining** (at the first mask update, on the trained dense parent):
   on `hybrid_examples` training examples (the first ones of a shuffle of the training split
   seeded with the model's seed, drawn by the trainer; the test split is never seen; with the
   training split's augmentation on, as the trainer loads it, the examples are augmented), the
   accuracy of the parent is measured, then for every channel group whose producer and
   consumers are all prunable (the groups of `granularity: filter`, so residual streams are
   never cut, methods.md 13.7) and every channel pruning ratio r of `hybrid_ratios`, the
   accuracy with that layer alone losing its round(r * channels) lowest-score filters (score:
   `importance`, L1 by default; the kept count rounded up to a multiple of
   `hybrid_channel_multiple`, at least one channel kept). A removed channel zeroes the
   producer's filter, its bias, the BatchNorm scale and shift and the consumers' input
   columns, so it is exactly zero. The model is evaluated in eval mode on a copy.
2. **Per-layer ratios (tolerance mode)**: each layer gets the largest ratio of the grid whose
   drop (parent accuracy minus pruned accuracy on the subset) is at most `hybrid_tolerance`,
   0 when none is. If the channels chosen remove more than `target_sparsity` of the prunable
   weights, the layer whose current ratio costs the most accuracy (ties: the larger ratio, then
   the earlier layer) steps down to the next lower ratio of the grid until they do not: the
   channel stage never exceeds the overall target.
3. **Channel pruning**: the chosen filters are masked at once (the masks of `filter`
   granularity: filter, bias, BatchNorm, consumer columns).
4. **Fine-grained pruning** of the remaining weights up to `target_sparsity`, on `schedule`
   from `start_epoch` to `end_epoch` (cubic by default, or one-shot / linear): with the
   schedule's progress p (0 at the start, 1 at the end), every layer removes the fraction p * f
   of the weights the channel stage left it, lowest |w| first, with f the same for every layer
   and chosen so that the final sparsity over the prunable weights is the target (a
   uniform fine-grained stage on the thin network). Masks only gain zeros (no regrowth) and
   are frozen at `end_epoch`; training to the last epoch is the fine-tuning with masks fixed.
   With `start_epoch > 0` the thin network is fine-tuned before its fine-grained stage, as in
   the paper.

The masks are the usual per-weight masks: a channel-pruned layer's mask is its filter mask
and'ed with the element mask. The granularity is `element` (the only one supported); its
meaning here is "whole filters first, then single weights", and `layer_sparsity.csv` says
`filter+element` for the layers that lost channels (producers and consumers). The sensitivity
table, the chosen ratios and the channel stage's sparsity are in the pruner metadata (`hybrid`,
in `meta.json`) and in the pruner state, so a resumed run never measures again.

Fixed settings: `from_dense: true` (the test needs a trained network), `initial_sparsity: 0`,
`allow_regrowth: false` and `allocation: uniform` (the fine-grained rule above). The target
MACs mode of the paper is not implemented.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from typing import Any

import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity._math import round_half_up
from robustsparse.sparsity.allocation import MaskResult, channel_param_names, remove_channels_, row_granularity_masks
from robustsparse.sparsity.coupling import ChannelGroup, find_channel_groups
from robustsparse.sparsity.importance import channel_scores_from_rows
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner, prunable_groups
from robustsparse.sparsity.settings import SparsityConfig, is_int, is_number

__all__ = ["HYBRID", "HybridPruner", "resolve_hybrid_settings", "removed_count", "choose_ratios"]

log = logging.getLogger(__name__)

METHOD = "hybrid"
DEFAULT_EXAMPLES = 512
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_TOLERANCE = 0.01
DEFAULT_CHANNEL_MULTIPLE = 1
_SETTINGS = ("hybrid_examples", "hybrid_ratios", "hybrid_tolerance", "hybrid_channel_multiple")
_EVAL_BATCH = 256
_STATE_KEY = "hybrid"


def resolve_hybrid_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """hybrid's settings checked and completed (defaults filled in, ratios sorted); {} otherwise.

    Raises:
        ConfigError: a hybrid setting is given for another method or is out of range (one line).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, _SETTINGS)
        return {}
    examples, ratios = cfg.hybrid_examples, cfg.hybrid_ratios
    tolerance, multiple = cfg.hybrid_tolerance, cfg.hybrid_channel_multiple
    if examples is not None and not (is_int(examples) and examples >= 1):
        raise setting_error(
            "hybrid_examples", examples, "null or an integer >= 1 (training examples of the sensitivity test)"
        )
    if ratios is not None and not (
        isinstance(ratios, tuple)
        and ratios
        and all(is_number(r) and 0.0 < r < 1.0 for r in ratios)
        and len(set(ratios)) == len(ratios)
    ):
        raise setting_error(
            "hybrid_ratios",
            list(ratios) if isinstance(ratios, tuple) else ratios,
            "null or a list of distinct channel pruning ratios in (0, 1), e.g. [0.25, 0.5, 0.75]",
        )
    if tolerance is not None and not (is_number(tolerance) and 0.0 <= tolerance <= 1.0):
        raise setting_error("hybrid_tolerance", tolerance, "null or an accuracy drop in [0, 1] (0.01 = one point)")
    if multiple is not None and not (is_int(multiple) and multiple >= 1):
        raise setting_error(
            "hybrid_channel_multiple", multiple, "null or an integer >= 1 (kept channels rounded up to it)"
        )
    return {
        "hybrid_examples": DEFAULT_EXAMPLES if examples is None else examples,
        "hybrid_ratios": DEFAULT_RATIOS if ratios is None else tuple(sorted(float(r) for r in ratios)),
        "hybrid_tolerance": DEFAULT_TOLERANCE if tolerance is None else float(tolerance),
        "hybrid_channel_multiple": DEFAULT_CHANNEL_MULTIPLE if multiple is None else multiple,
    }


def removed_count(channels: int, ratio: float, multiple: int) -> int:
    """Channels removed at `ratio`: the kept count round((1 - ratio) * channels) rounded up to a
    multiple of `multiple`, at least one kept and never more than `channels`."""
    kept = max(1, channels - round_half_up(ratio * channels))
    kept = min(channels, math.ceil(kept / multiple) * multiple)
    return channels - kept


def choose_ratios(rows: list[dict[str, Any]], layers: list[str], tolerance: float) -> dict[str, float]:
    """Tolerance mode: per layer the largest ratio whose drop is at most `tolerance` (0 if none)."""
    chosen = {layer: 0.0 for layer in layers}
    for row in rows:
        if row["drop"] <= tolerance + 1e-12:
            chosen[row["layer"]] = max(chosen[row["layer"]], float(row["ratio"]))
    return chosen


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` (already in eval mode) on `(x, y)`, in batches."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], _EVAL_BATCH):
        out = model(x[i : i + _EVAL_BATCH].to(device))
        correct += int((out.argmax(1).cpu() == y[i : i + _EVAL_BATCH]).sum())
    return correct / max(1, x.shape[0])


class HybridPruner(CampfirePruner):
    """Sensitivity test and channel pruning at the first update, then gradual element pruning.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.
        examples: the sensitivity subset `(inputs, labels)` (kept on the CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: SparsityConfig,
        steps_per_epoch: int,
        examples: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        self._examples = (examples[0].detach().cpu(), examples[1].detach().cpu())
        super().__init__(model, cfg, steps_per_epoch)
        layers = self._engine.layers if self._engine is not None else []
        self._groups: list[ChannelGroup] = prunable_groups(find_channel_groups(model), layers) if layers else []
        # The coupled biases and BatchNorm parameters get masks from the start, so the set of
        # masks (checked on resume) is the same before and after the channel stage.
        params = self._params()
        for g in self._groups:
            for name in channel_param_names(g, self._engine.param_names):
                self.masks[name] = torch.ones(params[name].shape, dtype=torch.bool, device=params[name].device)
        # The outcome of stages 1-3 (None until they ran): saved in the state, never measured twice.
        self._hybrid: dict[str, Any] | None = None

    # ------------------------------------------------------------------ stages 1-3
    def _channel_masks(self, removed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masks of every prunable weight and coupled parameter with `removed` channels
        (producer module -> channel indices) gone as whole channels."""
        params = self._params()
        masks = {n: torch.ones(params[n].shape, dtype=torch.bool, device=params[n].device) for n in self.masks}
        for g in self._groups:
            idx = removed.get(g.producer)
            if idx is None or idx.numel() == 0:
                continue
            keep = torch.ones(g.channels, dtype=torch.bool, device=masks[f"{g.producer}.weight"].device)
            keep[idx.to(keep.device)] = False
            remove_channels_(masks, g, keep, self._engine.param_names)
        return masks

    @torch.no_grad()
    def _sensitivity(self) -> tuple[float, list[dict[str, Any]], dict[str, torch.Tensor]]:
        """Parent accuracy, one row per (layer, ratio), and each layer's channels by rising score."""
        cfg = self.cfg
        net = copy.deepcopy(self.model).eval()
        params = dict(net.named_parameters())
        x, y = self._examples
        base = _accuracy(net, x, y)
        rows, orders = [], {}
        for g in self._groups:
            scores = channel_scores_from_rows(params[f"{g.producer}.weight"], cfg.importance, False).cpu()
            orders[g.producer] = torch.argsort(scores, stable=True)
            for ratio in cfg.hybrid_ratios:
                n = removed_count(g.channels, ratio, cfg.hybrid_channel_multiple)
                masks = self._channel_masks({g.producer: orders[g.producer][:n]})
                touched = {k: m for k, m in masks.items() if not bool(m.all())}
                saved = {k: params[k].detach().clone() for k in touched}
                for k, m in touched.items():
                    params[k].mul_(m.to(params[k].device))
                acc = _accuracy(net, x, y)
                for k, value in saved.items():
                    params[k].copy_(value)
                rows.append(
                    {"layer": g.producer, "ratio": float(ratio), "removed": n, "accuracy": acc, "drop": base - acc}
                )
        return base, rows, orders

    def _capped(
        self, chosen: dict[str, float], rows: list[dict[str, Any]], orders: dict[str, torch.Tensor]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor], list[dict[str, Any]]]:
        """`chosen` stepped down until the channel stage removes at most the target; its removals."""
        cfg = self.cfg
        grid = (0.0, *cfg.hybrid_ratios)
        drop = {(r["layer"], r["ratio"]): r["drop"] for r in rows}
        channels = {g.producer: g.channels for g in self._groups}
        chosen = dict(chosen)
        steps_down = []

        def removals() -> dict[str, torch.Tensor]:
            return {
                layer: orders[layer][: removed_count(channels[layer], r, cfg.hybrid_channel_multiple)]
                for layer, r in chosen.items()
                if r > 0
            }

        names = self._engine.weight_names
        while mask_sparsity(self._channel_masks(removals()), names) > cfg.target_sparsity + 1e-12:
            order = list(chosen)
            layer = max(
                (name for name in order if chosen[name] > 0),
                key=lambda name: (drop[(name, chosen[name])], chosen[name], -order.index(name)),
            )
            lower = grid[grid.index(chosen[layer]) - 1]
            steps_down.append({"layer": layer, "from": chosen[layer], "to": lower})
            chosen[layer] = lower
        return chosen, removals(), steps_down

    @torch.no_grad()
    def _channel_stage(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Stages 1-3: measure, choose the ratios, mask the channels."""
        cfg = self.cfg
        base, rows, orders = self._sensitivity()
        first = choose_ratios(rows, [g.producer for g in self._groups], cfg.hybrid_tolerance)
        chosen, removed, steps_down = self._capped(first, rows, orders)
        masks = self._channel_masks(removed)
        names = self._engine.weight_names
        self._hybrid = {
            "examples": int(self._examples[0].shape[0]),
            "baseline_accuracy": base,
            "sensitivity": rows,
            "tolerance_ratios": first,
            "ratios": chosen,
            "cap_steps": steps_down,
            "removed_channels": {layer: int(idx.numel()) for layer, idx in removed.items()},
            "channel_zeros": {n: int((~masks[n]).sum()) for n in names},
            "channel_sparsity": mask_sparsity(masks, names),
        }
        self.masks = masks
        self._result = MaskResult(masks, self._specs(None), self._hybrid["removed_channels"], {})
        self._pairs = None
        self.current_target = self._hybrid["channel_sparsity"]
        self.apply_(optimizer)
        log.info(
            "hybrid: channel stage at sparsity %.4f, ratios %s (parent accuracy %.4f on %d examples)",
            self._hybrid["channel_sparsity"],
            {k: v for k, v in chosen.items() if v > 0},
            base,
            self._hybrid["examples"],
        )

    # ------------------------------------------------------------------ stage 4
    def _specs(self, element: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
        """Per-layer specs: `element`, or `filter+element` where the channel stage removed weights."""
        zeros = self._hybrid["channel_zeros"] if self._hybrid else {}
        out = {}
        for layer in self._engine.layers:
            spec = dict((element or {}).get(layer.param) or {"granularity": "element", "view": "element", "block": 1})
            if zeros.get(layer.param, 0) > 0:
                spec["granularity"] = "filter+element"
            out[layer.param] = spec
        return out

    def _overall(self, progress: float) -> float:
        """The overall target at schedule progress `progress` (channel stage at 0, target at 1)."""
        if progress >= 1.0:
            return float(self.cfg.target_sparsity)
        c = self._hybrid["channel_sparsity"]
        return c + (float(self.cfg.target_sparsity) - c) * max(0.0, progress)

    def _progress(self, schedule_target: float) -> float:
        target = float(self.cfg.target_sparsity)
        return 1.0 if target <= 0 else min(1.0, schedule_target / target)

    def _element_result(self, progress: float) -> MaskResult:
        """Masks with the fine-grained stage at `progress` on top of the current masks."""
        cfg = self.cfg
        weights = self._scored_weights(self._params())
        zeros = self._hybrid["channel_zeros"]
        total = sum(layer.numel for layer in self._engine.layers)
        channel = sum(zeros.values())
        remaining = total - channel
        fraction = 0.0 if remaining <= 0 else max(0.0, progress * (cfg.target_sparsity * total - channel) / remaining)
        masks, specs = dict(self.masks), {}
        for layer in self._engine.layers:
            c = zeros.get(layer.param, 0)
            layer_target = min(1.0, (c + fraction * (layer.numel - c)) / layer.numel)
            part = row_granularity_masks([layer], weights, self.masks, cfg, layer_target, cfg.target_sparsity)
            masks.update(part.masks)
            specs.update(part.specs)
        return MaskResult(masks, self._specs(specs), dict(self._hybrid["removed_channels"]), {})

    # ------------------------------------------------------------------ the pruner interface
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """At the first call the channel stage; then the fine-grained stage on the schedule."""
        if self._engine is None or self.frozen:
            return False
        first = self._hybrid is None
        if first:
            self._channel_stage(optimizer)
        before = self._last_update
        changed = super().step(global_step, optimizer)
        if self._last_update != before:
            self.current_target = self._overall(self._progress(self.current_target))
        return changed or first

    @torch.no_grad()
    def _update(self, target: float, optimizer: torch.optim.Optimizer | None) -> bool:
        result = self._element_result(self._progress(target))
        changed = any(not torch.equal(result.masks[n], self.masks[n]) for n in self.masks)
        self.masks = result.masks
        self._result = result
        self._pairs = None
        self.apply_(optimizer)
        return changed

    def nearest_achievable(self) -> float:
        """The final sparsity over the prunable weights (a dry run before the last update)."""
        if self._engine is None or not self._engine.layers:
            return 0.0
        names = self._engine.weight_names
        if self._hybrid is None:  # before the channel stage: the target itself (element reaches it)
            return float(self.cfg.target_sparsity)
        if self.frozen or self.current_target == self.cfg.target_sparsity:
            return mask_sparsity(self.masks, names)
        return mask_sparsity(self._element_result(1.0).masks, names)

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the sensitivity table, the chosen ratios and the stages."""
        cfg = self.cfg
        return {
            **super().metadata(),
            "scores": f"channels: {cfg.importance} norm of the filter; fine-grained: |w|",
            "hybrid": {
                "stages": (
                    "sensitivity test on the dense parent (no retraining), channel ratios by tolerance, "
                    f"channel pruning at the first update, then {cfg.schedule} element pruning of the remaining "
                    f"weights from epoch {cfg.start_epoch} to {cfg.end_epoch}, then fine-tuning with masks fixed"
                ),
                "ratio_grid": list(cfg.hybrid_ratios),
                "tolerance": cfg.hybrid_tolerance,
                "channel_multiple": cfg.hybrid_channel_multiple,
                "channel_layers": [g.producer for g in self._groups],
                **(self._hybrid or {"examples": int(self._examples[0].shape[0]), "sensitivity": None}),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus the channel stage's outcome (JSON)."""
        return {**super().state_dict(), _STATE_KEY: json.dumps(self._hybrid)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; the sensitivity outcome comes from the state (never measured again)."""
        super().load_state_dict(state)
        hybrid = json.loads(state.get(_STATE_KEY, "null"))
        if hybrid is None and self._last_update is not None:
            raise CheckpointError("pruner state has mask updates but no hybrid channel stage; it is not a hybrid state")
        self._hybrid = hybrid


def _build(
    model: nn.Module,
    cfg: SparsityConfig,
    steps_per_epoch: int,
    seed: int,
    *,
    example_batch: tuple[torch.Tensor, torch.Tensor],
) -> HybridPruner:
    del seed  # the examples are the only random input; the trainer draws them from the model's seed
    return HybridPruner(model, cfg, steps_per_epoch, example_batch)


HYBRID = register(
    Method(
        name=METHOD,
        description=(
            "channel ratios per layer from a fast sensitivity test, channel pruning, then element pruning "
            "to the target, fine-tuned (Hybrid Pruning)"
        ),
        when="after_training",
        granularities=("element",),
        build_pruner=_build,
        resolve_settings=resolve_hybrid_settings,
        fixed_settings={"from_dense": True, "initial_sparsity": 0.0, "allow_regrowth": False, "allocation": "uniform"},
        needs_data=True,
        data_examples=lambda cfg: int(cfg.hybrid_examples),
    )
)
