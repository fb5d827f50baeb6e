"""How the target is spread: per-layer or global counts of groups to prune, and the masks.

`uniform` gives every prunable layer the same target (the nearest whole number of groups);
`global` ranks all groups of all prunable layers together and prunes the lowest until the
target over the whole prunable set is reached (nearest crossing). A group's global score is its
norm per weight divided by the mean score of its layer's groups (pruned groups count as 0, so
a layer already thinned scores its survivors higher): magnitudes differ between layers by
orders of magnitude (initialisation scale, BatchNorm after the conv), and a plain ranking
empties the small layers while leaving the large ones dense. No layer loses more than
`max_layer_sparsity` of its weights under `global`, and each layer always keeps at least one
group. With `global_ranking: raw` (the papers' single global threshold, fixed by `snip` and
`synflow`, whose scores are comparable across layers) scores per weight are ranked as they are:
no layer normalisation, no row protected (the cap still holds). Balanced granularities (window, window+kernel, n:m)
are uniform by construction: every row keeps `keep = round((1 - s) * block)` weights.

For `window+kernel` the final target s is split as (1 - s) = (1 - s_kernel)(1 - s_window):
the window keep count at the end, `m = round((1 - s) ** (1 - split) * block)`, fixes the
window's share of the log-density, and the kernel part makes up the rest so the overall target
is met exactly. During the schedule both parts follow the same shares, so neither ever has to
give weights back.

Monotonicity: when `prev` masks are given (no regrowth), groups and weights pruned before are
ranked first and counts never fall below what is already pruned, so masks only gain zeros.

`filter` / `channel` prune channel groups (`coupling.ChannelGroup`): uniform allocation takes
channels round-robin so every producer removes the same fraction of its channels up to one
channel; global allocation takes them by score. Either way the number of channels is chosen
so that the zeros over all prunable weights (the producers' filters and the consumers' input
columns together) come nearest to the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robustsparse.sparsity._math import keep_count, round_half_up
from robustsparse.sparsity.coupling import ChannelGroup
from robustsparse.sparsity.granularity import layer_plan, topk_rows_mask
from robustsparse.sparsity.importance import (
    channel_scores_from_columns,
    channel_scores_from_rows,
    element_scores,
    row_scores,
)
from robustsparse.sparsity.layers import LayerInfo
from robustsparse.sparsity.settings import SparsityConfig

__all__ = [
    "MaskResult",
    "row_granularity_masks",
    "channel_granularity_masks",
    "channel_param_names",
    "window_share",
    "layer_normalised",
]

_NEG = float("-inf")
_POS = float("inf")


@dataclass
class MaskResult:
    """Masks for one target plus what the metadata and the structure checks need.

    Attributes:
        masks: parameter name -> bool tensor (True = kept) for every prunable weight and, for
            filter / channel, the coupled biases and BatchNorm scales/shifts.
        specs: weight parameter name -> JSON-able per-layer description.
        pruned_channels: for filter / channel, producer module -> channels removed.
        notes: human-readable notes (e.g. how a split was realised).
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pruned_channels: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def window_share(final_density: float, block: int, split: float) -> float:
    """Exponent x with window density d**x and kernel density d**(1-x) for window+kernel.

    The window keep count at the final density, `round(d_f ** (1 - split) * block)`, is an
    integer; x is chosen so that `d_f ** x` is exactly that count over `block`.
    """
    if final_density >= 1.0 or final_density <= 0.0:
        return 1.0 - split
    m_final = keep_count(final_density ** (1.0 - split), block)
    return min(1.0, max(0.0, math.log(m_final / block) / math.log(final_density)))


def _prev_table(view, prev: torch.Tensor | None) -> torch.Tensor | None:
    return None if prev is None else view.rows(prev, pad=False)


def row_granularity_masks(
    layers: list[LayerInfo],
    weights: Mapping[str, torch.Tensor],
    prev: Mapping[str, torch.Tensor] | None,
    cfg: SparsityConfig,
    target: float,
    final_target: float,
) -> MaskResult:
    """Masks for element, row, kernel, window, window+kernel and n:m.

    Args:
        layers: the prunable layers.
        weights: weight parameter name -> the weights to score (dense or masked).
        prev: the current masks (no regrowth: already pruned weights stay pruned) or None.
        cfg: the settings (granularity, importance, allocation, pointwise grouping, split).
        target: the cumulative target now.
        final_target: the schedule's final target (fixes the window+kernel split).
    """
    result = MaskResult()
    density, final_density = 1.0 - target, 1.0 - final_target
    pending = []  # layers pruned by whole rows under the allocation rule
    for info in layers:
        plan = layer_plan(info, cfg)
        view = plan.view
        w = weights[info.param].detach()
        prev_tab = _prev_table(view, None if prev is None else prev[info.param])
        valid = view.valid(w.device)
        table = view.rows(w)
        if not plan.balanced:
            pending.append((info, plan, table, valid, prev_tab, w.shape))
            continue
        block = view.block
        dead_rows = None
        if plan.kernel_stage:
            share = window_share(final_density, block, cfg.window_kernel_split)
            keep = keep_count(density**share, block)
            kernel_sparsity = 1.0 - density ** (1.0 - share)
            scores = row_scores(table, cfg.importance)
            n_rows = view.n_rows
            n_prune = min(n_rows - 1, round_half_up(kernel_sparsity * n_rows))
            if prev_tab is not None:
                prev_dead = ~(prev_tab & valid).any(dim=1)
                scores[prev_dead] = _NEG
                n_prune = max(n_prune, int(prev_dead.sum()))
            dead_rows = torch.zeros(n_rows, dtype=torch.bool, device=w.device)
            dead_rows[torch.argsort(scores, stable=True)[:n_prune]] = True
            result.notes.setdefault("window_kernel", {})[info.param] = {
                "kernel_sparsity": n_prune / n_rows,
                "window_keep": keep,
                "window_block": block,
            }
        else:
            keep = keep_count(density, block)
        el = element_scores(table)
        el[~valid] = _NEG
        if prev_tab is not None:
            el[~prev_tab] = _NEG
        kept = topk_rows_mask(el, keep) & valid
        if dead_rows is not None:
            kept &= ~dead_rows[:, None]
        result.masks[info.param] = view.unrows(kept).reshape(w.shape)
        result.specs[info.param] = plan.spec(keep)
    if pending:
        _allocate_rows(pending, cfg, target, result)
    return result


def _allocate_rows(pending: list, cfg: SparsityConfig, target: float, result: MaskResult) -> None:
    """Prune whole rows (elements, kernel rows, kernels) under the allocation rule."""
    scored = []
    for info, plan, table, valid, prev_tab, shape in pending:
        sizes = plan.view.row_sizes(table.device)
        scores = row_scores(table, cfg.importance, sizes if cfg.allocation == "global" else None)
        if cfg.allocation == "global" and cfg.global_ranking == "layer_normalised":
            scores = layer_normalised(scores)
        n_prev = 0
        if prev_tab is not None:
            prev_dead = ~(prev_tab & valid).any(dim=1)
            scores[prev_dead] = _NEG
            n_prev = int(prev_dead.sum())
        scored.append((info, plan, valid, scores, sizes, n_prev, shape))
    dead: list[torch.Tensor] = []
    if cfg.allocation == "uniform":
        for _info, _plan, _valid, scores, _sizes, n_prev, _shape in scored:
            n_rows = scores.numel()
            n_prune = max(min(n_rows - 1, round_half_up(target * n_rows)), n_prev)
            d = torch.zeros(n_rows, dtype=torch.bool, device=scores.device)
            d[torch.argsort(scores, stable=True)[:n_prune]] = True
            dead.append(d)
    else:
        dead = _global_rows(scored, target, cfg.max_layer_sparsity, cfg.global_ranking == "layer_normalised")
    for (info, plan, valid, *_, shape), d in zip(scored, dead):
        kept = valid & ~d[:, None]
        result.masks[info.param] = plan.view.unrows(kept).reshape(shape)
        result.specs[info.param] = plan.spec()


def layer_normalised(scores: torch.Tensor) -> torch.Tensor:
    """A layer's group scores divided by their mean (unchanged when the mean is 0)."""
    mean = scores.double().mean()
    return scores / mean.to(scores.dtype) if float(mean) > 0 else scores


def _global_rows(scored: list, target: float, cap: float, protect_best: bool = True) -> list[torch.Tensor]:
    """One ranking of every row of every layer by (layer-normalised) score; prune to the nearest
    crossing, no layer beyond `cap` of its weights; `protect_best`: every layer keeps its best row."""
    device = scored[0][3].device
    all_scores, all_sizes = [], []
    for _, _, _, scores, sizes, n_prev, _ in scored:
        s = scores.to(device).clone()
        sizes = sizes.to(device)
        # Every layer keeps its best row, so no layer is cut off entirely (unless raw ranking).
        if protect_best:
            s[torch.argmax(torch.where(torch.isfinite(s), s, torch.full_like(s, -1e30)))] = _POS
        # The cap: only the weakest rows of the layer up to `cap` of its weights may go (never
        # fewer than were pruned before). Stable sorts keep this prefix the global order's.
        order = torch.argsort(s, stable=True)
        within = torch.cumsum(sizes[order].double(), 0) <= cap * float(sizes.sum()) + 1e-9
        allowed = max(int(within.sum()), n_prev)
        s[order[allowed:]] = _POS
        all_scores.append(s)
        all_sizes.append(sizes)
    scores = torch.cat(all_scores)
    sizes = torch.cat(all_sizes).double()
    order = torch.argsort(scores, stable=True)
    cum = torch.cumsum(sizes[order], 0)
    wanted = target * float(sizes.sum())
    n = cum.numel()
    j = int(torch.searchsorted(cum, torch.tensor([wanted], dtype=cum.dtype, device=device)).item())
    if j >= n:
        k = n
    else:
        below = float(cum[j - 1]) if j > 0 else 0.0
        k = j if abs(below - wanted) <= abs(float(cum[j]) - wanted) else j + 1
    k = max(k, int((scores == _NEG).sum()))  # never give back what was pruned before
    k = min(k, int((scores != _POS).sum()))  # never the protected rows
    dead = torch.zeros(n, dtype=torch.bool, device=device)
    dead[order[:k]] = True
    out, offset = [], 0
    for s in all_scores:
        out.append(dead[offset : offset + s.numel()])
        offset += s.numel()
    return [d.to(item[3].device) for d, item in zip(out, scored)]


# --------------------------------------------------------------------------- filter / channel


def _consumer_columns(weight: torch.Tensor, channels: int, block: int) -> torch.Tensor:
    """A consumer's weight as (channels, weights per channel)."""
    if weight.dim() == 4:  # conv (K, C, R, S) -> (C, K*R*S)
        return weight.detach().transpose(0, 1).reshape(channels, -1)
    k = weight.shape[0]  # linear (K, C*block) -> (C, K*block)
    return weight.detach().reshape(k, channels, block).transpose(0, 1).reshape(channels, -1)


def channel_param_names(group: ChannelGroup, param_names: set[str]) -> list[str]:
    """The 1-D parameters coupled to a group's channels: producer bias, BatchNorm scale/shift."""
    names = [f"{group.producer}.bias"] + [f"{bn}.{leaf}" for bn in group.norms for leaf in ("weight", "bias")]
    return [n for n in names if n in param_names]


def remove_channels_(
    masks: dict[str, torch.Tensor], group: ChannelGroup, keep: torch.Tensor, param_names: set[str]
) -> None:
    """Take a group's dropped channels (`keep` False) out of `masks` in place: the producer's
    filters, its coupled bias / BatchNorm scale and shift, and the consumers' input columns."""
    wname = f"{group.producer}.weight"
    keep = keep.to(masks[wname].device)
    masks[wname] &= keep.view(-1, *([1] * (masks[wname].dim() - 1)))
    for name in channel_param_names(group, param_names):
        masks[name] = keep.clone()
    for name, block in group.consumers:
        m = masks[f"{name}.weight"]
        m &= keep.view(1, -1, 1, 1) if m.dim() == 4 else keep.repeat_interleave(block).view(1, -1)


def channel_granularity_masks(
    layers: list[LayerInfo],
    groups: list[ChannelGroup],
    weights: Mapping[str, torch.Tensor],
    param_names: set[str],
    prev: Mapping[str, torch.Tensor] | None,
    cfg: SparsityConfig,
    target: float,
    channel_scores: Mapping[str, torch.Tensor] | None = None,
) -> MaskResult:
    """Masks for filter / channel: whole channel groups, coupled parameters included.

    Args:
        layers: the prunable layers (the denominator of the target).
        groups: the channel groups whose producer and consumers are all prunable.
        weights: parameter name -> tensor for every weight involved.
        param_names: all parameter names of the model (to find biases).
        prev: the current masks (no regrowth) or None.
        cfg / target: settings and the cumulative target now.
        channel_scores: producer module -> a method's own score per channel (e.g. npn's keep
            probabilities), used as they are instead of the weight norms (None: the norms).
    """
    result = MaskResult()
    normalize = cfg.allocation == "global"
    scores, n_prev = [], []
    for g in groups:
        w = weights[f"{g.producer}.weight"]
        if channel_scores is not None:
            s = channel_scores[g.producer].detach().float()
        elif cfg.granularity == "filter":
            s = channel_scores_from_rows(w, cfg.importance, normalize)
        else:
            cols = [_consumer_columns(weights[f"{name}.weight"], g.channels, block) for name, block in g.consumers]
            s = channel_scores_from_columns(cols, cfg.importance, normalize)
        s = s.cpu().double()
        if cfg.allocation == "global" and cfg.global_ranking == "layer_normalised":
            s = layer_normalised(s)
        dead_before = 0
        if prev is not None:
            gone = ~prev[f"{g.producer}.weight"].reshape(g.channels, -1).any(dim=1).cpu()
            s[gone] = _NEG
            dead_before = int(gone.sum())
        scores.append(s)
        n_prev.append(dead_before)
    picks, chosen = _channel_sequence(groups, scores, cfg.allocation)
    if cfg.allocation == "global":
        picks, chosen = _capped_picks(picks, chosen, groups, layers, cfg.max_layer_sparsity, sum(n_prev))
    counter = _ZeroCounter(layers, groups)
    total = sum(layer.numel for layer in layers)
    k_min = _min_prefix(picks, n_prev, cfg.allocation)
    k = _nearest_prefix(
        lambda k: counter.zeros(np.bincount(picks[:k], minlength=len(groups))), target * total, k_min, len(picks)
    )
    counts = np.bincount(picks[:k], minlength=len(groups))
    masks = {
        layer.param: torch.ones(weights[layer.param].shape, dtype=torch.bool, device=weights[layer.param].device)
        for layer in layers
    }
    for gi, g in enumerate(groups):
        if cfg.allocation == "global":
            removed = torch.as_tensor(chosen[:k][picks[:k] == gi], dtype=torch.long)
        else:
            removed = torch.argsort(scores[gi], stable=True)[: int(counts[gi])]
        keep = torch.ones(g.channels, dtype=torch.bool)
        keep[removed] = False
        result.pruned_channels[g.producer] = int(counts[gi])
        remove_channels_(masks, g, keep, param_names)
    result.masks = masks
    for layer in layers:
        roles = []
        if layer.module in {g.producer for g in groups}:
            roles.append("producer")
        if layer.module in {name for g in groups for name, _ in g.consumers}:
            roles.append("consumer")
        result.specs[layer.param] = {"granularity": cfg.granularity, "view": "channel", "roles": roles}
    return result


def _channel_sequence(
    groups: list[ChannelGroup], scores: list[torch.Tensor], allocation: str
) -> tuple[np.ndarray, np.ndarray]:
    """The order channels are taken in: (group index per pick, channel index per pick).

    Uniform: round-robin by the fraction of each group removed after the pick (so every group
    removes the same fraction up to one channel); the channel itself is chosen later by score.
    Global: all channels by score per weight. Each group keeps its best channel.
    """
    if allocation == "uniform":
        keys, owners = [], []
        for gi, g in enumerate(groups):
            j = np.arange(1, g.channels)  # at most channels - 1 removed
            keys.append(j / g.channels)
            owners.append(np.full(j.shape, gi))
        key = np.concatenate(keys) if keys else np.zeros(0)
        owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        order = np.lexsort((owner, key))
        return owner[order].astype(np.int64), np.full(order.shape, -1)
    vals, owners, chans = [], [], []
    for gi, s in enumerate(scores):
        s = s.clone()
        s[int(torch.argmax(torch.where(torch.isfinite(s), s, torch.full_like(s, -1e300))))] = _POS
        keep = s != _POS
        idx = torch.nonzero(keep).flatten()
        vals.append(s[idx].numpy())
        owners.append(np.full(idx.numel(), gi))
        chans.append(idx.numpy())
    val = np.concatenate(vals) if vals else np.zeros(0)
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    chan = np.concatenate(chans) if chans else np.zeros(0, dtype=np.int64)
    order = np.argsort(val, kind="stable")
    return owner[order].astype(np.int64), chan[order].astype(np.int64)


def _capped_picks(
    picks: np.ndarray, chosen: np.ndarray, groups: list[ChannelGroup], layers: list[LayerInfo], cap: float, forced: int
) -> tuple[np.ndarray, np.ndarray]:
    """The global pick sequence without the picks that would take a layer beyond `cap`.

    A channel removes a row of its producer and `block` columns of each consumer; a layer's
    fraction of zeros is `1 - (K - rows)(C - cols) / (K C)`. The first `forced` picks (the
    channels removed before) are always kept.
    """
    index = {layer.module: i for i, layer in enumerate(layers)}
    size = np.array([[layer.shape[0], layer.shape[1]] for layer in layers], dtype=np.float64).reshape(-1, 2)
    removed = np.zeros_like(size)  # (rows, columns) removed per layer
    effects = [[(index[g.producer], 0, 1)] + [(index[name], 1, block) for name, block in g.consumers] for g in groups]
    keep = []
    for j, gi in enumerate(picks):
        step = effects[int(gi)]
        after = removed.copy()
        for li, axis, n in step:
            after[li, axis] += n
        touched = [li for li, _, _ in step]
        dense_share = (size[touched, 0] - after[touched, 0]) * (size[touched, 1] - after[touched, 1])
        if j >= forced and bool((1.0 - dense_share / size[touched].prod(1) > cap + 1e-12).any()):
            continue
        removed = after
        keep.append(j)
    keep_idx = np.asarray(keep, dtype=np.int64)
    return picks[keep_idx], chosen[keep_idx]


def _min_prefix(picks: np.ndarray, n_prev: list[int], allocation: str) -> int:
    """The shortest prefix that removes at least what each group had already lost."""
    if allocation == "global":
        return int(sum(n_prev))  # already-removed channels score -inf and come first
    k = 0
    for gi, n in enumerate(n_prev):
        if n > 0:
            positions = np.nonzero(picks == gi)[0]
            k = max(k, int(positions[min(n, positions.size) - 1]) + 1)
    return k


def _nearest_prefix(zeros_of, wanted: float, k_min: int, k_max: int) -> int:
    """The prefix length in [k_min, k_max] whose zero count is nearest to `wanted` (monotone)."""
    lo, hi = k_min, k_max
    while lo < hi:  # smallest k with zeros(k) >= wanted
        mid = (lo + hi) // 2
        if zeros_of(mid) >= wanted:
            hi = mid
        else:
            lo = mid + 1
    if lo > k_min and abs(zeros_of(lo - 1) - wanted) <= abs(zeros_of(lo) - wanted):
        return lo - 1
    return lo


class _ZeroCounter:
    """Zeros over the prunable weights for given channel counts per group, without masks."""

    def __init__(self, layers: list[LayerInfo], groups: list[ChannelGroup]) -> None:
        index = {layer.module: i for i, layer in enumerate(layers)}
        self.shape = np.array([layer.shape for layer in layers], dtype=np.int64).reshape(-1, 4)
        self.row_group = np.full(len(layers), -1)
        self.col_group = np.full(len(layers), -1)
        self.col_block = np.ones(len(layers), dtype=np.int64)
        for gi, g in enumerate(groups):
            self.row_group[index[g.producer]] = gi
            for name, block in g.consumers:
                self.col_group[index[name]] = gi
                self.col_block[index[name]] = block

    def zeros(self, counts: np.ndarray) -> int:
        counts = np.append(counts, 0)  # index -1 -> 0 removed
        k, c, rs = self.shape[:, 0], self.shape[:, 1], self.shape[:, 2] * self.shape[:, 3]
        r = counts[self.row_group]
        col = counts[self.col_group] * self.col_block
        return int((rs * (k * c - (k - r) * (c - col))).sum())
