"""What every export format shares: its input (`ExportSource`), its summary, and the round-trip check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reports.atomic import atomic_path
from robustsparse.errors import CheckpointError

__all__ = [
    "ExportSource",
    "ExportSummary",
    "OUTPUT_TOLERANCE",
    "example_input",
    "check_outputs",
    "compact_allowed",
    "write_checked",
]

#: the largest output difference an export may show against its checkpoint (float32 logits)
OUTPUT_TOLERANCE = 1e-5


#: granularities whose removed channels can be cut out of the model (a smaller dense model)
COMPACT_GRANULARITIES = ("filter", "channel")


@dataclass(frozen=True)
class ExportSource:
    """A checkpoint loaded and verified for export.

    Attributes:
        file: the checkpoint file.
        model: the model in eval mode on the CPU (masked weights exactly zero).
        meta: its metadata.
        masks: its masks by parameter name (empty for a dense model).
        spec: its `ModelSpec` as a plain dict (how the architecture is rebuilt).
    """

    file: Path
    model: nn.Module
    meta: dict[str, Any]
    masks: dict[str, torch.Tensor]
    spec: dict[str, Any]


def compact_allowed(source: ExportSource) -> bool:
    """Can the model's pruned channels be cut out?

    Whole channels are gone with filter / channel pruning, or where a method removed some on top
    of finer pruning (hybrid's channel stage: the compact model keeps the finer zeros).
    """
    removed = (source.meta.get("sparsity") or {}).get("pruned_channels") or {}
    return source.meta.get("granularity") in COMPACT_GRANULARITIES or any(removed.values())


@dataclass(frozen=True)
class ExportSummary:
    """What was written, and how it compares with the dense checkpoint."""

    path: Path
    fmt: str
    dense_bytes: int
    exported_bytes: int
    details: dict[str, Any]

    def __str__(self) -> str:
        ratio = self.dense_bytes / self.exported_bytes if self.exported_bytes else float("inf")
        lines = [
            f"wrote {self.path} ({self.fmt})",
            f"size: {self.exported_bytes:,} bytes vs {self.dense_bytes:,} dense ({ratio:.2f}x smaller)",
        ]
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        return "\n".join(lines)


def example_input(meta: Mapping[str, Any], batch: int = 4) -> torch.Tensor:
    """A fixed batch of [0, 1] images of the model's input shape (from its metadata)."""
    info = meta.get("data", {}).get("info", {})
    size = int(info.get("image_size", 32))
    shape = (batch, int(info.get("in_channels", 3)), size, size)
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def check_outputs(
    reference: nn.Module, restored: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, what: str
) -> float:
    """The largest logit difference between `reference` and `restored` on `example`.

    Raises:
        CheckpointError: the difference exceeds `OUTPUT_TOLERANCE` (`what` names the export).
    """
    with torch.no_grad():
        gap = float((torch.as_tensor(restored(example)) - reference(example)).abs().max())
    if not gap <= OUTPUT_TOLERANCE:  # NaN fails too
        raise CheckpointError(
            f"{what}: outputs differ by {gap:.2e} (> {OUTPUT_TOLERANCE}) after a round trip; not written"
        )
    return gap


def write_checked(target: Path, write: Callable[[Path], None], check: Callable[[Path], float]) -> float:
    """Write a file through `write`, `check` it, and only then put it at `target`; returns the check's value.

    The file is written beside `target` (`reports.atomic.atomic_path`) and renamed into place after
    the check passes, so a failed or interrupted export leaves nothing at `target`.
    """
    with atomic_path(target) as tmp:
        write(tmp)
        return check(tmp)
