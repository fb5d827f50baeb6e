"""DNR, dynamic network rewiring: one sparse training run, layer budgets from momentum (methods.md 8).

Kundu, Nazemi, Beerel and Pedram (ASP-DAC 2021, arXiv 2011.03083) train a sparse network from
scratch with the hybrid clean + adversarial loss, and every epoch prune and regrow connections
so that each layer's share of the weights follows its normalised momentum (the rule of sparse
momentum, Dettmers & Zettlemoyer 2019, `TimDettmers/sparse_learning`). This module is the
pruning part only; the loss is the training config's (`train.adversarial`).

How it is realised here (methods.md gives the ingredients, not the equations; each choice the
paper leaves open is written down or a setting):

- **Start** (step 0, from scratch: `from_dense: false`, fixed): random masks at the target in
  every prunable layer (uniform density, each layer's nearest count; for `channel`, random whole
  channels, Campfire's uniform channel allocation at the nearest achievable target), drawn from
  the model's seed through a generator of its own. The total kept count K this gives is held at
  every rewiring: for `element` exactly, for `channel` to the nearest whole channel.
- **Rewiring** at the update points between `start_epoch` (0, fixed) and `end_epoch` (every
  `update_every` `update_unit`, every epoch by default), with prune rate
  p = `dnr_prune_rate` x anneal(progress) (`cosine`: (1 + cos(pi progress)) / 2, 0 at
  `end_epoch`, so the last point only freezes the masks):
  1. the momentum of layer l, mu_l = mean |momentum| over its kept weights (the optimizer's
     momentum buffer, Adam's first moment, or the gradient when the optimizer has neither),
     and its share m_l = mu_l / sum_j mu_j (for `channel`, per channel group, over the kept
     channels' weights: producer filter and consumer columns);
  2. prune: each layer removes round(p k_l) of its k_l kept weights of smallest |w| (for
     `channel`, whole channels of smallest consumer-column norm, `importance`), never its last
     one and never more than it has pruned positions (so every removed weight can be replaced
     by one pruned before);
  3. regrow: the R weights removed in total come back, layer l regrowing m_l R of them
     (largest remainders, a layer full to capacity passing its excess on by the same shares),
     at the positions pruned before this update with the largest momentum. The momentum of a
     pruned position is what the optimizer's buffer would hold had it not been cleared: the
     pruner accumulates it (buffer <- beta buffer + this step's update of the optimizer's
     state there) between updates and resets it at each update, as sparse momentum resets its
     buffers, while the optimizer's own state at masked positions stays zero after every step.
     A weight pruned and regrown at the same update is not possible: regrown weights were
     pruned before. For `channel` the regrowth count per group follows m_g in channels and
     the total is the prefix of the interleaved picks whose zeros come nearest the target.
- **Regrown weights** start at zero with zero momentum (sparse momentum's rule); the function
  of the network is unchanged at the moment of regrowth. A regrown *channel* is the exception
  forced by the coupling: with its filter, its BatchNorm scale and its consumer columns all at
  zero no gradient ever reaches it (every path through it is a product with a zero), so its
  producer filter is redrawn from the layer's default initialisation U(-1/sqrt(fan_in),
  1/sqrt(fan_in)) (seeded), its BatchNorm scale and running variance set to 1 and its shift,
  running mean and bias to 0, while its consumer columns start at zero (the output is still
  unchanged). For the same reason a pruned channel has no momentum to rank it by: channels are
  regrown in a seeded random order among those pruned before (sparse evolutionary training's
  rule), the counts per group still following the momentum shares.
- **Freeze** at `end_epoch`: the masks never change again and the accumulated momentum is
  dropped; training to the last epoch continues with the masks fixed.

Settings: `dnr_prune_rate` (0.5, sparse momentum's default; the paper's value is not known) and
`dnr_anneal` (`cosine`, sparse momentum's and methods.md's). Fixed: `from_dense: false`,
`schedule: one_shot` at `start_epoch: 0` (the target holds from step 0), `initial_sparsity: 0`,
`allocation: uniform` (the start; momentum decides afterwards), `allow_regrowth: false`
(Campfire's shadow regrowth is not used: DNR regrows its own way). Every rewiring's counts and
the latest per-layer densities and momentum shares are in the pruner metadata (`dnr`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity._math import derived_seed, round_half_up
from robustsparse.sparsity.allocation import (
    _consumer_columns,
    _nearest_prefix,
    _ZeroCounter,
    remove_channels_,
)
from robustsparse.sparsity.importance import channel_scores_from_columns
from robustsparse.sparsity.masks import mask_sparsity, zero_masked_state_
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.schedule import UpdatePlan, last_update_step
from robustsparse.sparsity.settings import SparsityConfig, is_number

__all__ = ["DNR", "DnrPruner", "resolve_dnr_settings", "prune_rate_at", "apportion", "ANNEALS"]

log = logging.getLogger(__name__)

METHOD = "dnr"
GRANULARITIES = ("element", "channel")
ANNEALS: tuple[str, ...] = ("cosine", "linear", "none")
DEFAULT_PRUNE_RATE = 0.5
DEFAULT_ANNEAL = "cosine"
_SETTINGS = ("dnr_prune_rate", "dnr_anneal")
_HISTORY = "dnr_updates"
_LAYERS = "dnr_layers"
_STATE_KEY = "dnr"


def resolve_dnr_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """dnr's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: a dnr setting is given for another method or is out of range (one line).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, _SETTINGS)
        return {}
    rate, anneal = cfg.dnr_prune_rate, cfg.dnr_anneal
    if rate is not None and not (is_number(rate) and 0.0 < rate < 1.0):
        raise setting_error("dnr_prune_rate", rate, "null or a fraction in (0, 1) of each layer's kept weights")
    if anneal is not None and anneal not in ANNEALS:
        raise setting_error("dnr_anneal", anneal, "null or one of " + ", ".join(ANNEALS))
    return {
        "dnr_prune_rate": DEFAULT_PRUNE_RATE if rate is None else float(rate),
        "dnr_anneal": DEFAULT_ANNEAL if anneal is None else anneal,
    }


def prune_rate_at(point: int, plan: UpdatePlan, rate: float, anneal: str) -> float:
    """The prune rate at update point `point` (optimizer steps): `rate` annealed over the window."""
    span = plan.end_step - plan.start_step
    progress = 1.0 if span <= 0 else min(1.0, max(0.0, (point - plan.start_step) / span))
    if anneal == "cosine":
        return float(rate * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if anneal == "linear":
        return float(rate * (1.0 - progress))
    return float(rate)


def apportion(total: int, shares: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Integers at most `caps` summing to min(total, sum(caps)), proportional to `shares`.

    Largest remainders (ties: the lower index); an entry whose share exceeds its cap is filled
    and the rest is spread again over the others by their shares (water-filling). Where the
    entries left have no share at all, what remains is spread by their caps.
    """
    n = len(caps)
    out = [0] * n
    remaining = min(int(total), int(sum(caps)))
    active = [i for i in range(n) if caps[i] > 0]
    while remaining > 0 and active:
        weights = [max(0.0, float(shares[i])) for i in active]
        if sum(weights) <= 0.0:
            weights = [float(caps[i]) for i in active]
        scale = remaining / sum(weights)
        ideal = {i: w * scale for i, w in zip(active, weights)}
        full = [i for i in active if ideal[i] >= caps[i]]
        if full:
            for i in full:
                out[i] = int(caps[i])
                remaining -= int(caps[i])
            active = [i for i in active if i not in full]
            continue
        base = {i: math.floor(ideal[i]) for i in active}
        left = remaining - sum(base.values())
        for i in sorted(active, key=lambda i: (-(ideal[i] - base[i]), i))[:left]:
            base[i] += 1
        for i in active:
            out[i] = base[i]
        remaining = 0
    return out


def _momentum_sources(optimizer: torch.optim.Optimizer | None) -> dict[int, tuple[str, float]]:
    """id(parameter) -> (the optimizer state key of its first moment, that moment's decay)."""
    out: dict[int, tuple[str, float]] = {}
    if optimizer is None:
        return out
    for group in optimizer.param_groups:
        if "betas" in group:  # Adam, AdamW: exp_avg <- beta1 exp_avg + (1 - beta1) g
            source = ("exp_avg", float(group["betas"][0]))
        else:  # SGD: momentum_buffer <- momentum buf + (1 - dampening) g
            source = ("momentum_buffer", float(group.get("momentum", 0.0)))
        for p in group["params"]:
            out[id(p)] = source
    return out


def _momentum(
    param: torch.Tensor, optimizer: torch.optim.Optimizer | None, sources: dict[int, tuple[str, float]]
) -> tuple[torch.Tensor | None, float]:
    """(the optimizer's first moment of `param`, or its gradient when there is none; its decay)."""
    source = sources.get(id(param))
    if optimizer is not None and source is not None:
        value = optimizer.state.get(param, {}).get(source[0])
        if isinstance(value, torch.Tensor):
            return value.detach(), source[1]
    return (None if param.grad is None else param.grad.detach()), 0.0


class DnrPruner(CampfirePruner):
    """Random sparse start at the target, then momentum-driven prune and regrow until `end_epoch`.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.
        seed: the model's seed; the random start and the regrown channels follow from it.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> None:
        self.seed = int(seed)
        super().__init__(model, cfg, steps_per_epoch)
        self._growth: dict[str, torch.Tensor] = {}  # accumulated momentum at pruned positions (element)
        self._seen_step = -1  # the latest optimizer step whose momentum was accumulated
        self._started = False  # the random start masks are applied

    @property
    def _channels(self) -> bool:
        return self.cfg.granularity == "channel"

    # ------------------------------------------------------------------ the training-loop call
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """At the first call the random start; then accumulate momentum and rewire at update points.

        Call after every optimizer step with the number of steps taken so far (and once with 0
        before training), before `apply_`: the momentum at pruned positions is read here,
        before `apply_` clears the optimizer's state there.
        """
        if self._engine is None or self.frozen:
            return False
        global_step = int(global_step)
        changed = False
        if not self._started:
            self._start(optimizer)
            changed = True
        elif global_step > self._seen_step and not self._channels:
            self._accumulate(optimizer)
        self._seen_step = max(self._seen_step, global_step)
        point = last_update_step(global_step, self.plan)
        if point is None or (self._last_update is not None and point <= self._last_update):
            return changed
        rate = prune_rate_at(point, self.plan, self.cfg.dnr_prune_rate, self.cfg.dnr_anneal)
        if point > 0 and rate > 0.0:
            changed = self._rewire(point, rate, optimizer) or changed
        self._last_update = point
        if self.frozen:
            self._growth = {}
            log.info("dnr: masks frozen at step %d (sparsity %.4f)", point, mask_sparsity(self.masks, self._names))
        return changed

    @property
    def _names(self) -> list[str]:
        return self._engine.weight_names

    @torch.no_grad()
    def _start(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Random masks at the target (Campfire's uniform allocation on seeded noise)."""
        generator = torch.Generator().manual_seed(derived_seed("robustsparse.dnr.start", self.seed))
        params = self._params()
        noise = {}
        for name, p in params.items():  # one draw per weight in the model's order
            if p.dim() > 1:
                noise[name] = torch.rand(p.shape, generator=generator).to(p.device)
        result = self._engine.compute({n: noise[n] for n in self._names}, None, self.cfg.target_sparsity)
        self.masks = result.masks
        self._result = result
        self._result.notes[_HISTORY] = []
        self._pairs = None
        self.current_target = float(self.cfg.target_sparsity)
        self._started = True
        self.apply_(optimizer)

    @torch.no_grad()
    def _accumulate(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Add this step's first-moment update at pruned positions to their accumulated momentum."""
        params = self._params()
        sources = _momentum_sources(optimizer)
        for name in self._names:
            p = params[name]
            value, beta = _momentum(p, optimizer, sources)
            if value is None:
                continue
            pruned = ~self.masks[name].to(p.device)
            growth = self._growth.get(name)
            if growth is None:
                growth = self._growth[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            growth.mul_(beta).add_(torch.where(pruned, value.float(), torch.zeros_like(growth)))

    # ------------------------------------------------------------------ one rewiring
    @torch.no_grad()
    def _rewire(self, point: int, rate: float, optimizer: torch.optim.Optimizer | None) -> bool:
        params = self._params()
        sources = _momentum_sources(optimizer)
        old = {n: m.clone() for n, m in self.masks.items()}
        if self._channels:
            new, record, layers = self._rewire_channels(params, sources, optimizer, point, rate)
        else:
            new, record, layers = self._rewire_elements(params, sources, optimizer, rate)
        for name, mask in new.items():
            regrown = mask & ~old[name].to(mask.device)
            if bool(regrown.any()):
                p = params[name]
                # the optimizer step just taken wrote into these pruned positions: back to zero
                p.masked_fill_(regrown, 0.0)
                if optimizer is not None:
                    zero_masked_state_(optimizer, [(p, regrown)])
        if self._channels:
            self._restart_channels(params, old, new, point)
        self.masks = new
        self._pairs = None
        self.apply_(optimizer)  # the pruned weights and their optimizer state become zero
        self._growth = {}  # sparse momentum resets the momentum of pruned positions at every rewiring
        changed = any(not torch.equal(new[n], old[n].to(new[n].device)) for n in new)
        history = list(self._result.notes.get(_HISTORY, []))
        history.append({"step": int(point), "prune_rate": float(rate), **record})
        self._result.notes[_HISTORY] = history
        self._result.notes[_LAYERS] = layers
        self._result.masks = self.masks
        log.debug("dnr: rewired at step %d: %s", point, record)
        return changed

    def _rewire_elements(
        self,
        params: dict[str, torch.Tensor],
        sources: dict[int, tuple[str, float]],
        optimizer: torch.optim.Optimizer | None,
        rate: float,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        names = self._names
        masks = {n: self.masks[n].to(params[n].device) for n in names}
        kept = [int(masks[n].sum()) for n in names]
        sizes = [masks[n].numel() for n in names]
        mus = []
        for n in names:
            value, _ = _momentum(params[n], optimizer, sources)
            mus.append(0.0 if value is None else float(value.abs()[masks[n]].float().mean()))
        removed = [max(0, min(round_half_up(rate * k), k - 1, size - k)) for k, size in zip(kept, sizes)]
        total_mu = sum(mus)
        # no momentum anywhere (nothing to go by): every layer regrows what it removed
        shares = [mu / total_mu for mu in mus] if total_mu > 0 else [float(r) for r in removed]
        regrow = apportion(sum(removed), shares, [size - k for k, size in zip(kept, sizes)])
        new: dict[str, torch.Tensor] = {}
        for n, r, g in zip(names, removed, regrow):
            mask = masks[n]
            flat_old = mask.reshape(-1)
            flat = flat_old.clone()
            if r:
                w = params[n].detach().abs().float().reshape(-1)
                score = torch.where(flat_old, w, torch.full_like(w, math.inf))
                flat[torch.argsort(score, stable=True)[:r]] = False
            if g:
                growth = self._growth.get(n)
                m = torch.zeros(flat.shape, device=flat.device) if growth is None else growth.abs().reshape(-1)
                score = torch.where(flat_old, torch.full_like(m, -math.inf), m)  # pruned before only
                flat[torch.argsort(score, descending=True, stable=True)[:g]] = True
            new[n] = flat.reshape(mask.shape)
        layers = {
            n: {
                "density": int(new[n].sum()) / size,
                "momentum": mu,
                "momentum_share": share if total_mu > 0 else None,
                "removed": r,
                "regrown": g,
            }
            for n, size, mu, share, r, g in zip(names, sizes, mus, shares, removed, regrow)
        }
        record = {"removed": sum(removed), "regrown": sum(regrow), "kept": sum(int(new[n].sum()) for n in names)}
        return new, record, layers

    def _rewire_channels(
        self,
        params: dict[str, torch.Tensor],
        sources: dict[int, tuple[str, float]],
        optimizer: torch.optim.Optimizer | None,
        point: int,
        rate: float,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        groups = self._engine.groups
        masks = {n: m.to(params[n].device) for n, m in self.masks.items()}
        keeps, mus, scores = [], [], []
        for g in groups:
            wname = f"{g.producer}.weight"
            keep = masks[wname].reshape(g.channels, -1).any(1)
            parts = [(wname, None)] + [(f"{c}.weight", block) for c, block in g.consumers]
            mom_sum = torch.zeros(g.channels, dtype=torch.float64, device=keep.device)
            count = torch.zeros(g.channels, dtype=torch.float64, device=keep.device)
            columns = []
            for name, block in parts:
                value, _ = _momentum(params[name], optimizer, sources)
                m = masks[name]
                if value is not None:
                    magnitude = torch.where(m, value.abs().float(), torch.zeros(m.shape, device=m.device))
                    mom_sum += _per_channel(magnitude, g.channels, block).double().sum(1)
                count += _per_channel(m.float(), g.channels, block).double().sum(1)
                if block is not None:
                    w = params[name].detach()
                    columns.append(_per_channel(torch.where(m, w, torch.zeros_like(w)), g.channels, block))
            total = float(count[keep].sum())
            mus.append(float(mom_sum[keep].sum()) / total if total > 0 else 0.0)
            scores.append(channel_scores_from_columns(columns, self.cfg.importance, False).cpu())
            keeps.append(keep.cpu())
        total_mu = sum(mus)
        generator = torch.Generator().manual_seed(derived_seed("robustsparse.dnr.regrow", self.seed, point))
        new_keeps, removed, candidates = [], [], []
        for keep, score, g in zip(keeps, scores, groups):
            k = int(keep.sum())
            r = max(0, min(round_half_up(rate * k), k - 1, g.channels - k))
            after = keep.clone()
            ranked = torch.where(keep, score.float(), torch.full_like(score.float(), math.inf))
            after[torch.argsort(ranked, stable=True)[:r]] = False
            order = torch.randperm(g.channels, generator=generator)  # a pruned channel has no momentum
            candidates.append(order[~keep[order]])  # pruned before this update, in the random order
            new_keeps.append(after)
            removed.append(r)
        shares = [mu / total_mu for mu in mus] if total_mu > 0 else [float(r) for r in removed]
        picks = _interleave(shares, [int(c.numel()) for c in candidates])
        counter = _ZeroCounter(self._engine.layers, groups)
        base = np.array([g.channels - int(k.sum()) for g, k in zip(groups, new_keeps)], dtype=np.int64)

        def zeros(prefix: int) -> int:
            return counter.zeros(base - np.bincount(picks[:prefix], minlength=len(groups)))

        wanted = self.cfg.target_sparsity * sum(layer.numel for layer in self._engine.layers)
        # the prefix whose zeros are nearest the target (zeros fall as channels come back: negated)
        lo = _nearest_prefix(lambda k: -zeros(k), -wanted, 0, len(picks))
        grown = np.bincount(picks[:lo], minlength=len(groups))
        for gi, keep in enumerate(new_keeps):
            keep[candidates[gi][: int(grown[gi])]] = True
        new = _channel_masks(groups, new_keeps, masks, self._engine.param_names)
        self._result.pruned_channels = {g.producer: int((~k).sum()) for g, k in zip(groups, new_keeps)}
        layers = {
            g.producer: {
                "channels_kept": int(k.sum()),
                "channels": g.channels,
                "momentum": mu,
                "momentum_share": (mu / total_mu) if total_mu > 0 else None,
                "removed": r,
                "regrown": int(n),
            }
            for g, k, mu, r, n in zip(groups, new_keeps, mus, removed, grown)
        }
        record = {
            "removed": int(sum(removed)),
            "regrown": int(grown.sum()),
            "kept_channels": int(sum(int(k.sum()) for k in new_keeps)),
            "sparsity": mask_sparsity(new, self._names),
        }
        return new, record, layers

    @torch.no_grad()
    def _restart_channels(
        self, params: dict[str, torch.Tensor], old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], point: int
    ) -> None:
        """A regrown channel's producer filter redrawn, its BatchNorm reset (see the module docstring)."""
        generator = torch.Generator().manual_seed(derived_seed("robustsparse.dnr.restart", self.seed, point))
        modules = dict(self.model.named_modules())
        for g in self._engine.groups:
            wname = f"{g.producer}.weight"
            was = old[wname].reshape(g.channels, -1).any(1).cpu()
            now = new[wname].reshape(g.channels, -1).any(1).cpu()
            back = torch.nonzero(now & ~was).flatten()
            if back.numel() == 0:
                continue
            w = params[wname]
            fan_in = w[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            draw = (torch.rand((back.numel(), *w.shape[1:]), generator=generator) * 2 - 1) * bound
            idx = back.to(w.device)
            w[idx] = torch.where(new[wname][idx], draw.to(w.device, w.dtype), torch.zeros_like(w[idx]))
            for bn in g.norms:
                module = modules[bn]
                module.weight[idx] = 1.0
                module.bias[idx] = 0.0
                if module.running_mean is not None:
                    module.running_mean[idx] = 0.0
                    module.running_var[idx] = 1.0

    # ------------------------------------------------------------------ reporting and resume
    def nearest_achievable(self) -> float:
        """The sparsity of the masks (held at the target from the start)."""
        if self._engine is None or not self._engine.layers:
            return 0.0
        return mask_sparsity(self.masks, self._names) if self._started else float(self.cfg.target_sparsity)

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the prune rate, its anneal and every rewiring's counts."""
        cfg = self.cfg
        return {
            **super().metadata(),
            "scores": (
                "prune: |w| (channel: consumer-column norm); regrow: accumulated momentum at pruned positions "
                "(channel: seeded random order)"
            ),
            "dnr": {
                "prune_rate": cfg.dnr_prune_rate,
                "anneal": cfg.dnr_anneal,
                "start": "random masks at the target, uniform over the layers (seeded)",
                "layer_budget": "normalised momentum: mean |momentum| over each layer's kept weights, over the sum",
                "regrown_weights": (
                    "zero, zero momentum"
                    if not self._channels
                    else "consumer columns zero; producer filter U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BatchNorm reset"
                ),
                "updates": list(self._result.notes.get(_HISTORY, [])),
                "layers": dict(self._result.notes.get(_LAYERS, {})),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus the accumulated momentum and the step counters."""
        return {
            **super().state_dict(),
            _STATE_KEY: {
                "started": bool(self._started),
                "seen_step": int(self._seen_step),
                "growth": {n: t.detach().cpu().clone() for n, t in self._growth.items()},
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; the accumulated momentum comes back with the masks, so resume is exact."""
        super().load_state_dict(state)
        extra = state.get(_STATE_KEY) if isinstance(state, dict) else None
        if not isinstance(extra, dict):
            raise CheckpointError("pruner state has no dnr section; it is not a dnr state")
        params = self._params()
        self._started = bool(extra["started"])
        self._seen_step = int(extra["seen_step"])
        self._growth = {n: t.to(params[n].device).clone() for n, t in extra["growth"].items()}


def _per_channel(tensor: torch.Tensor, channels: int, block: int | None) -> torch.Tensor:
    """A producer's weight (`block` None) or a consumer's as (channels, weights per channel)."""
    return tensor.reshape(channels, -1) if block is None else _consumer_columns(tensor, channels, block)


def _interleave(shares: Sequence[float], caps: Sequence[int]) -> np.ndarray:
    """The group of every pick when channels come back one at a time in proportion to `shares`:
    group g's j-th pick has key j / share_g (groups with no share last); ties by group index."""
    keys, owners, ranks = [], [], []
    for gi, (share, cap) in enumerate(zip(shares, caps)):
        j = np.arange(1, cap + 1, dtype=np.float64)
        keys.append(j / share if share > 0 else np.full(cap, np.inf))
        owners.append(np.full(cap, gi, dtype=np.int64))
        ranks.append(j)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    key, owner, rank = np.concatenate(keys), np.concatenate(owners), np.concatenate(ranks)
    return owner[np.lexsort((rank, owner, key))]


def _channel_masks(
    groups: Sequence[Any], keeps: Sequence[torch.Tensor], masks: dict[str, torch.Tensor], param_names: set[str]
) -> dict[str, torch.Tensor]:
    """Masks of every prunable weight and coupled parameter with each group keeping `keeps`."""
    out = {n: torch.ones_like(m) for n, m in masks.items()}
    for g, keep in zip(groups, keeps):
        remove_channels_(out, g, keep, param_names)
    return out


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> DnrPruner:
    return DnrPruner(model, cfg, steps_per_epoch, seed)


DNR = register(
    Method(
        name=METHOD,
        description=(
            "sparse training from a random start; each layer's share of the weights set by its normalised "
            "momentum, pruned and regrown every epoch until end_epoch (DNR)"
        ),
        when="during_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
        resolve_settings=resolve_dnr_settings,
        fixed_settings={
            "from_dense": False,
            "schedule": "one_shot",
            "start_epoch": 0,
            "initial_sparsity": 0.0,
            "allocation": "uniform",
            "allow_regrowth": False,
        },
    )
)
