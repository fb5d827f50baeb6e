"""NPN, the network pruning network: learned filter gates, thresholded to a filter mask (methods.md 10).

Verma et al. 2020 train a *pruner network* jointly with the (pretrained) target network: the
pruner emits one binary gate per filter, the gates multiply the corresponding output feature
maps of the target, and the loss is the target's task loss plus lambda times the number of
open gates; the surviving filters are then kept and the thinner network is fine-tuned.

How it is realised here (every choice the paper leaves open is a setting or written below):
- **Pruner network.** One small MLP per filter group (`filter` granularity's coupled channel
  groups: the producer's filter, its BatchNorm scale/shift and bias, the consumers' input
  columns; residual streams are never grouped, so never gated or pruned). Its input is a
  feature vector per filter computed from the classifier's weights (`filter_features`: log
  mean |w|, log RMS, mean, std and peak-to-RMS ratio of the filter, |scale| and shift of its
  BatchNorm), standardised across the filters of the layer and detached (the task gradient
  reaches the pruner through the gates only, not the classifier through the features). The MLP
  is features -> `npn_hidden` ReLU units -> one keep logit l; the keep score is sigmoid(l).
  The output bias starts at +3 so every gate starts open (the dense parent is unchanged).
- **Gates.** During the joint phase (global steps `start_epoch`..`end_epoch` in epochs) a
  forward hook multiplies each group's feature maps after its last BatchNorm (before the
  activation, which is channel-wise with f(0) = 0) by the gate: `straight_through` (default)
  uses the hard gate 1[l > 0] forward and the sigmoid's gradient backward, so the network
  trains with exactly the filters it would keep; `soft` uses sigmoid(l) both ways.
- **Penalty and target.** The paper's penalty is lambda times the number of open gates; a bare
  count drives every gate of a group shut once the task gradient through them vanishes (a fully
  gated layer feeds BatchNorm a constant, whose gradient is zero), and Adam makes lambda's
  scale irrelevant, so here the count is steered to a budget: the loss term is
  lambda * (open - wanted)^2 per group (mean over groups), `open` the mean of the gates as used
  forward (the hard share with straight-through, its sigmoid gradient backward) and `wanted`
  the share the schedule allows now: 1 - (the share of the group's filters the final masks
  remove at `target_sparsity`, from a dry run at the start) * the schedule's progress (cubic by
  default: 0 at `start_epoch`, 1 at `end_epoch`). With `allocation: global` one budget covers
  all groups (their filters pooled), so the split between layers is learned.
- **Freeze.** At `end_epoch` the scores are thresholded to a filter mask: with `uniform` each
  group keeps its (nearest achievable) count of filters, the highest scores; with `global` one
  threshold over all groups' raw scores (`global_ranking: raw`, fixed), each group keeping its
  best filter and no layer beyond `max_layer_sparsity`. Ties are broken by the lower filter
  index being removed first. The scores, the features they came from and each group's
  threshold (lowest kept score) are in the pruner state and metadata. The hooks are removed, so
  the model is the plain architecture, masked like any `filter` model; it is fine-tuned with the
  masks fixed for the remaining epochs.
- **Optimisation.** The pruner network has its own Adam optimiser (`npn_lr`), held by the
  pruner and stepped by the trainer after every backward pass (`Method.extra_state`); its
  parameters, optimiser state and the step are in `state_dict()`, so resume is exact.
- From the dense parent (`from_dense: true`, fixed): the paper prunes a pretrained network.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity.allocation import channel_granularity_masks
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error, state_to_cpu
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.schedule import schedule_sparsity
from robustsparse.sparsity.settings import SparsityConfig, is_int, is_number

__all__ = ["NPN", "NpnPruner", "PrunerNetwork", "filter_features", "resolve_npn_settings", "GATES"]

log = logging.getLogger(__name__)

METHOD = "npn"
GATES: tuple[str, ...] = ("straight_through", "soft")
DEFAULTS: dict[str, Any] = {
    "npn_hidden": 16,
    "npn_lambda": 5.0,
    "npn_gate": "straight_through",
    "npn_lr": 0.01,
}
N_FEATURES = 7
INIT_LOGIT = 3.0  # sigmoid(3) = 0.95: every gate open at the start
NPN_FORMAT = "robustsparse.npn"


def resolve_npn_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """npn's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: an npn setting is given for another method or is out of range, or the
            schedule leaves no joint phase (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, DEFAULTS)
        return {}
    out = {key: DEFAULTS[key] if getattr(cfg, key) is None else getattr(cfg, key) for key in DEFAULTS}
    hidden = out["npn_hidden"]
    if not (is_int(hidden) and hidden >= 1):
        raise setting_error("npn_hidden", hidden, "an integer >= 1 (hidden units of each group's pruner MLP)")
    if not is_number(out["npn_lambda"]) or out["npn_lambda"] <= 0:
        raise setting_error("npn_lambda", out["npn_lambda"], "a number > 0 (the weight of the gate-budget penalty)")
    if out["npn_gate"] not in GATES:
        raise setting_error("npn_gate", out["npn_gate"], f"one of {', '.join(GATES)}")
    if not is_number(out["npn_lr"]) or out["npn_lr"] <= 0:
        raise setting_error("npn_lr", out["npn_lr"], "a number > 0 (the pruner network's Adam learning rate)")
    if cfg.schedule == "one_shot":
        raise setting_error(
            "schedule", cfg.schedule, "cubic or linear with method 'npn' (the gates need a joint phase)"
        )
    return out


def filter_features(weight: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
    """(filters, N_FEATURES) features of a layer's filters, standardised across the filters.

    Args:
        weight: the producer's weight (filters first).
        scale / shift: the BatchNorm affine parameters of its channels (None: no BatchNorm).
    """
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    eps = 1e-12
    mean_abs = rows.abs().mean(1)
    rms = rows.square().mean(1).sqrt()
    ones = torch.ones_like(mean_abs)
    feats = torch.stack(
        [
            (mean_abs + eps).log(),
            (rms + eps).log(),
            rows.mean(1),
            rows.std(1, unbiased=False),
            rows.abs().amax(1) / (rms + eps),
            ones if scale is None else scale.detach().float().abs(),
            ones * 0 if shift is None else shift.detach().float(),
        ],
        dim=1,
    )
    centred = feats - feats.mean(0, keepdim=True)
    return centred / (centred.square().mean(0, keepdim=True).sqrt() + 1e-6)


class PrunerNetwork(nn.Module):
    """One MLP per filter group: (filters, N_FEATURES) features -> (filters,) keep logits.

    Args:
        groups: the number of filter groups.
        hidden: hidden units per MLP.
        seed: initialisation seed (its own generator: the global random state is untouched).
    """

    def __init__(self, groups: int, hidden: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
        self.w1 = nn.ParameterList(
            [
                nn.Parameter(torch.randn(hidden, N_FEATURES, generator=gen) / math.sqrt(N_FEATURES))
                for _ in range(groups)
            ]
        )
        self.b1 = nn.ParameterList([nn.Parameter(torch.zeros(hidden)) for _ in range(groups)])
        self.w2 = nn.ParameterList(
            # spread the first logits (about +-1 around INIT_LOGIT) so the filters close one by one
            [nn.Parameter(torch.randn(hidden, generator=gen) * 2.0 / math.sqrt(hidden)) for _ in range(groups)]
        )
        self.b2 = nn.ParameterList([nn.Parameter(torch.tensor(INIT_LOGIT)) for _ in range(groups)])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The keep logits of every group's filters."""
        out = []
        for i, x in enumerate(features):
            h = torch.relu(x @ self.w1[i].t() + self.b1[i])
            out.append(h @ self.w2[i] + self.b2[i])
        return out


def gate_values(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """The gates of `logits`: hard 1[l > 0] with the sigmoid's gradient, or the sigmoid itself."""
    soft = torch.sigmoid(logits)
    if mode == "soft":
        return soft
    return (logits > 0).to(soft.dtype) + soft - soft.detach()


class NpnPruner(CampfirePruner):
    """A `CampfirePruner` whose `filter` masks come from a pruner network's gates at `end_epoch`.

    Before the freeze the masks keep everything and the gates do the pruning; at the freeze the
    scores become the masks and the gates go (see the module docstring).

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.
        seed: the model's seed (initialises the pruner network).

    Attributes:
        network: the pruner network; optimizer: its Adam optimiser (`Method.extra_state`).

    Until the freeze the model carries hooks bound to this pruner: copy its `state_dict()` into a
    fresh model rather than deep-copying the model itself.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> None:
        super().__init__(model, cfg, steps_per_epoch)
        self.groups = list(self._engine.groups)
        params = self._params()
        device = next(iter(params.values())).device
        self.network = PrunerNetwork(len(self.groups), int(cfg.npn_hidden), seed).to(device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=float(cfg.npn_lr))
        self.seen_step = 0
        self.record: dict[str, dict[str, torch.Tensor]] = {}
        self._logits: list[torch.Tensor] | None = None
        self._gates: list[torch.Tensor] | None = None
        # The share of each group's filters the final masks remove: where the gate budget ends.
        dry = self._engine.compute(
            {n: params[n].detach() for n in self._engine.weight_names}, None, cfg.target_sparsity
        )
        removed = torch.tensor([dry.pruned_channels.get(g.producer, 0) for g in self.groups], dtype=torch.float64)
        sizes = torch.tensor([g.channels for g in self.groups], dtype=torch.float64)
        if cfg.allocation == "global" and self.groups:
            removed = torch.full_like(sizes, float(removed.sum() / sizes.sum()))
            self.final_removed = removed
        else:
            self.final_removed = removed / sizes if self.groups else removed
        self._handles: list[Any] = []
        if self.groups:
            modules = dict(model.named_modules())
            self._handles.append(model.register_forward_pre_hook(self._compute_gates))
            for i, g in enumerate(self.groups):
                where = g.norms[-1] if g.norms else g.producer
                self._handles.append(modules[where].register_forward_hook(self._gate_hook(i)))

    # ------------------------------------------------------------------ the joint phase
    @property
    def joint(self) -> bool:
        """True while the gates are on: from `start_epoch` until the freeze."""
        return bool(self.groups) and not self.frozen and self.seen_step >= self.plan.start_step

    def features(self) -> list[torch.Tensor]:
        """The pruner network's input for every group, from the current weights."""
        params = self._params()
        out = []
        for g in self.groups:
            norm = g.norms[0] if g.norms else None
            scale = params.get(f"{norm}.weight") if norm else None
            shift = params.get(f"{norm}.bias") if norm else None
            out.append(filter_features(params[f"{g.producer}.weight"], scale, shift))
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        """Producer -> keep score sigmoid(l) of every filter, from the current weights (no grad)."""
        with torch.no_grad():
            logits = self.network(self.features())
        return {g.producer: torch.sigmoid(lg) for g, lg in zip(self.groups, logits)}

    def _compute_gates(self, module: nn.Module, args: Any) -> None:
        del module, args
        if not self.joint:
            self._logits = self._gates = None
            return
        self._logits = self.network(self.features())
        self._gates = [gate_values(lg, str(self.cfg.npn_gate)) for lg in self._logits]

    def _gate_hook(self, index: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            del module, inputs
            if self._gates is None:
                return None
            gate = self._gates[index].to(output.dtype)
            return output * gate.view(1, -1, *([1] * (output.dim() - 2)))

        return hook

    def wanted_open(self, global_step: int) -> torch.Tensor:
        """The share of each group's gates the schedule allows open after `global_step` steps."""
        progress = schedule_sparsity(global_step / self.steps_per_epoch, self.cfg) / max(
            self.cfg.target_sparsity, 1e-12
        )
        return 1.0 - self.final_removed * min(1.0, progress)

    def loss_term(self) -> torch.Tensor | None:
        """lambda * (open - wanted)^2 of the latest training forward pass (None outside the joint phase)."""
        if not self.joint or self._gates is None or not self._gates[0].requires_grad:
            return None
        wanted = self.wanted_open(self.seen_step + 1).to(self._gates[0].device, torch.float32)
        opened = [g.float().mean() for g in self._gates]
        if self.cfg.allocation == "global":
            sizes = [g.numel() for g in self._gates]
            pooled = sum(o * n for o, n in zip(opened, sizes)) / sum(sizes)
            return float(self.cfg.npn_lambda) * (pooled - wanted[0]).square()
        gaps = torch.stack([(o - wanted[i]).square() for i, o in enumerate(opened)])
        return float(self.cfg.npn_lambda) * gaps.mean()

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Record the step (the budget follows it); at `end_epoch` threshold the scores into masks."""
        if self.frozen:
            return False
        self.seen_step = int(global_step)
        if global_step < self.plan.end_step or not self.groups:
            self.current_target = schedule_sparsity(global_step / self.steps_per_epoch, self.cfg) if self.joint else 0.0
            if global_step >= self.plan.end_step:  # nothing to prune: frozen as it is
                self._last_update = self.plan.end_step
            return False
        self._freeze(optimizer)
        return True

    @torch.no_grad()
    def _freeze(self, optimizer: torch.optim.Optimizer | None) -> None:
        features = self.features()
        logits = self.network(features)
        probs = {g.producer: torch.sigmoid(lg) for g, lg in zip(self.groups, logits)}
        params = self._params()
        weights = {n: params[n].detach() for n in self._engine.weight_names}
        result = channel_granularity_masks(
            self._engine.layers,
            self.groups,
            weights,
            self._engine.param_names,
            None,
            self.cfg,
            self.cfg.target_sparsity,
            channel_scores=probs,
        )
        self.masks, self._result, self._pairs = result.masks, result, None
        self.record = {
            "features": {g.producer: f.cpu().clone() for g, f in zip(self.groups, features)},
            "scores": {p: s.cpu().clone() for p, s in probs.items()},
        }
        self._remove_hooks()
        self._last_update = self.plan.end_step
        self.current_target = float(self.cfg.target_sparsity)
        self.apply_(optimizer)
        log.info("npn: scores thresholded to filter masks (achieved %.4f)", self.achieved()["prunable"])

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._logits = self._gates = None

    def thresholds(self) -> dict[str, float]:
        """Producer -> the lowest kept score at the freeze (empty before)."""
        out = {}
        for g in self.groups:
            s = self.record.get("scores", {}).get(g.producer)
            if s is not None:
                keep = self.masks[f"{g.producer}.weight"].reshape(g.channels, -1).any(1).cpu()
                out[g.producer] = float(s[keep].min()) if bool(keep.any()) else float("inf")
        return out

    # ------------------------------------------------------------------ reporting and resume
    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the pruner network, its penalty and the freeze's thresholds."""
        return {
            **super().metadata(),
            "scores": "npn keep score sigmoid(MLP(filter features)) at end_epoch; mask = scores above each "
            "group's threshold (uniform) or one global threshold (global); ties remove the lower index",
            "npn": {
                "features": "log mean|w|, log rms, mean, std, max|w|/rms, |bn scale|, bn shift; standardised per layer",
                "hidden": int(self.cfg.npn_hidden),
                "gate": self.cfg.npn_gate,
                "gated_modules": [g.norms[-1] if g.norms else g.producer for g in self.groups],
                "penalty": "npn_lambda * (share of open gates - scheduled share)^2, mean over groups",
                "thresholds": self.thresholds(),
                "kept_filters": {
                    g.producer: g.channels - int(self._result.pruned_channels.get(g.producer, 0)) for g in self.groups
                },
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus the pruner network, its optimiser, the step and the freeze record."""
        return {
            **super().state_dict(),
            "npn": {
                "format": NPN_FORMAT,
                "network": state_to_cpu(self.network.state_dict()),
                "optimizer": state_to_cpu(self.optimizer.state_dict()),
                "seen_step": int(self.seen_step),
                "record": state_to_cpu(self.record),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; after the freeze the gates are removed again."""
        super().load_state_dict(state)
        extra = state.get("npn")
        if not isinstance(extra, dict) or extra.get("format") != NPN_FORMAT:
            raise CheckpointError("pruner state has no npn part; resume only from a state saved by NpnPruner")
        self.network.load_state_dict(extra["network"])
        self.optimizer.load_state_dict(extra["optimizer"])
        self.seen_step = int(extra["seen_step"])
        self.record = {k: dict(v) for k, v in extra["record"].items()}
        if self.frozen:
            self._remove_hooks()


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> NpnPruner:
    return NpnPruner(model, cfg, steps_per_epoch, seed)


NPN = register(
    Method(
        name=METHOD,
        description="network pruning network: learned filter gates trained with a sparsity penalty, thresholded at end_epoch",
        when="during_training",
        granularities=("filter",),
        build_pruner=_build,
        resolve_settings=resolve_npn_settings,
        fixed_settings={"from_dense": True, "global_ranking": "raw", "allow_regrowth": False},
        extra_state=lambda pruner: pruner.optimizer,
        loss_term=lambda pruner: pruner.loss_term(),
    )
)
