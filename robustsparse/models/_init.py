"""Weight initialisation shared by the hand-written families (torchvision's models init themselves)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights_"]


def init_weights_(model: nn.Module) -> nn.Module:
    """He (fan_out) init for convs, BN to identity, small normal for linear layers; in place.

    Args:
        model: the network to initialise.

    Returns:
        The same model, for chaining.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model
