"""Which layers are prunable: conv and linear weights, minus the layers kept dense.

Prunable weights are the weights of `nn.Conv2d` and `nn.Linear` modules. BatchNorm parameters
and biases are never pruned on their own (only coupled to a removed filter). The first
convolution and the last linear layer (in module registration order) are kept dense by
default, and `keep_dense` adds fnmatch patterns on module names. A linear weight `W[K, C]` is
treated as a convolution with a 1x1 kernel, `W[K, C, 1, 1]`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from robustsparse.errors import ConfigError
from robustsparse.sparsity.settings import SparsityConfig

__all__ = ["LayerInfo", "conv_linear_layers", "resolve_layers", "prunable_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One conv or linear layer as the sparsity engine sees it.

    Attributes:
        module: module name, e.g. `net.layer1.0.conv1`.
        param: the weight's parameter name, e.g. `net.layer1.0.conv1.weight`.
        kind: `conv` or `linear`.
        shape: the weight as (K, C, R, S): filters, input channels per conv group, kernel size;
            a linear weight is (out_features, in_features, 1, 1).
        groups: the convolution's `groups` (1 for linear layers).
        dense_reason: why the layer is kept dense, or None when it is prunable.
    """

    module: str
    param: str
    kind: str
    shape: tuple[int, int, int, int]
    groups: int
    dense_reason: str | None = None

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution or a linear layer: a spatial window is a single weight."""
        return self.shape[2] * self.shape[3] == 1

    @property
    def numel(self) -> int:
        k, c, r, s = self.shape
        return k * c * r * s

    @property
    def prunable(self) -> bool:
        return self.dense_reason is None


def _param_name(module: str, leaf: str) -> str:
    return f"{module}.{leaf}" if module else leaf


def conv_linear_layers(model: nn.Module) -> list[LayerInfo]:
    """Every `nn.Conv2d` and `nn.Linear` of `model` with a weight, in registration order."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and isinstance(module.weight, torch.Tensor):
            k, c, r, s = module.weight.shape
            layers.append(LayerInfo(name, _param_name(name, "weight"), "conv", (k, c, r, s), module.groups))
        elif isinstance(module, nn.Linear) and isinstance(module.weight, torch.Tensor):
            k, c = module.weight.shape
            layers.append(LayerInfo(name, _param_name(name, "weight"), "linear", (k, c, 1, 1), 1))
    return layers


def resolve_layers(model: nn.Module, cfg: SparsityConfig) -> list[LayerInfo]:
    """All conv/linear layers of `model`, each marked prunable or kept dense (with the reason).

    Raises:
        ConfigError: a `keep_dense` pattern matches no conv or linear layer (a typo would
            otherwise silently prune a layer meant to stay dense).
    """
    layers = conv_linear_layers(model)
    convs = [layer for layer in layers if layer.kind == "conv"]
    linears = [layer for layer in layers if layer.kind == "linear"]
    first_conv = convs[0].module if convs else None
    last_linear = linears[-1].module if linears else None
    names = [layer.module for layer in layers]
    for pattern in cfg.keep_dense:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise ConfigError(
                f"config error: sparsity.keep_dense pattern {pattern!r} matches no conv or linear layer; layers are: {shown}"
            )
    out = []
    for layer in layers:
        reason = None
        if cfg.keep_first_conv_dense and layer.module == first_conv:
            reason = "first conv (keep_first_conv_dense)"
        elif cfg.keep_last_linear_dense and layer.module == last_linear:
            reason = "last linear (keep_last_linear_dense)"
        else:
            for pattern in cfg.keep_dense:
                if fnmatch.fnmatchcase(layer.module, pattern):
                    reason = f"keep_dense pattern {pattern!r}"
                    break
        out.append(LayerInfo(layer.module, layer.param, layer.kind, layer.shape, layer.groups, reason))
    return out


def prunable_layers(model: nn.Module, cfg: SparsityConfig) -> list[str]:
    """Module names of the layers `cfg` prunes (conv/linear minus those kept dense).

    Example:
        >>> prunable_layers(model, SparsityConfig(method="campfire", target_sparsity=0.5))
        ['net.layer1.0.conv1', ...]
    """
    return [layer.module for layer in resolve_layers(model, cfg) if layer.prunable]
