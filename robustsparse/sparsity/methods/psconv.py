"""pSConv, pre-defined sparsity (Kundu et al., IEEE TC 2020; methods.md section 5).

Every 3x3 convolution keeps, in each kernel, a small support fixed before training; the
supports repeat periodically within and across filters, so their indices cost nothing to
store, and the model trains from scratch with those masks fixed. Following the official code
(`ksouvik52/Pre-defined-sparseCNN`, read for methods.md [V-code]), with row-major positions
0..8 of a 3x3 kernel:

- `psconv_kept: 4`: the four 2x2 corner squares A=[0,1,3,4], B=[1,2,4,5], C=[3,4,6,7],
  D=[4,5,7,8]; `psconv_kept: 2`: the six adjacent horizontal pairs [0,1], [1,2], [3,4],
  [4,5], [6,7], [7,8].
- Kernel (i, j) (filter i, input channel j, 0-based) has the counter n = i + j + 1 (the +i
  rotates the orientation from filter to filter). With period P (`psconv_period`, 8): if
  n mod P == 0 the kernel is dense (`psconv_dense_kernel: true`, the paper's one dense kernel
  per period); otherwise it keeps pattern[((n - 1) mod P) mod L] of the L patterns of the set.
  For P = 8 and P = 16 with the corner squares this is exactly the paper's table (1,5 -> A;
  2,6 -> B; 3,7 -> C; 4 -> D; 0 -> dense for P = 8), and for the pairs at P = 8 its
  sequence (pairs 1..6, then the first pair again at 7). The general rule for other P, the
  `psconv_dense_kernel: false` variant (every kernel keeps exactly k of 9, a balanced
  `window` structure) and deriving k from `target_sparsity` are reconstructions.
- The first conv, 1x1 convs, other kernel sizes and linear layers stay dense (paper: first
  conv, 1x1 and the classifier dense); `keep_first_conv_dense`, `keep_last_linear_dense` and
  `keep_dense` apply as for every method, so a 3x3 stem is pruned only when asked.
- The masks are decided at step 0 (a one-shot schedule) and never change; the trainer's
  masking after every step keeps pruned weights and their optimizer state at zero (the paper
  masks the gradients). The paper trains from scratch, so psconv sets `from_dense: false`.

The layer specs in the metadata say `window` with `keep: k`, the `period` and, with the dense
kernel, `dense_period`: the structure check then expects all 9 kept exactly in the periodic
dense kernels, and the compressed export stores each 3x3 mask as its period (P kernels, 9P
bits) instead of a bitmap (`encoding.py`, `periodic`).

The achieved sparsity over the pruned layers is 1 - (k (P - 1) + 9) / (9 P) with the dense
kernel (e.g. 0.4861 for 4 of 9 at P = 8), 1 - k/9 without, up to the remainder of K x C
kernels over the period; the metadata states it as the nearest achievable value.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from robustsparse.sparsity.allocation import MaskResult
from robustsparse.sparsity.layers import LayerInfo
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner, _Engine
from robustsparse.sparsity.settings import SparsityConfig, is_int, is_number

__all__ = ["PSCONV", "PSConvPruner", "PATTERN_SETS", "psconv_kernel_masks", "resolve_psconv_settings"]

METHOD = "psconv"
#: weights kept per 3x3 kernel -> its supports (row-major positions), in the paper's order
PATTERN_SETS: dict[int, tuple[tuple[int, ...], ...]] = {
    4: ((0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8)),
    2: ((0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8)),
}
DEFAULT_PERIOD = 8
DEFAULT_DENSE_KERNEL = True
_SETTINGS = ("psconv_kept", "psconv_period", "psconv_dense_kernel")


def _derived_kept(target: float) -> int:
    """The pattern set whose per-kernel sparsity 1 - k/9 is nearest `target` (ties: more kept)."""
    return min(sorted(PATTERN_SETS, reverse=True), key=lambda k: abs(1.0 - k / 9 - target))


def resolve_psconv_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """psconv's settings checked and completed (the defaults filled in); {} for other methods.

    Raises:
        ConfigError: a psconv setting is given for another method, is out of its vocabulary,
            or `psconv_kept` disagrees with `target_sparsity` (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, _SETTINGS)
        return {}
    kept, period, dense = cfg.psconv_kept, cfg.psconv_period, cfg.psconv_dense_kernel
    allowed = ", ".join(map(str, PATTERN_SETS))
    if kept is not None and (isinstance(kept, bool) or kept not in PATTERN_SETS):
        raise setting_error("psconv_kept", kept, f"null or one of {allowed} (weights kept per 3x3 kernel)")
    if period is not None and not (is_int(period) and period >= 2):
        raise setting_error("psconv_period", period, "null or an integer >= 2 (kernels per period)")
    if dense is not None and not isinstance(dense, bool):
        raise setting_error("psconv_dense_kernel", dense, "null, true or false")
    target = cfg.target_sparsity
    if is_number(target) and 0.0 < target < 1.0:
        derived = _derived_kept(float(target))
        if kept is None:
            kept = derived
        elif kept != derived:
            raise setting_error(
                "psconv_kept",
                kept,
                f"{derived} for target_sparsity {target} (nearest of {allowed} kept of 9; "
                f"set target_sparsity to {1 - kept / 9:.4g} or leave psconv_kept out)",
            )
    return {
        "psconv_kept": kept,
        "psconv_period": DEFAULT_PERIOD if period is None else period,
        "psconv_dense_kernel": DEFAULT_DENSE_KERNEL if dense is None else dense,
    }


def psconv_kernel_masks(
    filters: int, channels: int, kept: int, period: int, dense_kernel: bool, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (filters, channels, 3, 3) bool support of a 3x3 conv weight (see the module docstring)."""
    patterns = PATTERN_SETS[kept]
    table = torch.zeros(len(patterns) + 1, 9, dtype=torch.bool)
    for row, support in enumerate(patterns):
        table[row, list(support)] = True
    table[len(patterns)] = True  # the dense kernel
    n = torch.arange(filters)[:, None] + torch.arange(channels)[None, :] + 1
    index = ((n - 1) % period) % len(patterns)
    if dense_kernel:
        index = torch.where(n % period == 0, torch.full_like(index, len(patterns)), index)
    return table[index].reshape(filters, channels, 3, 3).to(device)


def _is_3x3_conv(layer: LayerInfo) -> bool:
    return layer.kind == "conv" and layer.shape[2:] == (3, 3)


class _PSConvEngine(_Engine):
    """The sparsity engine with psconv's layers (3x3 convs only) and its fixed supports."""

    def __init__(self, model: nn.Module, cfg: SparsityConfig) -> None:
        super().__init__(model, cfg)
        reason = "not a 3x3 convolution (psconv keeps it dense)"
        self.all_layers = [
            layer if not layer.prunable or _is_3x3_conv(layer) else dataclasses.replace(layer, dense_reason=reason)
            for layer in self.all_layers
        ]
        self.layers = [layer for layer in self.all_layers if layer.prunable]

    def spec(self, keep: int) -> dict[str, Any]:
        out = {"granularity": "window", "view": "kernel", "block": 9, "keep": keep, "kernel_stage": False}
        if keep < 9:
            out["period"] = self.cfg.psconv_period  # the compressed export stores one period of kernels
            if self.cfg.psconv_dense_kernel:
                out["dense_period"] = self.cfg.psconv_period
        return out

    def compute(
        self, weights: dict[str, torch.Tensor], prev: dict[str, torch.Tensor] | None, target: float
    ) -> MaskResult:
        del prev  # the supports never depend on the weights or on earlier masks
        result = MaskResult()
        for layer in self.layers:
            w = weights[layer.param]
            if target <= 0.0:  # before the decision at step 0: nothing pruned yet
                result.masks[layer.param] = torch.ones(w.shape, dtype=torch.bool, device=w.device)
                result.specs[layer.param] = self.spec(9)
                continue
            k, c = layer.shape[:2]
            cfg = self.cfg
            mask = psconv_kernel_masks(k, c, cfg.psconv_kept, cfg.psconv_period, cfg.psconv_dense_kernel, w.device)
            result.masks[layer.param] = mask
            result.specs[layer.param] = self.spec(cfg.psconv_kept)
        return result


class PSConvPruner(CampfirePruner):
    """A `CampfirePruner` whose masks are psconv's periodic supports, decided at step 0.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner` (cfg carries the one-shot schedule).
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int) -> None:
        super().__init__(model, cfg, steps_per_epoch)
        # Swap in psconv's engine (its layers and supports) and start again from no zeros.
        self._engine = _PSConvEngine(model, cfg)
        params = self._params()
        self._result = self._engine.compute({n: params[n].detach() for n in self._engine.weight_names}, None, 0.0)
        self.masks = self._result.masks

    def _achievable_note(self, achievable: float) -> str:
        cfg = self.cfg
        dense = f", every {cfg.psconv_period}th kernel dense" if cfg.psconv_dense_kernel else ""
        return (
            f"target {cfg.target_sparsity:g}, nearest achievable {achievable:.4f}: every 3x3 kernel keeps "
            f"{cfg.psconv_kept} of 9 in a pattern of period {cfg.psconv_period}{dense}, "
            f"in {len(self._engine.layers)} layer(s); other layers dense"
        )

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the pattern set, the period and the assignment rule."""
        cfg = self.cfg
        return {
            **super().metadata(),
            "psconv": {
                "kept": cfg.psconv_kept,
                "period": cfg.psconv_period,
                "dense_kernel": cfg.psconv_dense_kernel,
                "patterns": [list(p) for p in PATTERN_SETS[cfg.psconv_kept]],
                "rule": "kernel (i, j): n = i + j + 1; dense if dense_kernel and n % period == 0, "
                "else patterns[((n - 1) % period) % len(patterns)] (row-major positions of the 3x3 kernel)",
            },
        }


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> PSConvPruner:
    del seed  # the supports are deterministic
    return PSConvPruner(model, cfg, steps_per_epoch)


PSCONV = register(
    Method(
        name=METHOD,
        description="pre-defined periodic k-of-9 supports in 3x3 kernels, fixed before training, "
        "trained from scratch (pSConv)",
        when="before_training",
        granularities=("window",),
        build_pruner=_build,
        resolve_settings=resolve_psconv_settings,
        fixed_settings={
            "schedule": "one_shot",
            "initial_sparsity": 0.0,
            "start_epoch": 0,
            "end_epoch": 0,
            "allow_regrowth": False,
            "from_dense": False,
        },
    )
)
