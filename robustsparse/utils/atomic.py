"""Atomic writes for robustsparse: the file writers of `reports.atomic` plus `torch.save`.

The write-then-rename logic lives once, in `reports.atomic` (which `reports` can use without
importing robustsparse); only the torch writer, which `reports` must not import, is added here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reports.atomic import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "write_csv_atomic", "torch_save_atomic"]


def torch_save_atomic(path: str | Path, obj: Any) -> Path:
    """`torch.save` to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
