"""Process-wide runtime choices: seeding, device resolution, library versions."""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from robustsparse.errors import ConfigError

__all__ = ["set_seed", "resolve_device", "library_versions"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/"auto" -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    return resolved


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for metadata."""
    import torchattacks
    import torchvision

    from robustsparse._version import __version__

    return {
        "robustsparse": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torchattacks": torchattacks.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
