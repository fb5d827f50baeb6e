"""Which parameters share a channel: producer filter, BatchNorm, bias and consumer inputs.

A *channel group* is an intermediate tensor channel that runs from one producer (a conv or
linear output channel) through channel-wise operations only (BatchNorm, activations with
f(0) = 0, pooling, dropout, flatten) into consumers (conv or linear layers reading that
channel). Removing channel k zeroes the producer's filter k, its bias k, the scale and shift
of every BatchNorm on the way (otherwise the channel keeps emitting the BatchNorm's shift),
and the consumers' input columns of channel k. The channel is then exactly zero everywhere,
so it can be cut out physically (`compact.compact_model`).

Channels that reach a residual addition, a concatenation, the model output or any operation
not known to be channel-wise are not grouped: residual streams are respected by never
pruning them (methods.md 13.7: "prune only internal channels"). The graph is found with
`torch.fx.symbolic_trace`; models it cannot trace cannot use `filter` / `channel`.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustsparse.errors import ModelError

__all__ = ["ChannelGroup", "find_channel_groups"]

_CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_CHANNELWISE_FUNCTIONS = {
    F.relu,
    torch.relu,
    torch.relu_,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.mish,
    torch.tanh,
    F.hardtanh,
    F.dropout,
    F.dropout2d,
}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_CHANNELWISE_METHODS = {"relu", "relu_", "contiguous", "tanh", "clone"}
_SHAPE_ONLY_METHODS = {"size", "dim"}


@dataclass(frozen=True)
class ChannelGroup:
    """The parameters coupled to the output channels of one producer layer.

    Attributes:
        producer: module name of the conv/linear layer whose output channels are grouped.
        channels: number of channels (the producer's output channels).
        norms: module names of the BatchNorm layers on the path (scale and shift coupled).
        consumers: (module name, block) of every layer reading the channels; `block` is the
            number of consumer inputs per channel (1 for a conv, H*W for a linear layer after
            a flatten of an H x W map).
    """

    producer: str
    channels: int
    norms: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (for metadata)."""
        return {
            "producer": self.producer,
            "channels": self.channels,
            "norms": list(self.norms),
            "consumers": [[name, block] for name, block in self.consumers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelGroup:
        return cls(
            str(data["producer"]),
            int(data["channels"]),
            tuple(str(n) for n in data["norms"]),
            tuple((str(n), int(b)) for n, b in data["consumers"]),
        )


def _flatten_start(node: fx.Node) -> int | None:
    """start_dim of a flatten call, or None if not a flatten of everything from dim 1."""
    args = list(node.args[1:])
    start = node.kwargs.get("start_dim", args[0] if args else 0)
    end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return start if end == -1 else None


def _is_flatten_view(node: fx.Node) -> bool:
    """`x.view(x.size(0), -1)` / `x.reshape(n, -1)`: keeps the batch, flattens the rest."""
    args = node.args[1:]
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return len(args) == 2 and args[1] == -1 and args[0] != -1


def _is_spatial_mean(node: fx.Node) -> tuple[bool, bool]:
    """(is a mean over the two spatial dims, keepdim)."""
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    keep = bool(node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False))
    if isinstance(dims, (tuple, list)) and sorted(int(d) % 4 for d in dims) == [2, 3]:
        return True, keep
    return False, keep


def _only_first_arg(node: fx.Node, source: fx.Node) -> bool:
    """The tensor flows in as the first argument and is the only graph value in the call."""
    if not node.args or node.args[0] is not source:
        return False
    others = list(node.args[1:]) + list(node.kwargs.values())
    return not any(isinstance(a, fx.Node) for a in others)


def find_channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every channel group of `model` whose channels can be removed without touching others.

    Args:
        model: any module `torch.fx.symbolic_trace` can trace.

    Returns:
        One group per producer whose output reaches only channel-wise operations and
        conv/linear consumers, in graph order.

    Raises:
        ModelError: the model cannot be traced.
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, NotImplementedError...)
        raise ModelError(
            f"granularity filter/channel needs a model torch.fx can trace, but tracing {type(model).__name__} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); use another granularity"
        ) from None
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups = []
    for node in traced.graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            state, channels = "spatial", module.out_channels
        elif isinstance(module, nn.Linear):
            state, channels = "flat", module.out_features
        else:
            continue
        if calls[node.target] != 1:
            continue
        group = _follow(node, state, channels, modules, calls)
        if group is not None:
            norms, consumers = group
            groups.append(ChannelGroup(str(node.target), channels, tuple(norms), tuple(consumers)))
    return groups


def _follow(
    start: fx.Node, state: str, channels: int, modules: dict[str, nn.Module], calls: dict[str, int]
) -> tuple[list[str], list[tuple[str, int]]] | None:
    """Walk the users of a producer's output; None as soon as a non-channel-wise use appears."""
    norms: list[str] = []
    consumers: list[tuple[str, int]] = []
    stack: list[tuple[fx.Node, fx.Node, str]] = [(user, start, state) for user in start.users]
    seen: set[tuple[fx.Node, str]] = set()
    while stack:
        node, source, state = stack.pop()
        if (node, state) in seen:
            continue
        seen.add((node, state))
        nxt: str | None = None  # the state after this node, when the walk continues through it
        if node.op == "call_module":
            module = modules[node.target]
            if node.args[0] is not source or len(node.args) != 1 or node.kwargs:
                return None
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                if not module.affine or module.num_features != channels or calls[node.target] != 1:
                    return None
                if (state == "spatial") != isinstance(module, nn.BatchNorm2d):
                    return None
                norms.append(str(node.target))
                nxt = state
            elif isinstance(module, _CHANNELWISE_MODULES):
                nxt = state
            elif isinstance(module, _POOL_MODULES):
                nxt = "spatial" if state == "spatial" else None
            elif isinstance(module, nn.Flatten):
                nxt = "flat" if state == "spatial" and module.start_dim == 1 and module.end_dim == -1 else None
            elif isinstance(module, nn.Conv2d):
                if (
                    state != "spatial"
                    or module.groups != 1
                    or module.in_channels != channels
                    or calls[node.target] != 1
                ):
                    return None
                consumers.append((str(node.target), 1))
                continue
            elif isinstance(module, nn.Linear):
                if state != "flat" or module.in_features % channels or calls[node.target] != 1:
                    return None
                consumers.append((str(node.target), module.in_features // channels))
                continue
            if nxt is None:
                return None
        elif node.op == "call_function":
            if node.target is builtins.getattr:
                continue  # x.shape: no data flows on
            if not _only_first_arg(node, source):
                return None
            if node.target in _CHANNELWISE_FUNCTIONS:
                nxt = state
            elif node.target in _POOL_FUNCTIONS:
                nxt = "spatial" if state == "spatial" else None
            elif node.target is torch.flatten:
                nxt = "flat" if state == "spatial" and _flatten_start(node) == 1 else None
            if nxt is None:
                return None
        elif node.op == "call_method":
            if node.args[0] is not source:
                return None
            if node.target in _SHAPE_ONLY_METHODS:
                continue
            if node.target in _CHANNELWISE_METHODS:
                nxt = state
            elif node.target == "flatten":
                nxt = "flat" if state == "spatial" and _flatten_start(node) == 1 else None
            elif node.target in ("view", "reshape"):
                nxt = "flat" if state == "spatial" and _is_flatten_view(node) else None
            elif node.target == "mean":
                spatial, keep = _is_spatial_mean(node)
                nxt = ("spatial" if keep else "flat") if spatial and state == "spatial" else None
            if nxt is None:
                return None
        else:  # output, placeholder, get_attr
            return None
        stack.extend((user, node, nxt) for user in node.users)
    if not consumers:
        return None
    return norms, consumers
