"""Masks as plain data: `dict[parameter name, bool tensor]` (True = kept), applied in place.

After every optimizer step the masked weights are set to exactly +0.0 and the optimizer's
per-parameter state (SGD `momentum_buffer`, Adam/AdamW `exp_avg`, `exp_avg_sq`,
`max_exp_avg_sq`, ...) is zeroed at the same positions, so neither momentum nor (decoupled)
weight decay can bring a pruned weight back. Zeroing uses `masked_fill_` rather than a
multiplication so no -0.0 appears (export stays bit-identical).

Sparsity is the fraction of zeros, measured on the weights: over the prunable weights (the
conv/linear weights named in the masks, or every conv/linear weight when there are none) and
over all parameters of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from robustsparse.sparsity.layers import conv_linear_layers

__all__ = [
    "Masks",
    "apply_masks_",
    "zero_masked_state_",
    "mask_grads_",
    "achieved_sparsity",
    "prunable_weight_names",
    "mask_sparsity",
]

Masks = dict[str, torch.Tensor]


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set every masked entry of the model's parameters to exactly zero, in place.

    Args:
        model: the model whose parameters `masks` names.
        masks: parameter name -> bool tensor of the parameter's shape (True = kept).

    Raises:
        KeyError: a mask names no parameter of the model.
    """
    params = _params(model)
    for name, mask in masks.items():
        p = params[name]
        p.masked_fill_(~mask.to(p.device), 0.0)


@torch.no_grad()
def zero_masked_state_(optimizer: torch.optim.Optimizer, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Zero the optimizer state of each parameter wherever its *inverted* mask is True.

    Every state tensor with the parameter's shape is cleared (momentum_buffer, exp_avg,
    exp_avg_sq, max_exp_avg_sq, Adagrad's sum...); scalars such as `step` are left alone.

    Args:
        optimizer: any torch optimizer.
        pairs: (parameter, pruned) with `pruned = ~mask` on the parameter's device.
    """
    state = optimizer.state
    for param, pruned in pairs:
        entry = state.get(param)
        if not entry:
            continue
        for value in entry.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.is_floating_point():
                value.masked_fill_(pruned, 0.0)


@torch.no_grad()
def mask_grads_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the gradients at masked positions (call between backward and the optimizer step).

    Not needed to keep pruned weights at zero (masks are re-applied after each step), but it
    keeps masked gradients out of gradient-norm clipping and of the weight-decay term.
    """
    params = _params(model)
    for name, mask in masks.items():
        g = params[name].grad
        if g is not None:
            g.masked_fill_(~mask.to(g.device), 0.0)


def prunable_weight_names(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """The weights sparsity is reported over: the conv/linear weights in `masks` (coupled
    1-D BatchNorm and bias masks excluded), or every conv/linear weight when `masks` is empty."""
    if masks:
        params = _params(model)
        return [name for name in masks if name in params and params[name].dim() >= 2]
    return [layer.param for layer in conv_linear_layers(model)]


@torch.no_grad()
def achieved_sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Measured fraction of zeros: over the prunable weights and over all parameters.

    Args:
        model: the model, with masks applied.
        masks: the masks (they decide which weights are prunable) or None (every conv and
            linear weight counts as prunable).

    Returns:
        `{"prunable": ..., "all": ...}`, each in [0, 1].

    Example:
        >>> achieved_sparsity(model, pruner.masks)
        {'prunable': 0.7, 'all': 0.69}
    """
    params = _params(model)
    names = prunable_weight_names(model, masks)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    total = sum(params[n].numel() for n in names)
    all_zeros = sum(int((p == 0).sum()) for p in params.values())
    all_total = sum(p.numel() for p in params.values())
    return {"prunable": zeros / total if total else 0.0, "all": all_zeros / all_total if all_total else 0.0}


def mask_sparsity(masks: Mapping[str, torch.Tensor], names: Iterable[str]) -> float:
    """Fraction of False entries over the masks named (the planned sparsity, from the masks alone)."""
    names = list(names)
    pruned = sum(int((~masks[n]).sum()) for n in names)
    total = sum(masks[n].numel() for n in names)
    return pruned / total if total else 0.0
