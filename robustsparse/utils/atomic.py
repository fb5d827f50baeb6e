"""`torch.save`, atomically: the one writer `reports.atomic` cannot hold (reports never imports torch).

The write-then-rename logic lives once, in `reports.atomic`; text, JSON and CSV writers are imported
from there directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reports.atomic import atomic_path

__all__ = ["torch_save_atomic"]


def torch_save_atomic(path: str | Path, obj: Any) -> Path:
    """`torch.save` to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
