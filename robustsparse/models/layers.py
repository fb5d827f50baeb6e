"""Input normalisation inside the model, so every model takes images in [0, 1].

Attacks then work in pixel units (eps = 8/255 means 8 grey levels) and any attack library can be
used unchanged, without its own normalisation switches (RobustBench does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "NormalizedModel"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics kept as buffers.

    Buffers (not parameters) so they move with ``.to(device)``, are saved in the state dict, are
    never trained and are never counted as prunable weights.

    Args:
        mean: per-channel mean, one value per input channel.
        std: per-channel standard deviation, same length as ``mean``, all positive.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) == 0 or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if any(float(s) <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{m:.4f}" for m in self.mean.flatten().tolist())
        std = ", ".join(f"{s:.4f}" for s in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


class NormalizedModel(nn.Module):
    """A network preceded by its input normalisation: ``forward(x) = net(normalize(x))``.

    Takes NCHW float images in [0, 1] and returns logits. Parameter names of the wrapped network
    are prefixed with ``net.`` (e.g. ``net.conv1.weight``).

    Args:
        normalize: the input normalisation.
        net: the network proper, taking normalised input and returning logits.
    """

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
