"""PCONV: pattern + connectivity pruning (Ma et al., AAAI 2020; methods.md section 3).

Every kept 3x3 kernel keeps exactly the entries of one pattern from a small library shared by
the whole network (intra-kernel sparsity), and whole kernels are removed (connectivity pruning,
inter-kernel sparsity) to reach the target. The paper trains with ADMM; here both constraints
are reached gradually on the pruner's schedule from the dense parent (`from_dense: true`,
fixed), then the masks are frozen at `end_epoch` and the model retrains with them fixed.

Choices (each a setting or stated here; methods.md leaves them open):

- Patterns (`pconv_pattern_size`, 4): the centre (row-major position 4) plus `size - 1` of its
  8 neighbours: C(8, size - 1) candidates (56 for 4).
- Library (`pconv_library_size`, 8), PatDNN-style, decided once at the first mask update from
  the weights then (the dense parent's): every 3x3 kernel of the pruned layers votes for its
  best-fitting candidate (the one keeping the largest norm); the library is the most voted
  candidates (ties: the lower candidate index, combinations in lexicographic order). It is
  stored in the pruner state (resume) and in the metadata.
- Pattern of a kernel: the library pattern keeping the largest norm of the kernel
  (`importance`: l1 sum of |w|, the re-implementation's choice, or l2), ties the lower index.
- Split of the target on a 3x3 layer: patterns give a fixed 1 - size/9 (5/9 for 4) on every kept
  kernel; connectivity keeps the nearest count `(1 - s) / (size / 9)` of the layer's kernels
  (the kernels with the largest pattern-masked norm, at least one), so the layer reaches s.
  A target below 1 - size/9 cannot be reached with every kept kernel patterned: the 3x3 layers
  then end at 1 - size/9 with no kernel removed (the nearest achievable value, stated in the
  metadata).
- Gradually: a 3x3 layer follows the schedule scaled to its own final target
  `max(target, 1 - size/9)`. Below 1 - size/9 the fraction `s / (1 - size/9)` of its kernels is
  patterned (those that lose the least norm to their best pattern first), the rest still dense;
  from there on every kernel is patterned and connectivity removes kernels. Masks only gain
  zeros (no regrowth, `allow_regrowth: false` fixed): a patterned kernel keeps its pattern.
- Other prunable layers (1x1 convs, other kernel sizes, linear; `pconv_other_layers`):
  `element` (default) prunes them by weight magnitude at the schedule's target, so the
  prunable set and the target over it are those of every other method; `dense` keeps them
  dense (the target then applies to the 3x3 layers only). The stem and the classifier follow
  `keep_first_conv_dense` / `keep_last_linear_dense` as for every method.
- Granularity: only `kernel` (meaning pattern + connectivity on 3x3 kernels). Allocation is
  per layer (`allocation: uniform`, fixed), as the paper's per-layer connectivity ratio.

The layer specs say `kernel` with `keep: size` and `kernel_stage` once every kernel is
patterned (the structure check then wants 0 or `size` kept entries per kernel; the compressed
export stores each kernel's pattern as a code), `element` before.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
from torch import nn

from robustsparse.sparsity._math import keep_count, round_half_up
from robustsparse.sparsity.allocation import MaskResult
from robustsparse.sparsity.layers import LayerInfo
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner, _Engine
from robustsparse.sparsity.settings import SparsityConfig, is_int

__all__ = [
    "PCONV",
    "PConvPruner",
    "candidate_patterns",
    "choose_library",
    "pattern_kernel_masks",
    "resolve_pconv_settings",
]

METHOD = "pconv"
CENTRE = 4  # row-major position of the centre of a 3x3 kernel
DEFAULT_PATTERN_SIZE = 4
DEFAULT_LIBRARY_SIZE = 8
DEFAULT_OTHER_LAYERS = "element"
OTHER_LAYERS = ("element", "dense")
_SETTINGS = ("pconv_pattern_size", "pconv_library_size", "pconv_other_layers")
_NOTE = "pconv_library"  # key of the library in the pruner's MaskResult notes (saved with the state)


def resolve_pconv_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """pconv's settings checked and completed (the defaults filled in); {} for other methods.

    Raises:
        ConfigError: a pconv setting is given for another method or is out of its range (one line).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, _SETTINGS)
        return {}
    size, library, other = cfg.pconv_pattern_size, cfg.pconv_library_size, cfg.pconv_other_layers
    if size is not None and not (is_int(size) and 2 <= size <= 8):
        raise setting_error("pconv_pattern_size", size, "null or an integer in [2, 8] (weights kept per 3x3 kernel)")
    size = DEFAULT_PATTERN_SIZE if size is None else size
    n_candidates = len(candidate_patterns(size))
    if library is not None and not (is_int(library) and 1 <= library <= n_candidates):
        raise setting_error(
            "pconv_library_size",
            library,
            f"null or an integer in [1, {n_candidates}] (the candidate patterns of size {size})",
        )
    if other is not None and other not in OTHER_LAYERS:
        raise setting_error("pconv_other_layers", other, "null or one of " + ", ".join(OTHER_LAYERS))
    return {
        "pconv_pattern_size": size,
        "pconv_library_size": DEFAULT_LIBRARY_SIZE if library is None else library,
        "pconv_other_layers": DEFAULT_OTHER_LAYERS if other is None else other,
    }


def candidate_patterns(size: int) -> list[tuple[int, ...]]:
    """Every 3x3 pattern of `size` entries containing the centre (row-major positions, sorted)."""
    others = [i for i in range(9) if i != CENTRE]
    return [tuple(sorted((CENTRE, *rest))) for rest in itertools.combinations(others, size - 1)]


def _table(patterns: list[tuple[int, ...]], device: torch.device | str = "cpu") -> torch.Tensor:
    table = torch.zeros(len(patterns), 9, dtype=torch.bool, device=device)
    for row, support in enumerate(patterns):
        table[row, list(support)] = True
    return table


def _magnitude(kernels: torch.Tensor, importance: str) -> torch.Tensor:
    """Per-entry contribution to a kernel's norm (|w| for l1, w^2 for l2: same ranking as the norm)."""
    k = kernels.detach().double()
    return k.abs() if importance == "l1" else k * k


def choose_library(
    kernels: torch.Tensor, size: int, library_size: int, importance: str = "l1"
) -> list[tuple[int, ...]]:
    """The `library_size` candidate patterns that fit most kernels best (PatDNN-style vote).

    Args:
        kernels: (N, 9) the 3x3 kernels of the pruned layers, row-major.
        size: entries per pattern (centre included).
        library_size: how many patterns to keep.
        importance: `l1` or `l2`, the norm a pattern should keep.

    Returns:
        The library, most voted first (ties: the lower candidate index).
    """
    candidates = candidate_patterns(size)
    votes = torch.zeros(len(candidates), dtype=torch.long)
    if kernels.numel():
        kept = _magnitude(kernels, importance) @ _table(candidates, kernels.device).double().T
        votes = torch.bincount(_first_argmax(kept).cpu(), minlength=len(candidates))
    order = sorted(range(len(candidates)), key=lambda j: (-int(votes[j]), j))
    return [candidates[j] for j in order[:library_size]]


def _first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Argmax along dim 1, ties broken towards the lower index on every device."""
    best = scores.max(dim=1, keepdim=True).values
    index = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    return torch.where(scores == best, index, scores.shape[1]).min(dim=1).values


def pattern_kernel_masks(
    kernels: torch.Tensor,
    prev: torch.Tensor | None,
    library: list[tuple[int, ...]],
    target: float,
    importance: str = "l1",
) -> torch.Tensor:
    """The (N, 9) bool masks of one 3x3 layer's kernels at `target` (see the module docstring).

    Args:
        kernels: (N, 9) weights (pruned positions at zero).
        prev: (N, 9) the masks so far (None: all dense); a kernel keeps 9 (dense), `size`
            (patterned, its pattern kept) or 0 (removed) entries.
        library: the patterns, all of one size.
        target: the layer's fraction of zeros, in [0, 1).
        importance: `l1` or `l2`.
    """
    n = kernels.shape[0]
    size = len(library[0])
    pattern_sparsity = 1.0 - size / 9
    device = kernels.device
    prev = torch.ones(n, 9, dtype=torch.bool, device=device) if prev is None else prev.to(device)
    count = prev.sum(1)
    mag = _magnitude(kernels, importance)
    table = _table(library, device)
    fits = mag @ table.double().T  # (N, L): the norm each pattern keeps
    best = _first_argmax(fits)
    dense = count == 9
    # Pattern stage: the share of kernels patterned follows the target up to 1 - size/9.
    wanted = n if target >= pattern_sparsity - 1e-12 else round_half_up(target / pattern_sparsity * n)
    already = int((~dense).sum())
    new = max(0, min(wanted, n) - already)
    masks = prev.clone()
    if new:
        loss = mag.sum(1) - fits.gather(1, best[:, None]).squeeze(1)  # norm lost to the best pattern
        loss = torch.where(dense, loss, torch.full_like(loss, float("inf")))
        chosen = torch.sort(loss, stable=True).indices[:new]
        masks[chosen] = table[best[chosen]]
    if target <= pattern_sparsity + 1e-12:
        return masks
    # Connectivity stage: every kernel is patterned; keep the kernels with the largest kept norm.
    keep = keep_count((1.0 - target) / (size / 9), n)
    alive = masks.any(1)
    keep = min(keep, int(alive.sum()))
    score = torch.where(alive, (mag * masks).sum(1), torch.full((n,), -1.0, dtype=mag.dtype, device=device))
    kept = torch.zeros(n, dtype=torch.bool, device=device)
    kept[torch.sort(score, descending=True, stable=True).indices[:keep]] = True
    return masks & kept[:, None]


def _element_mask(weight: torch.Tensor, prev: torch.Tensor | None, target: float) -> torch.Tensor:
    """Keep the nearest count of largest |w| at `target` (pruned entries stay pruned)."""
    flat = weight.detach().abs().reshape(-1).double()
    if prev is not None:
        flat = torch.where(prev.reshape(-1).to(flat.device), flat, torch.full_like(flat, -1.0))
    keep = keep_count(1.0 - target, flat.numel())
    if prev is not None:
        keep = min(keep, int(prev.sum()))
    out = torch.zeros_like(flat, dtype=torch.bool)
    out[torch.sort(flat, descending=True, stable=True).indices[:keep]] = True
    return out.reshape(weight.shape)


def _is_3x3_conv(layer: LayerInfo) -> bool:
    return layer.kind == "conv" and layer.shape[2:] == (3, 3)


class _PConvEngine(_Engine):
    """The sparsity engine with pconv's layers and masks; `library` is set by the pruner."""

    def __init__(self, model: nn.Module, cfg: SparsityConfig) -> None:
        super().__init__(model, cfg)
        if cfg.pconv_other_layers == "dense":
            reason = "not a 3x3 convolution (pconv_other_layers: dense)"
            self.all_layers = [
                layer if not layer.prunable or _is_3x3_conv(layer) else dataclasses.replace(layer, dense_reason=reason)
                for layer in self.all_layers
            ]
            self.layers = [layer for layer in self.all_layers if layer.prunable]
        self.library: list[tuple[int, ...]] | None = None

    @property
    def pattern_sparsity(self) -> float:
        return 1.0 - self.cfg.pconv_pattern_size / 9

    def conv_target(self, target: float) -> float:
        """The 3x3 layers' target: the schedule scaled to end at max(target_sparsity, 1 - size/9)."""
        final = self.cfg.target_sparsity
        if final <= 0.0:
            return 0.0
        return target * max(final, self.pattern_sparsity) / final

    def compute(
        self, weights: dict[str, torch.Tensor], prev: dict[str, torch.Tensor] | None, target: float
    ) -> MaskResult:
        result = MaskResult()
        cfg = self.cfg
        convs = [layer for layer in self.layers if _is_3x3_conv(layer)]
        library = self.library
        if library is None and target > 0.0:  # decided once, from the weights at the first update
            kernels = [weights[layer.param].reshape(-1, 9) for layer in convs]
            stacked = torch.cat(kernels) if kernels else torch.zeros(0, 9)
            library = choose_library(stacked, cfg.pconv_pattern_size, cfg.pconv_library_size, cfg.importance)
        if library is not None:
            result.notes[_NOTE] = [list(p) for p in library]
        conv_target = self.conv_target(target)
        for layer in self.layers:
            w = weights[layer.param]
            before = None if prev is None else prev.get(layer.param)
            if not _is_3x3_conv(layer):
                mask = _element_mask(w, before, target) if target > 0.0 else torch.ones_like(w, dtype=torch.bool)
                result.masks[layer.param] = mask
                result.specs[layer.param] = {"granularity": "element", "view": "element", "block": 1}
                continue
            if library is None or conv_target <= 0.0:
                mask = torch.ones_like(w, dtype=torch.bool) if before is None else before.clone()
            else:
                rows = pattern_kernel_masks(
                    w.reshape(-1, 9),
                    None if before is None else before.reshape(-1, 9),
                    library,
                    conv_target,
                    cfg.importance,
                )
                mask = rows.reshape(w.shape)
            counts = mask.reshape(-1, 9).sum(1)
            size = cfg.pconv_pattern_size
            if bool(((counts == 0) | (counts == size)).all()) and library is not None:
                spec = {"granularity": "kernel", "view": "kernel", "block": 9, "keep": size, "kernel_stage": True}
            else:  # still partly dense during the pattern stage
                spec = {"granularity": "element", "view": "element", "block": 1}
            result.masks[layer.param] = mask
            result.specs[layer.param] = spec
        return result


class PConvPruner(CampfirePruner):
    """A `CampfirePruner` whose masks are pconv's patterns and kernel connectivity.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int) -> None:
        super().__init__(model, cfg, steps_per_epoch)
        # Swap in pconv's engine (its layers and masks) and start again from no zeros.
        self._engine = _PConvEngine(model, cfg)
        params = self._params()
        self._result = self._engine.compute({n: params[n].detach() for n in self._engine.weight_names}, None, 0.0)
        self.masks = self._result.masks

    @property
    def library(self) -> list[tuple[int, ...]] | None:
        """The pattern library (None before the first mask update)."""
        return self._engine.library

    def _sync_library(self) -> None:
        saved = self._result.notes.get(_NOTE)
        self._engine.library = None if saved is None else [tuple(int(i) for i in p) for p in saved]

    def _update(self, target: float, optimizer: torch.optim.Optimizer | None) -> bool:
        changed = super()._update(target, optimizer)
        self._sync_library()  # the library chosen at the first update stays fixed
        return changed

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As `CampfirePruner.load_state_dict`, and the pattern library restored."""
        super().load_state_dict(state)
        self._sync_library()

    def _achievable_note(self, achievable: float) -> str:
        cfg = self.cfg
        size = cfg.pconv_pattern_size
        convs = [layer for layer in self._engine.layers if _is_3x3_conv(layer)]
        head = f"target {cfg.target_sparsity:g}, nearest achievable {achievable:.4f}"
        floor = self._engine.pattern_sparsity
        text = (
            f"{head}: every kept 3x3 kernel keeps {size} of 9 (a pattern of a library of "
            f"{cfg.pconv_library_size}), whole kernels removed to the target, in {len(convs)} layer(s)"
        )
        if cfg.target_sparsity < floor:
            text += f"; patterns alone give {floor:.4f} on 3x3 layers (no kernel removed)"
        others = len(self._engine.layers) - len(convs)
        if cfg.pconv_other_layers == "element":
            text += f"; {others} other layer(s) pruned element-wise"
        else:
            text += "; other layers dense"
        return text

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the pattern library and how the target is split."""
        cfg = self.cfg
        library = self.library
        return {
            **super().metadata(),
            "pconv": {
                "pattern_size": cfg.pconv_pattern_size,
                "library_size": cfg.pconv_library_size,
                "other_layers": cfg.pconv_other_layers,
                "library": None if library is None else [list(p) for p in library],
                "pattern_sparsity": self._engine.pattern_sparsity,
                "conv_target": self._engine.conv_target(cfg.target_sparsity),
                "rule": "3x3 kernel: the library pattern keeping the largest norm (importance), row-major "
                "positions; per 3x3 layer keep the nearest count (1 - s) / (size / 9) of kernels by "
                "pattern-masked norm, s = max(target, 1 - size / 9)",
            },
        }


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> PConvPruner:
    del seed  # magnitude scores: nothing random
    return PConvPruner(model, cfg, steps_per_epoch)


PCONV = register(
    Method(
        name=METHOD,
        description="pattern pruning (a small library of 3x3 patterns chosen from the weights) plus "
        "connectivity pruning of whole kernels, gradual from dense, then retrained with masks fixed (PCONV)",
        when="during_training",
        granularities=("kernel",),
        build_pruner=_build,
        resolve_settings=resolve_pconv_settings,
        fixed_settings={"allow_regrowth": False, "allocation": "uniform", "from_dense": True},
    )
)
